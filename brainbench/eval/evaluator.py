"""One evaluator for every method: named predictions in, spec-keyed numbers out.

:func:`evaluate` reads prediction *names*, never methods (the design's "Predictions" rule).
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

The evaluation is a *plan*, a list of these ids (:func:`embedding_plan`); :func:`run_embedding_plan` builds
each metric from the registry (:func:`brainbench.metrics.registry.build_metric`), feeds it the rows its id
names and computes it. The retrieval columns of one prediction share one similarity matrix
(:class:`~brainbench.metrics.similarity.SharedSimilarity`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from brainbench.errors import ConfigError
from brainbench.eval.result import EvalResult
from brainbench.metrics.identification import identification_spec
from brainbench.metrics.registry import build_metric, metric_family
from brainbench.metrics.retrieval import DIRECTIONS, Variant, retrieval_spec
from brainbench.metrics.similarity import SharedSimilarity
from brainbench.metrics.specs import parse_metric_id
from brainbench.metrics.text_retrieval import TEXT_DIRECTIONS, text_retrieval_spec
from brainbench.metrics.zeroshot import ZeroShotTask, pooled_prediction, svc_zero_shot_spec, zero_shot_spec

__all__ = ["EvalResult", "embedding_plan", "evaluate", "run_embedding_plan"]

POOLED_VARIANTS: tuple[Variant, ...] = ("shared-subset", "per-query")
_INPUTS = {  # metric family -> what its update takes: (prediction, target) rows, or a pooled embedding with
    "retrieval_b2i": "target",  # its zero-shot labels / caption embeddings
    "retrieval_i2b": "target",
    "identification_2way": "target",
    "zeroshot": "labels",
    "zeroshot_svc": "labels",
    "retrieval_b2t": "captions",
    "retrieval_t2b": "captions",
}


def embedding_plan(
    names: Sequence[str],
    network: str,
    *,
    pool: int = 300,
    zero_shot: ZeroShotTask | None = None,
    pooled: str | None = None,
    text_queries: Sequence[str] = (),
    text_pool: int = 300,
) -> list[str]:
    """The column ids :func:`evaluate` computes for predictions ``names`` in embedding space ``network``.

    Args:
        names: prediction names with a target (e.g. ``clip_image``, ``clip_tokens``).
        network: the embedding space.
        pool: retrieval pool size.
        zero_shot: the zero-shot task, for its columns.
        pooled: the pooled image embedding the zero-shot columns classify (``clip_image`` or
            ``clip_tokens_cls``, see :func:`~brainbench.metrics.zeroshot.pooled_prediction`).
        text_queries: embeddings ranked against captions (``clip_image``, ``clip_tokens_cls``, ``clip_text``).
        text_pool: the text-retrieval pool (``min(pool, N)``).
    """
    plan: list[str] = []
    for name in names:
        space = f"{network}.{name}"
        for direction in DIRECTIONS:
            for top_k in (1, 5) if pool > 5 else (1,):
                for variant in POOLED_VARIANTS:
                    spec = retrieval_spec(
                        direction=direction, variant=variant, top_k=top_k, network=space, pool=pool
                    )
                    plan.append(spec.id)
            plan.append(retrieval_spec(direction=direction, variant="full-set", top_k=1, network=space).id)
        plan.append(identification_spec(network=space).id)
    if zero_shot is not None:
        if pooled is None:
            raise ConfigError(
                "zero-shot needs a pooled image embedding: a clip_image prediction, or clip_tokens from a "
                "backbone that pools by its class token\n  fix: add clip_image to the method's targets"
            )
        n_classes = int(zero_shot.class_embeddings.shape[0])
        for top_k in (1, 5) if n_classes > 5 else (1,):
            space = f"{network}.{pooled}"
            args = {"network": space, "n_classes": n_classes, "top_k": top_k, "split": zero_shot.split}
            plan.append(zero_shot_spec(prompt=zero_shot.prompt, **args).id)  # type: ignore[arg-type]
            if zero_shot.class_samples is not None and zero_shot.sample_labels is not None:
                plan.append(svc_zero_shot_spec(gamma="scale", **args).id)  # type: ignore[arg-type]
    for name in text_queries:
        for text_direction in TEXT_DIRECTIONS:
            spec = text_retrieval_spec(
                direction=text_direction, network=f"{network}.{name}", pool=text_pool, draws=30, seed=42
            )
            plan.append(spec.id)
    return plan


def run_embedding_plan(
    plan: Sequence[str],
    predictions: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    *,
    zero_shot: ZeroShotTask | None = None,
    caption_targets: Tensor | None = None,
    **context: object,
) -> EvalResult:
    """Builds each metric of ``plan`` from the registry, updates it with the rows its id names, computes it.

    The id's network part ``<space>.<name>`` names the prediction (``clip_tokens_cls``: token 0 of
    ``clip_tokens``); ``context`` goes to every metric (``draws``, ``seed``, ``block_size``, ``n_items``).
    """
    result, shared = EvalResult(), SharedSimilarity()
    for metric_id in plan:
        name, network, _ = parse_metric_id(metric_id)
        prediction = network.rsplit(".", 1)[-1]
        metric = build_metric(metric_id, sync_on_compute=False, shared=shared, task=zero_shot, **context)
        rows = (
            predictions["clip_tokens"][:, 0] if prediction == "clip_tokens_cls" else predictions[prediction]
        )
        inputs = _INPUTS[metric_family(name)]
        if inputs == "target":
            metric.update(rows, targets[prediction])
        elif inputs == "labels" and zero_shot is not None:
            metric.update(rows, zero_shot.labels)
        elif inputs == "captions" and caption_targets is not None:
            metric.update(rows, caption_targets)
        else:
            raise ConfigError(f"{metric_id!r} needs {inputs} that were not given")
        result.add_metric(metric)
    return result


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
    names = sorted(set(predictions) & set(targets))
    for name in names:
        if "." in name or "/" in name or "@" in name:
            raise ConfigError(
                f"prediction name {name!r} contains '.', '/' or '@'\n  fix: rename the prediction"
            )
        if predictions[name].shape != targets[name].shape:
            raise ValueError(
                f"{name}: prediction {tuple(predictions[name].shape)} and target "
                f"{tuple(targets[name].shape)} differ"
            )
    zero_shot_pooled = pooled_prediction(predictions, zero_shot.cls_token_is_pooled) if zero_shot else None
    pooled = pooled_prediction(predictions, cls_token_is_pooled)
    queries = [pooled] if pooled is not None else []
    queries += [("clip_text", predictions["clip_text"])] if "clip_text" in predictions else []
    queries = queries if caption_targets is not None else []
    plan = embedding_plan(
        names,
        network,
        pool=pool,
        zero_shot=zero_shot,
        pooled=zero_shot_pooled[0] if zero_shot_pooled else None,
        text_queries=[name for name, _ in queries],
        text_pool=min(pool, len(queries[0][1])) if queries else pool,
    )
    n_items = int(predictions[names[0]].shape[0]) if names else None
    return run_embedding_plan(
        plan,
        predictions,
        targets,
        zero_shot=zero_shot,
        caption_targets=caption_targets,
        draws=draws,
        seed=seed,
        block_size=block_size,
        n_items=n_items,
    )
