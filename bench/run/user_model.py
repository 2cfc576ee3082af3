"""Build a user's model from a grid's model-source entry (see bench.spec.sources for the keys)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.imports import load_object
from bench.spec.sources import resolve_path


class Normalized(nn.Module):
    """``net(normalize(x))`` with ``features`` / ``head`` passed through when ``net`` has them."""

    def __init__(self, net: nn.Module, mean: list[float] | None, std: list[float] | None) -> None:
        super().__init__()
        from bench.core.models import Normalize

        self.net = net
        self.normalize: nn.Module = Normalize(tuple(mean), tuple(std)) if mean is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def feature_layers(self) -> tuple[str, ...]:
        return tuple(getattr(self.net, "feature_layers", ()))

    def features(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        if not hasattr(self.net, "features") or not callable(self.net.features):
            raise BenchError(f"model {type(self.net).__name__} has no features(x) / head(f) methods; nearest-"
                             "neighbour defenses (deepnn, webnn, rmc) need them")
        if layer is None:
            return self.net.features(self.normalize(x))
        return self.net.features(self.normalize(x), layer=layer)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.head(f)


def _build(factory: Any, ref: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> nn.Module:
    if isinstance(factory, nn.Module):
        return factory
    if not callable(factory):
        raise BenchError(f"model {ref!r} is neither an nn.Module class nor a factory function")
    try:
        sig = inspect.signature(factory)
        accepted = {k: v for k, v in {"num_classes": num_classes, "in_channels": in_channels}.items()
                    if k in sig.parameters and k not in kwargs}
    except (TypeError, ValueError):
        accepted = {}
    try:
        model = factory(**kwargs, **accepted)
    except Exception as exc:
        raise BenchError(f"model {ref!r} failed to build ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(model, nn.Module):
        raise BenchError(f"model {ref!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def check(params: dict[str, Any], base_dir: str | Path | None) -> None:
    """Preflight: the model a source entry names can be imported (its files were hashed already)."""
    if "model" in params:
        load_object(params["model"], base_dir, what="model")


def load_model(params: dict[str, Any], base_dir: str | Path | None, num_classes: int,
               in_channels: int) -> nn.Module:
    """Build the model a source entry names and load its checkpoint (``weights_only=True``)."""
    from bench.core import models

    if "arch" in params:
        net = models.create(params["arch"], num_classes, in_channels)
        label = params["arch"]
    else:
        label = params["model"]
        factory = load_object(label, base_dir, what="model")
        net = _build(factory, label, num_classes, in_channels, dict(params.get("model_kwargs", {})))
    if "checkpoint" in params:
        path = resolve_path(params["checkpoint"], base_dir)
        models.load_state(net, models.read_state_dict(path), str(path), label)
    elif "weights" in params:
        from bench.core.archs_imagenet import load_torchvision_weights

        load_torchvision_weights(net, params["weights"], label)
    # A user's module is wrapped even without mean / std, so a missing features() is one clear line.
    model = Normalized(net, params.get("mean"), params.get("std")) if "mean" in params or "model" in params else net
    return model.eval()
