"""Networks shared by every layer above: open_clip backbones, image feature networks, video networks, VAEs.

:data:`NETWORKS` (the one registry of networks, image, video and text) is imported on first use.
"""

from __future__ import annotations


def __getattr__(name: str) -> object:
    if name == "NETWORKS":
        from brainbench.backbones.networks import NETWORKS

        return NETWORKS
    raise AttributeError(f"module 'brainbench.backbones' has no attribute {name!r}")
