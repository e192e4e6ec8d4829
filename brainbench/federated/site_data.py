"""A site's data: its subjects' trials through the ordinary DataModule, with category labels.

Each site reads its prepared subjects with :class:`~brainbench.data.datamodule.FMRIDataModule` (training
trials and repeat-averaged test samples) and the stimulus embeddings the feature cache holds for them
(``clip_image``, ``clip_text``). The labels are the scene's categories from the stimulus store: a multi-hot
``(C,)`` vector over the store's sorted category names (a scene holds 1-3 objects), the soft label of
PmcmFL's BCE, and a trial's **class** is its first (largest) category, the index PmcmFL's prototype masks
take (its ``argmax`` of the VQA soft score).

Loaded subjects are kept in memory for the life of the process (a Flower simulation worker serves many
rounds), keyed by the prepared folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.preparation import default_home, prepare_dataset
from brainbench.errors import DataFormatError
from brainbench.federated.config import FederatedConfig
from brainbench.federated.partition import SitePart, assign_sites, split_trials

TARGETS = ("clip_image", "clip_text")


@dataclass
class Trials:
    """Aligned rows of one subject.

    ``voxels`` ``(N, V)``, ``image``/``text`` ``(N, E)``, ``labels`` ``(N, C)`` multi-hot, ``classes``
    ``(N,)`` first category, ``stim_id`` ``(N,)``.
    """

    voxels: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    stim_id: torch.Tensor

    def take(self, index: np.ndarray) -> Trials:
        """The rows ``index``."""
        rows = torch.as_tensor(index, dtype=torch.int64)
        return Trials(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.voxels)


@dataclass
class SubjectData:
    """One subject's training trials and test samples, and the category names (label order)."""

    subject: int
    train: Trials
    test: Trials
    category_names: tuple[str, ...]

    @property
    def n_voxels(self) -> int:
        """Voxels of this subject."""
        return int(self.train.voxels.shape[1])


_LOADED: dict[str, SubjectData] = {}


def store_categories(path: Path) -> dict[int, list[str]]:
    """Every stimulus's category names, largest first, read in one pass.

    The store's ``categories`` column (:mod:`brainbench.data.stimulus_store`).
    """
    with h5py.File(path, "r") as f:
        stim_ids = f["stim_id"][:].tolist()
        rows = f["categories"][:]
    texts = [r.decode("utf-8") if isinstance(r, bytes) else str(r) for r in rows]
    return {int(s): list(json.loads(t)) for s, t in zip(stim_ids, texts, strict=True)}


def _labels(
    categories: dict[int, list[str]], stim_ids: torch.Tensor, names: tuple[str, ...], path: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    index = {n: i for i, n in enumerate(names)}
    labels = torch.zeros(len(stim_ids), len(names))
    classes = torch.zeros(len(stim_ids), dtype=torch.int64)
    for row, stim_id in enumerate(stim_ids.tolist()):
        scene = categories[int(stim_id)]
        if not scene:
            raise DataFormatError(
                path, f"stimulus {stim_id} has no category", "use a dataset with categories"
            )
        for name in scene:
            labels[row, index[name]] = 1.0
        classes[row] = index[scene[0]]
    return labels, classes


def _read(datamodule: FMRIDataModule, loader: torch.utils.data.DataLoader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in ("voxels", "stim_id", *TARGETS)}


def load_subject(prepared: Path, backbone: str, seed: int) -> SubjectData:
    """One prepared subject in memory (cached per process)."""
    key = f"{prepared}|{backbone}|{seed}"
    if key in _LOADED:
        return _LOADED[key]
    datamodule = FMRIDataModule(
        prepared, backbone, targets=TARGETS, batch_size=1024, seed=seed, in_memory=True
    )
    datamodule.prepare_data(progress=False)
    datamodule.setup()
    store_path = prepared / datamodule.manifest.stimulus_store["path"]
    categories = store_categories(store_path)
    names = tuple(sorted({c for scene in categories.values() for c in scene}))
    parts = {}
    for split, loader in (("train", datamodule.train_dataloader()), ("test", datamodule.test_dataloader())):
        rows = _read(datamodule, loader)
        order = torch.argsort(rows["stim_id"], stable=True)  # independent of the loader's shuffle
        rows = {k: v[order] for k, v in rows.items()}
        labels, classes = _labels(categories, rows["stim_id"], names, store_path)
        parts[split] = Trials(
            rows["voxels"], rows["clip_image"], rows["clip_text"], labels, classes, rows["stim_id"]
        )
    data = SubjectData(datamodule.manifest.subject, parts["train"], parts["test"], names)
    _LOADED[key] = data
    return data


@dataclass
class SiteData:
    """What one site holds: per subject, its share of the training trials and the subject's test samples."""

    site: int
    train: dict[int, Trials]
    test: dict[int, Trials]
    n_voxels: dict[int, int]
    category_names: tuple[str, ...]

    @property
    def n_train(self) -> int:
        """Training trials of the site."""
        return sum(len(t) for t in self.train.values())


def site_part(data: SubjectData, part: SitePart, config: FederatedConfig) -> Trials:
    """The training trials of ``data`` that ``part`` holds (the split is seeded by the run and subject)."""
    shares = split_trials(
        data.train.classes.numpy(),
        part.n_shares,
        config.dirichlet_alpha,
        seed=config.seed * 1000 + part.subject,
    )
    index = shares[part.share]
    if config.max_trials:
        index = index[: config.max_trials]
    return data.train.take(index)


def load_site(site: int, config: FederatedConfig) -> SiteData:
    """The data of site ``site`` under ``config``'s partition (:func:`assign_sites`)."""
    home = Path(config.home) if config.home else default_home()
    parts = assign_sites(config.subject_list(), config.sites)[site]
    train, test, n_voxels = {}, {}, {}
    names: tuple[str, ...] = ()
    for part in parts:
        prepared = prepare_dataset(
            config.dataset, part.subject, home=home, world_preset=config.world_preset, progress=False
        )
        data = load_subject(prepared, config.backbone, config.seed)
        train[part.subject] = site_part(data, part, config)
        test[part.subject] = data.test
        n_voxels[part.subject] = data.n_voxels
        if names and names != data.category_names:
            raise DataFormatError(prepared, "category names differ between subjects", "prepare them again")
        names = data.category_names
    return SiteData(site, train, test, n_voxels, names)
