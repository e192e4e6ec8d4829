"""``brainbench bench``: train one method on one subject, evaluate it, append a leaderboard row.

The flow is DESIGN.md's, one direction: raw data (the embedded world, generated on demand, or a real copy
under ``--data-root``) -> dataset adapter -> shards -> :class:`FMRIDataModule` -> method -> predictions on
the test split -> :func:`brainbench.eval.evaluator.evaluate` -> ``leaderboards/<dataset>/retrieval.csv``.
Every step that is already done (world, prepared shards, feature cache) is reused, so a second run only
trains and evaluates.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from filelock import FileLock

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.data.registry import DATASETS, get_dataset, obtain_raw, prepare
from brainbench.describe import describe
from brainbench.errors import ConfigError
from brainbench.eval.evaluator import EvalResult
from brainbench.eval.scoring import evaluate_test_split
from brainbench.generators.run import generate_images
from brainbench.leaderboard.store import RunRecord, append_row, new_run_id
from brainbench.methods import build_method, load_method_config
from brainbench.methods.base import DecoderModule
from brainbench.pretraining import run_pretraining
from brainbench.training import build_trainer, compile_model, peak_memory_mb, predict_test, quiet_lightning

__all__ = ["DATASETS", "BenchRequest", "run_bench", "describe", "format_summary"]


def default_home() -> Path:
    """Where worlds, prepared shards and caches go: ``$BRAINBENCH_HOME`` or ``~/.cache/brainbench``."""
    return Path(os.environ.get("BRAINBENCH_HOME", Path.home() / ".cache" / "brainbench"))


@dataclass
class BenchRequest:
    """One ``brainbench bench`` run.

    Attributes:
        method: method id (``brainbench list``), e.g. ``litemind``.
        subject: 1-based subject number.
        dataset: a name of :data:`brainbench.data.registry.DATASETS`: ``world-nsd`` (the embedded world),
            ``world-god``, ``world-cc2017``, or a real copy under ``data_root`` (``nsd``, ``god``,
            ``cc2017``);
            default: the world config's ``dataset`` entry, else ``world-nsd``.
        config: a config name of the method (``world``, ``nsd``) or a path to a YAML file;
            default: ``world`` for world datasets, else the dataset name.
        generator: overrides the kind of the config's ``generator`` section (``retrieval``,
            ``world-decoder``, ...).
        data_root: root of a real dataset copy (required for the real datasets).
        world_preset: size of the embedded world (``small``; ``tiny`` for tests).
        backbone: overrides the config's backbone id.
        seed: global seed (data order, initialisation).
        home: cache folder for worlds, shards and features (:func:`default_home`).
        leaderboards: folder of the leaderboard CSVs.
        runs: folder of run outputs (logs, checkpoints, the trained decoder, result.json).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Lightning devices (per node).
        num_nodes: nodes of a multi-node job; Lightning reads the rank layout from the launcher's environment
            (``torchrun``: TorchElasticEnvironment, ``srun``: SLURMEnvironment).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ...); default: bf16 autocast on GPUs
            that support it, float32 on CPU (:func:`brainbench.training.trainer_precision`).
        compile: ``torch.compile`` the model's forward (:func:`brainbench.training.compile_model`; for GPUs).
        strategy: Lightning strategy (``auto``, ``ddp``, ...); ``ddp`` on CPU runs gloo processes started by
            Lightning's fork launcher (:func:`trainer_strategy`).
        num_workers: DataLoader workers.
        val_fraction: share of the training stimuli (images, GOD categories, CC2017 movies) held out for
            validation when the dataset is prepared; ``None`` keeps the adapter's default (5 %).
        progress: progress bars and messages.
    """

    method: str
    subject: int = 1
    dataset: str | None = None
    config: str | None = None
    data_root: Path | None = None
    world_preset: str = "small"
    backbone: str | None = None
    seed: int = 0
    home: Path = field(default_factory=default_home)
    leaderboards: Path = Path("leaderboards")
    runs: Path = Path("runs")
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str | None = None
    compile: bool = False
    strategy: str = "auto"
    num_workers: int = 0
    val_fraction: float | None = None
    generator: str | None = None
    progress: bool = True


def say(request: BenchRequest, message: str) -> None:
    if request.progress:
        print(f"[brainbench] {message}", flush=True)


def home_lock(request: BenchRequest, name: str) -> FileLock:
    """A lock in ``<home>/locks/``: one process generates, prepares or caches a dataset, the others wait.

    Concurrent runs, and the ranks of a ``torchrun``/``srun`` job (each runs ``bench``), share the home.
    """
    (request.home / "locks").mkdir(parents=True, exist_ok=True)
    return FileLock(request.home / "locks" / f"{name}.lock")


def prepare_dataset(request: BenchRequest) -> Path:
    """Makes sure the prepared shards of ``(dataset, subject)`` exist and returns their folder."""
    request = replace(request, dataset=request.dataset or "world-nsd")
    with home_lock(request, f"{request.dataset}-{request.world_preset}"):  # the world root is shared
        return _prepare_dataset(request)


def _prepare_dataset(request: BenchRequest) -> Path:
    entry = get_dataset(str(request.dataset))
    if entry.is_world:
        say(request, f"{entry.name} ({request.world_preset}), subject {request.subject}")
    raw_root, version, options = obtain_raw(
        entry,
        request.subject,
        home=request.home,
        preset=request.world_preset,
        data_root=request.data_root,
        progress=request.progress,
    )
    if request.val_fraction is not None:
        options["val_fraction"] = request.val_fraction
    prepared = request.home / "prepared" / f"{request.dataset}-{version}" / f"subj{request.subject:02d}"
    if (prepared / "manifest.json").is_file():
        recorded = Manifest.load(prepared).source.get("options", {})
        changed = {k: (recorded.get(k), v) for k, v in options.items() if k in recorded and recorded[k] != v}
        if changed:
            raise ConfigError(
                f"{prepared} was prepared with other options {changed} (recorded, requested); delete it or "
                "use another --home to prepare it again"
            )
        return prepared
    say(request, f"preparing {request.dataset} subject {request.subject} -> {prepared}")
    progress = request.progress
    prepare(entry, raw_root, request.subject, prepared, version=version, options=options, progress=progress)
    return prepared


def load_config(request: BenchRequest) -> dict[str, Any]:
    """The method config named (or pointed at) by the request."""
    dataset = request.dataset or "world-nsd"
    name = request.config or ("world" if dataset.startswith("world") else dataset)
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        config = yaml.safe_load(path.read_text())
        config["path"] = str(path)
        return config
    return load_method_config(request.method, name)


def resolve_request(request: BenchRequest) -> tuple[BenchRequest, dict[str, Any]]:
    """The request with its dataset filled in (the config's ``dataset`` when not given), and its config."""
    config = load_config(request)
    if request.dataset is None:
        request = replace(request, dataset=str(config.get("dataset", "world-nsd")))
    if request.generator is not None:
        if not config.get("generator"):
            raise ConfigError(
                f"--generator {request.generator}: the {request.method} config has no generator section "
                "(the method predicts no embedding a generator is set up for)"
            )
        config["generator"] = {**config["generator"], "kind": request.generator}
    return request, config


def config_name(config: dict[str, Any]) -> str:
    """The config's name for the leaderboard (``world``, ``world-image-only``, ... or a YAML file's stem)."""
    return Path(config["path"]).stem


def run_bench(request: BenchRequest) -> tuple[dict[str, Any], EvalResult]:
    """Runs the whole benchmark for one request; returns the leaderboard row and the evaluation.

    Under DDP only rank 0 evaluates, appends the row and saves the model; with the fork launcher used on CPU
    the calling process is rank 0, and with Lightning's script launcher (GPUs) the other ranks return an
    empty row and evaluation without writing.
    """
    t_start = time.time()
    quiet_lightning()
    request, config = resolve_request(request)
    prepared = prepare_dataset(request)
    manifest = Manifest.load(prepared)
    data_cfg = dict(config.get("data") or {})
    backbone = request.backbone or data_cfg.pop("backbone")
    data_cfg.pop("backbone", None)
    L.seed_everything(request.seed, workers=True, verbose=False)
    datamodule = FMRIDataModule(
        prepared, backbone=backbone, num_workers=request.num_workers, seed=request.seed, **data_cfg
    )
    say(request, f"backbone {backbone}: feature cache")
    with home_lock(request, f"features-{prepared.parent.name}-{prepared.name}"):
        datamodule.prepare_data(progress=request.progress)
    datamodule.setup("fit")
    model: DecoderModule = build_method(
        config, datamodule.n_voxels, datamodule.target_shapes(), rois=manifest.rois
    )
    run_id = new_run_id()
    run_dir = request.runs / run_id
    t_train = time.time()
    if config.get("pretrain"):
        run_pretraining(request, config, model, backbone, data_cfg, run_dir)
    trainer, best = build_trainer(request, model, run_dir, config)
    if request.compile:
        compile_model(model, request)
    say(request, f"training {model.method_id} ({model.n_parameters():,} parameters), run {run_id}")
    model.fit(trainer, datamodule)
    train_seconds = time.time() - t_train
    if best is not None and best.best_model_path:  # test the checkpoint chosen on validation, never the last
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        score = best.best_model_score  # None after a forked DDP fit: Lightning returns only the path
        say(request, f"kept the checkpoint with the best {model.monitor}: {float(score or float('nan')):.4f}")
    predictions = predict_test(trainer, model, datamodule)
    if trainer.global_rank != 0:  # DDP ranks other than 0 (Lightning's script launcher): rank 0 writes
        return {}, EvalResult()
    stim_ids = predictions.pop("stim_id").numpy()
    generator = generate_images(
        config, predictions, stim_ids, datamodule, backbone, run_dir, request.seed, lambda m: say(request, m)
    )
    assert datamodule.cache is not None
    targets = datamodule.cache.lookup(stim_ids)
    result, absent = evaluate_test_split(predictions, targets, manifest, prepared, stim_ids, backbone)
    record = replace(
        RunRecord.new(
            method=model.method_id,
            method_version=model.method_version,
            dataset=manifest.dataset,
            dataset_version=manifest.dataset_version,
            split=f"{manifest.split_name}/test",
            subject=f"subj{request.subject:02d}",
            backbone=backbone,
            seed=request.seed,
            n_train_samples=datamodule.split_size("train"),
            n_params=model.n_parameters(),
            train_seconds=round(train_seconds, 2),
            peak_memory_mb=round(peak_memory_mb(), 1),
        ),
        run_id=run_id,
    )
    row = {**record.to_row(result.values), "config": config_name(config), "generator": generator}
    csv_path = request.leaderboards / manifest.dataset / f"{get_dataset(request.dataset).task}.csv"
    append_row(csv_path, row)
    model.save_pretrained(run_dir / "model")
    (run_dir / "result.json").write_text(
        json.dumps(
            {
                "row": row,
                "chance": result.chance,
                "absent_metrics": absent,
                "config": config,
                "n_test": int(len(stim_ids)),
                "precision": str(trainer.precision),
                "compile": request.compile,
                "total_seconds": round(time.time() - t_start, 1),
            },
            indent=2,
            default=str,
        )
    )
    return row, result


def format_summary(result: EvalResult, row: dict[str, Any], leaderboards: Path) -> str:
    """A short table of the headline numbers (top-1 and 2-way) with their chance levels."""
    lines = [
        f"\n{row['method']} on {row['dataset']} {row['dataset_version']} {row['subject']} "
        f"({row['split']}): trained in {row['train_seconds']:.0f}s, run {row['run_id']}",
        f"row appended to {leaderboards / str(row['dataset']) / get_dataset(str(row['dataset'])).task}.csv",
        f"{'metric':<72} {'value':>8} {'chance':>8} {'x chance':>9}",
    ]
    for key in sorted(result.values):
        if "top5" in key:
            continue
        value, chance = result.values[key], result.chance[key]
        if chance != chance:  # NaN: no chance level defined (distances, FID, SSIM)
            lines.append(f"{key:<72} {value:8.4f} {'':>8} {'':>9}")
        else:
            lines.append(f"{key:<72} {value:8.4f} {chance:8.4f} {value / chance:9.1f}")
    return "\n".join(lines)
