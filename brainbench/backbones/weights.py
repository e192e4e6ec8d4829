"""Where a network's pretrained weights must already be: looked up in local caches, never downloaded.

A :class:`WeightsSource` names a file in the torch hub cache (torchvision checkpoints, whose names carry a
sha256 prefix checked by :func:`verify_hash_in_name`), a file shipped inside an installed package, or a
Hugging Face cache entry. An absent file is reported with the path expected and how to provide it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from brainbench.errors import DataFormatError

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's pretrained weights must already be; looked up, never downloaded.

    Attributes:
        description: what the weights are (enum, checkpoint name).
        find: returns the weights file, or ``None`` when it is not on this machine.
        expected: returns the file (or cache entry) expected, for messages.
        fix: how to provide it.
    """

    description: str
    find: Callable[[], Path | None]
    expected: Callable[[], str]
    fix: str


# The `fetch_elsewhere` strings below are download commands printed in an absent network's reason, for the
# user to run on a machine with internet access. brainbench never runs them: weights are only looked up in the
# local torch hub / HF caches (see ``availability``), and an absent network is reported, never fetched.


def hub_checkpoint(filename: str, description: str, fetch_elsewhere: str) -> WeightsSource:
    """``<torch hub dir>/checkpoints/<filename>``; ``fetch_elsewhere`` is printed for a machine online."""

    def path() -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / filename

    fix = (
        f"on a machine with internet run `{fetch_elsewhere}`, then copy "
        f"<TORCH_HOME>/hub/checkpoints/{filename} to that path here "
        f"(or set TORCH_HOME so that $TORCH_HOME/hub/checkpoints/{filename} exists)"
    )
    return WeightsSource(description, lambda: path() if path().is_file() else None, lambda: str(path()), fix)


def torchvision_weights(builder: str, enum: str, filename: str) -> WeightsSource:
    """Torchvision weights ``enum`` of ``builder``, expected as ``<torch hub dir>/checkpoints/<filename>``."""
    fetch_elsewhere = f"python -c \"import torchvision; torchvision.models.{builder}(weights='{enum}')\""
    return hub_checkpoint(filename, f"torchvision {builder} weights {enum}", fetch_elsewhere)


def package_file(package: str, relative: str, description: str, fix: str) -> WeightsSource:
    """A file shipped inside an installed package (``importlib.resources``)."""

    def path() -> Path | None:
        try:
            return Path(str(resources.files(package) / relative))
        except ModuleNotFoundError:
            return None

    def find() -> Path | None:
        found = path()
        return found if found is not None and found.is_file() else None

    return WeightsSource(description, find, lambda: str(path() or f"<{package}>/{relative}"), fix)


def hf_cache(
    repo_id: str, filenames: tuple[str, ...], description: str, fetch_elsewhere: str
) -> WeightsSource:
    """The first of ``filenames`` of ``repo_id`` found in the local Hugging Face cache."""

    def find() -> Path | None:
        from huggingface_hub import constants, try_to_load_from_cache

        for name in filenames:
            hit = try_to_load_from_cache(repo_id, name, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(hit, str):
                return Path(hit)
        return None

    def expected() -> str:
        from huggingface_hub import constants

        folder = "models--" + repo_id.replace("/", "--")
        return f"{constants.HF_HUB_CACHE}/{folder}/snapshots/<rev>/{' or '.join(filenames)}"

    fix = (
        f"on a machine with internet run `{fetch_elsewhere}`, then copy its HF cache folder into "
        "HF_HUB_CACHE here"
    )
    return WeightsSource(description, find, expected, fix)


RANDOM_ONLY = WeightsSource(
    "none (random weights only)", lambda: None, lambda: "<none>", "build(random_weights=True)"
)


def verify_hash_in_name(path: Path) -> None:
    """Check a ``name-<sha256 prefix>.pth`` checkpoint (torchvision's convention) against its contents.

    Raises:
        DataFormatError: when the file's sha256 does not start with the prefix in its name.
    """
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise DataFormatError(path, "sha256 does not match the hash in its name", "fetch the file again")
