"""Stages bench adds around a method: config-chosen dataset, pre-training subjects and cache, image grids."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from brainbench.config import load_run_config as resolve_request
from brainbench.errors import ConfigError
from brainbench.generators.run import save_gallery
from brainbench.methods.litemind import LiteMind
from brainbench.pretraining import pretrain_cache_dir, pretrain_subjects
from brainbench.request import BenchRequest, config_name
from brainbench.training import RunSettings, compile_model, trainer_precision


def write_config(tmp_path: Path, **sections) -> str:
    config = {
        "model": {"class_path": "brainbench.methods.ridge.RidgeDecoder", "init_args": {}},
        "trainer": {"max_epochs": 1},
        "data": {"backbone": "world-clip:v1", "targets": ["clip_image"], "train_sessions": 1},
        **sections,
    }
    path = tmp_path / "world-ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_dataset_comes_from_the_config_unless_given(tmp_path):
    path = write_config(tmp_path, dataset="world-god")
    request, config = resolve_request(BenchRequest(method="ridge", config=path))
    assert request.dataset == "world-god"
    assert config_name(config) == "world-ablation"
    request, _ = resolve_request(BenchRequest(method="ridge", config=path, dataset="world-nsd"))
    assert request.dataset == "world-nsd"
    request, _ = resolve_request(BenchRequest(method="ridge", config=write_config(tmp_path)))
    assert request.dataset == "world-nsd"


def test_generator_override_needs_a_generator_section(tmp_path):
    with pytest.raises(ConfigError, match="has no generator section"):
        resolve_request(BenchRequest(method="ridge", config=write_config(tmp_path), generator="retrieval"))
    path = write_config(tmp_path, generator={"kind": "world-decoder", "inputs": {"clip_image": "clip_image"}})
    _, config = resolve_request(BenchRequest(method="ridge", config=path, generator="retrieval"))
    assert config["generator"] == {"kind": "retrieval", "inputs": {"clip_image": "clip_image"}}


def test_pretrain_subjects():
    request = BenchRequest(method="mindtuner", subject=2, dataset="world-nsd", world_preset="small")
    assert pretrain_subjects(request, {"subjects": "others"}) == [1, 3, 4, 5, 6, 7, 8]
    assert pretrain_subjects(request, {"subjects": [1, 2, 5]}) == [1, 5]
    with pytest.raises(ConfigError, match="leaves no subject besides 2"):
        pretrain_subjects(request, {"subjects": [2]})
    with pytest.raises(ConfigError, match="needs a world dataset"):
        pretrain_subjects(replace(request, dataset="nsd"), {"subjects": "others"})


def test_pretrain_cache_is_shared_across_session_counts_but_not_seeds(tmp_path):
    request = BenchRequest(method="mindtuner", dataset="world-nsd", home=tmp_path)
    config = yaml.safe_load(Path(write_config(tmp_path, pretrain={"subjects": "others"})).read_text())
    all_sessions = {**config, "data": {**config["data"], "train_sessions": None}}
    key = pretrain_cache_dir(request, config, [2, 3], "world-clip:v1")
    assert key.parent == tmp_path / "pretrained"
    assert pretrain_cache_dir(request, all_sessions, [2, 3], "world-clip:v1") == key
    assert pretrain_cache_dir(replace(request, seed=1), config, [2, 3], "world-clip:v1") != key
    assert pretrain_cache_dir(request, config, [2, 4], "world-clip:v1") != key


class FakeStore:
    def images(self, stim_ids):
        return np.stack([np.full((4, 5, 3), int(s), dtype=np.uint8) for s in stim_ids])

    def frames(self, stim_ids):
        return np.stack(
            [np.stack([np.full((4, 5, 3), int(s) + f, dtype=np.uint8) for f in range(3)]) for s in stim_ids]
        )


def test_gallery_saves_generated_images_beside_their_ground_truth(tmp_path):
    stim_ids = np.array([30, 10, 20])
    images = torch.stack([torch.full((4, 5, 3), 100 + int(s), dtype=torch.uint8) for s in stim_ids])
    save_gallery(images, FakeStore(), stim_ids, tmp_path / "recons")
    assert sorted(p.name for p in (tmp_path / "recons").iterdir()) == [
        "000010.png", "000020.png", "000030.png", "gt_000010.png", "gt_000020.png", "gt_000030.png"
    ]  # fmt: skip
    assert (np.asarray(Image.open(tmp_path / "recons" / "000020.png")) == 120).all()
    assert (np.asarray(Image.open(tmp_path / "recons" / "gt_000020.png")) == 20).all()


def test_gallery_spreads_its_stimuli_over_the_test_set(tmp_path):
    stim_ids = np.arange(100, 129)[::-1].copy()  # 29 stimuli, rows in reverse id order
    images = torch.stack([torch.full((4, 5, 3), int(s), dtype=torch.uint8) for s in stim_ids])
    save_gallery(images, FakeStore(), stim_ids, tmp_path)
    saved = sorted(int(p.stem) for p in tmp_path.glob("[0-9]*.png"))
    assert saved == [100, 104, 108, 112, 116, 120, 124, 128]  # 8 evenly spaced ids, first and last included
    assert (np.asarray(Image.open(tmp_path / "000104.png")) == 104).all()


def test_gallery_saves_clips_as_frame_strips(tmp_path):
    stim_ids = np.array([7])
    clips = torch.stack([torch.full((4, 5, 3), 50 + f, dtype=torch.uint8) for f in range(3)])[None]
    save_gallery(clips, FakeStore(), stim_ids, tmp_path)
    strip = np.asarray(Image.open(tmp_path / "000007.png"))
    truth = np.asarray(Image.open(tmp_path / "gt_000007.png"))
    assert strip.shape == truth.shape == (4, 15, 3)
    assert (strip[:, 5:10] == 51).all() and (truth[:, 10:] == 9).all()


def test_precision_defaults_to_float32_on_cpu_and_honours_the_request():
    assert trainer_precision(RunSettings(accelerator="cpu")) == "32-true"
    assert trainer_precision(RunSettings(precision="bf16-mixed")) == "bf16-mixed"
    if not torch.cuda.is_available():
        assert trainer_precision(RunSettings()) == "32-true"


class PretrainingModel:
    method_version = "1"
    pretrain_args = ("hidden",)

    def __init__(self, hidden, lora_rank):
        self.args = {"hidden": hidden, "lora_rank": lora_rank}

    def init_args(self):
        return self.args


def test_pretrain_cache_keys_only_on_the_declared_pretraining_arguments(tmp_path):
    request = BenchRequest(method="mindtuner", dataset="world-nsd", home=tmp_path)
    config = yaml.safe_load(Path(write_config(tmp_path, pretrain={"subjects": "others"})).read_text())
    key = pretrain_cache_dir(request, config, [2], "world-clip:v1", PretrainingModel(64, lora_rank=4))
    assert pretrain_cache_dir(request, config, [2], "world-clip:v1", PretrainingModel(64, lora_rank=8)) == key
    assert pretrain_cache_dir(request, config, [2], "world-clip:v1", PretrainingModel(32, lora_rank=4)) != key


_COMPILE_CHECK = """
import torch
from brainbench.methods.litemind import LiteMind
from brainbench.training import RunSettings, compile_model

model = LiteMind(340, {"clip_tokens": (5, 16)}, stage_widths=(16, 8), depths=(1, 1, 1), max_epochs=1).eval()
voxels = torch.randn(3, 340)
eager, keys = model(voxels)["clip_tokens"], list(model.state_dict())
compile_model(model, RunSettings(), backend="eager")  # inductor needs minutes here
torch.testing.assert_close(model(voxels)["clip_tokens"], eager)
assert list(model.state_dict()) == keys and model._compiled_call_impl is not None
"""


def test_compile_keeps_the_module_outputs_and_state_dict_keys():
    # its own interpreter: once torch.compile is loaded, a later backward in this process leaves autograd
    # threads that the fork-launched DDP ranks of tests/test_ddp.py cannot use
    done = subprocess.run([sys.executable, "-c", _COMPILE_CHECK], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_compile_refuses_cpu_ranks_forked_by_lightning():
    model = LiteMind(340, {"clip_tokens": (5, 16)}, stage_widths=(16, 8), depths=(1, 1, 1), max_epochs=1)
    settings = RunSettings(accelerator="cpu", devices=2, strategy="ddp")
    with pytest.raises(ConfigError, match="--compile cannot be combined with CPU DDP ranks forked"):
        compile_model(model, settings)
    assert model._compiled_call_impl is None
