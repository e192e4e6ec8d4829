"""Training-step time of the world CLIP in fp32 and in bf16 autocast, interleaved in one process.

One step is ``train-clip``'s: forward of both towers on a batch of world images and captions, CLIP's loss,
backward, AdamW. The two precisions alternate round by round, so drifting machine load hits both alike;
report the ratio of medians.

Usage::

    python benchmarks/world_clip_step.py --batch-size 256 --threads 2 --rounds 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import open_clip
import torch

from brainbench.backbones.world_clip import WORLD_CLIP_DIR, create_world_clip, world_clip_tokenizer
from brainbench.world.stimuli import generate_scene
from brainbench.world.train_clip import normalise_images


def step_seconds(batch_size: int, rounds: int, steps_per_round: int = 3) -> dict[str, float]:
    """Median seconds per training step for each precision (after one warm-up step each)."""
    model = create_world_clip(WORLD_CLIP_DIR).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    loss_fn = open_clip.ClipLoss()
    scenes = [generate_scene(0, i, 64) for i in range(batch_size)]
    images = normalise_images(torch.stack([torch.from_numpy(s[0]).permute(2, 0, 1) for s in scenes]))
    text = world_clip_tokenizer()([s[1][0] for s in scenes])

    def one_step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            image, caption, scale = model(images, text)
            loss = loss_fn(image.float(), caption.float(), scale.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    one_step(False), one_step(True)
    for _ in range(rounds):
        for name in times:
            times[name] += [one_step(name == "bf16") for _ in range(steps_per_round)]
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    return {**medians, "fp32_over_bf16": round(medians["fp32"] / medians["bf16"], 2)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        json.dumps(
            {
                "batch_size": args.batch_size,
                "threads": args.threads,
                **step_seconds(args.batch_size, args.rounds),
            }
        )
    )
