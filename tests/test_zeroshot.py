"""Zero-shot classification: hand-computed cases, ties, top-k, and the evaluator columns."""

from __future__ import annotations

import pytest
import torch

from brainbench.errors import ConfigError
from brainbench.eval.evaluator import evaluate
from brainbench.metrics.zeroshot import ZeroShotTask, zero_shot_accuracy

CLASSES = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_hand_computed_top1_and_top2() -> None:
    # Row 0 is closest to class 0 (correct); row 1 to class 0 but labelled 1, second best is class 1;
    # row 2 is closest to class 1 then class 0, labelled 2 (wrong at top-1 and top-2).
    pred = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.0], [0.4, 0.9, 0.1]])
    labels = torch.tensor([0, 1, 2])
    assert zero_shot_accuracy(pred, CLASSES, labels).item() == pytest.approx(1 / 3)
    assert zero_shot_accuracy(pred, CLASSES, labels, top_k=2).item() == pytest.approx(2 / 3)


def test_scale_invariant_and_ties_count_as_wrong() -> None:
    labels = torch.tensor([0, 1])
    pred = torch.tensor([[5.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # row 1 ties classes 0 and 1
    assert zero_shot_accuracy(pred, CLASSES, labels).item() == pytest.approx(0.5)
    assert zero_shot_accuracy(pred * 7, CLASSES * 3, labels).item() == pytest.approx(0.5)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="class indices"):
        zero_shot_accuracy(torch.ones(2, 3), CLASSES, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="top_k"):
        zero_shot_accuracy(torch.ones(2, 3), CLASSES, torch.tensor([0, 1]), top_k=3)
    with pytest.raises(ValueError, match="expected"):
        zero_shot_accuracy(torch.ones(2, 4), CLASSES, torch.tensor([0, 1]))


def _task(labels: list[int], cls_token_is_pooled: bool = True) -> ZeroShotTask:
    return ZeroShotTask(CLASSES, torch.tensor(labels), "a photo of a {}.", "test", cls_token_is_pooled)


def test_evaluator_names_the_embedding_it_used() -> None:
    tokens = torch.zeros(3, 4, 3)
    tokens[:, 0] = CLASSES  # the CLS token points at the right class
    result = evaluate(
        {"clip_tokens": tokens}, {"clip_tokens": tokens}, "net", pool=3, zero_shot=_task([0, 1, 2])
    )
    key = "zeroshot_top1_3way/net.clip_tokens_cls@v1"
    assert result.values[key] == 1.0
    assert result.chance[key] == pytest.approx(1 / 3)
    image = {"clip_image": CLASSES.flip(0)}  # every row points at the wrong class but the middle one
    result = evaluate(image, image, "net", pool=3, zero_shot=_task([0, 1, 2]))
    assert result.values["zeroshot_top1_3way/net.clip_image@v1"] == pytest.approx(1 / 3)


def test_tokens_without_a_pooled_cls_are_not_scored_silently() -> None:
    tokens = torch.randn(3, 4, 3)
    with pytest.raises(ConfigError, match="pooled image embedding"):
        evaluate(
            {"clip_tokens": tokens}, {"clip_tokens": tokens}, "net", pool=3, zero_shot=_task([0, 1, 2], False)
        )


def test_svc_variant_separates_well_separated_classes() -> None:
    """BraVL's SVC protocol: fitted on several samples per class, then scoring the brain predictions."""
    from brainbench.metrics.zeroshot import svc_zero_shot_accuracy

    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=-1)
    samples = (centres[:, None] + 0.05 * torch.randn(6, 5, 16, generator=generator)).reshape(30, 16)
    sample_labels = torch.arange(6).repeat_interleave(5)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    own = centres + 0.05 * torch.randn(6, 16, generator=generator)
    assert svc_zero_shot_accuracy(own, samples, sample_labels, labels).item() == 1.0
    wrong = centres.roll(1, dims=0)  # every prediction points at the next class
    assert svc_zero_shot_accuracy(wrong, samples, sample_labels, labels).item() == 0.0
    assert svc_zero_shot_accuracy(own, samples, sample_labels, labels, top_k=5).item() == 1.0
