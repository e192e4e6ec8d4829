"""What every decoder shares: hyperparameters, the predict step, named outputs, and safe save/load.

A method subclasses :class:`DecoderModule`, sets the class attributes (``method_id``, ``method_version``,
``paper``, ``fidelity``, ``predicts``), builds its layers in :meth:`configure_models` (then
:meth:`configure_losses` and :meth:`configure_metrics` run, as in torchgeo's ``BaseTask``), maps voxels to
named predictions in :meth:`forward` and gives a batch's loss terms in :meth:`loss_terms`. The training and
validation steps are written once here: they log every term as ``<stage>_<term>`` (``<stage>_loss`` for the
optimised sum) and, on validation, rank each trial's ``val_retrieval_name()`` prediction among the distinct
validation stimuli (:class:`~brainbench.metrics.trials.SingleTrialRetrieval`), logged as ``val_top1``.
The evaluator reads prediction names (``clip_tokens``, ``clip_image``, ...), never method names.
Data-dependent sizes (``n_voxels`` and ``target_shapes``) are constructor arguments that the runner fills in
from the prepared dataset and the backbone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from brainbench.errors import ConfigError, MissingFileError, reading
from brainbench.metrics.trials import SingleTrialRetrieval

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
        total_steps=max(4, int(module.trainer.estimated_stepping_batches)),  # OneCycle divides by 0 below 3
        final_div_factor=final_div_factor,
        pct_start=min(0.5, 2 / max(1, max_epochs)),
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.no_grad()
def in_batch_top1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of rows whose cosine-nearest target row (flattened) is their own, within the batch."""
    sim = F.normalize(pred.flatten(1), dim=-1) @ F.normalize(target.flatten(1), dim=-1).T
    return (sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)).float().mean()


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
    #: prediction (and target) ranked by single-trial retrieval on validation, logged as ``val_top1``
    #: (``None``: no retrieval); see :meth:`val_retrieval_name`
    val_retrieval_target: ClassVar[str | None] = None
    monitor_mode: ClassVar[str] = "min"
    #: constructor arguments that determine :meth:`pretrain`'s weights (``None``: all of them); the cache key
    #: of pre-trained weights uses only these (:func:`brainbench.pretraining.pretrain_cache_dir`)
    pretrain_args: ClassVar[tuple[str, ...] | None] = None
    #: the training split summed once, as closed-form methods do: under DDP each rank then reads every sample
    #: of its slice, ranks may step different numbers of batches (such methods run no per-step collective),
    #: and the sums equal the single-process ones (:meth:`FMRIDataModule.every_sample_once`)
    every_sample_once: ClassVar[bool] = False

    def __init__(self, n_voxels: int, target_shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.save_hyperparameters()  # collects the subclass's constructor arguments too (torchgeo's BaseTask)
        self.n_voxels = int(n_voxels)
        self.target_shapes = {k: tuple(int(d) for d in v) for k, v in target_shapes.items()}
        missing = [name for name in self.predicted_names() if name not in target_shapes]
        if missing:
            raise ConfigError(f"{self.method_id} predicts {missing} but no target shape was given for them")
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    def predicted_names(self) -> tuple[str, ...]:
        """Names of the predictions :meth:`forward` returns (the class's ``predicts`` unless configurable)."""
        return self.predicts

    def configure_models(self) -> None:
        """Builds the layers (called once from ``__init__``)."""
        raise NotImplementedError

    def configure_losses(self) -> None:
        """Sets up what the loss needs beyond the layers (a schedule, fixed tensors); nothing by default."""

    def configure_metrics(self) -> None:
        """Validation metrics: the single-trial retrieval of :meth:`val_retrieval_name`, if any."""
        if self.val_retrieval_name() is not None:
            self.val_retrieval = SingleTrialRetrieval()

    def val_retrieval_name(self) -> str | None:
        """The prediction ranked on validation (``val_top1``): the class's ``val_retrieval_target``."""
        return self.val_retrieval_target

    def forward(self, voxels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Maps ``(B, n_voxels)`` voxels to named predictions with the shapes of ``target_shapes``."""
        raise NotImplementedError

    # -- training and validation (shared) -------------------------------------------------------------------
    def schedule_epochs(self) -> int:
        """Length of the training schedule in epochs: the trainer's ``max_epochs``.

        Outside a trainer (a unit test) the constructor's ``max_epochs`` argument, if the method has one.
        """
        trainer = self._trainer
        if trainer is not None and trainer.max_epochs is not None and trainer.max_epochs > 0:
            return int(trainer.max_epochs)
        return int(self.hparams.get("max_epochs", 1))

    def loss_terms(
        self, batch: dict[str, torch.Tensor], stage: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A batch's loss terms and the predictions they were computed from.

        Args:
            batch: voxels, ``stim_id`` and the targets.
            stage: ``train`` (augmentation such as BiMixCo applies) or ``val``.

        Returns:
            ``terms`` (``loss``: the optimised sum; other entries are logged as ``<stage>_<name>``) and
            ``predictions`` by name (unmixed on validation).
        """
        raise NotImplementedError

    def log_terms(self, stage: str, terms: dict[str, torch.Tensor | float], batch_size: int) -> None:
        """Logs each term as ``<stage>_<name>``; validation values are synced across processes."""
        sync = stage != "train"
        for name, value in terms.items():
            self.log(f"{stage}_{name}", value, prog_bar=name == "loss", batch_size=batch_size, sync_dist=sync)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The ``loss`` of :meth:`loss_terms` on a training batch, every term logged."""
        terms, _ = self.loss_terms(batch, "train")
        self.log_terms("train", terms, len(batch["voxels"]))
        return terms["loss"]

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Every term on a validation batch; its trials join the epoch's ``val_top1``."""
        terms, predictions = self.loss_terms(batch, "val")
        self.log_terms("val", terms, len(batch["voxels"]))
        self.update_val_metrics(batch, predictions)
        return terms["loss"]

    def update_val_metrics(
        self, batch: dict[str, torch.Tensor], predictions: dict[str, torch.Tensor]
    ) -> None:
        """Adds a validation batch to the :meth:`configure_metrics` metrics and logs them (``val_top1``)."""
        name = self.val_retrieval_name()
        if name is not None:
            self.val_retrieval.update(predictions[name], batch[name], batch["stim_id"])
            self.log("val_top1", self.val_retrieval, prog_bar=True, batch_size=len(batch["stim_id"]))

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
        with reading(config_path, "pass a model folder saved by `brainbench bench` (runs/<run id>/model)"):
            record = json.loads(config_path.read_text())
            method_id, class_path = str(record["method_id"]), str(record["class_path"])
            init_args = dict(record["init_args"])
            saved_voxels = int(init_args["n_voxels"])
        if method_id != cls.method_id and cls is not DecoderModule:
            raise ConfigError(f"{directory} holds a {method_id} decoder, not {cls.method_id}")
        if n_voxels is not None and saved_voxels != n_voxels:
            raise ConfigError(
                f"{weights_path} was trained on {saved_voxels} voxels but the data has {n_voxels}: "
                "use a checkpoint trained for this subject and voxel selection, or retrain"
            )
        from brainbench.methods import resolve_class

        model = resolve_class(class_path)(**init_args)
        with reading(weights_path, "weights and decoder.json must come from one `brainbench bench` run"):
            model.load_state_dict(load_file(weights_path))
        return model.eval()
