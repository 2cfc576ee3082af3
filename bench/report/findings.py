"""Findings generated from the records: only the differences an exact McNemar test supports.

Which comparisons (a small, fixed set, so the number of tests stays readable):

1. per threat model (norm, eps), each defended row against the undefended row (the grid's base model
   without a runtime defense) on the worst case, the share of examples that survive every attack of
   that budget in the row;
2. per threat model, within each row with two or more attacks of that budget, the strongest attack
   (lowest robust accuracy) against the next strongest: does one attack stand out.

Both sides of a test are outcomes on the *same* test points, so the exact McNemar test applies
(McNemar, Psychometrika 1947; two-sided exact binomial on the discordant pairs, bench.core.stats). A
difference is listed when p < ``ALPHA``; every other pair is reported as "not distinguishable" with
its p. Holm's step-down correction (Holm, Scand. J. Statistics 1979) over all tests of the board is
given beside each listed difference, so a reader can see which survive the multiple comparisons.
A row whose records carry no per-example outcomes is skipped with a word. Pure Python, no torch.
"""

from __future__ import annotations

from typing import Any

from bench.core.stats import mcnemar
from bench.report.board import ALPHA, baseline_row, ok_records, threat_models
from bench.report.rows import row_worst, table_rows
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, attack_label, budget_label, budget_of

SCOPE = ("Comparisons: per threat model, each defended row against the undefended row on the worst case, "
         "and within each row its strongest attack against the next strongest")

WORST = "worst case vs undefended"
ATTACKS = "strongest attack vs next"


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone), in the order given."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _test(budget: Budget, kind: str, a: str, b: str, oa: str, ob: str, row: str = "") -> dict[str, Any]:
    """One paired test; rows with their own, smaller limit saw a prefix of the same test points."""
    m = min(len(oa), len(ob))
    only_a, only_b, p = mcnemar(oa[:m], ob[:m])
    return {"budget": budget_label(budget), "kind": kind, "row": row, "a": a, "b": b,
            "acc_a": oa[:m].count("1") / m, "acc_b": ob[:m].count("1") / m, "n": m,
            "prefix": len(oa) != len(ob), "only_a": only_a, "only_b": only_b, "p": p}


def _complete(recs: list[dict[str, Any]], budget: Budget) -> bool:
    """Every record of the budget has per-example outcomes of one length."""
    mine = [r.get("per_example") or "" for r in recs if budget_of(r) == budget]
    return bool(mine) and all(mine) and len({len(s) for s in mine}) == 1


def findings(records: list[dict[str, Any]], spec: GridSpec | None) -> dict[str, Any]:
    """The board's findings as plain data: ``scope`` (which comparisons), ``tests`` (each with
    counts, p, Holm-adjusted ``p_holm`` and ``difference`` = p < ALPHA) and ``skipped`` (why a row or
    a comparison could not be tested)."""
    ok = ok_records(records)
    rows = table_rows(ok, spec)
    base = baseline_row(ok, spec)
    tests: list[dict[str, Any]] = []
    skipped: list[str] = []
    for budget in threat_models(ok, spec):
        label = budget_label(budget)
        have = {row: recs for row, recs in rows.items() if any(budget_of(r) == budget for r in recs)}
        for row, recs in have.items():
            if not _complete(recs, budget):
                skipped.append(f"{label}: {'/'.join(row)} (no per-example results in its records, or of "
                               "different lengths)")
        complete = {row: recs for row, recs in have.items() if _complete(recs, budget)}
        if base is None or base not in complete:
            if len(complete) > 1:
                skipped.append(f"{label}: defended rows against the undefended row (no undefended row "
                               "with per-example results)")
        else:
            joint_base = row_worst(complete[base], budget)
            for row, recs in complete.items():
                if row != base:
                    tests.append(_test(budget, WORST, "/".join(row), "/".join(base),
                                       row_worst(recs, budget), joint_base))
        for row, recs in complete.items():
            attacks = sorted((r for r in recs if budget_of(r) == budget),
                             key=lambda r: (r["per_example"].count("1") / len(r["per_example"]), attack_label(r)))
            if len(attacks) >= 2:
                strong, next_ = attacks[0], attacks[1]
                tests.append(_test(budget, ATTACKS, attack_label(strong), attack_label(next_),
                                   strong["per_example"], next_["per_example"], row="/".join(row)))
    for t, adj in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = adj
        t["difference"] = t["p"] < ALPHA
    return {"scope": SCOPE, "alpha": ALPHA, "tests": tests, "skipped": skipped}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def finding_text(t: dict[str, Any], n_tests: int) -> str:
    """One test as a sentence fragment: the two accuracies, the discordant counts and p."""
    on = f" on the first {t['n']} examples" if t["prefix"] else f" of {t['n']}"
    what = "worst case of " if t["kind"] == WORST else f"in {t['row']}, "
    text = (f"{t['budget']}: {what}{t['a']} {_pct(t['acc_a'])} vs {t['b']} {_pct(t['acc_b'])} "
            f"({t['only_a']} vs {t['only_b']} discordant{on}, p = {t['p']:.2g}")
    if t["difference"]:
        held = "holds" if t["p_holm"] < ALPHA else "not significant"
        text += f"; Holm p = {t['p_holm']:.2g} over {n_tests} tests: {held} after correction"
    return text + ")"


def findings_lines(model: dict[str, Any]) -> list[str]:
    """The Markdown of the findings (under "Flags and findings"); empty when nothing was tested."""
    tests, skipped = model["tests"], model["skipped"]
    if not tests and not skipped:
        return []
    n = len(tests)
    lines = ["", "### Findings (generated: exact McNemar tests on the same examples)", "",
             f"{model['scope']}: {n} test{'s' if n != 1 else ''}. A difference is listed only when the two-sided "
             f"exact McNemar test gives p < {model['alpha']}; Holm's correction over all {n} tests is given beside "
             "it. Every other pair is not distinguishable at this n."]
    diff = [t for t in tests if t["difference"]]
    same = [t for t in tests if not t["difference"]]
    if diff:
        lines += ["", "Differences the test supports:"]
        lines += [f"- {finding_text(t, n)}" for t in diff]
    else:
        lines += ["", "No difference the test supports."]
    if same:
        lines += ["", "Not distinguishable:"]
        lines += [f"- {finding_text(t, n)}" for t in same]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped) + "."]
    return lines
