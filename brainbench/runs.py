"""Run folders: ``runs/<run id>/`` holds one run's request, checkpoints, logs, model and result.

A run writes ``run.json`` (what was asked: the identity of the request and the resolved config) before it
trains, and ``result.json`` once it has scored and saved everything. A folder with ``run.json`` and no
``result.json`` is an interrupted run: ``brainbench bench ... --resume latest`` (or ``--resume <run id>``)
continues it from its ``checkpoints/last.ckpt`` under the same run id, so it still appends exactly one row.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainbench.errors import ConfigError, DataFormatError
from brainbench.leaderboard.store import new_run_id

log = logging.getLogger("brainbench")

RUN_FILE = "run.json"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and whether it continues an interrupted run."""

    run_id: str
    path: Path
    resumed: bool

    @property
    def finished(self) -> bool:
        """Whether the run scored, saved its model and wrote ``result.json``."""
        return (self.path / RESULT_FILE).is_file()


def _read_run_file(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataFormatError(
            path / RUN_FILE, f"unreadable run record ({error})", "delete the run folder"
        ) from error


def interrupted_runs(runs: Path, identity: dict[str, Any]) -> list[Path]:
    """Folders under ``runs`` of unfinished runs of the same request, newest first (run ids sort by time)."""
    if not runs.is_dir():
        return []
    found = []
    for folder in sorted(runs.iterdir(), reverse=True):
        if (folder / RUN_FILE).is_file() and not (folder / RESULT_FILE).is_file():
            if _read_run_file(folder).get("identity") == identity:
                found.append(folder)
    return found


def open_run(runs: Path, identity: dict[str, Any], config: dict[str, Any], resume: str | None) -> RunFolder:
    """A new run folder, or the interrupted one that ``resume`` names (``latest`` or a run id).

    ``resume="latest"`` with no interrupted run of this request starts a new run (so a preemptible job can
    always pass it). A run id must name an unfinished run of the same request and config.

    Raises:
        ConfigError: the named run does not exist, finished already, or was asked with other options.
    """
    if resume is not None:
        if resume == "latest":
            candidates = interrupted_runs(runs, identity)
            if not candidates:
                log.info(
                    "--resume latest: no interrupted run of this request under %s; starting a new run", runs
                )
            folder = candidates[0] if candidates else None
        else:
            folder = runs / resume
            if not (folder / RUN_FILE).is_file():
                raise ConfigError(
                    f"--resume {resume}: {folder} is not a run folder; see the folders in {runs}"
                )
        if folder is not None:
            record = _read_run_file(folder)
            run = RunFolder(folder.name, folder, resumed=True)
            if run.finished:
                raise ConfigError(
                    f"--resume {resume}: run {folder.name} finished already ({folder / RESULT_FILE}); "
                    "its row is on the leaderboard"
                )
            if record.get("identity") != identity or record.get("config") != _jsonable(config):
                raise ConfigError(
                    f"--resume {resume}: run {folder.name} was started with other options "
                    f"({folder / RUN_FILE}); resume it with the same command, or drop --resume"
                )
            return run
    else:
        for folder in interrupted_runs(runs, identity)[:1]:
            log.warning(
                "run %s of this request was interrupted (%s); starting a new run. To continue it instead, "
                "rerun with --resume latest",
                folder.name,
                folder,
            )
    run_id = new_run_id()
    path = runs / run_id
    path.mkdir(parents=True, exist_ok=False)
    (path / RUN_FILE).write_text(
        json.dumps({"run_id": run_id, "identity": identity, "config": _jsonable(config)}, indent=2)
    )
    return RunFolder(run_id, path, resumed=False)


def launch_id() -> str | None:
    """An id that every rank of one ``torchrun``/``srun`` launch shares (``None`` outside such a launch)."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return f"torchelastic-{os.environ['TORCHELASTIC_RUN_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        step, restart = os.environ.get("SLURM_STEP_ID", "0"), os.environ.get("SLURM_RESTART_COUNT", "0")
        return f"slurm-{os.environ['SLURM_JOB_ID']}.{step}.{restart}"
    return None


def open_shared_run(
    runs: Path,
    identity: dict[str, Any],
    config: dict[str, Any],
    resume: str | None,
    *,
    rank: int,
    launch: str,
    rendezvous: Path,
    timeout_s: float = 600.0,
) -> RunFolder:
    """:func:`open_run` for the ranks of one external launch: rank 0 opens the folder, the others follow.

    Every rank runs ``bench`` and needs the same run folder (same checkpoint to resume). Rank 0 opens it and
    writes its id to ``<rendezvous>/<launch>.json`` (the home is shared by the job's nodes); the other ranks
    wait for that file and open the same folder without writing.
    """
    note = rendezvous / f"{launch}.json"
    if rank == 0:
        run = open_run(runs, identity, config, resume)
        rendezvous.mkdir(parents=True, exist_ok=True)
        staging = note.with_suffix(".tmp")
        staging.write_text(json.dumps({"run_id": run.run_id, "resumed": run.resumed}))
        staging.replace(note)
        return run
    deadline = time.monotonic() + timeout_s
    while not note.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(
                f"rank {rank}: rank 0 did not open a run folder within {timeout_s:.0f} s ({note})"
            )
        time.sleep(0.2)
    shared = json.loads(note.read_text())
    return RunFolder(shared["run_id"], runs / shared["run_id"], resumed=bool(shared["resumed"]))


def _jsonable(value: Any) -> Any:  # noqa: ANN401
    """``value`` as it reads back from JSON (tuples become lists), so records compare equal."""
    return json.loads(json.dumps(value, default=str))
