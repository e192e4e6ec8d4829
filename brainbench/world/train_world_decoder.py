"""Trains a world decoder variant on fresh world scenes and ships it (weights + card with held-out metrics).

Data: ``n_scenes`` scenes rendered with :data:`TRAIN_SEED` (disjoint from the seeds of the subjects'
stimuli, of the world CLIP's training and of the held-out scenes, :data:`EVAL_SEED`), their world-CLIP
features computed **once** by the same :class:`~brainbench.backbones.openclip.ImageBackbone` the feature
cache uses and stored under ``<cache_dir>/<seed>-<n>/`` (float16 ``.npy``, reused by every variant).

Loss: ``L1(x̂, x) + λ · L1(∇x̂, ∇x)`` with ``∇`` the horizontal and vertical pixel differences (sharp
shape edges; λ = ``grad_weight``). A world-CLIP perceptual term was left out: one forward pass of the world
CLIP on a batch of 128 takes about as long as a full decoder training step on 2 cores, and gradients
through it would more than double the step time within the 8-minute budget per variant.

Held-out metrics (the generator's ceiling, written to ``card.json``): PixCorr and SSIM
(:mod:`brainbench.metrics.image_metrics`, canonical ``brainbench`` chain) of decoding :data:`N_EVAL` held-out
scenes from their **true** features, next to two references computed on the same scenes: the mean training
image, and retrieval of the nearest of :data:`RETRIEVAL_BANK` training scenes by true ``clip_image`` cosine
(the size of ``world-nsd-v1-small``'s training stimulus set).

Run once per variant and commit the result::

    brainbench world train-decoder --inputs image+detail \
        --out brainbench/generators/assets/world-decoder-image+detail
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from brainbench.backbones.world_clip import load_world_clip_card, sha256_file
from brainbench.backbones.world_decoder import (
    CHANNELS,
    VARIANTS,
    WEIGHTS_FILE,
    WORLD_BACKBONE,
    WorldDecoder,
    train_command,
    world_features,
)
from brainbench.world.stimuli import generate_stimuli

TRAIN_SEED = 7_000_003
EVAL_SEED = 7_000_004
N_EVAL = 500
RETRIEVAL_BANK = 2500
FEATURES = ("clip_image", "clip_text", "detail", "clip_tokens")
METRIC_CHAIN = "brainbench"


def scene_set(seed: int, n_scenes: int) -> dict[str, np.ndarray]:
    """Images and decoder inputs (float16) of the first ``n_scenes`` scenes of world ``seed``."""
    from brainbench.backbones.openclip import load_backbone

    stimuli = generate_stimuli(n_scenes, seed=seed, image_size=64)
    features = world_features(load_backbone(WORLD_BACKBONE), stimuli.images, stimuli.captions, FEATURES)
    return {"images": stimuli.images, **{k: v.half().numpy() for k, v in features.items()}}


def cached_scene_set(cache_dir: Path, seed: int, n_scenes: int) -> dict[str, np.ndarray]:
    """:func:`scene_set`, computed once into ``cache_dir`` and memory-mapped afterwards.

    The cache records the world CLIP's sha256 and is recomputed when the shipped world CLIP changes.
    """
    folder = cache_dir / f"{seed}-{n_scenes}"
    record = {"seed": seed, "n_scenes": n_scenes, "world_clip_sha256": load_world_clip_card()["sha256"]}
    record_path = folder / "record.json"
    names = ("images", *FEATURES)
    if not (record_path.is_file() and json.loads(record_path.read_text()) == record):
        print(
            f"rendering {n_scenes} scenes (seed {seed}) and computing their world-CLIP features", flush=True
        )
        arrays = scene_set(seed, n_scenes)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            np.save(folder / f"{name}.npy", arrays[name])
        record_path.write_text(json.dumps(record, indent=2))
    return {n: np.load(folder / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in names}


def _to_float_images(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images_uint8)).permute(0, 3, 1, 2).float() / 255.0


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, grad_weight: float) -> torch.Tensor:
    """``L1(pred, target) + grad_weight * L1`` of their horizontal and vertical differences."""
    loss = (pred - target).abs().mean()
    if grad_weight:
        dx = (pred.diff(dim=-1) - target.diff(dim=-1)).abs().mean()
        dy = (pred.diff(dim=-2) - target.diff(dim=-2)).abs().mean()
        loss = loss + grad_weight * (dx + dy)
    return loss


def image_scores(pred_uint8: torch.Tensor, target_uint8: torch.Tensor) -> dict[str, float]:
    """Mean PixCorr and SSIM (canonical chain) of uint8 ``(N, H, W, 3)`` reconstructions."""
    from brainbench.metrics.image_metrics import pixcorr, ssim

    return {
        "pixcorr": round(float(pixcorr(pred_uint8, target_uint8, chain=METRIC_CHAIN)), 4),
        "ssim": round(float(ssim(pred_uint8, target_uint8, chain=METRIC_CHAIN)), 4),
    }


def reference_scores(held_out: dict[str, np.ndarray], train: dict[str, np.ndarray]) -> dict[str, Any]:
    """Scores of the mean training image and of nearest-``clip_image`` retrieval on the held-out scenes."""
    targets = torch.from_numpy(np.array(held_out["images"]))
    mean_image = np.asarray(train["images"][:RETRIEVAL_BANK], dtype=np.float32).mean(axis=0)
    mean_images = torch.from_numpy(np.rint(mean_image).astype(np.uint8)).expand(len(targets), -1, -1, -1)
    bank = torch.from_numpy(np.asarray(train["clip_image"][:RETRIEVAL_BANK], dtype=np.float32))
    queries = torch.from_numpy(np.asarray(held_out["clip_image"], dtype=np.float32))
    rows = (F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T).argmax(dim=1)  # cosine nearest row
    retrieved = torch.from_numpy(np.asarray(train["images"][:RETRIEVAL_BANK])[rows.numpy()])
    return {
        "mean_image": image_scores(mean_images.contiguous(), targets),
        f"retrieval_clip_image_bank{RETRIEVAL_BANK}": image_scores(retrieved, targets),
    }


@torch.no_grad()
def decode_scene_set(
    decoder: WorldDecoder, scenes: dict[str, np.ndarray], batch_size: int = 250
) -> torch.Tensor:
    """uint8 ``(N, 64, 64, 3)`` reconstructions of a scene set from its true features."""
    decoder.eval()
    out = []
    for start in range(0, len(scenes["images"]), batch_size):
        batch = {
            n: torch.from_numpy(np.asarray(scenes[n][start : start + batch_size], dtype=np.float32))
            for n in decoder.input_shapes
        }
        out.append((decoder(batch).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))
    return torch.cat(out)


def train_world_decoder(
    variant: str,
    out: Path,
    cache_dir: Path,
    n_scenes: int = 12_000,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    grad_weight: float = 0.5,
    seed: int = 0,
    threads: int = 1,
    log_every: int = 50,
) -> dict[str, Any]:
    """Trains decoder ``variant`` (a key of :data:`VARIANTS`), writes ``out/decoder.safetensors`` + card.

    Returns:
        The card written to ``out/card.json``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train = cached_scene_set(cache_dir, TRAIN_SEED, n_scenes)
    held_out = cached_scene_set(cache_dir, EVAL_SEED, N_EVAL)
    inputs = VARIANTS[variant]
    features = {n: torch.from_numpy(np.array(train[n])) for n in inputs}  # float16, read into memory
    images = torch.from_numpy(np.array(train["images"]))
    decoder = WorldDecoder({n: tuple(features[n].shape[1:]) for n in inputs})
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    decoder.train()
    t0 = time.time()
    for step in range(steps):
        rows = torch.randint(0, n_scenes, (batch_size,), generator=generator)
        pred = decoder({n: features[n][rows].float() for n in inputs})
        loss = reconstruction_loss(pred, _to_float_images(images[rows]), grad_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    train_seconds = time.time() - t0
    reconstructions = decode_scene_set(decoder, held_out)
    held_out_scores = {
        "true_features": image_scores(reconstructions, torch.from_numpy(np.array(held_out["images"]))),
        **reference_scores(held_out, train),
        "n_scenes": N_EVAL,
        "chain": METRIC_CHAIN,
    }
    print(json.dumps(held_out_scores, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().half().contiguous() for k, v in decoder.state_dict().items()}, out / WEIGHTS_FILE
    )
    card = {
        "variant": variant,
        "inputs": list(inputs),
        "backbone": WORLD_BACKBONE,
        "backbone_sha256": load_world_clip_card()["sha256"],
        "model": {
            "input_shapes": {n: list(s) for n, s in decoder.input_shapes.items()},
            "channels": list(CHANNELS),
            "grid_channels": 64,
            "input_normalisation": "vectors L2-normalised, token grids LayerNorm per token",
        },
        "sha256": sha256_file(out / WEIGHTS_FILE),
        "n_params": sum(p.numel() for p in decoder.parameters()),
        "loss": f"L1 + {grad_weight} * L1 of pixel differences",
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "n_train_scenes": n_scenes,
        "train_seed": TRAIN_SEED,
        "eval_seed": EVAL_SEED,
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
        "command": train_command(variant),
        "held_out": held_out_scores,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
