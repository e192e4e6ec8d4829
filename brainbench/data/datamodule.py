"""One LightningDataModule for every prepared dataset: streams webdataset shards, adds backbone targets.

Batches are dicts: ``voxels`` ``(B, V)`` float32, ``stim_id`` and ``subject`` ``(B,)`` int64, and one
``(B, *shape)`` float32 tensor per requested target name (``clip_tokens``, ``clip_image``, ``layer:<k>``),
looked up per batch in the memory-mapped :class:`~brainbench.data.feature_cache.FeatureCache`. Shards are
split by worker (webdataset ``split_by_worker``) and, under DDP, by rank at the sample level (see
:meth:`FMRIDataModule._rank_length`), so the same module serves one CPU process, DDP and multi-node runs.
Train and validation samples are single trials; test samples are the repeat averages. A training split that
fits in memory (``in_memory``) is read through the shard pipeline once and then served from RAM
(:mod:`brainbench.data.in_memory`), so loading never limits a training step.

Shards are read from the prepared folder, or streamed from anywhere webdataset can open (``shard_url``:
``http(s)://`` and ``pipe:`` URLs, e.g. ``pipe:curl -s https://host/prepared/subj01/{path}``), so a
multi-node run streams the same shards without copying them; the manifest, stimulus store and feature
cache stay local.

Lightning contract (as in torchgeo): :meth:`prepare_data` runs once per node and computes the feature cache;
:meth:`setup` runs on every process and only opens files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from brainbench.backbones.openclip import load_backbone, weights_sha256
from brainbench.data.feature_cache import FeatureCache, cache_dir_for
from brainbench.data.in_memory import InMemoryTrainingSet
from brainbench.data.manifest import Manifest, rebuild_fix
from brainbench.data.shards import Sample, decode_sample, shard_handler, verify_checksums
from brainbench.data.sources.nsd_transforms import load_template_matrix
from brainbench.errors import ConfigError, DataFormatError


class FMRIDataModule(L.LightningDataModule):
    """Streams one prepared subject (a folder holding ``manifest.json``) with backbone targets.

    Args:
        data_dir: the prepared directory written by ``brainbench prepare``.
        backbone: backbone id whose features are the targets, e.g. ``world-clip:v1`` or ``ViT-L-14:openai``.
        targets: feature names to attach to each batch.
        batch_size: samples per batch (per process).
        num_workers: DataLoader workers (0 = main process; shards are split across workers).
        shuffle_buffer: webdataset shuffle buffer for streamed training samples (an in-memory split is
            fully shuffled every epoch).
        seed: seed of shard and sample shuffling.
        verify: check the shards' sha256 against the manifest in :meth:`setup` (local shards only; streamed
            shards are checked by their per-shard sample counts).
        shard_url: stream shards from here instead of ``data_dir``: a prefix the manifest's shard paths are
            appended to, or a template with ``{path}``; ``None`` reads the local files.
        val_average: validate on the repeat average of each validation stimulus, as the test split is
            scored, instead of on single trials (see :meth:`val_dataloader`).
        train_sessions: train only on trials of sessions ``1..train_sessions`` (NSD's "1 hour" setting is
            one 750-trial session; a small-world session is 300 trials); ``None`` keeps every session.
        in_memory: decode the training split once and serve every epoch from memory
            (:class:`~brainbench.data.in_memory.InMemoryTrainingSet`); ``None`` does so when its voxels
            take at most ``IN_MEMORY_LIMIT_BYTES``, ``False`` streams the shards every epoch.
        space: ``native`` serves the subject's own voxel vector; ``template`` resamples it onto the group
            template mask with the prepared folder's ``template.npz`` (NSD anatomical transforms, see
            :mod:`brainbench.data.sources.nsd_transforms`), so every subject has the same voxels.
    """

    IN_MEMORY_LIMIT_BYTES = 4 * 2**30

    def __init__(
        self,
        data_dir: Path,
        backbone: str,
        targets: Sequence[str] = ("clip_tokens",),
        batch_size: int = 128,
        num_workers: int = 0,
        shuffle_buffer: int = 2000,
        seed: int = 0,
        verify: bool = True,
        shard_url: str | None = None,
        val_average: bool = True,
        train_sessions: int | None = None,
        in_memory: bool | None = None,
        space: Literal["native", "template"] = "native",
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.backbone_id = backbone
        self.target_names = tuple(targets)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.verify = verify
        self.shard_url = shard_url
        self.val_average = val_average
        if train_sessions is not None and int(train_sessions) < 1:
            raise ConfigError(f"train_sessions must be a positive number of sessions, not {train_sessions}")
        self.train_sessions = None if train_sessions is None else int(train_sessions)
        self.manifest = Manifest.load(self.data_dir)
        self.in_memory = in_memory
        if space not in ("native", "template"):
            raise ConfigError(f"space must be native or template, not {space!r}")
        self.space = space
        self._template = load_template_matrix(self.data_dir) if space == "template" else None
        self.cache: FeatureCache | None = None
        self._n_train_kept: int | None = None
        self._train_in_memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @property
    def n_voxels(self) -> int:
        """Length of the voxel vector of this prepared subject (template voxels in template space)."""
        return self.manifest.n_voxels if self._template is None else int(self._template.shape[0])

    def prepare_data(self, progress: bool = True) -> None:
        """Computes the feature cache of the backbone for this dataset's stimuli (once; reused after)."""
        store = self.manifest.stimulus_store
        weights = weights_sha256(self.backbone_id)
        if FeatureCache.is_current(
            cache_dir_for(self.data_dir, self.backbone_id), store["sha256"], self.target_names, weights
        ):
            return  # reused without loading the backbone (whose weights may not even be on this machine)
        FeatureCache.build(
            self.data_dir,
            self.data_dir / store["path"],
            store["sha256"],
            load_backbone(self.backbone_id),
            names=self.target_names,
            progress=progress,
            weights_sha256=weights,
        )

    def setup(self, stage: str | None = None) -> None:
        """Opens the feature cache (and verifies shard checksums once)."""
        if self.cache is None:
            if self.verify and self.shard_url is None:
                verify_checksums(self.data_dir, self.manifest)
            self.cache = FeatureCache(cache_dir_for(self.data_dir, self.backbone_id), self.target_names)

    def target_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of every target, e.g. ``{"clip_tokens": (65, 128)}``."""
        self.setup()
        assert self.cache is not None
        return {name: self.cache.shape(name) for name in self.target_names}

    def split_size(self, split: str) -> int:
        """Number of samples in ``split`` (all processes together), after the ``train_sessions`` filter."""
        if split == "train" and self.train_sessions is not None:
            if self._n_train_kept is None:  # the in-memory split is read once anyway: count it there
                self._n_train_kept = (
                    len(self._training_split()[1])
                    if self._trains_in_memory()
                    else self._count_kept_training_samples()
                )
            return self._n_train_kept
        return int(self.manifest.splits[split]["n_samples"])

    def _keeps(self, raw: dict[str, Any]) -> bool:
        """Whether a raw (undecoded) training sample is within ``train_sessions`` (only its meta is read)."""
        if self.train_sessions is None:
            return True
        try:
            session = int(json.loads(raw["meta.json"])["session"])
        except (KeyError, ValueError, TypeError) as error:
            raise DataFormatError(
                raw.get("__url__", self.data_dir),
                f"sample {raw.get('__key__')} has no readable session in meta.json ({error})",
                "re-run `brainbench prepare`",
            ) from error
        return session <= self.train_sessions

    def _count_kept_training_samples(self) -> int:
        """Training samples within ``train_sessions`` (one pass over the split's shards)."""
        stages = [
            wds.SimpleShardList(self.shard_urls("train")),
            wds.tarfile_to_samples(handler=shard_handler),
            wds.select(self._keeps),
        ]
        kept = sum(1 for _ in wds.DataPipeline(*stages))
        if kept == 0:
            raise ConfigError(
                f"{self.data_dir}: no training trial is in sessions 1..{self.train_sessions}; "
                "raise train_sessions"
            )
        return kept

    def _item(self, sample: Sample) -> dict[str, Any]:
        voxels = sample.voxels.astype(np.float32)
        if self._template is not None:
            voxels = (self._template @ voxels).astype(np.float32)
        if not np.isfinite(voxels).all():
            raise DataFormatError(
                self.data_dir,
                f"sample {sample.key} has non-finite voxels",
                "re-run `brainbench prepare` on clean raw data",
            )
        return {"voxels": torch.from_numpy(voxels), "stim_id": sample.stim_id, "subject": sample.subject}

    def _collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        assert self.cache is not None
        stim_ids = torch.tensor([it["stim_id"] for it in items], dtype=torch.int64)
        batch = {
            "voxels": torch.stack([it["voxels"] for it in items]),
            "stim_id": stim_ids,
            "subject": torch.tensor([it["subject"] for it in items], dtype=torch.int64),
        }
        batch.update(self.cache.lookup(stim_ids.numpy()))
        return batch

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        if self.manifest.splits.get(split, {}).get("n_samples", 0) == 0:
            raise ConfigError(
                f"{self.data_dir} has no {split!r} samples (splits: {list(self.manifest.splits)})"
            )
        rank, world_size = self._rank_and_world_size()
        if split == "train" and shuffle and self._trains_in_memory():
            return DataLoader(self._in_memory_training_set(rank, world_size), batch_size=None)
        urls = self.shard_urls(split)
        stages: list[Any] = [wds.SimpleShardList(urls)]
        if shuffle:
            stages.append(wds.shuffle(len(urls), rng=random.Random(self.seed)))
        if world_size == 1:
            stages.append(wds.split_by_node)
        stages += [
            wds.split_by_worker,
            wds.tarfile_to_samples(handler=shard_handler),
            self._count_check(split),
        ]
        if shuffle:
            stages.append(
                wds.shuffle(
                    self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(self.seed + 1)
                )
            )
        if split == "train" and self.train_sessions is not None:
            stages.append(wds.select(self._keeps))  # before the rank slice: ranks share the kept samples
        if world_size > 1:
            stages.append(wds.slice(rank, None, world_size))
        stages += [wds.map(decode_sample), wds.map(self._item)]
        pipeline = wds.DataPipeline(*stages).with_length(self._rank_length(split, shuffle, rank, world_size))
        return DataLoader(
            pipeline,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            persistent_workers=self.num_workers > 0,
        )

    def _trains_in_memory(self) -> bool:
        if self.in_memory is not None:
            return self.in_memory
        split = self.manifest.splits["train"]["n_samples"]
        return split * self.n_voxels * 4 <= self.IN_MEMORY_LIMIT_BYTES

    def _training_split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Voxels, stim ids and subjects of the kept training trials, read once (checked, manifest order)."""
        if self._train_in_memory is None:
            stages: list[Any] = [
                wds.SimpleShardList(self.shard_urls("train")),
                wds.tarfile_to_samples(handler=shard_handler),
                self._count_check("train"),
            ]
            if self.train_sessions is not None:
                stages.append(wds.select(self._keeps))
            items = [self._item(decode_sample(raw)) for raw in wds.DataPipeline(*stages)]
            self._train_in_memory = (
                torch.stack([it["voxels"] for it in items]),
                torch.tensor([it["stim_id"] for it in items], dtype=torch.int64),
                torch.tensor([it["subject"] for it in items], dtype=torch.int64),
            )
        return self._train_in_memory

    def _in_memory_training_set(self, rank: int, world_size: int) -> InMemoryTrainingSet:
        """This rank's view of the in-memory training split (:mod:`brainbench.data.in_memory`)."""
        assert self.cache is not None
        cache = self.cache
        return InMemoryTrainingSet(
            *self._training_split(),
            targets=lambda stim_ids: cache.lookup(stim_ids.numpy()),
            batch_size=self.batch_size,
            seed=self.seed + 1,
            epoch=lambda: None if self.trainer is None else int(self.trainer.current_epoch),
            rank=rank,
            world_size=world_size,
            every_sample_once=self.every_sample_once(),
        )

    def every_sample_once(self) -> bool:
        """Whether the trained module sums the training split once (``DecoderModule.every_sample_once``).

        Then every rank keeps its whole slice of the training split, and a 2-process DDP run sums exactly
        the single-process statistics (a rank holding one sample more steps one batch more).
        """
        module = None if self.trainer is None else getattr(self.trainer, "lightning_module", None)
        return bool(getattr(module, "every_sample_once", False))

    def _rank_and_world_size(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return int(self.trainer.global_rank), int(self.trainer.world_size)

    def _rank_length(self, split: str, shuffle: bool, rank: int, world_size: int) -> int:
        """Samples this rank's loader reports (Lightning steps ``ceil(length / batch_size)`` batches).

        Under DDP the shards are split **by sample**, not by shard (``split_by_node`` would leave ranks
        without data whenever a split has fewer shards than ranks, as every world split has one shard): every
        rank reads the same seeded stream (same shard order, same shuffle buffer) and keeps the samples at
        positions ``rank, rank + world_size, ...``, so each sample goes to exactly one rank; decoding, the
        costly part, only happens for the kept ones. Reading is ``world_size`` times the data, fine for the
        worlds and the fMRI splits here.

        Training ranks must step the same number of batches (DDP synchronises every backward), so the
        training length is ``N // world_size`` on every rank: the ranks holding one sample more keep it in
        their last, partial batch, and all samples are seen once per epoch, except when ``N // world_size``
        is a multiple of the batch size, where those few (< world_size) extra samples are left for that
        epoch (the order changes every epoch). With ``num_workers > 1`` shards are split by worker as
        before, workers end with partial batches, and Lightning's step count bounds the epoch, so a rank may
        leave up to ``num_workers - 1`` partial batches unread; no rank ever runs out before the others.
        Evaluation splits report each rank's own count: nothing is left out, and no collective runs per batch.
        """
        n = self.split_size(split)
        if world_size == 1:
            return n
        if shuffle and not self.every_sample_once():
            return n // world_size
        return len(range(rank, n, world_size))

    def shard_urls(self, split: str) -> list[str]:
        """Where each shard of ``split`` is read from: local paths, or ``shard_url`` joined with its path."""
        paths = [shard["path"] for shard in self.manifest.splits[split]["shards"]]
        if self.shard_url is None:
            return [str(self.data_dir / path) for path in paths]
        if "{path}" in self.shard_url:
            return [self.shard_url.replace("{path}", path) for path in paths]
        return [f"{self.shard_url.rstrip('/')}/{path}" for path in paths]

    def _count_check(self, split: str) -> Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]:
        """A pipeline stage raising when a shard yields another sample count than the manifest lists.

        Python's tarfile stops at the first damaged member header as if the archive ended there, so without
        this check a corrupt shard silently loses samples when ``verify=False`` (as in ``iter_split``).
        """
        shards = self.manifest.splits[split]["shards"]
        urls = self.shard_urls(split)
        expected = {url: int(info["n_samples"]) for url, info in zip(urls, shards, strict=True)}

        def check(url: str | None, count: int) -> None:
            if url is not None and count != expected.get(url, count):
                raise DataFormatError(
                    url,
                    f"holds {count} samples, the manifest says {expected[url]}: truncated or corrupt",
                    rebuild_fix(url),
                )

        def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            url, count = None, 0
            for sample in samples:
                if sample.get("__url__") != url:
                    check(url, count)
                    url, count = sample.get("__url__"), 0
                count += 1
                yield sample
            check(url, count)

        return stage

    def train_dataloader(self) -> DataLoader:
        """Shuffled single trials of the training images."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation samples: each stimulus's repeat average (``val_average``), or single trials, in order.

        Test samples are repeat averages, and a model that overfits single-trial noise can still improve on
        averages, so single-trial validation picks checkpoints too early. Averaging needs all trials of a
        stimulus in one place: every process reads the whole (small) split, averages per stimulus in
        ``stim_id`` order, and keeps every ``world_size``-th stimulus, so under DDP each is scored once.
        """
        if not self.val_average:
            return self._loader("val", shuffle=False)
        return self._averaged_loader("val")

    def _averaged_loader(self, split: str) -> DataLoader:
        self.setup()
        stages = [
            wds.SimpleShardList(self.shard_urls(split)),
            wds.tarfile_to_samples(handler=shard_handler),
            self._count_check(split),
            wds.map(decode_sample),
            wds.map(self._item),
        ]
        groups: dict[int, list[dict[str, Any]]] = {}
        for item in wds.DataPipeline(*stages):
            groups.setdefault(int(item["stim_id"]), []).append(item)
        rank, world_size = self._rank_and_world_size()
        averaged = [
            {
                "voxels": torch.stack([it["voxels"] for it in trials]).mean(dim=0),
                "stim_id": stim_id,
                "subject": trials[0]["subject"],
            }
            for stim_id, trials in sorted(groups.items())
        ][rank::world_size]
        return DataLoader(averaged, batch_size=self.batch_size, collate_fn=self._collate)

    def test_dataloader(self) -> DataLoader:
        """Repeat-averaged test samples, in order."""
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test samples (what the evaluator scores)."""
        return self._loader("test", shuffle=False)
