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
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.registry import get_dataset
from brainbench.errors import ConfigError
from brainbench.methods.base import DecoderModule

if TYPE_CHECKING:
    from brainbench.bench import BenchRequest


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
    run_dir: Path,
) -> None:
    """Prepares the config's pre-training subjects and calls ``model.pretrain`` on their datamodules."""
    from brainbench.bench import prepare_dataset, say  # bench imports this module

    spec = dict(config.get("pretrain") or {})
    subjects = pretrain_subjects(request, spec)
    shared = {k: v for k, v in data_cfg.items() if k != "train_sessions"}  # pre-training uses every session
    datamodules = {}
    for subject in subjects:
        prepared = prepare_dataset(replace(request, subject=subject))
        dm = FMRIDataModule(
            prepared, backbone=backbone, num_workers=request.num_workers, seed=request.seed, **shared
        )
        dm.prepare_data(progress=request.progress)
        dm.setup("fit")
        datamodules[subject] = dm

    def make_trainer(name: str, max_epochs: int) -> L.Trainer:
        return L.Trainer(
            accelerator=request.accelerator,
            devices=request.devices,
            max_epochs=max_epochs,
            default_root_dir=run_dir / name,
            logger=CSVLogger(run_dir, name=name, version=""),
            enable_progress_bar=request.progress,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            log_every_n_steps=5,
            use_distributed_sampler=False,
        )

    cache_dir = pretrain_cache_dir(request, config, subjects, backbone, model)
    say(request, f"pre-training on subjects {subjects} (cache {cache_dir})")
    model.pretrain(datamodules, make_trainer, cache_dir)
