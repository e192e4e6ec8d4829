"""What every decoder shares: hyperparameters, the predict step, named outputs, and safe save/load.

A method subclasses :class:`DecoderModule`, sets the class attributes (``method_id``, ``method_version``,
``paper``, ``fidelity``, ``predicts``), builds its layers in :meth:`configure_models` and maps voxels to named
predictions in :meth:`forward`. The evaluator reads prediction names (``clip_tokens``, ``clip_image``, ...),
never method names. Data-dependent sizes (``n_voxels`` and ``target_shapes``) are constructor arguments that
the runner fills in from the prepared dataset and the backbone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from safetensors.torch import load_file, save_file

from brainbench.errors import ConfigError, MissingFileError

CONFIG_FILE = "decoder.json"
WEIGHTS_FILE = "decoder.safetensors"


def decay_groups(params: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` on weight matrices, none on biases and norm scales (1-D)."""
    params = list(params)
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def adamw_one_cycle(
    module: L.LightningModule,
    params: Iterable[torch.nn.Parameter],
    *,
    max_lr: float,
    weight_decay: float,
    max_epochs: int,
    final_div_factor: float = 1e4,
) -> dict[str, Any]:
    """MindEye's optimiser, shared by its descendants: AdamW and OneCycle stepped per batch.

    AdamW over :func:`decay_groups`; OneCycle over the trainer's steps with ``pct_start = 2 / max_epochs``
    (at most 0.5).
    """
    groups = [group for group in decay_groups(params, weight_decay) if group["params"]]
    optimizer = torch.optim.AdamW(groups, lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=max(2, int(module.trainer.estimated_stepping_batches)),
        final_div_factor=final_div_factor,
        pct_start=min(0.5, 2 / max(1, max_epochs)),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DecoderModule(L.LightningModule):
    """Base LightningModule of the brainbench methods.

    Args:
        n_voxels: length of the input voxel vector.
        target_shapes: per-sample shape of each backbone target the method predicts,
            e.g. ``{"clip_tokens": (257, 768)}``.
    """

    method_id: ClassVar[str] = ""
    method_version: ClassVar[str] = "1"
    paper: ClassVar[str] = ""
    fidelity: ClassVar[str] = ""
    predicts: ClassVar[tuple[str, ...]] = ("clip_tokens",)
    #: validation metric that selects the checkpoint kept for testing (``None``: keep the last weights)
    monitor: ClassVar[str | None] = None
    monitor_mode: ClassVar[str] = "min"
    #: constructor arguments that determine :meth:`pretrain`'s weights (``None``: all of them); the cache key
    #: of pre-trained weights uses only these (:func:`brainbench.pretraining.pretrain_cache_dir`)
    pretrain_args: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, n_voxels: int, target_shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.save_hyperparameters()  # collects the subclass's constructor arguments too (torchgeo's BaseTask)
        self.n_voxels = int(n_voxels)
        self.target_shapes = {k: tuple(int(d) for d in v) for k, v in target_shapes.items()}
        missing = [name for name in self.predicted_names() if name not in target_shapes]
        if missing:
            raise ConfigError(f"{self.method_id} predicts {missing} but no target shape was given for them")
        self.configure_models()

    def predicted_names(self) -> tuple[str, ...]:
        """Names of the predictions :meth:`forward` returns (the class's ``predicts`` unless configurable)."""
        return self.predicts

    def configure_models(self) -> None:
        """Builds the layers (called once from ``__init__``)."""
        raise NotImplementedError

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps ``(B, n_voxels)`` voxels to named predictions with the shapes of ``target_shapes``."""
        raise NotImplementedError

    def check_voxels(self, voxels: torch.Tensor) -> None:
        """Raises a clear error when the input does not match the voxel count the model was built for."""
        if voxels.shape[-1] != self.n_voxels:
            raise ConfigError(
                f"{self.method_id} was built for {self.n_voxels} voxels but the data has {voxels.shape[-1]}: "
                "train a model for this subject/ROI, or prepare the data with the same voxel selection"
            )

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Named predictions of a batch, plus its ``stim_id`` so the evaluator can align targets."""
        self.check_voxels(batch["voxels"])
        out = self(batch["voxels"])
        return {"stim_id": batch["stim_id"], **{k: v.float() for k, v in out.items()}}

    def n_parameters(self) -> int:
        """Number of parameters (trainable and frozen)."""
        return sum(p.numel() for p in self.parameters())

    def pretrain(
        self,
        datamodules: dict[int, L.LightningDataModule],
        make_trainer: Callable[[str, int], L.Trainer],
        cache_dir: Path,
    ) -> None:
        """Pre-trains shared weights on other subjects (a config's ``pretrain`` section); none by default.

        Args:
            datamodules: subject -> its prepared, set-up datamodule (same backbone and targets as the run).
            make_trainer: ``make_trainer(name, max_epochs)`` gives a trainer configured like the run's.
            cache_dir: a folder unique to what determines the pre-trained weights; a method saves them there
                and loads them instead of pre-training again when they are present.
        """

    def fit(
        self, trainer: L.Trainer, datamodule: L.LightningDataModule, ckpt_path: str | None = None
    ) -> None:
        """Trains the method; iterative methods use ``trainer.fit``, closed-form ones override this."""
        trainer.fit(self, datamodule=datamodule, ckpt_path=ckpt_path)

    # -- save / load (safetensors + JSON, never pickle) ----------------------------------------------------
    def init_args(self) -> dict[str, Any]:
        """The constructor arguments, for :meth:`save_pretrained` (``self.hparams`` holds them)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(self.hparams).items()}

    def save_pretrained(self, directory: Path) -> None:
        """Writes ``decoder.json`` (class, version, constructor arguments) and ``decoder.safetensors``."""
        directory.mkdir(parents=True, exist_ok=True)
        record = {
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "method_id": self.method_id,
            "method_version": self.method_version,
            "init_args": self.init_args(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2, default=list))
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE
        )

    @classmethod
    def load_pretrained(cls, directory: Path, n_voxels: int | None = None) -> DecoderModule:
        """Loads a decoder saved by :meth:`save_pretrained`; ``n_voxels`` checks it fits the data."""
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise MissingFileError(
                    path, "pass a run folder written by `brainbench bench` (runs/<run id>/model)"
                )
        record = json.loads(config_path.read_text())
        if record["method_id"] != cls.method_id and cls is not DecoderModule:
            raise ConfigError(f"{directory} holds a {record['method_id']} decoder, not {cls.method_id}")
        saved_voxels = int(record["init_args"]["n_voxels"])
        if n_voxels is not None and saved_voxels != n_voxels:
            raise ConfigError(
                f"{weights_path} was trained on {saved_voxels} voxels but the data has {n_voxels}: "
                "use a checkpoint trained for this subject and voxel selection, or retrain"
            )
        from brainbench.methods import resolve_class

        model_cls = resolve_class(record["class_path"])
        model = model_cls(**record["init_args"])
        model.load_state_dict(load_file(weights_path))
        return model.eval()
