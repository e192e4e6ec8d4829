"""Flower, imported lazily and offline: the one place brainbench touches ``flwr``'s import.

:func:`flower_environment` switches off Flower's telemetry, update check and runtime dependency installation
and Ray's usage stats (unless the caller set them), before anything of Flower or Ray is imported;
:func:`require_flower` imports ``flwr`` or raises one clear error naming the extra to install.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from types import ModuleType

from brainbench.errors import ConfigError

OFFLINE_ENVIRONMENT: dict[str, str] = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
}
INSTALL_HINT = "pip install 'brainbench[federated]'"


def flower_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """Set (where unset) the offline variables in ``os.environ`` and return them for subprocesses.

    ``flwr_home`` (a deployment's own Flower home) is added to the returned dict only, never to this
    process's environment.
    """
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    env = {k: os.environ[k] for k in OFFLINE_ENVIRONMENT}
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def require_flower() -> ModuleType:
    """``import flwr`` with the offline environment, or a :class:`ConfigError` saying how to install it."""
    flower_environment()
    try:
        import flwr
    except ImportError as error:
        raise ConfigError(
            f"federated runs need Flower, which is not installed ({error})\n  fix: {INSTALL_HINT}"
        ) from error
    return flwr


def engine_version() -> str:
    """``flwr=<version>`` (the leaderboard's engine column), ``flwr=not-installed`` without it."""
    try:
        return f"flwr={metadata.version('flwr')}"
    except metadata.PackageNotFoundError:
        return "flwr=not-installed"
