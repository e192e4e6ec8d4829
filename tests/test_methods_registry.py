"""The method registry: every config under ``brainbench/configs`` loads and builds at its reference scale.

Parametrised over the registry itself (as open_clip's tests run over ``list_models()``), so a new method or
a new scale config is tested without a new test.
"""

import inspect
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from brainbench.cli import main
from brainbench.describe import SCALE_VOXELS, backbone_target_shapes, scale_shapes, synthetic_rois
from brainbench.errors import ConfigError
from brainbench.methods import (
    CONFIG_ROOT,
    build_method,
    list_methods,
    list_scales,
    load_method_config,
    method_class_path,
    resolve_class,
)
from brainbench.methods.base import DecoderModule, adamw_one_cycle
from brainbench.registry import Registry

CONFIGS = [(method, scale) for method in list_methods() for scale in list_scales(method)]


def test_list_methods():
    methods = list_methods()
    assert {"litemind", "ridge"} <= set(methods)
    assert methods == sorted(methods)
    for method in methods:
        assert {scale.split("-")[0] for scale in list_scales(method)} <= set(SCALE_VOXELS), method


def test_every_method_has_the_world_scale_and_a_real_one():
    for method in list_methods():
        scales = set(list_scales(method))
        assert "world" in scales and scales & {"nsd", "god", "cc2017"}, method


def test_unknown_method_lists_the_options():
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; available: .*litemind.*ridge"):
        load_method_config("nope", "world")


def test_unknown_scale_lists_the_options():
    with pytest.raises(ConfigError, match=r"litemind has no 'huge' config; available: nsd, world"):
        load_method_config("litemind", "huge")


def test_resolve_class_refuses_unregistered_paths_without_importing_them(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_decoder.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Decoder: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("evil_decoder.Decoder", "brainbench.methods.nope.Decoder", "brainbench.methods.ridge.Nope"):
        with pytest.raises(ConfigError, match=r"is not a registered method class; registered: .*LiteMind"):
            resolve_class(path)
    assert not marker.exists() and "evil_decoder" not in sys.modules
    assert resolve_class("brainbench.methods.ridge.RidgeDecoder").method_id == "ridge"
    assert resolve_class("brainbench.methods.ridge:RidgeDecoder").method_id == "ridge"


def test_load_pretrained_refuses_an_unregistered_class_path(tmp_path):
    (tmp_path / "decoder.json").write_text(
        json.dumps({"method_id": "ridge", "class_path": "os.system", "init_args": {"n_voxels": 3}})
    )
    (tmp_path / "decoder.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="'os.system' is not a registered method class"):
        DecoderModule.load_pretrained(tmp_path)


class PluginDecoder:
    """A stand-in for a plug-in's class: its configs live in ``config_dir``."""

    config_dir: Path


def test_a_plugin_method_finds_its_configs_in_its_config_dir(tmp_path, monkeypatch):
    (tmp_path / "world.yaml").write_text("model:\n  init_args: {}\n")
    monkeypatch.setattr(PluginDecoder, "config_dir", tmp_path, raising=False)
    plugins = Registry("method", {})
    plugins.register("plugin", PluginDecoder)  # as an entry point adds it: not a built-in method
    monkeypatch.setattr("brainbench.methods.METHODS", plugins)
    assert list_methods() == ["plugin"] and list_scales("plugin") == ["world"]
    with pytest.raises(ConfigError, match=r"world\.yaml: needs model\.class_path"):
        load_method_config("plugin", "world")
    assert method_class_path("plugin") == f"{__name__}.PluginDecoder"


@pytest.mark.parametrize(("method", "scale"), CONFIGS, ids=[f"{m}-{s}" for m, s in CONFIGS])
def test_config_builds_at_its_reference_scale(method, scale):
    config = load_method_config(method, scale)
    assert config["path"] == str(CONFIG_ROOT / method / f"{scale}.yaml")
    shapes = scale_shapes(config)
    torch.manual_seed(0)
    rois = synthetic_rois(shapes["n_voxels"])
    model = build_method(config, shapes["n_voxels"], shapes["target_shapes"], rois=rois)
    assert isinstance(model, DecoderModule)
    assert model.method_id == method
    assert model.paper and model.fidelity
    assert model.n_voxels == shapes["n_voxels"]
    assert model.n_parameters() > 0
    # the data section loads every cached feature the model predicts (derived predictions such as BrainMCLIP's
    # `detail` or NeuroClips' frame latents have no cache entry), from a backbone id of the <arch>:<tag> form
    data = config["data"]
    cached = {n for n in model.predicted_names() if n.startswith(("clip_", "layer:", "pixels:", "frames:"))}
    assert cached <= set(data["targets"])
    assert ":" in data["backbone"]
    # max_epochs is written once, under trainer; a schedule that takes it receives the trainer's value
    assert "max_epochs" not in (config["model"].get("init_args") or {})
    if "max_epochs" in inspect.signature(type(model).__init__).parameters:
        assert model.hparams.max_epochs == config["trainer"]["max_epochs"]
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, shapes["n_voxels"]))
    assert set(model.predicted_names()) <= set(out)
    for name, value in out.items():
        if name in shapes["target_shapes"]:
            assert value.shape == (2, *shapes["target_shapes"][name]), name


def test_build_method_converts_lists_to_tuples():
    config = load_method_config("litemind", "world")
    shapes = scale_shapes(config)
    model = build_method(config, shapes["n_voxels"], shapes["target_shapes"])
    init_args = config["model"]["init_args"]
    assert isinstance(init_args["stage_widths"], list)
    assert model.hparams.stage_widths == tuple(init_args["stage_widths"])
    assert model.hparams.depths == tuple(init_args["depths"])


def test_describe_litemind_at_nsd_scale(capsys):
    assert main(["describe", "litemind", "--scale", "nsd"]) == 0
    printed = capsys.readouterr().out
    assert "15,652,991 parameters" in printed
    assert "15724 voxels" in printed
    assert "Gong et al. 2024" in printed


def test_describe_unknown_method_fails_cleanly(capsys):
    assert main(["describe", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_backbone_target_shapes_follow_the_open_clip_configs():
    shapes = backbone_target_shapes(
        "ViT-L-14:openai", ["clip_tokens", "clip_image", "layer:12", "clip_captions"]
    )
    assert shapes == {
        "clip_tokens": (257, 768),
        "clip_image": (768,),
        "layer:12": (257, 1024),
        "clip_captions": (5, 768),
    }
    assert backbone_target_shapes("ViT-B-32:openai", ["clip_text"]) == {"clip_text": (512,)}
    assert backbone_target_shapes("world-clip:v1", ["clip_tokens", "layer:2"]) == {
        "clip_tokens": (65, 128),
        "layer:2": (65, 192),
    }
    with pytest.raises(ConfigError, match="no shape rule for target 'voxels'"):
        backbone_target_shapes("world-clip:v1", ["voxels"])


def test_synthetic_rois_cover_disjoint_blocks_with_world_proportions():
    rois = synthetic_rois(15724)
    assert rois["nsdgeneral/nsdgeneral"] == list(range(15724))
    blocks = [set(v) for k, v in rois.items() if k != "nsdgeneral/nsdgeneral"]
    assert sum(map(len, blocks)) == len(set().union(*blocks))  # disjoint
    assert len(rois["prf-visualrois/V1v"]) == round(106 / 2520 * 15724)


def test_world_scale_shapes_come_from_the_world_clip_config():
    config = load_method_config("litemind", "world")
    assert scale_shapes(config) == {"n_voxels": 2520, "target_shapes": {"clip_tokens": (65, 128)}}


def test_adamw_one_cycle_decays_matrices_only_and_warms_up_for_two_epochs():
    layer, norm = torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)
    module = SimpleNamespace(trainer=SimpleNamespace(estimated_stepping_batches=100))
    params = [layer.weight, *norm.parameters(), layer.bias]
    setup = adamw_one_cycle(module, params, max_lr=0.01, weight_decay=0.1, max_epochs=10)
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert [(len(g["params"]), g["weight_decay"]) for g in optimizer.param_groups] == [(1, 0.1), (3, 0.0)]
    assert setup["lr_scheduler"]["interval"] == "step" and scheduler.total_steps == 100
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(range(100), key=lrs.__getitem__) == 19  # peak after 2 of 10 epochs (pct_start 0.2)
    assert abs(max(lrs) - 0.01) < 1e-6 and lrs[-1] < 1e-5
    only_vectors = adamw_one_cycle(module, [norm.weight], max_lr=0.01, weight_decay=0.1, max_epochs=1)
    assert len(only_vectors["optimizer"].param_groups) == 1  # the empty decay group is dropped
