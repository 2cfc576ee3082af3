"""Total-variation minimisation (Guo, Rana, Cisse, van der Maaten, ICLR 2018) with scikit-image.

scikit-image's two solvers weight in opposite directions: ``denoise_tv_chambolle(weight=w)`` is the
TV strength (larger = smoother), ``denoise_tv_bregman(weight=w)`` is the data-fidelity weight
(smaller = smoother). We expose one knob, ``strength`` (larger = smoother), passed as
``weight=strength`` to Chambolle and ``weight=1/strength`` to split Bregman. With ``drop > 0`` each
pixel is dropped at random first (Guo et al. use 0.5) and refilled with the mean of its kept 3x3
neighbours before TV (their TV reconstruction from the kept pixels, approximated); the transform is
then random (``randomized``), so adaptive attacks use EOT. Images run in parallel threads.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from bench.core.contracts import EOT_SAMPLES, Purifier
from bench.core.errors import BenchError
from bench.core.methods import register_defense as register

METHODS = ("chambolle", "bregman")


def tv_denoise(image: np.ndarray, strength: float, method: str) -> np.ndarray:
    """One CHW float image in [0, 1] -> TV-denoised CHW."""
    from skimage.restoration import denoise_tv_bregman, denoise_tv_chambolle

    hwc = np.moveaxis(image, 0, -1)
    axis = -1 if hwc.shape[-1] > 1 else None
    img = hwc[..., 0] if axis is None else hwc
    if method == "chambolle":
        out = denoise_tv_chambolle(img, weight=strength, channel_axis=axis)
    else:
        out = denoise_tv_bregman(img, weight=1.0 / strength, channel_axis=axis)
    out = out[..., None] if axis is None else out
    return np.moveaxis(out, -1, 0).astype(np.float32)


@register("tvm")
class TVM(Purifier):
    """Total-variation minimisation (split Bregman or Chambolle), optional random pixel dropping."""

    dataset_defaults = {"digits": {"strength": 0.1}, "mnist": {"strength": 0.1}, "cifar10": {"strength": 0.05}}

    def __init__(self, strength: float = 0.1, method: str = "chambolle", drop: float = 0.0, seed: int = 0,
                 workers: int | None = None, eot_samples: int = EOT_SAMPLES) -> None:
        super().__init__(eot_samples=eot_samples)
        if method not in METHODS:
            raise BenchError(f"tvm method must be one of {', '.join(METHODS)}, got {method!r}")
        if float(strength) <= 0:
            raise BenchError(f"tvm strength must be positive, got {strength}")
        if not 0 <= float(drop) < 1:
            raise BenchError(f"tvm drop rate must lie in [0, 1), got {drop}")
        self.strength, self.method, self.drop, self.seed = float(strength), method, float(drop), int(seed)
        self.workers = workers or os.cpu_count() or 1
        self._gen = torch.Generator().manual_seed(self.seed)

    def reset(self) -> None:
        """Reseed the pixel-dropping generator: the next transforms repeat the same draws."""
        self._gen = torch.Generator().manual_seed(self.seed)

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return self.drop > 0

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        keep = (torch.rand(x.shape[0], 1, *x.shape[2:], generator=self._gen) >= self.drop).to(x.device, x.dtype)
        ones = torch.ones(1, 1, 3, 3, device=x.device, dtype=x.dtype)
        c = x.shape[1]
        num = F.conv2d(x * keep, ones.repeat(c, 1, 1, 1), padding=1, groups=c)
        den = F.conv2d(keep, ones, padding=1).clamp_min(1.0)
        return x * keep + (num / den) * (1 - keep)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop > 0:
            x = self._drop(x)
        arr = x.detach().cpu().numpy()
        with ThreadPoolExecutor(self.workers) as pool:
            out = list(pool.map(lambda im: tv_denoise(im, self.strength, self.method), arr))
        return torch.from_numpy(np.stack(out)).to(x.device).clamp_(0, 1)
