"""Metric definitions: each a functional form and its torchmetrics ``Metric`` in one module, keyed by spec id.

These modules depend on torch, numpy, scipy, scikit-learn and torchmetrics only, so every layer may use them:
methods for validation, the world for its calibration, world-asset trainers for frame PSNR/SSIM
(:mod:`brainbench.metrics.video`), the evaluator (``brainbench.eval``) for the leaderboard. Every metric class
is a :class:`~brainbench.metrics.base.SpecMetric` (spec id, chance level, direction) registered by metric name
in :data:`brainbench.metrics.registry.METRICS`, so an evaluation plan is a list of column ids. Networks that
some metrics need (feature 2-way, FID, LPIPS, video classifiers) are run by the evaluator, never loaded here.
"""
