import h5py
import numpy as np
import pytest

from brainbench.data.stimulus_store import StimulusStore, write_stimulus_store
from brainbench.errors import DataFormatError


def clips(n, n_frames=4, size=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, n_frames, size, size, 3), dtype=np.uint8)


def labels(n):
    return [[f"clip {i}"] for i in range(n)], [[] for _ in range(n)]


def test_frames_array_round_trip_any_order(tmp_path):
    ids = np.array([30, 10, 20])
    frames = clips(3)
    images = frames[:, 1]
    write_stimulus_store(tmp_path / "s.hdf5", ids, images, *labels(3), frames=frames)
    store = StimulusStore(tmp_path / "s.hdf5")
    assert store.has_frames and store.stim_ids.tolist() == [10, 20, 30]
    out = store.frames([20, 30, 20, 10])
    assert out.shape == (4, 4, 6, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, frames[[2, 0, 2, 1]])
    np.testing.assert_array_equal(store.images([30]), images[[0]])
    assert store.captions(30) == ["clip 0"]
    assert store.frames([]).shape == (0, 4, 6, 6, 3)


def test_streamed_batches_and_images_from_the_keyframe(tmp_path):
    frames = clips(5)
    batches = (frames[i : i + 2] for i in range(0, 5, 2))  # a generator: consumed once
    write_stimulus_store(tmp_path / "s.hdf5", np.arange(5), None, *labels(5), frames=batches, keyframe=2)
    store = StimulusStore(tmp_path / "s.hdf5")
    np.testing.assert_array_equal(store.frames(np.arange(5)), frames)
    np.testing.assert_array_equal(store.images(np.arange(5)), frames[:, 2])
    with h5py.File(tmp_path / "s.hdf5") as f:
        assert f["frames"].chunks == (1, 4, 6, 6, 3) and f["frames"].attrs["keyframe"] == 2
        assert f["images"].chunks == (1, 6, 6, 3)


def test_image_stores_are_unchanged(tmp_path):
    images = clips(3)[:, 0]
    write_stimulus_store(tmp_path / "s.hdf5", [1, 2, 3], images, *labels(3))
    store = StimulusStore(tmp_path / "s.hdf5")
    assert not store.has_frames
    np.testing.assert_array_equal(store.images([3, 1]), images[[2, 0]])
    with pytest.raises(DataFormatError, match="holds images only"):
        store.frames([1])
    with h5py.File(tmp_path / "s.hdf5") as f:
        assert set(f) == {"stim_id", "images", "captions", "categories"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": None}, "images=None needs frames and a keyframe"),
        ({"images": None, "frames": clips(3)}, "images=None needs frames and a keyframe"),
        ({"images": None, "frames": clips(3), "keyframe": 4}, "keyframe 4 is outside the 4 frames"),
        ({"frames": clips(2)}, "frames has 2 rows, stim_ids has 3"),
        ({"frames": clips(3)[..., 0]}, r"frames must be uint8 \(n, F, H, W, 3\)"),
        ({"frames": clips(3).astype(np.float32)}, "frames must be uint8"),
        ({"frames": iter([clips(2), clips(1, size=5)])}, "frames batches differ in shape"),
        ({"frames": iter([clips(2)])}, "frames batches hold 2 rows, stim_ids has 3"),
    ],
)
def test_bad_frames_are_refused_and_nothing_is_written(tmp_path, kwargs, message):
    arguments = {"images": clips(3)[:, 0]} | kwargs
    with pytest.raises(ValueError, match=message):
        write_stimulus_store(
            tmp_path / "s.hdf5", [1, 2, 3], captions=labels(3)[0], categories=labels(3)[1], **arguments
        )
    assert list(tmp_path.iterdir()) == []


def test_unsorted_ids_with_frame_batches(tmp_path):
    with pytest.raises(ValueError, match="stim_ids must be sorted when frames are given as batches"):
        write_stimulus_store(
            tmp_path / "s.hdf5", [2, 1], None, *labels(2), frames=iter([clips(2)]), keyframe=0
        )
