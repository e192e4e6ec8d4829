"""Readers for MindEye downloads: layout paths, safe tar reading, h5py row reads, images and captions.

MindEye1 (HF ``pscotti/naturalscenesdataset``, datasets.md §2.1) and MindEye2 (HF ``pscotti/mindeyev2``,
datasets.md §2.2) ship webdataset tars. They are read here with :mod:`tarfile`, never through a decoder that
could unpickle: ``.npy`` members go through ``np.load(..., allow_pickle=False)``, and a sample holding any
pickle-capable member (``.pyd``, ``.pkl``, ``.pth``, ...) is refused before anything of it is decoded
(datasets.md §2.3). Members are grouped into samples the way webdataset does it (the key is the member
name up to the first dot of its base name, trap 15), and a key that reappears after another key is an
error, since webdataset would silently split it into two samples.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from brainbench.errors import DataFormatError, MissingFileError, reading

PICKLE_EXTENSIONS = ("pyd", "pickle", "pkl", "pth", "pt", "ckpt", "joblib")
ME1_MEMBERS = frozenset({"nsdgeneral.npy", "coco73k.npy", "trial.npy", "num_uniques.npy"})
IMAGE_SUFFIXES = ("jpg", "png")  # MindEye renames "jpg;png": jpg first
BEHAV_COLUMNS = {"COCO_IDX": 0, "SUBJECT": 1, "SESSION": 2, "GLOBAL_TRIAL": 5, "IS_SHARED1000": 16}
TRIALS_PER_SESSION = 750
N_COCO_IMAGES = 73000
FLOAT16_MAX = 65504.0
IMAGE_BATCH = 64
REDOWNLOAD = "re-download this file from the MindEye Hugging Face dataset (datasets.md §2)"
log = logging.getLogger(__name__)


def subject_name(subject: int) -> str:
    """``subj0{s}`` as MindEye spells it (``1 -> "subj01"``)."""
    return f"subj{subject:02d}"


@dataclass(frozen=True)
class MindEyeLayout:
    """Every path of a MindEye1 or MindEye2 download, under one root (the dataset's top folder).

    Attributes:
        root: the folder holding ``webdataset_avg_split/`` (MindEye1) or ``wds/`` plus the side files
            (MindEye2).
    """

    root: Path

    @property
    def me1_dir(self) -> Path:
        """``webdataset_avg_split`` (MindEye1)."""
        return self.root / "webdataset_avg_split"

    def me1_tar(self, split: str, subject: int, k: int) -> Path:
        """``webdataset_avg_split/{split}/{split}_subj0{s}_{k}.tar``."""
        return self.me1_dir / split / f"{split}_{subject_name(subject)}_{k}.tar"

    def me1_metadata(self, subject: int) -> Path:
        """``webdataset_avg_split/metadata_subj0{s}.json`` (optional; ``totals.train``/``totals.val``)."""
        return self.me1_dir / f"metadata_{subject_name(subject)}.json"

    @property
    def me2_dir(self) -> Path:
        """``wds`` (MindEye2)."""
        return self.root / "wds"

    def me2_subject_dir(self, subject: int) -> Path:
        """``wds/subj0{s}``."""
        return self.me2_dir / subject_name(subject)

    def me2_tar(self, subject: int, folder: str, k: int) -> Path:
        """``wds/subj0{s}/{folder}/{k}.tar`` (``folder``: ``train``, ``new_test`` or ``test``)."""
        return self.me2_subject_dir(subject) / folder / f"{k}.tar"

    def me2_betas(self, subject: int) -> Path:
        """``betas_all_subj0{s}_fp32_renorm.hdf5``: ``betas`` (n_trials, V), row = GLOBAL_TRIAL."""
        return self.root / f"betas_all_{subject_name(subject)}_fp32_renorm.hdf5"

    @property
    def me2_images(self) -> Path:
        """``coco_images_224_float16.hdf5``: ``images`` (73000, 3, 224, 224) float16 in [0, 1]."""
        return self.root / "coco_images_224_float16.hdf5"

    @property
    def captions(self) -> Path:
        """``COCO_73k_annots_curated.npy``: (73000, 5) caption strings padded with ``''`` (optional)."""
        return self.root / "COCO_73k_annots_curated.npy"


def subjects_in(names: Iterable[str]) -> list[int]:
    """Subject numbers named ``subj0{s}`` somewhere in ``names`` (sorted, unique)."""
    found = {int(m.group(1)) for name in names if (m := re.search(r"subj(\d+)", name))}
    return sorted(found)


def numbered_tars(folder: Path, stem_prefix: str = "") -> list[Path]:
    """The tars ``{stem_prefix}0.tar, {stem_prefix}1.tar, ...`` in ``folder``, in numeric order.

    Args:
        folder: the folder holding the shards.
        stem_prefix: the part of the file name before the shard number.

    Returns:
        Shard paths, numbered 0..n-1 without gaps.

    Raises:
        MissingFileError: if shard 0 or a shard between 0 and the highest number is missing.
    """
    pattern = re.compile(rf"{re.escape(stem_prefix)}(0|[1-9][0-9]*)\.tar")
    numbers = sorted(int(m.group(1)) for p in folder.glob("*.tar") if (m := pattern.fullmatch(p.name)))
    missing = sorted(set(range(numbers[-1] + 1)) - set(numbers)) if numbers else [0]
    if missing:
        raise MissingFileError(
            folder / f"{stem_prefix}{missing[0]}.tar",
            f"the shards {stem_prefix}0.tar, {stem_prefix}1.tar, ... must all be present in {folder}; "
            "finish the download (datasets.md §2)",
        )
    return [folder / f"{stem_prefix}{n}.tar" for n in numbers]


@dataclass
class TarSample:
    """One webdataset sample read from a tar: the members asked for, as bytes, and where they lie.

    Attributes:
        tar: the tar file.
        key: the sample key (member name up to the first dot of its base name).
        data: suffix (e.g. ``"nsdgeneral.npy"``) -> raw bytes, for the suffixes that were read.
        where: suffix -> ``(offset, size)`` of the member's bytes in the tar, for deferred reads.
    """

    tar: Path
    key: str
    data: dict[str, bytes] = field(default_factory=dict)
    where: dict[str, tuple[int, int]] = field(default_factory=dict)

    def member(self, suffix: str) -> str:
        """The full member name of ``suffix`` (for error messages)."""
        return f"{self.key}.{suffix}"


def _split_name(name: str) -> tuple[str, str] | None:
    folder, _, base = name.rpartition("/")
    if "." not in base:
        return None
    stem, _, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix


def iter_tar_samples(
    path: Path, read: frozenset[str], locate: frozenset[str] = frozenset()
) -> Iterator[TarSample]:
    """Samples of a webdataset tar, reading only the ``read`` members and locating the ``locate`` ones.

    Args:
        path: the tar (uncompressed, as MindEye ships it).
        read: member suffixes whose bytes are read into :attr:`TarSample.data`.
        locate: member suffixes whose byte range is recorded in :attr:`TarSample.where` (images, read later).

    Yields:
        Samples in tar order.

    Raises:
        DataFormatError: naming the tar and member, on a pickle-capable member (never decoded), a sample
            whose members are not contiguous, or a truncated/corrupt tar.
    """
    current: TarSample | None = None
    seen: set[str] = set()
    fix = "re-download the tar; never load pickles from a foreign tar"
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                parts = _split_name(info.name) if info.isfile() else None
                if parts is None:
                    continue
                key, suffix = parts
                if any(part.lower() in PICKLE_EXTENSIONS for part in suffix.split(".")):  # also .pyd.gz
                    raise DataFormatError(
                        path, f"member '{info.name}' is pickle-based; refusing to unpickle it", fix
                    )
                if current is None or key != current.key:
                    if key in seen:
                        raise DataFormatError(
                            path,
                            f"member '{info.name}': the members of sample '{key}' are not contiguous",
                            fix,
                        )
                    if current is not None:
                        yield current
                    current = TarSample(path, key)
                    seen.add(key)
                if suffix in read:
                    extracted = tar.extractfile(info)
                    assert extracted is not None
                    current.data[suffix] = extracted.read()
                if suffix in locate:
                    current.where[suffix] = (info.offset_data, info.size)
    except (tarfile.TarError, EOFError) as exc:
        raise DataFormatError(path, f"cannot read the tar, it is truncated or corrupt ({exc})", fix) from exc
    if current is not None:
        yield current


def load_npy(sample: TarSample, suffix: str) -> np.ndarray:
    """Decode one ``.npy`` member with ``allow_pickle=False``.

    Raises:
        DataFormatError: naming the tar and member, if it is missing, an object array, or malformed.
    """
    if suffix not in sample.data:
        raise DataFormatError(
            sample.tar, f"sample '{sample.key}' lacks member '{sample.member(suffix)}'", REDOWNLOAD
        )
    try:
        return np.load(io.BytesIO(sample.data[suffix]), allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        raise DataFormatError(
            sample.tar, f"member '{sample.member(suffix)}' is not a plain numeric .npy ({exc})", REDOWNLOAD
        ) from exc


def scalar_int(sample: TarSample, suffix: str, low: int = 0, high: int | None = None) -> int:
    """A one-element integer ``.npy`` member (``coco73k.npy``, ``trial.npy``, ...), range-checked."""
    array = load_npy(sample, suffix)
    if array.size != 1 or array.dtype.kind not in "iuf":
        raise DataFormatError(
            sample.tar,
            f"member '{sample.member(suffix)}' should hold one number, got {array.dtype} {array.shape}",
            REDOWNLOAD,
        )
    value = float(array.reshape(-1)[0])
    if not _is_id(value, low, high):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise DataFormatError(
            sample.tar,
            f"member '{sample.member(suffix)}' = {value} is not an integer in {bound}",
            REDOWNLOAD,
        )
    return int(value)


def _is_id(value: float, low: int, high: int | None) -> bool:
    """Whether ``value`` is a finite integer in ``[low, high)`` (``high`` None: no upper bound)."""
    return (
        bool(np.isfinite(value)) and value == int(value) and value >= low and (high is None or value < high)
    )


def read_rows(dset: Any, rows: Iterable[int] | np.ndarray) -> np.ndarray:
    """``dset[rows]`` for any row order, duplicates allowed (h5py needs sorted unique indices, trap 16).

    The rows are read once each in increasing order, then un-permuted. A dense range is read as one slice,
    which h5py serves much faster than a point selection.

    Args:
        dset: an h5py dataset (or anything indexable the same way).
        rows: row indices, any order, duplicates allowed.

    Returns:
        ``(len(rows), *dset.shape[1:])`` array in the order of ``rows``.
    """
    rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        return np.zeros((0, *dset.shape[1:]), dtype=dset.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    first, last = int(unique[0]), int(unique[-1])
    if last - first + 1 <= 2 * len(unique):
        block = np.asarray(dset[first : last + 1])[unique - first]
    else:
        block = np.asarray(dset[unique])
    return block[inverse.reshape(-1)]


def resize(image: np.ndarray, size: int | None) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image resized to ``size × size`` (bicubic), or unchanged for ``None``."""
    if size is None or image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def read_captions(path: Path, stim_ids: np.ndarray) -> tuple[list[list[str]], str]:
    """Captions per stimulus from ``COCO_73k_annots_curated.npy`` (datasets.md §1.5), if it loads safely.

    The file is read with ``allow_pickle=False`` (memory-mapped). If it is absent, an object array (which
    only unpickling could read), or not a (73000, k) string array, captions are skipped with a warning.

    Args:
        path: the ``.npy`` file.
        stim_ids: 0-based 73k ids.

    Returns:
        ``(captions, status)``: per stimulus its non-empty captions (empty lists when skipped), and a
        sentence for the manifest saying where captions came from or why they were skipped.
    """
    empty: list[list[str]] = [[] for _ in stim_ids]
    if not path.is_file():
        return empty, f"none: {path.name} not found"
    try:
        annots = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        status = (
            f"skipped: {path.name} cannot be read without unpickling ({exc}); captions are never unpickled"
        )
        log.warning("%s: %s", path, status)
        return empty, status
    if annots.ndim != 2 or annots.dtype.kind not in "US" or (len(stim_ids) and stim_ids.max() >= len(annots)):
        status = f"skipped: {path.name} is {annots.dtype} {annots.shape}, not ({N_COCO_IMAGES}, k) strings"
        log.warning("%s: %s", path, status)
        return empty, status
    rows = read_rows(annots, stim_ids)
    captions = [[_text(c) for c in row if _text(c)] for row in rows]
    return captions, f"{path.name} (non-empty entries of each row)"


def _text(value: str | bytes) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()


def as_float16(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``values`` as float16, refusing NaN/inf and values beyond the float16 range (naming ``path``)."""
    values = np.asarray(values, dtype=np.float32)
    if not np.isfinite(values).all() or np.abs(values).max(initial=0.0) > FLOAT16_MAX:
        raise DataFormatError(path, f"{what} holds NaN/inf or values beyond the float16 range", REDOWNLOAD)
    return values.astype(np.float16)


@dataclass(frozen=True)
class Me1Record:
    """One MindEye1 sample (one image), decoded.

    Attributes:
        stim_id: ``coco73k.npy``, the 0-based 73k id.
        trial: ``trial.npy``, the 0-based global trial of the image's first showing.
        real: ``(num_uniques, V)`` float16, the real repeats (the rows past ``num_uniques`` are dropped).
        padded_as_medarc: whether the dropped rows are what MedARC's scripts pad with (copies of a single
            repeat, or the mean of two).
        image: ``(tar, member, (offset, size))`` of the jpg/png member, read later by :func:`tar_images`.
    """

    stim_id: int
    trial: int
    real: np.ndarray
    padded_as_medarc: bool
    image: tuple[Path, str, tuple[int, int]]


def parse_me1(sample: TarSample) -> Me1Record:
    """Decode a MindEye1 sample (``ME1_MEMBERS`` read, ``IMAGE_SUFFIXES`` located; datasets.md §2.1).

    Raises:
        DataFormatError: naming the tar and member, on a missing member, bad shape or out-of-range id.
    """
    voxels = load_npy(sample, "nsdgeneral.npy")
    member = sample.member("nsdgeneral.npy")
    if voxels.ndim != 2 or voxels.shape[0] < 1 or voxels.dtype.kind != "f":
        raise DataFormatError(
            sample.tar,
            f"member '{member}' should be (repeats, V) floats, got {voxels.dtype} {voxels.shape}",
            REDOWNLOAD,
        )
    n_real = scalar_int(sample, "num_uniques.npy", 1, voxels.shape[0] + 1)
    rows = voxels.astype(np.float32)
    padded = bool(np.allclose(rows[n_real:], rows[:n_real].mean(axis=0), rtol=1e-2, atol=1e-2))
    suffix = next((s for s in IMAGE_SUFFIXES if s in sample.where), None)
    if suffix is None:
        raise DataFormatError(sample.tar, f"sample '{sample.key}' has no jpg or png member", REDOWNLOAD)
    return Me1Record(
        stim_id=scalar_int(sample, "coco73k.npy", 0, N_COCO_IMAGES),
        trial=scalar_int(sample, "trial.npy", 0),
        real=as_float16(voxels[:n_real], sample.tar, f"member '{member}'"),
        padded_as_medarc=padded,
        image=(sample.tar, sample.member(suffix), sample.where[suffix]),
    )


def parse_behav(sample: TarSample, subject: int) -> tuple[int, int, int]:
    """``(coco_id, session, global_trial)`` of a MindEye2 sample's ``behav.npy`` (1, 17) (datasets.md §2.2).

    Raises:
        DataFormatError: naming the tar and member, on a bad shape, a -1 (NaN) or invalid id, another
            subject, or a GLOBAL_TRIAL outside its SESSION (750 trials per session).
    """
    behav = load_npy(sample, "behav.npy")
    member = sample.member("behav.npy")
    if behav.size != 17 or behav.dtype.kind not in "iuf":
        problem = f"should be (1, 17) numbers, got {behav.dtype} {behav.shape}"
        raise DataFormatError(sample.tar, f"member '{member}' {problem}", REDOWNLOAD)
    row = behav.reshape(17).astype(np.float64)
    values = {}
    for name, high in (("COCO_IDX", N_COCO_IMAGES), ("SESSION", None), ("GLOBAL_TRIAL", None)):
        value = float(row[BEHAV_COLUMNS[name]])
        if value == -1 or not _is_id(value, 0, high):
            shown = "-1 (NaN)" if value == -1 else f"{value:g}"
            raise DataFormatError(
                sample.tar, f"member '{member}': {name} = {shown} is not a valid id", REDOWNLOAD
            )
        values[name] = int(value)
    coco, session, trial = values["COCO_IDX"], values["SESSION"], values["GLOBAL_TRIAL"]
    if row[BEHAV_COLUMNS["SUBJECT"]] not in (-1, subject):
        problem = f"SUBJECT is {row[BEHAV_COLUMNS['SUBJECT']]:g}, not {subject}"
        raise DataFormatError(sample.tar, f"member '{member}': {problem}", REDOWNLOAD)
    if trial // TRIALS_PER_SESSION + 1 != session:
        problem = f"GLOBAL_TRIAL {trial} does not lie in SESSION {session} ({TRIALS_PER_SESSION} per session)"
        raise DataFormatError(sample.tar, f"member '{member}': {problem}", REDOWNLOAD)
    return coco, session, trial


def tar_images(
    refs: dict[int, tuple[Path, str, tuple[int, int]]], stim_ids: np.ndarray, size: int | None
) -> Iterator[np.ndarray]:
    """Batches of ``(n, H, W, 3)`` uint8 RGB images decoded (PIL) from tar members located earlier.

    Args:
        refs: stimulus id -> ``(tar, member, (offset, size))``.
        stim_ids: sorted ids to read.
        size: resize to ``size × size``; ``None`` keeps the size, which must then be the same for all.
    """
    shape: tuple[int, ...] | None = None
    for start in range(0, len(stim_ids), IMAGE_BATCH):
        batch = []
        for stim_id in stim_ids[start : start + IMAGE_BATCH].tolist():
            tar, member, (offset, length) = refs[stim_id]
            with open(tar, "rb") as f:
                f.seek(offset)
                data = f.read(length)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    pixels = resize(np.asarray(image.convert("RGB")), size)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataFormatError(
                    tar, f"member '{member}' is not a readable image ({exc})", REDOWNLOAD
                ) from exc
            shape = shape or pixels.shape
            if pixels.shape != shape:
                raise DataFormatError(
                    tar,
                    f"member '{member}' is {pixels.shape[:2]} px, earlier images are {shape[:2]}",
                    "pass image_size (--image-size) to resize every image to one size",
                )
            batch.append(pixels)
        yield np.stack(batch)


def hdf5_images(path: Path, stim_ids: np.ndarray, size: int | None) -> Iterator[np.ndarray]:
    """Batches of MindEye2 images: ``images`` rows (float16 CHW in [0, 1]) as uint8 HWC.

    Each value becomes ``round(clip(x, 0, 1) * 255)``; rows are read sorted and unique (trap 16).

    Args:
        path: ``coco_images_224_float16.hdf5``.
        stim_ids: sorted, unique 0-based 73k ids.
        size: resize to ``size × size``; ``None`` keeps the stored size.
    """
    with reading(path, REDOWNLOAD):
        images_file = h5py.File(path, "r")
    with images_file as f:
        dset = f.get("images")
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 4 or dset.shape[1] != 3:
            raise DataFormatError(
                path, "dataset 'images' (73000, 3, H, W) is missing or malformed", REDOWNLOAD
            )
        if len(stim_ids) and int(stim_ids[-1]) >= dset.shape[0]:
            problem = f"'images' has {dset.shape[0]} rows, need id {int(stim_ids[-1])}"
            raise DataFormatError(path, problem, REDOWNLOAD)
        for start in range(0, len(stim_ids), IMAGE_BATCH):
            values = read_rows(dset, stim_ids[start : start + IMAGE_BATCH]).astype(np.float32)
            if not np.isfinite(values).all():
                raise DataFormatError(path, "images hold NaN/inf values", REDOWNLOAD)
            batch = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
            yield np.stack([resize(image, size) for image in batch])


def me1_totals(path: Path, counts: dict[str, int]) -> dict[str, int] | None:
    """``totals`` of the optional ``metadata_subj0{s}.json``; a mismatch with the tars' counts is logged."""
    if not path.is_file():
        return None
    try:
        totals = {k: int(v) for k, v in json.loads(path.read_text(encoding="utf-8"))["totals"].items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.warning("%s: no readable 'totals'; the tars are not cross-checked", path)
        return None
    differ = {k: (v, counts[k]) for k, v in totals.items() if k in counts and v != counts[k]}
    if differ:
        log.warning("%s: totals differ from the tars' samples (metadata, tars): %s", path, differ)
    return totals
