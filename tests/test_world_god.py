"""The world-god: the embedded world as a GOD-like experiment in the real GOD raw layout (datasets.md §3).

One ``tiny`` world (subject 1) is generated for the module; a second one, interrupted and resumed, must come
out byte-identical. The NSD world's stimuli are pinned by hash: the forced-category scenes added for GOD must
not change a single NSD image.
"""

import hashlib
import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainbench.data.registry import get_dataset, obtain_raw, prepare
from brainbench.errors import ConfigError, DataFormatError
from brainbench.world import god
from brainbench.world.build import WORLD_FILE
from brainbench.world.god import (
    GOD_PRESETS,
    WNID_OFFSET,
    generate_world_god,
    get_god_config,
    god_root,
    make_god_design,
    split_categories,
)
from brainbench.world.god_writer import (
    LABEL_KEYS,
    ROI_NAMES,
    SYNSET_XLSX,
    TEST_TSV,
    TRAIN_TSV,
    GodBlocks,
    GodVoxels,
    is_complete,
    write_god_subject,
)
from brainbench.world.shapes import CATEGORY_NAMES, DOMAINS, category_domain
from brainbench.world.stimuli import generate_scene, generate_stimuli

TINY = get_god_config("tiny")
N_TRAIN = 42 * TINY.train_images_per_category  # 420
N_TEST = 15 * TINY.test_images_per_category  # 30
# sha256 of generate_stimuli(20, seed=0): images bytes, then repr((captions, categories)); taken before
# stimuli.py learned forced categories.
NSD_IMAGES_SHA256 = "a738680a8ed4ac4b77e72795c0efb51d5b4fc482ed4da1f6cf4bfedd32294a92"
NSD_TEXT_SHA256 = "e76e3b4714d8dd260573f635c8d767fd9b4a635d9d621dc3c730246bc78126dd"
GOD_FILES = {"Subject1.h5", TRAIN_TSV, TEST_TSV, SYNSET_XLSX, "images", WORLD_FILE, "brainbench_truth"}


def stim_id(float_id: float) -> int:
    """The adapter's parse (datasets.md §3.2 trap): 6 decimals, never str(float).split('.')."""
    whole, frac = f"{float_id:.6f}".split(".")
    return int(whole) * 1_000_000 + int(frac)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = god_root(tmp_path_factory.mktemp("home"), "tiny")  # where `brainbench bench` looks for it
    assert generate_world_god(root, "tiny", subjects=[1], progress=False) == root
    return root


@pytest.fixture(scope="module")
def bdata(world):
    with h5py.File(world / "Subject1.h5", "r") as f:
        out = {name: f[path][()] for name, path in [("dataset", "dataset"), ("value", "metadata/value")]}
        out["key_raw"] = f["metadata/key"][()]
        out["description_raw"] = f["metadata/description"][()]
        out["nodes"] = sorted(f.keys()), sorted(f["metadata"].keys())
    out["keys"] = [k.decode() for k in out["key_raw"]]
    return out


def row(bdata, key):
    return bdata["value"][bdata["keys"].index(key)]


def label(bdata, key):
    (column,) = np.flatnonzero(row(bdata, key) == 1)
    return bdata["dataset"][:, column]


def voxel_columns(bdata):
    return row(bdata, "VoxelData") == 1


def tsv(world, name):
    return pd.read_csv(world / name, sep="\t", header=None, names=["name", "float_id", "category", "image"])


# --- stimuli.py: the NSD world is untouched ------------------------------------------------------------
def test_nsd_world_stimuli_did_not_change():
    stimuli = generate_stimuli(20, seed=0)
    assert hashlib.sha256(stimuli.images.tobytes()).hexdigest() == NSD_IMAGES_SHA256
    text = repr((stimuli.captions, stimuli.categories)).encode()
    assert hashlib.sha256(text).hexdigest() == NSD_TEXT_SHA256


def test_forced_category_single_object_scene():
    image, captions, scene = generate_scene(0, 7, 32, category="owl face", n_objects=1)
    assert [o.category for o in scene.objects] == ["owl face"] and image.shape == (32, 32, 3)
    assert all("owl face" in c for c in captions if c.startswith("a picture of"))
    again, _, _ = generate_scene(0, 7, 32, category="owl face", n_objects=1)
    np.testing.assert_array_equal(image, again)
    with pytest.raises(ValueError, match="unknown world category 'dragon'"):
        generate_scene(0, 7, 32, category="dragon")


# --- presets, categories, design ------------------------------------------------------------------------
def test_presets_and_bad_options(tmp_path):
    assert set(GOD_PRESETS) == {"small", "tiny"}
    assert get_god_config("small").version == "v2-small" and TINY.version == "v2-tiny"
    assert god_root(tmp_path, "tiny") == tmp_path / "worlds" / "world-god-v2-tiny"
    with pytest.raises(ConfigError, match=r"unknown world-god preset 'huge'.*small.*tiny"):
        get_god_config("huge")
    with pytest.raises(ConfigError, match=r"subjects 1\.\.5; got \[6\]"):
        generate_world_god(tmp_path / "w", "tiny", subjects=[6], progress=False)
    assert not (tmp_path / "w").exists()


def test_category_split_is_stratified_disjoint_and_seeded():
    train, test = split_categories(0, 15)
    assert len(train) == 42 and len(test) == 15 and not set(train) & set(test)
    assert sorted(train + test) == sorted(CATEGORY_NAMES)
    per_domain = {d: sum(category_domain(n) == d for n in test) for d in DOMAINS}
    assert per_domain == {"shape": 5, "object": 4, "place": 2, "face": 1, "body": 1, "word": 2}
    assert split_categories(0, 15) == (train, test)
    assert split_categories(1, 15)[1] != test
    with pytest.raises(ConfigError, match="n_test_categories"):
        split_categories(0, 57)


def test_design_blocks():
    design = make_god_design(TINY)
    blocks = design.blocks
    counts = {code: int((blocks.data_type == code).sum()) for code in (1, 2, 3)}
    assert counts == {1: N_TRAIN, 2: N_TEST * 35, 3: 15 * 10}
    assert (np.diff(blocks.data_type) >= 0).all() and (np.diff(blocks.run) >= 0).all()
    for run in np.unique(blocks.run):
        in_run = blocks.run == run
        np.testing.assert_array_equal(blocks.block[in_run], np.arange(1, in_run.sum() + 1))
        assert len(np.unique(blocks.data_type[in_run])) == 1
        # no image or imagined category twice in a run: repeats are spread over runs
        assert len(np.unique(design.block_rows[in_run])) == in_run.sum()
    train_rows = design.block_rows[blocks.data_type == 1]
    np.testing.assert_array_equal(np.sort(train_rows), np.arange(N_TRAIN))
    test_runs = np.unique(blocks.run[blocks.data_type == 2])
    assert len(test_runs) == 35 and all((blocks.run == r).sum() == N_TEST for r in test_runs)
    assert (np.bincount(blocks.run[blocks.data_type == 1])[1:] <= TINY.train_run_blocks).all()


# --- the files ------------------------------------------------------------------------------------------
def test_layout_files(world):
    visible = {p.name for p in world.iterdir() if not p.name.startswith(".")}
    assert visible == GOD_FILES
    assert is_complete(world) and is_complete(world, 1) and not is_complete(world, 2)
    assert sorted(p.name for p in (world / "images").iterdir()) == ["test", "training"]
    assert not [p for p in world.rglob("*") if "partial" in p.name]
    record = json.loads((world / WORLD_FILE).read_text())
    assert record["dataset"] == "world-god" and record["version"] == "v2-tiny"
    assert record["config"]["snr_scale"] == TINY.snr_scale


def test_bdata_layout(bdata):
    assert bdata["nodes"] == (["dataset", "metadata"], ["description", "key", "value"])
    assert bdata["dataset"].dtype == np.float64 and bdata["value"].dtype == np.float64
    for raw in (bdata["key_raw"], bdata["description_raw"]):
        assert raw.dtype.kind == "S" and all(isinstance(k, bytes) for k in raw)
    expected = ["VoxelData", "voxel_x", "voxel_y", "voxel_z", *(f"ROI_{r}" for r in ROI_NAMES), *LABEL_KEYS]
    assert bdata["keys"] == expected
    n_samples, n_columns = bdata["dataset"].shape
    assert n_samples == N_TRAIN + N_TEST * 35 + 150
    assert bdata["value"].shape == (len(expected), n_columns)
    voxels = voxel_columns(bdata)
    assert voxels.sum() == n_columns - len(LABEL_KEYS) and np.isnan(row(bdata, "VoxelData")[~voxels]).all()
    for key in LABEL_KEYS:  # a label key is 1 on its own column only
        values = row(bdata, key)
        assert (values == 1).sum() == 1 and np.isnan(values[values != 1]).all()
    for axis in ("voxel_x", "voxel_y", "voxel_z"):
        coords = row(bdata, axis)
        assert np.isfinite(coords[voxels]).all() and np.isnan(coords[~voxels]).all()
        np.testing.assert_allclose(coords[voxels] / 1.8, np.round(coords[voxels] / 1.8), atol=1e-9)
    assert np.isfinite(bdata["dataset"]).all()


def test_roi_flags(bdata):
    voxels = voxel_columns(bdata)
    flags = {}
    for roi in ROI_NAMES:
        values = row(bdata, f"ROI_{roi}")
        assert set(np.unique(values[~np.isnan(values)]).tolist()) == {1.0}
        assert np.isnan(values[~voxels]).all()
        flags[roi] = values[voxels] == 1
        assert flags[roi].any(), roi
    np.testing.assert_array_equal(flags["LVC"], flags["V1"] | flags["V2"] | flags["V3"])
    np.testing.assert_array_equal(flags["HVC"], flags["LOC"] | flags["FFA"] | flags["PPA"])
    assert flags["VC"].all()
    early = np.stack([flags[r] for r in ("V1", "V2", "V3", "V4")])
    assert early.sum(0).max() == 1  # V1-V4 are disjoint
    assert not (early.any(0) & flags["HVC"]).any()


def test_labels_in_the_file(bdata):
    data_type, run, block = (label(bdata, k) for k in ("DataType", "Run", "Block"))
    assert {c: int((data_type == c).sum()) for c in (1, 2, 3)} == {1: N_TRAIN, 2: N_TEST * 35, 3: 150}
    assert (np.diff(run) >= 0).all() and block.min() == 1
    np.testing.assert_array_equal(data_type, make_god_design(TINY).blocks.data_type)
    image_index = label(bdata, "image_index")
    assert sorted(image_index[data_type == 1]) == list(range(1, N_TRAIN + 1))
    assert set(image_index[data_type == 2]) == set(range(1, N_TEST + 1))
    assert (image_index[data_type == 3] == 0).all()


def test_categories_disjoint_and_synset_xlsx(world, bdata):
    data_type, ids = label(bdata, "DataType"), label(bdata, "stimulus_id")
    categories = {c: {int(x) for x in ids[data_type == c]} for c in (1, 2, 3)}
    assert len(categories[1]) == 42 and not categories[1] & categories[2]
    synsets = pd.read_excel(world / SYNSET_XLSX)
    assert list(synsets.columns) == ["synset_id", "category", "word", "gloss"]
    wnids = [int(s[1:]) for s in synsets["synset_id"]]
    assert wnids == sorted(categories[2]) and set(wnids) == categories[3]
    assert all(s == f"n{w:08d}" for s, w in zip(synsets["synset_id"], wnids, strict=True))
    assert [CATEGORY_NAMES[w - WNID_OFFSET] for w in wnids] == list(synsets["category"])
    imagery = ids[data_type == 3]
    np.testing.assert_array_equal(imagery, np.floor(imagery))  # the category id itself, e.g. 90000012.0
    test = tsv(world, TEST_TSV)
    np.testing.assert_array_equal([wnids.index(int(x)) + 1 for x in test["float_id"]], test["category"])


def test_float_ids_survive_the_tsv_round_trip(world, bdata):
    text = (world / TRAIN_TSV).read_text()
    assert "\t90000001.00001\t" in text  # image 10: the trailing zero is lost, as in real GOD
    for name, split, n in ((TRAIN_TSV, 1, N_TRAIN), (TEST_TSV, 2, N_TEST)):
        table = tsv(world, name)
        assert len(table) == n and list(table["image"]) == list(range(1, n + 1))
        from_names = [int(s[1:9]) * 1_000_000 + int(s[10:-4]) for s in table["name"]]
        assert [stim_id(x) for x in table["float_id"]] == from_names
        assert all(s.endswith(".png") and s[0] == "n" and s[9] == "_" for s in table["name"])
        by_index = dict(zip(table["image"], from_names, strict=True))
        rows = label(bdata, "DataType") == split
        in_file = [stim_id(x) for x in label(bdata, "stimulus_id")[rows]]
        assert in_file == [by_index[int(i)] for i in label(bdata, "image_index")[rows]]
    train_ids = [stim_id(x) for x in tsv(world, TRAIN_TSV)["float_id"]]
    assert 90000001000010 in train_ids and stim_id(90000001.00001) == 90000001000010


def test_images_match_the_tsv_names(world):
    names = {c.wnid: c.name for c in make_god_design(TINY).train_categories}
    for name, folder in ((TRAIN_TSV, "training"), (TEST_TSV, "test")):
        table = tsv(world, name)
        files = sorted(p.name for p in (world / "images" / folder).iterdir())
        assert files == sorted(table["name"])
    first = tsv(world, TRAIN_TSV).iloc[9]  # image 10 of the first training category
    with Image.open(world / "images" / "training" / first["name"]) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
        pixels = np.asarray(image)
    wnid = int(first["float_id"])
    expected, _, _ = generate_scene(0, stim_id(first["float_id"]), 64, category=names[wnid], n_objects=1)
    np.testing.assert_array_equal(pixels, expected)


# --- the signal ------------------------------------------------------------------------------------------
def _columns_corr(a, b):
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0)


def test_test_averages_carry_the_noise_free_signal(world, bdata):
    truth = np.load(world / "brainbench_truth" / "Subject1.npz", allow_pickle=False)
    voxels = voxel_columns(bdata)
    responses = bdata["dataset"][:, voxels]
    np.testing.assert_array_equal(
        truth["voxel_ijk"] * 1.8, np.stack([row(bdata, f"voxel_{a}")[voxels] for a in "xyz"], 1)
    )
    data_type = label(bdata, "DataType")
    ids = np.array([stim_id(x) for x in label(bdata, "stimulus_id")])
    test_ids = np.unique(ids[data_type == 2])
    averages = np.stack([responses[(data_type == 2) & (ids == i)].mean(0) for i in test_ids])
    rows = [int(np.flatnonzero(truth["row_stim_ids"] == i)[0]) for i in test_ids]
    signal = truth["signal"][rows]
    r = _columns_corr(averages, signal)
    reliable, dead = truth["ncsnr"] > 1.0, truth["ncsnr"] == 0
    assert reliable.sum() > 50 and r[reliable].mean() > 0.9
    assert abs(r[dead].mean()) < 0.15
    # held-out identification: each test average is closest to its own noise-free pattern
    similarity = np.corrcoef(averages[:, reliable], signal[:, reliable])[: len(rows), len(rows) :]
    assert (similarity.argmax(1) == np.arange(len(rows))).mean() == 1.0
    # imagery: nothing on the retina varies, so low-level voxels get the same noise-free signal for every
    # imagined category; high-level voxels differ between categories
    imagery = truth["signal"][N_TRAIN + N_TEST :]
    assert imagery.shape[0] == 15
    assert imagery[:, truth["level"] == 0].std(0).max() < 1e-4
    assert imagery[:, truth["level"] == 2].std(0).mean() > 0.2


def test_the_god_adapter_reads_the_world_unchanged(world, tmp_path):
    entry = get_dataset("world-god")
    home = world.parent.parent
    root, version, options = obtain_raw(entry, 1, home=home, preset="tiny", data_root=None, progress=False)
    assert root == world and version == "v2-tiny"  # found complete: nothing regenerated
    manifest = prepare(
        entry, root, 1, tmp_path / "prepared", version=version, options=options, progress=False
    )
    counts = {split: info["n_samples"] for split, info in manifest.splits.items()}
    assert counts["train"] + counts["val"] == N_TRAIN and counts["val"] > 0
    assert counts["test"] == N_TEST and counts["imagery"] == 15
    assert manifest.zero_shot["names"] == list(pd.read_excel(world / SYNSET_XLSX)["category"])
    assert set(manifest.rois) == {f"god/{roi}" for roi in ROI_NAMES}


# --- determinism, resumability, guards ------------------------------------------------------------------
def _layout_bytes(root):
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if "brainbench_truth" not in p.parts
    }


def test_interrupted_generation_resumes_to_identical_bytes(world, tmp_path, monkeypatch):
    stamp = (world / "Subject1.h5").stat().st_mtime_ns
    generate_world_god(world, "tiny", subjects=[1], progress=False)  # complete: nothing is rewritten
    assert (world / "Subject1.h5").stat().st_mtime_ns == stamp

    root = tmp_path / "again"

    def crash(*_args):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(god, "god_features", crash)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_world_god(root, "tiny", subjects=[1], progress=False)
    assert is_complete(root) and not is_complete(root, 1) and not (root / "Subject1.h5").exists()
    kept = {p: p.stat().st_mtime_ns for p in (root / TRAIN_TSV, root / SYNSET_XLSX)}
    monkeypatch.undo()

    generate_world_god(root, "tiny", subjects=[1], progress=False)
    assert is_complete(root, 1)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the finished part was kept
    assert _layout_bytes(root) == _layout_bytes(world)
    truth_a = np.load(world / "brainbench_truth" / "Subject1.npz", allow_pickle=False)
    truth_b = np.load(root / "brainbench_truth" / "Subject1.npz", allow_pickle=False)
    for name in truth_a.files:
        np.testing.assert_array_equal(truth_a[name], truth_b[name])


def test_a_folder_of_another_world_is_refused(world, tmp_path):
    with pytest.raises(DataFormatError, match="holds world-god v2-tiny, not world-god v2-small"):
        generate_world_god(world, "small", progress=False)
    other = tmp_path / "nsd"
    other.mkdir()
    (other / WORLD_FILE).write_text(json.dumps({"dataset": "world-nsd", "version": "v1-tiny", "config": {}}))
    with pytest.raises(DataFormatError, match="holds world-nsd v1-tiny"):
        generate_world_god(other, "tiny", progress=False)
    assert sorted(os.listdir(other)) == [WORLD_FILE]


def test_write_god_subject_rejects_bad_input(tmp_path):
    blocks = GodBlocks(
        *(np.ones(3, dtype=np.int64) for _ in range(3)), np.ones(3), np.zeros(3, dtype=np.int64)
    )
    xyz = np.zeros((2, 3))
    with pytest.raises(ValueError, match="do not agree"):
        write_god_subject(tmp_path, 1, blocks, GodVoxels(np.zeros((4, 2)), xyz, {}))
    with pytest.raises(ValueError, match="NaN or inf"):
        write_god_subject(tmp_path, 1, blocks, GodVoxels(np.full((3, 2), np.nan), xyz, {}))
    with pytest.raises(ValueError, match="unknown ROI names"):
        write_god_subject(tmp_path, 1, blocks, GodVoxels(np.zeros((3, 2)), xyz, {"IT": np.ones(2, bool)}))
    assert list(tmp_path.iterdir()) == []
