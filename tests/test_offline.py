"""``BRAINBENCH_OFFLINE``: the one switch for network access (default on)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brainbench.errors import ConfigError
from brainbench.offline import HF_OFFLINE_VARS, apply_offline, offline, require_online


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in ("BRAINBENCH_OFFLINE", *HF_OFFLINE_VARS):
        monkeypatch.delenv(name, raising=False)


def test_default_is_on_and_sets_the_hf_switches(monkeypatch):
    import os

    assert offline() is True and apply_offline() is True
    assert all(os.environ[name] == "1" for name in HF_OFFLINE_VARS)
    with pytest.raises(ConfigError, match="BRAINBENCH_OFFLINE=0"):
        require_online("leaderboard push")


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_off_sets_nothing_behind_the_users_back(monkeypatch, value):
    import os

    monkeypatch.setenv("BRAINBENCH_OFFLINE", value)
    assert apply_offline() is False
    assert not any(name in os.environ for name in HF_OFFLINE_VARS)
    require_online("push-model")  # no error


def test_a_value_the_user_set_is_kept_and_a_bad_switch_is_refused(monkeypatch):
    import os

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    apply_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.setenv("BRAINBENCH_OFFLINE", "maybe")
    with pytest.raises(ConfigError, match="not a switch"):
        offline()


def test_no_other_module_sets_the_hf_offline_variables():
    root = Path(__file__).resolve().parents[1] / "brainbench"
    setter = re.compile(
        r"environ(\.setdefault\(|\[)\s*[\"'](HF_HUB_OFFLINE|TRANSFORMERS_OFFLINE|HF_DATASETS_OFFLINE)"
    )
    offenders = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if setter.search(p.read_text())]
    assert offenders == []  # offline.py sets them through HF_OFFLINE_VARS, nothing else does
    calls = {p.name for p in root.rglob("*.py") if "apply_offline()" in p.read_text()}
    assert {"openclip.py", "sd_vae.py"} <= calls
