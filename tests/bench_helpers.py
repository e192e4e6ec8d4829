"""Shared pieces of the end-to-end tests: a tiny-world bench request and a scaled-down method config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from brainbench.bench import BenchRequest
from brainbench.methods import load_method_config


def tiny_request(tmp: Path, method: str, **overrides: object) -> BenchRequest:
    """A CPU bench request on the tiny world, with its home, runs and leaderboards under ``tmp``."""
    defaults: dict[str, Any] = dict(
        method=method,
        subject=1,
        world_preset="tiny",
        home=tmp / "home",
        leaderboards=tmp / "leaderboards",
        runs=tmp / "runs",
        progress=False,
        accelerator="cpu",
        val_fraction=0.2,  # 28 validation images instead of 7: checkpoint selection needs some resolution
    )
    return BenchRequest(**(defaults | overrides))


def tiny_config(
    tmp: Path,
    method: str,
    *,
    epochs: int,
    init_args: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    keep_generator: bool = False,
    **sections: Any,  # noqa: ANN401 (whole config sections to replace or add, e.g. pretrain)
) -> str:
    """The method's world config shrunk for the tiny world, written to ``tmp``; returns its path.

    ``epochs`` sets ``trainer.max_epochs`` (the schedules follow it); the generator
    section is dropped unless ``keep_generator`` (generators have their own tests).
    """
    config = load_method_config(method, "world")
    config.pop("path")
    if not keep_generator:
        config.pop("generator", None)
    config["model"]["init_args"] |= init_args or {}
    config["data"] |= data or {}
    config["trainer"] = {"max_epochs": epochs}
    config |= sections
    path = tmp / f"{method}_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)
