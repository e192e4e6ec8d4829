"""What a method's ``pretrain`` hook gets in unit tests: in-memory subjects and a quiet trainer factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader


class BatchDataModule(L.LightningDataModule):
    """One subject's trials held in a dict of tensors (``voxels``, targets, ...): train and val loaders.

    Args:
        batch: name -> ``(n, ...)`` tensors, one row per trial.
        batch_size: trials per batch.
        manifest: what the method reads of a manifest (e.g. an object with ``subject``), if anything.
    """

    def __init__(self, batch: dict[str, torch.Tensor], batch_size: int = 8, manifest: object = None) -> None:
        super().__init__()
        self.batch, self.batch_size, self.manifest = batch, batch_size, manifest
        self.n_voxels = int(batch["voxels"].shape[1])

    def _items(self) -> list[dict[str, torch.Tensor]]:
        return [{k: v[i] for k, v in self.batch.items()} for i in range(len(self.batch["voxels"]))]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._items(), batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._items(), batch_size=self.batch_size)


def quiet_trainer(name: str, max_epochs: int) -> L.Trainer:
    """The ``make_trainer(name, max_epochs)`` a ``pretrain`` hook calls: CPU, no logger, checkpoint or bar."""
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def assert_pretrained_once_then_reused(home: Path, file_name: str, rerun: Callable[[], object]) -> None:
    """One cached pre-training file ``home/pretrained/*/file_name``, left untouched by ``rerun()``."""
    cached = list((home / "pretrained").glob(f"*/{file_name}"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime
    rerun()
    assert cached[0].stat().st_mtime == mtime  # reused, not pre-trained again
