"""Write seeded, kilobyte-sized copies of the MindEye1 and MindEye2 downloads (datasets.md §2.1, §2.2, §5.1).

Written with ``webdataset.TarWriter``, h5py and numpy directly, independently of brainbench.

Both: 40 voxels, 2 sessions × 12 trials; global trial = (session - 1) * 750 + position (datasets.md §2.2).

- **MindEye1** ``webdataset_avg_split/``: one sample per image (``sample%09d``) with ``nsdgeneral.npy`` (3, V)
  float16, ``coco73k.npy``, ``trial.npy`` (first showing), ``num_uniques.npy`` and a ``jpg``. Images shown
  1 or 2 times are padded the way MedARC's webdataset scripts do it: one repeat is copied, two get their mean
  as a third row. 4 test images (3, 3, 2, 1 repeats), 6 train images (3, 2, 2, 1, 1, 2), 2 val images (2, 2),
  over train_subj0{s}_{0,1}.tar, val_subj0{s}_0.tar and test_subj0{s}_{0,1}.tar; images are 16 px solid
  colours; ``metadata_subj0{s}.json`` holds ``totals``.
- **MindEye2** ``wds/subj0{s}/{train/{0,1},new_test/0,test/0}.tar`` with ``behav.npy`` (1, 17),
  ``past_behav.npy``, ``future_behav.npy``, ``olds_behav.npy`` (-1 = NaN); training tars are shuffled, so only
  GLOBAL_TRIAL finds the voxels. 4 shared images (3, 3, 2, 1 trials) in ``new_test``; the old ``test`` holds
  the session-1 shared trials only. 9 non-shared images (6 × 2 trials, 3 × 1). Side files:
  ``betas_all_subj0{s}_fp32_renorm.hdf5`` (770, 40) independent random rows (rows differ strongly),
  ``coco_images_224_float16.hdf5`` (200, 3, 16, 16) float16 with values just outside [0, 1] (the clip is
  visible), and optionally ``COCO_73k_annots_curated.npy`` as plain strings or as an object array.

Run ``python tests/data/mindeye/make_fixture.py OUT`` to write both and print their checksums.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import webdataset as wds
from PIL import Image

SEED = 0
N_VOXELS = 40
TRIALS_PER_SESSION = 12
SESSION_STRIDE = 750
N_IMAGE_ROWS = 200
IMAGE_PX = 16
BETAS_ROWS = SESSION_STRIDE + TRIALS_PER_SESSION + 8
ME1_REPEATS = {
    "test": {10: 3, 17: 3, 24: 2, 31: 1},
    "train": {40: 3, 47: 2, 54: 2, 61: 1, 68: 1, 75: 2},
    "val": {90: 2, 97: 2},
}
ME1_SHARDS = {"train": 2, "val": 1, "test": 2}
ME2_SHARED = {
    110: (2, 1),
    117: (2, 1),
    124: (1, 1),
    131: (0, 1),
}  # coco -> (trials in session 1, in session 2)
ME2_NONSHARED = {140: 2, 147: 2, 154: 2, 161: 2, 168: 2, 175: 2, 182: 1, 189: 1, 196: 1}


def global_trial(slot: int) -> int:
    """Chronological slot 0..23 -> global trial (session stride 750)."""
    return (slot // TRIALS_PER_SESSION) * SESSION_STRIDE + slot % TRIALS_PER_SESSION


def _subj(subject: int) -> str:
    return f"subj{subject:02d}"


def _colour(coco: int) -> tuple[int, int, int]:
    return (coco * 37) % 256, (coco * 91 + 60) % 256, (coco * 53 + 120) % 256


def _pad(real: np.ndarray) -> np.ndarray:
    """MedARC's padding: 1 repeat -> copied twice; 2 repeats -> their mean as the third row."""
    if len(real) == 1:
        return np.concatenate([real, real, real])
    if len(real) == 2:
        return np.concatenate([real, real.astype(np.float32).mean(0, keepdims=True).astype(real.dtype)])
    return real


def write_me1_fixture(
    root: Path,
    subject: int = 1,
    *,
    n_voxels: int = N_VOXELS,
    pickle_member: bool = False,
    mismatch_voxels: bool = False,
    odd_image_size: bool = False,
) -> dict:
    """Write ``root/webdataset_avg_split`` and return what the tests check against.

    Args:
        root: the download's top folder.
        subject: 1-based subject.
        n_voxels: voxels per repeat.
        pickle_member: add a ``.pyd`` member to the first sample of the last test tar.
        mismatch_voxels: the val tar's samples get one voxel more.
        odd_image_size: the first val image is 20 px instead of 16.

    Returns:
        ``{"root", "subject", "n_voxels", "splits": {split: [coco]}, "repeats": {coco: (n, V) float16},
        "first_trial": {coco: int}, "colours": {coco: (r, g, b)}, "tars": {split: [Path]}}``.
    """
    root = Path(root)
    rng = np.random.default_rng(SEED + subject)
    plan = [
        (coco, split) for split, reps in ME1_REPEATS.items() for coco, n in reps.items() for _ in range(n)
    ]
    assert len(plan) == 2 * TRIALS_PER_SESSION
    order = rng.permutation(len(plan))
    shown: dict[int, list[int]] = {}
    for slot, index in enumerate(order):
        shown.setdefault(plan[index][0], []).append(global_trial(slot))
    base = root / "webdataset_avg_split"
    out: dict = {"root": root, "subject": subject, "n_voxels": n_voxels, "splits": {}, "repeats": {}}
    out |= {"first_trial": {}, "colours": {}, "tars": {}}
    key = 0
    for split, reps in ME1_REPEATS.items():
        cocos = list(rng.permutation(list(reps)))
        out["splits"][split] = [int(c) for c in cocos]
        width = n_voxels + 1 if (mismatch_voxels and split == "val") else n_voxels
        (base / split).mkdir(parents=True, exist_ok=True)
        out["tars"][split] = []
        for shard, chunk in enumerate(np.array_split(np.array(cocos), ME1_SHARDS[split])):
            path = base / split / f"{split}_{_subj(subject)}_{shard}.tar"
            out["tars"][split].append(path)
            with wds.TarWriter(str(path), mtime=0) as sink:
                for coco in chunk.tolist():
                    real = rng.standard_normal((reps[coco], width)).astype(np.float16)
                    px = 20 if (odd_image_size and split == "val" and coco == cocos[0]) else IMAGE_PX
                    sample = {
                        "__key__": f"sample{key:09d}",
                        "nsdgeneral.npy": _pad(real),
                        "coco73k.npy": np.array([coco]),
                        "trial.npy": np.array([min(shown[coco])]),
                        "num_uniques.npy": np.array([reps[coco]]),
                        "jpg": Image.new("RGB", (px, px), _colour(coco)),
                    }
                    if (
                        pickle_member
                        and split == "test"
                        and shard == ME1_SHARDS[split] - 1
                        and coco == chunk[0]
                    ):
                        sample["extra.pyd"] = {"never": "unpickled"}
                    sink.write(sample)
                    key += 1
                    out["repeats"][coco] = real
                    out["first_trial"][coco] = min(shown[coco])
                    out["colours"][coco] = _colour(coco)
    totals = {split: len(reps) for split, reps in ME1_REPEATS.items()}
    (base / f"metadata_{_subj(subject)}.json").write_text(json.dumps({"totals": totals}))
    return out


def _behav_row(trial: dict, subject: int) -> np.ndarray:
    position = trial["global_trial"] % SESSION_STRIDE
    row = [
        trial["coco"],
        subject,
        trial["session"],
        position // 6 + 1,  # RUN
        position % 6 + 1,  # TRIAL within run
        trial["global_trial"],
        737000 + trial["global_trial"],  # TIME
        0,
        1,
        -1 if position % 5 == 0 else 650.0,  # RT: NaN -> -1
        -1,
        0,
        1,
        3,
        4,
        1,
        float(trial["shared"]),
    ]
    return np.array(row, dtype=np.float64).reshape(1, 17)


def _context(rows: dict[int, np.ndarray], trial: dict, trials: list[dict]) -> dict[str, np.ndarray]:
    """past/future (15, 17) within the session and olds (3, 17) other showings, -1 padded."""
    past, future, olds = (np.full((n, 17), -1.0) for n in (15, 15, 3))
    g = trial["global_trial"]
    same = [t["global_trial"] for t in trials if t["session"] == trial["session"]]
    for j in range(1, 16):
        if g - j in same:
            past[j - 1] = rows[g - j]
        if g + j in same:
            future[j - 1] = rows[g + j]
    others = [t["global_trial"] for t in trials if t["coco"] == trial["coco"] and t["global_trial"] != g]
    for j, other in enumerate(others[:3]):
        olds[j] = rows[other]
    return {"past_behav.npy": past, "future_behav.npy": future, "olds_behav.npy": olds}


def write_me2_fixture(
    root: Path,
    subject: int = 1,
    *,
    n_voxels: int = N_VOXELS,
    captions: str | None = "plain",
    pickle_member: bool = False,
) -> dict:
    """Write ``root/wds/subj0{s}`` plus the side files and return what the tests check against.

    Args:
        root: the download's top folder.
        subject: 1-based subject.
        n_voxels: columns of the betas file.
        captions: ``"plain"`` (a (200, 5) unicode array), ``"object"`` (an object array, only loadable by
            unpickling) or ``None`` (no captions file).
        pickle_member: add a ``.pth`` member to the first sample of ``train/1.tar``.

    Returns:
        ``{"root", "subject", "n_voxels", "betas" (770, V) float32, "images" (200, 3, 16, 16) float16,
        "trials": [{"coco", "session", "global_trial", "shared", "old_test"}], "shared_ids", "old_test_ids",
        "train_ids", "captions": {coco: [str]}}``.
    """
    root = Path(root)
    rng = np.random.default_rng(SEED + 100 + subject)
    sessions: dict[int, list[tuple[int, bool]]] = {1: [], 2: []}
    for coco, (n1, n2) in ME2_SHARED.items():
        sessions[1] += [(coco, True)] * n1
        sessions[2] += [(coco, True)] * n2
    nonshared = [coco for coco, n in ME2_NONSHARED.items() for _ in range(n)]
    n_first = TRIALS_PER_SESSION - len(sessions[1])
    sessions[1] += [(c, False) for c in nonshared[:n_first]]
    sessions[2] += [(c, False) for c in nonshared[n_first:]]
    trials = []
    for session, plan in sessions.items():
        assert len(plan) == TRIALS_PER_SESSION
        for position, index in enumerate(rng.permutation(len(plan))):
            coco, shared = plan[index]
            g = (session - 1) * SESSION_STRIDE + position
            trials.append({"coco": coco, "session": session, "global_trial": g, "shared": shared})
            trials[-1]["old_test"] = shared and session == 1
    rows = {t["global_trial"]: _behav_row(t, subject)[0] for t in trials}

    wds_dir = root / "wds" / _subj(subject)
    for folder in ("train", "new_test", "test"):
        (wds_dir / folder).mkdir(parents=True, exist_ok=True)
    for session in (1, 2):
        mine = [t for t in trials if t["session"] == session and not t["shared"]]
        with wds.TarWriter(str(wds_dir / "train" / f"{session - 1}.tar"), mtime=0) as sink:
            for k, index in enumerate(rng.permutation(len(mine))):
                trial = mine[index]
                sample = {"__key__": f"sample{k:09d}", "behav.npy": _behav_row(trial, subject)}
                if pickle_member and session == 2 and k == 0:
                    sample["extra.pth"] = b"not a real torch file"
                sink.write(sample | _context(rows, trial, trials))
    for folder, wanted in (("new_test", "shared"), ("test", "old_test")):
        with wds.TarWriter(str(wds_dir / folder / "0.tar"), mtime=0) as sink:
            for k, trial in enumerate([t for t in trials if t[wanted]]):
                sink.write(
                    {"__key__": f"sample{k:09d}", "behav.npy": _behav_row(trial, subject)}
                    | _context(rows, trial, trials)
                )

    betas = rng.standard_normal((BETAS_ROWS, n_voxels)).astype(np.float32)
    with h5py.File(root / f"betas_all_{_subj(subject)}_fp32_renorm.hdf5", "w") as f:
        f.create_dataset("betas", data=betas)
    images = rng.uniform(-0.1, 1.1, size=(N_IMAGE_ROWS, 3, IMAGE_PX, IMAGE_PX)).astype(np.float16)
    with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:
        f.create_dataset("images", data=images)
    caption_rows = {
        i: [f"a photo of thing {i}", "", f"thing {i} again ", "", ""] for i in range(N_IMAGE_ROWS)
    }
    if captions == "plain":
        np.save(
            root / "COCO_73k_annots_curated.npy", np.array([caption_rows[i] for i in range(N_IMAGE_ROWS)])
        )
    elif captions == "object":
        array = np.array([caption_rows[i] for i in range(N_IMAGE_ROWS)], dtype=object)
        np.save(root / "COCO_73k_annots_curated.npy", array, allow_pickle=True)
    return {
        "root": root,
        "subject": subject,
        "n_voxels": n_voxels,
        "betas": betas,
        "images": images,
        "trials": trials,
        "shared_ids": sorted(ME2_SHARED),
        "old_test_ids": sorted({t["coco"] for t in trials if t["old_test"]}),
        "train_ids": sorted(ME2_NONSHARED),
        "captions": {i: [c.strip() for c in caption_rows[i] if c.strip()] for i in range(N_IMAGE_ROWS)},
    }


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "mindeye_fixture")
    write_me1_fixture(out / "mindeye1")
    write_me2_fixture(out / "mindeye2")
    for name, digest in checksums(out).items():
        print(f"{digest}  {name}")
