"""Pre-training a method on other subjects before it is fitted to the requested one (a config's ``pretrain``).

``pretrain: {subjects: others}`` (every world subject but the requested one) or a list of subjects: each is
prepared like the requested subject, gets its own :class:`FMRIDataModule` (same backbone and targets, every
session), and the method's :meth:`~brainbench.methods.base.DecoderModule.pretrain` receives them all with a
trainer factory and a cache folder keyed by everything that determines the pre-trained weights, so later
runs and ablations that share them skip pre-training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.preparation import home_lock
from brainbench.data.registry import get_dataset
from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule
from brainbench.training import CHECKPOINT_DIR, TrainerFactory

log = logging.getLogger("brainbench")

if TYPE_CHECKING:
    from brainbench.request import BenchRequest


def pretrain_subjects(request: BenchRequest, spec: dict[str, Any]) -> list[int]:
    """The subjects of a ``pretrain`` section: a list, or ``others`` (every world subject but this one)."""
    subjects = spec.get("subjects", "others")
    if subjects == "others":
        entry = get_dataset(str(request.dataset))
        if not entry.is_world:
            raise ConfigError(
                "pretrain.subjects: 'others' needs a world dataset; list the real subjects to pre-train on"
            )
        from brainbench.world.config import get_world_config

        subjects = range(1, get_world_config(request.world_preset).n_subjects + 1)
    chosen = [int(s) for s in subjects if int(s) != request.subject]
    if not chosen:
        raise ConfigError(
            f"pretrain.subjects {spec.get('subjects')!r} leaves no subject besides {request.subject}"
        )
    return chosen


def pretrain_cache_dir(
    request: BenchRequest,
    config: dict[str, Any],
    subjects: list[int],
    backbone: str,
    model: DecoderModule | None = None,
) -> Path:
    """A folder unique to everything that determines pre-trained weights, shared by runs that agree on it.

    With a ``model`` that declares :attr:`~brainbench.methods.base.DecoderModule.pretrain_args`, only those
    constructor arguments enter the key, so fine-tuning settings (LoRA rank, text weight, epochs) reuse the
    same pre-trained weights; otherwise the whole ``model`` section does.
    """
    model_key: Any = config.get("model")
    if model is not None and model.pretrain_args is not None:
        args = model.init_args()
        model_key = {
            "class_path": config["model"]["class_path"],
            "method_version": model.method_version,
            "args": {k: args.get(k) for k in model.pretrain_args},
        }
    key = json.dumps(
        {
            "method": request.method,
            "model": model_key,
            "pretrain": config.get("pretrain"),
            "data": {k: v for k, v in (config.get("data") or {}).items() if k != "train_sessions"},
            "dataset": request.dataset,
            "preset": request.world_preset,
            "subjects": subjects,
            "backbone": backbone,
            "seed": request.seed,
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return request.home / "pretrained" / f"{request.method}-{digest}"


def run_pretraining(
    request: BenchRequest,
    config: dict[str, Any],
    model: DecoderModule,
    backbone: str,
    data_cfg: dict[str, Any],
    make_trainer: TrainerFactory,
    run_dir: Path,
) -> None:
    """Prepares the config's pre-training subjects and calls ``model.pretrain`` on their datamodules.

    Its trainers come from the run's factory (same strategy, precision, devices, logger) and keep
    ``last.ckpt`` in the pre-training cache folder, so an interrupted pre-training resumes there, from any
    run that asks for the same pre-trained weights; the checkpoint is removed once pre-training has finished.
    """
    spec = dict(config.get("pretrain") or {})
    subjects = pretrain_subjects(request, spec)
    shared = {k: v for k, v in data_cfg.items() if k != "train_sessions"}  # pre-training uses every session
    datamodules = {}
    for subject in subjects:
        prepared = request.prepared_folder(subject)
        dm = FMRIDataModule(
            prepared, backbone=backbone, num_workers=request.num_workers, seed=request.seed, **shared
        )
        with home_lock(request.home, f"features-{prepared.parent.name}-{prepared.name}"):
            dm.prepare_data(progress=request.progress)
        dm.setup("fit")
        datamodules[subject] = dm
    cache_dir = pretrain_cache_dir(request, config, subjects, backbone, model)
    checkpoints = cache_dir / CHECKPOINT_DIR

    def pretrain_trainer(name: str, max_epochs: int) -> L.Trainer:
        return make_trainer(
            run_dir,
            name=name,
            max_epochs=max_epochs,
            resume=True,
            checkpoint_dir=checkpoints / name,
        )

    log.info("pre-training on subjects %s (cache %s)", subjects, cache_dir)
    # no home lock around it: under torchrun/srun every rank pre-trains together (DDP), none may wait
    model.pretrain(datamodules, pretrain_trainer, cache_dir)
    shutil.rmtree(checkpoints, ignore_errors=True)
