"""Progress messages: every module logs to the ``brainbench`` logger; this shows them on the console."""

from __future__ import annotations

import logging
import sys


def show_progress(progress: bool = True) -> None:
    """Prints the ``brainbench`` logger's messages to stderr as ``[brainbench] ...`` (INFO, or WARNING).

    A caller that configured logging itself (a handler on ``brainbench`` or on the root logger) keeps its
    own handlers; only the level follows ``progress``.
    """
    log = logging.getLogger("brainbench")
    log.setLevel(logging.INFO if progress else logging.WARNING)
    if log.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[brainbench] %(message)s"))
    log.addHandler(handler)
    log.propagate = False  # a root handler added later (DDP ranks, libraries) must not print it twice
