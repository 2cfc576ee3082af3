"""What a grid's ``[[figures]]`` tables may say (checked when the grid loads); bench.report.grid_figures draws them."""

from __future__ import annotations

from typing import Any

from bench.core.errors import BenchError
from bench.core.paths import check_name

FIGURE_KINDS = ("vs-points", "vs-param", "vs-eps", "neighbour-labels", "rho-vs-acc", "purifier-analysis")
METRICS = {"vs-points": ("robust_acc", "delay_s", "adapt_epochs"), "vs-param": ("robust_acc", "clean_acc"),
           "vs-eps": ("robust_acc", "success_rate"), "neighbour-labels": ("labels",), "rho-vs-acc": ("rho2",),
           # RIDE's Figure 7: (a) image distances after BPDA, (b) accuracy on adversarial vs defended images
           "purifier-analysis": ("distances", "accuracy")}
FIGURE_KEYS = {"name", "kind", "title", "metric", "rows", "attacks", "param", "by", "window", "point", "over_seeds"}


def check_figures(raw: Any, where: str) -> tuple[dict[str, Any], ...]:
    """Validate a grid's ``[[figures]]`` tables; one clear line per mistake."""
    if not isinstance(raw, list) or not all(isinstance(f, dict) for f in raw):
        raise BenchError(f"{where}: figures must be an array of tables ([[figures]])")
    out, names = [], set()
    for i, f in enumerate(raw):
        fw = f"{where}: figures[{i}]"
        extra = set(f) - FIGURE_KEYS
        if extra:
            raise BenchError(f"{fw}: unknown keys {', '.join(sorted(extra))}; valid: {', '.join(sorted(FIGURE_KEYS))}")
        kind = f.get("kind")
        if kind not in FIGURE_KINDS:
            raise BenchError(f"{fw}: kind must be one of {', '.join(FIGURE_KINDS)}, got {kind!r}")
        metric = f.get("metric", METRICS[kind][0])
        if metric not in METRICS[kind]:
            raise BenchError(f"{fw}: metric for {kind} must be one of {', '.join(METRICS[kind])}, got {metric!r}")
        for key in ("rows", "attacks"):
            v = f.get(key, [])
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise BenchError(f"{fw}: {key} must be a list of names, e.g. {key} = [\"rmc\"]")
        if kind == "vs-param" and not isinstance(f.get("param"), str):
            raise BenchError(f"{fw}: a vs-param figure needs param = \"<runtime hyperparameter>\", e.g. \"k\"")
        by = f.get("by", [])
        if "by" in f and (kind != "vs-param" or not isinstance(by, list) or not all(isinstance(s, str) for s in by)):
            raise BenchError(f"{fw}: by = [\"<runtime hyperparameter>\", ...] (one line per value as well as per "
                             "attack) is for vs-param figures only")
        window = f.get("window")
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise BenchError(f"{fw}: window must be a positive integer, got {window!r}")
        if "over_seeds" in f and (kind != "vs-points" or not isinstance(f["over_seeds"], bool)):
            raise BenchError(f"{fw}: over_seeds = true (one mean line per row and attack, its band the spread "
                             "over the grid's seeds) is for vs-points figures only")
        name = f.get("name") or f"figure{i + 1}-{kind}"
        check_name(name, f"{fw}: name")
        if name in names:
            raise BenchError(f"{fw}: name {name!r} is used by an earlier figure; each figure is one file")
        names.add(name)
        out.append({**f, "name": name, "metric": metric, "rows": list(f.get("rows", [])),
                    "attacks": list(f.get("attacks", [])),
                    **({"by": list(by)} if "by" in f else {})})
    return tuple(out)
