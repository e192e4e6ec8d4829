"""No finished run lost: broken leaderboards are found before training, and a failed append can be redone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_records import make_record

from brainbench.bench import append_result
from brainbench.cli import main
from brainbench.errors import DataFormatError, MissingFileError
from brainbench.leaderboard.store import append_row, check_leaderboard, read_leaderboard

METRIC = "retrieval_b2i_top1_full/world-clip-v1.clip_tokens@v1"


def _board(tmp_path: Path) -> Path:
    csv_path = tmp_path / "leaderboards" / "world-nsd" / "retrieval.csv"
    append_row(csv_path, make_record("run-a").to_row({METRIC: 0.25}))
    return csv_path


def test_a_line_with_extra_fields_is_named_before_training(tmp_path: Path) -> None:
    csv_path = _board(tmp_path)
    check_leaderboard(csv_path)  # a sound file passes
    with csv_path.open("a") as handle:
        handle.write(",".join(["x"] * 80) + "\n")
    with pytest.raises(DataFormatError, match=r"retrieval\.csv.*line 3"):
        check_leaderboard(csv_path)
    with pytest.raises(DataFormatError, match="line 3"):
        read_leaderboard(csv_path)  # the renderer refuses it too


def test_a_deleted_key_column_is_refused(tmp_path: Path) -> None:
    csv_path = _board(tmp_path)
    pd.read_csv(csv_path, dtype=str).drop(columns=["method"]).to_csv(csv_path, index=False)
    with pytest.raises(DataFormatError, match=r"missing key columns \['method'\]"):
        read_leaderboard(csv_path)
    check_leaderboard(tmp_path / "absent.csv")  # a leaderboard not written yet is fine


def test_a_failed_append_keeps_the_run_and_leaderboard_append_files_it_later(tmp_path, capsys) -> None:
    csv_path = _board(tmp_path)
    run_dir = tmp_path / "runs" / "run-b"
    run_dir.mkdir(parents=True)
    row = make_record("run-b").to_row({METRIC: 0.5})
    (run_dir / "result.json").write_text(json.dumps({"row": row, "leaderboard": str(csv_path)}))
    good = csv_path.read_text()
    csv_path.write_text(good + ",".join(["x"] * 80) + "\n")  # broken while the run trained
    with pytest.raises(DataFormatError, match=r"kept in .*run-b.*brainbench leaderboard append"):
        append_result(run_dir)
    csv_path.write_text(good)  # repaired
    assert main(["leaderboard", "append", str(run_dir)]) == 0
    assert "appended run run-b" in capsys.readouterr().out
    assert list(read_leaderboard(csv_path)["run_id"]) == ["run-a", "run-b"]
    assert main(["leaderboard", "append", str(run_dir)]) == 2  # never twice
    assert "already there" in capsys.readouterr().err
    with pytest.raises(MissingFileError):
        append_result(tmp_path / "runs" / "unfinished")
