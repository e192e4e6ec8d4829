"""Static HTML leaderboard report: the README's tables, bar plots per table and reconstruction galleries.

``build_report(leaderboards, runs, out)`` writes ``<out>/index.html`` (plain HTML with an inline ``<style>``,
no JavaScript), ``<out>/plots/*.png`` (matplotlib, one grouped bar chart per section × metric family, with the
chance level drawn where one is defined) and ``<out>/gallery/<run_id>/*.png`` (thumbnails). The tables are
the ones :mod:`brainbench.leaderboard.render` builds, so the HTML and ``leaderboards/README.md`` always show
the same numbers, arrows, bold and chance rows.

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

from brainbench.leaderboard.render import (
    INTRO,
    BoardSection,
    BoardTable,
    build_sections,
    chance_cell,
    format_value,
    load_leaderboards,
    section_caption,
)
from brainbench.leaderboard.store import EVALUATED_SOURCE

GALLERY_ITEMS = 8
THUMB_PX = 160
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { border-bottom: 2px solid #333; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
p.note, p.caption { color: #555; } p.empty { font-style: italic; color: #a33; }
div.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; } th small { font-weight: normal; color: #666; }
td.label { text-align: left; white-space: nowrap; } tr.chance td { font-style: italic; color: #666; }
td strong { color: #000; background: #e6f2e6; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
table.gallery td, table.gallery th { text-align: center; }
table.gallery img { width: 128px; height: 128px; object-fit: contain; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _e(text: object) -> str:
    return html.escape(str(text))


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
        cells.append(f"<th><code>{_e(info.name)}</code>{arrow}<br><small>{_e(space)}</small></th>")
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


def plot_table(table: BoardTable, path: Path, title: str) -> Path:
    """A horizontal grouped bar chart of ``table``: one group per metric, one bar per entry, chance as a tick.

    Returns:
        ``path``, a PNG.
    """
    from matplotlib.figure import Figure  # imported here: only the report needs matplotlib

    n_metrics, n_rows = len(table.metrics), max(len(table.rows), 1)
    bar = 0.8 / n_rows
    fig = Figure(figsize=(9, 1.2 + n_metrics * (0.22 * n_rows + 0.25)), dpi=90)
    ax = fig.add_subplot()
    spaces = {(m.network, m.version) for m in table.metrics}
    for i, row in enumerate(table.rows):
        ys = [j - 0.4 + bar * (i + 0.5) for j in range(n_metrics)]
        widths = [0.0 if math.isnan(v) else v for v in row.values]
        named = zip(table.label_columns, row.labels, strict=True)
        label = " · ".join(f"n={v}" if k == "runs" else v for k, v in named if v and k != "page")
        ax.barh(ys, widths, height=bar * 0.9, label=label)
    for j, info in enumerate(table.metrics):
        if info.chance is not None:
            ax.plot([info.chance] * 2, [j - 0.45, j + 0.45], color="black", linestyle="--", linewidth=1)
    labels = []
    for info in table.metrics:
        label = f"{info.name} {info.arrow}".strip()
        if len(spaces) > 1:
            label += f"\n{info.network or '-'} @v{info.version}"
        labels.append(label)
    ax.set_yticks(range(n_metrics), labels=labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title + ("   (dashed: chance)" if any(m.chance is not None for m in table.metrics) else ""))
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    if table.rows:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.04 - 0.4 / n_metrics), ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


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
    """One section: title, caption, then per family its table and bar plot (written to ``<out>/plots/``)."""
    lines = [
        f"<h2 id='{_e(section.slug)}'>{_e(section.title)}</h2>",
        f"<p class='caption'>{_inline_md(section_caption(section))}</p>",
    ]
    for table in section.tables:
        plot = out / "plots" / f"{section.slug}-{_slug(table.family)}.png"
        plot_table(table, plot, f"{section.title} — {table.family}")
        rel = plot.relative_to(out).as_posix()
        lines += [
            f"<h3>{_e(table.family)}</h3>",
            html_table(table),
            f"<img class='plot' src='{_e(rel)}' alt='{_e(section.title)} {_e(table.family)} bar chart'>",
        ]
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
        f"<ul>{nav}<li><a href='#gallery'>Reconstruction galleries</a></li></ul>",
    ]
    if not sections:
        body.append("<p class='empty'>No leaderboard rows yet: run <code>make bench</code>.</p>")
    body += [section_html(section, out) for section in sections]
    datasets = sorted({s.dataset for s in sections if not s.reported})
    body.append(gallery_html(find_gallery_runs(rows, runs), out, datasets))
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>brainbench leaderboards</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
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
