r"""PmcmFL's prototype library: per-class prototypes, their server aggregation and the prototype contrast.

Bao et al., "Multimodal Federated Learning with Missing Modality via Prototype Mask and Contrast",
arXiv 2312.13508 (IEEE TNNLS), and its official code (``Multimodal_Federated``: ``compute_prototypes``,
``aggregate_local_prototypes``, ``ClipLossHalf``). Pure tensor functions; the library is a dict
``{modality: (C, D) tensor}`` over :data:`MODALITIES`.

**Local prototype** of class ``c`` at a site, over its complete samples (all modalities present), with soft
labels ``y`` (here the multi-hot scene categories):

.. math::
    P_c = \frac{\sum_i y_{ic}\, r_i}{\sum_i y_{ic}}

a class with :math:`\sum_i y_{ic} = 0` keeps its previous row (the global prototype, or the site's random
initial one in round 1).

**Aggregation** over the sites ``k`` of a round, per modality ``m``: site weights
:math:`w_k = (1 + n_k^m) / \sum_j (1 + n_j^m)` with :math:`n_k^m` the site's samples having ``m``; then per
class the weighted sum divided by the weights of the sites whose row is not all zeros (when that total is
above 1e-4):

.. math::
    G_c = \frac{\sum_k w_k P^k_c}{\sum_{k: P^k_c \neq 0} w_k}

**Contrast** (PmcmFL's "proximal term", ``ClipLossHalf``): a one-directional InfoNCE between a batch's
representations and the prototypes of their classes, logits :math:`r_i^\top P_{y_j} / \tau` with a fixed
:math:`\tau = 0.07`, features not normalised, same-class prototypes in the batch counted as negatives.

Example:
    >>> reps = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    >>> labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> class_prototypes(reps, labels, torch.full((2, 2), 9.0))
    tensor([[2., 1.],
            [9., 9.]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

MODALITIES: tuple[str, ...] = ("fmri", "image", "text", "fusion")
"""The library's rows: each modality's representation and the fused one (PmcmFL: img, text, fusion)."""


def init_prototypes(n_classes: int, dim: int, seed: int) -> dict[str, torch.Tensor]:
    """Round-1 library of a site: standard-normal rows (PmcmFL's ``torch.randn`` start), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n_classes, dim, generator=generator) for m in MODALITIES}


def class_prototypes(reps: torch.Tensor, soft_labels: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Label-weighted class means of ``reps``; classes without any weight keep ``previous``.

    Args:
        reps: ``(N, D)`` representations.
        soft_labels: ``(N, C)`` non-negative label weights.
        previous: ``(C, D)`` the rows kept for absent classes.

    Returns:
        ``(C, D)`` prototypes.
    """
    weight = soft_labels.sum(dim=0)  # (C,)
    sums = soft_labels.T @ reps  # (C, D)
    present = weight > 0
    out = previous.clone()
    out[present] = sums[present] / weight[present, None]
    return out


def aggregate_prototypes(
    site_prototypes: Sequence[torch.Tensor], site_counts: Sequence[float], min_weight: float = 1e-4
) -> torch.Tensor:
    """The global ``(C, D)`` prototypes of one modality from the sites' ``(C, D)`` ones.

    Args:
        site_prototypes: one ``(C, D)`` tensor per site.
        site_counts: per site, its samples having this modality (weights ``1 + count``, normalised).
        min_weight: per-class weight totals at or below this are left undivided (as the official code).

    Example:
        >>> a, b = torch.tensor([[2.0], [0.0]]), torch.tensor([[5.0], [4.0]])
        >>> aggregate_prototypes([a, b], [1, 2])  # weights 2/5, 3/5; class 1 only at site b
        tensor([[3.8000],
                [4.0000]])
    """
    raw = torch.tensor([1.0 + float(c) for c in site_counts], dtype=torch.float64)
    weights = raw / raw.sum()
    stacked = torch.stack([p.to(torch.float64) for p in site_prototypes])  # (K, C, D)
    total = torch.einsum("k,kcd->cd", weights, stacked)
    nonzero = stacked.abs().sum(dim=2) > 0  # (K, C)
    class_weight = (weights[:, None] * nonzero).sum(dim=0)  # (C,)
    divide = class_weight > min_weight
    total[divide] = total[divide] / class_weight[divide, None]
    return total.to(site_prototypes[0].dtype)


def aggregate_library(
    libraries: Sequence[Mapping[str, torch.Tensor]], counts: Sequence[Mapping[str, float]]
) -> dict[str, torch.Tensor]:
    """:func:`aggregate_prototypes` for every modality of :data:`MODALITIES`."""
    return {
        m: aggregate_prototypes([lib[m] for lib in libraries], [c[m] for c in counts]) for m in MODALITIES
    }


def prototype_contrast(
    reps: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """PmcmFL's one-directional InfoNCE: cross-entropy of ``reps @ prototypes.T / T`` against the diagonal.

    Args:
        reps: ``(B, D)`` representations of a batch.
        prototypes: ``(B, D)`` the prototype of each sample's class (same order).
        temperature: the fixed temperature (0.07).
    """
    logits = reps @ prototypes.T / temperature
    return F.cross_entropy(logits, torch.arange(len(reps), device=reps.device))
