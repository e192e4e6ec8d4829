"""The manifest of a prepared shard set: what the shards hold, how they were made, and their checksums.

Every prepared directory has one ``manifest.json`` next to its shards and stimulus store. It is the only
thing downstream code reads to learn the voxel count, voxel order, ROI index lists, normalisation and
split sizes. All paths inside it are relative to the manifest's directory.

Example:
    >>> m = Manifest.load("prepared/nsd.subj01/manifest.json")  # doctest: +SKIP
    >>> m.split_name, m.n_voxels, m.splits["test"]["n_samples"]  # doctest: +SKIP
    ('shared1000@40sess', 15724, 1000)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from brainbench.errors import DataFormatError, MissingFileError

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1


def rebuild_fix(path: str | Path) -> str:
    """How to rebuild the prepared folder holding ``path``, keeping its dataset's identity.

    A world's folder is rebuilt by ``bench`` itself (a real-data ``prepare`` on a world's raw files would
    file its rows under the real dataset); a real dataset's by ``brainbench prepare <adapter> ...
    --overwrite`` with the root and subject its manifest records.
    """
    path = Path(path)
    folder = next((p for p in (path, *path.parents) if (p / MANIFEST_NAME).is_file()), None)
    try:
        raw = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")) if folder else None
        dataset, subject, source = str(raw["dataset"]), int(raw["subject"]), dict(raw["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return (
            "delete the prepared folder and run the command that made it again (`brainbench bench` "
            "prepares the embedded worlds itself; `brainbench prepare <dataset> ... --overwrite` a real copy)"
        )
    if dataset.startswith("world"):
        return (
            f"delete {folder}; `brainbench bench --dataset {dataset} --subject {subject} ...` "
            "prepares it again"
        )
    return (
        f"brainbench prepare {source.get('adapter', dataset)} --root {source.get('root', 'ROOT')} "
        f"--subject {subject} --out {folder} --overwrite"
    )


@dataclass(frozen=True)
class Manifest:
    """Description of one prepared subject (one shard set).

    Attributes:
        dataset: dataset id, e.g. ``"nsd"`` or ``"world-nsd"``.
        dataset_version: version of the raw data, e.g. ``"nsd-2021"``.
        subject: 1-based subject number.
        n_voxels: length ``V`` of every voxel vector in the shards.
        voxel_order: how the voxel vector was enumerated, in words.
        voxel_ijk: ``V`` coordinates ``[i, j, k]`` of the voxels in vector order (grid indices for NSD,
            scanner mm for GOD), or ``[]`` when the voxels are surface vertices (CC2017 grayordinates).
        rois: ``"<atlas>/<label>"`` -> indices into the voxel vector.
        normalisation: what was done to the raw values (scale, z-scoring, where its statistics live).
        split_name: the split's name, ``shared{n_test_images}@{n_sessions}sess`` for NSD.
        splits: split -> ``{"n_samples": int, "shards": [{"path", "n_samples", "sha256"}, ...]}``.
        stimulus_store: ``{"path", "sha256", "n_stimuli"}``.
        source: ``{"root", "adapter", "adapter_version", ...}``; adapters may add their options.
        created: ISO 8601 creation time (UTC).
        schema: manifest format version.
        zero_shot: the candidate classes of N-way zero-shot classification, shared by every method:
            ``{"split": "test", "names": [...], "ids": [...], "prompt": "a photo of a {}."}``, where
            ``ids`` are the category ids of the stimulus store's ``categories``; ``None`` if not defined.
        timing: for time series (CC2017): ``{"tr_s", "lag_trs", "fps", "frames_per_sample", ...}``.
    """

    dataset: str
    dataset_version: str
    subject: int
    n_voxels: int
    voxel_order: str
    voxel_ijk: list[list[int]]
    rois: dict[str, list[int]]
    normalisation: dict[str, Any]
    split_name: str
    splits: dict[str, dict[str, Any]]
    stimulus_store: dict[str, Any]
    source: dict[str, Any]
    created: str
    schema: int = MANIFEST_SCHEMA
    zero_shot: dict[str, Any] | None = None
    timing: dict[str, Any] | None = None

    def save(self, path: str | Path) -> None:
        """Write the manifest as JSON (atomically: temporary file, then rename).

        Args:
            path: the ``manifest.json`` path.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
        tmp.write_text(_dumps(asdict(self)) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest.

        Args:
            path: the ``manifest.json`` path (or the directory holding it).

        Returns:
            The manifest.

        Raises:
            MissingFileError: if the file does not exist.
            DataFormatError: naming the file, on invalid JSON or any missing or malformed field.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise MissingFileError(path, "run `brainbench prepare ...` to create the prepared directory")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(path, f"not valid JSON ({exc})", _damaged_manifest_fix(path)) from exc
        if not isinstance(raw, dict):
            raise DataFormatError(path, "manifest is not a JSON object", _damaged_manifest_fix(path))
        _validate(path, raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def shard_paths(self, split: str, manifest_dir: str | Path) -> list[Path]:
        """Absolute shard paths of one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            manifest_dir: the directory holding the manifest.

        Returns:
            Shard paths in manifest order.
        """
        return [Path(manifest_dir) / shard["path"] for shard in self.splits[split]["shards"]]


def _damaged_manifest_fix(path: Path) -> str:
    """A manifest that cannot be read tells nothing of its dataset: the fix names both ways to rebuild."""
    return (
        f"delete {path.parent} and rebuild it: `brainbench bench` prepares an embedded world again; "
        "`brainbench prepare <dataset> --root ROOT --subject N --out FOLDER --overwrite` a real copy"
    )


_TYPES: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "dataset_version": str,
    "subject": int,
    "n_voxels": int,
    "voxel_order": str,
    "voxel_ijk": list,
    "rois": dict,
    "normalisation": dict,
    "split_name": str,
    "splits": dict,
    "stimulus_store": dict,
    "source": dict,
    "created": str,
}


def _validate(path: Path, raw: dict[str, Any]) -> None:
    """Raise DataFormatError naming ``path`` on the first missing or malformed field."""

    def fail(problem: str) -> None:
        raise DataFormatError(path, problem, _damaged_manifest_fix(path))

    for name, kind in _TYPES.items():
        if name not in raw:
            fail(f"manifest field '{name}' is missing")
        if not isinstance(raw[name], kind) or isinstance(raw[name], bool):
            fail(f"manifest field '{name}' should be {kind}, got {type(raw[name]).__name__}")
    n_voxels = raw["n_voxels"]
    ijk = raw["voxel_ijk"]
    if (ijk and len(ijk) != n_voxels) or any(not isinstance(c, list) or len(c) != 3 for c in ijk):
        fail(f"voxel_ijk must hold {n_voxels} [i, j, k] triples (or be empty for surface vertices)")
    for name in ("zero_shot", "timing"):
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            fail(f"manifest field '{name}' should be an object or null")
    zero_shot = raw.get("zero_shot") or {}
    if zero_shot and not (
        isinstance(zero_shot.get("names"), list)
        and isinstance(zero_shot.get("ids"), list)
        and len(zero_shot["names"]) == len(zero_shot["ids"]) > 1
    ):
        fail("zero_shot needs equally long 'names' and 'ids' lists of at least 2 classes")
    for roi, idx in raw["rois"].items():
        if not isinstance(idx, list) or any(not isinstance(i, int) or not 0 <= i < n_voxels for i in idx):
            fail(f"ROI '{roi}' must be a list of voxel indices in [0, {n_voxels})")
    for key in ("path", "sha256", "n_stimuli"):
        if key not in raw["stimulus_store"]:
            fail(f"stimulus_store.{key} is missing")
    for key in ("root", "adapter", "adapter_version"):
        if key not in raw["source"]:
            fail(f"source.{key} is missing")
    for split, info in raw["splits"].items():
        if not isinstance(info, dict) or "n_samples" not in info or not isinstance(info.get("shards"), list):
            fail(f"splits.{split} needs 'n_samples' and a 'shards' list")
        for shard in info["shards"]:
            if not isinstance(shard, dict) or not {"path", "n_samples", "sha256"} <= shard.keys():
                fail(f"splits.{split}: every shard needs path, n_samples and sha256")
        if sum(s["n_samples"] for s in info["shards"]) != info["n_samples"]:
            fail(f"splits.{split}: shard sample counts do not add up to n_samples={info['n_samples']}")


def _dumps(value: Any, indent: int = 0) -> str:  # noqa: ANN401
    """JSON with dicts indented but lists of scalars kept on one line (keeps index lists compact)."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = [pad + _dumps(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
