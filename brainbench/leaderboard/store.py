"""Append-safe leaderboard CSVs: one row per run, provenance columns first, one column per metric spec id.

Schema: the provenance columns of :data:`PROVENANCE_COLUMNS`
in that fixed order, then any other non-metric columns sorted, then metric columns sorted. Metric columns are
full spec ids (``<metric>[/<network>]@v<N>``), so rows computed with different spec versions or networks never
share a column; a metric that does not apply to a row is blank.

:func:`append_row` holds ``filelock.FileLock(<csv>.lock)`` while it reads the existing file, takes the union
of columns, writes a temporary file in the same directory and ``os.replace``-s it over the CSV: concurrent
``make bench`` processes both land their rows intact, and a reader never sees a half-written file.
Existing cells are round-tripped as text, so appending never reformats old rows.

Two columns keep rows honest:

- ``postprocess``: what was done to the outputs before scoring, ``none`` or ``+``-joined steps such as
  ``blend:0.25`` (MindEye2's ``0.75·recon + 0.25·blurry`` before all metrics), ``best_of:16`` (16 samples per
  fMRI, the best kept), ``clamp``. A blended or best-of row is a different entry from a plain one.
- ``source``: ``brainbench`` for rows this suite evaluated. Numbers copied from a paper (``paper:<ref>``) or
  from a repository's printed output (``repo:<ref>``) live in ``leaderboards/reported/*.csv``
  (:func:`read_reported`) and are refused by :func:`append_row`, so evaluated and as-reported numbers never
  share a file.

Rows written before these two columns existed read back as ``postprocess="none"`` and ``source="brainbench"``
(:func:`read_leaderboard`): the suite never post-processed and every such row was evaluated here.
"""

from __future__ import annotations

import math
import os
import re
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

from brainbench.errors import ConfigError, DataFormatError, MissingFileError
from brainbench.metrics.specs import is_metric_id

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
    "postprocess",
    "source",
)
REPORTED_COLUMNS: tuple[str, ...] = (
    "method",
    "dataset",
    "task",
    "split",
    "subject",
    "postprocess",
    "source",
    "reference",
    "page",
    "evidence",
    "note",
)
"""Columns of an as-reported CSV (``leaderboards/reported/<dataset>.csv``), before its metric ids."""
EVALUATED_SOURCE = "brainbench"
EXTERNAL_SOURCE = "external"
"""Rows scored by brainbench's evaluator from predictions made elsewhere (``brainbench evaluate``)."""
SCORED_SOURCES = (EVALUATED_SOURCE, EXTERNAL_SOURCE)
NO_POSTPROCESS = "none"
_STEP = r"[a-z][a-z0-9_]*(?::[A-Za-z0-9_.\-]+)*"
_POSTPROCESS_RE = re.compile(rf"^(?:none|{_STEP}(?:\+{_STEP})*)$")
_REPORTED_SOURCE_RE = re.compile(r"^(?:paper|repo):\S+$")
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
#: columns without which a row cannot be told apart from another (the renderer groups by them)
KEY_COLUMNS: tuple[str, ...] = (
    "run_id",
    "method",
    "method_version",
    "dataset",
    "dataset_version",
    "subject",
    "seed",
)
#: the extra key columns of a federated leaderboard (``leaderboards/<dataset>/federated.csv``): two rows of
#: one method differ by their federation (sites, rounds, missing-modality probability, engine and its version)
FEDERATED_KEY_COLUMNS: tuple[str, ...] = ("sites", "rounds", "missing_p", "engine")
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


def check_postprocess(flag: str) -> str:
    """Return ``flag`` when it follows ``none`` or ``<step>[:<arg>]...[+<step>...]``, else raise.

    Example:
        >>> check_postprocess("best_of:16+blend:0.25")
        'best_of:16+blend:0.25'
    """
    if not _POSTPROCESS_RE.match(flag):
        raise ConfigError(
            f"postprocess flag {flag!r} is not valid\n  fix: use 'none' or steps like 'blend:0.25', "
            "'best_of:16', joined with '+'"
        )
    return flag


def is_reported_source(source: str) -> bool:
    """Whether ``source`` names a paper or repository (``paper:<ref>`` / ``repo:<ref>``), not this suite."""
    return bool(_REPORTED_SOURCE_RE.match(source))


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
        postprocess: post-processing applied before scoring (:func:`check_postprocess`), ``none`` by default.
        source: always ``brainbench`` for a run record; as-reported rows go to ``leaderboards/reported/``.
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
    postprocess: str = NO_POSTPROCESS
    source: str = EVALUATED_SOURCE

    def __post_init__(self) -> None:
        check_postprocess(self.postprocess)
        if self.source not in SCORED_SOURCES:
            raise ConfigError(
                f"run {self.run_id!r} has source {self.source!r}\n  fix: a RunRecord is scored by brainbench "
                f"({' or '.join(SCORED_SOURCES)}); put as-reported numbers in "
                "leaderboards/reported/<dataset>.csv"
            )

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
        postprocess: str = NO_POSTPROCESS,
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
            postprocess=postprocess,
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
        ConfigError: when ``run_id`` is missing or already in the file, when ``source`` is not
            ``brainbench`` (as-reported numbers belong in ``leaderboards/reported/``), or when
            ``postprocess`` is malformed.
    """
    csv_path = Path(csv_path)
    run_id = _cell(row.get("run_id"))
    if not run_id:
        raise ConfigError(
            f"{csv_path}: the row has no run_id\n  fix: build rows with RunRecord.new(...).to_row()"
        )
    source = _cell(row.get("source")) or EVALUATED_SOURCE
    if source not in SCORED_SOURCES:
        raise ConfigError(
            f"{csv_path}: row {run_id!r} has source {source!r}\n  fix: evaluated CSVs hold only rows scored "
            "by brainbench (source=brainbench or external); put as-reported numbers in "
            "leaderboards/reported/<dataset>.csv"
        )
    check_postprocess(_cell(row.get("postprocess")) or NO_POSTPROCESS)
    new = pd.DataFrame([{str(k): _cell(v) for k, v in row.items()}], dtype=str)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(csv_path) + ".lock"):
        if csv_path.exists() and csv_path.stat().st_size > 0:
            old = _read_text_table(csv_path)
            if run_id in set(old.get("run_id", pd.Series(dtype=str))):
                raise ConfigError(f"{csv_path}: run_id {run_id!r} is already there\n  fix: use a new run id")
            table = pd.concat([old, new], ignore_index=True)
        else:
            table = new
        _write_table(csv_path, table)


def _write_table(csv_path: Path, table: pd.DataFrame) -> None:
    """Writes ``table`` over ``csv_path`` atomically in the store's column order (caller holds the lock)."""
    table = table.reindex(columns=_column_order(list(table.columns))).fillna("")
    # mkstemp creates the file 0600: publish it world-readable (at least 0644, keeping any wider bits)
    mode = (csv_path.stat().st_mode & 0o777 if csv_path.exists() else 0) | 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{csv_path.name}.", suffix=".tmp", dir=csv_path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            table.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, csv_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


#: what a blank cell of these columns means (rows written before the columns existed)
_BLANK_MEANS = {"postprocess": NO_POSTPROCESS, "source": EVALUATED_SOURCE}


def _same_cell(column: str, left: str, right: str) -> bool:
    """Whether two text cells say the same thing.

    Equal text, equal numbers (``0.5`` and ``0.50``), or a blank ``postprocess``/``source`` and its default.
    """
    default = _BLANK_MEANS.get(column)
    if default is not None:
        left, right = left or default, right or default
    if left == right:
        return True
    if not left or not right:
        return False
    try:
        return float(left) == float(right)
    except ValueError:
        return False


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge_rows` did.

    Attributes:
        added: run ids appended to the destination, in source order.
        already_there: rows of the sources identical to a row the destination (or an earlier source) holds.
    """

    added: tuple[str, ...]
    already_there: int


def merge_rows(dst: str | Path, sources: list[str | Path] | tuple[str | Path, ...]) -> MergeResult:
    """Unions leaderboard CSVs written on other machines into ``dst`` by ``run_id``, under ``dst``'s lock.

    Every source is read and checked like a leaderboard (:func:`check_leaderboard`); a row whose ``run_id``
    is already there with the same cells (numbers compared as numbers) is kept once, new rows are appended,
    and the result is written atomically in the store's column order (union of columns, blanks where a file
    lacked a column). Nothing is written when any check fails.

    Raises:
        DataFormatError: a source (or ``dst``) that does not parse, a row without ``run_id`` or not scored
            by brainbench, or the same ``run_id`` with a different cell in two files: the message names the
            run id, both files and the differing columns.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dst) + ".lock"):
        frames: list[pd.DataFrame] = []
        seen: dict[str, tuple[dict[str, str], Path]] = {}
        added: list[str] = []
        already = 0
        if dst.is_file() and dst.stat().st_size > 0:
            old = _read_text_table(dst)
            frames.append(old)
            for row in old.to_dict("records"):
                seen.setdefault(row["run_id"], (row, dst))
        for source in map(Path, sources):
            if source.resolve() == dst.resolve():
                continue
            if not source.is_file():
                raise MissingFileError(
                    source, "pass leaderboard CSVs that exist (copied from the other machine)"
                )
            table = _read_text_table(source)
            keep = []
            for line, row in enumerate(table.to_dict("records"), start=2):
                run_id = row["run_id"]
                if not run_id:
                    raise DataFormatError(source, f"line {line}: no run_id", "every row needs its run id")
                if (row.get("source") or EVALUATED_SOURCE) not in SCORED_SOURCES:
                    raise DataFormatError(
                        source,
                        f"line {line}: run {run_id!r} has source {row['source']!r}",
                        "as-reported numbers belong in leaderboards/reported/<dataset>.csv, not a merge",
                    )
                if run_id in seen:
                    first, first_file = seen[run_id]
                    columns = sorted(set(first) | set(row))
                    differ = [c for c in columns if not _same_cell(c, first.get(c, ""), row.get(c, ""))]
                    if differ:
                        raise DataFormatError(
                            source,
                            f"run {run_id!r} conflicts with the row of the same run id in {first_file} "
                            f"(columns {differ} differ)",
                            "a run id names one run: keep the right row in one file, or give the other run "
                            "a new id",
                        )
                    already += 1
                    continue
                seen[run_id] = (row, source)
                keep.append(row)
                added.append(run_id)
            if keep:
                frames.append(pd.DataFrame(keep, dtype=str))
        if added:
            _write_table(dst, pd.concat(frames, ignore_index=True))
    return MergeResult(added=tuple(added), already_there=already)


def append_federated_row(csv_path: str | Path, row: Mapping[str, object]) -> None:
    """:func:`append_row` for a federated leaderboard: also requires :data:`FEDERATED_KEY_COLUMNS`.

    Raises:
        ConfigError: a federated key column is missing or blank (and every error of :func:`append_row`).
    """
    missing = [c for c in FEDERATED_KEY_COLUMNS if not _cell(row.get(c))]
    if missing:
        raise ConfigError(
            f"{csv_path}: the federated row has no {missing}\n  fix: build it with "
            "brainbench.federated.run.federated_row"
        )
    csv_path = Path(csv_path)
    if csv_path.is_file() and csv_path.stat().st_size > 0:
        absent = [c for c in FEDERATED_KEY_COLUMNS if c not in _read_text_table(csv_path).columns]
        if absent:
            raise DataFormatError(csv_path, f"missing federated key columns {absent}", "restore it from git")
    append_row(csv_path, row)


def _read_text_table(csv_path: Path) -> pd.DataFrame:
    """The CSV as text cells, or a :class:`DataFormatError` naming the file, the line and the fix."""
    fix = f"repair or remove that line of {csv_path} (git diff shows hand edits and bad merges)"
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as error:
        raise DataFormatError(csv_path, f"unreadable CSV ({str(error).strip()})", fix) from error
    except (UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataFormatError(csv_path, f"not a leaderboard CSV ({error})", fix) from error
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(
            csv_path, f"missing key columns {missing}", f"restore the header of {csv_path} from git"
        )
    return table


def check_leaderboard(csv_path: str | Path) -> None:
    """Raises :class:`DataFormatError` now if ``csv_path`` exists but a row could not be appended to it.

    ``bench`` calls it before training, so a broken leaderboard is found before hours of work, not after.
    """
    csv_path = Path(csv_path)
    if csv_path.is_file() and csv_path.stat().st_size > 0:
        _read_text_table(csv_path)


def read_leaderboard(csv_path: str | Path) -> pd.DataFrame:
    """Read a leaderboard CSV with typed columns: metrics and numeric provenance as numbers, the rest text.

    Blank metric cells become NaN; blank text cells stay ``""``. Integer provenance columns use pandas'
    nullable ``Int64``. ``postprocess`` and ``source`` are filled with ``none`` / ``brainbench`` where absent
    or blank (rows written before those columns existed).

    Raises:
        DataFormatError: a line that does not parse or a missing key column (:data:`KEY_COLUMNS`).
    """
    table = _read_text_table(Path(csv_path))
    for column, default in (("postprocess", NO_POSTPROCESS), ("source", EVALUATED_SOURCE)):
        if column not in table.columns:
            table[column] = default
        table[column] = table[column].replace("", default)
    return _typed(table)


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """Metric and timing columns as floats, counts as nullable integers (one frame built at once)."""
    typed = {}
    for column in table.columns:
        if is_metric_id(column) or column in _FLOAT_COLUMNS:
            typed[column] = pd.to_numeric(table[column].replace("", None), errors="coerce").astype("float64")
        elif column in _INTEGER_COLUMNS:
            typed[column] = pd.to_numeric(table[column].replace("", None), errors="coerce").astype("Int64")
        else:
            typed[column] = table[column]
    return pd.DataFrame(typed, index=table.index)


def read_reported(csv_path: str | Path) -> pd.DataFrame:
    """Read an as-reported CSV (``leaderboards/reported/<dataset>.csv``): numbers copied from papers.

    The file has the :data:`REPORTED_COLUMNS` (``source`` is ``paper:<ref>`` or ``repo:<ref>``, ``page``
    says where in the source the number is printed) followed by metric spec ids whose ``<network>`` is the
    network the paper used (e.g. ``ViT-bigG-14:laion2b_s39b_b160k.clip_tokens``), so these numbers never
    share a column with a brainbench number computed in another space (metrics.md §6.8).

    Raises:
        DataFormatError: when a required column is missing, a column is neither a required column nor a
            metric id, a ``source`` is not a paper/repo reference, or a ``postprocess`` flag is malformed.
    """
    csv_path = Path(csv_path)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in REPORTED_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(
            csv_path, f"missing columns {missing}", f"add the columns {list(REPORTED_COLUMNS)}"
        )
    unknown = [c for c in table.columns if c not in REPORTED_COLUMNS and not is_metric_id(c)]
    if unknown:
        raise DataFormatError(
            csv_path, f"columns {unknown} are not metric ids", "name metric columns <metric>[/<network>]@v<N>"
        )
    for line, (source, flag) in enumerate(zip(table["source"], table["postprocess"], strict=True), start=2):
        if not is_reported_source(source):
            raise DataFormatError(
                csv_path, f"line {line}: source {source!r}", "use paper:<ref> or repo:<ref> for reported rows"
            )
        if not _POSTPROCESS_RE.match(flag):
            raise DataFormatError(
                csv_path, f"line {line}: postprocess {flag!r}", "use 'none' or steps like 'blend:0.25'"
            )
    return _typed(table)
