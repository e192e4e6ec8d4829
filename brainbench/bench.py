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
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from safetensors.torch import save_file

from brainbench.config import load_run_config
from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.data.preparation import home_lock
from brainbench.data.registry import DATASETS, leaderboard_task
from brainbench.errors import BrainbenchError, DataFormatError, MissingFileError, RunInterrupted, reading
from brainbench.eval.evaluator import EvalResult
from brainbench.eval.scoring import evaluate_test_split
from brainbench.generators.run import generate_images
from brainbench.leaderboard.store import RunRecord, append_row, check_leaderboard
from brainbench.methods import build_method
from brainbench.methods.base import DecoderModule
from brainbench.model_card import inference_record, write_model_card
from brainbench.pretraining import run_pretraining
from brainbench.progress import show_progress
from brainbench.request import BenchRequest, config_name
from brainbench.runs import RESULT_FILE, RunFolder, launch_id, open_run, open_shared_run
from brainbench.training import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    TrainerFactory,
    best_checkpoint,
    compile_model,
    external_rank,
    interrupted_by,
    peak_memory_mb,
    predict_test,
    quiet_lightning,
    resumed_progress,
)

__all__ = ["DATASETS", "BenchRequest", "run_bench", "format_summary"]

PREDICTIONS_FILE = "predictions.safetensors"

log = logging.getLogger("brainbench")


def run_bench(
    request: BenchRequest, config: dict[str, Any] | None = None
) -> tuple[dict[str, Any], EvalResult]:
    """Runs the whole benchmark for one request; returns the leaderboard row and the evaluation.

    The run folder (``runs/<run id>``) gets ``run.json`` first, then checkpoints and logs while training, then
    the model and ``result.json``, and only then the leaderboard row: an append that fails loses nothing.
    ``request.resume`` continues an interrupted run from its ``last.ckpt`` under its run id.

    ``config`` is the checked method config (:func:`brainbench.config.parse_bench_args` gives it with the
    command line's overrides merged); by default it is read from ``request.config``.

    Under DDP only rank 0 evaluates, appends the row and saves the model; with the fork launcher used on CPU
    the calling process is rank 0, and with Lightning's script launcher (GPUs) the other ranks return an
    empty row and evaluation without writing.
    """
    t_start = time.time()
    quiet_lightning()
    show_progress(request.progress)
    if config is None:
        request, config = load_run_config(request)
    prepared = request.prepared_folder()
    manifest = Manifest.load(prepared)
    csv_path = leaderboard_csv(request.leaderboards, manifest)
    check_leaderboard(csv_path)  # a broken leaderboard fails now, not after training
    data_cfg = dict(config.get("data") or {})
    backbone = request.backbone or data_cfg.pop("backbone")
    data_cfg.pop("backbone", None)
    L.seed_everything(request.seed, workers=True, verbose=False)
    datamodule = FMRIDataModule(
        prepared, backbone=backbone, num_workers=request.num_workers, seed=request.seed, **data_cfg
    )
    log.info("backbone %s: feature cache", backbone)
    with home_lock(request.home, f"features-{prepared.parent.name}-{prepared.name}"):
        datamodule.prepare_data(progress=request.progress)
    datamodule.setup("fit")
    # again: building the feature cache on a first run draws random numbers that a rerun (cache present)
    # does not, and the model's initialisation must not depend on which of the two this is
    L.seed_everything(request.seed, workers=True, verbose=False)
    model: DecoderModule = build_method(
        config, datamodule.n_voxels, datamodule.target_shapes(), rois=manifest.rois
    )
    run = open_run_folder(request, config)
    make_trainer = TrainerFactory(request.run_settings(config))
    t_train = time.time()
    if config.get("pretrain"):
        run_pretraining(request, config, model, backbone, data_cfg, make_trainer, run.path)
    monitor = (model.monitor, model.monitor_mode) if model.monitor else None
    trainer = make_trainer(run.path, monitor=monitor, resume=run.resumed)
    resumed_epochs, earlier_seconds = resumed_progress(trainer)
    if request.compile:
        compile_model(model, make_trainer.settings)
    verb = "resuming" if run.resumed else "training"
    log.info("%s %s (%s parameters), run %s", verb, model.method_id, f"{model.n_parameters():,}", run.run_id)
    try:
        model.fit(trainer, datamodule)
    except (SystemExit, KeyboardInterrupt):  # Lightning's exits on SIGTERM and SIGINT
        signal_name = interrupted_by(trainer)
        if signal_name is None:
            raise
        raise RunInterrupted(
            signal_name, run.run_id, str(run.path / CHECKPOINT_DIR / LAST_CHECKPOINT)
        ) from None
    trainer.ckpt_path = None  # predict with the weights chosen below, never by reloading last.ckpt
    train_seconds = earlier_seconds + time.time() - t_train
    best = best_checkpoint(trainer)
    if best is not None and best.best_model_path:  # test the checkpoint chosen on validation, never the last
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        score = best.best_model_score  # None after a forked DDP fit: Lightning returns only the path
        log.info("kept the checkpoint with the best %s: %.4f", model.monitor, float(score or float("nan")))
    predictions = predict_test(trainer, model, datamodule)
    if trainer.global_rank != 0:  # DDP ranks other than 0 (Lightning's script launcher): rank 0 writes
        return {}, EvalResult()
    stim_ids = predictions.pop("stim_id").numpy()
    if request.save_predictions:
        save_predictions(run.path / PREDICTIONS_FILE, predictions, stim_ids)
    generator = generate_images(
        config, predictions, stim_ids, datamodule, backbone, run.path, request.seed, log.info
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
        run_id=run.run_id,
    )
    row = {
        **record.to_row(result.values),
        "config": config_name(config),
        "generator": generator,
        "distributed": distributed_label(trainer, request.strategy),
    }
    model.save_pretrained(run.path / "model")
    write_model_card(
        run.path / "model",
        row=row,
        paper=model.paper,
        fidelity=model.fidelity,
        config=config,
        inference=inference_record(
            manifest, backbone, datamodule.target_shapes(), generator, config.get("generator")
        ),
    )
    (run.path / RESULT_FILE).write_text(
        json.dumps(
            {
                "row": row,
                "leaderboard": str(csv_path),
                "chance": result.chance,
                "absent_metrics": absent,
                "config": config,
                "n_test": int(len(stim_ids)),
                "precision": str(trainer.precision),
                "compile": request.compile,
                "resumed_after_epochs": resumed_epochs if run.resumed else None,
                "total_seconds": round(time.time() - t_start, 1),
            },
            indent=2,
            default=str,
        )
    )
    append_result(run.path)
    return row, result


def append_result(run_dir: Path) -> dict[str, Any]:
    """Appends the row of a finished run (its ``result.json``) to its leaderboard; returns the row.

    ``bench`` calls it last; after a failed append (a locked or hand-broken CSV) the same call files the
    row later (``brainbench leaderboard append runs/<id>``), since the model and result are saved first.

    Raises:
        MissingFileError: ``run_dir`` has no ``result.json`` (the run did not finish).
        DataFormatError: the leaderboard CSV cannot take the row; the message says the run is kept.
    """
    path = run_dir / RESULT_FILE
    if not path.is_file():
        raise MissingFileError(path, "finish the run first (`brainbench bench ... --resume latest`)")
    with reading(path, f"rerun it (`brainbench bench ... --resume {run_dir.name}`) to write it again"):
        result = json.loads(path.read_text(encoding="utf-8"))
        leaderboard, row = result["leaderboard"], dict(result["row"])
    try:
        append_row(leaderboard, row)
    except BrainbenchError as error:
        raise DataFormatError(
            leaderboard,
            f"the row of run {run_dir.name} was not appended ({error})",
            f"the model and result are kept in {run_dir}; after repairing the CSV run "
            f"`brainbench leaderboard append {run_dir}`",
        ) from error
    return row


def distributed_label(trainer: L.Trainer, strategy: str) -> str:
    """``<strategy>:<nodes>x<devices>`` for a multi-process run, blank for one process.

    The leaderboard keeps rows apart by it, so a DDP row never replaces (or averages with) a single-process
    row of the same seed.
    """
    if trainer.world_size == 1:
        return ""
    return f"{strategy}:{trainer.num_nodes}x{trainer.num_devices}"


def open_run_folder(request: BenchRequest, config: dict[str, Any]) -> RunFolder:
    """The run's folder (new or resumed); the ranks of a ``torchrun``/``srun`` launch share rank 0's."""
    identity = request.identity(config)
    rank, launch = external_rank(), launch_id()
    if rank is None or launch is None:
        return open_run(request.runs, identity, config, request.resume)
    return open_shared_run(
        request.runs,
        identity,
        config,
        request.resume,
        rank=rank,
        launch=launch,
        rendezvous=request.home / "launches",
    )


def save_predictions(path: Path, predictions: dict[str, torch.Tensor], stim_ids: np.ndarray) -> None:
    """The embeddings a row is scored on, by name, plus ``stim_id``: the ``brainbench evaluate`` format."""
    tensors = {name: value.contiguous() for name, value in predictions.items() if value.is_floating_point()}
    save_file({**tensors, "stim_id": torch.from_numpy(np.ascontiguousarray(stim_ids))}, str(path))


def leaderboard_csv(leaderboards: Path, manifest: Manifest) -> Path:
    """``<leaderboards>/<dataset>/<task>.csv``, the file a run on this prepared folder appends to."""
    return Path(leaderboards) / manifest.dataset / f"{leaderboard_task(manifest)}.csv"


def format_summary(result: EvalResult, row: dict[str, Any], csv_path: Path) -> str:
    """A short table of the headline numbers (top-1 and 2-way) with their chance levels."""
    lines = [
        f"\n{row['method']} on {row['dataset']} {row['dataset_version']} {row['subject']} "
        f"({row['split']}): trained in {row['train_seconds']:.0f}s, run {row['run_id']}",
        f"row appended to {csv_path}",
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
