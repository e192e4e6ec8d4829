"""``brainbench federate``: one federated run, its leaderboard row, and the card's sweep.

:func:`federate` runs a :class:`~brainbench.federated.config.FederatedConfig` through Flower, in the
in-process simulation (``mode="simulation"``) or across processes on this machine through
``flower-superlink`` and one ``flower-supernode`` per site (``mode="loopback"``,
:mod:`brainbench.federated.deployment`), reads the server's ``history.json`` and appends one row to
``leaderboards/<dataset>/federated.csv``: the last round's test metrics for multimodal and fMRI-only
inference (means over sites weighted by their test samples), with the federation's key columns (sites,
rounds, missing probability, engine and its version).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from brainbench.data.manifest import Manifest
from brainbench.data.preparation import default_home, prepare_dataset
from brainbench.errors import BrainbenchError
from brainbench.federated.config import FederatedConfig
from brainbench.federated.engine import engine_version
from brainbench.federated.model import build_shared
from brainbench.leaderboard.store import RunRecord, append_federated_row

if TYPE_CHECKING:
    from brainbench.federated.server_app import ReplyObserver

METHOD_VERSION = "1"


class RunFailed(BrainbenchError):
    """A federated run ended without its results."""


#: history metric -> leaderboard metric id
METRIC_IDS: dict[str, str] = {
    "top1_multimodal": "category_top1_multimodal@v1",
    "top1_fmri_only": "category_top1_fmri_only@v1",
    "map_multimodal": "category_map_multimodal@v1",
    "map_fmri_only": "category_map_fmri_only@v1",
}
Mode = Literal["simulation", "loopback"]


def centralised(config: FederatedConfig) -> FederatedConfig:
    """The upper bound of ``config``: one site holding every subject, no modality missing."""
    return config.replace(method="centralised", sites=1, missing=0.0)


def federated_row(
    config: FederatedConfig, history: dict, seconds: float, mode: Mode, n_params: int, n_train: int
) -> dict[str, object]:
    """The leaderboard row of a finished run (``history``: the server's ``history.json``)."""
    home = Path(config.home) if config.home else default_home()
    manifest = Manifest.load(
        prepare_dataset(
            config.dataset,
            config.subject_list()[0],
            home=home,
            world_preset=config.world_preset,
            progress=False,
        )
    )
    last = history["evaluate"][str(max(int(r) for r in history["evaluate"]))]
    record = RunRecord.new(
        method=config.method,
        method_version=METHOD_VERSION,
        dataset=config.dataset,
        dataset_version=manifest.dataset_version,
        split="test",
        subject="+".join(f"subj{s:02d}" for s in config.subject_list()),
        backbone=config.backbone,
        seed=config.seed,
        n_train_samples=n_train,
        n_params=n_params,
        train_seconds=seconds,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    row = record.to_row({METRIC_IDS[k]: float(last[k]) for k in METRIC_IDS})
    row.update(
        sites=config.sites,
        rounds=config.rounds,
        missing_p=config.missing,
        engine=f"{engine_version()}:{mode}",
        local_epochs=config.local_epochs,
        dirichlet_alpha=config.dirichlet_alpha,
        test_mask="nearest_fmri_prototype" if config.fill == "prototype" else config.fill,
    )
    return row


def federate(
    config: FederatedConfig,
    *,
    mode: Mode = "simulation",
    leaderboards: Path | None = Path("leaderboards"),
    runs: Path = Path("runs"),
    observer: ReplyObserver | None = None,
) -> dict[str, object]:
    """Run ``config`` and append its row (unless ``leaderboards`` is ``None``); returns the row.

    The run's outputs (global model, prototypes, ``history.json``, ``row.json``) go to
    ``runs/federated/<time>-<method>-p<missing>``. ``observer`` sees every round's replies (simulation only).
    """
    out = Path(config.out_dir) if config.out_dir else None
    if out is None:
        out = runs / "federated" / f"{time.strftime('%Y%m%dT%H%M%S')}-{config.method}-p{config.missing:g}"
        config = config.replace(out_dir=str(out.resolve()))
    start = time.perf_counter()
    if mode == "simulation":
        from brainbench.federated.simulation import simulate

        simulate(config, observer)
    else:
        from brainbench.federated.deployment import deploy_loopback

        deploy_loopback(config, out / "deployment")
    seconds = time.perf_counter() - start
    if not (out / "history.json").is_file():
        raise RunFailed(
            f"the federated run wrote no {out / 'history.json'}: the ServerApp stopped early (its log above "
            "says why, e.g. a site lost to memory)\n  fix: rerun the same command"
        )
    history = json.loads((out / "history.json").read_text())
    n_train = int(sum(r["num-examples"] for r in _site_train_counts(history)))
    row = federated_row(
        config, history, seconds, mode, sum(p.numel() for p in build_shared(config).parameters()), n_train
    )
    (out / "row.json").write_text(json.dumps(row, indent=2, default=str))
    if leaderboards is not None:
        append_federated_row(leaderboards / config.dataset / "federated.csv", row)
    return row


def _site_train_counts(history: dict) -> list[dict[str, float]]:
    return [history["train_counts"][site] for site in sorted(history["train_counts"])]


def format_row(row: dict[str, object]) -> str:
    """One line per run for the terminal."""
    metrics = ", ".join(f"{k.split('@')[0]} {float(row[k]):.3f}" for k in METRIC_IDS.values())  # type: ignore[arg-type]
    return (
        f"{row['method']} on {row['dataset']} ({row['sites']} sites, {row['rounds']} rounds, "
        f"p={row['missing_p']}, {row['engine']}): {metrics}; {float(row['train_seconds']):.0f} s"  # type: ignore[arg-type]
    )
