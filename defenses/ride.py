"""RIDE: robust iterative data estimation (Lin, Pfister, Zhang; Algorithms 1 and 2).

Each input owns a fresh fully-convolutional net h (3x3 convs, ReLU; MNIST 1->16->16->16->1, CIFAR
3->32->32->32->32->3, from the paper's Table 3) trained as a denoising autoencoder with noisy inputs
z ~ N(x_t, sigma) and noisy targets s ~ N(x_t, sigma) (MSE, Adam lr 1e-4, weight decay 1e-4,
mini-batch n = 1), K iterations per checkpoint, T checkpoints, x_t = alpha x_{t-1} + (1 - alpha)
x_est^(t), returning x_est^(T), where x_est = E_z[h(z)] over ``est_samples`` draws.

Two networks (``network``): ``"plain"`` (the default, what every published board ran: ReLU hidden
layers, a linear output, no dropout) and ``"table3"`` (the paper's Table 3 in full: dropout 0.5 after
the ReLU of MNIST's and CIFAR-10's conv2-conv3 and ImageNet's conv4-conv6, and a sigmoid on the output,
which Table 3 prescribes for images in (0, 1) as ours are). A ``table3`` training step costs about 10%
more CPU time than a ``plain`` one: 13.9 against 12.6 ms (fastest of 5 runs of 100 steps, 16 MNIST
test images at once, lr 1e-4, one thread of a loaded 2-core AMD EPYC, torch 2.14.1, CPU).

A whole batch of images trains at once: their nets are one grouped convolution (groups = batch), the
loss is the sum of the per-image losses and Adam is elementwise, so every image's net sees exactly
the updates it would see alone. Each image draws its noise and initial weights from its own seeded
generator, so a batch gives the same result as one image at a time with the same seeds: bit for bit in
float64; in float32 the convolutions sum in a different order, and over hundreds of Adam steps that
rounding can grow in a few images (measured: 1 of 16 digits differs by 0.02 after 2 x 100 steps).

Two training options for the supplement's Figure 9 ("fixed target image" against "target image with
random Gaussian noise", each at "random loss masking ratio" p = 0.9 and 0.8): ``target_noise`` (default
True, Eq. 7's noisy target s) and ``loss_mask`` (default 1.0, no masking); see :meth:`RIDE.__init__`.
Neither touches the estimation pass, so :class:`FrozenRIDE` replays either unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from bench.core import progress
from bench.core.contracts import Purifier
from bench.core.errors import BenchError
from bench.core.methods import register_defense as register

CHANNELS = {1: [16, 16, 16], 3: [32, 32, 32, 32]}  # hidden widths per input channel count (Table 3)
NETWORKS = ("plain", "table3")
DROPOUT = 0.5  # the paper's dropout ratio (Implementation of RIDE)
#: Table 3's dropout layers (0-based conv index; conv1 is 0) per (input channels, hidden layers):
#: MNIST conv2-conv3, CIFAR-10 conv2-conv3, ImageNet conv4-conv6.
TABLE3_DROPOUT = {(1, 3): (1, 2), (3, 4): (1, 2), (3, 7): (3, 4, 5)}
#: At most this many dropout-mask entries per image are drawn at once (a float each: 256 images of
#: 28x28 hold 64 MiB of float32 masks): masks come in chunks of
#: training steps, fewer steps for larger images (the chunk must not depend on the batch size, or a
#: batch would draw its images' masks in another order than one image at a time).
MASK_CHUNK = 2**16


class GroupedFCN:
    """B independent FCNs stored as grouped-conv weights: layer l has weight (B*out, in, 3, 3).

    ``dropout``: the conv layers (0-based) whose ReLU output goes through dropout when masks are given
    (training); ``sigmoid``: a sigmoid on the output layer (Table 3 for images in (0, 1))."""

    def __init__(self, widths: list[int], batch: int, generators: list[torch.Generator], device: torch.device,
                 dtype: torch.dtype = torch.float32, dropout: tuple[int, ...] = (), sigmoid: bool = False) -> None:
        self.batch, self.widths, self.dropout, self.sigmoid = batch, widths, tuple(dropout), sigmoid
        self.params: list[torch.Tensor] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            bound = 1 / math.sqrt(cin * 9)  # PyTorch's default conv init range
            w = torch.cat([(torch.rand(cout, cin, 3, 3, generator=g) * 2 - 1) * bound for g in generators])
            b = torch.cat([(torch.rand(cout, generator=g) * 2 - 1) * bound for g in generators])
            self.params += [w.to(device, dtype).requires_grad_(True), b.to(device, dtype).requires_grad_(True)]

    def frozen_copy(self) -> GroupedFCN:
        """A detached copy of the current weights (training goes on in this one)."""
        copy = GroupedFCN.__new__(GroupedFCN)
        copy.batch, copy.widths, copy.dropout, copy.sigmoid = self.batch, self.widths, self.dropout, self.sigmoid
        copy.params = [p.detach().clone() for p in self.params]
        return copy

    def draw_masks(self, generators: list[torch.Generator], steps: int, shape: tuple[int, int],
                   device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """Dropout masks for ``steps`` training steps, (steps, layers, B*width, H, W), each entry 0 or
        1 / (1 - p) (inverted dropout, p = 0.5); image i's from ``generators[i]`` (one draw per image
        per call, so a batch gets the masks its images get alone). None without dropout layers."""
        if not self.dropout:
            return None
        width = self.widths[self.dropout[0] + 1]
        n = steps * len(self.dropout) * width * shape[0] * shape[1]
        # p = 0.5: each mask is one random bit, eight to a random byte (a quarter of torch.rand's cost)
        bits = torch.arange(8, dtype=torch.uint8)
        per = [((torch.randint(0, 256, (-(-n // 8), 1), generator=g, dtype=torch.uint8) >> bits) & 1).view(-1)[:n]
               for g in generators]
        keep = torch.stack(per).view(len(generators), steps, len(self.dropout), width, *shape)
        masks = keep.transpose(0, 1).transpose(1, 2).reshape(steps, len(self.dropout), -1, *shape)
        return masks.to(device, dtype) * (1 / (1 - DROPOUT))

    def __call__(self, z: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """z: (S, B*C, H, W) -> (S, B*C, H, W); S samples per image share the image's net. ``masks``
        (layers, B*width, H, W), one step's from :meth:`draw_masks`: dropout on (training); None: off."""
        out = z
        n_layers = len(self.widths) - 1
        for i in range(n_layers):
            out = F.conv2d(out, self.params[2 * i], self.params[2 * i + 1], padding=1, groups=self.batch)
            if i < n_layers - 1:
                out = F.relu(out)
                if masks is not None and i in self.dropout:
                    out = out * masks[self.dropout.index(i)]
        return torch.sigmoid(out) if self.sigmoid else out


@register("ride")
class RIDE(Purifier):
    """Per-input self-supervised denoising with checkpoints and interpolation (randomised)."""

    randomized = True
    trains_per_point = True
    dataset_defaults = {
        # digits (our choice): far fewer iterations, a larger step, so 100 images take seconds on a CPU.
        "digits": {"iterations": 100, "checkpoints": 3, "lr": 1e-2, "sigma": 0.3},
        "mnist": {"iterations": 2000, "checkpoints": 5, "lr": 1e-4},
        "cifar10": {"iterations": 2000, "checkpoints": 5, "lr": 1e-4},
        # Table 3's ImageNet net: conv1-conv7 (3->32, then 32->32) and convn (32->3).
        "imagenet": {"iterations": 2000, "checkpoints": 5, "lr": 1e-4, "hidden_layers": 7},
    }

    #: RIDE's work per image and transform in Adam iterations, read by bench.run.estimate (not a product of
    #: its budgets): each checkpoint also runs ``est_samples`` forward passes (about a third of an
    #: iteration each) and each call sets up its nets (about one iteration). Fitted on 16 MNIST-shaped
    #: images, one thread: (2, 1) 0.27 s, (2, 2) 0.48 s, (100, 2) 8.9 s, on a loaded 2-core box.
    work_units_doc = "work checkpoints x (iterations + est_samples/3) + 1"

    @staticmethod
    def work_units(params: dict) -> float:
        return int(params["checkpoints"]) * (int(params["iterations"]) + int(params.get("est_samples", 8)) / 3) + 1

    @classmethod
    def param_problem(cls, name: str, value: object) -> str | None:
        """The Figure 9 options' ranges (checked when a grid loads and by the constructor)."""
        if name == "target_noise" and not isinstance(value, bool):
            return f"ride target_noise must be true or false, got {value!r}"
        if name == "loss_mask" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not 0 < value <= 1):
            return (f"ride loss_mask (the share of pixels kept in each training step's loss) must be in "
                    f"(0, 1], 1 for no masking; got {value!r}")
        return None

    def __init__(self, iterations: int = 2000, checkpoints: int = 5, sigma: float = 0.5, lr: float = 1e-4,
                 weight_decay: float = 1e-4, alpha: float = 0.9, est_samples: int = 8, seed: int = 0,
                 batch_size: int = 256, hidden_layers: int | None = None, eot_samples: int = 4,
                 network: Literal["plain", "table3"] = "plain", target_noise: bool = True,
                 loss_mask: float = 1.0) -> None:
        """``hidden_layers``: 3x3 conv layers before the output layer, of Table 3's width (16 for 1
        channel, 32 for 3); None: Table 3's MNIST / CIFAR-10 depth (3 / 4).

        ``est_samples``: draws of z averaged in each estimation pass x_est = E_z[h(z)]; 8 is our
        choice (the paper does not give its count).

        ``network``: ``"plain"`` (default; the net every published board ran) or ``"table3"``, Table 3
        in full: dropout 0.5 after the ReLU of Table 3's dropout layers and a sigmoid output. Dropout
        is active while the per-image net trains and off in the estimation pass x_est = E_z[h(z)]:
        the paper's ablation (Fig. 5a) names dropout beside DAE and iteration as a regulariser
        against the net fitting the perturbation, i.e. of training; the estimate is then the
        expectation over z alone (our reading: the paper does not say it outright). Table 3 gives
        depths 3 (MNIST, 1 channel), 4 (CIFAR-10) and 7 (ImageNet) only.

        ``target_noise``: True (default, Eq. 7): each training step's target is s ~ N(x_t, sigma);
        False: the supplement's Figure 9 "fixed target image", x_t itself (at the first checkpoint the
        input x~; the noise s is still drawn and discarded, so both settings see the same inputs z).

        ``loss_mask``: the supplement's "random loss masking ratio" p (Figure 9: 0.9, 0.8), read as the
        share of pixels KEPT: at each training step each pixel (all its channels) enters the MSE with
        probability p, independently, and the loss is the mean over the kept ones; 1.0 (default)
        masks nothing. The paper never defines p; our reading because 1.0 is then Algorithms 1-2
        without masking, of which both of Figure 9's values are mild variants (the other reading,
        p dropped, would train on 10-20% of the pixels, a regime the paper discusses nowhere).
        Masks come from each image's own generator, after its noise and dropout draws."""
        super().__init__(eot_samples=eot_samples)
        if int(iterations) < 1 or int(checkpoints) < 1:
            raise BenchError("ride needs iterations >= 1 and checkpoints >= 1")
        if hidden_layers is not None and int(hidden_layers) < 1:
            raise BenchError(f"ride hidden_layers must be at least 1, got {hidden_layers}")
        if network not in NETWORKS:
            raise BenchError(f"ride network must be one of {', '.join(map(repr, NETWORKS))}, got {network!r}")
        depths = sorted({d for _, d in TABLE3_DROPOUT})
        if network == "table3" and hidden_layers is not None and int(hidden_layers) not in depths:
            raise BenchError(f"ride network 'table3' has Table 3's depths only: hidden_layers "
                             f"{', '.join(map(str, depths[:-1]))} or {depths[-1]} (or leave it unset), "
                             f"got {hidden_layers}")
        for name, value in (("target_noise", target_noise), ("loss_mask", loss_mask)):
            problem = self.param_problem(name, value)
            if problem:
                raise BenchError(problem)
        self.network, self.target_noise, self.loss_mask = network, target_noise, float(loss_mask)
        self.hidden_layers = None if hidden_layers is None else int(hidden_layers)
        self.iterations, self.checkpoints, self.sigma = int(iterations), int(checkpoints), float(sigma)
        self.lr, self.weight_decay, self.alpha = float(lr), float(weight_decay), float(alpha)
        self.est_samples, self.seed, self.batch_size = int(est_samples), int(seed), int(batch_size)
        self._calls = 0

    def reset(self) -> None:
        """Restart the draw counter: the next transforms repeat the same randomness."""
        self._calls = 0

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform_frozen(x, keep=False)[0]

    def transform_frozen(self, x: torch.Tensor, keep: bool = True) -> tuple[torch.Tensor, FrozenRIDE | None]:
        """``transform(x)`` (the same draw: it advances the same counter) and, with ``keep``, the
        :class:`FrozenRIDE` that replays its estimation pass differentiably (for adaptive attacks)."""
        self._calls += 1  # fresh randomness per call (it is a random defense), reproducible per run
        seeds = [self.seed * 1_000_003 + self._calls * 10_007 + i for i in range(len(x))]
        outs, parts = [], []
        with progress.task("ride", len(x)) as bar:
            for i in range(0, len(x), self.batch_size):
                out, nets = self.purify_keep(x[i : i + self.batch_size], seeds[i : i + self.batch_size], keep)
                outs.append(out)
                parts.append(nets)
                bar.update(len(out))
        frozen = FrozenRIDE(parts, self.alpha, self.sigma, self.est_samples) if keep else None
        return torch.cat(outs), frozen

    def purify(self, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Algorithm 2 for a batch, image i driven by generator seed ``seeds[i]``."""
        return self.purify_keep(x, seeds, keep=False)[0]

    def purify_keep(self, x: torch.Tensor, seeds: list[int],
                    keep: bool = True) -> tuple[torch.Tensor, list[GroupedFCN]]:
        """``purify`` and, with ``keep``, copies of the trained net at each checkpoint (else [])."""
        b, c, h, w = x.shape
        if c not in CHANNELS:
            raise BenchError(f"ride has networks for 1 or 3 channels, got {c}")
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        hidden = CHANNELS[c] if self.hidden_layers is None else [CHANNELS[c][0]] * self.hidden_layers
        dropout: tuple[int, ...] = ()
        chunk = 50  # training steps whose noise (and masks) are drawn at once
        if self.network == "table3":
            if (c, len(hidden)) not in TABLE3_DROPOUT:
                rows = ", ".join(f"{k[1]} for {k[0]} channel(s)" for k in TABLE3_DROPOUT)
                raise BenchError(f"ride network 'table3' has Table 3's depths only ({rows}); got "
                                 f"{len(hidden)} hidden layers for {c} channel(s): set hidden_layers or use "
                                 f"network = \"plain\"")
            dropout = TABLE3_DROPOUT[(c, len(hidden))]
            chunk = max(1, min(chunk, MASK_CHUNK // (len(dropout) * hidden[0] * h * w)))
        net = GroupedFCN([c, *hidden, c], b, gens, x.device, x.dtype, dropout, sigmoid=self.network == "table3")
        opt = torch.optim.Adam(net.params, lr=self.lr, weight_decay=self.weight_decay)
        x_t = x.detach().reshape(1, b * c, h, w)
        snapshots: list[GroupedFCN] = []

        def noise(samples: int) -> torch.Tensor:
            per = [torch.randn(samples, c, h, w, generator=g) for g in gens]
            return torch.stack(per, 1).reshape(samples, b * c, h, w).to(x.device, x.dtype) * self.sigma

        with torch.enable_grad():
            for _ in range(self.checkpoints):
                for start in range(0, self.iterations, chunk):
                    steps = min(chunk, self.iterations - start)
                    zs, ss = noise(steps), noise(steps)
                    masks = net.draw_masks(gens, steps, (h, w), x.device, x.dtype)
                    kept = self.draw_loss_masks(gens, steps, (c, h, w), x.device, x.dtype)
                    for j in range(steps):
                        pred = net(x_t + zs[j : j + 1], None if masks is None else masks[j])
                        err = (pred - (x_t + ss[j : j + 1] if self.target_noise else x_t)).pow(2)
                        loss = self.masked_loss(err, b, None if kept is None else kept[j : j + 1])
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                if keep:
                    snapshots.append(net.frozen_copy())
                with torch.no_grad():  # dropout off: no masks
                    x_est = net(x_t + noise(self.est_samples)).mean(0, keepdim=True)
                x_t = self.alpha * x_t + (1 - self.alpha) * x_est
        return x_est.view(b, c, h, w).clamp(0, 1).detach(), snapshots

    def draw_loss_masks(self, generators: list[torch.Generator], steps: int, shape: tuple[int, int, int],
                        device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """Loss masks for ``steps`` training steps, (steps, B*C, H, W) of 0 / 1, each pixel kept with
        probability ``loss_mask`` (one draw for all its channels); image i's from ``generators[i]``.
        None at ``loss_mask = 1`` (and nothing drawn, so the default's random stream is unchanged)."""
        if self.loss_mask >= 1:
            return None
        c, h, w = shape
        per = [torch.rand(steps, 1, h, w, generator=g) < self.loss_mask for g in generators]
        return torch.stack(per, 1).expand(-1, -1, c, -1, -1).reshape(steps, len(generators) * c, h, w).to(device, dtype)

    @staticmethod
    def masked_loss(err: torch.Tensor, batch: int, kept: torch.Tensor | None) -> torch.Tensor:
        """Sum over the batch of each image's mean squared error ``err`` (1, B*C, H, W), over the
        entries ``kept`` (same shape, 0 / 1) where given (an image with none kept adds 0)."""
        if kept is None:
            return err.view(batch, -1).mean(1).sum()
        return ((err * kept).view(batch, -1).sum(1) / kept.view(batch, -1).sum(1).clamp(min=1)).sum()


class FrozenRIDE:
    """RIDE's estimation pass with the nets one ``transform`` call trained held fixed: x_0 = x,
    x_est^(t) = E_z[h_t(x_{t-1} + z)], x_t = alpha x_{t-1} + (1 - alpha) x_est^(t), returning
    x_est^(T) clamped to [0, 1] (Algorithm 2 given h_1..h_T), differentiable in x. The nets keep
    their network's output (the sigmoid of ``table3``) and, as RIDE's estimation pass, no dropout.

    At the input it was built from it reproduces the transform up to the draw of z; its gradient
    leaves out how training would move h_t with x (the straight-through part). Call it on a batch
    of the same length and order as that transform call's input."""

    def __init__(self, parts: list[list[GroupedFCN]], alpha: float, sigma: float, samples: int) -> None:
        self.parts, self.alpha, self.sigma, self.samples = parts, alpha, sigma, samples

    def __len__(self) -> int:
        return sum(p[0].batch for p in self.parts)

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None, samples: int | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> RIDE's estimate, averaging ``samples`` draws of z (default RIDE's own)."""
        if len(x) != len(self):
            raise BenchError(f"this FrozenRIDE was trained on {len(self)} images, got {len(x)}")
        s = self.samples if samples is None else int(samples)
        outs, start = [], 0
        for nets in self.parts:
            b = nets[0].batch
            xb = x[start : start + b]
            _, c, h, w = xb.shape
            x_t = xb.reshape(1, b * c, h, w)
            for net in nets:
                z = torch.randn(s, b * c, h, w, generator=gen).to(x.device, x.dtype) * self.sigma
                x_est = net(x_t + z).mean(0, keepdim=True)
                x_t = self.alpha * x_t + (1 - self.alpha) * x_est
            outs.append(x_est.view(b, c, h, w).clamp(0, 1))
            start += b
        return torch.cat(outs)
