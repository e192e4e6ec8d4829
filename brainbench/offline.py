"""One switch for network access: ``BRAINBENCH_OFFLINE`` (default ``1``, on).

On (``1``/``true``/``yes``/``on``, or unset): brainbench never downloads. :func:`apply_offline` sets the
Hugging Face libraries' own switches (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ``HF_DATASETS_OFFLINE``)
unless the user set them, so weights come only from local files and caches, and the ``push`` commands refuse
to run. Off (``0``/``false``/``no``/``off``): nothing is set behind the user's back (their own ``HF_*``
variables still apply), pretrained open_clip tags may be fetched, and ``brainbench leaderboard push`` /
``brainbench push-model`` may upload.
"""

from __future__ import annotations

import os

from brainbench.errors import ConfigError

ENV = "BRAINBENCH_OFFLINE"
#: the variables :func:`apply_offline` sets to ``1`` when the switch is on (an existing value is kept)
HF_OFFLINE_VARS: tuple[str, ...] = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_ON = ("", "1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def offline() -> bool:
    """Whether ``BRAINBENCH_OFFLINE`` is on (the default).

    Raises:
        ConfigError: a value that is neither on nor off.
    """
    value = os.environ.get(ENV, "1").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(
        f"{ENV}={os.environ[ENV]!r} is not a switch\n  fix: set {ENV}=1 (offline, default) or 0"
    )


def apply_offline() -> bool:
    """When the switch is on, sets :data:`HF_OFFLINE_VARS` (keeping values the user set); returns the switch.

    Called by every loader that may reach a hub (open_clip pretrained tags, diffusers folders) just before it
    loads, so the Hugging Face libraries imported afterwards read the switch too.
    """
    on = offline()
    if on:
        for name in HF_OFFLINE_VARS:
            os.environ.setdefault(name, "1")
    return on


def require_online(command: str) -> None:
    """Raises :class:`ConfigError` unless ``BRAINBENCH_OFFLINE`` is off: ``command`` needs the network."""
    if offline():
        raise ConfigError(
            f"`brainbench {command}` uploads to the Hugging Face Hub and {ENV} is on (the default)\n  "
            f"fix: opt in for this command: `{ENV}=0 brainbench {command} ...` (with a token: --token, "
            "HF_TOKEN or `hf auth login`)"
        )
