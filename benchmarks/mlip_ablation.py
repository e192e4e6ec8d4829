"""MLIP's claims measured in the world: CLIP vs MLIP at equal wall-clock, data fractions, parts, merge rates.

Every run is ``brainbench world train-clip`` with the same start (the shipped world CLIP v1; MLIP's
frequency stage starts random), the same fixed pair pool (``--pool-pairs``, category-contrast groups of 4),
the same batch size and learning rate, and the same wall-clock budget (``--minutes``); only the objective,
the data fraction or one MLIP part changes. All runs are scored by the same held-out evaluation
(:func:`brainbench.world.train_clip.evaluate_world_clip`: 500-way image<->caption top-1, 57-way zero-shot)
and with the merge rate they trained with. Results go to ``<out>/results.json``, a Markdown table
``<out>/table.md`` and the merge-rate plot ``<out>/merge_rate.png``.

Usage (about ``len(RUNS) * (minutes + 1)`` minutes on one core)::

    python benchmarks/mlip_ablation.py --out benchmarks/results/mlip_ablation --minutes 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FULL = ["--objective", "mlip", "--merge-rate", "0.25"]
RUNS: dict[str, list[str]] = {
    "clip-100%": ["--objective", "clip"],
    "mlip-100%": FULL,
    "clip-50%": ["--objective", "clip", "--data-fraction", "0.5"],
    "mlip-50%": [*FULL, "--data-fraction", "0.5"],
    "clip-25%": ["--objective", "clip", "--data-fraction", "0.25"],
    "mlip-25%": [*FULL, "--data-fraction", "0.25"],
    "mlip-no-frequency": [*FULL, "--no-frequency"],
    "mlip-no-token-align": [*FULL, "--no-token-align"],
    "mlip-no-merging (rate 0)": ["--objective", "mlip", "--merge-rate", "0"],
    "mlip-merge-0.5": ["--objective", "mlip", "--merge-rate", "0.5"],
}


def run_all(out: Path, minutes: float, pool_pairs: int, batch_size: int, only: list[str] | None) -> dict:
    """Runs (or reuses, when its card exists) every ablation and returns ``{name: card}``."""
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    for name, extra in RUNS.items():
        if (only and name not in only) or name in results:
            continue
        folder = out / name.split(" ")[0]
        cmd = [sys.executable, "-m", "brainbench.cli", "world", "train-clip", "--out", str(folder)]
        cmd += ["--init", "brainbench/world/assets/world-clip-v1", "--pool-pairs", str(pool_pairs)]
        cmd += ["--group-size", "4", "--batch-size", str(batch_size), "--lr", "5e-4", "--warmup", "10"]
        cmd += ["--steps", "100000", "--minutes", str(minutes), "--threads", "1", *extra]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        card = json.loads((folder / "card.json").read_text())
        for weights in folder.glob("*.safetensors"):
            weights.unlink()  # the ablation keeps its card, not its weights
        results[name] = card
        (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def table(results: dict) -> str:
    """The Markdown table of the card (one row per run)."""
    head = (
        "| run | steps | pairs | train s/step | infer ms/img | image->caption top-1 (500) "
        "| caption->image top-1 (500) | zero-shot top-1 (57) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, card in results.items():
        held, step_s = card["held_out"], card["train_step_seconds_median"]
        i2t, t2i = held["image2caption_top1_500way"], held["caption2image_top1_500way"]
        rows.append(
            f"| {name} | {card['steps']} | {card['pool_pairs_used']} | {step_s:.2f} "
            f"| {held['inference_ms_per_image']:.2f} | {100 * i2t:.1f} % "
            f"| {100 * t2i:.1f} % | {100 * held['zero_shot_top1_57way']:.1f} % |"
        )
    return head + "\n".join(rows) + "\n"


def plot_merge_rate(results: dict, path: Path) -> None:
    """Merge rate vs training step time, inference time and retrieval (MLIP runs at 100 % of the pairs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["mlip-no-merging (rate 0)", "mlip-100%", "mlip-merge-0.5"]
    points = [(results[n]["mlip"]["merge_rate"], results[n]) for n in names if n in results]
    if not points:
        return
    rates = [p[0] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(rates, [c["train_step_seconds_median"] for _, c in points], "o-")
    axes[0].set_ylabel("training s / step")
    axes[1].plot(rates, [c["held_out"]["inference_ms_per_image"] for _, c in points], "o-")
    axes[1].set_ylabel("inference ms / image")
    axes[2].plot(
        rates, [100 * c["held_out"]["image2caption_top1_500way"] for _, c in points], "o-", label="i->t"
    )
    axes[2].plot(
        rates, [100 * c["held_out"]["caption2image_top1_500way"] for _, c in points], "s-", label="t->i"
    )
    axes[2].set_ylabel("top-1 among 500 (%)")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("merge rate (per merging block)")
    fig.suptitle("MLIP token merging in the world CLIP (equal wall-clock, 1 thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mlip_ablation"))
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--pool-pairs", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_all(args.out, args.minutes, args.pool_pairs, args.batch_size, args.only)
    (args.out / "table.md").write_text(table(results))
    plot_merge_rate(results, args.out / "merge_rate.png")
    print(table(results))
