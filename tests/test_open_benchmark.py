"""Bring your own data and predictions: the documented prepared-folder contract, ``bench --prepared`` and
``evaluate --predictions`` (scored exactly as ``bench`` scores its own predictions)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from raw_fixtures import fixture_module
from safetensors.torch import load_file, save_file

from brainbench.cli import main
from brainbench.data.manifest import Manifest
from brainbench.data.sources.mindeye import prepare_mindeye
from brainbench.errors import DataFormatError
from brainbench.leaderboard.store import read_leaderboard
from brainbench.submission import load_predictions, scored_stim_ids

DOC = Path(__file__).parents[1] / "docs" / "prepared-data.md"


def _doc_example() -> str:
    """The Python block of the contract page, run as written (it writes ``my-prepared/subj01``)."""
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


@pytest.fixture(scope="module")
def contract_folder(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        exec(compile(_doc_example(), str(DOC), "exec"), {})  # noqa: S102 - our own documentation
    return cwd / "my-prepared" / "subj01"


def test_the_documented_example_writes_a_valid_prepared_folder(contract_folder):
    manifest = Manifest.load(contract_folder)
    assert (manifest.dataset, manifest.subject, manifest.n_voxels) == ("toy-brains", 1, 300)
    assert {s: manifest.splits[s]["n_samples"] for s in ("train", "val", "test")} == {
        "train": 120,
        "val": 10,
        "test": 30,
    }
    assert scored_stim_ids(contract_folder, manifest).tolist() == list(range(130, 160))


def _bench(tmp_path: Path, prepared: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--method",
        "ridge",
        "--prepared",
        str(prepared),
        "--config",
        "world",
        "--home",
        str(tmp_path / "home"),
        "--leaderboards",
        str(tmp_path / "leaderboards"),
        "--runs",
        str(tmp_path / "runs"),
        "--quiet",
        *extra,
    ]


@pytest.mark.slow
def test_bench_on_the_contract_then_evaluate_its_saved_predictions_gives_the_same_row(
    contract_folder, tmp_path, capsys
):
    assert main(_bench(tmp_path, contract_folder, "--save-predictions")) == 0, capsys.readouterr().err
    csv_path = tmp_path / "leaderboards" / "toy-brains" / "retrieval.csv"
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert str(csv_path) in capsys.readouterr().out
    predictions = run_dir / "predictions.safetensors"
    # shuffled rows with their stim_id: evaluate puts them back in test order
    saved = load_file(predictions)
    order = torch.randperm(len(saved["stim_id"]), generator=torch.Generator().manual_seed(0))
    shuffled = tmp_path / "shuffled.safetensors"
    save_file({name: value[order].contiguous() for name, value in saved.items()}, str(shuffled))
    args = ["--prepared", str(contract_folder), "--predictions", str(shuffled), "--method", "my-ridge"]
    assert main(["evaluate", *args, "--leaderboards", str(tmp_path / "leaderboards"), "--label", "v0"]) == 0
    table = read_leaderboard(csv_path)
    assert list(table["method"]) == ["ridge", "my-ridge"]
    assert list(table["source"]) == ["brainbench", "external"] and table["method_version"].iloc[1] == "v0"
    metrics = [c for c in table.columns if "@" in c and table[c].notna().all()]
    assert any("retrieval_b2i_top1" in m for m in metrics) and any(
        "identification_2way" in m for m in metrics
    )
    for metric in metrics:
        assert table[metric].iloc[1] == pytest.approx(table[metric].iloc[0], abs=1e-6), metric
    assert table[metrics].iloc[0].max() > 0.5  # the toy brain is decodable: the numbers mean something
    # the saved model: a card, what inference needs, and predict reproduces the scored predictions
    card = (run_dir / "model" / "README.md").read_text()
    assert "ridge v2 on toy-brains subj01" in card and "world-clip:v1" in card and run_dir.name in card
    inference = json.loads((run_dir / "model" / "inference.json").read_text())
    assert inference["backbone"] == "world-clip:v1" and inference["n_voxels"] == 300
    out = tmp_path / "predicted.safetensors"
    model = str(run_dir / "model")
    assert main(["predict", "--model", model, "--prepared", str(contract_folder), "--out", str(out)]) == 0
    again = load_file(out)
    assert torch.equal(again["stim_id"], saved["stim_id"])
    torch.testing.assert_close(again["clip_tokens"], saved["clip_tokens"], rtol=0, atol=1e-5)
    voxels = tmp_path / "voxels.npy"
    np.save(voxels, np.zeros((2, 300), np.float32))
    assert main(["predict", "--model", model, "--voxels", str(voxels), "--out", str(out)]) == 0
    assert load_file(out)["clip_tokens"].shape == (2, 65, 128)
    # reconstructions: predict generates them, evaluate scores the folder of <stim_id>.png
    generated = tmp_path / "generated.safetensors"
    args = [
        "--model",
        model,
        "--prepared",
        str(contract_folder),
        "--out",
        str(generated),
        "--generate",
        "retrieval",
    ]
    assert main(["predict", *args]) == 0
    assert sorted(int(p.stem) for p in (tmp_path / "generated_images").glob("*.png")) == list(range(130, 160))
    args = ["--prepared", str(contract_folder), "--predictions", str(tmp_path / "generated_images")]
    assert (
        main(["evaluate", *args, "--method", "recons", "--leaderboards", str(tmp_path / "leaderboards")]) == 0
    )
    assert read_leaderboard(csv_path)["pixcorr@v1"].notna().tolist() == [False, False, True]


@pytest.mark.slow
def test_bench_prepared_on_a_prepared_mindeye_folder_appends_a_row(tmp_path, capsys):
    root = tmp_path / "mindeyev2"
    fixture_module("mindeye").write_me2_fixture(root)
    prepared = tmp_path / "prepared" / "me2-subj01"
    prepare_mindeye(root, 1, prepared, val_fraction=0.2, samples_per_shard=5, progress=False)
    assert main(_bench(tmp_path, prepared)) == 0, capsys.readouterr().err
    manifest = Manifest.load(prepared)
    table = pd.read_csv(tmp_path / "leaderboards" / manifest.dataset / "retrieval.csv")
    assert list(table["method"]) == ["ridge"] and table["dataset_version"].iloc[0] == manifest.dataset_version


def test_a_dataset_without_a_config_of_its_own_asks_for_config(contract_folder, tmp_path, capsys):
    args = [a for a in _bench(tmp_path, contract_folder) if a not in ("--config", "world")]
    assert main(args) == 2
    assert "no config for dataset 'toy-brains'" in capsys.readouterr().err


def test_pretraining_methods_need_their_other_subjects(contract_folder, tmp_path, capsys):
    args = _bench(tmp_path, contract_folder)
    args[args.index("ridge")] = "mindtuner"
    assert main(args) == 2
    assert "holds subject 1 only" in capsys.readouterr().err


# --- evaluate: one clear error per kind of mismatch -----------------------------------------------------


@pytest.fixture
def ids() -> np.ndarray:
    return np.arange(130, 160)


def _write(path: Path, **arrays: np.ndarray) -> Path:
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, str(path))
    return path


def test_rows_in_test_order_or_keyed_by_stim_id(tmp_path, ids):
    values = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    in_order = load_predictions(_write(tmp_path / "a.safetensors", clip_image=values), ids)
    reversed_rows = _write(tmp_path / "b.safetensors", clip_image=values[::-1], stim_id=ids[::-1])
    torch.testing.assert_close(load_predictions(reversed_rows, ids)["clip_image"], in_order["clip_image"])
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "a.safetensors", clip_image=values)
    np.save(folder / "clip_text.npy", values)
    assert set(load_predictions(folder, ids)) == {"clip_image", "clip_text"}  # a folder of both kinds
    np.save(folder / "clip_image.npy", values)
    with pytest.raises(DataFormatError, match="'clip_image' is also in"):
        load_predictions(folder, ids)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"clip_image": np.zeros((29, 4), np.float32)}, "29 rows, the test split has 30"),
        ({"clip_image": np.zeros((30, 4), np.float32), "stim_id": np.arange(30)}, "does not match the test"),
        ({"clip_image": np.full((30, 4), np.nan, np.float32)}, "finite floating-point"),
        ({"clip_image": np.zeros((30, 4), np.int64)}, "finite floating-point"),
    ],
)
def test_each_mismatch_is_one_clear_error(tmp_path, ids, arrays, message):
    with pytest.raises(DataFormatError, match=message):
        load_predictions(_write(tmp_path / "p.safetensors", **arrays), ids)


def test_reconstructions_are_named_by_stim_id_and_of_one_size(tmp_path, ids):
    folder = tmp_path / "recons"
    (folder / "images").mkdir(parents=True)
    for stim_id in ids:
        Image.new("RGB", (16, 16), (int(stim_id), 0, 0)).save(folder / "images" / f"{stim_id}.png")
    images = load_predictions(folder, ids)["images"]
    assert images.shape == (30, 16, 16, 3) and images[:, 0, 0, 0].tolist() == ids.tolist()
    Image.new("RGB", (8, 8)).save(folder / "images" / "131.png")
    with pytest.raises(DataFormatError, match=r"131\.png.*size"):
        load_predictions(folder, ids)
    (folder / "images" / "131.png").unlink()
    with pytest.raises(DataFormatError, match=r"missing \[131\]"):
        load_predictions(folder, ids)


def test_a_pickled_npy_is_refused(tmp_path, ids):
    np.save(tmp_path / "clip_image.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match="clip_image.npy"):
        load_predictions(tmp_path / "clip_image.npy", ids)


def test_evaluate_refuses_predictions_in_another_space(contract_folder, tmp_path, ids, capsys):
    path = _write(tmp_path / "p.safetensors", clip_tokens=np.zeros((30, 3, 5), np.float32))
    args = ["evaluate", "--prepared", str(contract_folder), "--predictions", str(path), "--method", "x"]
    assert main([*args, "--leaderboards", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err
    assert "'clip_tokens' rows have shape (3, 5)" in err and "--backbone" in err
    assert not (tmp_path / "lb" / "toy-brains" / "retrieval.csv").exists()
    assert json.loads((contract_folder / "manifest.json").read_text())["dataset"] == "toy-brains"


# --- bring your own model: a method package outside brainbench, found through its entry point ----------

PLUGIN = Path(__file__).parent / "plugin" / "brainbench-linear-probe"


@pytest.mark.slow
def test_a_plugin_method_package_is_installed_discovered_and_benched(contract_folder, tmp_path):
    source, target = tmp_path / "source", tmp_path / "site"
    shutil.copytree(PLUGIN, source)  # pip builds in place; keep tests/ clean
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(Path(__file__).parents[1])])}
    brainbench = [sys.executable, "-m", "brainbench.cli"]
    listed = subprocess.run([*brainbench, "list"], env=env, capture_output=True, text=True, check=True)
    assert re.search(r"method linearprobe +configs: world", listed.stdout), listed.stdout
    args = _bench(tmp_path, contract_folder)
    args[args.index("ridge")] = "linearprobe"
    run = subprocess.run([*brainbench, *args], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    table = read_leaderboard(tmp_path / "leaderboards" / "toy-brains" / "retrieval.csv")
    assert list(table["method"]) == ["linearprobe"]
    assert table["identification_2way/world-clip:v1.clip_image@v1"].iloc[0] > 0.55  # it learned (chance .5)


def test_a_saved_model_naming_an_unregistered_class_is_refused_unimported(tmp_path, capsys):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    record = {"class_path": "os.system", "method_id": "ridge", "init_args": {"n_voxels": 3}}
    (model_dir / "decoder.json").write_text(json.dumps(record))
    save_file({"weight": torch.zeros(1)}, str(model_dir / "decoder.safetensors"))
    np.save(tmp_path / "v.npy", np.zeros((1, 3), np.float32))
    out = str(tmp_path / "out.safetensors")
    args = ["predict", "--model", str(model_dir), "--voxels", str(tmp_path / "v.npy"), "--out", out]
    assert main(args) == 2
    assert "os.system" in capsys.readouterr().err
    (model_dir / "decoder.json").write_text('{"class_path": ')
    assert main(args) == 2
    assert "decoder.json" in capsys.readouterr().err
