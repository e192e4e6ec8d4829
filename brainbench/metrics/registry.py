"""Every metric class, registered by the metric-name prefix of the columns it computes.

A column id ``<metric>[/<network>]@v<N>`` (:mod:`brainbench.metrics.specs`) names its class by the longest
registered prefix of ``<metric>`` (``zeroshot_svc_top1_50way`` -> ``zeroshot_svc``, ``ssim_mindeye`` ->
``ssim``); :func:`build_metric` asks that class to build the metric back from the id
(:meth:`~brainbench.metrics.base.SpecMetric.from_id`), with a ``context`` for what the id does not say (the
zero-shot task, a feature width, the draws of a pooled retrieval). An evaluation plan is therefore a list
of ids. Metrics that need a network to run (LPIPS, the standard FID) are registered by the evaluator,
which owns networks; packages add metrics through the ``brainbench.metrics`` entry-point group.

Example:
    >>> build_metric("identification_2way/demo@v1").chance
    0.5
    >>> metric_family("retrieval_b2i_top1_subset300")
    'retrieval_b2i'
"""

from __future__ import annotations

from brainbench.errors import ConfigError
from brainbench.metrics.base import SpecMetric
from brainbench.metrics.specs import parse_metric_id
from brainbench.registry import Registry

_M = "brainbench.metrics"
METRICS: Registry[type[SpecMetric]] = Registry(
    "metric",
    {
        "retrieval_b2i": f"{_M}.retrieval:BrainImageRetrieval",
        "retrieval_i2b": f"{_M}.retrieval:BrainImageRetrieval",
        "retrieval_b2t": f"{_M}.text_retrieval:TextRetrieval",
        "retrieval_t2b": f"{_M}.text_retrieval:TextRetrieval",
        "identification_2way": f"{_M}.identification:TwoWayIdentification",
        "zeroshot": f"{_M}.zeroshot:ZeroShotAccuracy",
        "zeroshot_svc": f"{_M}.zeroshot:SVCZeroShotAccuracy",
        "pixcorr": f"{_M}.image_metrics:PixCorr",
        "ssim": f"{_M}.image_metrics:SSIM",
        "psnr": f"{_M}.image_metrics:PSNR",
        "corrdist": f"{_M}.correlation:CorrelationDistance",
        "fid": f"{_M}.fid:FeatureFID",
        "frame_ssim": f"{_M}.video:FrameSSIM",
        "frame_psnr": f"{_M}.video:FramePSNR",
        "nway_frame": f"{_M}.video:NWayAccuracy",
        "nway_video": f"{_M}.video:NWayAccuracy",
        "clip_pcc_adjacent": f"{_M}.video:ClipPcc",
        "clip_pcc_allpairs": f"{_M}.video:ClipPcc",
        "clip_pcc_gated0.6": f"{_M}.video:GatedClipPcc",
    },
    entry_point_group="brainbench.metrics",
)


def metric_family(name: str) -> str:
    """The registered prefix of metric name ``name``: the longest key equal to it or followed by ``_``.

    Raises:
        ConfigError: when no registered prefix matches (the message lists them).
    """
    matches = [key for key in METRICS.list() if name == key or name.startswith(f"{key}_")]
    if not matches:
        raise ConfigError(f"no metric is registered for {name!r}; registered: {', '.join(METRICS.list())}")
    return max(matches, key=len)


def build_metric(metric_id: str, *, sync_on_compute: bool = True, **context: object) -> SpecMetric:
    """The metric object computing column ``metric_id`` (its ``spec.id`` is ``metric_id``).

    Args:
        metric_id: the column id.
        sync_on_compute: gather the states of every process on ``compute`` (torchmetrics' default). The
            evaluator passes ``False``: it scores predictions already gathered on rank 0, alone.
        **context: what the id does not say (see the module docstring).

    Raises:
        ConfigError: for an id outside the grammar, no registered class, or a class that does not compute it.
    """
    name, _, _ = parse_metric_id(metric_id)
    metric = METRICS.load(metric_family(name)).from_id(metric_id, **context)
    metric.sync_on_compute = metric._to_sync = sync_on_compute
    return metric
