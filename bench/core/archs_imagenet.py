"""ImageNet architectures: torchvision's ResNet-18/50/152 (He et al. 2016) with the ImageNet
normalisation inside, so attacks work on [0, 1] images.

Built untrained (no weights are downloaded at run time). Pretrained weights come from a user's
checkpoint (plain torchvision state dicts load; see ``bench.core.models.load_state``) or torchvision's own
(``weights = "IMAGENET1K_V1"`` in a ``source = "checkpoint"`` entry, see ``load_torchvision_weights``).

Feature layers for the nearest-neighbour defenses (``features`` option of deepnn / webnn / rmc),
each globally average-pooled to a vector:

- ``penultimate`` (default): the output of the last stage (conv5_x, 512 or 2,048 channels), the
  vector the classifier's fc layer reads, so ``head(features(x)) == forward(x)``;
- ``conv_5_1``: the RMC paper's ImageNet feature space (Sec. 4.1, after Dubey et al. 2019). In He et
  al.'s naming conv5_1 is the first residual block of stage conv5_x, which torchvision calls
  ``layer4[0]``. Pooling it (2,048-d for ResNet-50/152) is our choice: the paper does not say, and
  unpooled (2,048 x 7 x 7 = 100,352-d) vectors would make a million-entry index impractical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.arch_base import ARCHS, Classifier, Normalize
from bench.core.errors import BenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_LAYERS = ("penultimate", "conv_5_1")


class TorchvisionResNet(Classifier):
    """torchvision ``resnet<depth>`` behind ``Normalize(ImageNet mean, std)``; parameters under ``net.``."""

    feature_layers = FEATURE_LAYERS

    def __init__(self, depth: int, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        self.depth = depth
        self.net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
        if in_channels != 3:  # e.g. a 1-channel synthetic stand-in; no pretrained weights fit then
            self.net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_channels == 3 else ((0.5,) * in_channels, (0.5,) * in_channels)
        self.normalize = Normalize(mean, std)

    def _stage4_input(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        out = n.maxpool(n.relu(n.bn1(n.conv1(self.normalize(x)))))
        return n.layer3(n.layer2(n.layer1(out)))

    def features(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        layer = layer or "penultimate"
        if layer not in FEATURE_LAYERS:
            raise BenchError(f"resnet{self.depth} has no feature layer {layer!r}; "
                             f"use one of {', '.join(FEATURE_LAYERS)}")
        out = self._stage4_input(x)
        out = self.net.layer4[0](out) if layer == "conv_5_1" else self.net.layer4(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """The fc layer on ``penultimate`` features (other layers have no head)."""
        return self.net.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _register(depth: int) -> None:
    def factory(num_classes: int = 1000, in_channels: int = 3) -> TorchvisionResNet:
        return TorchvisionResNet(depth, num_classes, in_channels)

    factory.__doc__ = f"torchvision ResNet-{depth} for 224x224 ImageNet images (normalisation inside)."
    ARCHS.register(f"resnet{depth}")(factory)


for _d in (18, 50, 152):
    _register(_d)


def load_torchvision_weights(model: nn.Module, weights: str, arch: str) -> nn.Module:
    """torchvision's pretrained ``weights`` (e.g. ``IMAGENET1K_V1``) for ``arch``, from the torch hub
    cache or downloaded (needs the network); one line when that fails."""
    if not isinstance(model, TorchvisionResNet):
        raise BenchError(f"weights = {weights!r} needs a torchvision arch (resnet18, resnet50, resnet152), "
                         f"not {arch!r}")
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(f"resnet{model.depth}")
        w = enum[weights] if weights in enum.__members__ else enum.verify(weights)
    except (KeyError, ValueError):
        names = ", ".join(torchvision.models.get_model_weights(f"resnet{model.depth}").__members__)
        raise BenchError(f"unknown weights {weights!r} for {arch}; torchvision offers {names}") from None
    try:
        state = w.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, OSError, hash mismatch... many types
        raise BenchError(f"cannot get torchvision weights {w} for {arch} ({type(exc).__name__}); they are "
                         "downloaded once to the torch hub cache: run once online, or pass checkpoint = "
                         "\"<file>\" instead") from None
    if len(w.meta.get("categories", [])) != model.net.fc.out_features:
        raise BenchError(f"torchvision weights {w} have {len(w.meta['categories'])} classes, the model "
                         f"{model.net.fc.out_features}")
    model.net.load_state_dict(state)
    return model.eval()
