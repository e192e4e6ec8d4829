"""Write a seeded, kilobyte-sized copy of the NSD raw layout (datasets.md §1.1, §5.1).

Written with nibabel, scipy.io, h5py, pandas and json directly, independently of brainbench's world writer.

- 8-row ``subjectim`` (like NSD) but only subjects 1 and 2 have ``ppdata`` folders;
- a 6×5×4 grid, 3 sessions × 12 trials; per subject 6 shared images (3 repeats, one per session) and 10
  non-shared images (8 shown twice, 2 once);
- images are 8×8 px; image 0 is black and image 1 white (an off-by-one pairs them wrongly);
- ROI files carry -1 (outside cortex, the x == 0 plane), 0 and labels; one nsdgeneral voxel lies outside the
  brain mask (zero betas: a zero-std voxel);
- shared trials carry a +3000 raw (+10 PSC) offset, so z-score statistics that include them are visible;
- shared images are COCO ``val2017``, the others ``train2017``.

Run ``python tests/data/nsd/make_fixture.py OUT`` to write it and print its checksums.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

SEED = 0
GRID = (6, 5, 4)
N_SESSIONS = 3
TRIALS_PER_SESSION = 12
RUNS_PER_SESSION = 2
N_SHARED = 6
N_TRAIN = 10
N_IMAGES = 40  # the "73k" id space
IMAGE_PX = 8
SUBJECTS = (1, 2)
SHARED_IDS = np.arange(30, 36)  # 0-based nsdId
TRAIN_IDS = {1: np.arange(0, 10), 2: np.arange(10, 20)}
SHARED_OFFSET_RAW = 3000
ZERO_STD_VOXEL = (5, 4, 3)
CATEGORY_NAMES = ["cat", "dog", "car"]
PRF_LABELS = {1: "V1v", 2: "V1d", 3: "V2v", 4: "V2d", 5: "V3v", 6: "V3d", 7: "hV4"}
STREAM_LABELS = {
    1: "early",
    2: "midventral",
    3: "midlateral",
    4: "midparietal",
    5: "ventral",
    6: "lateral",
    7: "parietal",
}


def coco_id(nsd_id: int) -> int:
    return 500_000 + 7 * int(nsd_id)


def _design(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """0-based subjectim (8, 16) and masterordering (36,): each session 6 shared + 6 non-shared trials."""
    subjectim = np.zeros((8, N_SHARED + N_TRAIN), dtype=np.int64)
    for row in range(8):
        subjectim[row, :N_SHARED] = SHARED_IDS
        subject = row + 1
        others = TRAIN_IDS.get(subject, rng.choice(np.arange(20, 30), N_TRAIN, replace=False))
        subjectim[row, N_SHARED:] = others
    train_cols = np.concatenate([np.arange(N_SHARED, N_SHARED + N_TRAIN), np.arange(N_SHARED, N_SHARED + 8)])
    train_cols = rng.permutation(train_cols).reshape(N_SESSIONS, 6)
    sessions = [
        rng.permutation(np.concatenate([np.arange(N_SHARED), train_cols[s]])) for s in range(N_SESSIONS)
    ]
    return subjectim, np.concatenate(sessions)


def _images(rng: np.random.Generator) -> np.ndarray:
    images = rng.integers(0, 256, size=(N_IMAGES, IMAGE_PX, IMAGE_PX, 3), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    return images


def _rois() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = np.meshgrid(*[np.arange(n) for n in GRID], indexing="ij")
    nsdgeneral = np.where((x + 2 * y + z) % 3 != 0, 1, 0).astype(np.int16)
    nsdgeneral[ZERO_STD_VOXEL] = 1
    nsdgeneral[0] = -1
    prf = np.where(nsdgeneral == 1, (x + y) % 4, 0).astype(np.int16)  # labels 1..3 and 0
    prf[0] = -1
    streams = np.where(y < 2, 1, 5).astype(np.int16)
    streams[0] = -1
    brainmask = np.ones(GRID, dtype=np.int16)
    brainmask[ZERO_STD_VOXEL] = 0
    return nsdgeneral, prf, streams, brainmask


def _save_nii(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, np.diag([1.8, 1.8, 1.8, 1.0]))
    image.header.set_data_dtype(data.dtype)
    nib.save(image, path)


def make_fixture(root: Path, write_hdf5: bool = True) -> dict:
    """Write the fixture under ``root`` and return what the tests need to check against (0-based)."""
    root = Path(root)
    rng = np.random.default_rng(SEED)
    subjectim, masterordering = _design(rng)
    images = _images(rng)
    nsdgeneral, prf, streams, brainmask = _rois()

    exp = root / "nsddata" / "experiments" / "nsd"
    exp.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        exp / "nsd_expdesign.mat",
        {
            "subjectim": (subjectim + 1).astype(np.float64),
            "masterordering": (masterordering + 1).astype(np.float64).reshape(1, -1),
            "sharedix": (SHARED_IDS + 1).astype(np.float64).reshape(1, -1),
        },
    )
    with open(exp / "nsd_expdesign.mat", "r+b") as f:  # the text header holds a timestamp: fix it
        f.write(b"MATLAB 5.0 MAT-file, Platform: posix, brainbench NSD fixture".ljust(116))
    trial_ids = {s: subjectim[s - 1, masterordering] for s in range(1, 9)}
    info = pd.DataFrame(
        {
            "cocoId": [coco_id(i) for i in range(N_IMAGES)],
            "cocoSplit": ["val2017" if i in SHARED_IDS else "train2017" for i in range(N_IMAGES)],
            "cropBox": ["(0, 0, 0.1, 0.1)"] * N_IMAGES,
            "loss": 0.0,
            "nsdId": np.arange(N_IMAGES),
            "flagged": False,
            "BOLD5000": False,
            "shared1000": np.isin(np.arange(N_IMAGES), SHARED_IDS),
        }
    )
    for s in range(1, 9):
        info[f"subject{s}"] = np.isin(np.arange(N_IMAGES), subjectim[s - 1]).astype(int)
    for s in range(1, 9):
        for k in range(3):
            col = np.zeros(N_IMAGES, dtype=int)
            for i in range(N_IMAGES):
                shown = np.flatnonzero(trial_ids[s] == i)
                col[i] = shown[k] + 1 if len(shown) > k else 0
            info[f"subject{s}_rep{k}"] = col
    info.to_csv(exp / "nsd_stim_info_merged.csv")

    stim_dir = root / "nsddata_stimuli" / "stimuli" / "nsd"
    (stim_dir / "annotations").mkdir(parents=True, exist_ok=True)
    with h5py.File(stim_dir / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=images)
    captions = {i: [f"a picture number {i}", f"  image {i} again \n"] for i in range(N_IMAGES)}
    categories = {i: [CATEGORY_NAMES[i % 3], CATEGORY_NAMES[(i + 1) % 3]] for i in range(N_IMAGES)}
    for split in ("train2017", "val2017"):
        ids = [i for i in range(N_IMAGES) if (split == "val2017") == (i in SHARED_IDS)]
        caps = [
            {"id": 1000 + 10 * i + k, "image_id": coco_id(i), "caption": c}
            for i in ids
            for k, c in enumerate(captions[i])
        ]
        inst = [
            {
                "id": 5000 + 10 * i + k,
                "image_id": coco_id(i),
                "category_id": CATEGORY_NAMES.index(n) + 1,
                "area": 100.0 * (1 + k),
            }
            for i in ids
            for k, n in enumerate(reversed(categories[i]))  # smallest written first; the reader sorts by area
        ]
        inst.append(
            {"id": 9999, "image_id": coco_id(ids[0]), "category_id": 1, "area": 1.0}
        )  # duplicate name
        images_json = [{"id": coco_id(i)} for i in ids]
        (stim_dir / "annotations" / f"captions_{split}.json").write_text(
            json.dumps({"images": images_json, "annotations": caps})
        )
        cats = [{"id": k + 1, "name": n} for k, n in enumerate(CATEGORY_NAMES)]
        (stim_dir / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images_json, "annotations": inst, "categories": cats})
        )

    label_dir = root / "nsddata" / "freesurfer" / "fsaverage" / "label"
    label_dir.mkdir(parents=True, exist_ok=True)
    for atlas, labels in {
        "nsdgeneral": {1: "nsdgeneral"},
        "prf-visualrois": PRF_LABELS,
        "streams": STREAM_LABELS,
    }.items():
        text = "0 Unknown\n" + "".join(f"{k} {v}\n" for k, v in labels.items())
        (label_dir / f"{atlas}.mgz.ctab").write_text(text)

    raw_betas: dict[int, list[np.ndarray]] = {}
    for subject in SUBJECTS:
        pp = root / "nsddata" / "ppdata" / f"subj{subject:02d}"
        ids = trial_ids[subject]
        n = len(ids)
        t = np.arange(n)
        session = t // TRIALS_PER_SESSION + 1
        pos = t % TRIALS_PER_SESSION
        run = pos // (TRIALS_PER_SESSION // RUNS_PER_SESSION) + 1
        responses = pd.DataFrame(
            {
                "SUBJECT": subject,
                "SESSION": session,
                "RUN": run,
                "TRIAL": pos % (TRIALS_PER_SESSION // RUNS_PER_SESSION) + 1,
                "73KID": ids + 1,
                "10KID": masterordering + 1,
                "TIME": 737000.0 + t / 1000,
                "ISOLD": 0,
                "ISCORRECT": 1,
                "RT": 700.0,
                "CHANGEMIND": 0,
                "MEMORYRECENT": np.nan,
            }
        )
        (pp / "behav").mkdir(parents=True, exist_ok=True)
        responses.to_csv(pp / "behav" / "responses.tsv", sep="\t", index=False)
        func = pp / "func1pt8mm"
        _save_nii(func / "brainmask.nii.gz", brainmask)
        _save_nii(func / "roi" / "nsdgeneral.nii.gz", nsdgeneral)
        _save_nii(func / "roi" / "prf-visualrois.nii.gz", prf)
        _save_nii(func / "roi" / "streams.nii.gz", streams)
        _save_nii(func / "roi" / "lh.prf-visualrois.nii.gz", prf)
        betas_dir = (
            root
            / "nsddata_betas"
            / "ppdata"
            / f"subj{subject:02d}"
            / "func1pt8mm"
            / "betas_fithrf_GLMdenoise_RR"
        )
        betas_dir.mkdir(parents=True, exist_ok=True)
        raw_betas[subject] = []
        gradient = np.arange(np.prod(GRID)).reshape(GRID)  # distinct per voxel: voxel order is visible
        for s in range(N_SESSIONS):
            rows = np.flatnonzero(session == s + 1)
            vol = rng.normal(0, 150, size=(*GRID, len(rows))) + 10 * gradient[..., None]
            vol[..., np.isin(ids[rows], SHARED_IDS)] += SHARED_OFFSET_RAW
            vol = np.rint(vol).astype(np.int16)
            vol[brainmask == 0] = 0
            raw_betas[subject].append(vol)
            _save_nii(betas_dir / f"betas_session{s + 1:02d}.nii.gz", vol)
            if write_hdf5:
                with h5py.File(betas_dir / f"betas_session{s + 1:02d}.hdf5", "w") as f:
                    f.create_dataset("betas", data=vol.transpose(3, 2, 1, 0), chunks=(len(rows), 1, 1, 1))
    return {
        "root": root,
        "trial_nsd_ids": {s: trial_ids[s] for s in SUBJECTS},
        "images": images,
        "captions": captions,
        "categories": categories,
        "raw_betas": raw_betas,
        "nsdgeneral": nsdgeneral,
        "prf": prf,
        "brainmask": brainmask,
    }


def checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "nsd_fixture")
    make_fixture(out)
    for name, digest in checksums(out).items():
        print(f"{digest}  {name}")
