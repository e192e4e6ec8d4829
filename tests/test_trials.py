"""Single-trial retrieval against distinct stimuli: hand cases, repeats, ties, batching."""

from __future__ import annotations

import pytest
import torch

from brainbench.metrics.trials import SingleTrialRetrieval, distinct_stimulus_accuracy


def test_hand_computed_with_repeated_stimuli() -> None:
    # Stimulus 7 is shown twice, 9 once. Trial 0 points at 7 (right), 1 at 9 (wrong), 2 at 9 (right).
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pred = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    assert distinct_stimulus_accuracy(pred, target, torch.tensor([7, 7, 9])).item() == pytest.approx(2 / 3)


def test_perfect_predictions_score_one_despite_repeats() -> None:
    """Against every row, repeats would tie with themselves; against distinct stimuli they do not."""
    base = torch.randn(4, 3, 5)
    ids = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
    target = base[ids]
    assert distinct_stimulus_accuracy(target * 2.0, target, ids).item() == 1.0


def test_a_tie_between_stimuli_counts_as_wrong() -> None:
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pred = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # trial 0 is equally close to both stimuli
    assert distinct_stimulus_accuracy(pred, target, torch.tensor([0, 1])).item() == pytest.approx(0.5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="differ in rows"):
        distinct_stimulus_accuracy(torch.ones(3, 2), torch.ones(2, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="two distinct"):
        distinct_stimulus_accuracy(torch.ones(2, 2), torch.ones(2, 2), torch.tensor([5, 5]))


def test_metric_accumulates_batches_like_one_call() -> None:
    torch.manual_seed(0)
    ids = torch.randint(0, 6, (20,))
    target = torch.randn(6, 4)[ids]
    pred = target + 0.8 * torch.randn(20, 4)
    metric = SingleTrialRetrieval()
    for start in range(0, 20, 7):
        metric.update(pred[start : start + 7], target[start : start + 7], ids[start : start + 7])
    assert metric.compute().item() == pytest.approx(distinct_stimulus_accuracy(pred, target, ids).item())
