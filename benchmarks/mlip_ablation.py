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
        if (only is not None and name not in only) or name in results:
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


def time_merge_rates(rates: list[float], batch_size: int, reps: int) -> dict[str, dict[str, float]]:
    """Median training-step and inference seconds per merge rate, measured round-robin in one process.

    Interleaving the rates makes the comparison robust to load that drifts during the measurement (the
    equal-wall-clock runs share the machine, so their own step times are noisier). Random weights: speed
    does not depend on them.
    """
    import time

    import torch

    from brainbench.backbones.mlip import MLIPConfig, MLIPModel, encode_image_mlip
    from brainbench.backbones.mlip_loss import mlip_loss
    from brainbench.backbones.world_clip import create_world_clip, world_clip_tokenizer

    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, 64, 64)
    text = world_clip_tokenizer()(
        ["a large red striped star in the top left and a small blue cup"] * batch_size
    )
    models = {r: MLIPModel(create_world_clip(None), MLIPConfig(merge_rate=r)) for r in rates}
    times: dict[float, dict[str, list[float]]] = {r: {"train": [], "infer": []} for r in rates}
    for rep in range(reps + 1):  # the first round warms up
        for r, model in models.items():
            model.train()
            t0 = time.perf_counter()
            mlip_loss(model(images, text), model.cfg)["loss"].backward()
            t1 = time.perf_counter()
            with torch.no_grad():
                model.eval()
                encode_image_mlip(model.clip.visual, images, model.cfg)
            t2 = time.perf_counter()
            if rep:
                times[r]["train"].append(t1 - t0)
                times[r]["infer"].append(t2 - t1)
    out = {}
    for r in rates:
        train = sorted(times[r]["train"])[len(times[r]["train"]) // 2]
        infer = sorted(times[r]["infer"])[len(times[r]["infer"]) // 2]
        out[str(r)] = {"train_step_s": train, "infer_ms_per_image": 1000 * infer / batch_size}
    return out


def table(results: dict) -> str:
    """The Markdown table of the card (one row per run)."""
    head = (
        "| run | steps | pairs | train s/step | infer ms/img | image->caption top-1 (500) "
        "| caption->image top-1 (500) | zero-shot top-1 (57) |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name, card in results.items():
        if name == "timing":
            continue
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
    timing = results.get("timing", {})
    if not points and not timing:
        return
    rates = [p[0] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    t_rates = sorted(float(r) for r in timing)
    axes[0].plot(t_rates, [timing[str(r)]["train_step_s"] for r in t_rates], "o-")
    axes[0].set_ylabel("training s / step (batch 64)")
    axes[1].plot(t_rates, [timing[str(r)]["infer_ms_per_image"] for r in t_rates], "o-")
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
    parser.add_argument("--timing-reps", type=int, default=0, help="also time merge rates 0-0.75 (rounds)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_all(args.out, args.minutes, args.pool_pairs, args.batch_size, args.only)
    if args.timing_reps:
        import torch

        torch.set_num_threads(1)
        results["timing"] = time_merge_rates([0.0, 0.25, 0.5, 0.75], args.batch_size, args.timing_reps)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results["timing"], indent=2))
    (args.out / "table.md").write_text(table(results))
    plot_merge_rate(results, args.out / "merge_rate.png")
    print(table(results))
