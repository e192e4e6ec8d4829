"""Text and pixel targets per stimulus (text_features.py, pixel_features.py) on hand cases."""

from pathlib import Path

import numpy as np
import pytest
import torch

from brainbench.data.pixel_features import pixel_features
from brainbench.data.text_features import CLASS_PROMPT, text_features
from brainbench.errors import DataFormatError


class FakeStore:
    path = Path("stimuli.hdf5")

    def __init__(self, captions, categories):
        self._captions, self._categories = captions, categories

    def captions(self, stim_id):
        return self._captions[stim_id]

    def categories(self, stim_id):
        return self._categories[stim_id]


class FakeBackbone:
    """Embeds a text as a fixed vector per distinct string (so expected values can be written by hand)."""

    def __init__(self, table):
        self.table = table

    def encode_text(self, texts):
        return torch.tensor([self.table[t] for t in texts], dtype=torch.float32)


TABLE = {
    "a": [3.0, 0.0],
    "b": [0.0, 2.0],
    "c": [1.0, 1.0],
    CLASS_PROMPT.format("dog"): [5.0, 5.0],
    CLASS_PROMPT.format("cat"): [-1.0, 0.0],
}


def test_caption_targets_mean_of_unit_captions_and_zero_padding():
    store = FakeStore({7: ["a", "b"], 3: ["c"]}, {7: ["dog"], 3: ["cat", "dog"]})
    out = text_features(store, np.array([7, 3]), FakeBackbone(TABLE), ["clip_text", "clip_captions"])
    # stimulus 7: mean of (1, 0) and (0, 1) -> (1, 1) / sqrt(2); stimulus 3: (1, 1) / sqrt(2)
    np.testing.assert_allclose(out["clip_text"], [[0.70710678, 0.70710678]] * 2, atol=1e-6)
    np.testing.assert_array_equal(out["clip_captions"][0], [[3.0, 0.0], [0.0, 2.0]])
    np.testing.assert_array_equal(out["clip_captions"][1], [[1.0, 1.0], [0.0, 0.0]])  # zero row = padding


def test_class_text_is_the_prompt_of_the_first_category():
    store = FakeStore({}, {7: ["dog"], 3: ["cat", "dog"]})
    out = text_features(store, np.array([3, 7]), FakeBackbone(TABLE), ["clip_class_text"])
    np.testing.assert_array_equal(out["clip_class_text"], [[-1.0, 0.0], [5.0, 5.0]])


def test_missing_captions_or_categories_are_named():
    store = FakeStore({7: ["a"], 3: []}, {7: ["dog"], 3: []})
    with pytest.raises(DataFormatError, match=r"stimuli \[3\] have no captions"):
        text_features(store, np.array([7, 3]), FakeBackbone(TABLE), ["clip_text"])
    with pytest.raises(DataFormatError, match=r"stimuli \[3\] have no category"):
        text_features(store, np.array([7, 3]), FakeBackbone(TABLE), ["clip_class_text"])


class FramesStore:
    def images(self, stim_ids):
        return np.stack([np.full((8, 8, 3), 10 * int(s), dtype=np.uint8) for s in stim_ids])

    def frames(self, stim_ids):
        clip = np.zeros((len(stim_ids), 3, 8, 8, 3), dtype=np.uint8)
        for i, s in enumerate(stim_ids):
            for f in range(3):
                clip[i, f] = 10 * int(s) + f
        return clip


def test_pixel_and_frame_targets_keep_rows_and_frame_order():
    out = pixel_features(FramesStore(), np.array([2, 1]), ["pixels:4", "frames:2"])
    assert out["pixels:4"].shape == (2, 3, 4, 4) and out["pixels:4"].dtype == np.float16
    np.testing.assert_allclose(out["pixels:4"][:, 0, 0, 0], [20 / 255, 10 / 255], rtol=1e-3)
    assert out["frames:2"].shape == (2, 3, 3, 2, 2)
    np.testing.assert_allclose(out["frames:2"][1, :, 0, 0, 0], [10 / 255, 11 / 255, 12 / 255], rtol=1e-3)
