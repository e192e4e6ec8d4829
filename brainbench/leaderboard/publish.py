"""Uploads to the Hugging Face Hub: leaderboard CSVs (+ Parquet) to a dataset repo, a model to a model repo.

Both are opt-in: they refuse to run while ``BRAINBENCH_OFFLINE`` is on (the default,
:mod:`brainbench.offline`).
The files are checked and staged in a temporary folder first, so a broken CSV stops the push before anything
is sent, then ``HfApi.create_repo(exist_ok=True)`` and one ``HfApi.upload_folder`` commit send them.

Leaderboard layout in the dataset repo: every ``leaderboards/**/*.csv`` at the same relative path, and beside
each a ``.parquet`` copy with typed columns (metrics as float64, seeds and counts as Int64), the same table
:func:`brainbench.leaderboard.store.read_leaderboard` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from brainbench.errors import BrainbenchError, DataFormatError, MissingFileError, PublishError, require_extra
from brainbench.leaderboard.store import git_sha, read_leaderboard, read_reported
from brainbench.offline import require_online

#: the folder of as-reported CSVs (numbers copied from papers), read with :func:`read_reported`
REPORTED_DIR = "reported"
MODEL_FILES = ("decoder.json", "decoder.safetensors")


def leaderboard_csvs(leaderboards: str | Path) -> list[Path]:
    """Every leaderboard CSV under ``leaderboards`` (hidden temporary files of a write left out)."""
    root = Path(leaderboards)
    return sorted(
        p for p in root.rglob("*.csv") if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def stage_leaderboards(leaderboards: str | Path, staging: str | Path) -> list[str]:
    """Copies the CSVs to ``staging`` and writes a Parquet copy beside each; returns the staged paths.

    Raises:
        MissingFileError: no CSV under ``leaderboards``.
        DataFormatError: a CSV that is not a valid leaderboard (the file and line are named).
        MissingExtraError: pyarrow is not installed.
    """
    root, staging = Path(leaderboards), Path(staging)
    csvs = leaderboard_csvs(root)
    if not csvs:
        raise MissingFileError(
            root / "<dataset>/<task>.csv", "run `make bench` first, or pass --leaderboards DIR"
        )
    require_extra("pyarrow", "publish", "writing the Parquet copies")
    staged = []
    for csv in csvs:
        rel = csv.relative_to(root)
        table = read_reported(csv) if rel.parts[0] == REPORTED_DIR else read_leaderboard(csv)
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(csv, staging / rel)
        table.to_parquet(staging / rel.with_suffix(".parquet"), index=False)
        staged += [rel.as_posix(), rel.with_suffix(".parquet").as_posix()]
    return staged


def hub_api(token: str | None = None, endpoint: str | None = None) -> Any:  # noqa: ANN401 (huggingface_hub.HfApi)
    """An ``HfApi`` for ``endpoint`` (default ``$HF_ENDPOINT``, else huggingface.co) and ``token``."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)


def _upload(api: Any, repo_id: str, repo_type: str, folder: Path, message: str, private: bool) -> str:  # noqa: ANN401
    """create_repo + upload_folder; any hub or network failure becomes one :class:`PublishError` line."""
    try:
        api.create_repo(repo_id, repo_type=repo_type, exist_ok=True, private=private)
        info = api.upload_folder(
            repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), commit_message=message
        )
    except BrainbenchError:
        raise
    except Exception as error:  # HfHubHTTPError, httpx network errors, OfflineModeIsEnabled, ...
        detail = " ".join(str(error).split())[:300]
        raise PublishError(
            f"upload to the {repo_type} repo {repo_id!r} failed ({type(error).__name__}: {detail})\n  "
            "fix: check the repo id, your token (--token, HF_TOKEN or `hf auth login`, with write access) "
            "and the network; HF_HUB_OFFLINE=1 in your environment also blocks uploads"
        ) from error
    return str(getattr(info, "commit_url", info))


def push_leaderboards(
    leaderboards: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    api: Any = None,  # noqa: ANN401 (an HfApi or a stand-in with its methods)
) -> tuple[str, list[str]]:
    """Uploads every leaderboard CSV and its Parquet copy to the dataset repo ``repo_id`` in one commit.

    Returns:
        The commit URL and the uploaded paths.

    Raises:
        ConfigError: ``BRAINBENCH_OFFLINE`` is on.
        PublishError: the hub refused or could not be reached.
    """
    require_online("leaderboard push")
    with tempfile.TemporaryDirectory(prefix="brainbench-push-") as staging:
        staged = stage_leaderboards(leaderboards, staging)
        api = api if api is not None else hub_api(token, endpoint)
        message = f"brainbench leaderboards: {len(staged) // 2} CSVs at git {git_sha()[:12]}"
        return _upload(api, repo_id, "dataset", Path(staging), message, private), staged


def model_card(model_dir: Path) -> str:
    """A README.md for a model repo from the run's ``result.json`` (beside ``model_dir``) when it exists."""
    result_path = model_dir.parent / "result.json"
    row: dict[str, Any] = {}
    if result_path.is_file():
        try:
            row = dict(json.loads(result_path.read_text(encoding="utf-8")).get("row", {}))
        except (ValueError, AttributeError) as error:
            raise DataFormatError(result_path, f"not a run result ({error})", "rerun the run") from error
    method = row.get("method", "unknown")
    lines = [
        "---",
        "library_name: brainbench",
        "tags:",
        "- fmri",
        "- brain-decoding",
        "- brainbench",
        "---",
        "",
        f"# brainbench {method} decoder",
        "",
        f"Saved by `brainbench bench` (run `{row.get('run_id', model_dir.parent.name)}`); load it with "
        "`DecoderModule.load_pretrained(folder)`.",
        "",
    ]
    if row:
        lines += ["| column | value |", "|---|---|"]
        lines += [f"| `{key}` | {value} |" for key, value in row.items() if value not in ("", None)]
    return "\n".join(lines) + "\n"


def push_model(
    model_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    api: Any = None,  # noqa: ANN401 (an HfApi or a stand-in with its methods)
) -> tuple[str, list[str]]:
    """Uploads a run's ``model`` folder (``decoder.safetensors``, ``decoder.json``, a card) to ``repo_id``.

    Every file of the folder is uploaded (``bench`` also writes ``inference.json`` and the card);
    a folder without a card gets one from :func:`model_card` (the run's ``result.json``).

    Returns:
        The commit URL and the uploaded paths.

    Raises:
        ConfigError: ``BRAINBENCH_OFFLINE`` is on.
        MissingFileError: the folder lacks a file ``save_pretrained`` writes.
        PublishError: the hub refused or could not be reached.
    """
    require_online("push-model")
    model_dir = Path(model_dir)
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise MissingFileError(
                model_dir / name, "pass the model folder of a finished run: runs/<id>/model"
            )
    with tempfile.TemporaryDirectory(prefix="brainbench-push-") as staging:
        for path in sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
            shutil.copyfile(path, Path(staging) / path.name)
        if not (Path(staging) / "README.md").exists():
            (Path(staging) / "README.md").write_text(model_card(model_dir), encoding="utf-8")
        staged = sorted(p.name for p in Path(staging).iterdir())
        api = api if api is not None else hub_api(token, endpoint)
        message = f"brainbench model of run {model_dir.resolve().parent.name}"
        return _upload(api, repo_id, "model", Path(staging), message, private), staged
