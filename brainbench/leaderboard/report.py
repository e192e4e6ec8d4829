"""Static HTML leaderboard report: headline tables, full tables, bar plots and reconstruction galleries.

``build_report(leaderboards, runs, out)`` writes ``<out>/index.html`` (plain HTML with an inline ``<style>``
and a few lines of inline JavaScript to sort tables; no external files, it works offline as a ``file://``
page), ``<out>/plots/*.png`` (matplotlib) and ``<out>/gallery/<run_id>/*.png`` (thumbnails).

Each dataset × task section opens with its *headline* table: the few columns a paper reports for that task
(:mod:`brainbench.leaderboard.headline`), short headers with the full spec id as tooltip, chance row, best
bold, sortable by clicking a header. Label columns that are the same for every entry are moved to one line
under the table. A screen-sized plot of the headline metrics follows (one panel per metric, legend on top,
the :data:`TOP_K` best entries when there are more). Every other column sits behind a collapsed
``<details>`` toggle: the per-family tables that :mod:`brainbench.leaderboard.render` builds (so the HTML
and ``leaderboards/README.md`` show the same numbers, arrows, bold and chance rows), each with its plot.

Galleries: a run that saved reconstructions has ``runs/<run_id>/recons/<key>.png`` beside the ground truth
``runs/<run_id>/recons/gt_<key>.png``. For each dataset × task the gallery shows, per stimulus key, the
ground truth beside every method's reconstruction of it; when no run saved any, the report says so.
Reconstructions are shown exactly as saved: any post-processing (e.g. MindEye2's blend with the blurry
reconstruction) is the row's ``postprocess`` flag.

Run ``python -m brainbench.leaderboard.report`` (``make leaderboard``) to rewrite ``leaderboards/report/``.
"""

from __future__ import annotations

import argparse
import html
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from brainbench.errors import require_extra
from brainbench.leaderboard.headline import HeadlineColumn, select_headline
from brainbench.leaderboard.render import (
    INTRO,
    BoardRow,
    BoardSection,
    BoardTable,
    MetricInfo,
    build_sections,
    chance_cell,
    format_value,
    load_leaderboards,
    section_caption,
)
from brainbench.leaderboard.store import EVALUATED_SOURCE

GALLERY_ITEMS = 8
THUMB_PX = 160
TOP_K = 20  # entries per plot; the tables keep every entry
PANELS = 8  # metric panels per plot (two rows of four)
PLOT_WIDTH_IN = 10  # at 90 dpi: 900 px wide, at most about 560 px tall
LEGEND_CHARS = 70  # longer entry labels are cut in the legend (the table has them whole)
# label columns of the headline tables (``page`` stays in the full tables), with shorter headers
HEADLINE_LABELS = {
    "method": "method",
    "method_version": "version",
    "config": "config",
    "generator": "generator",
    "distributed": "distributed",
    "subject": "subject",
    "backbone": "backbone",
    "postprocess": "post-proc.",
    "split": "split",
    "source": "source",
    "runs": "runs",
}
ALWAYS_SHOWN = ("method", "runs")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #333; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
p.note, p.caption { color: #555; } p.empty { font-style: italic; color: #a33; }
p.same { color: #555; font-size: 0.85em; margin-top: -0.5em; }
div.scroll { overflow-x: auto; }
div.headline { overflow: auto; max-height: 75vh; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } th small { font-weight: normal; color: #666; }
td.label { text-align: left; white-space: nowrap; } tr.chance td { font-style: italic; color: #666; }
td strong { color: #000; background: #e6f2e6; }
table.headline { font-size: 0.9em; }
table.headline thead th { position: sticky; top: 0; z-index: 1; cursor: pointer; }
table.headline td.label { white-space: normal; } table.headline td.label:first-child { white-space: nowrap; }
table.headline tfoot td { background: #fafafa; }
th.asc::after { content: " \\25B4"; } th.desc::after { content: " \\25BE"; }
details.all { margin: 0.5em 0 1.5em; } details.all > summary { cursor: pointer; font-weight: bold; }
img.plot { display: block; max-width: 100%; max-height: 90vh; border: 1px solid #ddd; }
table.gallery td, table.gallery th { text-align: center; }
table.gallery img { width: 128px; height: 128px; object-fit: contain; }
"""
# click a headline header to sort its rows: metrics best first (by their arrow), labels A→Z; again to reverse
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var first = th.dataset.dir === '-1' ? 1 : th.dataset.dir === '1' ? -1 : 1;
      var order = th.classList.contains('asc') ? -1 : th.classList.contains('desc') ? 1 : first;
      table.querySelectorAll('thead th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(order === 1 ? 'asc' : 'desc');
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var p = a.cells[col], q = b.cells[col], x = p.dataset.v, y = q.dataset.v;
        if (x === undefined) { return order * p.textContent.localeCompare(q.textContent); }
        if (x === '' || y === '') { return (x === '') - (y === ''); }
        return order * (parseFloat(x) - parseFloat(y));
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _e(text: object) -> str:
    return html.escape(str(text))


def _breakable(text: object) -> str:
    """Escape ``text`` and let it wrap after ``_ . / : ,`` (ids and paths have no spaces)."""
    return re.sub(r"([_./:,])", r"\1<wbr>", _e(text))


def _inline_md(text: str) -> str:
    """Escape ``text`` and turn its markdown ``**bold**``, ``*italic*`` and ```code``` into HTML."""
    out = _e(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def _header_html(table: BoardTable) -> str:
    cells = [f"<th>{_e(c)}</th>" for c in table.label_columns]
    for info in table.metrics:
        space = f"{info.network} @v{info.version}" if info.network else f"@v{info.version}"
        arrow = f" {info.arrow}" if info.arrow else ""
        cells.append(
            f"<th title='{_e(info.metric_id)}'><code>{_e(info.name)}</code>{arrow}"
            f"<br><small>{_e(space)}</small></th>"
        )
    return "<tr>" + "".join(cells) + "</tr>"


def html_table(table: BoardTable) -> str:
    """One family table as HTML, best values in ``<strong>``, with a trailing chance row."""
    lines = ["<div class='scroll'><table class='board'>", "<thead>" + _header_html(table) + "</thead><tbody>"]
    for row in table.rows:
        cells = [f"<td class='label'>{_e(label)}</td>" for label in row.labels]
        for value, best in zip(row.values, row.best, strict=True):
            text = _e(format_value(value))
            cells.append(f"<td><strong>{text}</strong></td>" if best else f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    blanks = "<td class='label'></td>" * (len(table.label_columns) - 1)
    chance = "".join(f"<td>{_e(chance_cell(m))}</td>" for m in table.metrics)
    lines.append(f"<tr class='chance'><td class='label'>chance</td>{blanks}{chance}</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


@dataclass(frozen=True)
class HeadlineTable:
    """A section's headline table: entries with a value in a headline column, varying labels only.

    Attributes:
        label_columns: the label columns shown (those that differ between entries, plus method and runs).
        same: label column → its value, for the label columns equal for every entry (shown under the table).
        columns: the headline metric columns (:func:`brainbench.leaderboard.headline.select_headline`).
        rows: the entries, each a :class:`BoardRow` over ``label_columns`` and ``columns``.
        n_entries: entries in the section; those not in ``rows`` have no headline value.
        n_metrics: metric columns in the section, headline or not.
    """

    label_columns: tuple[str, ...]
    same: dict[str, str]
    columns: tuple[HeadlineColumn, ...]
    rows: tuple[BoardRow, ...]
    n_entries: int
    n_metrics: int


def headline_table(section: BoardSection) -> HeadlineTable:
    """The headline table of ``section``, merged from its family tables (same values and bold)."""
    labels = section.tables[0].label_columns if section.tables else ()
    cells: dict[tuple[str, ...], dict[str, tuple[float, bool]]] = {}
    metrics = [info for table in section.tables for info in table.metrics]
    for table in section.tables:
        for row in table.rows:
            entry = cells.setdefault(row.labels, {})
            for info, value, best in zip(table.metrics, row.values, row.best, strict=True):
                if not math.isnan(value):
                    entry[info.metric_id] = (value, best)
    entries = sorted(cells)
    filled = {m.metric_id: {i for i, e in enumerate(entries) if m.metric_id in cells[e]} for m in metrics}
    columns = tuple(select_headline(section.task, metrics, filled))
    ids = [column.info.metric_id for column in columns]
    kept = [entry for entry in entries if any(i in cells[entry] for i in ids)]
    shown = [c for c in labels if c in HEADLINE_LABELS]
    varying = [c for c in shown if c in ALWAYS_SHOWN or len({entry[labels.index(c)] for entry in kept}) > 1]
    same = {
        c: kept[0][labels.index(c)] for c in shown if c not in varying and kept and kept[0][labels.index(c)]
    }
    rows = tuple(
        BoardRow(
            labels=tuple(entry[labels.index(c)] for c in varying),
            values=tuple(cells[entry].get(i, (math.nan, False))[0] for i in ids),
            best=tuple(cells[entry].get(i, (math.nan, False))[1] for i in ids),
        )
        for entry in kept
    )
    return HeadlineTable(tuple(varying), same, columns, rows, len(entries), len(metrics))


def _headline_header(column: HeadlineColumn) -> str:
    info = column.info
    direction = {True: "1", False: "-1", None: "0"}[info.higher_is_better]
    arrow = f" {info.arrow}" if info.arrow else ""
    note = f"<br><small>{_breakable(column.network_note)}</small>" if column.network_note else ""
    return f"<th title='{_e(info.metric_id)}' data-dir='{direction}'>{_e(column.header)}{arrow}{note}</th>"


def headline_html(table: HeadlineTable) -> str:
    """The headline table as sortable HTML (``table.headline``), chance row in its ``<tfoot>``."""
    head = "".join(f"<th>{_e(HEADLINE_LABELS.get(c, c))}</th>" for c in table.label_columns)
    head += "".join(_headline_header(column) for column in table.columns)
    lines = [
        "<div class='headline'><table class='headline sortable'>",
        f"<thead><tr>{head}</tr></thead><tbody>",
    ]
    for row in table.rows:
        cells = [f"<td class='label'>{_breakable(label)}</td>" for label in row.labels]
        for value, best in zip(row.values, row.best, strict=True):
            text = _e(format_value(value))
            sort_key = "" if math.isnan(value) else repr(value).replace("inf", "Infinity")  # JS parseFloat
            inner = f"<strong>{text}</strong>" if best else text
            cells.append(f"<td data-v='{sort_key}'>{inner}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    blanks = "<td class='label'></td>" * (len(table.label_columns) - 1)
    chance = "".join(f"<td>{_e(chance_cell(column.info))}</td>" for column in table.columns)
    lines.append(
        f"</tbody><tfoot><tr class='chance'><td class='label'>chance</td>{blanks}{chance}</tr></tfoot>"
    )
    lines.append("</table></div>")
    if table.same:
        same = " · ".join(f"{HEADLINE_LABELS.get(c, c)} <code>{_e(v)}</code>" for c, v in table.same.items())
        lines.append(f"<p class='same'>Every entry: {same}.</p>")
    return "\n".join(lines)


def _top_entries(values: list[list[float]], infos: Sequence[MetricInfo], top_k: int) -> list[int]:
    """Indices of the ``top_k`` entries by mean rank over the metrics (best first; blanks rank last)."""
    frame = pd.DataFrame(values, columns=range(len(infos)), dtype=float)
    ranks = pd.DataFrame(
        {
            j: frame[j].rank(ascending=info.higher_is_better is False, method="average", na_option="bottom")
            for j, info in enumerate(infos)
        }
    )
    order = ranks.mean(axis=1).sort_values(kind="stable").index
    return [int(i) for i in order[:top_k]]


def plot_entries(
    titles: Sequence[str],
    infos: Sequence[MetricInfo],
    labels: Sequence[str],
    values: Sequence[Sequence[float]],
    path: Path,
    title: str,
    top_k: int = TOP_K,
) -> tuple[Path, int, int]:
    """A screen-sized bar chart: one panel per metric (own y scale, chance dashed), one bar per entry.

    Entries are numbered 1..k by mean rank over the plotted metrics and share one colour across panels;
    the legend (number and entry label) sits on top. At most :data:`PANELS` metrics and ``top_k`` entries.

    Returns:
        ``path`` (a PNG of at most about 900 × 560 px), the number of entries and of metrics plotted.
    """
    require_extra("matplotlib", "report", "the HTML report's plots")  # only the report needs matplotlib
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    titles, infos = list(titles)[:PANELS], list(infos)[:PANELS]
    rows = [list(v)[: len(infos)] for v in values]
    top = _top_entries(rows, infos, top_k) if rows else []
    legend = [_shorten(f"{pos + 1}. {labels[i]}", LEGEND_CHARS) for pos, i in enumerate(top)]
    # fixed layout (no tight_layout, no bbox "tight": each is a full extra draw): legend, title, panels
    legend_cols = max(1, min(4, int(PLOT_WIDTH_IN * 90 // (5 * max(map(len, legend), default=1) + 30))))
    legend_in = 0.16 * math.ceil(len(top) / legend_cols) + 0.1
    n_cols = min(4, max(len(infos), 1))
    n_rows = max(1, math.ceil(len(infos) / n_cols))
    height = legend_in + 0.6 + 2.0 * n_rows
    fig = Figure(figsize=(PLOT_WIDTH_IN, height), dpi=90)
    axes = fig.subplots(
        n_rows,
        n_cols,
        squeeze=False,
        gridspec_kw=dict(
            left=0.06,
            right=0.99,
            bottom=0.3 / height,
            top=1 - (legend_in + 0.6) / height,
            hspace=0.6,
            wspace=0.3,
        ),
    )
    palette = colormaps["tab20" if len(top) > 10 else "tab10"]
    colours = [palette(pos % palette.N) for pos in range(len(top))]
    handles = []
    for j, (ax, panel_title, info) in enumerate(zip(axes.flat, titles, infos, strict=False)):
        heights = [0.0 if math.isnan(rows[i][j]) else rows[i][j] for i in top]
        bars = ax.bar(range(len(top)), heights, color=colours)
        handles = handles or list(bars)
        if info.chance is not None:
            ax.axhline(info.chance, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{panel_title} {info.arrow}".strip(), fontsize=8)
        ax.set_xticks(
            range(len(top)), labels=[str(p + 1) for p in range(len(top))], fontsize=5 if len(top) > 9 else 6
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(infos) :]:
        ax.set_visible(False)
    chance = "   (dashed: chance)" if any(m.chance is not None for m in infos) else ""
    fig.suptitle(title + chance, fontsize=9, y=1 - (legend_in + 0.05) / height, va="top")
    if handles:
        fig.legend(
            handles,
            legend,
            loc="upper center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=legend_cols,
            fontsize=7,
            frameon=False,
            borderaxespad=0.2,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path, len(top), len(infos)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _entry_label(columns: Sequence[str], labels: Sequence[str]) -> str:
    """``ridge · v2 · world · n=3``: an entry's labels for a plot legend (``page`` left out)."""
    named = [(k, v) for k, v in zip(columns, labels, strict=True) if v and k != "page"]
    return " · ".join(f"n={v}" if k == "runs" else f"v{v}" if k == "method_version" else v for k, v in named)


def _plot_caption(n_plotted: int, n_entries: int, n_panels: int, n_metrics: int) -> str:
    parts = []
    if n_entries > n_plotted:
        parts.append(f"the {n_plotted} best of {n_entries} entries by mean rank over the plotted metrics")
    if n_metrics > n_panels:
        parts.append(f"{n_panels} of {n_metrics} metrics (headline ones first)")
    return f"<p class='caption'>Plotted: {'; '.join(parts)}; the table has them all.</p>" if parts else ""


def plot_table(table: BoardTable, path: Path, title: str, first: Sequence[str] = ()) -> tuple[Path, int, int]:
    """:func:`plot_entries` of one family table: the metric ids in ``first`` (the headline), then the rest.

    Returns:
        As :func:`plot_entries`; at most :data:`PANELS` metrics are plotted.
    """
    order = sorted(range(len(table.metrics)), key=lambda j: table.metrics[j].metric_id not in first)
    metrics = [table.metrics[j] for j in order]
    titles = [
        f"{m.name}\n{m.network} @v{m.version}" if m.network else f"{m.name} @v{m.version}" for m in metrics
    ]
    varying = [j for j in range(len(table.label_columns)) if len({row.labels[j] for row in table.rows}) > 1]
    columns = [table.label_columns[j] for j in varying] or list(table.label_columns[:1])
    labels = [
        _entry_label(columns, [row.labels[j] for j in varying] or list(row.labels[:1])) for row in table.rows
    ]
    values = [[row.values[j] for j in order] for row in table.rows]
    return plot_entries(titles, metrics, labels, values, path, title)


@dataclass(frozen=True)
class GalleryRun:
    """The saved reconstructions of one evaluated run: stimulus key → PNG (and its ground truth)."""

    run_id: str
    method: str
    subject: str
    postprocess: str
    recons: dict[str, Path] = field(hash=False)
    ground_truth: dict[str, Path] = field(hash=False)
    variant: str = ""  # the row's config and generator, when recorded


def find_gallery_runs(rows: pd.DataFrame, runs: str | Path) -> dict[tuple[str, str], list[GalleryRun]]:
    """Runs of evaluated rows that saved ``runs/<run_id>/recons/*.png``, grouped by (dataset, task)."""
    runs = Path(runs)
    found: dict[tuple[str, str], list[GalleryRun]] = {}
    if rows.empty or "run_id" not in rows.columns:
        return found
    evaluated = rows[(rows["source"] == EVALUATED_SOURCE) & (rows["run_id"] != "")]
    for _, row in evaluated.sort_values(["method", "subject", "run_id"]).iterrows():
        folder = runs / str(row["run_id"]) / "recons"
        if not folder.is_dir():
            continue
        pngs = sorted(folder.glob("*.png"))
        recons = {p.stem: p for p in pngs if not p.name.startswith("gt_")}
        if not recons:
            continue
        ground_truth = {p.stem[3:]: p for p in pngs if p.name.startswith("gt_")}
        run = GalleryRun(
            str(row["run_id"]),
            str(row["method"]),
            str(row["subject"]),
            str(row["postprocess"]),
            recons,
            ground_truth,
            " · ".join(str(row.get(c, "")) for c in ("config", "generator") if str(row.get(c, ""))),
        )
        found.setdefault((str(row["dataset"]), str(row["task"])), []).append(run)
    return found


def _thumbnail(source: Path, out: Path, *parts: str) -> str:
    """Save a thumbnail of ``source`` as ``<out>/gallery/<parts...>.png``; return the path below ``out``."""
    relative = Path("gallery", *(_slug(part) for part in parts[:-1]), f"{_slug(parts[-1])}.png")
    (out / relative).parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((THUMB_PX, THUMB_PX))
        thumb.save(out / relative)
    return relative.as_posix()


def gallery_html(
    galleries: dict[tuple[str, str], list[GalleryRun]], out: Path, datasets: Sequence[str]
) -> str:
    """The gallery section; thumbnails are written under ``<out>/gallery/``."""
    lines = ["<h2 id='gallery'>Reconstruction galleries</h2>"]
    if not galleries:
        lines.append(
            "<p class='empty'>No run on these leaderboards saved reconstructions "
            "(<code>runs/&lt;run_id&gt;/recons/&lt;key&gt;.png</code> beside "
            "<code>gt_&lt;key&gt;.png</code>), "
            "so there is no gallery yet.</p>"
        )
        return "\n".join(lines)
    without = sorted(set(datasets) - {dataset for dataset, _ in galleries})
    if without:
        lines.append(f"<p class='note'>No reconstructions saved for: {_e(', '.join(without))}.</p>")
    for (dataset, task), gallery_runs in sorted(galleries.items()):
        keys = sorted({k for run in gallery_runs for k in run.recons})[:GALLERY_ITEMS]
        lines.append(f"<h3>{_e(dataset)} · {_e(task)}</h3>")
        head = "<th>stimulus</th><th>ground truth</th>" + "".join(
            f"<th>{_e(run.method)}<br><small>"
            f"{_e(' · '.join(p for p in (run.variant, run.subject, run.postprocess, run.run_id) if p))}"
            "</small></th>"
            for run in gallery_runs
        )
        lines += ["<div class='scroll'><table class='gallery'>", f"<thead><tr>{head}</tr></thead><tbody>"]
        for key in keys:
            gt_path = next((run.ground_truth[key] for run in gallery_runs if key in run.ground_truth), None)
            cells = [f"<td>{_e(key)}</td>"]
            if gt_path is None:
                cells.append("<td>no ground truth saved</td>")
            else:
                src = _thumbnail(gt_path, out, "ground_truth", dataset, key)
                cells.append(f"<td><img src='{_e(src)}' alt='ground truth {_e(key)}'></td>")
            for run in gallery_runs:
                if key not in run.recons:
                    cells.append("<td>—</td>")
                    continue
                src = _thumbnail(run.recons[key], out, run.run_id, key)
                cells.append(f"<td><img src='{_e(src)}' alt='{_e(run.method)} {_e(key)}'></td>")
            lines.append("<tr>" + "".join(cells) + "</tr>")
        lines.append("</tbody></table></div>")
    return "\n".join(lines)


def section_html(section: BoardSection, out: Path) -> str:
    """One section: title, caption, headline table and plot, then every family table behind a toggle.

    Plots are written to ``<out>/plots/``.
    """
    lines = [
        f"<h2 id='{_e(section.slug)}'>{_e(section.title)}</h2>",
        f"<p class='caption'>{_inline_md(section_caption(section))}</p>",
    ]
    if not section.tables:
        return "\n".join(lines)
    headline = headline_table(section)
    lines.append(headline_html(headline))
    if headline.n_entries > len(headline.rows):
        missing = headline.n_entries - len(headline.rows)
        lines.append(
            f"<p class='same'>{missing} more entries have no headline metric: see all metrics below.</p>"
        )
    if headline.rows:
        plot = out / "plots" / f"{section.slug}-headline.png"
        _, n_plotted, n_panels = plot_entries(
            [f"{c.header}\n{c.network_note}" if c.network_note else c.header for c in headline.columns],
            [c.info for c in headline.columns],
            [_entry_label(headline.label_columns, row.labels) for row in headline.rows],
            [row.values for row in headline.rows],
            plot,
            f"{section.title}: headline metrics",
        )
        lines += [
            f"<img class='plot' src='{_e(plot.relative_to(out).as_posix())}' "
            f"alt='{_e(section.title)} headline bar chart'>",
            _plot_caption(n_plotted, len(headline.rows), n_panels, len(headline.columns)),
        ]
    families = ", ".join(table.family for table in section.tables)
    headline_ids = [column.info.metric_id for column in headline.columns]
    lines.append(
        f"<details class='all'><summary>all {headline.n_metrics} metrics "
        f"({len(section.tables)} table{'s' * (len(section.tables) > 1)}: {_e(families)}) "
        "and their plots</summary>"
    )
    for table in section.tables:
        plot = out / "plots" / f"{section.slug}-{_slug(table.family)}.png"
        _, n_plotted, n_panels = plot_table(table, plot, f"{section.title} — {table.family}", headline_ids)
        rel = plot.relative_to(out).as_posix()
        lines += [
            f"<h3>{_e(table.family)}</h3>",
            html_table(table),
            f"<img class='plot' src='{_e(rel)}' loading='lazy' "
            f"alt='{_e(section.title)} {_e(table.family)} bar chart'>",
            _plot_caption(n_plotted, len(table.rows), n_panels, len(table.metrics)),
        ]
    lines.append("</details>")
    return "\n".join(lines)


def build_report(leaderboards: str | Path, runs: str | Path, out: str | Path) -> Path:
    """Write ``<out>/index.html`` with tables, plots and galleries; returns its path.

    Args:
        leaderboards: folder of ``<dataset>/<task>.csv`` and ``reported/*.csv``.
        runs: folder of ``<run_id>/`` run directories (for ``recons/``).
        out: output folder; its ``plots/`` and ``gallery/`` are regenerated from scratch.
    """
    out = Path(out)
    for generated in ("plots", "gallery"):
        shutil.rmtree(out / generated, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_leaderboards(leaderboards)
    sections = build_sections(rows)
    nav = "".join(f"<li><a href='#{_e(s.slug)}'>{_e(s.title)}</a></li>" for s in sections)
    body = [
        "<h1>brainbench leaderboards</h1>",
        f"<p class='note'>Generated by <code>make leaderboard</code> from <code>{_e(leaderboards)}</code>; "
        "do not edit by hand.</p>",
        f"<p class='note'>{_inline_md(INTRO)}</p>",
        "<p class='note'>Each section opens with its <em>headline</em> metrics, the few a paper reports for "
        "the task, under short headers: hover a header for its full spec id, click it to sort (best first). "
        "Every metric is in the tables behind the section's <em>all metrics</em> toggle.</p>",
        f"<ul>{nav}<li><a href='#gallery'>Reconstruction galleries</a></li></ul>",
    ]
    if not sections:
        body.append("<p class='empty'>No leaderboard rows yet: run <code>make bench</code>.</p>")
    body += [section_html(section, out) for section in sections]
    datasets = sorted({s.dataset for s in sections if not s.reported})
    body.append(gallery_html(find_gallery_runs(rows, runs), out, datasets))
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>brainbench leaderboards</title>"
        f"<style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{SORT_JS}</script>\n</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m brainbench.leaderboard.report [--leaderboards DIR] [--runs DIR] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaderboards", type=Path, default=Path("leaderboards"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("leaderboards/report"))
    args = parser.parse_args(argv)
    print(build_report(args.leaderboards, args.runs, args.out))


if __name__ == "__main__":
    main()
