"""``leaderboard push`` and ``push-model`` through the real ``huggingface_hub.HfApi`` against a local fake hub
(tests/fake_hub.py: repo creation, YAML validation, preupload and commit over HTTP on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from fake_hub import FakeHub
from huggingface_hub import constants
from leaderboard_records import make_record
from safetensors.torch import save_file

from brainbench.cli import main
from brainbench.leaderboard.store import append_row, read_leaderboard, read_reported

REPO_ROOT = Path(__file__).resolve().parents[1]
B2I = "retrieval_b2i_top1_subset300/world-clip-v1.clip_tokens@v1"


@pytest.fixture
def online(monkeypatch):
    """BRAINBENCH_OFFLINE=0, and huggingface_hub's own switch off (an earlier test may have set it)."""
    monkeypatch.setenv("BRAINBENCH_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def boards(tmp_path):
    """The repository's leaderboards (evaluated and as-reported CSVs) plus one more appended here."""
    root = tmp_path / "leaderboards"
    shutil.copytree(REPO_ROOT / "leaderboards", root, ignore=shutil.ignore_patterns("*.md", "report"))
    append_row(root / "world-nsd" / "extra.csv", make_record("run-1").to_row({B2I: 0.25}))
    return root


def test_push_is_refused_while_offline_is_on(boards, monkeypatch, capsys):
    monkeypatch.delenv("BRAINBENCH_OFFLINE", raising=False)  # the default: on
    with FakeHub() as hub:
        code = main(
            ["leaderboard", "push", "--repo", "u/r", "--leaderboards", str(boards), "--endpoint", hub.url]
        )
        assert code == 2 and hub.requests == []
        assert main(["push-model", str(boards), "--repo", "u/m", "--endpoint", hub.url]) == 2
        assert hub.requests == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("BRAINBENCH_OFFLINE=0" in line for line in err)


def test_push_uploads_every_csv_and_a_typed_parquet_copy(boards, online, capsys):
    csvs = sorted(p.relative_to(boards).as_posix() for p in boards.rglob("*.csv"))
    assert "reported/nsd.csv" in csvs and "world-nsd/extra.csv" in csvs
    with FakeHub() as hub:
        args = [
            "--repo",
            "me/results",
            "--leaderboards",
            str(boards),
            "--endpoint",
            hub.url,
            "--token",
            hub.token,
        ]
        assert main(["leaderboard", "push", *args]) == 0
        assert hub.unknown == []
        files = hub.repos[("dataset", "me/results")]
        assert len(hub.commits) == 1
    assert "dataset repo me/results" in capsys.readouterr().out
    assert sorted(files) == sorted([*csvs, *(c.replace(".csv", ".parquet") for c in csvs)])
    for rel in csvs:
        assert files[rel] == (boards / rel).read_bytes()
        expected = (
            read_reported(boards / rel) if rel.startswith("reported/") else read_leaderboard(boards / rel)
        )
        pd.testing.assert_frame_equal(
            pd.read_parquet(io.BytesIO(files[rel.replace(".csv", ".parquet")])), expected
        )
    extra = pd.read_parquet(io.BytesIO(files["world-nsd/extra.parquet"]))
    assert (
        extra[B2I].dtype == "float64" and extra[B2I].iloc[0] == 0.25 and str(extra["seed"].dtype) == "Int64"
    )


def test_push_errors_are_one_line(boards, online, capsys):
    with FakeHub() as hub:
        bad_token = [
            "--repo",
            "me/results",
            "--leaderboards",
            str(boards),
            "--endpoint",
            hub.url,
            "--token",
            "hf_no",
        ]
        assert main(["leaderboard", "push", *bad_token]) == 2
        (boards / "world-nsd" / "extra.csv").write_text("run_id,method\n1,2,3\n")
        good_token = [*bad_token[:-1], hub.token]
        assert main(["leaderboard", "push", *good_token]) == 2
        assert [
            r for r in hub.requests if "/commit/" in r
        ] == []  # a broken CSV stops the push before sending
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "me/results" in err[0] and "token" in err[0] and "401" in err[0]
    assert "extra.csv" in err[1]


def test_hub_offline_in_the_environment_is_a_one_line_error(boards, online, monkeypatch, capsys):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with FakeHub() as hub:
        args = ["--repo", "me/r", "--leaderboards", str(boards), "--endpoint", hub.url, "--token", hub.token]
        assert main(["leaderboard", "push", *args]) == 2
        assert hub.requests == []
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def _model_folder(tmp_path):
    run = tmp_path / "runs" / "20260101T000000Z-abcd1234"
    model = run / "model"
    model.mkdir(parents=True)
    save_file({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, model / "decoder.safetensors")
    (model / "decoder.json").write_text(json.dumps({"method_id": "ridge", "init_args": {"n_voxels": 3}}))
    row = make_record(run.name).to_row({B2I: 0.25})
    (run / "result.json").write_text(json.dumps({"leaderboard": "x.csv", "row": row}))
    return model


def test_push_model_uploads_weights_config_and_a_model_card(tmp_path, online, capsys):
    model = _model_folder(tmp_path)
    with FakeHub() as hub:
        args = [str(model), "--repo", "me/ridge-subj01", "--endpoint", hub.url, "--token", hub.token]
        assert main(["push-model", *args]) == 0
        assert hub.unknown == [] and "POST /api/validate-yaml" in hub.requests
        files = hub.repos[("model", "me/ridge-subj01")]
    assert sorted(files) == ["README.md", "decoder.json", "decoder.safetensors"]
    assert files["decoder.safetensors"] == (model / "decoder.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert (
        card.startswith("---\nlibrary_name: brainbench")
        and "20260101T000000Z-abcd1234" in card
        and B2I in card
    )
    assert "model repo me/ridge-subj01" in capsys.readouterr().out
    # a card the user wrote is uploaded as it is
    (model / "README.md").write_text("---\nlicense: mit\n---\nmine\n")
    with FakeHub() as hub:
        assert main(["push-model", *args[:4], hub.url, "--token", hub.token]) == 0
        assert hub.repos[("model", "me/ridge-subj01")]["README.md"] == b"---\nlicense: mit\n---\nmine\n"


def test_push_model_needs_a_saved_model(tmp_path, online, capsys):
    model = _model_folder(tmp_path)
    (model / "decoder.safetensors").unlink()
    with FakeHub() as hub:
        assert (
            main(["push-model", str(model), "--repo", "me/m", "--endpoint", hub.url, "--token", hub.token])
            == 2
        )
        assert hub.requests == []
    assert "decoder.safetensors" in capsys.readouterr().err
