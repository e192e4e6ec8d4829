"""Calibration numbers of a generated world, for its data card: reliability, noise ceilings, an oracle.

* **Split-half reliability**: per voxel, Pearson r across test images between repeat 1 and the mean of the
  other repeats of the prepared (z-scored) test samples.
* **Noise ceiling** from the simulator's ground truth: ``NC = ncsnr^2 / (ncsnr^2 + 1/n)`` for an average of
  ``n`` repeats (Allen et al. 2022), the share of variance a perfect encoding model could explain.
* **Oracle retrieval**: a decoder that knows the encoding model's noise-free signal ``s[j]`` of every
  candidate image ranks candidates by Pearson r between the observed repeat-averaged pattern and ``s[j]``
  (voxels weighted by their ground-truth SNR). Its brain->image top-1 in the 300-way shared-subset protocol
  bounds what decoding the test voxels can reach: no real dataset offers this number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainbench.data.manifest import Manifest
from brainbench.data.shards import iter_split
from brainbench.metrics.retrieval import shared_subset_accuracy


def load_test_split(prepared_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(stim_ids (N,), averaged voxels (N, V), repeats (N, R, V))`` of a prepared test split."""
    manifest = Manifest.load(prepared_dir)
    samples = sorted(iter_split(prepared_dir, manifest, "test"), key=lambda s: s.stim_id)
    stim_ids = np.array([s.stim_id for s in samples])
    averaged = np.stack([s.voxels for s in samples]).astype(np.float32)
    repeats = np.stack([s.repeats for s in samples]).astype(np.float32)
    return stim_ids, averaged, repeats


def _column_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (a - a.mean(0)) / a.std(0).clip(1e-8)
    b = (b - b.mean(0)) / b.std(0).clip(1e-8)
    return (a * b).mean(0)


def split_half_reliability(repeats: np.ndarray) -> np.ndarray:
    """Per-voxel r between repeat 1 and the mean of the other repeats, across images ``(V,)``."""
    return _column_corr(repeats[:, 0], repeats[:, 1:].mean(axis=1))


def noise_ceiling(ncsnr: np.ndarray, n_repeats: int) -> np.ndarray:
    """Fraction of variance explainable in an ``n_repeats`` average, from noise-ceiling SNR."""
    return ncsnr**2 / (ncsnr**2 + 1.0 / n_repeats)


def oracle_retrieval(world_root: Path, prepared_dir: Path, subject: int, pool: int = 300) -> float:
    """Brain->image top-1 (shared subsets of ``pool``, 30 draws, seed 42) of the encoding-model oracle."""
    truth = np.load(world_root / "brainbench_truth" / f"subj{subject:02d}.npz", allow_pickle=False)
    stim_ids, averaged, _ = load_test_split(prepared_dir)
    rows = {int(s): i for i, s in enumerate(truth["stim_ids"])}
    templates = truth["signal"][[rows[int(s)] for s in stim_ids]]
    weights = truth["ncsnr"]
    observed = (averaged - averaged.mean(1, keepdims=True)) * weights
    templates = (templates - templates.mean(1, keepdims=True)) * weights
    similarity = torch.from_numpy(_row_corr_matrix(observed, templates))
    return float(
        shared_subset_accuracy(similarity, direction="brain2image", top_k=1, pool=min(pool, len(stim_ids)))
    )


def _row_corr_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-8)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-8)
    return a @ b.T


def calibration_report(world_root: Path, prepared_dir: Path, subject: int) -> dict[str, float]:
    """Every calibration number of one subject, as a flat dict for the data card."""
    truth = np.load(world_root / "brainbench_truth" / f"subj{subject:02d}.npz", allow_pickle=False)
    _, _, repeats = load_test_split(prepared_dir)
    reliability = split_half_reliability(repeats)
    ceiling = noise_ceiling(truth["ncsnr"], repeats.shape[1])
    report = {"n_voxels": float(len(reliability)), "n_test": float(len(repeats))}
    for q in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        report[f"split_half_r_q{int(q * 100)}"] = float(np.quantile(reliability, q))
        report[f"noise_ceiling_q{int(q * 100)}"] = float(np.quantile(ceiling, q))
    report["oracle_b2i_top1_subset"] = oracle_retrieval(world_root, prepared_dir, subject)
    return report
