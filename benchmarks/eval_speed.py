"""Evaluator time and peak memory on 1000 test items: embedding metrics and reconstruction metrics.

Each case runs in its own spawned process, so its peak resident memory (``ru_maxrss``) is its own:

- ``embedding-world``: :func:`brainbench.eval.evaluator.evaluate` on ``clip_tokens`` (65 x 128) and
  ``clip_image`` (128), the world scale: retrieval both ways and both variants, 2-way identification;
- ``embedding-nsd``: the same at ViT-L/14 scale (257 x 768 tokens, 768 pooled);
- ``reconstruction``: :func:`brainbench.eval.reconstruction.score_images` on 64 px images (PixCorr, SSIM,
  world-CLIP 2-way / correlation distance / FID and every other network available on this machine), with no
  ground-truth feature cache (a split's first scoring);
- ``reconstruction-cached``: the same with the ground-truth features already in a
  :class:`~brainbench.eval.truth_features.TruthFeatureCache` (every later scoring of the split; the cache is
  filled by an untimed first call).

Inputs are random (predictions = targets + noise), so the numbers measure cost, not quality.

Usage::

    python benchmarks/eval_speed.py                  # N = 1000
    python benchmarks/eval_speed.py --n 300 --csv benchmarks/results/eval_speed.csv
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import resource
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

CASES = ("embedding-world", "embedding-nsd", "reconstruction", "reconstruction-cached")


def _inputs(case: str, n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    if case.startswith("reconstruction"):
        truth = torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, generator=generator)
        noise = torch.randint(-40, 41, truth.shape, generator=generator)
        return {"images": (truth.int() + noise).clamp(0, 255).to(torch.uint8)}, {"images": truth}
    tokens, dim = (65, 128) if case == "embedding-world" else (257, 768)
    targets = {"clip_tokens": torch.randn(n, tokens, dim, generator=generator)}
    targets["clip_image"] = targets["clip_tokens"][:, 0].clone()
    predictions = {k: v + 2 * torch.randn(v.shape, generator=generator) for k, v in targets.items()}
    return predictions, targets


def _child(case: str, n: int, queue: multiprocessing.Queue) -> None:
    warnings.filterwarnings("ignore")
    from brainbench.eval.evaluator import evaluate
    from brainbench.eval.reconstruction import score_images

    cache_dir = tempfile.TemporaryDirectory()

    def run(predictions: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> int:
        if case == "reconstruction-cached":
            from brainbench.eval.truth_features import TruthFeatureCache

            cache = TruthFeatureCache(cache_dir.name)
            ids = np.arange(len(targets["images"]))
            return len(
                score_images(predictions["images"], targets["images"], stim_ids=ids, cache=cache).values
            )
        if case == "reconstruction":
            return len(score_images(predictions["images"], targets["images"]).values)
        return len(
            evaluate(predictions, targets, network="bench", pool=min(300, len(targets["clip_image"]))).values
        )

    run(*_inputs(case, 16))  # warm-up: imports, network weights, thread pools
    predictions, targets = _inputs(case, n)
    if case == "reconstruction-cached":
        run(predictions, targets)  # fills the ground-truth feature cache (untimed)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    n_metrics = run(predictions, targets)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(
        {
            "case": case,
            "n": n,
            "metrics": n_metrics,
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak / 1024, 1),
            "extra_rss_mb": round((peak - base) / 1024, 1),
        }
    )


def measure(case: str, n: int) -> dict[str, Any]:
    """One case in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(case, n, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    """Runs the cases and prints (and optionally saves) the table."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--n", type=int, default=1000, help="test items")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    rows = [measure(case, args.n) for case in args.cases]
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
