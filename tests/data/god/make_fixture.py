"""Write a seeded, kilobyte-sized copy of the GOD raw layout (datasets.md §3, §5.1).

Written with h5py, scipy.io, hdf5storage, pandas/openpyxl and PIL directly, independently of brainbench:

- ``Subject{N}.h5``: BData with bytes metadata, 30 voxel columns split around the label columns (DataType,
  Run, Block, stimulus_id, image_index), so column order matters; two voxel columns are outside every ROI;
  one VC voxel is constant over the training rows (a zero-std voxel);
- 6 training categories × 4 images, 3 test categories × 1 image × 5 repeats, 3 imagery categories × 2 repeats;
  runs interleave training, test and imagery rows, so position does not tell the DataType;
- test and imagery rows carry a +20 offset, so z-score statistics that include them are visible;
- image 14910 of category 1518878 is written ``1518878.01491`` in the tsv (datasets.md §5.2 trap 13);
- the test tsv lists its rows in reverse category order (category_index, not row order, links the xlsx);
- images are 12×9 PNGs under ``images/training`` and ``images/test``.

Containers: ``"h5"`` (``Subject{N}.h5``), ``"mat-hdf5"`` (the same HDF5 named ``.mat``), ``"mat-v73"``
(MATLAB v7.3 via hdf5storage: reversed axes, cell strings) and ``"mat-v5"`` (``scipy.io.savemat`` struct).

Run ``python tests/data/god/make_fixture.py OUT`` to write it and print its checksums.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.io
from PIL import Image

SEED = 0
TRAIN_CATEGORIES = (1518878, 1639765, 1645776, 1664990, 1704323, 1726692)
TEST_CATEGORIES = (1443537, 1621127, 1677366)
TEST_NAMES = ("goldfish", "owl", "common iguana")
TRAP_IMAGE = 14910  # category TRAIN_CATEGORIES[0]; its float id prints as 1518878.01491
N_VOXELS = 30
NON_VC = (3, 17)  # voxel numbers outside every ROI
ZERO_STD_VOXEL = 28  # constant over the training rows
OFFSET = 20.0  # added to test and imagery rows
IMAGE_HW = (9, 12)
ROIS = ("V1", "V2", "V3", "V4", "LOC", "FFA", "PPA", "LVC", "HVC", "VC")
LABELS = ("DataType", "Run", "Block", "stimulus_id", "image_index")


def roi_members(n_voxels: int = N_VOXELS) -> dict[str, np.ndarray]:
    """ROI name -> voxel numbers (0..n_voxels-1); VC = LVC | HVC, NON_VC voxels are in none."""
    j = np.arange(n_voxels)
    inside = ~np.isin(j, NON_VC)
    members = {name: inside & (j % 5 == k) for k, name in enumerate(("V1", "V2", "V3", "V4"))}
    members["LOC"] = inside & (j % 10 == 4)
    members["FFA"] = inside & (j % 10 == 9) & (j < 20)
    members["PPA"] = inside & (j % 10 == 9) & (j >= 20)
    members["LVC"] = members["V1"] | members["V2"] | members["V3"] | members["V4"]
    members["HVC"] = members["LOC"] | members["FFA"] | members["PPA"]
    members["VC"] = members["LVC"] | members["HVC"]
    return {name: np.flatnonzero(mask) for name, mask in members.items()}


def _events(rng, train_categories, images_per_category, test_categories, test_repeats, imagery_repeats):
    """The stimuli: training images, test images, and the (data_type, float_id, key) rows in run order."""
    train_images = []
    for ci, category in enumerate(train_categories):
        numbers = rng.choice(np.arange(1000, 99999), size=images_per_category, replace=False).tolist()
        if ci == 0:
            numbers[:2] = [10042, TRAP_IMAGE]
        train_images += [(category, int(n)) for n in numbers]
    numbers = rng.integers(1000, 99999, len(test_categories)).tolist()
    test_images = [(c, int(n)) for c, n in zip(test_categories, numbers, strict=True)]
    train_rows = [(1, img) for img in train_images]
    test_rows = [(2, img) for img in test_images for _ in range(test_repeats)]
    imagery_rows = [(3, (c, 0)) for c in test_categories for _ in range(imagery_repeats)]
    train_rows = [train_rows[i] for i in rng.permutation(len(train_rows))]
    test_rows = [test_rows[i] for i in rng.permutation(len(test_rows))]
    half_train, half_test = len(train_rows) // 2, len(test_rows) // 2
    runs = [
        train_rows[:half_train],
        test_rows[:half_test],
        imagery_rows,
        train_rows[half_train:],
        test_rows[half_test:],
    ]
    return train_images, test_images, [r for r in runs if r]


def write_god_fixture(
    root: Path,
    subject: int = 1,
    *,
    container: str = "h5",
    old_names: bool = False,
    stimulus_id: bool = True,
    image_index: bool = True,
    images: bool = True,
    train_categories: tuple[int, ...] = TRAIN_CATEGORIES,
    images_per_category: int = 4,
    test_categories: tuple[int, ...] = TEST_CATEGORIES,
    test_repeats: int = 5,
    imagery_repeats: int = 2,
    n_voxels: int = N_VOXELS,
    seed: int = SEED,
) -> dict:
    """Write the fixture under ``root`` and return what the tests assert against.

    Returns:
        ``root``, ``path`` (the subject file), ``keys``, ``values`` (K, C), ``dataset`` (N, C); per row
        ``data_type``, ``run``, ``stim_id`` (int, imagery ``category × 1e6``), ``image_index``;
        ``voxel_columns`` (C indices of voxel 0..n_voxels-1), ``rois`` (name -> voxel numbers),
        ``xyz`` (n_voxels, 3); ``train_images``/``test_images`` ((category, number) lists), ``test_names``,
        ``test_wnids``, ``images`` (stim_id -> (H, W, 3) uint8), ``file_names`` (stim_id -> image path).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 100 * subject)
    train_images, test_images, runs = _events(
        rng, train_categories, images_per_category, test_categories, test_repeats, imagery_repeats
    )
    test_order = list(range(len(test_images)))[::-1]  # tsv rows in reverse category order
    test_tsv_images = [test_images[i] for i in test_order]
    index_of = {img: k + 1 for k, img in enumerate(train_images)}
    index_of |= {img: k + 1 for k, img in enumerate(test_tsv_images)}
    imagery_index = {c: index_of[img] for img in test_images for c in [img[0]]}

    rows = [
        (dt, img, run + 1, block + 1)
        for run, events in enumerate(runs)
        for block, (dt, img) in enumerate(events)
    ]
    n_rows = len(rows)
    data_type = np.array([r[0] for r in rows], dtype=np.float64)
    float_id = np.array([c + n / 1e6 for _, (c, n), _, _ in rows])
    stim_id = np.array([c * 1_000_000 + n for _, (c, n), _, _ in rows], dtype=np.int64)
    idx = np.array([imagery_index[c] if dt == 3 else index_of[(c, n)] for dt, (c, n), _, _ in rows], float)

    labels = {"DataType": data_type, "Run": np.array([r[2] for r in rows], float)}
    labels["Block"] = np.array([r[3] for r in rows], float)
    if stimulus_id:
        labels["stimulus_id"] = float_id
    if image_index:
        labels["image_index"] = idx
    half = n_voxels // 2
    n_columns = n_voxels + len(labels)
    voxel_columns = np.concatenate([np.arange(half), np.arange(half + len(labels), n_columns)])
    label_columns = dict(zip(labels, range(half, half + len(labels)), strict=True))

    j = np.arange(n_voxels)
    base, scale = 100.0 + 10.0 * j, 1.0 + (j % 3)
    signal = {s: rng.normal(0, 1, n_voxels) for s in np.unique(stim_id)}
    voxels = np.stack([base + scale * (signal[s] + 0.5 * rng.normal(0, 1, n_voxels)) for s in stim_id])
    voxels[data_type != 1] += OFFSET
    voxels[data_type == 1, ZERO_STD_VOXEL] = base[ZERO_STD_VOXEL]
    dataset = np.zeros((n_rows, n_columns))
    dataset[:, voxel_columns] = voxels
    for key, column in label_columns.items():
        dataset[:, column] = labels[key]

    rois = roi_members(n_voxels)
    xyz = np.stack([-30.0 + 3 * (j % 4), -90.0 + 3 * (j // 4 % 3), 3.0 * (j // 12)], axis=1)
    keys, descriptions, values = ["VoxelData"], ["1 = voxel data"], [_row(n_columns, voxel_columns, 1.0)]
    for axis, name in enumerate(("voxel_x", "voxel_y", "voxel_z")):
        keys.append(name)
        descriptions.append(f"voxel {name[-1]} coordinate (mm)")
        values.append(_row(n_columns, voxel_columns, xyz[:, axis]))
    for name in ROIS:
        keys.append(f"ROI_{name}")
        descriptions.append(f"1 = ROI {name} voxel")
        values.append(_row(n_columns, voxel_columns[rois[name]], 1.0))
    for key, column in label_columns.items():
        keys.append(key)
        descriptions.append(f"1 = {key}")
        values.append(_row(n_columns, [column], 1.0))
    values = np.stack(values)

    path = _write_bdata(root, subject, container, old_names, dataset, keys, descriptions, values)
    test_wnids = [f"n{c:08d}" for c in test_categories]
    test_names = list(TEST_NAMES[: len(test_categories)]) + [
        f"class{k}" for k in range(3, len(test_categories))
    ]
    file_names = _write_tables(root, train_images, test_tsv_images, test_categories, test_wnids, test_names)
    image_arrays = {}
    for stim, rel in file_names.items():
        image_arrays[stim] = rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
        if images:
            (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image_arrays[stim]).save(root / "images" / rel, format="PNG")
    return {
        "root": root,
        "subject": subject,
        "path": path,
        "keys": keys,
        "values": values,
        "dataset": dataset,
        "data_type": data_type.astype(np.int64),
        "run": labels["Run"].astype(np.int64),
        "stim_id": stim_id,
        "image_index": idx.astype(np.int64),
        "voxel_columns": voxel_columns,
        "rois": rois,
        "xyz": xyz,
        "train_images": train_images,
        "test_images": test_images,
        "test_names": test_names,
        "test_wnids": test_wnids,
        "images": image_arrays,
        "file_names": file_names,
    }


def _row(n_columns: int, columns, value) -> np.ndarray:
    row = np.full(n_columns, np.nan)
    row[np.asarray(columns)] = value
    return row


def _write_bdata(root, subject, container, old_names, dataset, keys, descriptions, values) -> Path:
    suffix = ".h5" if container == "h5" else ".mat"
    path = root / f"Subject{subject}{suffix}"
    if container in ("h5", "mat-hdf5"):
        data_name, meta_name = ("dataSet", "metaData") if old_names else ("dataset", "metadata")
        with h5py.File(path, "w") as f:
            f.create_dataset(data_name, data=dataset)
            f.create_dataset(f"{meta_name}/key", data=np.array([k.encode("utf-8") for k in keys]))
            f.create_dataset(
                f"{meta_name}/description", data=np.array([d.encode("utf-8") for d in descriptions])
            )
            f.create_dataset(f"{meta_name}/value", data=values)
        return path
    meta = {"key": _cell(keys), "description": _cell(descriptions), "value": values}
    if container == "mat-v5":
        scipy.io.savemat(path, {"dataSet": dataset, "metaData": meta})
    elif container == "mat-v73":
        import hdf5storage

        hdf5storage.savemat(
            str(path), {"dataSet": dataset, "metaData": meta}, format="7.3", matlab_compatible=True
        )
    else:
        raise ValueError(f"unknown container {container!r}")
    return path


def _cell(strings: list[str]) -> np.ndarray:
    cell = np.empty((len(strings), 1), dtype=object)
    cell[:, 0] = strings
    return cell


def _write_tables(
    root, train_images, test_tsv_images, test_categories, test_wnids, test_names
) -> dict[int, str]:
    """The two stimulus tsvs (no header, float ids as pandas prints them) and the synset xlsx."""
    file_names = {}
    for tsv, subdir, images, category_order in (
        ("stimulus_ImageNetTraining.tsv", "training", train_images, sorted({c for c, _ in train_images})),
        ("stimulus_ImageNetTest.tsv", "test", test_tsv_images, list(test_categories)),
    ):
        names = [f"n{c:08d}_{n}.png" for c, n in images]
        table = pd.DataFrame(
            {
                "name": names,
                "float_id": [c + n / 1e6 for c, n in images],
                "category_index": [category_order.index(c) + 1 for c, _ in images],
                "image_index": np.arange(1, len(images) + 1),
            }
        )
        table.to_csv(root / tsv, sep="\t", header=False, index=False)
        file_names |= {
            c * 1_000_000 + n: f"{subdir}/{name}" for (c, n), name in zip(images, names, strict=True)
        }
    pd.DataFrame(
        {
            "synset_id": test_wnids,
            "category": test_names,
            "word": [f"{name}, word" for name in test_names],
            "gloss": [f"a kind of {name}" for name in test_names],
            "category_Japanese": ["-" for _ in test_names],
        }
    ).to_excel(root / "ImageNetTest_synset.xlsx", index=False)
    return file_names


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "god_fixture")
    write_god_fixture(out)
    for name, digest in checksums(out).items():
        print(f"{digest}  {name}")
