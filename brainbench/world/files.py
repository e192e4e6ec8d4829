"""All-or-nothing file writes and completion markers, shared by the world's raw-layout writers.

A world is written file by file and can be interrupted at any point; every file is written to a hidden sibling
and renamed into place only when complete, and a marker records that a whole part (design, stimuli, subject)
is finished, so a resumed generation keeps finished parts and redoes the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a hidden sibling path keeping ``path``'s suffixes; rename it onto ``path`` if the block succeeds.

    The suffixes are kept because some writers choose the format from them (nibabel, PyAV).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_marker(path: Path, content: dict[str, object]) -> None:
    """A completion marker: ``content`` plus the time it was written (the one file that varies by run)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**content, "written": datetime.now(UTC).isoformat()}) + "\n")
