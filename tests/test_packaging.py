"""Packaging: every imported package is declared, optional ones are extras imported lazily, torch is a range.

The pip test runs pip's real resolver offline (no index, no config files) against the packages installed
here, with a fake torch 2.99.0+cu999 / torchvision 0.99.0 shadowing the real ones and pinned by a constraints
file: it proves that pyproject's requirements accept another installed torch and that `pip install .` would
install only brainbench, leaving that torch in place. It does not prove brainbench runs on that torch.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from brainbench.errors import MissingExtraError, require_extra

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = [Requirement(r) for r in PROJECT["dependencies"]]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}
#: import names whose distribution is named otherwise (importlib.metadata.packages_distributions() would find
#: them too, but takes minutes over this environment's RECORD files); any other import is its own distribution
KNOWN = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "open_clip": "open_clip_torch",
}


def _imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"brainbench", "__future__"}


def _distribution(module: str) -> str:
    return canonicalize_name(KNOWN.get(module, module))


def _sources():
    return {p: ast.parse(p.read_text()) for p in sorted((ROOT / "brainbench").rglob("*.py"))}


def test_every_imported_package_is_declared():
    declared = {canonicalize_name(r.name) for r in CORE} | {
        canonicalize_name(r.name) for reqs in EXTRAS.values() for r in reqs
    }
    used = {
        _distribution(m): p for p, tree in _sources().items() for m in _imports(tree, top_level_only=False)
    }
    missing = {name: str(path.relative_to(ROOT)) for name, path in used.items() if name not in declared}
    assert missing == {}
    assert "huggingface-hub" in {canonicalize_name(r.name) for r in CORE}


#: modules that are an extra's own code (Flower's ClientApp/ServerApp): they call ``require_flower()`` before
#: importing flwr, and are imported only inside ``brainbench federate`` after that check
EXTRA_MODULES = {"brainbench/federated/client_app.py", "brainbench/federated/server_app.py"}


def test_extras_are_imported_lazily():
    core = {canonicalize_name(r.name) for r in CORE}
    optional = {canonicalize_name(r.name) for reqs in EXTRAS.values() for r in reqs} - core
    assert {"diffusers", "transformers", "av", "matplotlib", "pyarrow", "flwr"} <= optional
    eager = {
        str(path.relative_to(ROOT)): sorted(
            m for m in _imports(tree, top_level_only=True) if _distribution(m) in optional
        )
        for path, tree in _sources().items()
    }
    assert {path: names for path, names in eager.items() if names and path not in EXTRA_MODULES} == {}
    assert set(EXTRAS) >= {"diffusion", "video", "report", "tracking", "federated", "dev"}


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    import numpy as np

    from brainbench.world.cc2017_writer import write_mp4

    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(MissingExtraError) as caught:
        write_mp4(tmp_path / "m.mp4", np.zeros((2, 4, 4, 3), np.uint8), fps=2)
    assert "pip install 'brainbench[video]'" in str(caught.value) and len(str(caught.value).splitlines()) == 2
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtraError, match=r"brainbench\[publish\]"):
        require_extra("pyarrow", "publish", "Parquet")


def test_torch_is_a_range_and_constraints_hold_the_only_exact_pins():
    every = CORE + [r for reqs in EXTRAS.values() for r in reqs]
    assert [str(r) for r in every if any(s.operator in ("==", "===") for s in r.specifier)] == []
    by_name = {canonicalize_name(r.name): r for r in CORE}
    assert by_name["torch"].specifier.contains(Version("2.99.0+cu999"), prereleases=False)
    assert by_name["torchvision"].specifier.contains(Version("0.99.0"))
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert [s.operator for s in req.specifier] == ["=="], line
            pins[canonicalize_name(req.name)] = Version(next(iter(req.specifier)).version)
    assert {"torch", "torchvision"} <= set(pins)
    for name, version in pins.items():  # the tested pins are inside pyproject's ranges
        if name in by_name:
            assert by_name[name].specifier.contains(version, prereleases=True), name


def _fake_dist(site: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "INSTALLER").write_text("test\n")
    (info / "RECORD").write_text("")


def _resolve(tmp_path: Path, targets: list[str]) -> subprocess.CompletedProcess:
    """``pip install --dry-run`` of ``targets`` offline, a fake torch 2.99.0+cu999 installed and pinned."""
    site = tmp_path / "site"
    if not site.exists():
        _fake_dist(site, "torch", "2.99.0+cu999")
        _fake_dist(site, "torchvision", "0.99.0", ("torch==2.99.0+cu999",))
        (tmp_path / "constraints.txt").write_text("torch==2.99.0+cu999\ntorchvision==0.99.0\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(site),  # ahead of site-packages: pip sees the fake torch as the installed one
        "PIP_CONFIG_FILE": os.devnull,  # no index, find-links or constraints from pip's config
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("PIP_CONSTRAINT", None)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation", "--quiet"]
    command += ["--report", str(tmp_path / "report.json"), "-c", str(tmp_path / "constraints.txt"), *targets]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _installs(tmp_path: Path) -> dict[str, str]:
    report = json.loads((tmp_path / "report.json").read_text())
    return {item["metadata"]["name"]: item["metadata"]["version"] for item in report["install"]}


def test_pyproject_requirements_keep_an_installed_newer_torch(tmp_path):
    """pip's resolver on pyproject's dependencies: with torch 2.99.0+cu999 installed, nothing is replaced."""
    done = _resolve(tmp_path, PROJECT["dependencies"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert _installs(tmp_path) == {}  # torch, torchvision and every other dependency are kept
    # the same resolver refuses a torch pinned exactly (so this test can fail)
    pinned = [r if not r.startswith("torch>") else "torch==2.14.1" for r in PROJECT["dependencies"]]
    done = _resolve(tmp_path, pinned)
    assert done.returncode != 0 and "conflict" in done.stderr


def _setuptools_builds_this_project() -> bool:
    try:
        return Version(importlib.metadata.version("setuptools")) >= Version("77")
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _setuptools_builds_this_project(), reason="needs setuptools>=77 to build offline")
def test_pip_install_editable_keeps_an_installed_newer_torch(tmp_path):
    """The same through ``pip install -e .`` of a copy of the project (its metadata built offline)."""
    project = tmp_path / "project"
    (project / "brainbench").mkdir(parents=True)
    (project / "brainbench" / "__init__.py").write_text('__version__ = "0.0.0"\n')
    for name in ("pyproject.toml", "README.md"):
        (project / name).write_text((ROOT / name).read_text())
    done = _resolve(tmp_path, ["-e", str(project)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert _installs(tmp_path) == {"brainbench": PROJECT["version"]}


def test_make_setup_installs_the_extras_the_tests_need():
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("SETUP_EXTRAS ?="))
    extras = line.split("=", 1)[1].strip().split(",")
    assert set(extras) <= set(EXTRAS) and {"dev", "video", "report", "publish"} <= set(extras)
    assert 'install -q -c constraints.txt -e ".[$(SETUP_EXTRAS)]"' in (ROOT / "Makefile").read_text()
