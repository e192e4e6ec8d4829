"""The Flower ServerApp: FedAvg of the shared weights plus PmcmFL's prototype library aggregation.

:class:`PrototypeFedAvg` is Flower's own :class:`~flwr.serverapp.strategy.FedAvg` (weights averaged by each
site's ``num-examples``, its training samples) extended by the library: each round's train and evaluate
messages carry the global library, and :func:`~brainbench.federated.prototypes.aggregate_library` merges the
sites' libraries with weights ``1 + count`` per modality (Bao et al., arXiv 2312.13508, official
``aggregate_local_prototypes``). Replies are aggregated in site order, so the result does not depend on the
order in which nodes answer (the simulation and a deployment then agree).

The server writes ``global_model.pt`` (shared state dict), ``prototypes.pt`` and ``history.json`` (per-round
train and evaluate metrics) to ``out_dir``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from brainbench.errors import BrainbenchError, ConfigError
from brainbench.federated.config import FederatedConfig
from brainbench.federated.engine import require_flower
from brainbench.federated.model import build_shared
from brainbench.federated.prototypes import MODALITIES, aggregate_library

require_flower()  # the clear error (and the offline environment) before flwr's own import

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

ReplyObserver = Callable[[int, list[Message]], None]


class SiteFailed(BrainbenchError):
    """A site did not answer a round, or answered with an error."""


class PrototypeFedAvg(FedAvg):
    """FedAvg carrying and aggregating a prototype library next to the model weights.

    Args:
        observer: called with ``(round, replies)`` before aggregation (tests inspect what sites send).
        evaluate_rounds: the rounds after which the sites evaluate (``None``: every round).
        expected_sites: every round must hear from this many sites (``None``: any number).
        **fedavg: FedAvg's arguments.
    """

    def __init__(
        self,
        observer: ReplyObserver | None = None,
        evaluate_rounds: set[int] | None = None,
        expected_sites: int | None = None,
        **fedavg: object,
    ) -> None:
        super().__init__(**fedavg)  # type: ignore[arg-type]
        self.evaluate_rounds = evaluate_rounds
        self.expected_sites = expected_sites
        self.library: dict[str, torch.Tensor] | None = None
        self.observer = observer
        self.site_counts: dict[str, dict[str, float]] = {}

    def _with_library(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        if self.library is not None:
            for message in messages:
                message.content["prototypes"] = ArrayRecord(self.library)
        return messages

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's train messages, plus the global library."""
        return self._with_library(super().configure_train(server_round, arrays, config, grid))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's evaluate messages and the global library (test-time masks), in ``evaluate_rounds``."""
        if self.evaluate_rounds is not None and server_round not in self.evaluate_rounds:
            return []
        return self._with_library(super().configure_evaluate(server_round, arrays, config, grid))

    def _all_sites(self, server_round: int, replies: list[Message], stage: str) -> list[Message]:
        """The replies, when every site answered without error; else :class:`SiteFailed`.

        A benchmark row must come from every site: Flower's FedAvg would go on with the sites that
        answered, so a site lost to a crash or to memory would silently change the federation.
        """
        failed = [m.error.reason for m in replies if m.has_error()]
        if failed or (self.expected_sites is not None and len(replies) != self.expected_sites):
            raise SiteFailed(
                f"round {server_round} {stage}: {len(replies) - len(failed)} of {self.expected_sites} sites "
                f"answered; errors: {[reason[:300] for reason in failed]}\n  fix: rerun (free memory first, "
                "a Ray worker killed for memory is the usual cause)"
            )
        return replies

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """FedAvg's weighted mean of the sites' test metrics, once every site has answered."""
        if self.evaluate_rounds is not None and server_round not in self.evaluate_rounds:
            return None  # nothing was sent this round
        return super().aggregate_evaluate(
            server_round, self._all_sites(server_round, list(replies), "evaluate")
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg of the weights (in site order) and the library's aggregation."""
        replies = self._all_sites(server_round, list(replies), "train")
        good = [m for m in replies if not m.has_error()]
        good.sort(key=lambda m: m.content["metrics"]["site"])
        if self.observer is not None:
            self.observer(server_round, good)
        spaces = {float(m.content["metrics"]["label-space"]) for m in good}
        if len(spaces) > 1:
            raise ConfigError(
                f"the sites' category lists differ (label-space checksums {spaces}): prepare them alike"
            )
        libraries, counts = [], []
        for message in good:
            metrics = message.content["metrics"]
            self.site_counts[f"{int(metrics['site']):04d}"] = {k: float(v) for k, v in dict(metrics).items()}
            if "prototypes" in message.content:
                libraries.append(message.content.pop("prototypes").to_torch_state_dict())
                counts.append({m: float(metrics[f"count-{m}"]) for m in MODALITIES})
        if libraries:
            self.library = aggregate_library(libraries, counts)
        return super().aggregate_train(server_round, good)


def _history(records: dict[int, MetricRecord]) -> dict[str, dict[str, float]]:
    return {str(r): {k: float(v) for k, v in dict(m).items()} for r, m in sorted(records.items())}


def make_server_app(bound: FederatedConfig | None = None, observer: ReplyObserver | None = None) -> ServerApp:
    """A ServerApp running ``bound`` (or, when ``None``, the run config of the run)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = bound if bound is not None else FederatedConfig.from_run_config(dict(context.run_config))
        strategy = PrototypeFedAvg(
            observer=observer,
            evaluate_rounds=config.evaluate_rounds(),
            expected_sites=config.sites,
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=config.sites,
            min_evaluate_nodes=config.sites,
            min_available_nodes=config.sites,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(build_shared(config).state_dict()),
            num_rounds=config.rounds,
            train_config=ConfigRecord({}),
            evaluate_config=ConfigRecord({}),
        )
        if config.out_dir:
            out = Path(config.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(result.arrays.to_torch_state_dict(), out / "global_model.pt")
            if strategy.library is not None:
                torch.save(strategy.library, out / "prototypes.pt")
            history = {
                "train": _history(result.train_metrics_clientapp),
                "evaluate": _history(result.evaluate_metrics_clientapp),
                "train_counts": strategy.site_counts,
            }
            (out / "history.json").write_text(json.dumps(history, indent=2))

    return app


app = make_server_app()
