"""Which trials each site holds, and which of their modalities are missing (pure numpy, seeded).

**Sites.** :func:`assign_sites` gives every site one subject when there are at least as many sites as
subjects: subject ``subjects[k]`` goes to the sites ``k, k + S, k + 2S, ...`` (``S`` subjects), and a subject
held by several sites has its training trials split among them (a scanning centre scanned only part of that
subject's sessions). With fewer sites than subjects a site holds several subjects whole. Trials are split
uniformly at random, or with label skew: for each class (a trial's first, largest category) the shares of
the subject's sites are drawn from ``Dirichlet(alpha)``, as PmcmFL's non-IID split (Bao et al., arXiv
2312.13508, official code: ``alpha = 0.1`` over clients per class).

**Missingness.** :func:`missing_masks`: each non-brain modality (image embedding, caption embedding) of each
training sample is dropped independently with probability ``p``, PmcmFL's model (with ``p = 0.5``: 25 %
complete, 25 % image-only, 25 % caption-only, 25 % neither). The fMRI is never missing: a site always has its
scans. PmcmFL discards samples with both modalities missing; here they keep their fMRI and stay.

Example:
    >>> has_image, has_text = missing_masks(100_000, 0.3, seed=0)
    >>> round(float(has_image.mean()), 2), round(float(has_text.mean()), 2)
    (0.7, 0.7)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainbench.errors import ConfigError


@dataclass(frozen=True)
class SitePart:
    """The trials of one subject that one site holds.

    Attributes:
        subject: the subject number.
        share: which of the subject's sites this is (``0 .. n_shares - 1``).
        n_shares: how many sites hold this subject.
    """

    subject: int
    share: int
    n_shares: int


def assign_sites(subjects: list[int], n_sites: int) -> list[list[SitePart]]:
    """The subject parts each site holds (index = site id).

    Example:
        >>> [[(p.subject, p.share, p.n_shares) for p in site] for site in assign_sites([1, 2], 3)]
        [[(1, 0, 2)], [(2, 0, 1)], [(1, 1, 2)]]
        >>> [[p.subject for p in site] for site in assign_sites([1, 2, 5], 2)]
        [[1, 5], [2]]
    """
    if n_sites < 1 or not subjects:
        raise ConfigError("a federation needs at least one site and one subject")
    if n_sites < len(subjects):
        return [[SitePart(s, 0, 1) for s in subjects[site::n_sites]] for site in range(n_sites)]
    owners: dict[int, list[int]] = {s: list(range(k, n_sites, len(subjects))) for k, s in enumerate(subjects)}
    sites: list[list[SitePart]] = [[] for _ in range(n_sites)]
    for subject, held_by in owners.items():
        for share, site in enumerate(held_by):
            sites[site].append(SitePart(subject, share, len(held_by)))
    return sites


def split_trials(labels: np.ndarray, n_shares: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Split trial indices ``0..N-1`` into ``n_shares`` sorted index arrays.

    Args:
        labels: ``(N,)`` int class of each trial (its first category).
        n_shares: number of parts.
        alpha: Dirichlet concentration of each class's shares over the parts; ``0``: a uniform random split.
        seed: the split's seed.

    Example:
        >>> [len(p) for p in split_trials(np.zeros(10, int), 2, 0.0, seed=0)]
        [5, 5]
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    if n_shares == 1:
        return [np.arange(n)]
    if alpha <= 0:
        order = rng.permutation(n)
        return [np.sort(part) for part in np.array_split(order, n_shares)]
    parts: list[list[int]] = [[] for _ in range(n_shares)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(n_shares, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.extend(chunk.tolist())
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def missing_masks(n: int, p: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``n`` samples keep their image and their caption: two independent ``(n,)`` bool arrays.

    Each is ``True`` with probability ``1 - p``; both come from one seeded generator, image first.
    """
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"missing probability must be in [0, 1), not {p}")
    rng = np.random.default_rng(seed)
    has_image = rng.random(n) >= p
    has_text = rng.random(n) >= p
    return has_image, has_text
