"""Leaderboard tables: per dataset and task, one markdown table per metric family (leaderboards/README.md).

The CSVs hold only metric spec ids (``<metric>[/<network>]@v<N>``, :mod:`brainbench.metrics.specs`), not the
:class:`~brainbench.metrics.specs.MetricSpec` objects, so
direction and chance level are recovered here from the
metric *name* through a small prefix registry (:data:`METRIC_KINDS`, longest prefix wins):

- direction: EffNet/SwAV correlation distance, FID, LPIPS, MSE and EPE are lower-is-better, everything else
  higher-is-better;
- chance: ``k/N`` for an N-way top-k ranking (retrieval pools, §1.6; zero-shot, §2; N-way classifiers, §3.2),
  ``1/2`` for exhaustive 2-way identification (§1.2); full-set retrieval is ``k/N_test`` (N not in the id);
  no chance level is claimed for similarity or distance metrics, whose "random" value depends on the images.

A table row is one *entry*: the runs of one method version on one subject with one backbone and one
post-processing flag (``postprocess``), averaged over runs (seeds); never the best seed (metrics.md §6.3).
The best entry per column is bold, by the column's direction (evaluated sections only). Evaluated rows
(``source=brainbench``) and rows copied from papers (``leaderboards/reported/``,
:func:`brainbench.leaderboard.store.read_reported`) are rendered in separate sections and never compete for
bold (metrics.md §3.4, §6.8). Two versions or networks of a metric are two columns, as in the CSVs.

Run ``python -m brainbench.leaderboard.render`` (``make leaderboard``) to rewrite ``leaderboards/README.md``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from brainbench.leaderboard.store import EVALUATED_SOURCE, SCORED_SOURCES, read_leaderboard, read_reported
from brainbench.metrics.specs import is_metric_id, parse_metric_id

REPORTED_DIR = "reported"
Chance = tuple[float | None, str]


def _ranking_chance(name: str) -> Chance:
    """``k/N`` from ``_top<k>_<subset|perquery><N>`` or ``_top<k>_<N>way``; ``k/N_test`` for full sets."""
    pooled = re.search(r"top(\d+)_(?:subset|perquery)(\d+)", name) or re.search(r"top(\d+)_(\d+)way", name)
    if pooled:
        k, n = int(pooled[1]), int(pooled[2])
        return k / n, f"{k}/{n}"
    full = re.search(r"top(\d+)_full", name)
    if full:
        return None, f"{full[1]}/N_test"
    return None, ""


def _half(name: str) -> Chance:
    """Exhaustive 2-way identification: chance 1/2 (metrics.md §1.2)."""
    return 0.5, "1/2"


@dataclass(frozen=True)
class MetricKind:
    """How to read the columns whose metric name starts with ``prefix`` (at a ``_`` boundary).

    Attributes:
        prefix: metric-name prefix, e.g. ``corrdist`` matches ``corrdist`` and ``corrdist_mindeye``.
        family: the table the column goes to.
        higher_is_better: sort direction (↑ when True, ↓ when False).
        chance: name → (chance value or None, how it was derived); None when no chance level is defined.
    """

    prefix: str
    family: str
    higher_is_better: bool
    chance: Callable[[str], Chance] | None = None

    def matches(self, name: str) -> bool:
        """Whether ``name`` is ``prefix`` or starts with it at a word boundary."""
        return name == self.prefix or name.startswith(self.prefix.rstrip("_") + "_")


METRIC_KINDS: tuple[MetricKind, ...] = (
    MetricKind("retrieval", "retrieval", True, _ranking_chance),
    MetricKind("identification_2way", "2-way identification", True, _half),
    MetricKind("zeroshot", "zero-shot classification", True, _ranking_chance),
    MetricKind("nway", "N-way classification", True, _ranking_chance),
    MetricKind("pixcorr", "low-level", True),
    MetricKind("ssim", "low-level", True),
    MetricKind("psnr", "low-level", True),
    MetricKind("frame_ssim", "low-level", True),
    MetricKind("frame_psnr", "low-level", True),
    MetricKind("mse", "low-level", False),
    MetricKind("corrdist", "feature distance", False),
    MetricKind("lpips", "feature distance", False),
    MetricKind("fid", "distribution", False),
    MetricKind("kid", "distribution", False),
    MetricKind("clip_pcc", "temporal", True),
    MetricKind("epe", "temporal", False),
    MetricKind("brain_corr", "brain correlation", True),
    MetricKind("category", "category decoding", True),
)
FAMILY_ORDER: tuple[str, ...] = (*dict.fromkeys(kind.family for kind in METRIC_KINDS), "other")


@dataclass(frozen=True)
class MetricInfo:
    """What the renderer knows about one metric column, from its id alone.

    Attributes:
        metric_id: the full spec id (the CSV column).
        name: metric name; network: embedding space ("" when none); version: spec version.
        family: table the column belongs to (``other`` when no :data:`METRIC_KINDS` prefix matches).
        higher_is_better: direction, None when unknown (then no arrow and no bold).
        chance: chance level, None when undefined; chance_text: how it is derived (e.g. ``1/300``).
    """

    metric_id: str
    name: str
    network: str
    version: int
    family: str
    higher_is_better: bool | None
    chance: float | None
    chance_text: str

    @property
    def arrow(self) -> str:
        """``↑`` (higher is better), ``↓`` (lower is better) or ``""`` (unknown)."""
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]


def metric_info(metric_id: str) -> MetricInfo:
    """Direction, family and chance level of a metric column, from its spec id.

    Example:
        >>> info = metric_info("retrieval_b2i_top1_subset300/world-clip:v1.clip_tokens@v1")
        >>> info.family, info.arrow, info.chance_text
        ('retrieval', '↑', '1/300')
    """
    name, network, version = parse_metric_id(metric_id)
    matching = [kind for kind in METRIC_KINDS if kind.matches(name)]
    if not matching:
        return MetricInfo(metric_id, name, network, version, "other", None, None, "")
    kind = max(matching, key=lambda k: len(k.prefix))
    chance, text = kind.chance(name) if kind.chance else (None, "")
    return MetricInfo(metric_id, name, network, version, kind.family, kind.higher_is_better, chance, text)


@dataclass(frozen=True)
class BoardRow:
    """One entry of a table: its label cells, one value per metric column (NaN when blank), bold flags."""

    labels: tuple[str, ...]
    values: tuple[float, ...]
    best: tuple[bool, ...]


@dataclass(frozen=True)
class BoardTable:
    """One metric family within a section: methods as rows, metric ids as columns."""

    family: str
    label_columns: tuple[str, ...]
    metrics: tuple[MetricInfo, ...]
    rows: tuple[BoardRow, ...]


@dataclass(frozen=True)
class BoardSection:
    """One dataset × task (× dataset version × split for evaluated rows) with its family tables."""

    dataset: str
    task: str
    dataset_version: str
    split: str
    reported: bool
    n_rows: int
    tables: tuple[BoardTable, ...]

    @property
    def title(self) -> str:
        """``<dataset> · <task>``, with ``(as reported)`` for paper rows."""
        return f"{self.dataset} · {self.task}" + (" (as reported)" if self.reported else "")

    @property
    def slug(self) -> str:
        """A file- and anchor-safe id of the section."""
        parts = (self.dataset, self.task, self.dataset_version, self.split, "reported" * self.reported)
        return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(p for p in parts if p)).strip("-").lower()


# ``config`` and ``generator`` keep ablations (another config, another generator) in rows of their own; a
# federated board's key columns (store.FEDERATED_KEY_COLUMNS) keep federations apart
_FEDERATED_LABELS = ("sites", "rounds", "missing_p", "engine")
_EVALUATED_LABELS = (
    "method",
    "method_version",
    "config",
    "subject",
    "backbone",
    "generator",
    *_FEDERATED_LABELS,
    "distributed",
    "postprocess",
    "source",
)
#: shown only in sections where some row has them
_OPTIONAL_LABELS = ("config", "generator", "distributed", *_FEDERATED_LABELS)
_REPORTED_LABELS = ("method", "subject", "split", "postprocess", "source", "page")


def load_leaderboards(root: str | Path) -> pd.DataFrame:
    """All rows under ``root``: ``<dataset>/<task>.csv`` (evaluated) and ``reported/*.csv`` (as reported).

    Returns:
        One frame with the union of columns, a ``task`` column (the evaluated CSV's file stem), metric columns
        as float (NaN when blank) and every other column as text (``""`` when absent).
    """
    root = Path(root)
    frames = []
    for csv_path in sorted(root.glob("*/*.csv")):
        if csv_path.parent.name == REPORTED_DIR:
            continue
        frames.append(read_leaderboard(csv_path).assign(task=csv_path.stem))
    frames += [read_reported(csv_path) for csv_path in sorted((root / REPORTED_DIR).glob("*.csv"))]
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return pd.DataFrame(columns=["dataset", "task", "source"])
    rows = pd.concat(frames, ignore_index=True)
    for column in rows.columns:
        if not is_metric_id(column):
            rows[column] = rows[column].astype("string").fillna("").astype(object)
    return rows


def _best_flags(values: Sequence[float], higher_is_better: bool | None) -> list[bool]:
    finite = [v for v in values if not math.isnan(v)]
    if higher_is_better is None or len(finite) < 2:
        return [False] * len(values)
    best = max(finite) if higher_is_better else min(finite)
    return [not math.isnan(v) and math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-15) for v in values]


def _family_table(
    entries: pd.DataFrame, labels: tuple[str, ...], metrics: list[MetricInfo], *, bold: bool
) -> BoardTable:
    columns = [m.metric_id for m in metrics]
    kept = entries[entries[columns].notna().any(axis=1)]
    values = kept[columns].to_numpy(dtype=float)
    best = [
        _best_flags(list(values[:, j]), m.higher_is_better if bold else None) for j, m in enumerate(metrics)
    ]
    rows = tuple(
        BoardRow(
            labels=tuple(str(kept.iloc[i][c]) for c in labels),
            values=tuple(float(v) for v in values[i]),
            best=tuple(best[j][i] for j in range(len(metrics))),
        )
        for i in range(len(kept))
    )
    return BoardTable(metrics[0].family, labels, tuple(metrics), rows)


def _section(rows: pd.DataFrame, key: dict[str, str], reported: bool, metric_ids: list[str]) -> BoardSection:
    present = [m for m in metric_ids if rows[m].notna().any()]
    labels = _REPORTED_LABELS if reported else _EVALUATED_LABELS
    blank = pd.DataFrame({c: "" for c in labels if c not in rows.columns}, index=rows.index)
    rows = pd.concat([rows, blank], axis=1)
    labels = tuple(c for c in labels if c not in _OPTIONAL_LABELS or (rows[c] != "").any())
    if not reported and (rows["source"] == EVALUATED_SOURCE).all():
        labels = tuple(c for c in labels if c != "source")  # shown where external submissions sit beside runs
    if not reported:  # a seed run again replaces its earlier row: seeds average, repeats of one seed do not
        rows = rows.drop_duplicates(subset=[*labels, "seed"], keep="last")
    grouped = rows.groupby(list(labels), sort=True, dropna=False)
    entries = grouped[present].mean().reset_index()
    if not reported:
        entries["runs"] = grouped.size().to_numpy().astype(str)
        labels = (*labels, "runs")
    infos = [metric_info(m) for m in sorted(present)]
    tables = []
    for family in FAMILY_ORDER:
        members = [info for info in infos if info.family == family]
        if members:
            tables.append(_family_table(entries, labels, members, bold=not reported))
    return BoardSection(
        dataset=key["dataset"],
        task=key["task"],
        dataset_version=key.get("dataset_version", ""),
        split=key.get("split", ""),
        reported=reported,
        n_rows=len(rows),
        tables=tuple(tables),
    )


def build_sections(rows: pd.DataFrame) -> list[BoardSection]:
    """Group rows into sections: evaluated by (dataset, task, dataset version, split), then as-reported.

    As-reported rows are grouped by (dataset, task) only; their split and source are row labels.
    """
    if rows.empty:
        return []
    metric_ids = [c for c in rows.columns if is_metric_id(c)]
    sections = []
    evaluated = rows["source"].isin(SCORED_SOURCES)
    for reported, keys in (
        (False, ["dataset", "task", "dataset_version", "split"]),
        (True, ["dataset", "task"]),
    ):
        subset = rows[~evaluated if reported else evaluated]
        for values, group in subset.groupby(keys, sort=True):
            key = dict(zip(keys, (str(v) for v in values), strict=True))
            sections.append(_section(group, key, reported, metric_ids))
    return sections


def format_value(value: float) -> str:
    """Three decimals below 10, two below 100, one above; ``—`` for blank."""
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    return f"{value:.{digits}f}"


def chance_cell(info: MetricInfo) -> str:
    """The chance row's cell: ``0.003 (1/300)``, ``1/N_test`` or ``—``."""
    if info.chance is not None:
        return f"{format_value(info.chance)} ({info.chance_text})"
    return info.chance_text or "—"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _md_header(info: MetricInfo) -> str:
    space = f"{info.network} @v{info.version}" if info.network else f"@v{info.version}"
    return _md(f"`{info.name}` {info.arrow}<br><sub>{space}</sub>".replace("` <br>", "`<br>"))


def markdown_table(table: BoardTable) -> str:
    """One family table as GitHub markdown, with a trailing *chance* row."""
    header = [*table.label_columns, *(_md_header(m) for m in table.metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.rows:
        cells = [_md(label) for label in row.labels]
        for value, best in zip(row.values, row.best, strict=True):
            text = format_value(value)
            cells.append(f"**{text}**" if best else text)
        lines.append("| " + " | ".join(cells) + " |")
    blanks = [""] * (len(table.label_columns) - 1)
    chance = ["*chance*", *blanks, *(_md(chance_cell(m)) for m in table.metrics)]
    lines.append("| " + " | ".join(chance) + " |")
    return "\n".join(lines)


INTRO = (
    "How to read: ↑ higher is better, ↓ lower is better. **Bold** marks the best entry of a column "
    "(evaluated rows only). An entry is one method version × subject × backbone × post-processing, "
    "averaged over its runs (seeds); never the best seed. Column headers are metric spec ids, `name` over "
    "`network @vN`: two versions or networks of a metric are two columns and are never merged. The "
    "*chance* row is the expected score of a random decoder where one is defined (k/N for an N-way top-k "
    "ranking, 1/2 for 2-way identification). `postprocess` records what was done to outputs before "
    "scoring (`none`, `blend:<w>`, `best_of:<n>`, …)."
)
REPORTED_NOTE = (
    "Numbers copied from papers or from the authors' printed outputs (`leaderboards/reported/`), with source "
    "and page. They were not re-evaluated by brainbench, were computed on real data with the papers' own "
    "networks (named in the column ids); subjects, test sets and post-processing differ between rows, so "
    "nothing is bolded here."
)


def section_caption(section: BoardSection) -> str:
    """One line under a section title: version and split, or the as-reported note."""
    if section.reported:
        return REPORTED_NOTE
    return (
        f"dataset version `{section.dataset_version}`, split `{section.split}`, "
        f"{section.n_rows} run{'s' if section.n_rows != 1 else ''}"
    )


def render_markdown(sections: Sequence[BoardSection]) -> str:
    """The whole ``leaderboards/README.md`` text."""
    out = [
        "# brainbench leaderboards",
        "",
        "_Generated by `make leaderboard` from `leaderboards/<dataset>/<task>.csv` and "
        "`leaderboards/reported/*.csv`; do not edit by hand. The HTML report with plots and "
        "reconstruction galleries is `leaderboards/report/index.html`._",
        "",
        INTRO,
    ]
    if not sections:
        out += ["", "No leaderboard rows yet: run `make bench`."]
    for section in sections:
        out += ["", f"## {section.title}", "", section_caption(section)]
        for table in section.tables:
            out += ["", f"### {table.family}", "", markdown_table(table)]
    return "\n".join(out) + "\n"


def write_readme(leaderboards: str | Path, out_path: str | Path | None = None) -> Path:
    """Render every leaderboard under ``leaderboards`` to ``out_path`` (default: its ``README.md``)."""
    leaderboards = Path(leaderboards)
    out_path = Path(out_path) if out_path is not None else leaderboards / "README.md"
    text = render_markdown(build_sections(load_leaderboards(leaderboards)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8")
    return out_path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m brainbench.leaderboard.render [--leaderboards DIR] [--out FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    parser.add_argument("--out", type=Path, default=None, help="default: <leaderboards>/README.md")
    args = parser.parse_args(argv)
    print(write_readme(args.leaderboards, args.out))


if __name__ == "__main__":
    main()
