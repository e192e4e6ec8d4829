"""The method registry: every config under ``brainbench/configs`` loads and builds at its reference scale.

Parametrised over the registry itself (as open_clip's tests run over ``list_models()``), so a new method or
a new scale config is tested without a new test.
"""

import pytest
import torch

from brainbench.bench import SCALE_SHAPES, scale_shapes
from brainbench.cli import main
from brainbench.errors import ConfigError
from brainbench.methods import (
    CONFIG_ROOT,
    build_method,
    list_methods,
    list_scales,
    load_method_config,
    resolve_class,
)
from brainbench.methods.base import DecoderModule

CONFIGS = [(method, scale) for method in list_methods() for scale in list_scales(method)]


def test_list_methods():
    methods = list_methods()
    assert {"litemind", "ridge"} <= set(methods)
    assert methods == sorted(methods)
    for method in methods:
        assert set(list_scales(method)) <= set(SCALE_SHAPES), method


def test_every_method_has_the_reference_scales():
    for method in list_methods():
        assert {"nsd", "world"} <= set(list_scales(method)), method


def test_unknown_method_lists_the_options():
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; available: .*litemind.*ridge"):
        load_method_config("nope", "world")


def test_unknown_scale_lists_the_options():
    with pytest.raises(ConfigError, match=r"litemind has no 'huge' config; available: nsd, world"):
        load_method_config("litemind", "huge")


def test_unimportable_class_path():
    with pytest.raises(ConfigError, match=r"cannot import 'brainbench.methods.nope.Decoder'"):
        resolve_class("brainbench.methods.nope.Decoder")
    with pytest.raises(ConfigError, match=r"cannot import 'brainbench.methods.ridge.Nope'"):
        resolve_class("brainbench.methods.ridge.Nope")


def test_config_without_class_path(tmp_path, monkeypatch):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "world.yaml").write_text("model:\n  init_args: {}\n")
    monkeypatch.setattr("brainbench.methods.CONFIG_ROOT", tmp_path)
    assert list_methods() == ["broken"]
    with pytest.raises(ConfigError, match=r"world\.yaml: needs model\.class_path"):
        load_method_config("broken", "world")


@pytest.mark.parametrize(("method", "scale"), CONFIGS, ids=[f"{m}-{s}" for m, s in CONFIGS])
def test_config_builds_at_its_reference_scale(method, scale):
    config = load_method_config(method, scale)
    assert config["path"] == str(CONFIG_ROOT / method / f"{scale}.yaml")
    shapes = scale_shapes(config)
    torch.manual_seed(0)
    model = build_method(config, shapes["n_voxels"], shapes["target_shapes"])
    assert isinstance(model, DecoderModule)
    assert model.method_id == method
    assert model.paper and model.fidelity
    assert model.n_voxels == shapes["n_voxels"]
    assert model.n_parameters() > 0
    # the data section loads every target the model predicts, from a backbone id of the <arch>:<tag> form
    data = config["data"]
    assert set(model.predicted_names()) <= set(data["targets"])
    assert ":" in data["backbone"]
    # the learning-rate schedule and the trainer agree on the number of epochs
    init_args = config["model"].get("init_args") or {}
    if "max_epochs" in init_args:
        assert init_args["max_epochs"] == config["trainer"]["max_epochs"]
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, shapes["n_voxels"]))
    assert set(out) == set(model.predicted_names())
    for name, value in out.items():
        assert value.shape == (2, *shapes["target_shapes"][name])


def test_build_method_converts_lists_to_tuples():
    config = load_method_config("litemind", "world")
    shapes = SCALE_SHAPES["world"]
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
