"""FMRIDataModule and FeatureCache on the generated NSD fixture (8x8 images, resized by the backbone).

The prepared directory comes from ``tests/data/nsd/make_fixture.py`` through the real adapter
(:func:`prepare_nsd`); targets come from the randomly initialised world CLIP (``world-clip:random``).
"""

import importlib.util
import io
import os
import shutil
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from brainbench.backbones.openclip import load_backbone
from brainbench.data import datamodule as datamodule_module
from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.feature_cache import FeatureCache, cache_dir_for
from brainbench.data.in_memory import InMemoryTrainingSet
from brainbench.data.shards import iter_split
from brainbench.data.sources.nsd import prepare_nsd
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import ConfigError, DataFormatError

_spec = importlib.util.spec_from_file_location(
    "nsd_make_fixture", Path(__file__).parent / "data/nsd/make_fixture.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

pytestmark = pytest.mark.filterwarnings(r"ignore:.*with_length\(\) only sets the value:UserWarning")

BACKBONE = "world-clip:random"
TARGETS = ("clip_tokens", "clip_image")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd") / "root"
    fx.make_fixture(root)
    out = tmp_path_factory.mktemp("prepared") / "nsd.subj01"
    manifest = prepare_nsd(root, 1, out, val_fraction=0.2, samples_per_shard=5, progress=False)
    torch.manual_seed(0)
    backbone = load_backbone(BACKBONE)
    store = manifest.stimulus_store
    FeatureCache.build(out, out / store["path"], store["sha256"], backbone, names=TARGETS, progress=False)
    samples = {split: list(iter_split(out, manifest, split)) for split in ("train", "val", "test")}
    return {"dir": out, "manifest": manifest, "backbone": backbone, "samples": samples}


def make_datamodule(directory, **kwargs):
    options = {"backbone": BACKBONE, "targets": TARGETS, "batch_size": 4, "shuffle_buffer": 8} | kwargs
    return FMRIDataModule(directory, **options)


@pytest.fixture(scope="module")
def datamodule(prepared):
    dm = make_datamodule(prepared["dir"])
    dm.prepare_data()
    dm.setup("fit")
    return dm


def copy_prepared(prepared, tmp_path):
    target = tmp_path / "prepared"
    shutil.copytree(prepared["dir"], target)
    return target


def sample_keys(items):
    return Counter((int(s), v.astype(np.float32).tobytes()) for s, v in items)


def loader_items(loader):
    items = []
    for batch in loader:
        items += list(zip(batch["stim_id"].tolist(), batch["voxels"].numpy(), strict=True))
    return items


def test_sizes_and_target_shapes(datamodule, prepared):
    manifest = prepared["manifest"]
    assert datamodule.n_voxels == manifest.n_voxels == int((fx._rois()[0] == 1).sum())
    assert datamodule.target_shapes() == {"clip_tokens": (65, 128), "clip_image": (128,)}
    assert {s: datamodule.split_size(s) for s in ("train", "val", "test")} == {
        "train": 14,
        "val": 4,
        "test": 6,
    }


def test_batch_keys_shapes_and_dtypes(datamodule):
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"voxels", "stim_id", "subject", *TARGETS}
    assert batch["voxels"].shape == (4, datamodule.n_voxels) and batch["voxels"].dtype == torch.float32
    assert batch["stim_id"].shape == batch["subject"].shape == (4,)
    assert batch["stim_id"].dtype == batch["subject"].dtype == torch.int64
    assert (batch["subject"] == 1).all()
    assert batch["clip_tokens"].shape == (4, 65, 128) and batch["clip_tokens"].dtype == torch.float32
    assert batch["clip_image"].shape == (4, 128) and batch["clip_image"].dtype == torch.float32


def test_targets_are_the_backbone_features_of_the_right_images(datamodule, prepared):
    batch = next(iter(datamodule.val_dataloader()))
    manifest, directory = prepared["manifest"], prepared["dir"]
    with StimulusStore(directory / manifest.stimulus_store["path"]) as store:
        images = torch.from_numpy(store.images(batch["stim_id"].numpy()))
    assert images.shape[1:] == (8, 8, 3)  # the fixture's images, resized by the backbone
    expected = prepared["backbone"].forward_features(images)
    for name in TARGETS:  # the cache stores float16
        torch.testing.assert_close(batch[name], expected[name], atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("in_memory", [True, False])
def test_train_covers_every_sample_once_per_epoch(prepared, in_memory):
    dm = make_datamodule(prepared["dir"], in_memory=in_memory)
    expected = sample_keys((s.stim_id, s.voxels) for s in prepared["samples"]["train"])
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, InMemoryTrainingSet) == in_memory
    assert len(loader) == -(-14 // 4)
    first, second = loader_items(loader), loader_items(loader)
    assert sample_keys(first) == sample_keys(second) == expected
    manifest_order = [s.stim_id for s in prepared["samples"]["train"]]
    assert [s for s, _ in first] != manifest_order  # shuffled
    assert [s for s, _ in first] != [s for s, _ in second]  # a new order each epoch


def test_training_split_is_kept_in_memory_when_small(prepared, monkeypatch):
    assert isinstance(make_datamodule(prepared["dir"]).train_dataloader().dataset, InMemoryTrainingSet)
    monkeypatch.setattr(FMRIDataModule, "IN_MEMORY_LIMIT_BYTES", 100)
    assert not isinstance(make_datamodule(prepared["dir"]).train_dataloader().dataset, InMemoryTrainingSet)


def test_in_memory_batches_match_the_streamed_ones(datamodule, prepared):
    memory = make_datamodule(prepared["dir"], in_memory=True)
    batch = next(iter(memory.train_dataloader()))
    streamed = {
        int(s): v
        for b in datamodule.train_dataloader()
        for s, v in zip(b["stim_id"], b["clip_tokens"], strict=True)
    }
    assert set(batch) == {"voxels", "stim_id", "subject", *TARGETS}
    assert batch["voxels"].dtype == torch.float32 and batch["stim_id"].dtype == torch.int64
    for stim_id, tokens in zip(batch["stim_id"].tolist(), batch["clip_tokens"], strict=True):
        torch.testing.assert_close(tokens, streamed[stim_id])


def test_in_memory_epochs_split_across_ranks_and_resume_in_order():
    n, voxels = 11, torch.arange(11.0)[:, None]
    ids = torch.arange(11)

    def dataset(rank=0, world_size=1, epoch=lambda: None):
        return InMemoryTrainingSet(
            voxels,
            ids,
            torch.ones(n, dtype=torch.int64),
            lambda s: {"x": s * 2},
            3,
            7,
            epoch,
            rank,
            world_size,
        )

    def epoch_ids(ds):
        batches = list(ds)
        assert all((b["x"] == 2 * b["stim_id"]).all() for b in batches)
        return [i for b in batches for i in b["stim_id"].tolist()]

    ranks = [dataset(r, 2) for r in range(2)]
    assert [len(r) for r in ranks] == [2, 2]  # 11 // 2 = 5 trials -> 2 batches on each rank
    for _ in range(3):
        seen = [epoch_ids(r) for r in ranks]
        assert len(seen[0]) == len(seen[1]) == 5 and not set(seen[0]) & set(seen[1])
    single = dataset()
    passes = [epoch_ids(single) for _ in range(4)]
    assert all(sorted(p) == ids.tolist() for p in passes) and passes[0] != passes[1]
    assert epoch_ids(dataset(epoch=lambda: 3)) == passes[3]  # a resumed run continues the trainer's epoch


def test_single_trial_val_is_in_manifest_order(prepared):
    dm = make_datamodule(prepared["dir"], val_average=False)
    items = loader_items(dm.val_dataloader())
    samples = prepared["samples"]["val"]
    assert [s for s, _ in items] == [s.stim_id for s in samples]
    for (_, voxels), sample in zip(items, samples, strict=True):
        np.testing.assert_array_equal(voxels, sample.voxels.astype(np.float32))


def test_val_is_one_repeat_average_per_stimulus(datamodule, prepared):
    trials: dict[int, list[np.ndarray]] = {}
    for sample in prepared["samples"]["val"]:
        trials.setdefault(sample.stim_id, []).append(sample.voxels.astype(np.float32))
    assert any(len(v) > 1 for v in trials.values())  # the fixture repeats validation images
    items = loader_items(datamodule.val_dataloader())
    assert [s for s, _ in items] == sorted(trials)
    for stim_id, voxels in items:
        np.testing.assert_allclose(voxels, np.mean(trials[stim_id], axis=0), rtol=1e-6, atol=1e-6)


def test_averaged_val_is_split_across_processes_without_overlap(prepared):
    class FakeTrainer:
        world_size = 2

        def __init__(self, rank):
            self.global_rank = rank

    seen = []
    for rank in (0, 1):
        dm = make_datamodule(prepared["dir"])
        dm.trainer = FakeTrainer(rank)
        seen.append([s for s, _ in loader_items(dm.val_dataloader())])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted({s.stim_id for s in prepared["samples"]["val"]})


def test_test_batches_are_the_repeat_averages(datamodule, prepared):
    items = loader_items(datamodule.test_dataloader())
    samples = prepared["samples"]["test"]
    assert sorted(s for s, _ in items) == sorted(fx.SHARED_IDS.tolist())
    for (stim_id, voxels), sample in zip(items, samples, strict=True):
        assert stim_id == sample.stim_id and sample.n_repeats == 3
        np.testing.assert_array_equal(voxels, sample.voxels.astype(np.float32))
        np.testing.assert_allclose(voxels, sample.repeats.astype(np.float32).mean(0), atol=2e-2, rtol=2e-3)
    predict = loader_items(datamodule.predict_dataloader())
    assert [s for s, _ in predict] == [s for s, _ in items]


def test_feature_cache_is_reused(prepared, monkeypatch):
    directory = cache_dir_for(prepared["dir"], BACKBONE)
    mtimes = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}

    def no_backbone(backbone_id):
        raise AssertionError(f"{backbone_id} was loaded although its features are cached")

    monkeypatch.setattr(datamodule_module, "load_backbone", no_backbone)
    make_datamodule(prepared["dir"]).prepare_data()
    make_datamodule(prepared["dir"], targets=("clip_image",)).prepare_data()  # a subset is reused too
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == mtimes


def test_feature_cache_is_rebuilt_when_the_store_changes(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    manifest = prepared["manifest"]
    store = manifest.stimulus_store
    cache_dir = cache_dir_for(directory, BACKBONE)
    before = (cache_dir / "clip_image.npy").stat().st_mtime_ns
    time.sleep(0.01)
    cache = FeatureCache.build(
        directory, directory / store["path"], "f" * 64, prepared["backbone"], names=TARGETS, progress=False
    )
    assert cache.record["store_sha256"] == "f" * 64
    assert (cache_dir / "clip_image.npy").stat().st_mtime_ns != before
    np.testing.assert_array_equal(cache.stim_ids, np.sort(cache.stim_ids))
    assert not cache_dir.with_name(cache_dir.name + ".tmp").exists()


def test_feature_cache_is_rebuilt_when_the_weights_change(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    store = prepared["manifest"].stimulus_store
    cache_dir = cache_dir_for(directory, BACKBONE)
    args = (directory, directory / store["path"], store["sha256"], prepared["backbone"])
    first = FeatureCache.build(*args, names=TARGETS, progress=False, weights_sha256="a" * 64)
    assert first.record["weights_sha256"] == "a" * 64
    assert FeatureCache.is_current(cache_dir, store["sha256"], TARGETS, "a" * 64)
    assert FeatureCache.is_current(cache_dir, store["sha256"], TARGETS)  # unknown weights: the store decides
    assert not FeatureCache.is_current(cache_dir, store["sha256"], TARGETS, "b" * 64)
    again = FeatureCache.build(*args, names=TARGETS, progress=False, weights_sha256="b" * 64)
    assert again.record["weights_sha256"] == "b" * 64


def test_shipped_world_clips_have_a_weights_checksum():
    from brainbench.backbones.openclip import weights_sha256
    from brainbench.backbones.world_clip import WEIGHTS_FILE, sha256_file, world_clip_dir

    assert weights_sha256("world-clip:v1") == sha256_file(world_clip_dir("v1") / WEIGHTS_FILE)
    assert weights_sha256("world-clip:random") is None
    assert weights_sha256("ViT-B-32:openai") is None


def test_feature_cache_lookup_errors(datamodule):
    cache = datamodule.cache
    with pytest.raises(DataFormatError, match=r"stim ids \[39\] not in the cache"):
        cache.lookup(np.array([int(cache.stim_ids[0]), 39]))
    with pytest.raises(ConfigError, match=r"has \['clip_tokens', 'clip_image'\], not \['layer:2'\]"):
        FeatureCache(cache.directory, ["layer:2"])


def _flip_bytes(path, offset, n=16):
    data = bytearray(path.read_bytes())
    for k in range(offset, offset + n):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _middle_sample_members(path):
    """Tar members of the middle sample of a shard (first member first)."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m in members))
    middle = keys[len(keys) // 2]
    return [m for m in members if m.name.split(".", 1)[0] == middle]


def test_corrupt_shard_is_reported_at_setup(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    shard = directory / "train-000001.tar"
    _flip_bytes(shard, shard.stat().st_size // 2)
    dm = make_datamodule(directory)
    with pytest.raises(DataFormatError, match=r"train-000001\.tar: sha256 mismatch"):
        dm.setup("fit")


@pytest.mark.parametrize("where", ["member header", "npy header", "json payload"])
def test_corrupt_shard_without_verify_fails_on_read(prepared, tmp_path, where):
    # A damaged header of a sample's first member makes tarfile end the archive there: without a
    # per-shard count check the shard silently loses its remaining samples.
    directory = copy_prepared(prepared, tmp_path)
    shard = directory / "train-000001.tar"
    members = {m.name.split(".", 1)[1]: m for m in _middle_sample_members(shard)}
    offset = {
        "member header": min(m.offset for m in members.values()) + 20,
        "npy header": members["voxels.npy"].offset_data + 10,
        "json payload": members["meta.json"].offset_data + 2,
    }[where]
    _flip_bytes(shard, offset)
    for in_memory in (True, False):
        dm = make_datamodule(directory, verify=False, in_memory=in_memory)
        dm.setup("fit")
        with pytest.raises(DataFormatError, match=r"train-000001\.tar"):
            loader_items(dm.train_dataloader())


def test_missing_cache_is_reported(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    shutil.rmtree(directory / "features")
    with pytest.raises(DataFormatError, match=r"no feature cache here(.|\n)*FeatureCache.build"):
        make_datamodule(directory).setup("fit")


def test_paths_in_the_cache_record(prepared):
    record = FeatureCache(cache_dir_for(prepared["dir"], BACKBONE), TARGETS).record
    assert record["backbone"] == BACKBONE
    assert record["store_sha256"] == prepared["manifest"].stimulus_store["sha256"]
    assert record["dtype"] == "float16" and record["n_stimuli"] == 16
    assert cache_dir_for(prepared["dir"], "ViT-L-14:/weights/x.pt").name == "ViT-L-14_weights_x.pt"
    assert os.sep not in cache_dir_for(prepared["dir"], BACKBONE).name


def _served(directory):
    """An HTTP server on localhost serving ``directory`` (a thread; shut down by the caller)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("scheme", ["pipe", "http"])
def test_streamed_shards_give_the_same_samples(datamodule, prepared, scheme):
    directory = prepared["dir"]
    server = _served(directory) if scheme == "http" else None
    try:
        url = f"http://127.0.0.1:{server.server_port}" if server else f"pipe:cat {directory}/{{path}}"
        streamed = make_datamodule(directory, shard_url=url)
        streamed.setup("fit")
        assert streamed.shard_urls("val")[0].startswith("http://" if server else "pipe:cat ")
        for loader in ("val_dataloader", "test_dataloader"):
            got = loader_items(getattr(streamed, loader)())
            want = loader_items(getattr(datamodule, loader)())
            assert [s for s, _ in got] == [s for s, _ in want]
            for (_, a), (_, b) in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
        train = sample_keys(loader_items(streamed.train_dataloader()))
        assert train == sample_keys((s.stim_id, s.voxels) for s in prepared["samples"]["train"])
    finally:
        if server:
            server.shutdown()


def test_streamed_truncated_shard_is_reported(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    shard = directory / prepared["manifest"].splits["val"]["shards"][0]["path"]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:  # drop the last sample (its 2 members)
        for member, data in members[:-2]:
            tar.addfile(member, io.BytesIO(data))
    streamed = make_datamodule(directory, shard_url=f"pipe:cat {directory}/{{path}}")
    with pytest.raises(DataFormatError, match="the manifest says"):
        loader_items(streamed.val_dataloader())


def test_text_targets_come_from_the_cache(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    dm = make_datamodule(directory, targets=("clip_image", "clip_text", "clip_captions", "clip_class_text"))
    torch.manual_seed(0)  # the random-weight backbone the cache is rebuilt with, and the one compared to
    dm.prepare_data(progress=False)
    torch.manual_seed(0)
    backbone = load_backbone(BACKBONE)
    shapes = dm.target_shapes()
    dim = shapes["clip_image"][0]
    assert shapes["clip_text"] == (dim,) and shapes["clip_class_text"] == (dim,)
    assert shapes["clip_captions"][1] == dim
    batch = next(iter(dm.train_dataloader()))
    with StimulusStore(directory / prepared["manifest"].stimulus_store["path"]) as store:
        captions = store.captions(int(batch["stim_id"][0]))
    expected = torch.nn.functional.normalize(backbone.encode_text(captions), dim=-1).mean(0)
    torch.testing.assert_close(
        batch["clip_text"][0], torch.nn.functional.normalize(expected, dim=0), atol=2e-3, rtol=0
    )


def test_train_sessions_keeps_only_the_first_sessions(prepared):
    samples = prepared["samples"]["train"]
    kept = [s for s in samples if s.session <= 1]
    assert 0 < len(kept) < len(samples)
    for in_memory in (True, False):
        dm = make_datamodule(prepared["dir"], train_sessions=1, in_memory=in_memory)
        assert dm.split_size("train") == len(kept)
        seen = loader_items(dm.train_dataloader())
        assert sample_keys(seen) == sample_keys([(s.stim_id, s.voxels) for s in kept])
    with pytest.raises(ConfigError, match="train_sessions must be a positive"):
        make_datamodule(prepared["dir"], train_sessions=0)


def test_pixel_targets_are_the_resized_stimuli(prepared, tmp_path):
    directory = copy_prepared(prepared, tmp_path)
    dm = make_datamodule(directory, targets=("clip_image", "pixels:4"))
    dm.prepare_data(progress=False)
    assert dm.target_shapes()["pixels:4"] == (3, 4, 4)
    batch = next(iter(dm.test_dataloader()))
    with StimulusStore(directory / prepared["manifest"].stimulus_store["path"]) as store:
        image = torch.from_numpy(store.images([int(batch["stim_id"][0])])).permute(0, 3, 1, 2).float() / 255
    expected = torch.nn.functional.interpolate(image, size=(4, 4), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(batch["pixels:4"][0], expected, atol=1e-3, rtol=0)  # float16 storage
    with pytest.raises(ConfigError, match="must look like pixels:<pixels>"):
        make_datamodule(directory, targets=("pixels:big",)).prepare_data(progress=False)


def test_a_closed_form_method_sums_every_sample_once_across_ranks():
    """``every_sample_once``: 11 trials on 2 ranks are 6 + 5, every trial on exactly one rank, every epoch."""
    n = 11
    ranks = [
        InMemoryTrainingSet(
            torch.arange(float(n))[:, None],
            torch.arange(n),
            torch.ones(n, dtype=torch.int64),
            lambda s: {},
            4,
            7,
            rank=rank,
            world_size=2,
            every_sample_once=True,
        )
        for rank in range(2)
    ]
    assert [r.samples_per_rank() for r in ranks] == [6, 5] and [len(r) for r in ranks] == [2, 2]
    for _ in range(2):
        seen = [[i for b in r for i in b["stim_id"].tolist()] for r in ranks]
        assert sorted(seen[0] + seen[1]) == list(range(n))
