"""``brainbench bench``: train one method on one subject, evaluate it, append a leaderboard row.

The flow is DESIGN.md's, one direction: raw data (the embedded world, generated on demand, or a real copy
under ``--data-root``) -> dataset adapter -> shards -> :class:`FMRIDataModule` -> method -> predictions on
the test split -> :func:`brainbench.eval.evaluator.evaluate` -> ``leaderboards/<dataset>/retrieval.csv``.
Every step that is already done (world, prepared shards, feature cache) is reused, so a second run only
trains and evaluates.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy, Strategy

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.data.registry import DATASETS, get_dataset, obtain_raw, prepare
from brainbench.errors import ConfigError, DataFormatError
from brainbench.eval.evaluator import EvalResult
from brainbench.eval.scoring import evaluate_test_split
from brainbench.leaderboard.store import RunRecord, append_row, new_run_id
from brainbench.methods import build_method, load_method_config
from brainbench.methods.base import DecoderModule

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
        dataset: a name of :data:`brainbench.data.registry.DATASETS`: ``world-nsd`` (the embedded world,
            default), ``world-god``, ``world-cc2017``, or a real copy under ``data_root`` (``nsd``, ``god``,
            ``cc2017``).
        config: a config name of the method (``world``, ``nsd``) or a path to a YAML file;
            default: ``world`` for world datasets, else the dataset name.
        data_root: root of a real dataset copy (required for the real datasets).
        world_preset: size of the embedded world (``small``; ``tiny`` for tests).
        backbone: overrides the config's backbone id.
        seed: global seed (data order, initialisation).
        home: cache folder for worlds, shards and features (:func:`default_home`).
        leaderboards: folder of the leaderboard CSVs.
        runs: folder of run outputs (logs, checkpoints, the trained decoder, result.json).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: Lightning devices.
        strategy: Lightning strategy (``auto``, ``ddp``, ...); ``ddp`` on CPU runs gloo processes started by
            Lightning's fork launcher (:func:`trainer_strategy`).
        num_workers: DataLoader workers.
        val_fraction: share of the training stimuli (images, GOD categories, CC2017 movies) held out for
            validation when the dataset is prepared; ``None`` keeps the adapter's default (5 %).
        progress: progress bars and messages.
    """

    method: str
    subject: int = 1
    dataset: str = "world-nsd"
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
    strategy: str = "auto"
    num_workers: int = 0
    val_fraction: float | None = None
    progress: bool = True


def _say(request: BenchRequest, message: str) -> None:
    if request.progress:
        print(f"[brainbench] {message}", flush=True)


def prepare_dataset(request: BenchRequest) -> Path:
    """Makes sure the prepared shards of ``(dataset, subject)`` exist and returns their folder."""
    entry = get_dataset(request.dataset)
    if entry.is_world:
        _say(request, f"{entry.name} ({request.world_preset}), subject {request.subject}")
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
    _say(request, f"preparing {request.dataset} subject {request.subject} -> {prepared}")
    progress = request.progress
    prepare(entry, raw_root, request.subject, prepared, version=version, options=options, progress=progress)
    return prepared


def load_config(request: BenchRequest) -> dict[str, Any]:
    """The method config named (or pointed at) by the request."""
    name = request.config or ("world" if request.dataset.startswith("world") else request.dataset)
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        config = yaml.safe_load(path.read_text())
        config["path"] = str(path)
        return config
    return load_method_config(request.method, name)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _merge_sorted(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenates prediction batches and sorts them by ``stim_id``, refusing duplicated stimuli."""
    batches = [b for b in batches if len(b["stim_id"])]
    if not batches:
        raise DataFormatError("test split", "no test predictions were made", "check the prepared test shards")
    merged = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
    order = torch.argsort(merged["stim_id"])
    merged = {key: value[order] for key, value in merged.items()}
    if len(torch.unique(merged["stim_id"])) != len(merged["stim_id"]):
        raise RuntimeError("a test stimulus was predicted twice: the ranks' test shares overlap")
    return merged


class GatherPredictions(BasePredictionWriter):
    """Gathers every rank's test predictions on rank 0, which saves them sorted by ``stim_id``.

    Lightning's ``predict`` under DDP returns only the local rank's predictions (and, with the process
    launchers, only rank 0's reach the calling process), so each rank sends its batches to rank 0
    (``all_gather_object``: the ranks hold different counts, a rank may hold none) and rank 0 writes the
    merged tensors to ``path`` for the caller. The test loader splits samples by rank without padding,
    so no stimulus is repeated (checked).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(write_interval="epoch")
        self.path = path

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        """Collects the ranks' predictions; rank 0 merges and saves them."""
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        local = [{k: v.detach().cpu() for k, v in b.items()} for b in batches]
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, local)
        if trainer.global_rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(_merge_sorted([b for rank in gathered for b in rank]), self.path)


def predict_test(
    trainer: L.Trainer, model: DecoderModule, datamodule: FMRIDataModule
) -> dict[str, torch.Tensor]:
    """Predictions on the test split (repeat-averaged voxels), sorted by ``stim_id``.

    Under DDP the ranks' predictions are gathered on rank 0 (:class:`GatherPredictions`); the other ranks
    get an empty dict. The datamodule (not a loader) is passed so each process builds its own rank's loader.
    """
    if trainer.world_size == 1:
        return _merge_sorted(trainer.predict(model, datamodule=datamodule))
    path = Path(trainer.default_root_dir) / "test_predictions.pt"
    writer = GatherPredictions(path)
    # predict logs nothing, and a forked rank's fresh CSV logger would overwrite the fit's metrics.csv
    loggers, trainer.loggers = trainer.loggers, []
    trainer.callbacks.append(writer)
    try:
        trainer.predict(model, datamodule=datamodule, return_predictions=False)
    finally:
        trainer.callbacks.remove(writer)
        trainer.loggers = loggers
    if trainer.global_rank != 0:
        return {}
    predictions = torch.load(path, map_location="cpu", weights_only=True)
    path.unlink()
    return predictions


def _quiet_lightning() -> None:
    """Silences Lightning's tips and the warnings that are expected for these modules and loaders."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (
        r".*`validation_step` but have no `val_dataloader`",
        r".*configure_optimizers.*returned `None`",
        r".*`IterableDataset` has `__len__` defined",
        r".*with_length\(\) only sets the value",
        r".*isinstance\(treespec, LeafSpec\)",
        r".*smaller than the logging interval",
        r".*It is recommended to use `self.log\(.*sync_dist=True\)`",  # ridge logs values already reduced
        r".*Couldn't infer the batch indices",
    ):
        warnings.filterwarnings("ignore", message=message)


def trainer_strategy(request: BenchRequest) -> str | Strategy:
    """The Lightning strategy of a request: ``ddp`` on CPU becomes DDP over gloo with the fork launcher.

    Lightning's default launcher for ``ddp`` re-runs the command line (``sys.argv``) once per extra rank:
    right for ``brainbench bench`` on GPUs, but a Python API call or pytest would re-run the caller's
    script or the whole test session. ``ddp_spawn`` pickles the trainer, model and datamodule and
    re-imports everything in fresh interpreters (seconds per call, and a ``__main__`` guard in scripts).
    Lightning's fork launcher (``start_method="fork"``, i.e. ``ddp_fork``) starts the ranks from the
    calling process as it is, so it works the same from the CLI, the Python API and pytest; it cannot be
    used once CUDA is initialised, hence CPU only. Each ``fit``/``predict`` call forks its ranks and only
    the fitted weights, the best checkpoint path and rank 0's results come back, which is why ridge solves
    inside ``fit`` and test predictions are gathered to a file (:class:`GatherPredictions`).
    """
    on_cpu = request.accelerator == "cpu" or (request.accelerator == "auto" and not torch.cuda.is_available())
    if request.strategy == "ddp" and on_cpu:
        return DDPStrategy(start_method="fork", process_group_backend="gloo")
    return request.strategy


def build_trainer(
    request: BenchRequest, model: DecoderModule, run_dir: Path, config: dict[str, Any]
) -> tuple[L.Trainer, ModelCheckpoint | None]:
    """The Lightning trainer of a run, and the callback keeping the best-validation weights if monitored."""
    best = None
    if model.monitor is not None:
        best = ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor=model.monitor,
            mode=model.monitor_mode,
            save_top_k=1,
            save_weights_only=True,
        )
    trainer = L.Trainer(
        callbacks=[best] if best else [],
        enable_checkpointing=best is not None,
        **{
            "accelerator": request.accelerator,
            "devices": request.devices,
            "strategy": trainer_strategy(request),
            "default_root_dir": run_dir,
            "logger": CSVLogger(run_dir, name="logs", version=""),
            "enable_progress_bar": request.progress,
            "enable_model_summary": request.progress,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 5,
            "deterministic": False,
            # the datamodule splits every loader by rank itself (no padding, no duplicated samples)
            "use_distributed_sampler": False,
            **(config.get("trainer") or {}),
        },
    )
    return trainer, best


def run_bench(request: BenchRequest) -> tuple[dict[str, Any], EvalResult]:
    """Runs the whole benchmark for one request; returns the leaderboard row and the evaluation.

    Under DDP only rank 0 evaluates, appends the row and saves the model; with the fork launcher used on CPU
    the calling process is rank 0, and with Lightning's script launcher (GPUs) the other ranks return an
    empty row and evaluation without writing.
    """
    t_start = time.time()
    _quiet_lightning()
    config = load_config(request)
    prepared = prepare_dataset(request)
    manifest = Manifest.load(prepared)
    data_cfg = dict(config.get("data") or {})
    backbone = request.backbone or data_cfg.pop("backbone")
    data_cfg.pop("backbone", None)
    L.seed_everything(request.seed, workers=True, verbose=False)
    datamodule = FMRIDataModule(
        prepared, backbone=backbone, num_workers=request.num_workers, seed=request.seed, **data_cfg
    )
    _say(request, f"backbone {backbone}: feature cache")
    datamodule.prepare_data(progress=request.progress)
    datamodule.setup("fit")
    model: DecoderModule = build_method(config, datamodule.n_voxels, datamodule.target_shapes())
    run_id = new_run_id()
    run_dir = request.runs / run_id
    trainer, best = build_trainer(request, model, run_dir, config)
    _say(request, f"training {model.method_id} ({model.n_parameters():,} parameters), run {run_id}")
    t_train = time.time()
    model.fit(trainer, datamodule)
    train_seconds = time.time() - t_train
    if best is not None and best.best_model_path:  # test the checkpoint chosen on validation, never the last
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        score = best.best_model_score  # None after a forked DDP fit: Lightning returns only the path
        _say(
            request, f"kept the checkpoint with the best {model.monitor}: {float(score or float('nan')):.4f}"
        )
    predictions = predict_test(trainer, model, datamodule)
    if trainer.global_rank != 0:  # DDP ranks other than 0 (Lightning's script launcher): rank 0 writes
        return {}, EvalResult()
    stim_ids = predictions.pop("stim_id").numpy()
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
            peak_memory_mb=round(_peak_memory_mb(), 1),
        ),
        run_id=run_id,
    )
    row = record.to_row(result.values)
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


def describe(method: str, scale: str) -> dict[str, Any]:
    """Builds a method at a config's scale without data and reports its size."""
    config = load_method_config(method, scale)
    info = scale_shapes(config)
    model = build_method(config, info["n_voxels"], info["target_shapes"])
    return {
        "method": method,
        "scale": scale,
        "class": config["model"]["class_path"],
        "n_voxels": info["n_voxels"],
        "target_shapes": info["target_shapes"],
        "n_params": model.n_parameters(),
        "paper": model.paper,
        "fidelity": model.fidelity,
    }


SCALE_SHAPES: dict[str, dict[str, Any]] = {
    # NSD subj01 nsdgeneral voxels; ViT-L/14 (openai) all tokens and pooled embedding.
    "nsd": {"n_voxels": 15724, "target_shapes": {"clip_tokens": (257, 768), "clip_image": (768,)}},
    # The small world: subject 1's nsdgeneral voxels; world-CLIP tokens and pooled embedding.
    "world": {"n_voxels": 2520, "target_shapes": {"clip_tokens": (65, 128), "clip_image": (128,)}},
}


def scale_shapes(config: dict[str, Any]) -> dict[str, Any]:
    """Data-dependent sizes of a config's scale (the ``nsd`` or ``world`` entry of :data:`SCALE_SHAPES`)."""
    scale = Path(config["path"]).stem
    if scale not in SCALE_SHAPES:
        raise ConfigError(f"no reference shapes for scale {scale!r}; known: {sorted(SCALE_SHAPES)}")
    return SCALE_SHAPES[scale]
