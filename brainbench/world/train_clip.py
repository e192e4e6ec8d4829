"""Trains a world CLIP on world scenes: CLIP's objective (Radford et al. 2021) or MLIP's (Zhang et al. 2024).

``--objective clip`` is the symmetric InfoNCE of v1; ``--objective mlip`` adds MLIP's parts (arXiv 2406.01460,
:mod:`brainbench.backbones.mlip` and :mod:`brainbench.backbones.mlip_loss`): a frequency stage, token-level
alignment in both domains and frequency/spatial-guided token merging (``--merge-rate``), each switchable.

Data: without ``--pool-pairs`` every step renders fresh scenes in a loader worker (v1's stream, seed
``TRAIN_SEED``); with it, a fixed cached pool (:mod:`brainbench.world.clip_pairs`, same seed) of which
``--data-fraction`` is used, optionally in category-contrast groups (``--group-size``). Neither touches the
seeds of the subjects' stimuli or of the held-out evaluation (``EVAL_SEED``).

The shipped folders and the commands that made them::

    brainbench world train-clip --out brainbench/world/assets/world-clip-v1 --steps 700

(v2 and v2-mlip: see their ``card.json``.) The output folder is an open_clip ``local-dir``:
``open_clip_config.json``, ``open_clip_model.safetensors`` (float16), ``card.json`` (sha256, command,
held-out metrics) and, for MLIP with a frequency stage, ``mlip_frequency.safetensors``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from brainbench.backbones.mlip import MLIPConfig, MLIPModel, encode_image_mlip
from brainbench.backbones.mlip_loss import mlip_loss
from brainbench.backbones.world_clip import (
    TRAIN_COMMAND,
    WEIGHTS_FILE,
    WORLD_CLIP_ARCH,
    create_world_clip,
    encode_texts,
    register_world_clip,
    sha256_file,
    verified_weights,
    world_clip_config,
    world_clip_tokenizer,
)
from brainbench.world.clip_pairs import PairPool, load_pair_pool
from brainbench.world.shapes import CATEGORY_NAMES
from brainbench.world.stimuli import generate_scene, render_scene, sample_scene, zero_shot_prompts

TRAIN_SEED = 7_000_001
EVAL_SEED = 7_000_002
IMAGE_SIZE = 64
# Channel statistics of world images (measured on 2,000 training scenes; they travel with the weights).
WORLD_MEAN = (0.5936, 0.6254, 0.5759)
WORLD_STD = (0.2504, 0.2519, 0.2434)
FREQUENCY_FILE = "mlip_frequency.safetensors"


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
    model: open_clip.CLIP, n_pairs: int = 500, n_zero_shot: int = 1000, mlip: MLIPConfig | None = None
) -> dict[str, float]:
    """Held-out image<->caption top-1 among ``n_pairs`` scenes and zero-shot category accuracy.

    Zero-shot uses single-object scenes and all world categories, with the prompts of
    :func:`brainbench.world.stimuli.zero_shot_prompts` averaged per category (chance = 1/57). With an
    ``mlip`` config whose ``merge_rate`` is above 0, images are encoded with token merging at that rate.
    The same function scores v1, v2 and every ablation.
    """
    model.eval()

    def encode(images_uint8: torch.Tensor) -> torch.Tensor:
        x = normalise_images(images_uint8)
        if mlip is not None and mlip.merge_rate > 0:
            return torch.nn.functional.normalize(encode_image_mlip(model.visual, x, mlip)[0], dim=-1)
        return model.encode_image(x, normalize=True)

    images, captions = [], []
    for i in range(n_pairs):
        image, caps, _ = generate_scene(EVAL_SEED, i, IMAGE_SIZE)
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        captions.append(caps[0])
    t0 = time.perf_counter()
    image_emb = torch.cat([encode(chunk) for chunk in torch.stack(images).split(250)])
    image_ms = 1000 * (time.perf_counter() - t0) / n_pairs
    text_emb = encode_texts(model, captions)
    sim = image_emb @ text_emb.T
    top1 = sim.argmax(dim=1).eq(torch.arange(n_pairs)).float().mean().item()
    text_top1 = sim.argmax(dim=0).eq(torch.arange(n_pairs)).float().mean().item()

    prompts = [p for name in CATEGORY_NAMES for p in zero_shot_prompts(name)]
    per_class = encode_texts(model, prompts).view(len(CATEGORY_NAMES), -1, text_emb.shape[1]).mean(dim=1)
    per_class = torch.nn.functional.normalize(per_class, dim=-1)
    zs_images, labels = [], []
    for i in range(n_zero_shot):
        rng = np.random.default_rng([EVAL_SEED, 10**6 + i])
        scene = sample_scene(rng, n_objects=1)
        zs_images.append(torch.from_numpy(render_scene(scene, IMAGE_SIZE, rng)).permute(2, 0, 1))
        labels.append(CATEGORY_NAMES.index(scene.objects[0].category))
    zs_emb = torch.cat([encode(chunk) for chunk in torch.stack(zs_images).split(250)])
    zero_shot = (zs_emb @ per_class.T).argmax(dim=1).eq(torch.tensor(labels)).float().mean().item()
    return {
        f"image2caption_top1_{n_pairs}way": top1,
        f"caption2image_top1_{n_pairs}way": text_top1,
        f"zero_shot_top1_{len(CATEGORY_NAMES)}way": zero_shot,
        "inference_ms_per_image": round(image_ms, 3),
        "chance_image2caption": 1.0 / n_pairs,
        "chance_zero_shot": 1.0 / len(CATEGORY_NAMES),
    }


def _lr_at(step: int, progress: float, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay over ``progress`` in [0, 1]."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    params = list(model.named_parameters())
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.98),
    )


class _Batches:
    """Training batches: v1's fresh-scene stream, or draws from a fixed pair pool."""

    def __init__(self, pool: PairPool | None, batch_size: int, seed: int, start: int) -> None:
        self.pool, self.batch_size, self.seed, self.step = pool, batch_size, seed, start
        if pool is None:
            loader = DataLoader(
                SceneStream(TRAIN_SEED + start * batch_size),
                batch_size=batch_size,
                num_workers=1,
                prefetch_factor=4,
                persistent_workers=True,
            )
            self.stream = iter(loader)

    def next(self) -> tuple[torch.Tensor, list[str]]:
        self.step += 1
        if self.pool is None:
            images, captions = next(self.stream)
            return images, list(captions)
        return self.pool.batch(np.random.default_rng([self.seed, self.step]), self.batch_size)


def train_world_clip(
    out: Path,
    steps: int = 700,
    batch_size: int = 256,
    lr: float = 1e-3,
    warmup: int = 100,
    weight_decay: float = 0.1,
    seed: int = 0,
    log_every: int = 25,
    objective: str = "clip",
    mlip: MLIPConfig | None = None,
    init: Path | None = None,
    pool_pairs: int = 0,
    group_size: int = 1,
    data_fraction: float = 1.0,
    minutes: float | None = None,
    eval_pairs: int = 500,
    eval_zero_shot: int = 1000,
    cache_dir: Path | None = None,
    precision: str = "fp32",
    checkpoint_every: int = 100,
    command: str = TRAIN_COMMAND,
) -> dict:
    """Trains a world CLIP, writes an open_clip local-dir to ``out``; resumable (``out/train_state.pt``).

    Args:
        out: output folder.
        steps: optimiser steps (an upper bound when ``minutes`` is given).
        batch_size: pairs per step.
        lr: AdamW peak learning rate (warm-up, then cosine over ``steps`` or over ``minutes``).
        warmup: warm-up steps.
        weight_decay: AdamW weight decay of the matrices.
        seed: seed of the initialisation and of the batch draws.
        log_every: steps between log lines.
        objective: ``"clip"`` (v1's loss) or ``"mlip"`` (:func:`brainbench.backbones.mlip_loss.mlip_loss`).
        mlip: the MLIP parts (used with ``objective="mlip"``; defaults to :class:`MLIPConfig`).
        init: a trained world CLIP folder to start the image and text towers from (sha256-checked).
        pool_pairs: size of the fixed pair pool; 0 renders fresh scenes every step (v1).
        group_size: category-contrast group size of the pool (1 = independent scenes).
        data_fraction: fraction of the pool's groups used (25 / 50 / 100 % ablations).
        minutes: wall-clock training budget (equal-budget ablations); the schedule follows elapsed time.
        eval_pairs: held-out pairs of the retrieval evaluation.
        eval_zero_shot: held-out single-object scenes of the zero-shot evaluation.
        cache_dir: where the pair pool is cached (``$BRAINBENCH_HOME/cache/world-clip-pairs`` by default).
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the forward pass; weights and optimiser stay fp32).
        checkpoint_every: steps between resumable checkpoints (``out/train_state.pt``).
        command: the command line recorded in the card.

    Returns:
        The card written to ``out/card.json``.
    """
    if objective not in ("clip", "mlip"):
        raise ValueError(f"objective must be 'clip' or 'mlip'; got {objective!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")
    if pool_pairs <= 0 and (group_size != 1 or data_fraction != 1.0):
        raise ValueError("--group-size and --data-fraction need a pair pool (--pool-pairs N)")
    cfg = (mlip or MLIPConfig()) if objective == "mlip" else None
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    register_world_clip()
    clip = open_clip.create_model(WORLD_CLIP_ARCH)
    if init is not None:
        clip.load_state_dict(create_world_clip(init).state_dict())
    model: torch.nn.Module = MLIPModel(clip, cfg) if cfg is not None else clip
    tokenizer = world_clip_tokenizer()
    optimizer = _optimizer(model, lr, weight_decay)
    loss_fn = open_clip.ClipLoss()
    pool = None
    if pool_pairs > 0:
        if cache_dir is None:
            from brainbench.data.preparation import default_home

            cache_dir = default_home() / "cache" / "world-clip-pairs"
        t_pool = time.time()
        pool = load_pair_pool(cache_dir, TRAIN_SEED, pool_pairs, group_size, IMAGE_SIZE).subset(data_fraction)
        print(f"pair pool: {len(pool.captions)} pairs ({time.time() - t_pool:.0f}s)", flush=True)
    state_path = out / "train_state.pt"
    start, elapsed = 0, 0.0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["seconds"])
        print(f"resuming from step {start}")
    batches = _Batches(pool, batch_size, seed, start)
    model.train()
    t0 = time.time() - elapsed
    step_seconds: list[float] = []
    budget = None if minutes is None else 60.0 * minutes
    step = start
    while step < steps and (budget is None or time.time() - t0 < budget):
        images, captions = batches.next()
        t_step = time.perf_counter()
        if budget:
            progress = (time.time() - t0) / budget
        else:
            progress = (step - warmup) / max(1, steps - warmup)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, progress, lr, warmup)
        text = tokenizer(captions)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if cfg is None:
                image_features, text_features, logit_scale = model(normalise_images(images), text)
                terms = {"loss": loss_fn(image_features.float(), text_features.float(), logit_scale.float())}
            else:
                terms = mlip_loss(model(normalise_images(images), text), cfg)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        step += 1
        step_seconds.append(time.perf_counter() - t_step)
        if step % log_every == 0 or step == steps:
            detail = " ".join(f"{k} {v.item():.3f}" for k, v in terms.items())
            print(
                f"step {step}/{steps} {detail} scale {clip.logit_scale.exp().item():.1f} "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
        if step % checkpoint_every == 0:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "seconds": time.time() - t0,
                },
                state_path,
            )
    train_seconds = time.time() - t0
    clip.eval()
    metrics = evaluate_world_clip(clip, eval_pairs, eval_zero_shot, cfg)
    print(json.dumps(metrics, indent=2))
    card = _save(out, clip, model, cfg, metrics)
    card.update(
        objective=objective,
        mlip=None if cfg is None else dataclasses.asdict(cfg),
        init=None if init is None else str(init),
        steps=step,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        pool_pairs=pool_pairs,
        pool_pairs_used=0 if pool is None else len(pool.captions),
        group_size=group_size,
        data_fraction=data_fraction,
        minutes=minutes,
        precision=precision,
        train_seconds=round(train_seconds, 1),
        train_step_seconds_median=round(float(np.median(step_seconds)), 4) if step_seconds else None,
        train_seed=TRAIN_SEED,
        eval_seed=EVAL_SEED,
        torch=torch.__version__,
        open_clip=open_clip.__version__,
        threads=torch.get_num_threads(),
        command=command,
    )
    (out / "card.json").write_text(json.dumps(card, indent=2))
    state_path.unlink(missing_ok=True)
    return card


def _save(
    out: Path, clip: open_clip.CLIP, model: torch.nn.Module, cfg: MLIPConfig | None, metrics: dict
) -> dict:
    """Writes the open_clip local-dir (and the frequency stage beside it); returns the card's first fields."""
    save_file({k: v.detach().half().contiguous() for k, v in clip.state_dict().items()}, out / WEIGHTS_FILE)
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
        "n_params": sum(p.numel() for p in clip.parameters()),
        "held_out": metrics,
    }
    frequency = getattr(model, "frequency", None)
    if frequency is not None:
        path = out / FREQUENCY_FILE
        save_file({k: v.detach().half().contiguous() for k, v in frequency.state_dict().items()}, path)
        card["frequency_sha256"] = sha256_file(path)
        card["frequency_n_params"] = sum(p.numel() for p in frequency.parameters())
    return card


def load_frequency_stage(folder: Path, model: MLIPModel) -> None:
    """Loads ``folder``'s frequency stage into ``model`` (safetensors; sha256 checked against the card)."""
    path = folder / FREQUENCY_FILE
    card = json.loads((folder / "card.json").read_text())
    verified_weights(path, card.get("frequency_sha256"), card.get("command", TRAIN_COMMAND))
    model.frequency.load_state_dict({k: v.float() for k, v in load_file(path).items()})
