"""What a perfect decoder would score: each backbone's own test-image embeddings submitted as predictions.

A decoder's semantic metrics (zero-shot category top-1, brain->caption retrieval) are capped by how well
the target space itself knows the categories. This script writes, for each backbone, the true embeddings
of a prepared folder's test images (from the backbone's feature cache, rows in test-split order) and scores
them with the evaluator that ``bench`` and ``brainbench evaluate`` use, into a scratch leaderboard folder
(no row reaches the committed leaderboards). Compare a decoder's row with the ceiling of its backbone.

Usage::

    python benchmarks/decoding_ceiling.py --prepared ~/.cache/brainbench/prepared/world-god-v2-small/subj01 \
        --backbones world-clip:v1 world-clip:v2 world-clip:v2-mlip
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.submission import evaluate_predictions, scored_stim_ids

TARGETS = ("clip_image", "clip_tokens")


def ceiling(prepared: Path, backbone: str, scratch: Path) -> dict[str, float]:
    """The metrics of ``backbone``'s true test-image embeddings on ``prepared`` (its perfect decoder)."""
    data = FMRIDataModule(prepared, backbone=backbone, targets=TARGETS)
    data.prepare_data(progress=False)
    data.setup()
    stim_ids = scored_stim_ids(prepared, Manifest.load(prepared))
    assert data.cache is not None
    true = data.cache.lookup(stim_ids)
    path = scratch / f"{backbone.replace(':', '_')}.safetensors"
    save_file({name: true[name].contiguous() for name in TARGETS}, path)
    _, result = evaluate_predictions(
        prepared, path, method="ceiling", backbone=backbone, leaderboards=scratch, progress=False
    )
    return {key: round(float(value), 4) for key, value in result.values.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="a prepared subject folder")
    parser.add_argument("--backbones", nargs="+", default=["world-clip:v1", "world-clip:v2"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for backbone in args.backbones:
            print(
                json.dumps(
                    {"backbone": backbone, **ceiling(args.prepared, backbone, Path(scratch))}, indent=2
                )
            )
