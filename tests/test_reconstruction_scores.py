"""One call scores generated images: pixel chains, feature networks that exist here, absent ones named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainbench.eval.reconstruction import score_outputs


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(6, 1, 1, 3))
    noise = rng.integers(-40, 40, size=(6, 32, 32, 3))
    return torch.from_numpy(np.clip(base + noise, 0, 255).astype(np.uint8))


def test_perfect_reconstructions(images: torch.Tensor) -> None:
    scores = score_outputs({"images": images}, {"images": images})
    assert scores.values["pixcorr@v1"] == pytest.approx(1.0)
    assert scores.values["ssim@v1"] == pytest.approx(1.0)
    assert scores.values["identification_2way/world-clip:v1/clip_image@v1"] == 1.0
    assert any(key.startswith("identification_2way/alexnet") for key in scores.absent)  # not on this machine
    assert all(reason for reason in scores.absent.values())
    assert not set(scores.values) & set(scores.absent)


def test_shuffled_reconstructions_score_lower(images: torch.Tensor) -> None:
    shuffled = images.roll(1, dims=0)
    scores = score_outputs({"images": shuffled}, {"images": images})
    assert scores.values["pixcorr@v1"] < 0.5
    assert scores.values["identification_2way/world-clip:v1/clip_image@v1"] < 1.0


def test_embeddings_only_give_nothing() -> None:
    scores = score_outputs(
        {"clip_image": torch.ones(3, 4)}, {"images": torch.zeros(3, 8, 8, 3, dtype=torch.uint8)}
    )
    assert not scores.values and not scores.absent
