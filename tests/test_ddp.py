"""DDP on CPU (gloo, Lightning's fork launcher) on the tiny world, against the single-process run.

Ridge is closed form: its sufficient statistics are summed across ranks, so 2-process DDP must give the
single-process coefficients (to float32 round-off) and the same retrieval numbers. Lite-Mind must train under
DDP with every rank stepping the same batches and append exactly one row. The datamodule checks use stand-in
trainers (rank, world size), so they cover the sample-level rank split without starting processes. Ranks
started by an external launcher (``torchrun``; ``srun``, emulated by its environment variables) must give
the single-process ridge numbers and one row too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_end_to_end import CONFIGS, _request

from brainbench.bench import run_bench
from brainbench.data.datamodule import FMRIDataModule

pytestmark = pytest.mark.slow

PREPARED = Path("prepared") / "world-nsd-v1-tiny" / "subj01"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The single-process ridge run; its home (world, shards, feature cache) is shared by the DDP runs."""
    tmp = tmp_path_factory.mktemp("single")
    row, result = run_bench(_request(tmp, "ridge"))
    return {"tmp": tmp, "home": tmp / "home", "row": row, "result": result}


def _samples(datamodule: FMRIDataModule, split: str, rank: int, world_size: int) -> tuple[int, Counter]:
    """This rank's loader length (batches) and its samples as a multiset of (stim_id, first voxels)."""
    trainer = SimpleNamespace(global_rank=rank, world_size=world_size, current_epoch=0)
    datamodule.trainer = trainer  # type: ignore[assignment]
    loader = datamodule.train_dataloader() if split == "train" else datamodule.predict_dataloader()
    seen: Counter = Counter()
    for batch in loader:
        for stim, voxels in zip(batch["stim_id"].tolist(), batch["voxels"][:, :4].tolist(), strict=True):
            seen[(stim, tuple(round(v, 5) for v in voxels))] += 1
    return len(loader), seen


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_the_split_exactly_once_in_equal_steps(
    single: dict, world_size: int, in_memory: bool
) -> None:
    """336 training trials in one shard: split by sample, every trial on exactly one rank, equal lengths."""
    datamodule = FMRIDataModule(
        single["home"] / PREPARED, backbone="world-clip:v1", batch_size=64, seed=3, in_memory=in_memory
    )
    _, everything = _samples(datamodule, "train", 0, 1)
    assert sum(everything.values()) == datamodule.split_size("train") == 336
    lengths, union = set(), Counter()
    for rank in range(world_size):
        length, seen = _samples(datamodule, "train", rank, world_size)
        assert sum(seen.values()) == 336 // world_size  # 168 or 112: divisible, so no rank holds one more
        lengths.add(length)
        union += seen
    assert lengths == {-(-336 // world_size // 64)}  # ceil(168 / 64) = 3, ceil(112 / 64) = 2 on every rank
    assert union == everything
    # the test split (60 averages): every stimulus predicted once, no padding
    _, test_all = _samples(datamodule, "test", 0, 1)
    test_union: Counter = Counter()
    for rank in range(world_size):
        test_union += _samples(datamodule, "test", rank, world_size)[1]
    assert test_union == test_all and sum(test_all.values()) == 60


def test_ridge_ddp_matches_single_process(single: dict) -> None:
    tmp = single["tmp"] / "ddp"
    row, result = run_bench(_request(tmp, "ridge", home=single["home"], devices=2, strategy="ddp"))
    # Ridge is closed form and the summed statistics are float64: the 60-way top-1s must be identical and
    # the 2-way within 1e-6 (the coefficients differ from single-process only by float32 round-off).
    assert set(result.values) == set(single["result"].values)
    for key, value in single["result"].values.items():
        assert result.values[key] == pytest.approx(value, abs=1e-6), key
        if "top1" in key:
            assert result.values[key] == value, key
    ddp_model = load_file(tmp / "runs" / row["run_id"] / "model" / "decoder.safetensors")
    one_model = load_file(single["tmp"] / "runs" / single["row"]["run_id"] / "model" / "decoder.safetensors")
    assert float(ddp_model["alpha"]) == float(one_model["alpha"])
    torch.testing.assert_close(ddp_model["weight"], one_model["weight"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ddp_model["bias"], one_model["bias"], rtol=1e-4, atol=1e-5)
    assert row["distributed"] == "ddp:1x2" and single["row"]["distributed"] == ""
    table = pd.read_csv(tmp / "leaderboards" / "world-nsd" / "retrieval.csv")
    assert list(table["method"]) == ["ridge"] and int(table["n_train_samples"].iloc[0]) == 336


def test_litemind_ddp_runs_and_appends_one_row(single: dict, tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "litemind_tiny.yaml").read_text())
    config["trainer"]["max_epochs"] = 2  # the schedule follows it (max_epochs is written once)
    config_path = tmp_path / "litemind_ddp.yaml"
    config_path.write_text(yaml.safe_dump(config))
    request = _request(
        tmp_path, "litemind", home=single["home"], config=str(config_path), devices=2, strategy="ddp"
    )
    row, result = run_bench(request)
    table = pd.read_csv(tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv")
    assert list(table["method"]) == ["litemind"] and table["run_id"].iloc[0] == row["run_id"]
    assert result.chance  # evaluated on the 60 gathered test predictions
    run = tmp_path / "runs" / row["run_id"]
    assert (run / "model" / "decoder.safetensors").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    metrics = pd.read_csv(run / "logs" / "metrics.csv")
    # 168 trials per rank at batch 64: 3 steps per epoch on both ranks, 2 epochs, validation after each
    assert metrics.groupby("epoch")["step"].max().tolist() == [2, 5]
    assert len(metrics.dropna(subset=["val_top1"])) == 2
    assert list((tmp_path / "runs").iterdir()) == [run]  # the other rank wrote no run folder


def _cli_bench(tmp: Path, home: Path) -> list[str]:
    return [
        "-m", "brainbench.cli", "bench", "--method", "ridge", "--world-preset", "tiny",
        "--config", str(CONFIGS / "ridge_tiny.yaml"), "--home", str(home), "--val-fraction", "0.2",
        "--leaderboards", str(tmp / "leaderboards"), "--runs", str(tmp / "runs"),
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--quiet",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _check_external_run(single: dict, tmp: Path, outputs: list[str]) -> None:
    """One row, written by rank 0 only, with the single-process numbers (ridge is closed form)."""
    table = pd.read_csv(tmp / "leaderboards" / "world-nsd" / "retrieval.csv")
    assert list(table["method"]) == ["ridge"], outputs
    for key, value in single["result"].values.items():
        assert float(table[key].iloc[0]) == pytest.approx(value, abs=1e-6), key
    assert [p.name for p in (tmp / "runs").iterdir()] == [table["run_id"].iloc[0]]
    assert sum("row appended to" in out for out in outputs) == 1  # only rank 0 reports


def test_torchrun_launch_matches_single_process(single: dict, tmp_path: Path) -> None:
    """``torchrun`` starts both ranks; Lightning's TorchElasticEnvironment joins them (no fork on top)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += _cli_bench(tmp_path, single["home"])  # torchrun ... -m brainbench.cli bench ...
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    _check_external_run(single, tmp_path, [done.stdout])


def test_srun_launch_matches_single_process(single: dict, tmp_path: Path) -> None:
    """Two processes with the variables ``srun --ntasks-per-node=2`` sets: Lightning's SLURMEnvironment."""
    port = _free_port()
    ranks = []
    for rank in range(2):
        env = _clean_env() | {
            "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "brainbench", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port),
        }  # fmt: skip
        command = [sys.executable, *_cli_bench(tmp_path, single["home"])]
        ranks.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        )
    outputs = [process.communicate(timeout=600) for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], [err[-3000:] for _, err in outputs]
    _check_external_run(single, tmp_path, [out for out, _ in outputs])


def _clean_env() -> dict[str, str]:
    """This process's environment without launcher variables of an enclosing job."""
    prefixes = ("SLURM_", "TORCHELASTIC_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_", "GROUP_RANK")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} | {"OMP_NUM_THREADS": "1"}
