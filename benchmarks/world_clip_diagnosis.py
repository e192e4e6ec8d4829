"""Why does a world CLIP recognise categories poorly? A measured look at trained folders, side by side.

For each folder it first runs the training's own held-out evaluation
(:func:`brainbench.world.train_clip.evaluate_world_clip`: 500-way image<->caption top-1, 57-way zero-shot),
so v1 and v2 are scored by the same code in the same run. Then, on that evaluation's single-object
zero-shot scenes, it reports: zero-shot top-1 per object size, texture and colour; with other prompt sets
(bare name, caption templates ensembled over the ten colours); and a linear probe (multinomial logistic
regression on frozen image embeddings, 3,000 training scenes of another seed), which separates "the image
tower does not see the shape" from "the text side does not name it". On the text side it reports how much a
caption's embedding moves when one attribute changes (mean cosine of caption pairs that differ only in the
category, the colour, the size, the texture or the position: near 1 means the text tower ignores that word).

Usage::

    python benchmarks/world_clip_diagnosis.py --weights brainbench/world/assets/world-clip-v1 \
        brainbench/world/assets/world-clip-v2 brainbench/world/assets/world-clip-v2-mlip
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from brainbench.backbones.world_clip import WORLD_CLIP_DIR, create_world_clip, encode_texts
from brainbench.world.shapes import CATEGORY_NAMES
from brainbench.world.stimuli import (
    COLOURS,
    POSITIONS,
    SIZES,
    TEXTURES,
    render_scene,
    sample_scene,
    zero_shot_prompts,
)
from brainbench.world.train_clip import EVAL_SEED, IMAGE_SIZE, evaluate_world_clip, normalise_images

PROBE_SEED = 7_000_003


def _single_object_scenes(seed: int, n: int, offset: int) -> tuple[torch.Tensor, list]:
    images, scenes = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, offset + i])
        scene = sample_scene(rng, n_objects=1)
        images.append(torch.from_numpy(render_scene(scene, IMAGE_SIZE, rng)).permute(2, 0, 1))
        scenes.append(scene)
    return torch.stack(images), scenes


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _text_sensitivity(model: torch.nn.Module, n_pairs: int = 200) -> dict[str, float]:
    """Mean cosine of caption pairs ``"a {size} {colour} {texture} {category} at the {position}"`` that
    differ in one attribute only (lower = the text tower tells that attribute apart)."""
    rng = np.random.default_rng(PROBE_SEED)
    values = {
        "category": CATEGORY_NAMES,
        "colour": list(COLOURS),
        "size": list(SIZES),
        "texture": [t for t in TEXTURES if t != "solid"],
        "position": [p for p in POSITIONS if p != "center"],
    }

    def caption(a: dict[str, str]) -> str:
        return f"a {a['size']} {a['colour']} {a['texture']} {a['category']} at the {a['position']}"

    out = {}
    for attr, choices in values.items():
        left, right = [], []
        for _ in range(n_pairs):
            base = {k: str(rng.choice(v)) for k, v in values.items()}
            other = dict(base, **{attr: str(rng.choice([c for c in choices if c != base[attr]]))})
            left.append(caption(base))
            right.append(caption(other))
        out[attr] = round((encode_texts(model, left) * encode_texts(model, right)).sum(1).mean().item(), 3)
    return out


@torch.no_grad()
def diagnose(weights: Path, n_eval: int = 1000, n_probe: int = 3000) -> dict:
    """Zero-shot breakdowns and a linear probe for the world CLIP in ``weights``."""
    model = create_world_clip(weights)
    held_out = evaluate_world_clip(model)
    images, scenes = _single_object_scenes(EVAL_SEED, n_eval, 10**6)  # the evaluation's own scenes
    labels = torch.tensor([CATEGORY_NAMES.index(s.objects[0].category) for s in scenes])
    image_emb = model.encode_image(normalise_images(images), normalize=True)

    def zero_shot(prompt_fn) -> torch.Tensor:
        prompts = [prompt_fn(name) for name in CATEGORY_NAMES]
        per = len(prompts[0])
        text = encode_texts(model, [p for group in prompts for p in group])
        text = torch.nn.functional.normalize(text.view(len(CATEGORY_NAMES), per, -1).mean(1), dim=-1)
        return (image_emb @ text.T).argmax(1).eq(labels).float()

    shipped = zero_shot(zero_shot_prompts)
    report: dict = {"weights": str(weights), "held_out": held_out}
    report["zero_shot_shipped_prompts"] = shipped.mean().item()
    for attr in ("size", "texture", "colour"):
        values = sorted({getattr(s.objects[0], attr) for s in scenes})
        report[f"by_{attr}"] = {
            v: round(shipped[[getattr(s.objects[0], attr) == v for s in scenes]].mean().item(), 3)
            for v in values
        }
    report["zero_shot_bare_name"] = zero_shot(lambda c: [c]).mean().item()
    report["zero_shot_colour_ensemble"] = (
        zero_shot(lambda c: [f"{_article(col)} {col} {c}" for col in COLOURS]).mean().item()
    )
    report["zero_shot_detail_ensemble"] = (
        zero_shot(
            lambda c: (
                [f"a large {col} {c} in the center" for col in COLOURS]
                + [f"a picture of {_article(c)} {c}", f"one object: {_article(c)} {c}"]
            )
        )
        .mean()
        .item()
    )
    probe_images, probe_scenes = _single_object_scenes(PROBE_SEED, n_probe, 0)
    probe_labels = torch.tensor([CATEGORY_NAMES.index(s.objects[0].category) for s in probe_scenes])
    probe_emb = model.encode_image(normalise_images(probe_images), normalize=True)
    report["linear_probe_top1"] = _linear_probe(probe_emb, probe_labels, image_emb, labels)
    report["text_cosine_when_only_this_changes"] = _text_sensitivity(model)
    report["chance"] = 1 / len(CATEGORY_NAMES)
    return report


def _linear_probe(x_train, y_train, x_test, y_test, epochs: int = 300) -> float:
    with torch.enable_grad():
        torch.manual_seed(0)
        head = torch.nn.Linear(x_train.shape[1], len(CATEGORY_NAMES))
        opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
        for _ in range(epochs):
            loss = torch.nn.functional.cross_entropy(head(x_train * 10), y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head(x_test * 10).argmax(1).eq(y_test).float().mean().item()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, nargs="+", default=[WORLD_CLIP_DIR])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for folder in args.weights:
        print(json.dumps(diagnose(folder), indent=2), flush=True)
