import multiprocessing
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_records import make_record

from brainbench.errors import ConfigError
from brainbench.leaderboard.store import (
    PROVENANCE_COLUMNS,
    RunRecord,
    append_row,
    collect_provenance,
    git_sha,
    package_versions,
    read_leaderboard,
)

B2I = "retrieval_b2i_top1_subset300/world-clip-v1.clip_tokens@v1"
TWO_WAY = "identification_2way/world-clip-v1.clip_image@v1"


def record(run_id, **changes):
    world = dict(dataset="world", dataset_version="1", split="test", backbone="world-clip-v1:shipped")
    return make_record(run_id, **{**world, **changes})


def test_union_of_columns_and_order(tmp_path):
    csv = tmp_path / "board.csv"
    append_row(csv, record("a").to_row({B2I: 0.25}))
    append_row(csv, {**record("b", method="litemind").to_row({TWO_WAY: 0.75}), "extra_flag": "x"})
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    # provenance first in fixed order, then other columns, then metric ids sorted
    assert list(raw.columns) == [*PROVENANCE_COLUMNS, "extra_flag", TWO_WAY, B2I]
    table = read_leaderboard(csv)
    assert table["run_id"].tolist() == ["a", "b"]
    assert table[B2I].iloc[0] == 0.25 and pd.isna(table[B2I].iloc[1])
    assert pd.isna(table[TWO_WAY].iloc[0]) and table[TWO_WAY].iloc[1] == 0.75
    assert table["n_params"].tolist() == [12345, 12345] and table["train_seconds"].iloc[0] == 1.5
    assert table["extra_flag"].tolist() == ["", "x"]


def test_spec_versions_never_share_a_column(tmp_path):
    csv = tmp_path / "board.csv"
    append_row(csv, record("a").to_row({"x/net@v1": 0.1}))
    append_row(csv, record("b").to_row({"x/net@v2": 0.2}))
    append_row(csv, record("c").to_row({"x/other-net@v1": 0.3}))
    table = read_leaderboard(csv)
    assert table["x/net@v1"].tolist()[0] == 0.1 and table["x/net@v1"].isna().tolist() == [False, True, True]
    assert table["x/net@v2"].isna().tolist() == [True, False, True]
    assert table["x/other-net@v1"].iloc[2] == 0.3


def test_old_cells_round_trip_as_text(tmp_path):
    csv = tmp_path / "board.csv"
    # a sha that pandas would parse as a float if read naively
    append_row(csv, record("a", git_sha="1234e5").to_row({B2I: 0.1 + 0.2}))
    append_row(csv, record("b").to_row())
    table = read_leaderboard(csv)
    assert table["git_sha"].tolist() == ["1234e5", "0" * 40]
    assert table[B2I].iloc[0] == 0.1 + 0.2  # repr round-trip, bit exact


def test_rejects_duplicate_and_missing_run_id_and_bad_metric(tmp_path):
    csv = tmp_path / "board.csv"
    append_row(csv, record("a").to_row())
    with pytest.raises(ConfigError, match="already there"):
        append_row(csv, record("a").to_row())
    with pytest.raises(ConfigError, match="no run_id"):
        append_row(csv, {B2I: 0.5})
    with pytest.raises(ConfigError, match="not a metric spec id"):
        record("c").to_row({"retrieval_top1": 0.5})
    assert not list(tmp_path.glob("*.tmp"))


def _append_many(csv_path, worker, count):
    for i in range(count):
        append_row(Path(csv_path), record(f"w{worker}-{i}").to_row({f"m{worker}@v1": float(i)}))


def test_concurrent_appends_keep_every_row(tmp_path):
    csv = tmp_path / "board.csv"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(csv), w, 10)) for w in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    table = read_leaderboard(csv)
    assert len(table) == 20 and table["run_id"].is_unique
    for w in range(2):
        mine = table[table["run_id"].str.startswith(f"w{w}-")]
        assert sorted(mine[f"m{w}@v1"].tolist()) == [float(i) for i in range(10)]
        assert mine[f"m{1 - w}@v1"].isna().all()
    assert not list(tmp_path.glob("*.tmp"))


def test_git_sha_fallback_and_provenance(tmp_path, monkeypatch):
    assert git_sha(tmp_path) == "unknown"  # not a checkout

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert git_sha() == "unknown"  # git not installed
    monkeypatch.undo()
    repo = tmp_path / "repo"
    repo.mkdir()
    env_run = dict(cwd=repo, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q"], **env_run)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
        **env_run,
    )
    sha = git_sha(repo)
    assert len(sha) == 40 and int(sha, 16) >= 0
    versions = package_versions()
    assert versions.startswith("torch=") and "scikit-image=" in versions and "open_clip_torch=" in versions
    assert package_versions(("surely-not-a-package-xyz",)) == "surely-not-a-package-xyz=not-installed"
    assert set(collect_provenance(tmp_path)) == {"git_sha", "package_versions"}


def test_run_record_new_stamps_provenance():
    rec = RunRecord.new(
        method="ridge",
        method_version="1",
        dataset="world",
        dataset_version="1",
        split="test",
        subject="subj01",
        backbone="world-clip-v1:shipped",
        seed=0,
        n_train_samples=10,
        n_params=5,
        train_seconds=0.1,
        peak_memory_mb=1.0,
    )
    assert rec.run_id and rec.time_utc.endswith("+00:00") and rec.package_versions.startswith("torch=")
    assert list(rec.to_row()) == list(PROVENANCE_COLUMNS)
