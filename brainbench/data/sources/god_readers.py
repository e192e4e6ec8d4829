"""Readers for the Generic Object Decoding raw files (datasets.md §3), each naming the file in its errors.

- ``Subject{N}.h5`` (or ``Subject{N}.mat``): BData (bdpy) -- ``/dataset`` (N_samples × N_columns) and
  ``/metadata/{key, description, value}``, with ``value`` (K × N_columns) marking each key's columns (1, or
  a number such as a coordinate; NaN elsewhere). Keys are **bytes** in HDF5, decoded as UTF-8 (§5.2 trap 14).
  The older names ``dataSet``/``metaData`` are accepted. A ``.mat`` file is sniffed, never trusted by its
  extension (§5.2 trap 4): plain HDF5 (bdpy's layout), MATLAB v7.3 (HDF5 with reversed axes and cell
  strings as object references), or a v5 struct ``dataSet`` + ``metaData{key, description, value}``.
- ``stimulus_ImageNet{Training,Test}.tsv``: no header; ``name, float_id, category_index, image_index``.
- ``ImageNetTest_synset.xlsx``: ``synset_id, category, ...``, one row per test category, category_index order.
- images: any format PIL reads, named by the tsv's first column.

Ids (§3.2, §5.2 trap 13): a float id ``WNID.IMGNUM`` becomes ``stim_id = int('%.6f' % float_id without the
dot)`` -- ``1518878.01491`` (the tsv dropped a trailing zero) is image 14910, ``stim_id`` 1518878014910; the
category id is ``stim_id // 1_000_000`` (the numeric WordNet id) and its wnid is ``"n%08d" % category``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from brainbench.data.sources.matfile import load_v5, mat_format
from brainbench.errors import ConfigError, DataFormatError, MissingFileError, reading

TRAIN_TSV = "stimulus_ImageNetTraining.tsv"
TEST_TSV = "stimulus_ImageNetTest.tsv"
SYNSET_XLSX = "ImageNetTest_synset.xlsx"
ID_SCALE = 1_000_000
_DATA_TYPES = "1 (training perception), 2 (test perception) or 3 (test imagery)"
TSV_COLUMNS = ("name", "float_id", "category_index", "image_index")
_BDATA_NAMES = (("dataset", "metadata"), ("dataSet", "metaData"))
_REDOWNLOAD = "re-download it from the GOD release (figshare 7387130 / the GOD repo data/ folder)"
IMAGES_FIX = (
    "the image folder must hold training/<name> and test/<name> for every name in the stimulus tsvs "
    "(GOD images are released on request); complete it, or pass --images DIR"
)


def require(path: Path, what: str) -> Path:
    """Return ``path`` or raise MissingFileError saying what GOD file belongs there."""
    if path.is_file():
        return path
    raise MissingFileError(path, f"the GOD layout (datasets.md §3) expects {what} here; check --root")


def wnid(category: int) -> str:
    """WordNet id string of a numeric category id (``1518878 -> "n01518878"``)."""
    return f"n{int(category):08d}"


def stim_ids_from_float(float_ids: Sequence[float] | np.ndarray) -> np.ndarray:
    """``round(float_id × 1e6)`` through the 6-decimal string, never ``str(float).split('.')`` (trap 13)."""
    return np.asarray([int(f"{float(x):.6f}".replace(".", "")) for x in float_ids], dtype=np.int64)


@dataclass(frozen=True)
class BData:
    """One BData file in memory.

    Attributes:
        path: the file read.
        format: ``"hdf5"``, ``"v7.3"`` or ``"v5"``.
        dataset: ``(N_samples, N_columns)`` float64.
        keys: the K metadata keys, decoded.
        values: ``(K, N_columns)`` float64 metadata values (NaN = not applicable).
    """

    path: Path
    format: str
    dataset: np.ndarray
    keys: list[str]
    values: np.ndarray

    def row(self, key: str) -> np.ndarray:
        """The ``(N_columns,)`` metadata values of ``key``.

        Raises:
            DataFormatError: naming the key and the keys that do exist.
        """
        if key not in self.keys:
            raise DataFormatError(
                self.path, f"metadata key '{key}' is missing (keys: {', '.join(self.keys)})", _REDOWNLOAD
            )
        return self.values[self.keys.index(key)]

    def label(self, key: str) -> np.ndarray:
        """The ``(N_samples,)`` values of a label key (one marked column, like bdpy's ``select(key)``)."""
        columns = np.flatnonzero(self.row(key) == 1)
        if len(columns) != 1:
            raise DataFormatError(
                self.path, f"label key '{key}' marks {len(columns)} columns, expected exactly 1", _REDOWNLOAD
            )
        return self.dataset[:, columns[0]]


def subject_file(root: Path, subject: int) -> Path:
    """``Subject{N}.h5``, else ``Subject{N}.mat``, under ``root``.

    Raises:
        MissingFileError: ``root`` holds no subject file at all.
        ConfigError: other subjects exist (lists them).
    """
    for suffix in (".h5", ".mat"):
        if (path := root / f"Subject{subject}{suffix}").is_file():
            return path
    found = sorted({p.stem[len("Subject") :] for p in root.glob("Subject*") if p.suffix in (".h5", ".mat")})
    if found:
        raise ConfigError(
            f"unknown subject {subject}: no Subject{subject}.h5 or Subject{subject}.mat in {root}; "
            f"subjects found: {', '.join(map(str, found))}"
        )
    raise MissingFileError(
        root / f"Subject{subject}.h5",
        "point --root at the GOD folder holding Subject{N}.h5 (figshare 7387130), the stimulus tsvs and "
        "ImageNetTest_synset.xlsx",
    )


def read_bdata(path: Path) -> BData:
    """Read a BData file whatever its container (sniffed from the header, datasets.md §5.2 trap 4).

    Raises:
        DataFormatError: no dataset/metadata pair, missing metadata fields, or shapes that do not fit.
    """
    fmt = mat_format(path)
    with reading(path, _REDOWNLOAD):
        if fmt == "v5":
            dataset, keys, values = _read_v5(path)
        else:
            with h5py.File(path, "r") as file:
                dataset, keys, values = _read_hdf5(path, file)
    return BData(path, fmt, *_orient(path, dataset, keys, values, reversed_first=fmt == "v7.3"))


def _pair(path: Path, names: Sequence[str]) -> tuple[str, str]:
    for data_name, meta_name in _BDATA_NAMES:
        if data_name in names and meta_name in names:
            return data_name, meta_name
    problem = f"no BData 'dataset'/'metadata' (or 'dataSet'/'metaData') pair; found {sorted(names)}"
    raise DataFormatError(path, problem, _REDOWNLOAD)


def _read_hdf5(path: Path, file: h5py.File) -> tuple[np.ndarray, list[str], np.ndarray]:
    data_name, meta_name = _pair(path, list(file.keys()))
    meta = file[meta_name]
    for field in ("key", "value"):
        if not isinstance(meta, h5py.Group) or not isinstance(meta.get(field), h5py.Dataset):
            raise DataFormatError(path, f"/{meta_name}/{field} is missing", _REDOWNLOAD)
    keys = _hdf5_strings(file, meta["key"])
    return np.asarray(file[data_name][()], dtype=np.float64), keys, np.asarray(meta["value"][()], np.float64)


def _hdf5_strings(file: h5py.File, node: h5py.Dataset) -> list[str]:
    """Bytes (bdpy) or str strings, or MATLAB v7.3 cell strings (object references to uint16 chars)."""
    raw = np.asarray(node[()]).ravel()
    if h5py.check_dtype(ref=node.dtype) is not None:
        return [_matlab_chars(file[ref]) for ref in raw]
    return [(s.decode("utf-8") if isinstance(s, bytes) else str(s)).strip() for s in raw]


def _matlab_chars(node: h5py.Dataset) -> str:
    if node.attrs.get("MATLAB_empty", 0):
        return ""
    return "".join(chr(int(c)) for c in np.asarray(node[()]).ravel()).strip()


def _read_v5(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    mat = load_v5(path)
    data_name, meta_name = _pair(path, [k for k in mat if not k.startswith("__")])
    meta = np.asarray(mat[meta_name]).ravel()[0]
    if not hasattr(meta, "key") or not hasattr(meta, "value"):
        raise DataFormatError(path, f"struct '{meta_name}' lacks the fields key and value", _REDOWNLOAD)
    keys = _v5_strings(meta.key)
    return np.asarray(mat[data_name], dtype=np.float64), keys, np.asarray(meta.value, dtype=np.float64)


def _v5_strings(value: np.ndarray) -> list[str]:
    """A cell array of strings (one per cell) or a space-padded char matrix, as scipy loads them."""
    array = np.asarray(value)
    if array.dtype == object:
        return ["".join(np.asarray(cell).ravel().tolist()).strip() for cell in array.ravel()]
    return [str(s).strip() for s in array.ravel()]


def _orient(
    path: Path, dataset: np.ndarray, keys: list[str], values: np.ndarray, reversed_first: bool
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(dataset (N, C), keys, values (K, C))``; both transposed when stored in MATLAB's reversed axes."""
    for transpose in (True, False) if reversed_first else (False, True):
        data, meta = (dataset.T, values.T) if transpose else (dataset, values)
        if data.ndim == meta.ndim == 2 and meta.shape == (len(keys), data.shape[1]):
            return np.ascontiguousarray(data), keys, np.ascontiguousarray(meta)
    raise DataFormatError(
        path,
        f"dataset {dataset.shape} and metadata value {values.shape} do not fit {len(keys)} keys "
        "(expected (N_samples, N_columns) and (K, N_columns))",
        _REDOWNLOAD,
    )


def read_stimulus_tsv(path: Path) -> pd.DataFrame:
    """A stimulus tsv (no header) as ``name, stim_id, category, category_index, image_index``, file order.

    Raises:
        MissingFileError: the file is missing.
        DataFormatError: not 4 columns, non-numeric or empty ids, duplicate ``stim_id`` or ``image_index``.
    """
    require(path, f"the GOD stimulus list {path.name}")
    with reading(path, _REDOWNLOAD):
        table = pd.read_csv(path, sep="\t", header=None, dtype=str)
    if table.shape[1] != len(TSV_COLUMNS):
        raise DataFormatError(path, f"{table.shape[1]} columns, not {', '.join(TSV_COLUMNS)}", _REDOWNLOAD)
    table.columns = list(TSV_COLUMNS)
    try:
        numbers = table[list(TSV_COLUMNS[1:])].astype(np.float64)
    except ValueError as exc:
        raise DataFormatError(path, f"non-numeric id ({exc}); the file has no header", _REDOWNLOAD) from exc
    if numbers.isna().any().any() or table["name"].isna().any():
        raise DataFormatError(path, "empty cells", _REDOWNLOAD)
    stim_id = stim_ids_from_float(numbers["float_id"].to_numpy())
    out = pd.DataFrame(
        {"name": table["name"].str.strip(), "stim_id": stim_id, "category": stim_id // ID_SCALE}
    )
    out[["category_index", "image_index"]] = numbers[["category_index", "image_index"]].astype(np.int64)
    for column in ("stim_id", "image_index"):
        if out[column].duplicated().any():
            raise DataFormatError(path, f"duplicate {column} values", _REDOWNLOAD)
    return out


def read_test_synsets(path: Path) -> pd.DataFrame:
    """``ImageNetTest_synset.xlsx`` as ``synset_id, category_id, name``, rows in category_index order."""
    require(path, "the test-category list ImageNetTest_synset.xlsx")
    with reading(path, _REDOWNLOAD):
        sheet = pd.read_excel(path, engine="openpyxl")
    missing = [c for c in ("synset_id", "category") if c not in sheet.columns]
    if missing:
        raise DataFormatError(path, f"columns {missing} missing (found {list(sheet.columns)})", _REDOWNLOAD)
    synsets = sheet["synset_id"].astype(str).str.strip()
    bad = synsets[~synsets.str.fullmatch(r"n\d{8}")]
    if len(bad):
        raise DataFormatError(path, f"synset_ids {bad.tolist()[:5]} are not like n01443537", _REDOWNLOAD)
    return pd.DataFrame(
        {
            "synset_id": synsets,
            "category_id": synsets.str[1:].astype(np.int64),
            "name": sheet["category"].astype(str).str.strip(),
        }
    )


def load_image(path: Path, image_size: int | None) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` image; with ``image_size``, centre-cropped square and resized (bicubic).

    Raises:
        MissingFileError: the file is missing.
        DataFormatError: PIL cannot read it.
    """
    if not path.is_file():
        raise MissingFileError(path, IMAGES_FIX)
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataFormatError(path, f"not an image PIL can read ({exc})", IMAGES_FIX) from exc
    if image_size is not None:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def iter_images(paths: Iterable[Path], image_size: int | None, batch: int = 64) -> Iterator[np.ndarray]:
    """Images of ``paths`` in order, as ``(n, H, W, 3)`` uint8 batches.

    Raises:
        ConfigError: ``image_size`` is None and the images differ in size (pass ``--image-size``).
    """
    first_shape, pending = None, []
    for path in paths:
        image = load_image(path, image_size)
        first_shape = first_shape or image.shape
        if image.shape != first_shape:
            raise ConfigError(
                f"GOD images differ in size ({path} is {image.shape[1]}x{image.shape[0]}, the first was "
                f"{first_shape[1]}x{first_shape[0]}); pass image_size (`--image-size N`) to centre-crop and "
                "resize them all to N x N"
            )
        pending.append(image)
        if len(pending) == batch:
            yield np.stack(pending)
            pending = []
    if pending:
        yield np.stack(pending)


@dataclass(frozen=True)
class VoxelSelection:
    """The chosen voxel columns of a BData file.

    Attributes:
        columns: ``(V,)`` column indices into ``dataset``, in column order.
        ijk: ``V`` ``[x, y, z]`` coordinates (mm; ints when integral) from ``voxel_x/y/z``, else ``[]``.
        rois: ``"god/<ROI>"`` -> indices into the voxel vector, for every ``ROI_*`` flag of the file.
    """

    columns: np.ndarray
    ijk: list[list[float]]
    rois: dict[str, list[int]]


def select_voxels(bdata: BData, roi: str) -> VoxelSelection:
    """Columns with ``VoxelData == 1`` and ``ROI_<roi> == 1`` (datasets.md §3.4 step 2).

    Raises:
        DataFormatError: the ROI flag (or ``VoxelData``) is missing, or selects no voxel.
    """
    roi_keys = [k for k in bdata.keys if k.startswith("ROI_")]
    key = f"ROI_{roi}"
    if key not in bdata.keys:
        raise DataFormatError(
            bdata.path,
            f"ROI flag '{key}' is missing; ROI keys present: {', '.join(roi_keys) or 'none'}",
            f"choose --roi from {[k[len('ROI_') :] for k in roi_keys]}",
        )
    columns = np.flatnonzero((bdata.row("VoxelData") == 1) & (bdata.row(key) == 1))
    if not len(columns):
        raise DataFormatError(
            bdata.path, f"no column has VoxelData == 1 and {key} == 1", "choose another --roi"
        )
    rois = {f"god/{k[len('ROI_') :]}": np.flatnonzero(bdata.row(k)[columns] == 1).tolist() for k in roi_keys}
    return VoxelSelection(columns, _voxel_ijk(bdata, columns), rois)


def _voxel_ijk(bdata: BData, columns: np.ndarray) -> list[list[float]]:
    names = ("voxel_x", "voxel_y", "voxel_z")
    if not all(name in bdata.keys for name in names):
        return []
    xyz = np.stack([bdata.row(name)[columns] for name in names], axis=1)
    if not np.isfinite(xyz).all():
        raise DataFormatError(bdata.path, "voxel_x/y/z are NaN on some chosen voxel columns", _REDOWNLOAD)
    return xyz.astype(np.int64).tolist() if np.all(xyz == np.round(xyz)) else xyz.tolist()


def read_rows(bdata: BData, train: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One entry per ``/dataset`` row: ``row, data_type, run, stim_id, category``; and the id source.

    Image identity comes from ``stimulus_id`` (v1 and v2), else from ``image_index`` joined to the tsv of the
    row's DataType (imagery rows use the test tsv, whose categories are the imagery categories). Imagery rows
    get the category-level id ``category × 1e6`` (image number 0).

    Raises:
        DataFormatError: ``DataType`` missing or holding codes other than 1/2/3, no training or test row, or
            no image identity (or ``image_index`` values the tsvs do not list).
    """
    fix = "use an unmodified GOD subject file (datasets.md §3.1)"
    data_type, run = bdata.label("DataType"), bdata.label("Run")
    if not np.isin(data_type, (1, 2, 3)).all():
        codes = [f"{c:g}" for c in np.unique(data_type)]  # NaN prints as 'nan'
        raise DataFormatError(bdata.path, f"DataType holds codes {codes}; expected {_DATA_TYPES}", fix)
    for code in (1, 2):
        if not (data_type == code).any():
            raise DataFormatError(bdata.path, f"no DataType {code} row; expected {_DATA_TYPES}", fix)
    if not np.isfinite(run).all():
        raise DataFormatError(bdata.path, "Run holds NaN values", fix)
    if "stimulus_id" in bdata.keys:
        float_ids = bdata.label("stimulus_id")
        if not (np.isfinite(float_ids) & (float_ids > 0)).all():
            raise DataFormatError(bdata.path, "stimulus_id holds NaN or non-positive values", fix)
        stim_id, source = stim_ids_from_float(float_ids), "stimulus_id"
    elif "image_index" in bdata.keys:
        stim_id, source = _join_image_index(bdata, data_type, train, test), "image_index"
    else:
        raise DataFormatError(bdata.path, "neither stimulus_id nor image_index is a metadata key", fix)
    rows = pd.DataFrame(
        {
            "row": np.arange(len(data_type)),
            "data_type": data_type.astype(np.int64),
            "run": run.astype(np.int64),
            "stim_id": stim_id,
            "category": stim_id // ID_SCALE,
        }
    )
    imagery = rows["data_type"] == 3
    rows.loc[imagery, "stim_id"] = rows.loc[imagery, "category"] * ID_SCALE
    return rows, source


def _join_image_index(
    bdata: BData, data_type: np.ndarray, train: pd.DataFrame, test: pd.DataFrame
) -> np.ndarray:
    index = bdata.label("image_index")
    stim_id = np.zeros(len(index), dtype=np.int64)
    for code, table in ((1, train), (2, test), (3, test)):
        rows = np.flatnonzero(data_type == code)
        lookup = dict(zip(table["image_index"].tolist(), table["stim_id"].tolist(), strict=True))
        unknown = sorted({f"{v:g}" for v in index[rows] if v not in lookup})
        if unknown:
            raise DataFormatError(
                bdata.path,
                f"image_index values {unknown[:10]} of DataType {code} rows are not in the stimulus tsv",
                "use the stimulus tsvs of the same GOD release"
                + ("; imagery rows need stimulus_id (their category id)" if code == 3 else ""),
            )
        stim_id[rows] = [lookup[v] for v in index[rows]]
    return stim_id
