"""Headline columns: the few metrics per task that a paper reports, for the report's compact tables.

:data:`HEADLINES` maps a leaderboard task (the CSV stem, or the ``task`` column of reported rows) to an
ordered tuple of :class:`Headline` slots; each slot names a metric by a pattern over the metric *name* of
the spec id (never over its network):

- ``retrieval``: brain→image and image→brain top-1 in the largest MindEye subset pool (``subset300``),
  2-way identification, PixCorr and SSIM, then brain→image top-1 in Lite-Mind's per-query pool;
- ``zeroshot``: zero-shot top-1 (cosine and BraVL's SVC), brain→image top-1 in the subset pool, 2-way;
- ``video``: keyframe brain→image top-1, 2-way, video and frame N-way, gated CLIP-pcc, frame SSIM, PSNR;
- ``reconstruction``: PixCorr, SSIM, 2-way identification in every feature network, EffNet-B and SwAV
  correlation distances.

A task not listed uses every slot in that order. Which network a slot shows: its ``networks="cover"``
slots take the primary prediction first (:data:`PRIMARY_PREDICTIONS`: ``clip_tokens`` before
``clip_tokens_cls``, ``clip_image``, ``clip_text``; feature networks on images last) and add the next network
only for entries the ones taken leave blank, so a method trained on another target still gets a cell;
``networks="all"`` slots (reconstruction 2-way, whose papers report AlexNet(2), AlexNet(5), Inception and
CLIP) take every network present. When a slot's name pattern matches several pool sizes (``50way``,
``2way``), only the largest is kept. At most :data:`MAX_HEADLINE` columns per table; every column,
headline or not, stays in the report's full per-family tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from brainbench.leaderboard.render import MetricInfo

MAX_HEADLINE = 8
PRIMARY_PREDICTIONS = ("clip_tokens", "clip_tokens_cls", "clip_image", "clip_text")


@dataclass(frozen=True)
class Headline:
    """One headline slot.

    Attributes:
        label: short column header; ``{n}`` is replaced by the pattern's ``n`` group (a pool size).
        pattern: regular expression, full match against the metric name (the spec id before ``/``).
        networks: ``cover`` (primary prediction first, more only for entries it leaves blank) or ``all``.
    """

    label: str
    pattern: str
    networks: Literal["cover", "all"] = "cover"

    def match(self, name: str) -> re.Match[str] | None:
        """The full match of ``pattern`` against metric ``name``, or None."""
        return re.fullmatch(self.pattern, name)

    def header(self, name: str) -> str:
        """``label`` with ``{n}`` filled from ``name``."""
        found = self.match(name)
        n = found.groupdict().get("n") if found else None
        return self.label.replace("{n}", n or "N")


B2I = Headline("b2i top-1, {n}", r"retrieval_b2i_top1_subset(?P<n>\d+)")
I2B = Headline("i2b top-1, {n}", r"retrieval_i2b_top1_subset(?P<n>\d+)")
B2I_PERQUERY = Headline("b2i top-1, per-query {n}", r"retrieval_b2i_top1_perquery(?P<n>\d+)")
TWO_WAY = Headline("2-way", r"identification_2way")
PIXCORR = Headline("PixCorr", r"pixcorr(_\w+)?")
SSIM = Headline("SSIM", r"ssim(_\w+)?")

HEADLINES: dict[str, tuple[Headline, ...]] = {
    "retrieval": (B2I, I2B, TWO_WAY, PIXCORR, SSIM, B2I_PERQUERY),
    "zeroshot": (
        Headline("zero-shot top-1, {n}-way", r"zeroshot_top1_(?P<n>\d+)way"),
        Headline("SVC top-1, {n}-way", r"zeroshot_svc_top1_(?P<n>\d+)way"),
        B2I,
        TWO_WAY,
    ),
    "video": (
        B2I,
        TWO_WAY,
        Headline("video {n}-way", r"nway_video_top1_(?P<n>\d+)way"),
        Headline("frame {n}-way", r"nway_frame_top1_(?P<n>\d+)way"),
        Headline("CLIP-pcc", r"clip_pcc_gated[0-9.]*"),
        Headline("frame SSIM", r"frame_ssim_mindvideo"),
        Headline("PSNR", r"frame_psnr"),
    ),
    "reconstruction": (
        PIXCORR,
        SSIM,
        Headline("2-way", r"identification_2way", networks="all"),
        Headline("corr. distance", r"corrdist", networks="all"),
    ),
}
DEFAULT_HEADLINES: tuple[Headline, ...] = tuple(
    dict.fromkeys(slot for slots in HEADLINES.values() for slot in slots)
)


@dataclass(frozen=True)
class HeadlineColumn:
    """One chosen column: its slot's header, the metric, and the network part shown under the header."""

    header: str
    info: MetricInfo
    network_note: str = ""


def _network_rank(network: str) -> int:
    """0 for the primary prediction ``<net>.clip_tokens``, ..., feature networks on images last."""
    if "." not in network:
        return len(PRIMARY_PREDICTIONS) + 1
    prediction = network.rsplit(".", 1)[1]
    if prediction in PRIMARY_PREDICTIONS:
        return PRIMARY_PREDICTIONS.index(prediction)
    return len(PRIMARY_PREDICTIONS)


def _pool(slot: Headline, name: str) -> int:
    found = slot.match(name)
    n = found.groupdict().get("n") if found else None
    return int(n) if n else 0


def _cover(candidates: Sequence[MetricInfo], filled: Mapping[str, set[int]]) -> list[MetricInfo]:
    """Primary prediction first; another network only for the entries the columns taken leave blank."""
    picked: list[MetricInfo] = []
    covered: set[int] = set()
    while True:
        gains = [(m, filled.get(m.metric_id, set()) - covered) for m in candidates if m not in picked]
        gains = [(m, gain) for m, gain in gains if gain]
        if not gains:
            return picked
        best, gain = min(gains, key=lambda mg: (_network_rank(mg[0].network), -len(mg[1]), mg[0].metric_id))
        picked.append(best)
        covered |= gain


def _network_notes(infos: Sequence[MetricInfo], *, always: bool) -> list[str]:
    """The part of each column's network that differs between the columns of one slot.

    One column: "" (its network is in the header's tooltip), or the whole network when ``always``.
    """
    if len(infos) < 2:
        return [info.network if always else "" for info in infos]
    parts = [
        tuple(info.network.rsplit(".", 1)) if "." in info.network else (info.network, "") for info in infos
    ]
    models = [model.split(":")[0] for model, _ in parts]
    if len(set(models)) < len(models):  # alexnet:2 and alexnet:5: keep the layer
        models = [model for model, _ in parts]
    predictions = [prediction for _, prediction in parts]
    notes = []
    for model, prediction, info in zip(models, predictions, infos, strict=True):
        shown = [
            p
            for p, varies in ((model, len(set(models)) > 1), (prediction, len(set(predictions)) > 1))
            if varies
        ]
        notes.append(" · ".join(p for p in shown if p) or f"@v{info.version}")
    return notes


def select_headline(
    task: str, metrics: Sequence[MetricInfo], filled: Mapping[str, set[int]]
) -> list[HeadlineColumn]:
    """The headline columns of a section of ``task``, in slot order, at most :data:`MAX_HEADLINE`.

    Args:
        task: the section's task (``retrieval``, ``zeroshot``, ``video``, ``reconstruction``, ...).
        metrics: every metric column of the section.
        filled: metric id → indices of the entries that have a value in that column.

    Returns:
        The chosen columns; when no slot matches, the first :data:`MAX_HEADLINE` metrics as they are.
    """
    chosen: list[HeadlineColumn] = []
    taken: set[str] = set()
    for slot in HEADLINES.get(task, DEFAULT_HEADLINES):
        candidates = [m for m in metrics if slot.match(m.name) and m.metric_id not in taken]
        if not candidates:
            continue
        largest = max(_pool(slot, m.name) for m in candidates)
        candidates = [m for m in candidates if _pool(slot, m.name) == largest]
        if slot.networks == "all":
            picked = sorted(candidates, key=lambda m: m.metric_id)
        else:
            picked = _cover(candidates, filled) or candidates[:1]
        notes = _network_notes(picked, always=slot.networks == "all")
        for info, note in zip(picked, notes, strict=True):
            chosen.append(HeadlineColumn(slot.header(info.name), info, note))
            taken.add(info.metric_id)
    if not chosen:
        chosen = [HeadlineColumn(m.name, m, m.network) for m in metrics]
    return chosen[:MAX_HEADLINE]
