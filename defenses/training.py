"""One training loop for every train-time defense: seeded, resumable, with progress and callbacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.core.cache import atomic_torch_save, torch_load_or_none
from bench.core.contracts import EpochCallback
from bench.core.data import Dataset

#: loss_fn(model, x, y) -> (loss to minimise, logits on the clean batch for accuracy)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    from bench.core.errors import BenchError

    raise BenchError(f"unknown optimizer {name!r}; use adam or sgd")


def fit(
    model: nn.Module,
    train_set: Dataset,
    loss_fn: LossFn = cross_entropy_loss,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    seed: int = 0,
    device: torch.device | str = "cpu",
    callback: EpochCallback | None = None,
    resume_dir: str | Path | None = None,
    desc: str = "train",
    bn_eval: bool = False,
) -> nn.Module:
    """Minimise ``loss_fn`` over ``train_set`` for ``epochs`` epochs; returns the model in eval mode.

    With ``resume_dir``, the model, optimizer and RNG state are saved atomically after every epoch
    and training resumes from the last finished epoch. ``bn_eval`` keeps BatchNorm in eval mode
    (fine-tuning defenses such as Deep Defense).
    """
    device = torch.device(device)
    model.to(device)
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    start = 0
    state_path = Path(resume_dir) / "train_state.pt" if resume_dir is not None else None
    if state_path is not None:
        state = torch_load_or_none(state_path)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            start = int(state["epoch"])
    x, y = train_set.x, train_set.y
    n = len(y)
    for epoch in range(start, epochs):
        model.train()
        if bn_eval:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        perm = torch.randperm(n, generator=gen)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(range(0, n, batch_size), desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=None)
        for i in bar:
            idx = perm[i : i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss, logits = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        metrics = {"loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1)}
        if callback is not None:
            callback(epoch + 1, metrics)
        if state_path is not None:
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                               "epoch": epoch + 1}, state_path)
    return model.eval()
