"""Deep Defense's robustness metrics (Yan, Guo, Zhang, NeurIPS 2018, supplement section 1, Table 2).

- DeepFool l2 (supplement eq. 1): mean ||r||_2 of DeepFool's perturbation, and rho_2 = mean
  ||r||_2 / ||x||_2 (the main paper's metric). As the authors evaluate (deepdefense.pytorch, ``test``):
  DeepFool starts from the model's own prediction on every test image, and the perturbation is not
  clipped to [0, 1].
- FGS rho_inf (eq. 2): mean ||dx||_inf / ||x||_inf of the smallest FGS step that changes each image's
  prediction (bisection per image), and ``fgs_eps50``: the eps at which FGS misclassifies half the
  images (bisection over the set, the paper's benchmark eps).
- C&W l2: mean L2 of successful Carlini-Wagner L2 examples (``attacks.cw-l2``).
- PASS (Rozsa, Rudd, Boult, CVPRW 2016): SSIM(psi(x_adv, x), x), psi aligning x_adv to x by an ECC
  homography (OpenCV ``findTransformECC``), SSIM from scikit-image; computed on the DeepFool
  examples (clipped to [0, 1]). 1 for identical images; lower means a more visible perturbation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.optional import require

#: Record fields written by ``deep_defense_metrics`` and the leaderboard column each one becomes.
from bench.spec.metric_columns import COLUMNS  # noqa: E402,F401  (record field -> leaderboard column)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted labels, in batches."""
    return torch.cat([model(x[s]).argmax(1) for s in _batches(len(x), batch_size)])


def deepfool_perturbation(model: nn.Module, x: torch.Tensor, steps: int = 50, overshoot: float = 0.02,
                          batch_size: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepFool (Moosavi-Dezfooli et al. 2016) from the model's prediction, unclipped: (r, fooled)."""
    rs, fooled = [], []
    for s in _batches(len(x), batch_size):
        xb = x[s]
        pred = predict(model, xb)
        ar = torch.arange(len(xb), device=xb.device)
        shape = (-1, *([1] * (xb.dim() - 1)))
        r = torch.zeros_like(xb)
        active = torch.ones(len(xb), dtype=torch.bool, device=xb.device)
        for _ in range(steps):
            xi = (xb + (1 + overshoot) * r).requires_grad_(True)
            logits = model(xi)
            active &= logits.argmax(1) == pred
            if not active.any():
                break
            grads = torch.stack([torch.autograd.grad(logits[:, k].sum(), xi, retain_graph=True)[0]
                                 for k in range(logits.shape[1])], 1)
            w = grads - grads[ar, pred][:, None]
            f = (logits - logits.gather(1, pred[:, None])).detach()
            wn = w.flatten(2).norm(dim=2).clamp_min(1e-12)
            ratio = (f.abs() / wn).scatter(1, pred[:, None], float("inf"))
            best = ratio.argmin(1)
            step = ((ratio[ar, best] + 1e-4) / wn[ar, best]).view(shape) * w[ar, best]
            r = r + step * active.view(shape)
        r = (1 + overshoot) * r
        rs.append(r.detach())
        fooled.append(predict(model, xb + r) != pred)
    return torch.cat(rs), torch.cat(fooled)


def _fgs_direction(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), labels, reduction="sum"), xg)
    return g.sign()


def fgs_min_eps(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int = 20,
                hi: float = 1.0) -> torch.Tensor:
    """Per image, the smallest FGS eps (Goodfellow et al. 2015) at which the prediction leaves
    ``labels``, by bisection on [0, hi] to hi / 2**steps; NaN where eps = hi does not succeed."""
    sign = _fgs_direction(model, x, labels)

    def fooled(eps: torch.Tensor) -> torch.Tensor:
        return predict(model, (x + eps.view(-1, *([1] * (x.dim() - 1))) * sign).clamp(0, 1)) != labels

    lo_e = torch.zeros(len(x), device=x.device)
    hi_e = torch.full((len(x),), float(hi), device=x.device)
    ok = fooled(hi_e)
    for _ in range(steps):
        mid = (lo_e + hi_e) / 2
        f = fooled(mid)
        hi_e, lo_e = torch.where(f, mid, hi_e), torch.where(f, lo_e, mid)
    return torch.where(ok, hi_e, torch.full_like(hi_e, float("nan")))


def fgs_eps_at_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rate: float = 0.5, steps: int = 30,
                    hi: float = 1.0) -> float:
    """The eps at which FGS misclassifies a share ``rate`` of (x, y) (the paper's benchmark eps):
    bisection on [0, hi] for the smallest eps whose error rate reaches ``rate``."""
    sign = _fgs_direction(model, x, y)

    def error(eps: float) -> float:
        return float((predict(model, (x + eps * sign).clamp(0, 1)) != y).float().mean())

    lo, up = 0.0, float(hi)
    for _ in range(steps):
        mid = (lo + up) / 2
        lo, up = (lo, mid) if error(mid) >= rate else (mid, up)
    return up


def pass_score(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PASS per image: SSIM (scikit-image, Gaussian 11x11 window as in Wang et al. 2004; a smaller
    uniform window on images under 11 pixels) between x and x_adv aligned onto x by an ECC
    homography (OpenCV); unaligned where ECC does not converge."""
    cv2 = require("cv2", "pass", "the PASS metric (metrics = [\"deep-defense\"])", "opencv-python-headless")
    from skimage.metrics import structural_similarity

    out = []
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    for a_t, b_t in zip(x_adv.detach().cpu(), x.detach().cpu()):
        a = np.ascontiguousarray(a_t.permute(1, 2, 0).numpy(), dtype=np.float32)
        b = np.ascontiguousarray(b_t.permute(1, 2, 0).numpy(), dtype=np.float32)
        h, w, c = a.shape
        warp = np.eye(3, dtype=np.float32)
        try:
            _, warp = cv2.findTransformECC(b.mean(2), a.mean(2), warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 1)
            aligned = cv2.warpPerspective(a, warp, (w, h), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP)
        except cv2.error:  # ECC fails on flat images or when it does not converge: compare unaligned
            aligned = a
        aligned = aligned.reshape(h, w, c)
        if min(h, w) >= 11:
            ssim = structural_similarity(aligned, b, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        else:  # images smaller than the 11x11 Gaussian window (8x8 digits): the largest odd uniform window
            ssim = structural_similarity(aligned, b, data_range=1.0, channel_axis=2,
                                         win_size=min(h, w) - 1 + min(h, w) % 2)
        out.append(float(ssim))
    return torch.tensor(out)


def _mean(v: torch.Tensor) -> float | None:
    v = v[torch.isfinite(v)]
    return round(float(v.mean()), 6) if len(v) else None


def deep_defense_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, deepfool_steps: int = 50,
                         overshoot: float = 0.02, cw: dict[str, Any] | None = None, with_pass: bool = True,
                         batch_size: int = 100) -> dict[str, Any]:
    """Supplement Table 2's metrics of ``model`` on (x, y), as record fields (see ``COLUMNS``).

    ``cw``: parameters of ``attacks.cw-l2`` (None: skip C&W, the slowest metric)."""
    import attacks

    model.eval()
    x, y = x.detach(), y.detach()
    xnorm2 = x.flatten(1).norm(dim=1).clamp_min(1e-12)
    xnorm_inf = x.flatten(1).abs().amax(1).clamp_min(1e-12)
    r, fooled = deepfool_perturbation(model, x, deepfool_steps, overshoot, batch_size)
    l2 = r.flatten(1).norm(dim=1)
    pred = predict(model, x)
    eps = fgs_min_eps(model, x, pred)
    out: dict[str, Any] = {
        "deepfool_l2": round(float(l2.mean()), 6),
        "deepfool_l2_ci95": round(1.96 * float(l2.std()) / max(len(l2), 1) ** 0.5, 6) if len(l2) > 1 else None,
        "deepfool_rho2": round(float((l2 / xnorm2).mean()), 6),
        "deepfool_fooled": round(float(fooled.float().mean()), 6),
        "fgs_rho_inf": _mean(eps / xnorm_inf),
        "fgs_fooled": round(float(torch.isfinite(eps).float().mean()), 6),
        "fgs_eps50": round(fgs_eps_at_rate(model, x, y), 6),
    }
    if cw is not None:
        x_cw = attacks.create("cw-l2", **cw)(model, x, y)
        ok = (pred == y) & (predict(model, x_cw) != y)
        d = (x_cw - x).flatten(1).norm(dim=1)
        out["cw_l2"] = round(float(d[ok].mean()), 6) if ok.any() else None
        out["cw_success"] = round(float(ok.float().sum() / (pred == y).float().sum().clamp_min(1)), 6)
    if with_pass:
        out["pass"] = round(float(pass_score((x + r).clamp(0, 1), x).mean()), 6)
    return out


#: C&W settings per dataset family for the records: 5 binary-search steps of 100 Adam steps (CPU-sized).
CW_PARAMS = {"mnist": {"lr": 0.02, "steps": 100, "binary_search_steps": 5},
             "digits": {"lr": 0.05, "steps": 100, "binary_search_steps": 5},
             "cifar10": {"lr": 0.01, "steps": 100, "binary_search_steps": 5}}
_CACHE: dict[tuple[str, int], dict[str, Any]] = {}


def for_model(names: tuple[str, ...], model: nn.Module, model_key: str, x: torch.Tensor, y: torch.Tensor,
              family: str) -> dict[str, Any]:
    """The metrics a grid asks for (``metrics = ["deep-defense"]``), computed once per model and
    test set and merged into every record of that model."""
    if "deep-defense" not in names:
        return {}
    key = (model_key, len(x))
    if key not in _CACHE:
        _CACHE[key] = deep_defense_metrics(model, x, y, cw=CW_PARAMS.get(family, CW_PARAMS["mnist"]))
    return _CACHE[key]
