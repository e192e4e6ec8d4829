"""Append-safe leaderboard CSVs: one row per run, provenance columns first, one column per metric spec id.

Schema (``/work/shared/DESIGN.md``, "Leaderboard row"): the provenance columns of :data:`PROVENANCE_COLUMNS`
in that fixed order, then any other non-metric columns sorted, then metric columns sorted. Metric columns are
full spec ids (``<metric>[/<network>]@v<N>``), so rows computed with different spec versions or networks never
share a column; a metric that does not apply to a row is blank.

:func:`append_row` holds ``filelock.FileLock(<csv>.lock)`` while it reads the existing file, takes the union
of columns, writes a temporary file in the same directory and ``os.replace``-s it over the CSV: concurrent
``make bench`` processes both land their rows intact, and a reader never sees a half-written file.
Existing cells are round-tripped as text, so appending never reformats old rows.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd
from filelock import FileLock

from brainbench.errors import ConfigError
from brainbench.eval.specs import is_metric_id

PROVENANCE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "time_utc",
    "method",
    "method_version",
    "dataset",
    "dataset_version",
    "split",
    "subject",
    "backbone",
    "seed",
    "n_train_samples",
    "n_params",
    "train_seconds",
    "peak_memory_mb",
    "git_sha",
    "package_versions",
)
PROVENANCE_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "open_clip_torch",
    "numpy",
    "webdataset",
    "scikit-image",
)
_INTEGER_COLUMNS = ("seed", "n_train_samples", "n_params")
_FLOAT_COLUMNS = ("train_seconds", "peak_memory_mb")


def git_sha(repo_dir: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` of ``repo_dir`` (default: this package's source tree), or ``"unknown"``."""
    cwd = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if sha else "unknown"


def package_versions(packages: tuple[str, ...] = PROVENANCE_PACKAGES) -> str:
    """One string ``torch=2.14.1;torchvision=0.29.1;...`` (``<name>=not-installed`` when absent)."""
    parts = []
    for name in packages:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not-installed"
        parts.append(f"{name}={version}")
    return ";".join(parts)


def collect_provenance(repo_dir: str | Path | None = None) -> dict[str, str]:
    """The environment columns of a row: ``{"git_sha": ..., "package_versions": ...}``; never raises."""
    return {"git_sha": git_sha(repo_dir), "package_versions": package_versions()}


def new_run_id() -> str:
    """A sortable, unique run id: ``<UTC time>-<8 hex>``, e.g. ``20250101T120000Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RunRecord:
    """The provenance columns of one leaderboard row (see :data:`PROVENANCE_COLUMNS`).

    Attributes:
        run_id: unique id of the run (:func:`new_run_id`).
        time_utc: ISO-8601 UTC time the run finished.
        method: method id, e.g. ``ridge``.
        method_version: version of the method's code/config.
        dataset: dataset id, e.g. ``world`` or ``nsd``.
        dataset_version: version from the shard manifest.
        split: evaluated split, e.g. ``test``.
        subject: subject id(s), ``+``-joined when several, e.g. ``subj01+subj02``.
        backbone: backbone id ``<arch>:<tag>``.
        seed: training seed.
        n_train_samples: training samples seen (unique samples in the train split).
        n_params: trainable parameters.
        train_seconds: wall-clock training time in seconds.
        peak_memory_mb: peak memory in MiB (GPU when trained on GPU, else process RSS).
        git_sha: commit of the code (``"unknown"`` outside a checkout).
        package_versions: ``name=version;...`` (:func:`package_versions`).
    """

    run_id: str
    time_utc: str
    method: str
    method_version: str
    dataset: str
    dataset_version: str
    split: str
    subject: str
    backbone: str
    seed: int
    n_train_samples: int
    n_params: int
    train_seconds: float
    peak_memory_mb: float
    git_sha: str
    package_versions: str

    @classmethod
    def new(
        cls,
        *,
        method: str,
        method_version: str,
        dataset: str,
        dataset_version: str,
        split: str,
        subject: str,
        backbone: str,
        seed: int,
        n_train_samples: int,
        n_params: int,
        train_seconds: float,
        peak_memory_mb: float,
    ) -> RunRecord:
        """A record stamped now, with a fresh run id and :func:`collect_provenance`."""
        return cls(
            run_id=new_run_id(),
            time_utc=datetime.now(UTC).isoformat(timespec="seconds"),
            method=method,
            method_version=method_version,
            dataset=dataset,
            dataset_version=dataset_version,
            split=split,
            subject=subject,
            backbone=backbone,
            seed=seed,
            n_train_samples=n_train_samples,
            n_params=n_params,
            train_seconds=train_seconds,
            peak_memory_mb=peak_memory_mb,
            **collect_provenance(),
        )

    def to_row(self, metrics: Mapping[str, float] | None = None) -> dict[str, object]:
        """The row for :func:`append_row`: provenance plus ``metrics`` (spec id → value)."""
        row: dict[str, object] = asdict(self)
        for metric_id, value in (metrics or {}).items():
            if not is_metric_id(metric_id):
                raise ConfigError(
                    f"{metric_id!r} is not a metric spec id\n  fix: use <metric>[/<network>]@v<N>"
                )
            row[metric_id] = value
        return row


def _cell(value: object) -> str:
    """Text of one CSV cell: blank for None/NaN, shortest round-trip repr for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _column_order(columns: list[str]) -> list[str]:
    metric = sorted(c for c in columns if is_metric_id(c))
    other = sorted(c for c in columns if c not in PROVENANCE_COLUMNS and not is_metric_id(c))
    return [*PROVENANCE_COLUMNS, *other, *metric]


def append_row(csv_path: str | Path, row: Mapping[str, object]) -> None:
    """Append one run's row to ``csv_path`` (created if absent), safe against concurrent appenders.

    Args:
        csv_path: the leaderboard CSV.
        row: column → value; provenance columns (:data:`PROVENANCE_COLUMNS`, ``run_id`` required) and metric
            spec ids. Missing columns are left blank.

    Raises:
        ConfigError: when ``run_id`` is missing or already in the file.
    """
    csv_path = Path(csv_path)
    run_id = _cell(row.get("run_id"))
    if not run_id:
        raise ConfigError(
            f"{csv_path}: the row has no run_id\n  fix: build rows with RunRecord.new(...).to_row()"
        )
    new = pd.DataFrame([{str(k): _cell(v) for k, v in row.items()}], dtype=str)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path) + ".lock"):
        if csv_path.exists() and csv_path.stat().st_size > 0:
            old = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
            if run_id in set(old.get("run_id", pd.Series(dtype=str))):
                raise ConfigError(f"{csv_path}: run_id {run_id!r} is already there\n  fix: use a new run id")
            table = pd.concat([old, new], ignore_index=True)
        else:
            table = new
        table = table.reindex(columns=_column_order(list(table.columns))).fillna("")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{csv_path.name}.", suffix=".tmp", dir=csv_path.parent)
        try:
            with os.fdopen(fd, "w", newline="") as handle:
                table.to_csv(handle, index=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, csv_path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def read_leaderboard(csv_path: str | Path) -> pd.DataFrame:
    """Read a leaderboard CSV with typed columns: metrics and numeric provenance as numbers, the rest text.

    Blank metric cells become NaN; blank text cells stay ``""``. Integer provenance columns use pandas'
    nullable ``Int64``.
    """
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for column in table.columns:
        if is_metric_id(column) or column in _FLOAT_COLUMNS:
            table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce").astype("float64")
        elif column in _INTEGER_COLUMNS:
            table[column] = pd.to_numeric(table[column].replace("", None), errors="coerce").astype("Int64")
    return table
