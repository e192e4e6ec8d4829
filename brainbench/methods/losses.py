r"""Contrastive losses the decoders share: InfoNCE, the bidirectional CLIP loss, BiMixCo and SoftCLIP.

BiMixCo and SoftCLIP are MindEye's (Scotti et al. 2023, "Reconstructing the Mind's Eye", NeurIPS,
arXiv 2305.18274, §2.2 and Eq. 1-2; released code ``MedARC-AI/fMRI-reconstruction-NSD``, ``src/utils.py::
mixco, mixco_nce, soft_clip_loss, cosine_anneal``); MindTuner, NeuroClips and MindEye2 reuse them. With
L2-normalised rows ``b_i`` (brain) and ``c_j`` (target) and ``S_ij = b_i . c_j / tau``:

* **InfoNCE** (van den Oord et al. 2018, arXiv 1807.03748): ``L = CE(S, I)``, rows against their own column.
* **CLIP loss** (Radford et al. 2021, arXiv 2103.00020, Fig. 3): ``(CE(S, I) + CE(S^T, I)) / 2``.
* **BiMixCo** (MindEye Eq. 1): a random ``mixco_select`` share of the batch gets
  ``v_i <- lambda_i v_i + (1 - lambda_i) v_{pi(i)}``, ``lambda_i ~ Beta(beta, beta)``; soft targets
  ``P_ii = lambda_i``, ``P_{i, pi(i)} = 1 - lambda_i`` (set after the diagonal, as released) and
  ``L = -1/2 [mean_i sum_j P_ij log softmax_j(S_i.) + mean_j sum_i P_ij log softmax_i(S_.j)]``.
* **SoftCLIP** (MindEye Eq. 2): soft labels ``Q = softmax_row(c c^T / tau)``,
  ``L = -1/2 [mean_i sum_j Q_ij log softmax_j(S_ij) + mean_i sum_j Q_ij log softmax_j(S^T_ij)]``.

:class:`ContrastiveSchedule` holds MindEye's six hyperparameters and picks the epoch's loss: BiMixCo at
``mixco_temp`` for the first ``int(mixup_pct * E)`` epochs, then SoftCLIP at a temperature cosine-annealed
from ``soft_temp_start`` to ``soft_temp_end`` over the remaining epochs.

Example:
    >>> schedule = ContrastiveSchedule(mixup_pct=0.33)
    >>> schedule.mixup_epochs(240), schedule.temperature(0, 240), schedule.temperature(239, 240)
    (79, 0.006, 0.0075)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """One-direction InfoNCE of ``(B, B)`` logits: row ``i``'s positive is column ``i``."""
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE of ``(B, B)`` logits: ``(CE(S, I) + CE(S^T, I)) / 2``."""
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def mixco(
    voxels: torch.Tensor, beta: float = 0.15, s_thresh: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixCo voxel mixup (MindEye1 ``utils.mixco``), out of place.

    Args:
        voxels: ``(B, V)`` batch.
        beta: both parameters of the Beta distribution of ``lambda``.
        s_thresh: probability that a sample is mixed.
        generator: optional RNG for the permutation and the selection (the Beta draw uses the global RNG).

    Returns:
        The mixed voxels, the permutation ``pi`` and ``lambda`` (1 for unmixed samples).
    """
    n = voxels.shape[0]
    perm = torch.randperm(n, generator=generator).to(voxels.device)
    lam = torch.distributions.Beta(beta, beta).sample((n,)).to(voxels.device, voxels.dtype)
    select = (torch.rand(n, generator=generator) <= s_thresh).to(voxels.device)
    lam = torch.where(select, lam, torch.ones_like(lam))
    shape = (-1,) + (1,) * (voxels.ndim - 1)
    mixed = voxels * lam.view(shape) + voxels[perm] * (1 - lam).view(shape)
    return mixed, perm, lam


def mixco_nce(
    preds: torch.Tensor,
    targets: torch.Tensor,
    temp: float,
    perm: torch.Tensor | None = None,
    lam: torch.Tensor | None = None,
) -> torch.Tensor:
    """BiMixCo on normalised rows (MindEye1 ``utils.mixco_nce``); without mixing, :func:`clip_loss`.

    With ``perm`` and ``lam`` the soft targets are ``P = diag(lam)`` then ``P[i, perm[i]] = 1 - lam[i]`` (set
    after the diagonal, as released); without them, the hard identity targets.
    """
    logits = preds @ targets.T / temp
    if perm is None or lam is None:
        return clip_loss(logits)
    probs = torch.diag(lam)
    probs[torch.arange(len(logits), device=logits.device), perm] = 1 - lam
    loss = -(logits.log_softmax(-1) * probs).sum(-1).mean()
    loss_t = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
    return (loss + loss_t) / 2


def soft_clip_loss(preds: torch.Tensor, targets: torch.Tensor, temp: float) -> torch.Tensor:
    """SoftCLIP (MindEye1 ``utils.soft_clip_loss``): soft labels ``softmax(c c^T / temp)``, both ways."""
    soft = (targets @ targets.T / temp).softmax(-1)
    logits = preds @ targets.T / temp
    loss = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    loss_t = -(logits.T.log_softmax(-1) * soft).sum(-1).mean()
    return (loss + loss_t) / 2


def cosine_anneal(start: float, end: float, steps: int) -> torch.Tensor:
    """``end + (start - end) / 2 * (1 + cos(pi * k / (steps - 1)))`` for ``k < steps`` (MindEye1 utils)."""
    if steps == 1:
        return torch.tensor([float(start)], dtype=torch.float64)
    k = torch.arange(steps, dtype=torch.float64)
    return end + (start - end) / 2 * (1 + torch.cos(math.pi * k / (steps - 1)))


def flat_unit_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(B, prod(...))`` L2-normalised rows (token grids compared as one vector)."""
    return F.normalize(x.flatten(1), dim=-1)


@dataclass(frozen=True)
class ContrastiveSchedule:
    """MindEye's loss schedule: BiMixCo, then SoftCLIP with a cosine-annealed temperature (module docstring).

    Args:
        mixup_pct: fraction of the epochs trained with BiMixCo (0.33; NeuroClips 1.0).
        mixco_beta: the Beta(beta, beta) of the mixing weight (0.15).
        mixco_select: fraction of the batch that is mixed (0.5).
        mixco_temp: BiMixCo temperature (0.006).
        soft_temp_start: SoftCLIP temperature at its first epoch (0.004).
        soft_temp_end: SoftCLIP temperature at the last epoch (0.0075).
    """

    mixup_pct: float = 0.33
    mixco_beta: float = 0.15
    mixco_select: float = 0.5
    mixco_temp: float = 0.006
    soft_temp_start: float = 0.004
    soft_temp_end: float = 0.0075

    def mixup_epochs(self, n_epochs: int) -> int:
        """Epochs trained with BiMixCo: ``int(mixup_pct * n_epochs)``, as released."""
        return int(self.mixup_pct * n_epochs)

    def mixing(self, epoch: int, n_epochs: int) -> bool:
        """Whether ``epoch`` (0-based) of ``n_epochs`` is a BiMixCo epoch."""
        return epoch < self.mixup_epochs(n_epochs)

    def mix(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`mixco` with this schedule's ``mixco_beta`` and ``mixco_select``."""
        return mixco(voxels, self.mixco_beta, self.mixco_select)

    def soft_temperature(self, epoch: int, n_epochs: int) -> float:
        """SoftCLIP temperature of ``epoch`` (:func:`cosine_anneal` over the epochs after BiMixCo)."""
        n_mix = self.mixup_epochs(n_epochs)
        temps = cosine_anneal(self.soft_temp_start, self.soft_temp_end, max(1, n_epochs - n_mix))
        return float(temps[min(max(0, epoch - n_mix), len(temps) - 1)])

    def temperature(self, epoch: int, n_epochs: int) -> float:
        """The temperature of ``epoch``'s loss: ``mixco_temp`` while mixing, else the SoftCLIP one."""
        return self.mixco_temp if self.mixing(epoch, n_epochs) else self.soft_temperature(epoch, n_epochs)

    def loss(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        epoch: int,
        n_epochs: int,
        perm: torch.Tensor | None = None,
        lam: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The epoch's loss on flattened, L2-normalised rows: BiMixCo, then SoftCLIP.

        ``perm`` and ``lam`` are the batch's mixing (:meth:`mix`); without them a BiMixCo epoch gives the
        unmixed CLIP loss (validation).
        """
        b, c = flat_unit_rows(pred), flat_unit_rows(target)
        if self.mixing(epoch, n_epochs):
            return mixco_nce(b, c, self.mixco_temp, perm, lam)
        return soft_clip_loss(b, c, self.soft_temperature(epoch, n_epochs))
