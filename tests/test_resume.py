"""Resumable runs: ``kill -9`` or SIGTERM during training, then the same command with ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from brainbench.errors import ConfigError
from brainbench.runs import RESULT_FILE, RUN_FILE, open_run

CONFIGS = Path(__file__).parent / "configs"
EPOCHS = 60


def _bench_command(tmp: Path, config: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "brainbench.cli", "bench", "--method", "mindeye", "--world-preset", "tiny",
        "--config", str(config), "--home", str(tmp / "home"), "--val-fraction", "0.2",
        "--leaderboards", str(tmp / "leaderboards"), "--runs", str(tmp / "runs"), "--accelerator", "cpu",
        "--quiet", *extra,
    ]  # fmt: skip


def _last_epoch(tmp: Path) -> int | None:
    """The epoch counter of the newest ``last.ckpt`` under ``runs/`` (``None`` while there is none)."""
    for path in sorted((tmp / "runs").glob("*/checkpoints/last.ckpt")):
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
        except Exception:  # noqa: BLE001 (being written right now: try again)
            return None
    return None


def _signal_after_epoch(process: subprocess.Popen, tmp: Path, epoch: int, signum: int) -> int:
    """Sends ``signum`` once ``last.ckpt`` reaches ``epoch``; returns the epoch it had."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        reached = _last_epoch(tmp)
        if reached is not None and reached >= epoch:
            os.kill(process.pid, signum)
            return reached
        time.sleep(0.05)
    raise AssertionError(f"the run ended before epoch {epoch}: {process.stderr.read()[-2000:]}")


@pytest.mark.slow
def test_kill_9_then_sigterm_then_resume_finishes_from_the_checkpoint_with_one_row(tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "mindeye_tiny.yaml").read_text())
    config["trainer"]["max_epochs"] = EPOCHS  # long enough to be killed on the way (the schedule follows)
    config_path = tmp_path / "mindeye_resume.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env["OMP_NUM_THREADS"] = "1"

    first = subprocess.Popen(
        _bench_command(tmp_path, config_path), env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 600
    killed_at = None
    while time.monotonic() < deadline and first.poll() is None:
        epoch = _last_epoch(tmp_path)
        if epoch is not None and epoch >= 2:
            os.kill(first.pid, signal.SIGKILL)
            killed_at = epoch
            break
        time.sleep(0.05)
    first.wait(timeout=60)
    assert killed_at is not None, f"the run ended before it could be killed: {first.stderr.read()[-2000:]}"
    assert killed_at < EPOCHS - 1
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / RUN_FILE).is_file() and not (run / RESULT_FILE).is_file()
    assert not (tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv").exists()

    # the resumed run is preempted in turn: SIGTERM saves last.ckpt, exits 143 and says how to continue
    second = subprocess.Popen(
        _bench_command(tmp_path, config_path, "--resume", "latest"),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    _signal_after_epoch(second, tmp_path, killed_at + 2, signal.SIGTERM)
    assert second.wait(timeout=120) == 143
    message = second.stderr.read().strip().splitlines()[-1]
    assert message.startswith("brainbench: SIGTERM") and f"--resume {run.name}" in message
    assert not (run / RESULT_FILE).is_file()

    done = subprocess.run(
        _bench_command(tmp_path, config_path, "--resume", run.name), env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run.name]  # continued in place, no new folder
    result = json.loads((run / RESULT_FILE).read_text())
    assert result["resumed_after_epochs"] >= killed_at + 2  # not from epoch 0
    table = pd.read_csv(tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv")
    assert list(table["run_id"]) == [run.name]  # exactly one row
    final_epoch = int(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"])
    assert final_epoch in (EPOCHS - 1, EPOCHS)  # Lightning's counter after the last epoch

    again = subprocess.run(
        _bench_command(tmp_path, config_path, "--resume", run.name), env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "finished already" in again.stderr


def test_resume_refuses_another_request_and_latest_starts_fresh(tmp_path: Path) -> None:
    identity = {"method": "ridge", "subject": 1}
    config = {"model": {"class_path": "x", "init_args": {"alpha": (1, 2)}}, "path": "ridge/world.yaml"}
    fresh = open_run(tmp_path, identity, config, resume="latest")  # nothing to resume: a new run
    assert not fresh.resumed and (fresh.path / RUN_FILE).is_file()
    again = open_run(tmp_path, identity, config, resume="latest")
    assert again.resumed and again.run_id == fresh.run_id  # tuples compare as their JSON lists
    with pytest.raises(ConfigError, match="other options"):
        open_run(tmp_path, identity | {"subject": 2}, config, resume=fresh.run_id)
    with pytest.raises(ConfigError, match="not a run folder"):
        open_run(tmp_path, identity, config, resume="20990101T000000Z-deadbeef")
    (fresh.path / RESULT_FILE).write_text("{}")
    assert not open_run(
        tmp_path, identity, config, resume="latest"
    ).resumed  # finished runs are never reopened


def test_a_new_run_beside_an_interrupted_one_says_how_to_resume(tmp_path: Path, caplog) -> None:
    identity, config = {"method": "ridge"}, {"path": "ridge/world.yaml"}
    interrupted = open_run(tmp_path, identity, config, resume=None)
    caplog.set_level("WARNING", logger="brainbench")
    open_run(tmp_path, identity, config, resume=None)
    assert f"run {interrupted.run_id} of this request was interrupted" in caplog.text
    assert "--resume latest" in caplog.text
