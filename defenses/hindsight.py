"""Hindsight adversarial training on the labelled test stream (RMC paper, Wu, Yuan, Wu, ICML 2020,
Section 5.3, Table 7): the baseline the non-masking RMC is compared with.

The points the defender has already classified, with their true labels revealed, form a training set
U. Point i is predicted with the weights fine-tuned on U = points 1..i-1 only; then (x_i, y_i) joins
U and the network takes ``steps`` Adam steps of PGD adversarial training (Madry et al.) on
minibatches drawn from U, ready for point i+1. Training stops for good once ``budget`` adversarial
examples have been generated (the paper stops at N' = 4|D|, the number of adversarial examples in
RMC's D'; default here: ``copies`` * |D|, the digits / MNIST D' size).

Choices (the paper leaves them open): one minibatch step per revealed point by default, the RMC
learning rate (25% of training), BatchNorm in eval mode as in RMC. The true labels reach the defense
through ``reveal(y)`` before ``predict`` (the runner and the PGD-Skip attacks call it); predicting
a point whose label was not revealed is an error, never a silent use of the prediction as label.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.contracts import StatefulDefense
from bench.core.data import Dataset
from bench.core.errors import BenchError
from bench.core.methods import register_defense as register


@register("hindsight-adv")
class HindsightAdv(StatefulDefense):
    """Adversarial fine-tuning on the earlier test points with revealed labels, as the stream goes."""

    needs_train_set = True  # |D| sets the default budget
    dataset_defaults = {
        "digits": {"lr": 2.5e-4, "eps": 0.1, "attack_steps": 10, "step_size": 0.025},
        "mnist": {"lr": 2e-4, "eps": 0.3, "attack_steps": 10, "step_size": 0.075},
        "cifar10": {"lr": 2.5e-5, "eps": 8 / 255, "attack_steps": 10, "step_size": 2 / 255, "copies": 4},
    }

    def __init__(self, lr: float = 2e-4, steps: int = 1, batch_size: int = 128, eps: float = 0.3,
                 attack_steps: int = 10, step_size: float | None = None, copies: int = 1,
                 budget: int | None = None, seed: int = 0, cache_dir: str | None = None) -> None:
        if int(steps) < 0 or int(batch_size) < 1 or int(attack_steps) < 1:
            raise BenchError(f"hindsight-adv needs steps >= 0, batch_size >= 1 and attack_steps >= 1, "
                             f"got {steps}, {batch_size}, {attack_steps}")
        if budget is not None and int(budget) < 0:
            raise BenchError(f"budget (adversarial examples) must be >= 0, got {budget}")
        self.lr, self.steps, self.batch_size = float(lr), int(steps), int(batch_size)
        self.eps, self.attack_steps = float(eps), int(attack_steps)
        self.step_size = None if step_size is None else float(step_size)
        self.copies, self.budget, self.seed = int(copies), None if budget is None else int(budget), int(seed)
        self.last_delays: list[float] = []
        self.last_stats: list[dict[str, Any]] = []
        self._labels: list[int] = []

    def prepare(self, model: nn.Module, train_set: Dataset | None = None) -> HindsightAdv:
        from bench.core.methods import create_attack

        super().prepare(model, train_set)
        self._budget = self.budget if self.budget is not None else self.copies * (len(train_set) if train_set else 0)
        self.adapted = copy.deepcopy(model).eval()
        for p in self.adapted.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.adapted.parameters(), lr=self.lr, foreach=True)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._pgd = create_attack("pgd", eps=self.eps, steps=self.attack_steps, step_size=self.step_size,
                                   random_start=True, seed=self.seed)
        self._u_x: list[torch.Tensor] = []
        self._u_y: list[int] = []
        self._generated = 0
        self._initial = self.snapshot()
        return self

    # -- state -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Weights, Adam state, the sampling generator, U and the budget spent."""
        return {"model": copy.deepcopy(self.adapted.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state(), "u_x": list(self._u_x), "u_y": list(self._u_y),
                "generated": self._generated}

    def restore(self, state: dict[str, Any]) -> None:
        self.adapted.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.generator.set_state(state["generator"])
        self._u_x, self._u_y, self._generated = list(state["u_x"]), list(state["u_y"]), int(state["generated"])
        self._labels = []

    def reset(self) -> None:
        self.restore(self._initial)

    @property
    def adapted_model(self) -> nn.Module:
        return self.adapted

    def reveal(self, y: torch.Tensor) -> None:
        """The true labels of the next points ``predict`` will see, in that order."""
        self._labels.extend(int(v) for v in torch.as_tensor(y).reshape(-1).tolist())

    # -- algorithm -------------------------------------------------------------------------------
    def train_step(self) -> int:
        """One adversarial-training step on a minibatch of U; returns the adversarial examples made."""
        n = min(self.batch_size, len(self._u_x), self._budget - self._generated)
        if n <= 0:
            return 0
        pick = torch.randperm(len(self._u_x), generator=self.generator)[:n].tolist()
        dev = self.device
        x = torch.cat([self._u_x[j] for j in pick]).to(dev)
        y = torch.tensor([self._u_y[j] for j in pick], device=dev)
        net = self.adapted
        for p in net.parameters():
            p.requires_grad_(False)
        try:
            self._pgd.seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
            x_adv = self._pgd(net, x, y).detach()
        finally:
            for p in net.parameters():
                p.requires_grad_(True)
        loss = F.cross_entropy(net(x_adv), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._generated += n
        return n

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predict each point with the weights trained on the points before it, then learn from it."""
        if len(self._labels) < len(x):
            raise BenchError(f"hindsight-adv needs the true labels of the points it sees: reveal(y) for {len(x)} "
                             f"points first ({len(self._labels)} revealed)")
        out, delays, stats = [], [], []
        for i in range(len(x)):
            t0 = time.perf_counter()
            xi = x[i : i + 1].to(self.device)
            with torch.no_grad():
                out.append(self.adapted(xi).detach().cpu())
            self.notify_prediction()
            self._u_x.append(xi.detach().cpu())
            self._u_y.append(self._labels.pop(0))
            made = sum(self.train_step() for _ in range(self.steps))
            delays.append(time.perf_counter() - t0)
            stats.append({"adv_examples": made})
        self.last_delays, self.last_stats = delays, stats
        return torch.cat(out) if out else torch.empty(0, 0)
