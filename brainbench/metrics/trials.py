r"""Brain->image top-1 of single trials against the distinct stimuli (the validation metric of training).

Validation splits hold single trials, and an image shown 3 times appears 3 times. Scoring every trial against
every *row* would put identical candidates side by side, and with ties counted as wrong (as in
:mod:`brainbench.metrics.retrieval`) no trial could ever be right.
Here each trial's prediction is ranked against
the **distinct** stimuli of the set (one candidate per ``stim_id``), so chance is ``1 / n_stimuli``:

.. math::

    \mathrm{acc} = \frac{1}{N} \sum_i \big[ s(b_i, v_{c(i)}) > s(b_i, v_j) \; \forall j \ne c(i) \big]

with ``s`` the cosine of flattened embeddings and ``c(i)`` the stimulus of trial ``i``.

Example:
    >>> target = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # stimulus 7 twice, stimulus 9 once
    >>> pred = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    >>> float(distinct_stimulus_accuracy(pred, target, torch.tensor([7, 7, 9])))
    0.6666666666666666
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from brainbench.metrics.similarity import PairedRowsMetric


def distinct_stimulus_accuracy(pred: Tensor, target: Tensor, stim_ids: Tensor) -> Tensor:
    """Top-1 of each trial's prediction among the distinct stimuli (ties count as wrong).

    Args:
        pred: ``(N, ...)`` brain predictions, one per trial.
        target: ``(N, ...)`` the target embedding of each trial's stimulus.
        stim_ids: ``(N,)`` stimulus id of each trial; trials of one stimulus share its target.

    Returns:
        0-d float64 accuracy in ``[0, 1]``.

    Raises:
        ValueError: on mismatched rows, or fewer than two distinct stimuli.
    """
    if not pred.shape[0] == target.shape[0] == stim_ids.shape[0]:
        raise ValueError(
            f"pred, target and stim_ids differ in rows: {pred.shape}, {target.shape}, {stim_ids.shape}"
        )
    unique, first, owner = _first_rows(stim_ids)
    if len(unique) < 2:
        raise ValueError("need at least two distinct stimuli to rank")
    trials = F.normalize(pred.flatten(1).double(), dim=-1)
    stimuli = F.normalize(target[first].flatten(1).double(), dim=-1)
    similarity = trials @ stimuli.T  # (N trials, n stimuli)
    own = similarity.gather(1, owner[:, None])
    beaten = (similarity >= own).sum(dim=1) - 1
    return (beaten == 0).double().mean()


def _first_rows(stim_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct ids, the first row of each, and each row's index into the distinct ids."""
    unique, owner = torch.unique(stim_ids, return_inverse=True)
    rows = torch.arange(len(stim_ids), device=stim_ids.device)
    first = torch.full((len(unique),), len(stim_ids), dtype=torch.long, device=stim_ids.device)
    first = first.scatter_reduce(0, owner, rows, reduce="amin")
    return unique, first, owner


class SingleTrialRetrieval(PairedRowsMetric):
    """Torchmetrics wrapper of :func:`distinct_stimulus_accuracy`: rows and ids gathered across processes.

    Example:
        >>> metric = SingleTrialRetrieval()
        >>> metric.update(torch.eye(3), torch.eye(3), torch.tensor([4, 5, 6]))
        >>> float(metric.compute())
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    stim_id: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("stim_id", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor, stim_ids: Tensor) -> None:  # type: ignore[override]
        """Append a batch of trials with their stimulus ids."""
        super().update(pred, target)
        self.stim_id.append(stim_ids.detach().reshape(-1))

    def compute(self) -> Tensor:
        """Score every accumulated trial."""
        return distinct_stimulus_accuracy(
            dim_zero_cat(self.pred), dim_zero_cat(self.target), dim_zero_cat(self.stim_id)
        )
