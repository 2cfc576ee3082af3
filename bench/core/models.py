"""Architectures: a small CNN, LeNet-5 and the CIFAR ResNet family (option-A shortcuts).

Every model takes images in [0, 1] and returns logits; input normalisation lives inside the model.
Every model exposes ``features(x)`` (the deepest conv layer, pooled and flattened: the space the
nearest-neighbour defenses search) and ``head(features)`` (the rest, up to the logits).
ResNets follow He et al. 2016 as in akamaster/pytorch_resnet_cifar10, so its checkpoints load.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core import archs_deepdefense, archs_imagenet, archs_wide  # noqa: F401  (dd-*, resnet18/50/152, wide-resnet*)
from bench.core.arch_base import ARCHS, CIFAR_MEAN, CIFAR_STD, Classifier, Normalize
from bench.core.errors import BenchError


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d that passes a map already at its output size through untouched (the
    8x8 digits reach it at 4x4): the same values and gradients without the kernel, which costs a
    tenth of a small-cnn training step on a CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size if isinstance(self.output_size, tuple) else (self.output_size,) * 2
        if tuple(x.shape[-2:]) == size:
            return x
        return super().forward(x)


@ARCHS.register("small-cnn")
class SmallCNN(Classifier):
    """Two 3x3 conv layers, max-pool, two dense layers: for 8x8 digits and 28x28 MNIST."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


@ARCHS.register("tiny-cnn")
class TinyCNN(SmallCNN):
    """small-cnn at a quarter width (8 and 16 channels; 97% on digits): the default grid's network.

    A training step costs a fifth of small-cnn's on a CPU core, which matters on 8x8 digits, where
    every RMC point retrains the network."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(num_classes, in_channels, width=8)


@ARCHS.register("lenet5")
class LeNet5(Classifier):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, as used by Deep Defense."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool2d(5), nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(16 * 25, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)


class _LambdaLayer(nn.Module):
    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Option A: subsample by 2 and zero-pad the channels (no parameters).
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _LambdaLayer(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNetBody(nn.Module):
    """Parameter names match akamaster's ``ResNet`` so its state dicts load unchanged."""

    def __init__(self, num_blocks: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks, 1)
        self.layer2 = self._make_layer(32, num_blocks, 2)
        self.layer3 = self._make_layer(64, num_blocks, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(_BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)


class CifarResNet(Classifier):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, option-A shortcuts), normalisation inside."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise BenchError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        mean, std = (CIFAR_MEAN, CIFAR_STD) if in_channels == 3 else ((0.5,), (0.5,))
        self.normalize = Normalize(mean, std)
        self.net = _ResNetBody((depth - 2) // 6, num_classes, in_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        out = F.relu(n.bn1(n.conv1(self.normalize(x))))
        out = n.layer3(n.layer2(n.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.linear(f)


def _register_resnet(depth: int) -> None:
    def factory(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels)

    factory.__doc__ = f"CIFAR ResNet-{depth} (He et al. 2016; option A shortcuts), akamaster's checkpoints load."
    ARCHS.register(f"resnet{depth}")(factory)


for _d in (20, 32, 56):
    _register_resnet(_d)


def create(arch: str, num_classes: int = 10, in_channels: int | None = None) -> nn.Module:
    """Build architecture ``arch`` with freshly initialised weights."""
    factory = ARCHS.get(arch)
    kwargs = {"num_classes": num_classes}
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    return factory(**kwargs)


def save(model: nn.Module, path: str | Path, arch: str, **meta: object) -> None:
    """Write ``{'arch', 'num_classes', 'state_dict', ...meta}`` atomically."""
    from bench.core.cache import atomic_torch_save

    atomic_torch_save({"arch": arch, "state_dict": model.state_dict(), **meta}, Path(path))


def read_state_dict(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A checkpoint's state dict, loaded with ``weights_only=True``: a bare state dict or one inside
    ``{"state_dict": ...}`` (ours, akamaster's) or ``{"model": ...}``; keys keep any ``module.`` prefix."""
    path = Path(checkpoint)
    if not path.is_file():
        raise BenchError(f"checkpoint {path} not found; pass an existing file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt files and refused pickles raise several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot load checkpoint {path} safely (weights_only=True): {first[:200]}") from None
    state = None
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                state = ckpt[key]
                break
        else:
            state = ckpt if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()) else None
    if not isinstance(state, dict):
        raise BenchError(f"checkpoint {path} holds no state_dict")
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> nn.Module:
    """Load ``state`` into ``model``, dropping a DataParallel ``module.`` prefix; akamaster's CIFAR
    ResNet keys are mapped under ``net.`` (our ResNets keep the normalisation in the model)."""
    from bench.core.archs_imagenet import TorchvisionResNet

    if isinstance(model, TorchvisionResNet) and not any(k.startswith("net.") for k in state):
        # a plain torchvision state dict: the model wraps it under net. with its own normalisation
        state = {"net." + k.removeprefix("module."): v for k, v in state.items()}
        state.update({f"normalize.{k}": v for k, v in model.normalize.state_dict().items()})
    if any(k.startswith("module.") for k in state):
        prefix = "net." if isinstance(model, CifarResNet) else ""
        state = {prefix + k.removeprefix("module."): v for k, v in state.items()}
        if isinstance(model, CifarResNet):
            state.update({f"normalize.{k}": v for k, v in model.normalize.state_dict().items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BenchError(f"checkpoint {source} does not fit architecture {arch!r}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def load(arch: str, checkpoint: str | Path, num_classes: int = 10, in_channels: int | None = None,
         map_location: str | torch.device = "cpu") -> nn.Module:
    """Load weights (``weights_only=True``) into ``create(arch, ...)``; accepts our checkpoints and
    akamaster's (``state_dict`` keys prefixed ``module.``)."""
    state = read_state_dict(checkpoint, map_location)
    return load_state(create(arch, num_classes, in_channels), state, str(checkpoint), arch)




def layer_features(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """``model.features(x)``, or the features of ``layer`` (one of ``model.feature_layers``)."""
    if layer is None:
        return model.features(x)
    offered = tuple(getattr(model, "feature_layers", ()))
    if layer not in offered:
        raise BenchError(f"model {type(model).__name__} has no feature layer {layer!r}; "
                         + (f"use one of {', '.join(offered)}" if offered else "leave features unset (its default)"))
    return model.features(x, layer=layer)


def _load_plugins() -> None:
    from bench.core.entrypoints import GROUPS, load_entry_points

    load_entry_points(GROUPS["archs"], ARCHS)


_load_plugins()
