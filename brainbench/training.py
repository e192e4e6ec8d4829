"""Lightning plumbing of a benchmark run: the trainer, its strategy, test predictions gathered by rank 0."""

from __future__ import annotations

import logging
import resource
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy, Strategy

from brainbench.data.datamodule import FMRIDataModule
from brainbench.errors import ConfigError, DataFormatError
from brainbench.methods.base import DecoderModule

if TYPE_CHECKING:
    from brainbench.bench import BenchRequest


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


def _on_cpu(request: BenchRequest) -> bool:
    return request.accelerator == "cpu" or (request.accelerator == "auto" and not torch.cuda.is_available())


def forks_ranks(request: BenchRequest) -> bool:
    """Whether Lightning's fork launcher starts this request's DDP ranks (CPU, not under torchrun/srun)."""
    return request.strategy == "ddp" and _on_cpu(request) and not launched_externally()


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
    on_cpu = _on_cpu(request)
    if request.strategy == "ddp" and launched_externally():
        # torchrun / srun started every rank already: Lightning's cluster environment only joins them
        return DDPStrategy(process_group_backend="gloo") if on_cpu else request.strategy
    if forks_ranks(request):
        return DDPStrategy(start_method="fork", process_group_backend="gloo")
    return request.strategy


def trainer_precision(request: BenchRequest) -> str:
    """``--precision`` if given; else bf16 autocast on GPUs that support it, full float32 on CPU.

    bf16 autocast keeps float32 weights and roughly doubles GEMM throughput on Ampere and later GPUs; on CPU
    it is slower than float32 on most machines, so it is never chosen there by default. The precision used is
    recorded in the run's ``result.json``.
    """
    if request.precision:
        return request.precision
    on_gpu = request.accelerator in ("gpu", "cuda") or (
        request.accelerator == "auto" and torch.cuda.is_available()
    )
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def compile_model(model: DecoderModule, request: BenchRequest, backend: str = "inductor") -> None:
    """``torch.compile`` the forward in place (``--compile``); the module and its state-dict keys stay.

    Off by default and meant for GPUs. On this suite's CPU machines it is slower: the Lite-Mind world
    config steps in 334 ms compiled against 220 ms eager (2 cores), after a 60 s compile.

    Raises:
        ConfigError: with CPU DDP ranks forked by Lightning: once ``torch.compile`` is loaded, a backward pass
            in the parent (pre-training, an earlier run in the same process) leaves autograd threads that a
            forked rank cannot use.
    """
    if forks_ranks(request):
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
            "num_nodes": request.num_nodes,
            "strategy": trainer_strategy(request),
            "precision": trainer_precision(request),
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
