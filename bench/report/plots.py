"""Leaderboard pictures (matplotlib, PNG): robust accuracy versus eps, and the worst case per row.

- ``robust_vs_eps.png``: one line per (row, attack) that ran at several budgets of one norm, with
  95% Wilson intervals as error bars (the RMC and Deep Defense papers plot accuracy against eps).
- ``worst_case.png``: a horizontal bar per row, the worst case under the grid's main threat model,
  with its interval.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.core.stats import interval_of
from bench.report.rows import row_worst, table_rows
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


def worst_case_bars(records: list[dict[str, Any]], spec: GridSpec | None, budget: Budget, path: Path) -> Path | None:
    """One bar per row: the worst case under ``budget``, with its 95% interval."""
    bars = []
    for (train, runtime), recs in table_rows([r for r in records if r.get("status") == "ok"], spec).items():
        joint = row_worst(recs, budget)
        if joint:
            lo, hi = interval_of(joint)
            acc = 100 * joint.count("1") / len(joint)
            bars.append((f"{train}/{runtime}", acc, acc - 100 * lo, 100 * hi - acc))
    if not bars:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) + 1.2))
    ys = range(len(bars))
    ax.barh(list(ys), [b[1] for b in bars], xerr=[[b[2] for b in bars], [b[3] for b in bars]], capsize=3,
            color="#4878a8")
    ax.set_yticks(list(ys), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"worst-case robust accuracy under {budget_label(budget)} (%)")
    ax.set_title(f"Worst case per defense, {budget_label(budget)} (95% Wilson intervals)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
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
        p = worst_case_bars(records, spec, budget, folder / "worst_case.png")
        if p:
            out.append((f"worst case per defense under {budget_label(budget)}", p))
    p = robust_vs_eps(records, folder / "robust_vs_eps.png")
    if p:
        out.append(("robust accuracy versus eps", p))
    return out
