"""The one trainer factory: run settings, config loggers/callbacks, checkpoints, pre-training through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from brainbench.errors import ConfigError
from brainbench.pretraining import run_pretraining
from brainbench.request import BenchRequest
from brainbench.training import RunSettings, TrainerFactory, best_checkpoint, trainer_precision


def test_config_logger_and_callbacks_join_the_checkpoint_callbacks(tmp_path: Path) -> None:
    options = {
        "max_epochs": 3,
        "callbacks": [
            {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "v"}}
        ],
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "tb"},
        },
    }
    trainer = TrainerFactory(RunSettings(accelerator="cpu", progress=False, trainer_options=options))(
        tmp_path, monitor=("val_top1", "max")
    )
    assert trainer.max_epochs == 3
    assert isinstance(trainer.logger, TensorBoardLogger)
    assert any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert {c.filename for c in checkpoints} == {"last", "best"}
    assert {Path(str(c.dirpath)) for c in checkpoints} == {tmp_path / "checkpoints"}
    best = best_checkpoint(trainer)
    assert best is not None and best.monitor == "val_top1" and best.mode == "max"


def test_logger_choice_and_refused_class_paths(tmp_path: Path) -> None:
    make = TrainerFactory(RunSettings(accelerator="cpu", logger="tensorboard", progress=False))
    assert isinstance(make(tmp_path).logger, TensorBoardLogger)
    assert isinstance(TrainerFactory(RunSettings(accelerator="cpu"))(tmp_path).logger, CSVLogger)
    for spec in (
        {"class_path": "os.system", "init_args": {"command": "true"}},
        {"class_path": "builtins.eval"},
    ):
        bad = RunSettings(accelerator="cpu", trainer_options={"callbacks": [spec]})
        with pytest.raises(ConfigError, match="not a Lightning logger or callback"):
            TrainerFactory(bad)(tmp_path)
    typo = RunSettings(
        accelerator="cpu",
        trainer_options={"callbacks": [{"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                                        "init_args": {"monitr": "v"}}]},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="monitr"):
        TrainerFactory(typo)(tmp_path)


def test_resume_points_the_trainer_at_last_ckpt_only_when_asked(tmp_path: Path) -> None:
    make = TrainerFactory(RunSettings(accelerator="cpu", progress=False))
    assert make(tmp_path, resume=True).ckpt_path is None  # nothing to resume yet
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert make(tmp_path, resume=True).ckpt_path == str(tmp_path / "checkpoints" / "last.ckpt")
    assert make(tmp_path).ckpt_path is None


def test_precision_defaults_to_float32_on_cpu() -> None:
    assert trainer_precision(RunSettings(accelerator="cpu")) == "32-true"
    assert trainer_precision(RunSettings(precision="bf16-mixed")) == "bf16-mixed"


class _RecordingModel:
    """Stands in for a method with a ``pretrain`` hook: records the trainer it is given."""

    pretrain_args = None
    method_version = "1"

    def __init__(self) -> None:
        self.trainers: list[L.Trainer] = []

    def pretrain(self, datamodules: dict[int, Any], make_trainer: Any, cache_dir: Path) -> None:  # noqa: ANN401
        assert sorted(datamodules) == [2]
        self.trainers.append(make_trainer("pretrain", 2))


@pytest.mark.slow
def test_pretraining_uses_the_runs_strategy_and_precision(tmp_path: Path) -> None:
    """The multi-subject pre-training trainer is the run's: DDP over 2 CPU ranks (gloo, forked), float32."""
    request = BenchRequest(
        method="mindtuner", world_preset="tiny", home=tmp_path / "home", runs=tmp_path / "runs",
        progress=False, accelerator="cpu", devices=2, strategy="ddp", dataset="world-nsd",
    )  # fmt: skip
    config = {"model": {"class_path": "stub"}, "pretrain": {"subjects": [2]}, "trainer": {"max_epochs": 9}}
    model = _RecordingModel()
    factory = TrainerFactory(request.run_settings(config))
    data = {"targets": ["clip_image"], "batch_size": 8}
    run_pretraining(request, config, model, "world-clip:v1", data, factory, tmp_path / "runs" / "r")  # type: ignore[arg-type]
    (trainer,) = model.trainers
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._start_method == "fork" and trainer.strategy.process_group_backend == "gloo"
    assert trainer.num_devices == 2 and trainer.max_epochs == 2
    assert trainer.precision == "32-true"
    assert any(isinstance(c, ModelCheckpoint) and c.filename == "last" for c in trainer.callbacks)
