"""Scoring a method's test predictions: everything the evaluator needs beyond the cached backbone targets.

The feature cache gives each test stimulus's image targets. The rest comes from the prepared dataset's
stimulus store and manifest, and is only computed when the dataset has it:

- the zero-shot candidate classes (``manifest.zero_shot``) as prompt embeddings, with each test row's class;
- the test stimuli's captions, as mean caption embeddings, for brain<->text retrieval;
- the ground-truth images and clips, when the method generated ``images`` or ``frames``; the ground-truth
  features of the reconstruction metrics are cached by stimulus in ``<prepared>/eval_features/``
  (:class:`~brainbench.eval.truth_features.TruthFeatureCache`), so later runs of the split reuse them.

The backbone's text tower is loaded only when prompts or captions exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brainbench.backbones.openclip import ImageBackbone, load_backbone
from brainbench.data.manifest import Manifest
from brainbench.data.stimulus_store import StimulusStore
from brainbench.errors import DataFormatError
from brainbench.eval.evaluator import EvalResult, evaluate
from brainbench.eval.reconstruction import score_outputs
from brainbench.eval.truth_features import TruthFeatureCache
from brainbench.metrics.text_retrieval import caption_embeddings
from brainbench.metrics.zeroshot import PROMPT_TEMPLATES, ZeroShotTask

TRUTH_FEATURES_DIR = "eval_features"


def evaluate_test_split(
    predictions: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    manifest: Manifest,
    prepared: Path,
    stim_ids: np.ndarray,
    backbone_id: str,
) -> tuple[EvalResult, dict[str, str]]:
    """Every metric the test split supports, and the columns that could not be computed here (with why).

    Args:
        predictions: name -> ``(N, ...)`` predictions, rows in ``stim_ids`` order.
        targets: name -> ``(N, ...)`` cached backbone targets of the same rows.
        manifest: the prepared dataset's manifest.
        prepared: its folder.
        stim_ids: ``(N,)`` test stimulus ids.
        backbone_id: the embedding space of the targets (also the text tower used).
    """
    captions = stimulus_captions(manifest, prepared, stim_ids)
    text_backbone = load_backbone(backbone_id) if manifest.zero_shot or captions else None
    zero_shot = None
    if manifest.zero_shot and text_backbone is not None:
        zero_shot = zero_shot_task(manifest, prepared, stim_ids, text_backbone)
    result = evaluate(
        predictions,
        targets,
        network=backbone_id,
        pool=min(300, len(stim_ids)),
        zero_shot=zero_shot,
        caption_targets=caption_targets(captions, text_backbone) if captions and text_backbone else None,
        cls_token_is_pooled=text_backbone.cls_token_is_pooled if text_backbone else True,
    )
    absent = _score_generated(result, predictions, manifest, prepared, stim_ids)
    return result, absent


def _score_generated(
    result: EvalResult,
    predictions: dict[str, torch.Tensor],
    manifest: Manifest,
    prepared: Path,
    stim_ids: np.ndarray,
) -> dict[str, str]:
    """Adds the reconstruction/video columns when the method generated ``images`` or ``frames``.

    Returns:
        The columns that could not be computed here (a network's weights are absent), with the reason.
    """
    if not {"images", "frames"} & set(predictions):
        return {}
    with StimulusStore(prepared / manifest.stimulus_store["path"]) as store:
        truth = {"images": torch.from_numpy(store.images(stim_ids))}
        if "frames" in predictions:
            truth["frames"] = torch.from_numpy(store.frames(stim_ids))
    cache = TruthFeatureCache(prepared / TRUTH_FEATURES_DIR, str(manifest.stimulus_store.get("sha256", "")))
    scores = score_outputs(predictions, truth, stim_ids=stim_ids, cache=cache)
    result.merge(scores)
    return scores.absent


def stimulus_captions(manifest: Manifest, prepared: Path, stim_ids: np.ndarray) -> list[list[str]] | None:
    """Every test stimulus's captions, or ``None`` when some stimulus has none (no text retrieval then)."""
    with StimulusStore(prepared / manifest.stimulus_store["path"]) as store:
        captions = [store.captions(int(s)) for s in stim_ids]
    return captions if captions and all(captions) else None


def caption_targets(captions: list[list[str]], backbone: ImageBackbone) -> torch.Tensor:
    """Mean caption embedding per test stimulus (rows follow ``captions``)."""
    owners = torch.repeat_interleave(torch.arange(len(captions)), torch.tensor([len(c) for c in captions]))
    text = backbone.encode_text([c for caps in captions for c in caps])
    return caption_embeddings(text, owners, len(captions))


def zero_shot_task(
    manifest: Manifest, prepared: Path, stim_ids: np.ndarray, backbone: ImageBackbone
) -> ZeroShotTask:
    """The manifest's candidate classes as prompt embeddings, and each test row's true class.

    Raises:
        DataFormatError: a test stimulus whose category is not among the candidates.
    """
    spec = manifest.zero_shot or {}
    names: list[str] = list(spec["names"])
    prompt = str(spec.get("prompt", "a photo of a {}."))
    store_path = prepared / manifest.stimulus_store["path"]
    with StimulusStore(store_path) as store:
        categories = [store.categories(int(s)) for s in stim_ids]
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({c[0] if c else "<none>" for c in categories if not c or c[0] not in index})
    if unknown:
        raise DataFormatError(
            store_path,
            f"test stimuli of categories {unknown[:5]} are not zero-shot candidates {names[:5]}...",
            "re-run `brainbench prepare` so the store and manifest.zero_shot agree",
        )
    embeddings = backbone.encode_text([prompt.format(name) for name in names]).float()
    samples = backbone.encode_text([t.format(name) for name in names for t in PROMPT_TEMPLATES]).float()
    labels = torch.tensor([index[c[0]] for c in categories], dtype=torch.int64)
    return ZeroShotTask(
        embeddings,
        labels,
        prompt,
        str(spec.get("split", "test")),
        backbone.cls_token_is_pooled,
        class_samples=samples,
        sample_labels=torch.arange(len(names)).repeat_interleave(len(PROMPT_TEMPLATES)),
    )
