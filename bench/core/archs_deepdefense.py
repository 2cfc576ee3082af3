"""Deep Defense's networks (Yan, Guo, Zhang, NeurIPS 2018, supplement Table 4).

MNIST: ``dd-mlp`` (FC-500, FC-150, FC-10) and ``dd-lenet`` (Caffe's LeNet: Conv-5-20, MaxPool-2,
Conv-5-50, MaxPool-2, FC-500, FC-10). CIFAR-10: ``dd-convnet`` (Caffe's cifar10_quick as in Table 4)
and ``dd-nin`` (network in network). Caffe convolutions without padding except where the output
size of Table 4 needs it (CIFAR 5x5 convs pad 2, NIN's 3x3 pads 1). Inputs in [0, 1]; the CIFAR-10
nets subtract the channel mean inside (Caffe's mean subtraction), the MNIST nets take raw [0, 1]
pixels (Caffe's scale 1/256).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.core.arch_base import ARCHS, CIFAR_MEAN, Classifier, Normalize


@ARCHS.register("dd-mlp")
class DeepDefenseMLP(Classifier):
    """MNIST MLP of Table 4: 784 -> FC-500 -> ReLU -> FC-150 -> ReLU -> FC-10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, 500), nn.ReLU(),
                                  nn.Linear(500, 150), nn.ReLU())
        self.fc = nn.Linear(150, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


@ARCHS.register("dd-lenet")
class DeepDefenseLeNet(Classifier):
    """MNIST LeNet of Table 4 (Caffe's): Conv-5-20, MaxPool-2, Conv-5-50, MaxPool-2, FC-500, ReLU, FC-10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                                  nn.MaxPool2d(2), nn.Flatten())  # 28 -> 24 -> 12 -> 8 -> 4
        self.fc = nn.Sequential(nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Linear(500, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


def _cifar_normalize(in_channels: int) -> Normalize:
    mean = CIFAR_MEAN if in_channels == 3 else (0.5,) * in_channels
    return Normalize(mean, (1.0,) * in_channels)


@ARCHS.register("dd-convnet")
class DeepDefenseConvNet(Classifier):
    """CIFAR-10 ConvNet of Deep Defense's Table 4 (Caffe's cifar10_quick): three conv stages, two conv heads.

    Conv-5-32, MaxPool-2, ReLU, Conv-5-32, ReLU, AvgPool-2, Conv-5-64, ReLU, AvgPool-2, Conv-4-64, ReLU,
    Conv-1-10 (32 -> 16 -> 8 -> 4 -> 1)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.normalize = _cifar_normalize(in_channels)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(64, 64, 4), nn.ReLU(), nn.Flatten(),
        )
        self.classifier = nn.Conv2d(64, num_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.normalize(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f[:, :, None, None]).flatten(1)


@ARCHS.register("dd-nin")
class DeepDefenseNIN(Classifier):
    """CIFAR-10 network in network of Table 4 (Lin et al. 2014), ending in Conv-1-10 and AvgPool-8.

    ``features`` average-pools the last 192-channel map; the 1x1 classifier commutes with that
    average, so ``head(features(x))`` equals Table 4's Conv-1-10 followed by AvgPool-8."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.normalize = _cifar_normalize(in_channels)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 192, 5, padding=2), nn.ReLU(), nn.Conv2d(192, 160, 1), nn.ReLU(),
            nn.Conv2d(160, 96, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(96, 192, 5, padding=2), nn.ReLU(), nn.Conv2d(192, 192, 1), nn.ReLU(),
            nn.Conv2d(192, 192, 1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.Conv2d(192, 192, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # AvgPool-8 on the 8x8 map
        )
        self.classifier = nn.Conv2d(192, num_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.normalize(x))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(f[:, :, None, None]).flatten(1)
