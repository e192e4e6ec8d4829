import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from brainbench.data.manifest import Manifest
from brainbench.data.shards import (
    Sample,
    decode_sample,
    encode_sample,
    iter_samples,
    iter_split,
    sha256_file,
    verify_checksums,
    write_split,
)
from brainbench.data.stimulus_store import StimulusStore, write_stimulus_store
from brainbench.errors import DataFormatError, MissingFileError

V = 7


def make_samples(split: str, n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        repeats = rng.normal(size=(3, V)).astype(np.float16) if split == "test" else None
        voxels = repeats.astype(np.float32).mean(0) if repeats is not None else rng.normal(size=V)
        samples.append(
            Sample(
                key=f"subj01_{split}{i:04d}",
                subject=1,
                split=split,
                stim_id=100 + i,
                voxels=voxels.astype(np.float16),
                repeats=repeats,
                session=1 + i // 4,
                trial=10 * i,
                n_repeats=3 if split == "test" else 1,
            )
        )
    return samples


def assert_same(a: Sample, b: Sample) -> None:
    assert (a.key, a.subject, a.split, a.stim_id, a.session, a.trial, a.n_repeats) == (
        b.key,
        b.subject,
        b.split,
        b.stim_id,
        b.session,
        b.trial,
        b.n_repeats,
    )
    assert b.voxels.dtype == np.float16
    np.testing.assert_array_equal(a.voxels, b.voxels)
    if a.repeats is None:
        assert b.repeats is None
    else:
        np.testing.assert_array_equal(a.repeats, b.repeats)


@pytest.mark.parametrize("split", ["train", "test"])
def test_round_trip(tmp_path, split):
    samples = make_samples(split, 11)
    infos = write_split(samples, tmp_path, split, samples_per_shard=4)
    assert [i["n_samples"] for i in infos] == [4, 4, 3]
    assert [i["path"] for i in infos] == [f"{split}-00000{k}.tar" for k in range(3)]
    assert all(i["sha256"] == sha256_file(tmp_path / i["path"]) for i in infos)
    assert not list(tmp_path.glob(".*partial*"))
    decoded = list(iter_samples([tmp_path / i["path"] for i in infos]))
    assert len(decoded) == 11
    for a, b in zip(samples, decoded, strict=True):
        assert_same(a, b)
    # only the documented members are written
    with tarfile.open(tmp_path / infos[0]["path"]) as tar:
        names = tar.getnames()
    members = {n.split(".", 1)[1] for n in names}
    assert members == (
        {"voxels.npy", "meta.json", "repeats.npy"} if split == "test" else {"voxels.npy", "meta.json"}
    )


def test_shards_are_reproducible(tmp_path):
    a = write_split(make_samples("train", 5), tmp_path / "a", "train", 10)
    b = write_split(make_samples("train", 5), tmp_path / "b", "train", 10)
    assert a[0]["sha256"] == b[0]["sha256"]


def test_plain_webdataset_yields_decodable_raw_dicts(tmp_path):
    infos = write_split(make_samples("test", 3), tmp_path, "test", 10)
    dataset = wds.WebDataset(str(tmp_path / infos[0]["path"]), shardshuffle=False)
    raw = next(iter(dataset))
    assert set(raw) >= {"__key__", "__url__", "voxels.npy", "meta.json", "repeats.npy"}
    assert decode_sample(raw).n_repeats == 3


def test_bad_keys_and_splits_are_rejected(tmp_path):
    sample = make_samples("train", 1)[0]
    with pytest.raises(ValueError, match="without dots"):
        encode_sample(replace(sample, key="a.b"))
    with pytest.raises(ValueError, match="split"):
        encode_sample(replace(sample, split="holdout"))
    with pytest.raises(ValueError, match="repeats"):
        encode_sample(replace(sample, split="test", repeats=None))


def write_raw_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_pickle_member_is_refused(tmp_path):
    members = encode_sample(make_samples("train", 1)[0])
    key = members.pop("__key__")
    tar_members = {f"{key}.{k}": v for k, v in members.items()}
    tar_members[f"{key}.x.pyd"] = b"\x80\x04K\x01."  # a pickle; it must never be loaded
    shard = tmp_path / "evil-000000.tar"
    write_raw_tar(shard, tar_members)
    with pytest.raises(DataFormatError, match=r"evil-000000\.tar.*refusing to unpickle 'x\.pyd'"):
        list(iter_samples([shard]))


def test_unknown_and_missing_members(tmp_path):
    raw = encode_sample(make_samples("train", 1)[0]) | {"__url__": "s.tar"}
    with pytest.raises(DataFormatError, match="unexpected member.*extra.txt"):
        decode_sample(raw | {"extra.txt": b"hi"})
    without_meta = {k: v for k, v in raw.items() if k != "meta.json"}
    with pytest.raises(DataFormatError, match=r"s\.tar.*lacks member.*meta\.json"):
        decode_sample(without_meta)
    test_raw = encode_sample(make_samples("test", 1)[0]) | {"__url__": "t.tar"}
    del test_raw["repeats.npy"]
    with pytest.raises(DataFormatError, match="repeats.npy"):
        decode_sample(test_raw)


def test_object_npy_is_refused():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    raw = encode_sample(make_samples("train", 1)[0]) | {"__url__": "o.tar", "voxels.npy": buffer.getvalue()}
    with pytest.raises(DataFormatError, match=r"o\.tar.*voxels\.npy.*not a plain numeric"):
        decode_sample(raw)


@pytest.mark.parametrize("cut", [2560 + 10, 2048 + 10, 1024 + 100])
def test_truncated_shard_names_the_file(tmp_path, cut):
    # per test sample: meta.json (header at 0, data at 512), repeats.npy (1024, 1536), voxels.npy (2048, 2560)
    infos = write_split(make_samples("test", 6), tmp_path, "test", 10)
    shard = tmp_path / infos[0]["path"]
    with tarfile.open(shard) as tar:
        assert [(m.offset, m.offset_data) for m in tar.getmembers()[:3]] == [
            (0, 512),
            (1024, 1536),
            (2048, 2560),
        ]
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(DataFormatError, match=r"test-000000\.tar.*truncated"):
        list(iter_samples([shard]))


def test_truncation_at_a_sample_boundary_is_caught_by_the_count(tmp_path):
    manifest = make_manifest(tmp_path)
    shard = tmp_path / manifest.splits["test"]["shards"][0]["path"]
    assert len(list(iter_split(tmp_path, manifest, "test"))) == 3
    shard.write_bytes(shard.read_bytes()[: 2 * 3072])  # exactly two whole samples
    assert len(list(iter_samples([shard]))) == 2  # tarfile reads this as a valid, shorter archive
    with pytest.raises(DataFormatError, match=r"test-000000\.tar: holds 2 samples, the manifest says 3"):
        list(iter_split(tmp_path, manifest, "test"))


def test_corrupt_shard_names_the_file(tmp_path):
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(b"garbage" * 100)
    with pytest.raises(DataFormatError, match=r"train-000000\.tar.*truncated or corrupt"):
        list(iter_samples([shard]))


def test_missing_shard_names_the_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"nothere\.tar"):
        list(iter_samples([tmp_path / "nothere.tar"]))


def make_manifest(tmp_path: Path) -> Manifest:
    splits = {}
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        infos = write_split(make_samples(split, n), tmp_path, split, 4)
        splits[split] = {"n_samples": n, "shards": infos}
    stim_ids = list(range(100, 105))
    images = np.zeros((5, 4, 4, 3), np.uint8)
    write_stimulus_store(tmp_path / "stimuli.hdf5", stim_ids, images, [["c"]] * 5, [["k"]] * 5)
    return Manifest(
        dataset="toy",
        dataset_version="0",
        subject=1,
        n_voxels=V,
        voxel_order="test",
        voxel_ijk=[[0, 0, i] for i in range(V)],
        rois={"toy/all": list(range(V))},
        normalisation={},
        split_name="toy",
        splits=splits,
        stimulus_store={
            "path": "stimuli.hdf5",
            "sha256": sha256_file(tmp_path / "stimuli.hdf5"),
            "n_stimuli": 5,
        },
        source={"root": "/nowhere", "adapter": "test", "adapter_version": "0"},
        created="2026-01-01T00:00:00+00:00",
    )


def test_checksums(tmp_path):
    manifest = make_manifest(tmp_path)
    manifest.save(tmp_path / "manifest.json")
    loaded = Manifest.load(tmp_path)
    assert loaded == manifest
    verify_checksums(tmp_path, loaded)
    shard = tmp_path / manifest.splits["train"]["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(
        DataFormatError,
        match=r"train-000001\.tar.*sha256 mismatch(.|\n)*fix: brainbench prepare test --root .* --overwrite",
    ):
        verify_checksums(tmp_path, loaded)
    shard.unlink()
    with pytest.raises(
        DataFormatError, match=r"train-000001\.tar.*missing(.|\n)*fix: brainbench prepare test"
    ):
        verify_checksums(tmp_path, loaded)


def test_manifest_validation(tmp_path):
    manifest = make_manifest(tmp_path)
    manifest.save(tmp_path / "manifest.json")
    raw = json.loads((tmp_path / "manifest.json").read_text())
    for field in ("split_name", "splits", "voxel_ijk"):
        broken = {k: v for k, v in raw.items() if k != field}
        (tmp_path / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(DataFormatError, match=rf"manifest\.json.*'{field}' is missing"):
            Manifest.load(tmp_path / "manifest.json")
    raw["rois"]["toy/all"].append(V)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataFormatError, match="ROI 'toy/all'"):
        Manifest.load(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        Manifest.load(tmp_path / "manifest.json")
    with pytest.raises(MissingFileError):
        Manifest.load(tmp_path / "absent.json")


def test_stimulus_store_unpermutes(tmp_path):
    rng = np.random.default_rng(0)
    ids = np.array([50, 7, 33, 12])
    images = rng.integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    captions = [[f"c{i}", "é"] for i in ids]
    categories = [[f"k{i}"] for i in ids]
    write_stimulus_store(tmp_path / "s.hdf5", ids, images, captions, categories)
    store = StimulusStore(tmp_path / "s.hdf5")
    assert len(store) == 4
    np.testing.assert_array_equal(store.stim_ids, [7, 12, 33, 50])
    query = [33, 7, 33, 50]  # unsorted with a duplicate (trap 16)
    expected = np.stack([images[list(ids).index(q)] for q in query])
    np.testing.assert_array_equal(store.images(query), expected)
    assert store.captions(50) == ["c50", "é"]
    assert store.categories(12) == ["k12"]
    assert 12 in store and 13 not in store
    with pytest.raises(KeyError, match="13"):
        store.images([13])
    store.close()


def test_interrupted_write_leaves_only_whole_shards(tmp_path):
    def samples():
        yield from make_samples("train", 6)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_split(samples(), tmp_path, "train", samples_per_shard=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]
    assert len(list(iter_samples([tmp_path / "train-000000.tar"]))) == 4
