"""The one trainer factory of a run, and the Lightning plumbing around it.

Every ``Trainer`` of a run (pre-training, fitting, a method's extra stages) comes from
:class:`TrainerFactory`, built once from the run's :class:`RunSettings`: accelerator, strategy, precision,
devices, nodes, logger and callbacks, plus two checkpoint callbacks of its own: ``best.ckpt`` (weights of the
best validation epoch, when the method monitors one) and ``last.ckpt`` (everything needed to continue:
weights, optimizer, scheduler, loop and epoch counters), written at every epoch end. A factory asked to resume
points the trainer at an existing ``last.ckpt`` (``trainer.ckpt_path``), so ``trainer.fit`` continues where
the interrupted run stopped.
"""

from __future__ import annotations

import logging
import resource
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.callbacks import BasePredictionWriter, Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

from brainbench.data.datamodule import FMRIDataModule
from brainbench.errors import ConfigError, DataFormatError
from brainbench.methods.base import DecoderModule
from brainbench.registry import import_target

log = logging.getLogger("brainbench")


def peak_memory_mb() -> float:
    """Peak memory of this run in MiB: CUDA allocations when on GPU, else the process's max RSS."""
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


def quiet_lightning() -> None:
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


LoggerKind = Literal["csv", "tensorboard", "wandb", "mlflow"]
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
#: the only classes a config's ``trainer.logger`` / ``trainer.callbacks`` may name (never import by name
#: from a file outside these packages)
ALLOWED_CLASS_PREFIXES = ("lightning.pytorch.callbacks.", "lightning.pytorch.loggers.")


@dataclass(frozen=True)
class RunSettings:
    """What every trainer of one run shares.

    Attributes:
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``).
        devices: devices per node.
        num_nodes: nodes of a multi-node job (the launcher's environment gives the rank layout).
        strategy: Lightning strategy (``auto``, ``ddp``, ...); ``ddp`` on CPU becomes gloo ranks forked by
            Lightning.
        precision: Lightning precision; ``None``: bf16 autocast on capable GPUs, float32 on CPU.
        logger: experiment logger: ``csv`` (default), ``tensorboard``, ``wandb`` or ``mlflow`` (both offline,
            files under the run folder; install ``brainbench[tracking]``).
        progress: progress bars and the model summary.
        trainer_options: the config's ``trainer`` section (``max_epochs``, ``gradient_clip_val``, ... and
            ``logger``/``callbacks`` as ``class_path``/``init_args``), passed to every ``Trainer``.
    """

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str | None = None
    logger: LoggerKind = "csv"
    progress: bool = True
    trainer_options: dict[str, Any] = field(default_factory=dict)


def _on_cpu(settings: RunSettings) -> bool:
    return settings.accelerator == "cpu" or (settings.accelerator == "auto" and not torch.cuda.is_available())


def forks_ranks(settings: RunSettings) -> bool:
    """Whether Lightning's fork launcher starts this run's DDP ranks (CPU, not under torchrun/srun)."""
    return settings.strategy == "ddp" and _on_cpu(settings) and not launched_externally()


def trainer_strategy(settings: RunSettings) -> str | Strategy:
    """The Lightning strategy of a run: ``ddp`` on CPU becomes DDP over gloo with the fork launcher.

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
    on_cpu = _on_cpu(settings)
    if settings.strategy == "ddp" and launched_externally():
        # torchrun / srun started every rank already: Lightning's cluster environment only joins them
        return DDPStrategy(process_group_backend="gloo") if on_cpu else settings.strategy
    if forks_ranks(settings):
        return DDPStrategy(start_method="fork", process_group_backend="gloo")
    return settings.strategy


def trainer_precision(settings: RunSettings) -> str:
    """``--precision`` if given; else bf16 autocast on GPUs that support it, full float32 on CPU.

    bf16 autocast keeps float32 weights and roughly doubles GEMM throughput on Ampere and later GPUs; on CPU
    it is slower than float32 on most machines, so it is never chosen there by default. The precision used is
    recorded in the run's ``result.json``.
    """
    if settings.precision:
        return settings.precision
    on_gpu = settings.accelerator in ("gpu", "cuda") or (
        settings.accelerator == "auto" and torch.cuda.is_available()
    )
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def compile_model(model: DecoderModule, settings: RunSettings, backend: str = "inductor") -> None:
    """``torch.compile`` the forward in place (``--compile``); the module and its state-dict keys stay.

    Off by default and meant for GPUs; on CPU it is slower (``benchmarks/README.md``).

    Raises:
        ConfigError: with CPU DDP ranks forked by Lightning: once ``torch.compile`` is loaded, a backward pass
            in the parent (pre-training, an earlier run in the same process) leaves autograd threads that a
            forked rank cannot use.
    """
    if forks_ranks(settings):
        raise ConfigError(
            "--compile cannot be combined with CPU DDP ranks forked by Lightning (autograd's threads do not "
            "survive fork once torch.compile is loaded); launch the ranks with torchrun or drop --compile"
        )
    model.compile(backend=backend)


def launched_externally() -> bool:
    """Whether a cluster launcher started this process as one rank of a job (``torchrun`` or ``srun``).

    Uses Lightning's own detection (TorchElasticEnvironment, SLURMEnvironment), so Lightning never launches
    ranks of its own on top of the launcher's.
    """
    return TorchElasticEnvironment.detect() or SLURMEnvironment.detect()


def external_rank() -> int | None:
    """This process's global rank when ``torchrun``/``srun`` launched it (``None`` otherwise)."""
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment().global_rank()
    if SLURMEnvironment.detect():
        return SLURMEnvironment().global_rank()
    return None


def instantiate_lightning(spec: Any, key: str) -> Any:  # noqa: ANN401
    """A logger or callback from a config's ``class_path``/``init_args`` dict (objects pass through).

    Raises:
        ConfigError: a class outside Lightning's callbacks and loggers, or arguments it does not take.
    """
    if not isinstance(spec, dict):
        return spec
    class_path = str(spec.get("class_path", ""))
    if not class_path.startswith(ALLOWED_CLASS_PREFIXES):
        raise ConfigError(
            f"trainer.{key}: class_path {class_path!r} is not a Lightning logger or callback; use one of "
            f"{', '.join(p + '*' for p in ALLOWED_CLASS_PREFIXES)}"
        )
    cls = import_target(class_path)
    try:
        return cls(**(spec.get("init_args") or {}))  # type: ignore[operator]
    except TypeError as error:
        raise ConfigError(f"trainer.{key}: {class_path}: {error}") from error


def make_logger(kind: LoggerKind, run_dir: Path, name: str) -> Logger:
    """The run's experiment logger, writing under ``run_dir`` (offline for the hosted trackers)."""
    if kind == "csv":
        return CSVLogger(run_dir, name=name, version="")
    if kind == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(run_dir, name=name, version="")
    if kind == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(save_dir=str(run_dir), name=run_dir.name, offline=True)
    if kind == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(experiment_name="brainbench", tracking_uri=f"file:{run_dir / 'mlruns'}")
    raise ConfigError(f"--logger {kind!r}: choose csv, tensorboard, wandb or mlflow")


class TrainingClock(Callback):
    """Seconds spent fitting, carried in ``last.ckpt`` so a resumed run reports its whole training time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Starts counting this session's time on top of the restored total."""
        self._started = time.monotonic()

    def state_dict(self) -> dict[str, float]:
        """The total so far (saved in every checkpoint)."""
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return {"seconds": self.seconds + running}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the total of the sessions before this one."""
        self.seconds = float(state_dict.get("seconds", 0.0))


class InterruptCheckpoint(Callback):
    """Saves ``last.ckpt`` when SIGTERM (preemption, ``timeout``, ``kill``) or SIGINT stops a fit.

    Lightning turns SIGTERM into ``SIGTERMException`` and SIGINT into ``KeyboardInterrupt`` inside the loops;
    both reach ``on_exception`` on every rank while the trainer is still set up, so the checkpoint is complete
    (mid-epoch: the resumed run restarts that epoch). :attr:`signal_name` tells the caller which one it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.signal_name: str | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Saves the state the run had reached, for ``--resume``."""
        if isinstance(exception, SIGTERMException):
            self.signal_name = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.signal_name = "SIGINT"
        else:
            return
        trainer.save_checkpoint(self.path)


def interrupted_by(trainer: L.Trainer) -> str | None:
    """``SIGTERM``/``SIGINT`` when a signal stopped ``trainer``'s last fit (``None`` otherwise)."""
    for callback in trainer.callbacks:
        if isinstance(callback, InterruptCheckpoint) and callback.signal_name:
            return callback.signal_name
    return None


def resumed_progress(trainer: L.Trainer) -> tuple[int, float]:
    """``(epochs done, training seconds)`` of the run that ``trainer`` resumes; ``(0, 0.0)`` for a new run.

    Read from the checkpoint's epoch counter and :class:`TrainingClock` state; the file is memory-mapped,
    not read whole.
    """
    if not trainer.ckpt_path:
        return 0, 0.0
    checkpoint = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    clock = checkpoint.get("callbacks", {}).get(TrainingClock.__qualname__, {})
    return int(checkpoint.get("epoch", -1)) + 1, float(clock.get("seconds", 0.0))


def last_checkpoint(checkpoint_dir: Path) -> Path | None:
    """``<checkpoint_dir>/last.ckpt`` when a trainer of this factory left one there."""
    path = checkpoint_dir / LAST_CHECKPOINT
    return path if path.is_file() else None


class TrainerFactory:
    """Makes every ``Trainer`` of a run with the run's settings; see the module docstring.

    Args:
        settings: what the run's trainers share.
    """

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings

    def __call__(
        self,
        directory: Path,
        *,
        name: str = "logs",
        max_epochs: int | None = None,
        monitor: tuple[str, str] | None = None,
        resume: bool = False,
        checkpoint_dir: Path | None = None,
    ) -> L.Trainer:
        """A trainer writing logs and checkpoints under ``directory``.

        Args:
            directory: the run folder (or a pre-training cache folder); checkpoints go to its
                ``checkpoints/``.
            name: the logger's sub-folder (``logs``, ``pretrain``, ...).
            max_epochs: overrides the config's ``trainer.max_epochs`` (pre-training stages).
            monitor: ``(metric, "min"|"max")``: also keep the best epoch's weights as ``best.ckpt``.
            resume: continue from ``last.ckpt`` if one is there (``trainer.fit`` picks it up).
            checkpoint_dir: where ``last.ckpt``/``best.ckpt`` go (default ``<directory>/checkpoints``).
        """
        options = dict(self.settings.trainer_options)
        config_callbacks = options.pop("callbacks", None) or []
        config_logger = options.pop("logger", None)
        if max_epochs is not None:
            options["max_epochs"] = max_epochs
        checkpoints = checkpoint_dir or directory / CHECKPOINT_DIR
        callbacks: list[Any] = [
            ModelCheckpoint(
                dirpath=checkpoints,
                filename=LAST_CHECKPOINT.removesuffix(".ckpt"),
                enable_version_counter=False,
            ),
            TrainingClock(),
            InterruptCheckpoint(checkpoints / LAST_CHECKPOINT),
        ]
        if monitor is not None:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=checkpoints,
                    filename="best",
                    monitor=monitor[0],
                    mode=monitor[1],
                    save_top_k=1,
                    save_weights_only=True,
                )
            )
        if not isinstance(config_callbacks, list):
            config_callbacks = [config_callbacks]
        callbacks += [instantiate_lightning(spec, "callbacks") for spec in config_callbacks]
        if config_logger is None or config_logger is True:
            logger: Any = make_logger(self.settings.logger, directory, name)
        elif config_logger is False:
            logger = False
        else:
            logger = instantiate_lightning(config_logger, "logger")
        trainer = L.Trainer(
            accelerator=self.settings.accelerator,
            devices=self.settings.devices,
            num_nodes=self.settings.num_nodes,
            strategy=trainer_strategy(self.settings),
            precision=trainer_precision(self.settings),  # type: ignore[arg-type]
            default_root_dir=directory,
            logger=logger,
            callbacks=callbacks,
            enable_checkpointing=True,
            enable_progress_bar=self.settings.progress,
            enable_model_summary=self.settings.progress,
            **{
                "num_sanity_val_steps": 0,
                "log_every_n_steps": 5,
                "deterministic": False,
                # the datamodule splits every loader by rank itself (no padding, no duplicated samples)
                "use_distributed_sampler": False,
                **options,
            },
        )
        last = last_checkpoint(checkpoints) if resume else None
        if last is not None:
            log.info("resuming from %s", last)
            trainer.ckpt_path = str(last)
        return trainer


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The factory's best-validation checkpoint callback of ``trainer`` (``None`` without a monitor)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is not None:
            return callback
    return None
