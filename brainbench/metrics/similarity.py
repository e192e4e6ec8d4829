"""Normalised inner products between two aligned sets of embeddings, computed in row blocks.

Shared by retrieval (cosine similarity, ``brainbench.metrics.retrieval``) and 2-way identification (Pearson r,
``brainbench.metrics.identification``).
Inputs are ``(N, ...)`` and flattened to ``(N, D)``; float64 inputs are
computed in float64, everything else (float32, float16, bfloat16) in float32. Memory stays at two input blocks
plus one ``block × N`` output block, never a ``2N × D`` float64 copy: a block holds at most ``block_size``
rows and :data:`BLOCK_BYTES` of features, so wide features (ViT-L/14 tokens, 197,376 values) get fewer rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from brainbench.errors import BrainbenchError
from brainbench.metrics.base import SpecMetric, cat_rows

BLOCK_BYTES = 256 * 2**20  # per normalised input block


def _flat_pair(rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    if rows.ndim < 1 or cols.ndim < 1 or rows.shape[0] != cols.shape[0] or rows.shape[0] == 0:
        raise ValueError(
            f"pred {tuple(rows.shape)} and target {tuple(cols.shape)} must be (N, ...) with the same N >= 1"
        )
    rows_flat, cols_flat = rows.reshape(rows.shape[0], -1), cols.reshape(cols.shape[0], -1)
    if rows_flat.shape[1] != cols_flat.shape[1]:
        raise ValueError(f"pred {tuple(rows.shape)} and target {tuple(cols.shape)} differ in feature size")
    for what, x in (("pred", rows_flat), ("target", cols_flat)):
        low, high = torch.aminmax(x)  # NaN propagates; no N x D boolean copy
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise BrainbenchError(f"{what} holds NaN or inf values\n  fix: check the model output / features")
    dtype = torch.float64 if torch.float64 in (rows.dtype, cols.dtype) else torch.float32
    return rows_flat, cols_flat, dtype


def _row_stats(flat: Tensor, dtype: torch.dtype, centre: bool, block_size: int) -> tuple[Tensor, Tensor]:
    """Per-row mean (0 unless ``centre``) and inverse norm of the centred row, one block at a time."""
    means, inverse_norms = [], []
    for start in range(0, flat.shape[0], block_size):
        block = flat[start : start + block_size].to(dtype, copy=True)
        mean = block.mean(dim=1) if centre else torch.zeros(block.shape[0], dtype=dtype)
        block -= mean[:, None]
        means.append(mean)
        inverse_norms.append(block.norm(dim=1).clamp_min_(torch.finfo(dtype).tiny).reciprocal_())
    return torch.cat(means), torch.cat(inverse_norms)


def _unit_block(
    flat: Tensor, start: int, size: int, stats: tuple[Tensor, Tensor], dtype: torch.dtype
) -> Tensor:
    """Rows ``start:start+size`` centred and scaled with precomputed statistics: one pass, one new block."""
    mean, inverse_norm = (s[start : start + size, None] for s in stats)
    return torch.addcmul(-mean * inverse_norm, flat[start : start + size].to(dtype), inverse_norm)


def similarity_blocks(
    rows: Tensor, cols: Tensor, *, centre: bool = False, block_size: int = 1024
) -> Iterator[tuple[int, Tensor]]:
    """Yield row blocks of the normalised inner-product matrix, never holding more than two input blocks.

    ``block[a, j] = <r̂_{start+a}, ĉ_j>`` where ``r̂`` and ``ĉ`` are the flattened rows, centred first when
    ``centre`` (Pearson r) and scaled to unit L2 norm (cosine). All-zero rows give 0 similarities.
    Inputs in float64 are computed in float64, everything else in float32.

    Args:
        rows: ``(N, ...)``.
        cols: ``(N, ...)``, same flattened feature size as ``rows``.
        centre: subtract each row's mean first (Pearson correlation instead of cosine).
        block_size: rows (and columns) processed at once.

    Yields:
        ``(start, block)`` with ``block`` of shape ``(min(block_size, N - start), N)``.
    """
    rows_flat, cols_flat, dtype = _flat_pair(rows, cols)
    n, dim = rows_flat.shape
    itemsize = torch.finfo(dtype).bits // 8
    block_size = max(1, min(block_size, BLOCK_BYTES // max(1, dim * itemsize)))
    row_stats = _row_stats(rows_flat, dtype, centre, block_size)
    col_stats = _row_stats(
        cols_flat, dtype, centre, block_size
    )  # so each column block is normalised in one pass
    for r0 in range(0, n, block_size):
        row_unit = _unit_block(rows_flat, r0, block_size, row_stats, dtype)
        out = torch.empty(row_unit.shape[0], n, dtype=dtype)
        for c0 in range(0, n, block_size):
            col_unit = _unit_block(cols_flat, c0, block_size, col_stats, dtype)
            out[:, c0 : c0 + col_unit.shape[0]] = row_unit @ col_unit.T
        yield r0, out


def cosine_similarity_matrix(brain: Tensor, image: Tensor, *, block_size: int = 1024) -> Tensor:
    """Return ``S (N, N)`` with ``S[i, j] = cos(brain_i, image_j)``: brain on rows, images on columns.

    Args:
        brain: ``(N, ...)`` predicted embeddings.
        image: ``(N, ...)`` target embeddings, row ``i`` the same stimulus as ``brain[i]``.
        block_size: rows computed at once (memory ~ ``block_size × D`` plus the ``N × N`` result).
    """
    blocks = list(similarity_blocks(brain, image, block_size=block_size))
    return torch.cat([block for _, block in blocks], dim=0)


class SharedSimilarity:
    """Cosine similarity matrices computed once for every metric that holds the same row tensors.

    The retrieval columns of one prediction (both directions, both pooled variants, top-1/top-5, full set)
    all rank the same ``N x N`` matrix; each metric keeps its own (identical) rows, and the first to compute
    stores the matrix here under the identity of those tensors. The tensors are kept alive with the
    matrix, so an identity can never be reused by other data while the cache lives. Metrics holding other
    tensors (e.g. gathered under DDP) simply compute their own.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[tuple[object, ...], list[Tensor], Tensor]] = []

    def cosine(self, pred: list[Tensor], target: list[Tensor], *, block_size: int = 1024) -> Tensor:
        """:func:`cosine_similarity_matrix` of the concatenated rows, computed at most once."""
        tensors = [*pred, *target]
        key = (len(pred), block_size, *((t.data_ptr(), tuple(t.shape), t.dtype) for t in tensors))
        for known, _, similarity in self._entries:
            if known == key:
                return similarity
        similarity = cosine_similarity_matrix(cat_rows(pred), cat_rows(target), block_size=block_size)
        self._entries.append((key, tensors, similarity))
        return similarity


class PairedRowsMetric(SpecMetric):
    """Aligned ``(pred, target)`` rows, flattened per item and concatenated across processes.

    Retrieval and 2-way identification need every row at once, so the state is a list with
    ``dist_reduce_fx="cat"``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("pred", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Append a batch: ``pred`` and ``target`` are ``(B, ...)`` with matching rows."""
        if pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in batch size"
            )
        self.pred.append(pred.detach().reshape(pred.shape[0], -1))
        self.target.append(target.detach().reshape(target.shape[0], -1))

    def cosine_similarity(self, shared: SharedSimilarity | None, block_size: int) -> Tensor:
        """``(N, N)`` cosine similarity of the rows (brain rows, image columns), through ``shared``."""
        if shared is not None and isinstance(self.pred, list):
            return shared.cosine(self.pred, self.target, block_size=block_size)
        return cosine_similarity_matrix(cat_rows(self.pred), cat_rows(self.target), block_size=block_size)

    def n_rows(self) -> int:
        """Rows accumulated so far."""
        rows = self.pred if isinstance(self.pred, list) else [self.pred]
        return sum(int(t.shape[0]) for t in rows)
