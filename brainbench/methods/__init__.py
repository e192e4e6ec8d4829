"""Decoders, one file each, found through their configs: ``brainbench/configs/<method>/<scale>.yaml``.

A config names its LightningModule by ``class_path``, so adding a method is one module plus one config;
nothing here changes.
"""

from __future__ import annotations

import importlib
import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from brainbench.errors import ConfigError

CONFIG_ROOT = Path(str(resources.files("brainbench") / "configs"))


def list_methods() -> list[str]:
    """Method ids that have at least one config."""
    return sorted(p.name for p in CONFIG_ROOT.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def list_scales(method: str) -> list[str]:
    """Scales (config names) available for ``method``, e.g. ``["nsd", "world"]``."""
    return sorted(p.stem for p in (CONFIG_ROOT / method).glob("*.yaml"))


def load_method_config(method: str, scale: str) -> dict[str, Any]:
    """The parsed ``configs/<method>/<scale>.yaml`` (``model``, ``data``, ``trainer`` sections)."""
    if method not in list_methods():
        raise ConfigError(f"unknown method {method!r}; available: {', '.join(list_methods())}")
    path = CONFIG_ROOT / method / f"{scale}.yaml"
    if not path.is_file():
        raise ConfigError(f"{method} has no {scale!r} config; available: {', '.join(list_scales(method))}")
    config = yaml.safe_load(path.read_text())
    if "model" not in config or "class_path" not in config["model"]:
        raise ConfigError(f"{path}: needs model.class_path and model.init_args")
    config["path"] = str(path)
    return config


def resolve_class(class_path: str) -> type:
    """Imports ``package.module.Class``."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import {class_path!r}: {error}") from error


def build_method(
    config: dict[str, Any],
    n_voxels: int,
    target_shapes: dict[str, tuple[int, ...]],
    rois: dict[str, list[int]] | None = None,
) -> Any:  # noqa: ANN401
    """Instantiates the config's model with the data-dependent sizes filled in.

    ``rois`` (the manifest's ROI name -> voxel indices) is passed only to methods whose constructor takes a
    ``rois`` argument (ROI-split inputs, e.g. BrainMCLIP).
    """
    init_args = dict(config["model"].get("init_args") or {})
    for key, value in init_args.items():
        if isinstance(value, list):
            init_args[key] = tuple(value)
    cls = resolve_class(config["model"]["class_path"])
    if "rois" in inspect.signature(cls.__init__).parameters:
        if rois is None:
            raise ConfigError(f"{cls.__name__} splits its input by ROI but no ROIs were given")
        init_args["rois"] = {name: list(map(int, idx)) for name, idx in rois.items()}
    return cls(n_voxels=n_voxels, target_shapes=target_shapes, **init_args)
