"""The Flower ClientApp of a site: local PmcmFL (or baseline) training and evaluation on its own subjects.

A message in carries the global shared weights (``arrays``) and, for the prototype methods, the global
library (``prototypes``). The reply carries only the locally trained shared weights, the site's prototypes
(per-class means in the ``embed_dim`` space) and counts: the subject-specific input layers
(:class:`~brainbench.federated.model.SiteInputs`) stay in the node's ``context.state`` and voxels never
leave the site. The site is ``node_config["partition-id"]`` (set by the simulation, or by
``flower-supernode --node-config "partition-id=<k> num-partitions=<n>"``).

``app`` reads the run from ``context.run_config`` (deployment); :func:`make_client_app` binds a config
(the in-process simulation, whose run config is empty).
"""

from __future__ import annotations

import zlib

import torch

from brainbench.errors import ConfigError
from brainbench.federated.config import FederatedConfig
from brainbench.federated.engine import require_flower
from brainbench.federated.local import (
    evaluate_site,
    modality_counts,
    site_prototypes,
    site_seed,
    train_site,
)
from brainbench.federated.model import SharedDecoder, SiteInputs, build_shared
from brainbench.federated.prototypes import init_prototypes
from brainbench.federated.site_data import SiteData, load_site

require_flower()  # the clear error (and the offline environment) before flwr's own import

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402


def _site(context: Context, config: FederatedConfig) -> SiteData:
    site = int(context.node_config.get("partition-id", 0))
    n_partitions = int(context.node_config.get("num-partitions", config.sites))
    if n_partitions != config.sites or not 0 <= site < config.sites:
        raise ConfigError(f"node is partition {site} of {n_partitions}, the run has {config.sites} sites")
    data = load_site(site, config)
    if len(data.category_names) != config.n_classes:
        raise ConfigError(
            f"site {site} has {len(data.category_names)} categories, the run {config.n_classes}"
        )
    return data


def _models(
    msg: Message, context: Context, config: FederatedConfig, site: SiteData
) -> tuple[SharedDecoder, SiteInputs, dict[str, torch.Tensor]]:
    torch.set_num_threads(1)
    shared = build_shared(config)
    shared.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    torch.manual_seed(site_seed(config, site.site, 0))
    inputs = SiteInputs(site.n_voxels, config.local_dim)
    if "local" in context.state:
        inputs.load_state_dict(context.state["local"].to_torch_state_dict())
    if "prototypes" in msg.content:
        library = msg.content["prototypes"].to_torch_state_dict()
    else:  # round 1: the site's own random library (PmcmFL's torch.randn start)
        library = init_prototypes(config.n_classes, config.embed_dim, site_seed(config, site.site, 1))
    return shared, inputs, library


def make_client_app(bound: FederatedConfig | None = None) -> ClientApp:
    """A ClientApp training with ``bound`` (or, when ``None``, the run config of each message's run)."""
    app = ClientApp()

    def config_of(context: Context) -> FederatedConfig:
        return bound if bound is not None else FederatedConfig.from_run_config(dict(context.run_config))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = config_of(context)
        site = _site(context, config)
        shared, inputs, library = _models(msg, context, config, site)
        server_round = int(msg.content["config"]["server-round"])
        loss = train_site(shared, inputs, site, library, config, server_round)
        context.state["local"] = ArrayRecord(inputs.state_dict())
        counts = modality_counts(site, config)
        metrics = {
            "num-examples": counts.pop("total"),
            "site": float(site.site),
            "train_loss": loss,
            "label-space": float(zlib.crc32("\n".join(site.category_names).encode())),
        }
        metrics.update({f"count-{m}": v for m, v in counts.items()})
        content = RecordDict({"arrays": ArrayRecord(shared.state_dict()), "metrics": MetricRecord(metrics)})
        if config.fill == "prototype":
            content["prototypes"] = ArrayRecord(site_prototypes(shared, inputs, site, library, config))
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        config = config_of(context)
        site = _site(context, config)
        shared, inputs, library = _models(msg, context, config, site)
        metrics = evaluate_site(shared, inputs, site, library, config)
        metrics["site"] = float(site.site)
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


app = make_client_app()
