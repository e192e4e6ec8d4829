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

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.base import SpecMetric, check_round_trip
from brainbench.metrics.specs import MetricSpec, parse_metric_id

PROMPT_TEMPLATES = (  # the class samples of the SVC variant: five prompts per class
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a drawing of a {}.",
    "a {} in the scene.",
)


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
    return zero_shot_hits(pred, class_embeddings, labels, top_k=top_k).to(torch.float32).mean()


def zero_shot_hits(pred: Tensor, class_embeddings: Tensor, labels: Tensor, *, top_k: int = 1) -> Tensor:
    """``(N,)`` bool: whether each row's true class is among its ``top_k`` most similar (ties count as wrong).

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
    return beaten_by < top_k


def zero_shot_spec(*, network: str, n_classes: int, top_k: int, prompt: str, split: str) -> MetricSpec:
    """The spec of one zero-shot column, ``zeroshot_top<k>_<C>way/<network>@v1``."""
    params = {"n_classes": n_classes, "top_k": top_k, "prompt": prompt, "split": split, "ties": "wrong"}
    description = (
        f"{n_classes}-way zero-shot top-{top_k}: cosine of the predicted image embedding with the text "
        f"embeddings of '{prompt}' for each held-out class"
    )
    return MetricSpec(f"zeroshot_top{top_k}_{n_classes}way", network, 1, True, params, description)


def svc_zero_shot_spec(
    *, network: str, n_classes: int, top_k: int, split: str, gamma: float | str
) -> MetricSpec:
    """The spec of one BraVL-style SVC zero-shot column, ``zeroshot_svc_top<k>_<C>way/<network>@v1``."""
    params = {
        "n_classes": n_classes,
        "top_k": top_k,
        "split": split,
        "classifier": f"SVC(rbf, gamma={gamma}, C=1.0); top-k > 1 ranks Platt-scaled probabilities",
        "class_samples": list(PROMPT_TEMPLATES),
    }
    description = (
        f"{n_classes}-way zero-shot top-{top_k} (BraVL protocol): an SVC fitted on "
        f"{len(PROMPT_TEMPLATES)} prompt embeddings per held-out class classifies the predicted embedding"
    )
    return MetricSpec(f"zeroshot_svc_top{top_k}_{n_classes}way", network, 1, True, params, description)


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
        class_samples: ``(S, D)`` several embeddings per class (one per :data:`PROMPT_TEMPLATES` entry) for
            the SVC variant, or ``None`` to skip it.
        sample_labels: ``(S,)`` class index of each sample.
    """

    class_embeddings: Tensor
    labels: Tensor
    prompt: str
    split: str = "test"
    cls_token_is_pooled: bool = True
    class_samples: Tensor | None = None
    sample_labels: Tensor | None = None


def pooled_prediction(
    predictions: Mapping[str, Tensor], cls_token_is_pooled: bool
) -> tuple[str, Tensor] | None:
    """The pooled image embedding among the predictions, named ``clip_image`` or ``clip_tokens_cls``."""
    if "clip_image" in predictions:
        return "clip_image", predictions["clip_image"]
    if "clip_tokens" in predictions and cls_token_is_pooled:
        return "clip_tokens_cls", predictions["clip_tokens"][:, 0]
    return None


def svc_zero_shot_accuracy(
    pred: Tensor,
    class_samples: Tensor,
    sample_labels: Tensor,
    labels: Tensor,
    *,
    top_k: int = 1,
    gamma: float | str = "scale",
    c: float = 1.0,
) -> Tensor:
    """BraVL's zero-shot protocol: an SVC fitted on class embeddings, then applied to the brain predictions.

    BraVL (``run_epochs_trimodal.py::run_classification_test``, metrics.md §2.2) encodes each unseen class 5
    times (stochastic passes of its VAE) and fits ``sklearn.svm.SVC(gamma=1e-5, C=1.0, probability=True)``;
    top-1 is ``clf.score`` and top-5 ``top_k_accuracy_score`` on ``predict_proba``. Here the 5 samples per
    class are the text embeddings of 5 prompt templates (:data:`PROMPT_TEMPLATES`), L2-normalised. BraVL's
    ``gamma=1e-5`` suits its latent scale; on unit vectors it makes the RBF kernel constant, so the default
    here is sklearn's ``"scale"``; the value used is recorded in the metric's params.

    Args:
        pred: ``(N, D)`` predicted image embeddings.
        class_samples: ``(S, D)`` embeddings of the class samples (several per class).
        sample_labels: ``(S,)`` class index of each sample.
        labels: ``(N,)`` true class of each prediction.
        top_k: 1 uses the SVC's decision (``clf.score``), k > 1 its Platt-scaled probability ranking.
        gamma: RBF kernel coefficient (BraVL: 1e-5 on its own latents; default sklearn's ``"scale"``).
        c: SVC regularisation (BraVL: 1.0).

    Returns:
        0-d float64 accuracy.
    """
    classifier = fit_svc(class_samples, sample_labels, top_k=top_k, gamma=gamma, c=c)
    hits = svc_hits(classifier, pred, labels, top_k=top_k)
    return torch.tensor(hits / len(labels), dtype=torch.float64)


def fit_svc(
    class_samples: Tensor,
    sample_labels: Tensor,
    *,
    top_k: int = 1,
    gamma: float | str = "scale",
    c: float = 1.0,
) -> object:
    """BraVL's SVC on the L2-normalised class samples; Platt-calibrated when ``top_k > 1``."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    x = F.normalize(class_samples.double(), dim=-1).numpy()
    if top_k == 1:
        return SVC(gamma=gamma, C=c).fit(x, sample_labels.numpy())
    # Platt-scaled probabilities, as SVC(probability=True) gave before scikit-learn 1.9 deprecated it.
    return CalibratedClassifierCV(SVC(gamma=gamma, C=c), ensemble=False).fit(x, sample_labels.numpy())


def svc_hits(classifier: object, pred: Tensor, labels: Tensor, *, top_k: int = 1) -> int:
    """How many rows the fitted classifier gets right (top-1 decision, or true class in the top-k)."""
    from sklearn.metrics import top_k_accuracy_score

    queries = F.normalize(pred.double(), dim=-1).numpy()
    if top_k == 1:
        return int((classifier.predict(queries) == labels.numpy()).sum())  # type: ignore[attr-defined]
    probabilities = classifier.predict_proba(queries)  # type: ignore[attr-defined]
    classes = classifier.classes_  # type: ignore[attr-defined]
    return int(top_k_accuracy_score(labels.numpy(), probabilities, k=top_k, labels=classes, normalize=False))


_NAME_RE = re.compile(r"^zeroshot(?P<svc>_svc)?_top(?P<k>[0-9]+)_(?P<c>[0-9]+)way$")


def _task_from(metric_id: str, context: Mapping[str, object]) -> tuple[ZeroShotTask, int, bool, str]:
    name, network, _ = parse_metric_id(metric_id)
    match = _NAME_RE.match(name)
    task = context.get("task")
    if match is None or not isinstance(task, ZeroShotTask):
        raise ConfigError(f"{metric_id!r} needs a zero-shot column id and a ZeroShotTask in context['task']")
    if int(match["c"]) != task.class_embeddings.shape[0]:
        raise ConfigError(f"{metric_id!r}: the task has {task.class_embeddings.shape[0]} classes")
    return task, int(match["k"]), bool(match["svc"]), network


class ZeroShotAccuracy(SpecMetric):
    """Torchmetrics form of :func:`zero_shot_accuracy`; ``update(pred, labels)``, hit and row counts summed.

    Example:
        >>> task = ZeroShotTask(torch.eye(3), torch.tensor([0, 1, 2]), "a {}", "test")
        >>> metric = ZeroShotAccuracy(task, network="demo")
        >>> metric.update(torch.eye(3), task.labels)
        >>> float(metric.compute()), metric.spec.id, round(metric.chance, 3)
        (1.0, 'zeroshot_top1_3way/demo@v1', 0.333)
    """

    hits: Tensor
    total: Tensor

    def __init__(self, task: ZeroShotTask, *, top_k: int = 1, network: str = "") -> None:
        super().__init__()
        self.class_embeddings, self.top_k = task.class_embeddings, top_k
        n_classes = int(task.class_embeddings.shape[0])
        spec = zero_shot_spec(
            network=network, n_classes=n_classes, top_k=top_k, prompt=task.prompt, split=task.split
        )
        self.set_spec(spec, top_k / n_classes)
        self.add_state("hits", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> ZeroShotAccuracy:
        """From ``zeroshot_top<k>_<C>way/<network>@v1`` with ``context["task"]`` (a :class:`ZeroShotTask`)."""
        task, top_k, svc, network = _task_from(metric_id, context)
        if svc:
            raise ConfigError(f"{metric_id!r} is an SVC column (SVCZeroShotAccuracy)")
        return check_round_trip(cls(task, top_k=top_k, network=network), metric_id)  # type: ignore[return-value]

    def update(self, pred: Tensor, labels: Tensor) -> None:
        """Classify a batch of predicted embeddings with their true class indices."""
        hits = zero_shot_hits(pred, self.class_embeddings.to(pred.device), labels, top_k=self.top_k)
        self.hits += hits.sum().to(self.hits.device)
        self.total += hits.numel()

    def compute(self) -> Tensor:
        """Accuracy, float32 as :func:`zero_shot_accuracy` gives it."""
        return self.hits.to(torch.float32) / self.total.to(torch.float32)


class SVCZeroShotAccuracy(SpecMetric):
    """Torchmetrics form of :func:`svc_zero_shot_accuracy`: the SVC is fitted once, hits are summed."""

    hits: Tensor
    total: Tensor

    def __init__(
        self, task: ZeroShotTask, *, top_k: int = 1, network: str = "", gamma: float | str = "scale"
    ) -> None:
        super().__init__()
        if task.class_samples is None or task.sample_labels is None:
            raise ConfigError("the SVC zero-shot column needs class_samples and sample_labels in the task")
        self.top_k = top_k
        self.classifier = fit_svc(task.class_samples, task.sample_labels, top_k=top_k, gamma=gamma)
        n_classes = int(task.class_embeddings.shape[0])
        spec = svc_zero_shot_spec(
            network=network, n_classes=n_classes, top_k=top_k, split=task.split, gamma=gamma
        )
        self.set_spec(spec, top_k / n_classes)
        self.add_state("hits", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    @classmethod
    def from_id(cls, metric_id: str, **context: object) -> SVCZeroShotAccuracy:
        """From ``zeroshot_svc_top<k>_<C>way/<network>@v1`` with ``context["task"]``."""
        task, top_k, svc, network = _task_from(metric_id, context)
        if not svc:
            raise ConfigError(f"{metric_id!r} is a cosine column (ZeroShotAccuracy)")
        return check_round_trip(cls(task, top_k=top_k, network=network), metric_id)  # type: ignore[return-value]

    def update(self, pred: Tensor, labels: Tensor) -> None:
        """Classify a batch of predicted embeddings with their true class indices."""
        self.hits += svc_hits(self.classifier, pred.cpu(), labels.cpu(), top_k=self.top_k)
        self.total += int(labels.numel())

    def compute(self) -> Tensor:
        """Accuracy (float64)."""
        return self.hits.to(torch.float64) / self.total.to(torch.float64)
