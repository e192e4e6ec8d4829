"""Errors that tell the user which file is wrong and how to fix it."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType


class BrainbenchError(Exception):
    """Base class: every message names the offending input and the fix."""


class MissingFileError(BrainbenchError, FileNotFoundError):
    """A required raw or prepared file does not exist."""

    def __init__(self, path: str | Path, fix: str) -> None:
        super().__init__(f"missing file: {path}\n  fix: {fix}")
        self.path = Path(path)


class DataFormatError(BrainbenchError, ValueError):
    """A file exists but its content is not what the format promises (NaN betas, corrupt shard, ...)."""

    def __init__(self, path: str | Path, problem: str, fix: str) -> None:
        super().__init__(f"{path}: {problem}\n  fix: {fix}")
        self.path = Path(path)


class ConfigError(BrainbenchError, ValueError):
    """A user-supplied option is invalid (unknown subject, unknown method, mismatched checkpoint, ...)."""


class RunInterrupted(BrainbenchError):
    """A run stopped by SIGTERM (preemption, ``timeout``, ``kill``) or SIGINT after saving ``last.ckpt``.

    Attributes:
        exit_code: the shell's code for the signal: 143 for SIGTERM, 130 for SIGINT.
    """

    def __init__(self, signal_name: str, run_id: str, checkpoint: str) -> None:
        self.exit_code = 143 if signal_name == "SIGTERM" else 130
        super().__init__(
            f"{signal_name}: run {run_id} stopped and saved {checkpoint}; continue it with the same command "
            f"plus --resume {run_id} (or --resume latest)"
        )


@contextlib.contextmanager
def reading(path: str | Path, fix: str) -> Iterator[None]:
    """Turn what a file's library raises on a damaged file into a :class:`DataFormatError` naming the file.

    Readers keep their own checks (a :class:`BrainbenchError` passes through unchanged); this catches the
    rest: h5py's ``OSError`` on a truncated file, nibabel's ``ImageFileError`` or short-read ``ValueError``,
    pandas' parser errors, ``UnicodeDecodeError``, zip/gzip/zlib errors, and the like.
    """
    try:
        yield
    except BrainbenchError:
        raise
    except Exception as exc:  # every library has its own error types for a damaged file
        problem = f"damaged or truncated file ({type(exc).__name__}: {exc})"
        raise DataFormatError(path, problem, fix) from exc


class MissingExtraError(BrainbenchError, ImportError):
    """An optional part of brainbench is used but its extra is not installed."""

    def __init__(self, module: str, extra: str, needed_for: str) -> None:
        super().__init__(
            f"{needed_for} needs the {module} package, which is not installed\n  fix: pip install "
            f"'brainbench[{extra}]'"
        )


class PublishError(BrainbenchError):
    """An upload to the Hugging Face Hub failed (network, token, permissions)."""


def require_extra(module: str, extra: str, needed_for: str) -> ModuleType:
    """``import module``, or a one-line :class:`MissingExtraError` naming ``pip install 'brainbench[extra]'``.

    Example:
        >>> av = require_extra("av", "video", "reading CC2017 movies")  # doctest: +SKIP
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own imports failed: show that
        raise MissingExtraError(module, extra, needed_for) from error
