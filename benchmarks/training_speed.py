"""Training-step throughput per method against the machine's matmul peak, and against the data loader.

For every method with a world config (or the ``--methods`` given), the model is built at the config's scale
(:func:`brainbench.describe.scale_shapes`: voxel count and target shapes, no data needed) and timed on
synthetic batches of the config's batch size:

- **step samples/s**: one step as ``Trainer.fit`` runs it (the method's ``training_step``, backward, its own
  optimizer and schedule; no logging, checkpoints or validation), the median over ``--steps`` timed steps
  after ``--warmup`` untimed ones;
- **GFLOP/s achieved**: the FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and convolutions, forward and backward; FFTs, norms and element-wise ops are not counted, so
  FFT-heavy models are under-credited) divided by the step time;
- **% of peak**: against a float32 GEMM measured in the same run with the same threads
  (``--peak-size`` cubed, the best of several repeats);
- **loader samples/s** (when ``make bench`` has prepared subject 1 of the config's dataset under ``--home``):
  the method's training stream (shards, decoding, shuffle buffer, collate, feature-cache targets) without a
  model, and the loader / step ratio, which must stay >= 5 so data loading is never the bottleneck.

Closed-form methods (ridge) have no training step and are skipped.

Usage::

    python benchmarks/training_speed.py                       # every method, world scale
    python benchmarks/training_speed.py --methods litemind mindeye --scale nsd --steps 3
    python benchmarks/training_speed.py --home /scratch/brainbench --csv benchmarks/results/training_speed.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.preparation import default_home
from brainbench.describe import scale_shapes, synthetic_rois
from brainbench.methods import build_method, list_methods, list_scales, load_method_config
from brainbench.training import quiet_lightning


def matmul_peak_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best float32 GEMM rate (GFLOP/s) of ``size``-cubed matmuls on this process's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def synthetic_batch(shapes: dict[str, Any], batch_size: int) -> dict[str, torch.Tensor]:
    """A training batch of random voxels and targets with the config's shapes (distinct stimuli)."""
    batch = {
        "voxels": torch.randn(batch_size, shapes["n_voxels"]),
        "stim_id": torch.arange(batch_size),
        "subject": torch.ones(batch_size, dtype=torch.int64),
    }
    for name, shape in shapes["target_shapes"].items():
        batch[name] = (
            torch.rand(batch_size, *shape)
            if name.startswith(("pixels:", "frames:"))
            else (torch.randn(batch_size, *shape))
        )
    return batch


class StepTimer(L.Callback):
    """Times the trainer's own training steps (forward, loss, backward, optimizer and scheduler step).

    Step 0 runs under ``FlopCounterMode`` (and is not timed); steps ``warmup..`` are timed.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.flops = warmup, [], 0
        self._counter: FlopCounterMode | None = None
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, i: int) -> None:
        """Starts the FLOP counter (step 0) or the clock."""
        if i == 0:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        """Stops the counter, or records the step time."""
        elapsed = time.perf_counter() - self._start
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops, self._counter = int(self._counter.get_total_flops()), None
        elif i >= self.warmup:
            self.times.append(elapsed)


def time_steps(
    model: L.LightningModule, batch: dict[str, torch.Tensor], warmup: int, steps: int
) -> tuple[float, int]:
    """Median seconds of one training step as ``Trainer.fit`` runs it, and the matmul/conv FLOPs of a step.

    The method's own ``training_step``, optimizer and schedule run (scheduled over these steps), on the same
    synthetic batch each step; logging, checkpoints and validation are off.
    """
    warmup = max(1, warmup)  # step 0 counts FLOPs, untimed
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=DataLoader([batch] * (warmup + steps), batch_size=None))
    return statistics.median(timer.times), timer.flops


def prepared_subject(home: Path, dataset: str) -> Path | None:
    """Subject 1 of ``dataset`` as ``make bench`` prepared it under ``home`` (newest version), or None."""
    manifests = sorted(home.glob(f"prepared/{dataset}-*/subj01/manifest.json"))
    return manifests[-1].parent if manifests else None


def loader_rate(prepared: Path, config: dict[str, Any], epochs: int = 2) -> float:
    """Samples/s of the method's training stream (the last of ``epochs`` passes)."""
    data = dict(config.get("data") or {})
    datamodule = FMRIDataModule(
        prepared,
        backbone=data.pop("backbone"),
        **{
            k: v
            for k, v in data.items()
            if k in ("targets", "batch_size", "shuffle_buffer", "train_sessions")
        },
    )
    datamodule.prepare_data(progress=False)
    datamodule.setup("fit")
    rate = 0.0
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for batch in datamodule.train_dataloader():
            n += len(batch["stim_id"])
        rate = n / (time.perf_counter() - start)
    return rate


def measure_method(method: str, scale: str, args: argparse.Namespace, peak: float) -> dict[str, Any] | None:
    """One row of the table, or ``None`` for a method without a training step."""
    config = load_method_config(method, scale)
    shapes = scale_shapes(config)
    torch.manual_seed(0)
    model = build_method(
        config, shapes["n_voxels"], shapes["target_shapes"], rois=synthetic_rois(shapes["n_voxels"])
    )
    if not any(p.requires_grad for p in model.parameters()):
        print(f"{method:>12}: skipped (closed form, no training step)")
        return None
    model.train()
    batch_size = int(args.batch_size or (config.get("data") or {}).get("batch_size", 64))
    batch = synthetic_batch(shapes, batch_size)
    seconds, flops = time_steps(model, batch, args.warmup, args.steps)
    row: dict[str, Any] = {
        "method": method,
        "scale": scale,
        "n_params": sum(p.numel() for p in model.parameters()),
        "batch_size": batch_size,
        "step_ms": round(seconds * 1e3, 2),
        "step_samples_per_s": round(batch_size / seconds, 1),
        "gflop_per_step": round(flops / 1e9, 3),
        "gflops_achieved": round(flops / seconds / 1e9, 2),
        "matmul_peak_gflops": round(peak, 2),
        "pct_of_peak": round(100 * flops / seconds / 1e9 / peak, 1),
    }
    prepared = prepared_subject(args.home, str(config.get("dataset", "world-nsd")))
    if prepared is not None and scale == "world":
        rate = loader_rate(prepared, config)
        row["loader_samples_per_s"] = round(rate, 1)
        row["loader_over_step"] = round(rate / row["step_samples_per_s"], 2)
    return row


def main() -> None:
    """Measures every requested method and prints (and optionally saves) the table."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method with the scale")
    parser.add_argument("--scale", default="world", help="config name: world (default) or nsd")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--peak-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--home",
        type=Path,
        default=default_home(),
        help="brainbench home whose prepared world subjects give the loader rates (default: %(default)s)",
    )
    parser.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods or [m for m in list_methods() if args.scale in list_scales(m)]
    peak = matmul_peak_gflops(args.peak_size)
    print(f"float32 matmul peak ({args.peak_size}^3, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s")
    rows = [row for m in methods if (row := measure_method(m, args.scale, args, peak)) is not None]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row.get(c, "")) for c in columns))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
