"""The training split decoded once into memory, served as shuffled batches (what MindEye's loaders do).

Reading a webdataset shard costs a tar header parse and an ``.npy`` decode per sample, pure Python:
about 4-10k samples/s on one core, slower than the cheapest training steps. A training split that fits in
memory (the worlds: 7k trials x 2.5k voxels = 72 MB; NSD subject 1: 25k x 15.7k = 1.6 GB) is therefore
read through the normal shard pipeline once, checks included, and every epoch after that is a seeded
permutation of rows, gathered and collated in one indexing operation.

Each epoch is a full shuffle (at least as random as a shuffle buffer over the whole split). Under DDP every
rank holds the whole split and takes the positions ``rank, rank + world_size, ...`` of the same permutation,
``N // world_size`` of them, as the streamed loader does (see ``FMRIDataModule._rank_length``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import IterableDataset

Batch = dict[str, torch.Tensor]


class InMemoryTrainingSet(IterableDataset):
    """Decoded training trials in RAM; each pass yields one epoch of collated batches in a fresh order.

    Args:
        voxels: ``(N, V)`` float32 voxels of every kept training trial.
        stim_ids: ``(N,)`` int64 stimulus ids.
        subjects: ``(N,)`` int64 subject numbers.
        targets: ``stim_ids -> {name: (B, ...)}``, the feature-cache lookup of a batch.
        batch_size: samples per batch.
        seed: the permutation of epoch ``e`` is seeded with ``seed + e``.
        epoch: the current epoch (the trainer's, so a resumed run continues the same sequence of orders);
            ``None`` counts this dataset's own passes.
        rank, world_size: this process's slice of every epoch.
        every_sample_once: keep the whole slice, so ranks may differ by one sample (closed-form methods);
            by default every rank keeps ``N // world_size`` samples, so ranks step equally (gradient sync).
    """

    def __init__(
        self,
        voxels: torch.Tensor,
        stim_ids: torch.Tensor,
        subjects: torch.Tensor,
        targets: Callable[[torch.Tensor], Batch],
        batch_size: int,
        seed: int,
        epoch: Callable[[], int | None] = lambda: None,
        rank: int = 0,
        world_size: int = 1,
        every_sample_once: bool = False,
    ) -> None:
        super().__init__()
        self.voxels, self.stim_ids, self.subjects = voxels, stim_ids, subjects
        self.targets = targets
        self.batch_size, self.seed, self.epoch = batch_size, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.every_sample_once = every_sample_once
        self._passes = 0

    def samples_per_rank(self) -> int:
        """Trials this rank sees per epoch."""
        n = len(self.stim_ids)
        if self.world_size == 1:
            return n
        return len(range(self.rank, n, self.world_size)) if self.every_sample_once else n // self.world_size

    def __len__(self) -> int:
        """Batches per epoch (the last one may be partial)."""
        return -(-self.samples_per_rank() // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        """One epoch: a seeded permutation, this rank's slice, cut into batches."""
        epoch = self.epoch()
        epoch = self._passes if epoch is None else epoch
        self._passes += 1
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(self.stim_ids), generator=generator)
        if self.world_size > 1:
            order = order[self.rank :: self.world_size][: self.samples_per_rank()]
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            stim_ids = self.stim_ids[rows]
            batch = {"voxels": self.voxels[rows], "stim_id": stim_ids, "subject": self.subjects[rows]}
            batch.update(self.targets(stim_ids))
            yield batch
