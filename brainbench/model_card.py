"""What a saved model needs to be used again: its card (``README.md``) and ``inference.json``.

``bench`` writes both beside ``decoder.safetensors``/``decoder.json`` in ``runs/<id>/model``. The card follows
the Hugging Face model-card layout (YAML front matter, then prose); ``inference.json`` is what
``brainbench predict`` reads: the backbone whose space the predictions live in, the target shapes, and the
voxel selection, order and normalisation the decoder was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from brainbench.data.manifest import Manifest

CARD_FILE = "README.md"
INFERENCE_FILE = "inference.json"


def inference_record(
    manifest: Manifest,
    backbone: str,
    target_shapes: dict[str, tuple[int, ...]],
    generator: str,
    generator_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a decoder reads, the space of its outputs, and the generator section it was scored with."""
    return {
        "backbone": backbone,
        "targets": {name: list(shape) for name, shape in target_shapes.items()},
        "generator": generator,
        "generator_spec": generator_spec,
        "dataset": manifest.dataset,
        "dataset_version": manifest.dataset_version,
        "subject": manifest.subject,
        "n_voxels": manifest.n_voxels,
        "voxel_order": manifest.voxel_order,
        "voxel_ijk": manifest.voxel_ijk,
        "rois": {name: len(indices) for name, indices in manifest.rois.items()},
        "normalisation": manifest.normalisation,
    }


def write_model_card(
    directory: Path,
    *,
    row: dict[str, Any],
    paper: str,
    fidelity: str,
    config: dict[str, Any],
    inference: dict[str, Any],
) -> None:
    """Writes ``README.md`` (the card) and ``inference.json`` into the saved model's folder."""
    (directory / INFERENCE_FILE).write_text(json.dumps(inference, indent=2) + "\n")
    metrics = {k: v for k, v in row.items() if "@" in k and v not in (None, "")}
    front = {
        "library_name": "brainbench",
        "tags": ["fmri", "brain-decoding", str(row["method"])],
        "datasets": [str(row["dataset"])],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        f"# {row['method']} v{row['method_version']} on {row['dataset']} {row['subject']}",
        "",
        f"**Paper.** {paper}",
        "",
        f"**Fidelity.** {fidelity}",
        "",
        "| | |",
        "|---|---|",
        f"| run | `{row['run_id']}` ({row['time_utc']}) |",
        f"| dataset | {row['dataset']} `{row['dataset_version']}`, split `{row['split']}` |",
        f"| subject | {row['subject']} ({inference['n_voxels']} voxels, {inference['voxel_order']}) |",
        f"| backbone | `{inference['backbone']}` (targets {inference['targets']}) |",
        f"| generator | {inference['generator'] or 'none'} |",
        f"| seed, training | {row['seed']}, {row['train_seconds']} s, {row['n_params']:,} parameters |",
        f"| code | brainbench git `{row['git_sha']}`; {row['package_versions']} |",
        "",
        "## Use",
        "",
        "```bash",
        "brainbench predict --model <this folder> --prepared <prepared folder> --out predictions.safetensors",
        "brainbench predict --model <this folder> --voxels voxels.npy --out predictions.safetensors",
        "```",
        "",
        "Voxels must be selected, ordered and normalised as in training (`inference.json`: "
        f"{json.dumps(inference['normalisation'])}).",
        "",
        "## Scores (test split, brainbench's evaluator)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| `{k}` | {float(v):.4f} |" for k, v in sorted(metrics.items())),
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump({k: v for k, v in config.items() if k != "path"}, sort_keys=False).strip(),
        "```",
        "",
    ]
    (directory / CARD_FILE).write_text("\n".join(lines))
