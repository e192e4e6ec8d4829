"""Trains the world CLIP contrastively (Radford et al. 2021, symmetric InfoNCE) on fresh world scenes.

Every step renders new scenes in a loader worker (seed ``TRAIN_SEED``, disjoint from the seeds of the
subjects' stimuli and of the held-out evaluation), so the model never sees a stimulus twice and never sees
the stimuli shown to the simulated subjects. One random caption of each image is used per step.

Run once and commit the result (a few minutes per hundred steps on 2 CPU cores)::

    brainbench world train-clip --out brainbench/world/assets/world-clip-v1

The output folder is an open_clip ``local-dir``: ``open_clip_config.json``, ``open_clip_model.safetensors``
(float16) and ``card.json`` (sha256, command, held-out image->caption top-1 and zero-shot accuracy).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from brainbench.backbones.world_clip import (
    TRAIN_COMMAND,
    WEIGHTS_FILE,
    WORLD_CLIP_ARCH,
    encode_texts,
    register_world_clip,
    sha256_file,
    world_clip_config,
    world_clip_tokenizer,
)
from brainbench.world.shapes import CATEGORY_NAMES
from brainbench.world.stimuli import generate_scene, render_scene, sample_scene, zero_shot_prompts

TRAIN_SEED = 7_000_001
EVAL_SEED = 7_000_002
IMAGE_SIZE = 64
# Channel statistics of world images (measured on 2,000 training scenes; they travel with the weights).
WORLD_MEAN = (0.5936, 0.6254, 0.5759)
WORLD_STD = (0.2504, 0.2519, 0.2434)


class SceneStream(IterableDataset):
    """An endless stream of (image tensor uint8 CHW, caption) from fresh world scenes."""

    def __init__(self, seed: int, image_size: int = IMAGE_SIZE) -> None:
        self.seed = seed
        self.image_size = image_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        index = worker
        while True:
            image, captions, _ = generate_scene(self.seed, index, self.image_size)
            rng = np.random.default_rng([self.seed, index, 1])
            yield torch.from_numpy(image).permute(2, 0, 1), captions[int(rng.integers(len(captions)))]
            index += n_workers


def normalise_images(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float, normalised with the world statistics."""
    mean = torch.tensor(WORLD_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(WORLD_STD).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


@torch.no_grad()
def evaluate_world_clip(
    model: open_clip.CLIP, n_pairs: int = 500, n_zero_shot: int = 1000
) -> dict[str, float]:
    """Held-out image->caption top-1 among ``n_pairs`` scenes and zero-shot category accuracy.

    Zero-shot uses single-object scenes and all world categories, with the prompts of
    :func:`brainbench.world.stimuli.zero_shot_prompts` averaged per category (chance = 1/57).
    """
    model.eval()
    images, captions = [], []
    for i in range(n_pairs):
        image, caps, _ = generate_scene(EVAL_SEED, i, IMAGE_SIZE)
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        captions.append(caps[0])
    image_emb = model.encode_image(normalise_images(torch.stack(images)), normalize=True)
    text_emb = encode_texts(model, captions)
    top1 = (image_emb @ text_emb.T).argmax(dim=1).eq(torch.arange(n_pairs)).float().mean().item()

    prompts = [p for name in CATEGORY_NAMES for p in zero_shot_prompts(name)]
    per_class = encode_texts(model, prompts).view(len(CATEGORY_NAMES), -1, text_emb.shape[1]).mean(dim=1)
    per_class = torch.nn.functional.normalize(per_class, dim=-1)
    zs_images, labels = [], []
    for i in range(n_zero_shot):
        rng = np.random.default_rng([EVAL_SEED, 10**6 + i])
        scene = sample_scene(rng, n_objects=1)
        zs_images.append(torch.from_numpy(render_scene(scene, IMAGE_SIZE, rng)).permute(2, 0, 1))
        labels.append(CATEGORY_NAMES.index(scene.objects[0].category))
    zs_emb = model.encode_image(normalise_images(torch.stack(zs_images)), normalize=True)
    zero_shot = (zs_emb @ per_class.T).argmax(dim=1).eq(torch.tensor(labels)).float().mean().item()
    return {
        f"image2caption_top1_{n_pairs}way": top1,
        f"zero_shot_top1_{len(CATEGORY_NAMES)}way": zero_shot,
        "chance_image2caption": 1.0 / n_pairs,
        "chance_zero_shot": 1.0 / len(CATEGORY_NAMES),
    }


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_world_clip(
    out: Path,
    steps: int = 700,
    batch_size: int = 256,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    seed: int = 0,
    log_every: int = 25,
) -> dict:
    """Trains the world CLIP, writes an open_clip local-dir to ``out``; resumable (``out/train_state.pt``).

    Returns:
        The card written to ``out/card.json``.
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    register_world_clip()
    model = open_clip.create_model(WORLD_CLIP_ARCH)
    tokenizer = world_clip_tokenizer()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )
    loss_fn = open_clip.ClipLoss()
    state_path = out / "train_state.pt"
    start, elapsed = 0, 0.0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["seconds"])
        print(f"resuming from step {start}")
    loader = DataLoader(
        SceneStream(TRAIN_SEED + start * batch_size),
        batch_size=batch_size,
        num_workers=1,
        prefetch_factor=4,
        persistent_workers=True,
    )
    model.train()
    t0 = time.time() - elapsed
    batches = iter(loader)
    for step in range(start, steps):
        images, captions = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        image_features, text_features, logit_scale = model(
            normalise_images(images), tokenizer(list(captions))
        )
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(
                f"step {step + 1}/{steps} loss {loss.item():.3f} scale {logit_scale.item():.1f} "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
        if (step + 1) % 100 == 0:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step + 1,
                    "seconds": time.time() - t0,
                },
                state_path,
            )
    train_seconds = time.time() - t0
    metrics = evaluate_world_clip(model)
    print(json.dumps(metrics, indent=2))
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    config = {
        "model_cfg": world_clip_config(),
        "preprocess_cfg": {
            "size": IMAGE_SIZE,
            "mean": list(WORLD_MEAN),
            "std": list(WORLD_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    card = {
        "arch": WORLD_CLIP_ARCH,
        "tag": out.name,
        "sha256": sha256_file(out / WEIGHTS_FILE),
        "n_params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "train_seconds": round(train_seconds, 1),
        "train_seed": TRAIN_SEED,
        "eval_seed": EVAL_SEED,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "command": TRAIN_COMMAND,
        "held_out": metrics,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2))
    state_path.unlink(missing_ok=True)
    return card
