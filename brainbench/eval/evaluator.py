"""One evaluator for every method: named predictions in, spec-keyed numbers out.

:func:`evaluate` reads prediction *names*, never methods (``/work/shared/DESIGN.md``, "Predictions").
For every name present in both ``predictions`` and ``targets`` (e.g. ``clip_image`` ``(N, D)``,
``clip_tokens`` ``(N, T, D)``) it computes, in the embedding space ``network``:

- retrieval (``brainbench.metrics.retrieval``), both directions × both pooled variants × top-1/top-5 in
  the pool, plus full-set top-1 in both directions;
- exhaustive 2-way identification (``brainbench.metrics.identification``);
- with a :class:`~brainbench.metrics.zeroshot.ZeroShotTask`, N-way zero-shot top-1 (and top-5 when N > 5) of
  the pooled image embedding against the class prompts, by cosine and by BraVL's SVC (``eval.zeroshot``);
- with caption targets, brain<->text retrieval of the pooled embedding and, when predicted, of ``clip_text``
  (``brainbench.metrics.text_retrieval``; the prediction used is part of the column's network).

Metric id naming (grammar ``<metric>[/<network>]@v<N>``, see ``brainbench.metrics.specs``)::

    retrieval_<dir>_top<k>_<variant><pool>/<network>.<prediction>@v<N>
    retrieval_<dir>_top1_full/<network>.<prediction>@v<N>
    identification_2way/<network>.<prediction>@v<N>
    zeroshot[_svc]_top<k>_<C>way/<network>.<clip_image|clip_tokens_cls>@v<N>
    retrieval_<b2t|t2b>_top1_subset<pool>/<network>.<clip_image|clip_tokens_cls>@v<N>

    <dir>     b2i = brain2image (given a brain prediction, rank the images)
              i2b = image2brain (given an image, rank the brain predictions)
    <variant> subset = MindEye shared subsets, perquery = Lite-Mind per-query distractors
    <pool>    the pool size actually used (300, or the explicit smaller pool for small test sets)

e.g. ``retrieval_b2i_top1_subset300/world-clip-v1.clip_tokens@v1``. The network part is
``<network>.<prediction name>``: prediction names contain no ``.``, so ``rsplit(".", 1)`` recovers both.
Top-5 columns are produced only when ``pool > 5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.metrics.identification import (
    IDENTIFICATION_CHANCE,
    identification_spec,
    two_way_identification,
)
from brainbench.metrics.retrieval import (
    DIRECTIONS,
    Variant,
    full_set_accuracy,
    per_query_accuracy,
    retrieval_chance,
    retrieval_spec,
    shared_subset_accuracy,
)
from brainbench.metrics.similarity import cosine_similarity_matrix
from brainbench.metrics.specs import MetricSpec
from brainbench.metrics.text_retrieval import TEXT_DIRECTIONS, text_retrieval_accuracy, text_retrieval_spec
from brainbench.metrics.zeroshot import (
    ZeroShotTask,
    pooled_prediction,
    svc_zero_shot_accuracy,
    svc_zero_shot_spec,
    zero_shot_accuracy,
    zero_shot_spec,
)

POOLED_VARIANTS: tuple[Variant, ...] = ("shared-subset", "per-query")


@dataclass(frozen=True)
class EvalResult:
    """Numbers of one evaluation, keyed by metric spec id.

    Attributes:
        values: spec id → value.
        specs: spec id → :class:`MetricSpec` (parameters, direction of improvement, description).
        chance: spec id → chance level (``top_k / pool`` for pooled retrieval, ``1 / N`` for full-set top-1,
            0.5 for 2-way identification), so reports can state "× chance".
    """

    values: dict[str, float] = field(default_factory=dict)
    specs: dict[str, MetricSpec] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)

    def times_chance(self, metric_id: str) -> float:
        """``values[metric_id] / chance[metric_id]``."""
        return self.values[metric_id] / self.chance[metric_id]

    def add(self, spec: MetricSpec, value: float, chance: float) -> None:
        """Records one number with its spec and chance level (NaN where none is defined)."""
        self.values[spec.id], self.specs[spec.id], self.chance[spec.id] = float(value), spec, float(chance)


def evaluate(
    predictions: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    network: str,
    *,
    pool: int = 300,
    draws: int = 30,
    seed: int = 42,
    block_size: int = 1024,
    zero_shot: ZeroShotTask | None = None,
    caption_targets: Tensor | None = None,
    cls_token_is_pooled: bool = True,
) -> EvalResult:
    """Score every prediction that has a target, in the embedding space ``network``.

    Args:
        predictions: name → ``(N, ...)`` brain-predicted tensor.
        targets: name → ``(N, ...)`` target tensor computed by ``network``; row ``i`` is the same stimulus
            as row ``i`` of the prediction. Names missing from either side are skipped.
        network: the embedding space, e.g. ``world-clip-v1`` or ``ViT-L-14:openai``.
        pool: retrieval pool size; never lowered silently: pass ``min(300, N)`` for a small test set.
        draws: shared subsets / per-query seeds averaged over.
        seed: base seed of both pooled variants.
        block_size: rows processed at once.
        zero_shot: candidate classes and true labels of the rows, for zero-shot classification.
        caption_targets: ``(N, D)`` mean caption embedding of each row's stimulus, for brain<->text
            retrieval of the pooled image embedding (:mod:`brainbench.metrics.text_retrieval`).
        cls_token_is_pooled: whether token 0 of ``clip_tokens`` is the pooled image embedding.

    Returns:
        The :class:`EvalResult`; metric ids as in the module docstring.

    Raises:
        ConfigError: when ``pool`` exceeds N, or a name contains ``.``.
        ValueError: when a prediction and its target differ in N or feature size.
    """
    result = EvalResult()
    for name in sorted(set(predictions) & set(targets)):
        if "." in name or "/" in name or "@" in name:
            raise ConfigError(
                f"prediction name {name!r} contains '.', '/' or '@'\n  fix: rename the prediction"
            )
        pred, target = predictions[name], targets[name]
        if pred.shape != target.shape:
            raise ValueError(
                f"{name}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        n = int(pred.shape[0])
        space = f"{network}.{name}"
        similarity = cosine_similarity_matrix(pred, target, block_size=block_size)
        for direction in DIRECTIONS:
            for top_k in (1, 5) if pool > 5 else (1,):
                for variant in POOLED_VARIANTS:
                    if variant == "shared-subset":
                        value = shared_subset_accuracy(
                            similarity, direction=direction, top_k=top_k, pool=pool, draws=draws, seed=seed
                        )
                    else:
                        value = per_query_accuracy(
                            similarity,
                            direction=direction,
                            top_k=top_k,
                            pool=pool,
                            draws=draws,
                            seed=seed,
                            block_size=block_size,
                        )
                    spec = retrieval_spec(
                        direction=direction,
                        variant=variant,
                        top_k=top_k,
                        network=space,
                        pool=pool,
                        draws=draws,
                        seed=seed,
                        n_items=n,
                    )
                    result.add(
                        spec,
                        float(value),
                        retrieval_chance(variant=variant, top_k=top_k, pool=pool, n_items=n),
                    )
            full = full_set_accuracy(similarity, direction=direction, top_k=1, block_size=block_size)
            spec = retrieval_spec(direction=direction, variant="full-set", top_k=1, network=space, n_items=n)
            result.add(spec, float(full), retrieval_chance(variant="full-set", top_k=1, pool=pool, n_items=n))
        identification = two_way_identification(pred, target, block_size=block_size)
        result.add(
            identification_spec(network=space, n_items=n), float(identification), IDENTIFICATION_CHANCE
        )
    if zero_shot is not None:
        _add_zero_shot(result, predictions, zero_shot, network)
    pooled = pooled_prediction(predictions, cls_token_is_pooled)
    # brain<->text from the pooled image embedding, and from a text prediction when the method makes one
    queries = [pooled] if pooled is not None else []
    if "clip_text" in predictions:
        queries.append(("clip_text", predictions["clip_text"]))
    for name, embedding in queries if caption_targets is not None else []:
        text_pool = min(pool, len(embedding))
        for direction in TEXT_DIRECTIONS:
            value = text_retrieval_accuracy(
                embedding, caption_targets, direction=direction, pool=text_pool, draws=draws, seed=seed
            )
            spec = text_retrieval_spec(
                direction=direction, network=f"{network}.{name}", pool=text_pool, draws=draws, seed=seed
            )
            result.add(spec, float(value), 1 / text_pool)
    return result


def _add_zero_shot(
    result: EvalResult, predictions: Mapping[str, Tensor], task: ZeroShotTask, network: str
) -> None:
    pooled = pooled_prediction(predictions, task.cls_token_is_pooled)
    if pooled is None:
        raise ConfigError(
            "zero-shot needs a pooled image embedding: a clip_image prediction, or clip_tokens from a "
            "backbone that pools by its class token\n  fix: add clip_image to the method's targets"
        )
    name, embedding = pooled
    n_classes = int(task.class_embeddings.shape[0])
    for top_k in (1, 5) if n_classes > 5 else (1,):
        value = zero_shot_accuracy(embedding, task.class_embeddings, task.labels, top_k=top_k)
        space = f"{network}.{name}"
        spec = zero_shot_spec(
            network=space, n_classes=n_classes, top_k=top_k, prompt=task.prompt, split=task.split
        )
        result.add(spec, float(value), top_k / n_classes)
        if task.class_samples is not None and task.sample_labels is not None:
            value = svc_zero_shot_accuracy(
                embedding, task.class_samples, task.sample_labels, task.labels, top_k=top_k
            )
            spec = svc_zero_shot_spec(
                network=space, n_classes=n_classes, top_k=top_k, split=task.split, gamma="scale"
            )
            result.add(spec, float(value), top_k / n_classes)
