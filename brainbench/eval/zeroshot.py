"""N-way zero-shot classification from a brain-predicted image embedding (the GOD protocol).

Each test sample's predicted CLIP image embedding is compared, by cosine, with the text embeddings of the
``C`` candidate class prompts (GOD: the 50 held-out test categories, never seen in training; datasets.md §3.2,
methods.md §0 "GOD (zero-shot)"); the sample is correct at top-k when its true class is among the ``k`` most
similar prompts. Chance is ``k / C``. Ties count as wrong (the true class must beat every other strictly),
as in the retrieval metrics.

The embedding is the pooled image embedding: a ``clip_image`` prediction, or token 0 of a ``clip_tokens``
prediction when the backbone pools by its class token (for open_clip ViTs with ``pool_type == "tok"`` the two
are the same vector, ``ln_post(x)[:, 0] @ proj``). The metric id names which was used
(``.clip_image`` or ``.clip_tokens_cls``), so the two never share a column.

Example:
    >>> pred = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    >>> classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> float(zero_shot_accuracy(pred, classes, torch.tensor([0, 1, 1])))
    0.6666666865348816
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from brainbench.eval.specs import MetricSpec


def zero_shot_accuracy(pred: Tensor, class_embeddings: Tensor, labels: Tensor, *, top_k: int = 1) -> Tensor:
    """Top-k accuracy of classifying ``pred`` rows among the classes by cosine similarity.

    Args:
        pred: ``(N, D)`` predicted image embeddings.
        class_embeddings: ``(C, D)`` text embeddings of the class prompts.
        labels: ``(N,)`` int64 true class indices into ``class_embeddings``.
        top_k: how many of the most similar classes count as a hit.

    Returns:
        0-d float32 accuracy in ``[0, 1]``.

    Raises:
        ValueError: on mismatched shapes, labels out of range, or ``top_k`` >= C.
    """
    if pred.ndim != 2 or class_embeddings.ndim != 2 or pred.shape[1] != class_embeddings.shape[1]:
        shapes = f"pred {tuple(pred.shape)}, classes {tuple(class_embeddings.shape)}"
        raise ValueError(f"{shapes}: expected (N, D) and (C, D)")
    n_classes = class_embeddings.shape[0]
    if labels.shape != (pred.shape[0],) or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be (N,) class indices in [0, {n_classes})")
    if not 1 <= top_k < n_classes:
        raise ValueError(f"top_k={top_k} must be in [1, {n_classes})")
    similarity = F.normalize(pred.double(), dim=-1) @ F.normalize(class_embeddings.double(), dim=-1).T
    own = similarity.gather(1, labels.view(-1, 1))
    beaten_by = (similarity >= own).sum(dim=1) - 1  # other classes at least as similar as the true one
    return (beaten_by < top_k).to(torch.float32).mean()


def zero_shot_spec(*, network: str, n_classes: int, top_k: int, prompt: str, split: str) -> MetricSpec:
    """The spec of one zero-shot column, ``zeroshot_top<k>_<C>way/<network>@v1``."""
    params = {"n_classes": n_classes, "top_k": top_k, "prompt": prompt, "split": split, "ties": "wrong"}
    description = (
        f"{n_classes}-way zero-shot top-{top_k}: cosine of the predicted image embedding with the text "
        f"embeddings of '{prompt}' for each held-out class"
    )
    return MetricSpec(f"zeroshot_top{top_k}_{n_classes}way", network, 1, True, params, description)


@dataclass(frozen=True)
class ZeroShotTask:
    """The candidate classes of a zero-shot evaluation and the true class of each test row.

    Attributes:
        class_embeddings: ``(C, D)`` text embeddings of the prompts, computed by the evaluation network.
        labels: ``(N,)`` true class index of each test row (rows in the predictions' order).
        prompt: the prompt template, e.g. ``"a photo of a {}."``.
        split: the split the rows come from.
        cls_token_is_pooled: whether token 0 of ``clip_tokens`` is the pooled image embedding (open_clip
            ``pool_type == "tok"``); if not, only a ``clip_image`` prediction is scored.
    """

    class_embeddings: Tensor
    labels: Tensor
    prompt: str
    split: str = "test"
    cls_token_is_pooled: bool = True


def pooled_prediction(predictions: Mapping[str, Tensor], task: ZeroShotTask) -> tuple[str, Tensor] | None:
    """The pooled image embedding among the predictions, named ``clip_image`` or ``clip_tokens_cls``."""
    if "clip_image" in predictions:
        return "clip_image", predictions["clip_image"]
    if "clip_tokens" in predictions and task.cls_token_is_pooled:
        return "clip_tokens_cls", predictions["clip_tokens"][:, 0]
    return None
