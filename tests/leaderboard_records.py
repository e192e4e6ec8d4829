"""A leaderboard row factory shared by the leaderboard tests (store, rendering, HTML report)."""

from __future__ import annotations

from brainbench.leaderboard.store import RunRecord

DEFAULTS = dict(
    time_utc="2025-01-01T00:00:00+00:00",
    method="ridge",
    method_version="1",
    dataset="world-nsd",
    dataset_version="v1-small",
    split="shared500/test",
    subject="subj01",
    backbone="world-clip:v1",
    seed=0,
    n_train_samples=800,
    n_params=12345,
    train_seconds=1.5,
    peak_memory_mb=256.0,
    git_sha="0" * 40,
    package_versions="torch=2.14.1",
)


def make_record(run_id: str, **changes: object) -> RunRecord:
    """A complete :class:`RunRecord` with fixed provenance; ``changes`` override any field."""
    return RunRecord(**{**DEFAULTS, "run_id": run_id, **changes})  # type: ignore[arg-type]
