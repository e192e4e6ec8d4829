"""Write a GOD-style experiment in the real GOD raw layout, so it goes through the same adapter as real GOD.

The layout is that of the GOD release (Horikawa & Kamitani 2017; datasets.md §3.1-§3.2)::

    <root>/Subject{N}.h5                  BData (bdpy) HDF5, one per subject
    <root>/stimulus_ImageNetTraining.tsv  no header: name, float_id, category_index, image_index
    <root>/stimulus_ImageNetTest.tsv      same columns, the test images
    <root>/ImageNetTest_synset.xlsx       one sheet: synset_id, category, word, gloss; a row per test category
    <root>/images/training/<name>         the images (real GOD: released on request), named as the tsv's
    <root>/images/test/<name>             first column; the world writes PNG files named ``n…_k.png``

**BData HDF5** (datasets.md §3.1): ``/dataset`` float64 ``(n_samples, n_columns)`` holds the voxel columns
followed by one label column each for ``DataType`` (1 = training perception, 2 = test perception, 3 = test
imagery), ``Run``, ``Block``, ``stimulus_id`` and ``image_index``. ``/metadata/key`` and
``/metadata/description`` are **bytes** strings ``(K,)``; ``/metadata/value`` float64 ``(K, n_columns)`` is 1
(or a coordinate) on the columns a key applies to and NaN elsewhere: ``VoxelData``, ``voxel_x/y/z`` (mm),
the ROI flags ``ROI_V1 … ROI_VC`` and, for each label key, 1 on its own column. Samples are blocks in time
order (rows ordered by ``Run``; ``Block`` counts from 1 within each run).

**Ids** (datasets.md §3.2): an image's float id is ``WNID.IMGNUM`` with 6 decimals (``1518878.010042``), an
imagery sample's ``stimulus_id`` is its category id (``1518878.0``). The tsv stores the float's shortest
``repr``, so trailing zeros are lost exactly as in the real files (``1518878.01491`` is image 14910; trap in
§3.2): readers parse with 6 decimals. ``image_index`` is the 1-based row of the sample's tsv (training or
test); imagery samples have no image and get ``image_index`` 0.

Every file is written under a temporary name and renamed into place; a hidden ``.complete-*`` marker is
written last for the stimulus files and for each subject, so :func:`is_complete` detects an interrupted write.

Example:
    >>> write_god_stimuli(root, stimuli)  # doctest: +SKIP
    >>> write_god_subject(root, 1, blocks, voxels)  # doctest: +SKIP
    >>> is_complete(root, subject=1)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import datetime
import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import openpyxl
from openpyxl.writer.excel import ExcelWriter
from PIL import Image

from brainbench.world.files import atomic_path, write_marker

TRAIN_TSV = "stimulus_ImageNetTraining.tsv"
TEST_TSV = "stimulus_ImageNetTest.tsv"
SYNSET_XLSX = "ImageNetTest_synset.xlsx"
IMAGE_DIRS = {"train": Path("images") / "training", "test": Path("images") / "test"}
TRAINING, TEST, IMAGERY = 1, 2, 3  # DataType codes
ROI_NAMES = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "LVC", "HVC", "VC")
LABEL_KEYS = ("DataType", "Run", "Block", "stimulus_id", "image_index")
_LABEL_DESCRIPTIONS = {
    "DataType": "1 = training perception, 2 = test perception, 3 = test imagery",
    "Run": "Run number (1-based, over the whole experiment)",
    "Block": "Block number within the run (1-based)",
    "stimulus_id": "Stimulus ID (WNID.IMGNUM; the category ID for imagery)",
    "image_index": "1-based row of the stimulus tsv of the sample's DataType (0 for imagery)",
}
_XLSX_TIME = datetime.datetime(2020, 1, 1)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class GodCategory:
    """One category: a fake but well-formed numeric WordNet id and its names (a row of the synset xlsx).

    Attributes:
        wnid: numeric WordNet id, the category id ``int(float_id)``.
        name: the class name (xlsx ``category``, the zero-shot candidate).
        word: the xlsx ``word`` column (WordNet lemmas in real GOD).
        gloss: the xlsx ``gloss`` column (a definition).
    """

    wnid: int
    name: str
    word: str
    gloss: str

    @property
    def synset_id(self) -> str:
        """The wnid string, ``"n%08d" % wnid``."""
        return f"n{self.wnid:08d}"


@dataclass(frozen=True)
class GodImage:
    """One stimulus image and its ids (a row of a stimulus tsv).

    Attributes:
        wnid: numeric WordNet id of its category.
        image_number: ``IMGNUM``, 1-based within the category.
        category_index: 1-based index of its category within its tsv (training or test).
        image_index: 1-based row of its tsv.
    """

    wnid: int
    image_number: int
    category_index: int
    image_index: int

    @property
    def name(self) -> str:
        """File name, the tsv's first column: ``n90000012_10.png``."""
        return f"n{self.wnid:08d}_{self.image_number}.png"

    @property
    def float_id(self) -> float:
        """``WNID.IMGNUM`` with 6 decimals as a float (``90000012.00001`` for image 10)."""
        return float(f"{self.wnid}.{self.image_number:06d}")

    @property
    def stim_id(self) -> int:
        """The integer id ``round(float_id * 1e6)``: ``wnid * 1_000_000 + image_number``."""
        return self.wnid * 1_000_000 + self.image_number


@dataclass(frozen=True)
class GodStimuli:
    """What :func:`write_god_stimuli` writes: both image sets and the test categories.

    Attributes:
        train: training images in tsv order.
        train_pixels: ``(len(train), H, W, 3)`` uint8 RGB.
        test: test images in tsv order.
        test_pixels: ``(len(test), H, W, 3)`` uint8 RGB.
        test_categories: test categories in ``category_index`` order (the xlsx rows).
    """

    train: tuple[GodImage, ...]
    train_pixels: np.ndarray
    test: tuple[GodImage, ...]
    test_pixels: np.ndarray
    test_categories: tuple[GodCategory, ...]


@dataclass(frozen=True)
class GodBlocks:
    """The samples (stimulus blocks) of one subject's file in time order, one value per label column.

    Attributes:
        data_type: ``(n,)`` int64, 1/2/3 (``TRAINING``, ``TEST``, ``IMAGERY``).
        run: ``(n,)`` int64, 1-based, non-decreasing.
        block: ``(n,)`` int64, 1-based within the run.
        stimulus_id: ``(n,)`` float64 float ids (category id for imagery).
        image_index: ``(n,)`` int64, 1-based tsv row (0 for imagery).
    """

    data_type: np.ndarray
    run: np.ndarray
    block: np.ndarray
    stimulus_id: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        return len(self.data_type)

    def columns(self) -> dict[str, np.ndarray]:
        """Label key -> float64 column, in ``LABEL_KEYS`` order."""
        values = (self.data_type, self.run, self.block, self.stimulus_id, self.image_index)
        return {key: np.asarray(v, dtype=np.float64) for key, v in zip(LABEL_KEYS, values, strict=True)}


@dataclass(frozen=True)
class GodVoxels:
    """One subject's voxel columns.

    Attributes:
        responses: ``(n_blocks, n_voxels)`` block responses (written as float64, no normalisation).
        xyz_mm: ``(n_voxels, 3)`` voxel coordinates in mm.
        rois: ROI name (``ROI_NAMES``) -> ``(n_voxels,)`` bool membership.
    """

    responses: np.ndarray
    xyz_mm: np.ndarray
    rois: dict[str, np.ndarray]


def subject_file(root: str | Path, subject: int) -> Path:
    """``<root>/Subject{N}.h5``."""
    return Path(root) / f"Subject{subject}.h5"


def _marker(root: Path, subject: int | None) -> Path:
    return root / (".complete-stimuli" if subject is None else f".complete-Subject{subject}")


def is_complete(root: str | Path, subject: int | None = None) -> bool:
    """Whether a write finished.

    Args:
        root: the raw root.
        subject: 1-based subject; ``None`` checks only the stimulus files.

    Returns:
        True when the stimulus marker (and, for a subject, that subject's marker) exists.
    """
    root = Path(root)
    if not _marker(root, None).is_file():
        return False
    return subject is None or _marker(root, subject).is_file()


def write_god_stimuli(root: str | Path, stimuli: GodStimuli) -> None:
    """Write the subject-independent files: both stimulus tsvs, the test synset xlsx and the PNG images.

    Args:
        root: the raw root (created if needed).
        stimuli: images, ids and test categories.

    Raises:
        ValueError: pixel arrays that do not match the image lists.
    """
    root = Path(root)
    for split, images, pixels in (
        ("train", stimuli.train, stimuli.train_pixels),
        ("test", stimuli.test, stimuli.test_pixels),
    ):
        if pixels.shape[0] != len(images) or pixels.ndim != 4 or pixels.dtype != np.uint8:
            raise ValueError(
                f"{split} pixels {pixels.shape} {pixels.dtype} != ({len(images)}, H, W, 3) uint8"
            )
    _marker(root, None).unlink(missing_ok=True)
    for name, images in ((TRAIN_TSV, stimuli.train), (TEST_TSV, stimuli.test)):
        with atomic_path(root / name) as tmp:
            tmp.write_text("".join(_tsv_row(image) for image in images), encoding="utf-8")
    _write_synsets(root / SYNSET_XLSX, stimuli.test_categories)
    for split, images, pixels in (
        ("train", stimuli.train, stimuli.train_pixels),
        ("test", stimuli.test, stimuli.test_pixels),
    ):
        folder = root / IMAGE_DIRS[split]
        folder.mkdir(parents=True, exist_ok=True)
        for image, rgb in zip(images, pixels, strict=True):
            Image.fromarray(np.ascontiguousarray(rgb)).save(folder / image.name, format="PNG")
    write_marker(_marker(root, None), {"n_train": len(stimuli.train), "n_test": len(stimuli.test)})


def _tsv_row(image: GodImage) -> str:
    """``name, float_id, category_index, image_index``; the float's shortest repr drops trailing zeros."""
    return f"{image.name}\t{image.float_id!r}\t{image.category_index}\t{image.image_index}\n"


def _write_synsets(path: Path, categories: tuple[GodCategory, ...]) -> None:
    """The xlsx with fixed document times and zip entry times, so its bytes are reproducible."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(["synset_id", "category", "word", "gloss"])
    for category in categories:
        sheet.append([category.synset_id, category.name, category.word, category.gloss])
    workbook.properties.created = workbook.properties.modified = _XLSX_TIME
    written = io.BytesIO()
    ExcelWriter(workbook, zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED)).save()
    with zipfile.ZipFile(written) as source, atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(entry, source.read(info))


def write_god_subject(root: str | Path, subject: int, blocks: GodBlocks, voxels: GodVoxels) -> None:
    """Write ``Subject{N}.h5`` (BData HDF5, see the module docstring), then the subject's marker.

    Args:
        root: the raw root.
        subject: 1-based subject number.
        blocks: the samples' label values, in time order.
        voxels: the voxel columns (responses, coordinates, ROI flags).

    Raises:
        ValueError: shapes that do not agree, non-finite responses, or an unknown ROI name.
    """
    root = Path(root)
    responses = np.asarray(voxels.responses, dtype=np.float64)
    n_voxels = responses.shape[1]
    if responses.shape[0] != len(blocks) or voxels.xyz_mm.shape != (n_voxels, 3):
        raise ValueError(
            f"Subject{subject}: responses {responses.shape}, xyz {voxels.xyz_mm.shape} and "
            f"{len(blocks)} blocks do not agree"
        )
    if not np.all(np.isfinite(responses)):
        raise ValueError(f"Subject{subject}: responses hold NaN or inf")
    unknown = set(voxels.rois) - set(ROI_NAMES)
    if unknown:
        raise ValueError(f"Subject{subject}: unknown ROI names {sorted(unknown)}; expected {ROI_NAMES}")
    _marker(root, subject).unlink(missing_ok=True)
    labels = blocks.columns()
    dataset = np.concatenate([responses, np.stack(list(labels.values()), axis=1)], axis=1)
    keys, descriptions, values = _metadata(n_voxels, voxels)
    with atomic_path(subject_file(root, subject)) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("dataset", data=dataset)
        f.create_dataset("metadata/key", data=np.array(keys, dtype=np.bytes_))
        f.create_dataset("metadata/description", data=np.array(descriptions, dtype=np.bytes_))
        f.create_dataset("metadata/value", data=values)
    write_marker(_marker(root, subject), {"subject": subject, "n_samples": len(blocks)})


def _metadata(n_voxels: int, voxels: GodVoxels) -> tuple[list[bytes], list[bytes], np.ndarray]:
    """Keys, descriptions and the ``(K, n_voxels + 5)`` value matrix (NaN where a key does not apply)."""
    n_columns = n_voxels + len(LABEL_KEYS)
    rows: list[tuple[str, str, np.ndarray]] = []

    def on_voxels(values: np.ndarray) -> np.ndarray:
        row = np.full(n_columns, math.nan)
        row[:n_voxels] = values
        return row

    rows.append(("VoxelData", "1 = Voxel data", on_voxels(np.ones(n_voxels))))
    for axis, name in enumerate(("voxel_x", "voxel_y", "voxel_z")):
        rows.append((name, f"Voxel {name[-1]} coordinate (mm)", on_voxels(voxels.xyz_mm[:, axis])))
    for roi in ROI_NAMES:
        member = np.asarray(voxels.rois.get(roi, np.zeros(n_voxels, dtype=bool)), dtype=bool)
        rows.append((f"ROI_{roi}", f"1 = ROI {roi}", on_voxels(np.where(member, 1.0, math.nan))))
    for k, key in enumerate(LABEL_KEYS):
        row = np.full(n_columns, math.nan)
        row[n_voxels + k] = 1.0
        rows.append((key, _LABEL_DESCRIPTIONS[key], row))
    keys = [key.encode() for key, _, _ in rows]
    descriptions = [text.encode() for _, text, _ in rows]
    return keys, descriptions, np.stack([row for _, _, row in rows])
