"""Multi-subject training batches, MindEye2-style: every step holds one batch of each subject.

MindEye2 (Scotti et al., ICML 2024, arXiv 2403.11207) pre-trains its shared backbone on several subjects at
once: each step draws one batch per subject, maps each through that subject's ridge, and concatenates them
before the shared layers. Lightning's :class:`CombinedLoader` over the
per-subject training loaders gives exactly that: a dict ``{"subjNN": batch}`` per step.

Example:
    >>> loader = combined_train_loader({2: dm2, 5: dm5})  # doctest: +SKIP
    >>> next(iter(loader))[0].keys()  # doctest: +SKIP
    dict_keys(['subj02', 'subj05'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader

from brainbench.data.datamodule import FMRIDataModule


def subject_key(subject: int) -> str:
    """The key of a subject in combined batches and per-subject module dicts (``subj02``)."""
    return f"subj{int(subject):02d}"


def combined_train_loader(
    datamodules: Mapping[int, FMRIDataModule],
    trainer: L.Trainer | None = None,
    mode: Literal["min_size", "max_size_cycle"] = "min_size",
) -> CombinedLoader:
    """One training loader per subject, stepped together (``{"subjNN": batch}`` per step).

    Args:
        datamodules: subject -> its set-up datamodule.
        trainer: attached to each datamodule first, so under DDP every rank reads its own share; build the
            loader inside the training process (a module's ``train_dataloader`` hook), not before launch.
        mode: ``min_size`` ends the epoch with the shortest subject (the world's subjects hold about the
            same number of trials); ``max_size_cycle`` cycles the shorter ones until the longest ends.
    """
    loaders = {}
    for subject, datamodule in sorted(datamodules.items()):
        if trainer is not None:
            datamodule.trainer = trainer
        loaders[subject_key(subject)] = datamodule.train_dataloader()
    return CombinedLoader(loaders, mode=mode)


def training_pairs(
    datamodule: FMRIDataModule, names: tuple[str, ...] = ("clip_image", "clip_text")
) -> dict[str, torch.Tensor]:
    """The targets ``names`` of every distinct training stimulus of one subject (one pass over the split).

    Only training-split stimuli are returned (kept sessions only, when the datamodule filters sessions), so
    nothing fit on them has seen a validation or test stimulus. Rows follow ``stim_id`` order.
    """
    rows: dict[int, dict[str, torch.Tensor]] = {}
    for batch in datamodule.train_dataloader():
        for i, stim_id in enumerate(batch["stim_id"].tolist()):
            if stim_id not in rows:
                rows[stim_id] = {name: batch[name][i] for name in names}
    order = np.sort(np.fromiter(rows, dtype=np.int64))
    return {name: torch.stack([rows[int(s)][name] for s in order]) for name in names}
