"""Leaderboard pictures (matplotlib, PNG): robust accuracy versus eps, and the worst case per row.

- ``robust_vs_eps.png``: one line per (row, attack) that ran at several budgets of one norm, with
  95% Wilson intervals as error bars (the RMC and Deep Defense papers plot accuracy against eps).
- ``clean_vs_robust.png``: one point per row, clean accuracy against the worst case under the grid's
  main threat model, both with their 95% intervals (RobustBench plots its models this way): a
  defense is good when it sits high and to the right; one that buys robustness with clean accuracy
  shows as a point to the left. The undefended model is drawn as a hollow marker.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.core.stats import interval_of
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, budget_label, budget_of


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def robust_vs_eps(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Robust accuracy against eps per (row, attack, threat, norm) with two or more budgets."""
    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and budget_of(r) is not None:
            series[(r["train_defense"], r["runtime_defense"], r["attack"], r["threat"], r.get("norm"))].append(r)
    series = {k: sorted(v, key=lambda r: r["eps"]) for k, v in series.items() if len({r["eps"] for r in v}) > 1}
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (train, runtime, attack, threat, norm), rs in series.items():
        eps = [r["eps"] for r in rs]
        acc = [100 * r["robust_acc"] for r in rs]
        cis = [interval_of(r.get("per_example", "")) for r in rs]
        err = [[a - 100 * c[0] if c else 0 for a, c in zip(acc, cis)],
               [100 * c[1] - a if c else 0 for a, c in zip(acc, cis)]]
        threat_txt = "" if threat == "base" else f" ({threat})"
        ax.errorbar(eps, acc, yerr=err, marker="o", capsize=3, label=f"{train}/{runtime}: {attack}{threat_txt} {norm}")
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Robust accuracy versus eps (95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def clean_vs_robust(records: list[dict[str, Any]], spec: GridSpec | None, budget: Budget, path: Path) -> Path | None:
    """One point per row: clean accuracy (x) against the worst case under ``budget`` (y), each with its
    95% Wilson interval as error bars."""
    from bench.report.board import baseline_row, clean_drops, headline_rows

    rows = headline_rows(records, spec, budget)
    pts = [h for h in rows if isinstance(h["clean"], dict) and isinstance(h["worst"], dict)]
    if not pts:
        return None
    base = baseline_row(records, spec)
    drops = clean_drops(records, spec)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = plt.get_cmap("tab20").colors
    markers = "osD^v<>ph*"
    lows_x, highs_y = [], []
    for i, h in enumerate(pts):
        c, w = h["clean"], h["worst"]
        cx, wy = 100 * c["value"], 100 * w["value"]
        xerr = [[cx - 100 * c["ci"][0]], [100 * c["ci"][1] - cx]] if c.get("ci") else None
        yerr = [[wy - 100 * w["ci"][0]], [100 * w["ci"][1] - wy]]
        lows_x.append(100 * c["ci"][0] if c.get("ci") else cx)
        highs_y.append(100 * w["ci"][1])
        row = (h["train-time"], h["runtime"])
        color = colors[i % len(colors)]
        note = " (undefended)" if row == base else " (clean -%.0f)" % (100 * drops[row]) if row in drops else ""
        ax.errorbar([cx], [wy], xerr=xerr, yerr=yerr, fmt=markers[i % len(markers)], capsize=2, elinewidth=0.8,
                    color=color, markerfacecolor="white" if row == base else color, markersize=6,
                    label=f"{h['rank']}. {h['train-time']}/{h['runtime']}{note}")
        ax.annotate(str(h["rank"]), (cx, wy), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"worst-case robust accuracy under {budget_label(budget)} (%)")
    ax.set_xlim(max(0.0, min(lows_x) - 5), 100)  # zoomed on the rows, as RobustBench's plots are
    ax.set_ylim(0, min(100.0, max(highs_y) + 5))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="rank. row", title_fontsize=7)
    ax.set_title(f"Clean versus worst-case accuracy, {budget_label(budget)} (95% Wilson intervals)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_figures(records: list[dict[str, Any]], spec: GridSpec | None, folder: Path,
                  budget: Budget | None) -> list[tuple[str, Path]]:
    """Write every picture that has data into ``folder``; (title, path) of each written."""
    out = []
    if budget is not None:
        p = clean_vs_robust(records, spec, budget, folder / "clean_vs_robust.png")
        if p:
            out.append((f"clean accuracy versus the worst case under {budget_label(budget)}", p))
    p = robust_vs_eps(records, folder / "robust_vs_eps.png")
    if p:
        out.append(("robust accuracy versus eps", p))
    return out
