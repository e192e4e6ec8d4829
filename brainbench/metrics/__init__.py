"""Metric definitions: each a functional form and its torchmetrics ``Metric`` in one module, keyed by spec id.

These modules depend on torch, numpy and torchmetrics only, so every layer may use them: methods for
validation, the world for its calibration, the evaluator (``brainbench.eval``) for the leaderboard.
Networks that some metrics need (feature 2-way, FID, LPIPS) are passed in, never loaded here.
"""
