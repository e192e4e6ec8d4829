"""What one ``brainbench bench`` run is asked to do: :class:`BenchRequest`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainbench.data.manifest import Manifest
from brainbench.data.preparation import default_home, prepare_dataset
from brainbench.errors import ConfigError
from brainbench.training import LoggerKind, RunSettings


def config_name(config: dict[str, Any]) -> str:
    """The config's name for the leaderboard (``world``, ``world-image-only``, ... or a YAML file's stem)."""
    return Path(config["path"]).stem


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
        resume: continue an interrupted run of the same request from its ``last.ckpt``: ``latest`` (the
            newest unfinished run of this request; a new run if there is none) or a run id.
        logger: experiment logger: ``csv``, ``tensorboard``, ``wandb`` or ``mlflow`` (the last two offline,
            with ``brainbench[tracking]``).
        data_root: root of a real dataset copy (required for the real datasets).
        prepared: a prepared folder (``manifest.json``, shards, stimulus store: the output of ``brainbench
            prepare`` or a folder written to the documented contract, ``docs/prepared-data.md``) to train and
            score on instead of a registered dataset; its manifest gives the dataset, subject and leaderboard.
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
        save_predictions: also write the test predictions the row is scored on (embeddings, with their
            ``stim_id``) to ``runs/<id>/predictions.safetensors``, the format ``brainbench evaluate`` reads.
    """

    method: str
    subject: int = 1
    dataset: str | None = None
    config: str | None = None
    data_root: Path | None = None
    prepared: Path | None = None
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
    resume: str | None = None
    logger: LoggerKind = "csv"
    progress: bool = True
    save_predictions: bool = False

    def prepared_folder(self, subject: int | None = None) -> Path:
        """The prepared shards of the request's dataset for ``subject`` (default: its own), made if needed.

        Raises:
            ConfigError: ``--prepared`` holds one subject and another one is asked for (pre-training).
        """
        if self.prepared is not None:
            if subject not in (None, self.subject):
                raise ConfigError(
                    f"--prepared {self.prepared} holds subject {self.subject} only, and this method "
                    f"pre-trains on subject {subject} too; pre-train on a registered dataset (--dataset), or "
                    "use a config without a pretrain section"
                )
            Manifest.load(self.prepared)
            return Path(self.prepared)
        return prepare_dataset(
            self.dataset or "world-nsd",
            self.subject if subject is None else subject,
            home=self.home,
            world_preset=self.world_preset,
            data_root=self.data_root,
            val_fraction=self.val_fraction,
            progress=self.progress,
        )

    def run_settings(self, config: dict[str, Any]) -> RunSettings:
        """What every trainer of this run shares (the config's ``trainer`` section included)."""
        return RunSettings(
            accelerator=self.accelerator,
            devices=self.devices,
            num_nodes=self.num_nodes,
            strategy=self.strategy,
            precision=self.precision,
            logger=self.logger,
            progress=self.progress,
            trainer_options=dict(config.get("trainer") or {}),
        )

    def identity(self, config: dict[str, Any]) -> dict[str, Any]:
        """What makes two requests the same run (a resumed run must match it): data, method, config, seed."""
        return {
            "method": self.method,
            "subject": self.subject,
            "dataset": self.dataset,
            "config": config_name(config),
            "data_root": str(self.data_root) if self.data_root else None,
            "prepared": str(Path(self.prepared).resolve()) if self.prepared else None,
            "world_preset": self.world_preset,
            "backbone": self.backbone,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "generator": self.generator,
        }
