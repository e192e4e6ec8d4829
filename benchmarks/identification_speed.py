"""2-way identification: brainbench's block-wise form against the naive full-corrcoef form, in one run.

The naive form is the one MindEye1/2 and Brain-Diffuser use (metrics.md §1.2): ``np.corrcoef`` of the
stacked ``[GT; PRED]`` matrix (a ``2N x D`` float64 copy and a ``2N x 2N`` result, four times the products
needed), then the ``N x N`` off-diagonal block. brainbench centres and normalises rows in blocks
(``brainbench.metrics.identification``), never holding more than two input blocks at once.

Each form runs in its own child process, so its peak resident memory (``ru_maxrss``) is its own; both get the
same random features (N items x D features, float32, a shared signal plus noise) and must agree to 1e-6.

Usage::

    python benchmarks/identification_speed.py                 # N=1000, D=100,000
    python benchmarks/identification_speed.py --n 982 --dim 197376 --json out.json   # ViT-L/14 token size
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np


def make_features(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth and predicted features sharing a signal: ``pred = gt + noise``."""
    rng = np.random.default_rng(seed)
    gt = rng.standard_normal((n, dim), dtype=np.float32)
    pred = rng.standard_normal((n, dim), dtype=np.float32)
    signal = np.float32(4.0 / np.sqrt(dim))  # r ~ 4 / sqrt(D): a hard but solvable identification
    for start in range(0, n, 64):  # in chunks, so no temporary raises the peak memory above the inputs
        pred[start : start + 64] += signal * gt[start : start + 64]
    return gt, pred


def naive_two_way(gt: np.ndarray, pred: np.ndarray) -> float:
    """The reference formulation: full ``np.corrcoef`` of ``[GT; PRED]``, then count wins per prediction."""
    n = len(gt)
    r = np.corrcoef(gt, pred)[:n, n:]  # r[i, j] = corr(GT_i, PRED_j)
    congruent = np.diag(r)
    wins = (r < congruent[None, :]).sum(axis=0)
    return float(np.mean(wins / (n - 1)))


def blockwise_two_way(gt: np.ndarray, pred: np.ndarray) -> float:
    """brainbench's block-wise exhaustive 2-way identification."""
    import torch

    from brainbench.metrics.identification import two_way_identification

    return float(two_way_identification(torch.from_numpy(pred), torch.from_numpy(gt)))


def _child(form: str, n: int, dim: int, queue: multiprocessing.Queue) -> None:
    if form == "blockwise":  # the import's own memory is not the metric's
        import brainbench.metrics.identification  # noqa: F401
    form_fn = naive_two_way if form == "naive" else blockwise_two_way
    form_fn(*make_features(8, 64, seed=1))  # warm-up: library initialisation is not the metric's cost
    gt, pred = make_features(n, dim)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    value = form_fn(gt, pred)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "form": form,
            "value": value,
            "seconds": seconds,
            "peak_rss_mb": peak / 1024,
            "extra_rss_mb": (peak - base) / 1024,
        }
    )


def run(form: str, n: int, dim: int) -> dict:
    """One form in a fresh (spawned) process; its time, value and memory above the inputs."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(form, n, dim, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    """Runs both forms and prints the comparison (and writes it as JSON when asked)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000, help="items (images)")
    parser.add_argument("--dim", type=int, default=100_000, help="features per item")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = {form: run(form, args.n, args.dim) for form in ("blockwise", "naive")}
    fast, slow = results["blockwise"], results["naive"]
    if abs(fast["value"] - slow["value"]) > 1e-6:
        raise SystemExit(f"the two forms disagree: {fast['value']} vs {slow['value']}")
    for r in (fast, slow):
        extra, value = r["extra_rss_mb"], r["value"]
        print(f"{r['form']:>9}: {r['seconds']:7.2f} s, +{extra:7.0f} MB above the inputs, 2-way {value:.6f}")
    speed = slow["seconds"] / fast["seconds"]
    memory = slow["extra_rss_mb"] / max(fast["extra_rss_mb"], 1.0)
    print(f"block-wise is {speed:.1f}x faster and uses {memory:.1f}x less extra memory")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "dim": args.dim, "results": results}, indent=2))


if __name__ == "__main__":
    main()
