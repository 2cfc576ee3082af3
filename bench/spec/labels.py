"""Leaderboard column labels, without pandas or torch: shared by bench.report.leaderboard (which renders
them) and bench.spec.grid (which checks at load time that every ``[reference]`` key names one)."""

from __future__ import annotations

from typing import Any

Budget = tuple[str, float]


def fmt_eps(eps: float) -> str:
    """0.1 -> '0.1'; 8/255 -> '8/255' (the form papers quote)."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and round(k) >= 1 and abs(eps - round(eps, 3)) > 1e-9:
        return f"{round(k)}/255"
    return f"{eps:g}"


def budget_label(budget: Budget) -> str:
    return f"{budget[0]} {fmt_eps(budget[1])}"


def budget_of(rec: dict[str, Any]) -> Budget | None:
    """The threat model (norm, eps) of an eps-bounded record; None for minimal-norm attacks."""
    if rec.get("eps") is None:
        return None
    return (str(rec.get("norm") or "?"), float(rec["eps"]))


def attack_label(rec: dict[str, Any]) -> str:
    """Attack label with the threat model in parentheses when not ``base``: ``bpda (adaptive)``."""
    return rec["attack"] if rec["threat"] == "base" else f"{rec['attack']} ({rec['threat']})"


def column_label(rec: dict[str, Any]) -> str:
    """Attack label, threat model when not ``base``, and the budget (none for minimal-norm attacks)."""
    b = budget_of(rec)
    return attack_label(rec) if b is None else f"{attack_label(rec)} {budget_label(b)}"
