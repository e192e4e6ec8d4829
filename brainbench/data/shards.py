"""webdataset shards of prepared samples: writing, safe decoding, checksums and read errors.

A sample is a group of tar members sharing one key (no dots in the key, datasets.md §5.2 trap 15)::

    <key>.voxels.npy    float16 (V,)   one trial (train/val) or the repeat average (test)
    <key>.meta.json     {"subject", "split", "stim_id", "session", "trial", "n_repeats"}
    <key>.repeats.npy   float16 (R, V) test (and GOD imagery) samples only: every repeat, chronological

Nothing else is allowed in a shard. Samples are decoded from raw bytes with ``np.load(...,
allow_pickle=False)`` and ``json.loads``; a member that only a pickle-based decoder could read (``.pyd``,
``.pickle``, ``.pth`` ...) is refused, never decoded.

Example:
    >>> infos = write_split(samples, out_dir, "train", samples_per_shard=1000)  # doctest: +SKIP
    >>> for sample in iter_samples([out_dir / i["path"] for i in infos]):  # doctest: +SKIP
    ...     sample.voxels.shape
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tokenize
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from brainbench.data.manifest import Manifest, rebuild_fix
from brainbench.errors import BrainbenchError, DataFormatError

SPLITS = ("train", "val", "test", "imagery")
AVERAGED_SPLITS = ("test", "imagery")  # samples are repeat averages and keep every repeat
MEMBERS = ("voxels.npy", "meta.json", "repeats.npy")
_PICKLE_EXTENSIONS = ("pyd", "pickle", "pkl", "pth", "pt", "ckpt", "joblib")
_META_FIELDS = ("subject", "split", "stim_id", "session", "trial", "n_repeats")


@dataclass(frozen=True)
class Sample:
    """One prepared sample.

    Attributes:
        key: unique key within the shard set, without dots.
        subject: 1-based subject number.
        split: ``"train"``, ``"val"`` or ``"test"``.
        stim_id: 0-based stimulus id (NSD ``nsdId``), the key into the stimulus store.
        voxels: ``(V,)`` float16; a single trial for train/val, the repeat average for test.
        repeats: ``(R, V)`` float16 every repeat for test and imagery samples, else ``None``.
        session: 1-based session number of the trial (of the first repeat for test samples).
        trial: 0-based global (chronological) trial index (of the first repeat for test samples).
        n_repeats: number of trials behind ``voxels`` (1 for train/val).
    """

    key: str
    subject: int
    split: str
    stim_id: int
    voxels: np.ndarray
    repeats: np.ndarray | None
    session: int
    trial: int
    n_repeats: int


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file.

    Args:
        path: file to hash.
        chunk_bytes: read size.

    Returns:
        64 hex characters.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_sample(sample: Sample) -> dict[str, Any]:
    """Encode a sample into the member dict that ``webdataset.TarWriter(encoder=False)`` writes.

    Args:
        sample: the sample.

    Returns:
        ``{"__key__": key, "voxels.npy": bytes, "meta.json": bytes[, "repeats.npy": bytes]}``.

    Raises:
        ValueError: on a dotted key, unknown split, or a test sample without repeats.
    """
    if "." in sample.key or "/" in sample.key or not sample.key:
        raise ValueError(f"sample key {sample.key!r} must be non-empty without dots or slashes")
    if sample.split not in SPLITS:
        raise ValueError(f"split {sample.split!r} is not one of {SPLITS}")
    meta = {name: getattr(sample, name) for name in _META_FIELDS}
    members: dict[str, Any] = {
        "__key__": sample.key,
        "voxels.npy": _npy_bytes(np.asarray(sample.voxels, dtype=np.float16)),
        "meta.json": json.dumps(meta).encode("utf-8"),
    }
    if sample.split in AVERAGED_SPLITS:
        if sample.repeats is None:
            raise ValueError(f"test sample {sample.key} needs its repeats")
        members["repeats.npy"] = _npy_bytes(np.asarray(sample.repeats, dtype=np.float16))
    return members


class SplitWriter:
    """Write one split's samples into shards ``<split>-000000.tar``, ``<split>-000001.tar``, ...

    Each shard is written under a temporary name and renamed once complete, so a shard with its final
    name is always whole. Use :meth:`add` per sample and :meth:`close` to get the shard infos.

    Args:
        out_dir: directory receiving the shards.
        split: ``"train"``, ``"val"`` or ``"test"``.
        samples_per_shard: maximum samples per shard.
    """

    def __init__(self, out_dir: str | Path, split: str, samples_per_shard: int) -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        if samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        self.out_dir = Path(out_dir)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.infos: list[dict[str, Any]] = []
        self._writer: wds.TarWriter | None = None
        self._file: Any = None
        self._count = 0

    def _open(self) -> None:
        name = f"{self.split}-{len(self.infos):06d}.tar"
        self._final = self.out_dir / name
        self._tmp = self.out_dir / f".{name}.partial"
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in _finish
        self._writer = wds.TarWriter(
            self._file, encoder=False, mtime=0, user="brainbench", group="brainbench"
        )
        self._count = 0

    def _finish(self) -> None:
        assert self._writer is not None
        self._writer.close()
        self._file.close()
        os.replace(self._tmp, self._final)
        self.infos.append(
            {"path": self._final.name, "n_samples": self._count, "sha256": sha256_file(self._final)}
        )
        self._writer = None

    def add(self, sample: Sample) -> None:
        """Append one sample (its split must match the writer's)."""
        if sample.split != self.split:
            raise ValueError(f"sample {sample.key} is {sample.split!r}, writer is {self.split!r}")
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write(encode_sample(sample))
        self._count += 1
        if self._count >= self.samples_per_shard:
            self._finish()

    def close(self) -> list[dict[str, Any]]:
        """Finish the last shard.

        Returns:
            Shard infos ``{"path": name relative to out_dir, "n_samples", "sha256"}``.
        """
        if self._writer is not None:
            self._finish()
        return self.infos

    def abort(self) -> None:
        """Drop the shard being written (completed shards stay)."""
        if self._writer is not None:
            with contextlib.suppress(OSError, ValueError):
                self._writer.close()
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._writer = None


def write_split(
    samples: Iterable[Sample], out_dir: str | Path, split: str, samples_per_shard: int
) -> list[dict[str, Any]]:
    """Write samples of one split into shards.

    Args:
        samples: samples of that split, in the order to store them.
        out_dir: directory receiving the shards (created if needed).
        split: ``"train"``, ``"val"`` or ``"test"``.
        samples_per_shard: maximum samples per shard.

    Returns:
        Shard infos ``{"path": name relative to out_dir, "n_samples", "sha256"}``, in order.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    writer = SplitWriter(out_dir, split, samples_per_shard)
    try:
        for sample in samples:
            writer.add(sample)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _load_npy(url: str, member: str, data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, SyntaxError, tokenize.TokenError) as exc:  # numpy tokenizes a damaged header
        raise DataFormatError(
            url, f"member '{member}' is not a plain numeric .npy ({exc})", rebuild_fix(url)
        ) from exc


def decode_sample(raw: dict[str, Any]) -> Sample:
    """Decode the raw member dict that webdataset yields without ``.decode()``.

    Args:
        raw: ``{"__key__", "__url__", "voxels.npy": bytes, "meta.json": bytes[, "repeats.npy": bytes]}``.

    Returns:
        The sample.

    Raises:
        DataFormatError: naming the shard url and member, on any member outside :data:`MEMBERS` (pickle-based
            members are refused, never decoded), a missing member, or malformed content.
    """
    url = str(raw.get("__url__", "<unknown shard>"))
    key = str(raw.get("__key__", "<unknown key>"))
    for member in raw:
        if member.startswith("__") or member in MEMBERS:
            continue
        if member.rsplit(".", 1)[-1].lower() in _PICKLE_EXTENSIONS:
            problem = f"sample '{key}' has member '{key}.{member}'; refusing to unpickle '{member}'"
        else:
            problem = f"sample '{key}' has unexpected member '{key}.{member}' (allowed: {', '.join(MEMBERS)})"
        raise DataFormatError(
            url, problem, "use shards written by `brainbench prepare`; never load foreign pickles"
        )
    for member in ("voxels.npy", "meta.json"):
        if member not in raw:
            problem = (
                f"sample '{key}' lacks member '{key}.{member}' (truncated shard, or not from brainbench)"
            )
            raise DataFormatError(url, problem, rebuild_fix(url))
    try:
        meta = json.loads(raw["meta.json"])
        fields = {name: meta[name] for name in _META_FIELDS}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise DataFormatError(url, f"sample '{key}': bad meta.json ({exc!r})", rebuild_fix(url)) from exc
    if fields["split"] not in SPLITS:
        raise DataFormatError(url, f"sample '{key}': unknown split {fields['split']!r}", rebuild_fix(url))
    voxels = _load_npy(url, "voxels.npy", raw["voxels.npy"])
    repeats = None
    if fields["split"] in AVERAGED_SPLITS:
        if "repeats.npy" not in raw:
            raise DataFormatError(
                url, f"test sample '{key}' lacks member '{key}.repeats.npy'", rebuild_fix(url)
            )
        repeats = _load_npy(url, "repeats.npy", raw["repeats.npy"])
        if repeats.ndim != 2 or repeats.shape[1:] != voxels.shape:
            raise DataFormatError(
                url, f"sample '{key}': repeats {repeats.shape} vs voxels {voxels.shape}", rebuild_fix(url)
            )
    if voxels.ndim != 1:
        problem = f"sample '{key}': voxels must be 1-D, got {voxels.shape}"
        raise DataFormatError(url, problem, rebuild_fix(url))
    return Sample(key=key, voxels=voxels, repeats=repeats, **fields)


def shard_handler(exn: Exception) -> bool:
    """Webdataset exception handler: turn tar read errors into :class:`DataFormatError`.

    Pass it as ``handler=`` to webdataset stages. It never swallows an error; it re-raises tar errors
    (truncated or corrupt shards) as ``DataFormatError`` naming the shard and the fix.

    Args:
        exn: the exception webdataset caught (webdataset appends the shard url to ``exn.args``).

    Returns:
        Never returns normally.

    Raises:
        DataFormatError: for tar, EOF and decoding errors, naming the shard.
        Exception: any brainbench error or other exception, unchanged.
    """
    if isinstance(exn, BrainbenchError):
        raise exn
    url = _url_from_args(exn.args)
    fix = rebuild_fix(url)
    if isinstance(exn, FileNotFoundError):
        raise DataFormatError(url, "shard listed but not found", fix) from exn
    duplicate = isinstance(exn, ValueError) and "duplicate file name in tar" in str(exn)
    if isinstance(exn, tarfile.TarError | EOFError | OSError | zlib.error) or duplicate:
        detail = f"{type(exn).__name__}: {exn.args[0] if exn.args else ''}"
        raise DataFormatError(url, f"cannot read shard, it is truncated or corrupt ({detail})", fix) from exn
    raise exn


def _url_from_args(args: Sequence[Any]) -> str:
    """Find the shard url webdataset appended to an exception's args."""
    for arg in reversed(args):
        if isinstance(arg, str | Path) and " @ " not in str(arg):
            return str(arg)
    for arg in args:
        text = str(arg)
        if " @ " in text:
            tail = text.rsplit(" @ ", 1)[1]
            return tail.split("name='", 1)[1].split("'", 1)[0] if "name='" in tail else tail
    return "<unknown shard>"


def iter_samples(paths: Sequence[str | Path]) -> Iterator[Sample]:
    """Read shards in order, decoding safely.

    Args:
        paths: shard paths or urls.

    Yields:
        Samples in shard order.
    """
    if not paths:
        return
    pipeline = wds.DataPipeline(
        wds.SimpleShardList([str(p) for p in paths]),
        wds.tarfile_to_samples(handler=shard_handler),
        wds.map(decode_sample),
    )
    yield from pipeline


def iter_split(manifest_dir: str | Path, manifest: Manifest, split: str) -> Iterator[Sample]:
    """Read one split of a prepared directory, checking each shard's sample count against the manifest.

    A tar cut exactly at a member boundary reads as a shorter, valid archive; the count check catches it.

    Args:
        manifest_dir: directory holding the manifest.
        manifest: the loaded manifest.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Yields:
        Samples in manifest order.

    Raises:
        DataFormatError: naming a shard whose sample count differs from the manifest's.
    """
    for shard in manifest.splits[split]["shards"]:
        path = Path(manifest_dir) / shard["path"]
        count = 0
        for sample in iter_samples([path]):
            count += 1
            yield sample
        if count != shard["n_samples"]:
            problem = f"holds {count} samples, the manifest says {shard['n_samples']}: truncated or corrupt"
            raise DataFormatError(path, problem, rebuild_fix(path))


def verify_checksums(manifest_dir: str | Path, manifest: Manifest) -> None:
    """Check that every shard and the stimulus store exist and match their manifest SHA-256.

    Args:
        manifest_dir: directory holding the manifest.
        manifest: the loaded manifest.

    Raises:
        DataFormatError: naming the first missing or mismatching file and the command that rebuilds it.
    """
    manifest_dir = Path(manifest_dir)
    fix = rebuild_fix(manifest_dir)
    files = [
        (shard["path"], shard["sha256"]) for info in manifest.splits.values() for shard in info["shards"]
    ]
    files.append((manifest.stimulus_store["path"], manifest.stimulus_store["sha256"]))
    for rel, expected in files:
        path = manifest_dir / rel
        if not path.is_file():
            raise DataFormatError(path, "listed in the manifest but missing", fix)
        actual = sha256_file(path)
        if actual != expected:
            raise DataFormatError(
                path, f"sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...)", fix
            )
