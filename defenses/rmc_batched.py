"""B independent RMC streams run together (RMC: Wu, Yuan, Wu, ICML 2020, Algorithm 1).

Cells that run RMC on the same model and D' but on different test streams (different attacks'
x_adv, or different sampling seeds) share everything but their weights, Adam state and sampling
generator. :class:`BatchedRMC` stacks those along a leading stream dimension and runs every Adam
step of all B streams as one ``torch.func.vmap`` of ``functional_call``, so each kernel launch
serves B streams. The streams run in lock step, epoch by epoch: a stream whose fit stopped early
drops out of the batch (its rows are neither computed nor written: weights and Adam state stay bit
for bit, its generator draws nothing more, exactly as the sequential RMC's); the best weights are
kept per stream with ``torch.where`` masks.

Exactness (float64): Adam is re-written functionally with torch.optim.Adam(foreach=True)'s
arithmetic (``_multi_tensor_adam``: lerp, mul + addcmul, sqrt / bias correction + eps, addcdiv).
vmap's own batching rules are not bitwise equal to the unbatched calls (about 1e-14 in float64):
``F.linear`` becomes matmul, then + bias (unbatched: one ``addmm``, bias inside the GEMM);
``F.conv2d`` becomes a grouped convolution with the bias added afterwards, on whatever layout the
previous op left (unbatched: channels-last input, as CIFAR images are stored, takes another kernel
path); eval-mode BatchNorm normalises and reduces in another order. :func:`exact_copy` gives the
private copy's ``nn.Linear`` / ``nn.Conv2d`` / ``nn.BatchNorm2d`` functions whose vmap rules are
``baddbmm``, one grouped convolution (forward and backward) in each stream's memory layout with the
bias inside, and one batch norm (forward and backward) over B*C channels: each equal, slice by
slice, to the unbatched kernel. Single-image predictions run per stream (a matrix-vector product
unbatched, a GEMM batched). Result: bit for bit equal to B sequential RMC streams (MLP, small CNN;
tests/test_rmc_batched.py) and the batched step equal on a CIFAR ResNet-20. Other layers fall back
to vmap's own rules (adaptive_avg_pool2d on channels-last input even to a per-stream loop).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from bench.core import progress
from bench.core.errors import BenchError
from defenses.rmc import RMC


class _AddmmLinear(torch.autograd.Function):
    """``F.linear`` on 2-D input (one ``addmm``) whose vmap rule is ``baddbmm``, not matmul + add."""

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.addmm(b, x, w.t())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x, w, _ = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # addmm's derivatives (mm_mat1_backward / mm_mat2_backward for a transposed weight; sum_to)
        x, w = ctx.saved_tensors
        return g.mm(w), g.t().mm(x), g.sum(0)

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], x: torch.Tensor, w: torch.Tensor,
             b: torch.Tensor) -> tuple[torch.Tensor, int]:
        n = info.batch_size
        x, w, b = (t.movedim(d, 0) if d is not None else t.expand(n, *t.shape)
                   for t, d in zip((x, w, b), in_dims))
        return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)), 0


def _grouped(t: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, C, H, W) -> (N, B*C, H, W) in the layout each stream's slice has (channels-last or not):
    the unbatched kernels take another path, with other rounding, for channels-last tensors."""
    fmt = torch.channels_last if t.stride(2) < t.stride(4) else torch.contiguous_format
    return t.movedim(0, 1).reshape(t.shape[1], n * t.shape[2], *t.shape[3:]).contiguous(memory_format=fmt)


def _batched(t: torch.Tensor | None, d: int | None, n: int) -> torch.Tensor | None:
    if t is None:
        return None
    return t.movedim(d, 0) if d is not None else t.expand(n, *t.shape)


class _Conv2dBackward(torch.autograd.Function):
    """``convolution_backward`` whose vmap rule is one grouped call in each stream's layout."""

    @staticmethod
    def forward(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, conf: tuple, mask: tuple) -> Any:
        stride, padding, dilation, groups = conf
        return torch.ops.aten.convolution_backward(g, x, w, [w.shape[0]] if mask[2] else None, stride, padding,
                                                   dilation, False, [0, 0], groups, list(mask))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:  # pragma: no cover - RMC never differentiates twice
        raise NotImplementedError("double backward through BatchedRMC's convolution")

    @staticmethod
    def vmap(info: Any, in_dims: tuple, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, conf: tuple,
             mask: tuple) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        n = info.batch_size
        g, x, w = (_batched(t, d, n) for t, d in zip((g, x, w), in_dims))
        stride, padding, dilation, groups = conf
        wg = w.reshape(n * w.shape[1], *w.shape[2:]).contiguous()
        gx, gw, gb = torch.ops.aten.convolution_backward(
            _grouped(g, n), _grouped(x, n), wg, [wg.shape[0]] if mask[2] else None, stride, padding, dilation,
            False, [0, 0], groups * n, list(mask))
        gx = None if gx is None else gx.reshape(gx.shape[0], n, -1, *gx.shape[2:]).movedim(1, 0)
        gw = gw.reshape(n, -1, *gw.shape[1:])
        gb = None if gb is None else gb.view(n, -1)
        return (gx, gw, gb), (None if gx is None else 0, 0, None if gb is None else 0)


class _Conv2d(torch.autograd.Function):
    """``F.conv2d`` whose vmap rule is one grouped convolution on a contiguous (N, B*C, H, W) input,
    with the bias inside. vmap's own rule adds the bias afterwards and passes the kernel whatever
    layout the previous op left; both round differently from the unbatched call."""

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, conf: tuple) -> torch.Tensor:
        return F.conv2d(x, w, b, *conf)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, w, b, ctx.conf = inputs
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, w = ctx.saved_tensors
        mask = (bool(ctx.needs_input_grad[0]), True, ctx.has_bias)
        gx, gw, gb = _Conv2dBackward.apply(g, x, w, ctx.conf, mask)
        return gx, gw, gb, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
             conf: tuple) -> tuple[torch.Tensor, int]:
        n = info.batch_size
        x, w, b = (_batched(t, d, n) for t, d in zip((x, w, b), in_dims[:3]))
        stride, padding, dilation, groups = conf
        out = F.conv2d(_grouped(x, n), w.reshape(n * w.shape[1], *w.shape[2:]).contiguous(),
                       None if b is None else b.reshape(-1), stride, padding, dilation, groups * n)
        return out.reshape(out.shape[0], n, -1, *out.shape[2:]).movedim(1, 0), 0


def _exact_conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 4 and self.padding_mode == "zeros" and isinstance(self.padding, tuple):
        return _Conv2d.apply(x, self.weight, self.bias, (self.stride, self.padding, self.dilation, self.groups))
    return self._conv_forward(x, self.weight, self.bias)


def _stack_channels(info: Any, in_dims: tuple, *ts: torch.Tensor) -> list[torch.Tensor]:
    """Per-stream (N, C, ...) activations and (C,) vectors as one (N, B*C, ...) / (B*C,) problem."""
    n, out = info.batch_size, []
    for t, d in zip(ts, in_dims):
        t = t.movedim(d, 0) if d is not None else t.expand(n, *t.shape)
        out.append(t.reshape(n * t.shape[1]) if t.dim() == 2 else t.movedim(0, 1).reshape(t.shape[1], -1, *t.shape[3:]))
    return out


def _unstack_channels(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.reshape(t.shape[0], n, -1, *t.shape[2:]).movedim(1, 0)


class _EvalBatchNormBackward(torch.autograd.Function):
    """BatchNorm's eval-mode backward (``native_batch_norm_backward``), batched over streams as one
    call on B*C channels: each channel's sums run as in the unbatched kernel."""

    @staticmethod
    def forward(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.ops.aten.native_batch_norm_backward(g, x, w, mean, var, None, None, False, eps,
                                                         [True, True, True])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:  # pragma: no cover - RMC never differentiates twice
        raise NotImplementedError("double backward through BatchedRMC's batch norm")

    @staticmethod
    def vmap(info: Any, in_dims: tuple, g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mean: torch.Tensor,
             var: torch.Tensor, eps: float) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
        n = info.batch_size
        g, x, w, mean, var = _stack_channels(info, in_dims[:5], g, x, w, mean, var)
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(g, x, w, mean, var, None, None, False, eps,
                                                               [True, True, True])
        return (_unstack_channels(gx, n), gw.view(n, -1), gb.view(n, -1)), (0, 0, 0)


class _EvalBatchNorm(torch.autograd.Function):
    """BatchNorm with frozen statistics whose vmap rule is one batch norm over B*C channels (vmap's own
    rule normalises in another order: about 1e-14 apart in float64)."""

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                eps: float) -> torch.Tensor:
        return F.batch_norm(x, mean, var, w, b, False, 0.0, eps)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        x, w, _, mean, var, ctx.eps = inputs
        ctx.save_for_backward(x, w, mean, var)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, w, mean, var = ctx.saved_tensors
        gx, gw, gb = _EvalBatchNormBackward.apply(g, x, w, mean, var, ctx.eps)
        return gx, gw, gb, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor,
             var: torch.Tensor, eps: float) -> tuple[torch.Tensor, int]:
        x, w, b, mean, var = _stack_channels(info, in_dims[:5], x, w, b, mean, var)
        return _unstack_channels(F.batch_norm(x, mean, var, w, b, False, 0.0, eps), info.batch_size), 0


def _exact_bn_forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if (not self.training and self.affine and self.running_mean is not None and x.dim() == 4):
        return _EvalBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)
    return nn.BatchNorm2d.forward(self, x)


def _exact_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2 and self.bias is not None:
        return _AddmmLinear.apply(x, self.weight, self.bias)
    return F.linear(x, self.weight, self.bias)


def exact_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose ``nn.Linear``, ``nn.Conv2d`` and eval ``nn.BatchNorm2d``
    compute, under ``vmap`` over stacked weights, exactly what each stream's unbatched call computes."""
    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if type(m) is nn.Linear:
            m.forward = _exact_linear_forward.__get__(m)
        elif type(m) is nn.Conv2d:
            m.forward = _exact_conv_forward.__get__(m)
        elif type(m) is nn.BatchNorm2d:
            m.forward = _exact_bn_forward.__get__(m)
    return net


def can_batch(defense: Any) -> bool:
    """Whether :class:`BatchedRMC` reproduces ``defense``'s stream: a prepared RMC (or the
    non-masking RMC) whose per-point steps are RMC's own, with plain Adam, in float32 (the batched
    steps have no bfloat16 autocast: a ``precision = "bfloat16"`` RMC runs one stream at a time, so its
    records' ``adapt_precision`` stays true). RMC+ rewrites D' per point; a subclass with its own adapt /
    calibrate / predict (or one that learns from revealed labels) runs its streams one by one."""
    cls = type(defense)
    if not isinstance(defense, RMC) or not hasattr(defense, "adapted") or defense.precision != "float32":
        return False
    # reveal: the contract's default ignores labels; a defense that learns from them overrides it
    if any(getattr(cls, m) is not getattr(RMC, m) for m in ("refresh_database", "adapt", "calibrate_step",
                                                             "fit_early_stopped", "predict", "reveal")):
        return False
    group = defense.optimizer.param_groups[0]
    return not (group["weight_decay"] or group["amsgrad"] or group["maximize"] or isinstance(group["lr"], torch.Tensor))


class BatchedRMC:
    """Run B independent streams of a prepared :class:`~defenses.rmc.RMC` together.

    ``template``: a prepared RMC (its model, D', index, D and hyperparameters are shared; its weights
    and Adam state at construction are every stream's start, normally the state right after
    ``prepare``). ``seeds``: one sampling seed per stream (default: the template's ``seed`` for all,
    which is what B sequential RMC defenses with that seed draw). RMC+ rewrites D', which streams
    cannot share: it is refused.
    """

    def __init__(self, template: RMC, streams: int, seeds: Sequence[int] | None = None,
                 exact: bool = True) -> None:
        if type(template).refresh_database is not RMC.refresh_database:
            raise BenchError(f"{type(template).__name__} rewrites D' per point, which batched streams cannot "
                             "share; run it sequentially (only plain RMC and rmc-nonmasking batch)")
        if not hasattr(template, "adapted"):
            raise BenchError("BatchedRMC needs a prepared RMC: call .prepare(model, train_set) first")
        if int(streams) < 1:
            raise BenchError(f"streams must be at least 1, got {streams}")
        group = template.optimizer.param_groups[0]
        if (group["weight_decay"] != 0 or group["amsgrad"] or group["maximize"]
                or isinstance(group["lr"], torch.Tensor)):
            raise BenchError("BatchedRMC reproduces plain Adam only (no weight decay, amsgrad, maximize)")
        self.rmc, self.B = template, int(streams)
        self.device = next(template.adapted.parameters()).device
        self.seeds = [template.seed] * self.B if seeds is None else [int(s) for s in seeds]
        if len(self.seeds) != self.B:
            raise BenchError(f"{len(self.seeds)} seeds for {self.B} streams: give one seed per stream")
        self.lr, (self.beta1, self.beta2), self.eps = float(group["lr"]), group["betas"], group["eps"]
        self.net = exact_copy(template.adapted) if exact else copy.deepcopy(template.adapted).eval()
        names = [n for n, _ in template.adapted.named_parameters()]
        self.names = names
        self.buffers = {n: b.detach() for n, b in self.net.named_buffers()}
        self.params = {n: p.detach().unsqueeze(0).repeat(self.B, *[1] * p.dim())
                       for n, p in template.adapted.named_parameters()}
        state = template.optimizer.state
        live = list(template.adapted.parameters())
        self.exp_avg = {n: (state[p]["exp_avg"] if p in state else torch.zeros_like(p)).detach()
                        .unsqueeze(0).repeat(self.B, *[1] * p.dim()) for n, p in zip(names, live)}
        self.exp_avg_sq = {n: (state[p]["exp_avg_sq"] if p in state else torch.zeros_like(p)).detach()
                           .unsqueeze(0).repeat(self.B, *[1] * p.dim()) for n, p in zip(names, live)}
        # one step count per stream (every parameter of a stream steps together, as in one Adam)
        self.steps = [float(state[live[0]]["step"]) if live[0] in state else 0.0] * self.B
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.last_stats: list[list[dict[str, Any]]] = []
        self.last_timing: dict[str, float] = {}
        #: wall seconds of each point's step, all B streams together (one stream's share: / B)
        self.last_delays: list[float] = []
        self._loss_grad = vmap(grad(self._loss))
        self._forward = vmap(self._logits)

    # -- functional pieces ------------------------------------------------------------------------
    def _logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, (params, self.buffers), (x,))

    def _loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self._logits(params, x), y)

    def _index(self, rows: list[int] | list[bool]) -> torch.Tensor:
        """Stream indices or masks on the weights' device (a CPU index into CUDA weights is refused
        by index_copy and torch.where)."""
        return torch.tensor(rows, device=self.device)

    def _rows(self, sel: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.params if sel is None else {n: t[sel] for n, t in self.params.items()}

    @torch.no_grad()
    def _val_losses(self, x: torch.Tensor, y: torch.Tensor, streams: list[int]) -> dict[int, float]:
        sel = None if len(streams) == self.B else self._index(streams)
        logits = self._forward(self._rows(sel), x if sel is None else x[sel])
        return {b: float(F.cross_entropy(logits[j], y[b])) for j, b in enumerate(streams)}

    def _mask(self, keep: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return keep.view(-1, *[1] * (t.dim() - 1))

    @torch.no_grad()
    def _adam_step(self, grads: dict[str, torch.Tensor], streams: list[int]) -> None:
        """torch.optim.Adam(foreach=True)'s update (``_multi_tensor_adam``) for the rows ``streams``
        (grads hold those rows, in that order); the other streams' weights and moments are untouched."""
        sel = None if len(streams) == self.B else self._index(streams)
        for b in streams:
            self.steps[b] += 1.0
        # Python floats, as Adam's _get_value(step): one bias correction per stream
        bc1 = [1 - self.beta1 ** self.steps[b] for b in streams]
        bc2_sqrt = [(1 - self.beta2 ** self.steps[b]) ** 0.5 for b in streams]
        for n in self.names:
            rows = [self.params[n], self.exp_avg[n], self.exp_avg_sq[n]]
            p, ea, eas = rows if sel is None else [t[sel] for t in rows]
            g = grads[n]
            shape = (len(streams), *[1] * (p.dim() - 1))
            step_size = torch.tensor([(self.lr / c) * -1 for c in bc1], dtype=p.dtype, device=p.device).view(shape)
            ea = torch.lerp(ea, g, 1 - self.beta1)
            eas = (eas * self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (eas.sqrt() / torch.tensor(bc2_sqrt, dtype=p.dtype, device=p.device).view(shape)).add_(self.eps)
            new = p + step_size * ea / denom  # addcdiv: self + value * t1 / t2, in that order
            if sel is None:
                self.params[n], self.exp_avg[n], self.exp_avg_sq[n] = new, ea, eas
            else:
                self.params[n] = self.params[n].index_copy(0, sel, new)
                self.exp_avg[n] = self.exp_avg[n].index_copy(0, sel, ea)
                self.exp_avg_sq[n] = self.exp_avg_sq[n].index_copy(0, sel, eas)

    def fit_early_stopped(self, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor,
                          y_val: torch.Tensor) -> tuple[list[int], list[str]]:
        """RMC.fit_early_stopped for every stream at once: x (B, n, ...), y (B, n), x_val (B, m, ...).
        Returns the epochs each stream ran and why it stopped (``"early"`` or ``"cap"``). Each step
        runs only the streams still fitting: a stopped one costs nothing and stays exactly as it is."""
        rmc, B = self.rmc, self.B
        best_loss = self._val_losses(x_val, y_val, list(range(B)))
        improved, stall, done = [False] * B, [0] * B, [0] * B
        stop, active = ["cap"] * B, list(range(B))
        best = {n: t.clone() for n, t in self.params.items()}
        n, bs = x.shape[1], rmc.batch_size
        for epoch in range(1, rmc.max_epochs + 1):
            if not active:
                break
            sel = self._index(active)
            # drawn on the CPU generators (the sequential RMC's draws), then moved
            perm = torch.stack([torch.randperm(n, generator=self.generators[b]) for b in active]).to(self.device)
            rows = sel.unsqueeze(1)
            for b in active:
                done[b] = epoch
            for i in range(0, n, bs):
                idx = perm[:, i : i + bs]
                grads = self._loss_grad(self._rows(None if len(active) == B else sel), x[rows, idx], y[rows, idx])
                self._adam_step(grads, active)
            val = self._val_losses(x_val, y_val, active)
            better = [False] * B
            for b in list(active):
                if val[b] < best_loss[b] - rmc.improvement(best_loss[b]):
                    best_loss[b], improved[b], stall[b], better[b] = val[b], True, 0, True
                else:
                    stall[b] += 1
                    if stall[b] >= rmc.patience:
                        stop[b] = "early"
                        active.remove(b)
            if any(better):
                keep = self._index(better)
                best = {k: torch.where(self._mask(keep, t), self.params[k], t) for k, t in best.items()}
        if any(improved):  # a stream that never improved keeps its last epoch's weights, as RMC
            keep = self._index(improved)
            self.params = {k: torch.where(self._mask(keep, t), best[k], t) for k, t in self.params.items()}
        return done, stop

    # -- the stream -------------------------------------------------------------------------------
    def _neighbours(self, x_points: torch.Tensor) -> list[torch.Tensor]:
        # one search per stream: a batched faiss / conv call is not guaranteed to equal B single ones
        rmc = self.rmc
        return [rmc.index.search(rmc.embed(x_points[b : b + 1].to(rmc.device)).detach(), rmc.k)[1][0]
                for b in range(self.B)]

    def _fit_on(self, source: Any, picks: list[torch.Tensor]) -> tuple[list[int], list[str]]:
        split = [self.rmc.split_neighbours(i) for i in picks]
        dev = self.rmc.device

        def gather(t: torch.Tensor, which: int) -> torch.Tensor:
            return torch.stack([t[s[which]] for s in split]).to(dev)

        return self.fit_early_stopped(gather(source.x, 0), gather(source.y, 0), gather(source.x, 1),
                                      gather(source.y, 1))

    @torch.no_grad()
    def _predict_points(self, x_points: torch.Tensor) -> torch.Tensor:
        # one forward per stream: a single image is a matrix-vector product unbatched but a batched
        # GEMM under vmap (they round differently), and B one-image forwards cost nothing next to a fit
        dev = self.rmc.device
        return torch.cat([self._logits(self.weights(b), x_points[b : b + 1].to(dev)).detach().cpu()
                          for b in range(self.B)])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, ...): stream b's N points in order. Returns the logits (B, N, classes); per-point
        stats per stream in ``last_stats[b]`` (as RMC.last_stats)."""
        rmc = self.rmc
        if x.shape[0] != self.B:
            raise BenchError(f"x holds {x.shape[0]} streams, this BatchedRMC runs {self.B}")
        out, stats, delays = [], [[] for _ in range(self.B)], []
        timing = {"search_and_adapt": 0.0, "predict": 0.0, "calibrate": 0.0}
        for i in progress.steps(range(x.shape[1]), f"{getattr(rmc, 'registry_name', 'rmc')} stream x{self.B}"):
            t0 = time.perf_counter()
            xi = x[:, i]
            if not rmc.masking:
                out.append(self._predict_points(xi))
            t1 = time.perf_counter()
            epochs, why = self._fit_on(rmc.database, self._neighbours(xi))
            point = [{"adapt_epochs": e, "adapt_stop": s} for e, s in zip(epochs, why)]
            t2 = time.perf_counter()
            if rmc.masking:
                out.append(self._predict_points(xi))
            t3 = time.perf_counter()
            if rmc.calibrate:
                picks = [torch.randperm(len(rmc.train_set), generator=g)[: rmc.k] for g in self.generators]
                epochs, why = self._fit_on(rmc.train_set, picks)
                for rec, e, s in zip(point, epochs, why):
                    rec.update(calib_epochs=e, calib_stop=s)
            t4 = time.perf_counter()
            timing["search_and_adapt"] += t2 - t1
            timing["predict"] += (t1 - t0) + (t3 - t2)
            timing["calibrate"] += t4 - t3
            delays.append(t4 - t0)
            for b in range(self.B):
                stats[b].append(point[b])
        self.last_stats, self.last_timing, self.last_delays = stats, timing, delays
        return torch.stack(out, 1) if out else torch.empty(self.B, 0, 0)

    def weights(self, stream: int) -> dict[str, torch.Tensor]:
        """Stream ``stream``'s current parameters, by name (as ``adapted.named_parameters()``)."""
        return {n: t[stream] for n, t in self.params.items()}

    def adam_state(self, stream: int) -> list[dict[str, Any]]:
        """Stream ``stream``'s Adam moments and step, in parameter order (as Adam's state dict)."""
        return [{"step": self.steps[stream], "exp_avg": self.exp_avg[n][stream],
                 "exp_avg_sq": self.exp_avg_sq[n][stream]} for n in self.names]
