"""Wide ResNets (Zagoruyko & Komodakis, BMVC 2016) in the layout of Madry et al.'s CIFAR-10 model
(ICLR 2018): the RMC paper's black-box surrogate "Reg. wResNet" (Wu, Yuan, Wu, ICML 2020, section 4.2).

Madry et al. widen the TensorFlow models repository's CIFAR ResNet (the ResNet-32 layout: a 3x3 stem
of 16 filters, then three stages of five residual units at 16, 32, 64 filters) ten times: the stages
get 160, 320, 640 filters while the stem keeps 16. That is where the RMC paper's "wide ResNet with 10
times of filters at some layers" comes from: "some layers" are the three stages. In Zagoruyko &
Komodakis's naming it is WRN-32-10. As in Madry et al.'s model, the residual units are pre-activation
(BatchNorm, leaky ReLU 0.1, conv; the very first unit's shortcut takes the activated input, their
``activate_before_residual``), and a shortcut that changes shape average-pools by the stride and
zero-pads the new channels (no parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.arch_base import ARCHS, CIFAR_MEAN, CIFAR_STD, Classifier, Normalize
from bench.core.errors import BenchError

#: ResNet-32's stage widths (He et al. 2016, CIFAR): a wide ResNet multiplies them by its widen factor.
BASE_WIDTHS = (16, 32, 64)
STEM = 16
SLOPE = 0.1  # Madry et al.'s leaky ReLU


class _WideUnit(nn.Module):
    """Pre-activation unit: BN, leaky ReLU, conv3x3 (stride), BN, leaky ReLU, conv3x3, plus shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, activate_before_residual: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.stride, self.pad = stride, planes - in_planes
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu(self.bn1(x), SLOPE)
        shortcut = act if self.activate_before_residual else x
        out = self.conv2(F.leaky_relu(self.bn2(self.conv1(act)), SLOPE))
        if self.stride != 1:
            shortcut = F.avg_pool2d(shortcut, self.stride, self.stride)
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return out + shortcut


class WideResNet(Classifier):
    """WRN-depth-widen: a 16-filter stem, three stages of (depth - 2) / 6 units at 16k, 32k, 64k filters."""

    def __init__(self, depth: int = 32, widen: int = 10, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise BenchError(f"wide ResNet depth must be 6n+2 with n >= 1, got {depth}")
        if widen < 1:
            raise BenchError(f"wide ResNet widen factor must be at least 1, got {widen}")
        self.depth, self.widen = depth, widen
        self.stage_widths = tuple(widen * w for w in BASE_WIDTHS)
        mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else ((0.5,) * in_channels, (0.5,) * in_channels)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, STEM, 3, stride=1, padding=1, bias=False)
        units, in_planes = [], STEM
        for stage, (planes, stride) in enumerate(zip(self.stage_widths, (1, 2, 2))):
            for i in range((depth - 2) // 6):
                units.append(_WideUnit(in_planes, planes, stride if i == 0 else 1, stage == 0 and i == 0))
                in_planes = planes
        self.units = nn.Sequential(*units)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.units(self.conv1(self.normalize(x)))
        return F.adaptive_avg_pool2d(F.leaky_relu(self.bn(out), SLOPE), 1).flatten(1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f)


@ARCHS.register("wide-resnet")
def wide_resnet(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-32-10, Madry et al.'s CIFAR-10 wide ResNet: ResNet-32 with 10x the filters in its stages (RMC Table 3)."""
    return WideResNet(32, 10, num_classes, in_channels)


@ARCHS.register("wide-resnet-small")
def wide_resnet_small(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-8-4: one unit per stage at 4x ResNet-32's filters, a CPU-sized stand-in for wide-resnet.

    The black-box surrogate of rmc-table3-fashion-mnist: WRN-32-10's forward pass is 6.6 billion
    multiply-adds a 32x32 image (WRN-8-4's: 0.16 billion), hours of training on a CPU core."""
    return WideResNet(8, 4, num_classes, in_channels)
