"""Markdown leaderboards in the RMC paper's Table-1 layout (pandas + tabulate).

Rows are grouped by train-time defense, one row per runtime defense; columns are clean accuracy,
robust accuracy per attack (every header names its budget: ``pgd Linf 0.1``), the median
perturbation norm and Deep Defense's rho_2 for minimal-norm attacks, then one worst case per threat
model (norm, eps): the share of examples that survive every attack of that budget in the row,
white-box, adaptive and transfer alike (never an average over attacks, never across budgets).

Every accuracy carries its 95% Wilson interval (bench.core.stats). Where the grid spec carries a seed
paper's number for a cell, it is shown in parentheses beside ours, never in place of ours, and
marked when it lies outside our interval. A headline table ranks the rows by the worst case under
the grid's main threat model, with an exact McNemar test between neighbours on the same examples.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.stats import interval_of, mcnemar, wilson_interval
from bench.report.rows import budgets_in, row_worst, table_rows, worst_case, worst_outcomes  # noqa: F401  (re-exported)
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, attack_label, budget_label, budget_of, column_label, fmt_eps

WORST = "worst"
FLAG = " †"
OUTSIDE = "‡"  # a paper number outside our 95% interval
ALPHA = 0.05  # McNemar significance level for "better than" claims in the headline


def worst_label(budget: Budget) -> str:
    return f"{WORST} {budget_label(budget)}"


def main_budget(records: list[dict[str, Any]], spec: GridSpec | None = None) -> Budget | None:
    """The grid's main threat model: the budget most attack cells share (ties: the smallest eps)."""
    counts = Counter(b for r in records if r.get("status") == "ok" and (b := budget_of(r)) is not None)
    if not counts:
        return None
    return min(counts, key=lambda b: (-counts[b], b[1], b[0]))


def _ci(rec: dict[str, Any], which: str) -> tuple[float, float] | None:
    """The record's stored interval, else one computed from its outcomes (older records)."""
    stored = rec.get(f"{which}_ci")
    if stored:
        return float(stored[0]), float(stored[1])
    if which == "robust" and rec.get("per_example"):
        return interval_of(rec["per_example"])
    n = int(rec.get("n") or 0)
    acc = rec.get(f"{which}_acc")
    if n <= 0 or acc is None:
        return None
    return wilson_interval(round(float(acc) * n), n)


def _fmt_acc(value: float | None, ci: tuple[float, float] | None, reference: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.1f}"
    if ci is not None:  # rounded outward, so the printed interval contains the exact one
        text += f" [{math.floor(100 * ci[0]):d}–{math.ceil(100 * ci[1]):d}]"
    if reference is not None:
        outside = ci is not None and not (100 * ci[0] <= reference <= 100 * ci[1])
        text += f" ({reference:g}{OUTSIDE if outside else ''})"
    return text


def _fmt_norm(value: float | None, norm: str = "L2") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.0f}" if norm == "L0" else f"{value:.3f}"


def build_table(records: list[dict[str, Any]], spec: GridSpec | None = None,
                flags: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The Table-1 layout; a value whose cell has a reliability flag (``flags``: cell_id -> reasons,
    see bench.report.flags) carries the marker FLAG."""
    flags = flags or {}
    ok = [r for r in records if r.get("status") == "ok"]
    columns: OrderedDict[str, None] = OrderedDict()
    for r in ok:
        label = column_label(r)
        columns[label] = None
        if budget_of(r) is None:  # minimal-norm: the size of the perturbation is what compares
            columns[f"{label} med {r.get('norm') or 'L2'}"] = None
            columns[f"{label} ρ2"] = None
    thresholds = _thresholds(spec)
    for r in ok:
        thr = thresholds.get((r.get("attack_name", r["attack"]), r["attack"], r["threat"]))
        if budget_of(r) is None and thr is not None:
            columns[_threshold_label(r, thr)] = None
    worst_cols = [worst_label(b) for b in budgets_in(ok)]
    ref = spec.reference if spec is not None else {}
    from bench.spec.metric_columns import fmt as metric_fmt
    from bench.spec.metric_columns import metric_values

    metrics = metric_values(ok)  # per-model metrics (Deep Defense's Table 2), shown as measured
    metric_cols = list(OrderedDict.fromkeys(c for m in metrics.values() for c in m))
    table = []
    last_train = None
    for (train, runtime), recs in table_rows(ok, spec).items():
        if not recs:
            continue
        row: dict[str, Any] = {"train-time": train if train != last_train else "", "runtime": runtime}
        last_train = train
        first = recs[0]
        row["clean"] = _fmt_acc(first["clean_acc"], _ci(first, "clean"), ref.get(f"{train}/{runtime}/clean"))
        for r in recs:
            label = column_label(r)
            cell = _fmt_acc(r["robust_acc"], _ci(r, "robust"), _reference(ref, train, runtime, r, label))
            row[label] = cell + (FLAG if flags.get(r.get("cell_id", "")) else "")
            if budget_of(r) is None:
                norm = r.get("norm") or "L2"
                row[f"{label} med {norm}"] = _fmt_norm(r.get("median_norm"), norm)
                row[f"{label} ρ2"] = _fmt_norm(r.get("mean_rho2_success", r.get("mean_rho2")))
                thr = thresholds.get((r.get("attack_name", r["attack"]), r["attack"], r["threat"]))
                if thr is not None:
                    at = robust_at_threshold(r, thr)
                    row[_threshold_label(r, thr)] = _fmt_acc(at.count("1") / len(at), interval_of(at)) if at else "-"
        for b, col in zip(budgets_in(ok), worst_cols):
            joint = row_worst(recs, b)
            row[col] = _fmt_acc(joint.count("1") / len(joint), interval_of(joint)) if joint else "-"
        for col in metric_cols:
            row[col] = metric_fmt(metrics.get((train, runtime), {}).get(col), ref.get(f"{train}/{runtime}/{col}"))
        table.append(row)
    cols = ["train-time", "runtime", "clean", *columns, *worst_cols, *metric_cols]
    return pd.DataFrame(table, columns=cols).fillna("-")


def _thresholds(spec: GridSpec | None) -> dict[tuple[str, str, str], float]:
    """(attack name, label, threat) -> the grid's norm threshold for a minimal-norm attack."""
    if spec is None:
        return {}
    return {(a.name, a.label or a.name, a.threat): a.threshold for a in spec.attacks if a.threshold is not None}


def _threshold_label(rec: dict[str, Any], thr: float) -> str:
    return f"{column_label(rec)} {rec.get('norm') or 'L2'} ≤ {thr:g}"


def robust_at_threshold(rec: dict[str, Any], threshold: float) -> str:
    """Per-example outcomes when a minimal-norm attack only counts if its perturbation is at most
    ``threshold`` (the RMC paper's Table 1 convention): robust if the attack failed or needed more
    ('' when the record has no per-example norms)."""
    norms, outcomes = rec.get("per_example_norm"), rec.get("per_example", "")
    if not norms or len(norms) != len(outcomes):
        return ""
    return "".join("1" if o == "1" or v > threshold else "0" for o, v in zip(outcomes, norms))


def _reference(ref: dict[str, float], train: str, runtime: str, r: dict[str, Any], label: str) -> float | None:
    """A paper number keyed by the full column label, or by the bare attack label (older specs)."""
    for key in (label, attack_label(r)):
        if f"{train}/{runtime}/{key}" in ref:
            return ref[f"{train}/{runtime}/{key}"]
    return None


def headline(records: list[dict[str, Any]], spec: GridSpec | None = None) -> tuple[pd.DataFrame, Budget | None]:
    """Rows ranked by the worst case under the main threat model, each compared with the next one
    down by an exact McNemar test on the same examples."""
    ok = [r for r in records if r.get("status") == "ok"]
    budget = main_budget(ok, spec)
    if budget is None:
        return pd.DataFrame(), None
    entries = []
    for (train, runtime), recs in table_rows(ok, spec).items():
        joint = row_worst(recs, budget)
        if joint:
            n_att = sum(budget_of(r) == budget for r in recs)
            entries.append((train, runtime, joint, n_att, recs[0]))
    entries.sort(key=lambda e: -e[2].count("1") / len(e[2]))
    table = []
    for i, (train, runtime, joint, n_att, first) in enumerate(entries):
        verdict = "-"
        if i + 1 < len(entries):
            # A row with its own, smaller limit evaluated a prefix of the other rows' test points:
            # pair the two rows on the points both saw.
            other = entries[i + 1][2]
            m = min(len(joint), len(other))
            a, b, p = mcnemar(joint[:m], other[:m])
            on = "" if len(joint) == len(other) else f"; first {m} examples"
            verdict = (f"better (p = {p:.2g}; {a} vs {b} discordant{on})" if p < ALPHA and a > b
                       else f"not distinguishable (p = {p:.2g}{on})")
        table.append({"rank": i + 1, "train-time": train, "runtime": runtime,
                      "clean": _fmt_acc(first["clean_acc"], _ci(first, "clean")),
                      worst_label(budget): _fmt_acc(joint.count("1") / len(joint), interval_of(joint)),
                      "attacks": n_att, "vs next row (McNemar)": verdict})
    return pd.DataFrame(table), budget


def footer(ok: list[dict[str, Any]], spec: GridSpec) -> str:
    """n, seed and threat models of a table (the text under it)."""
    ns = sorted({int(r["n"]) for r in ok})
    seeds = sorted({r.get("seed") for r in ok}, key=str)
    by_norm: dict[str, list[float]] = {}
    for norm, eps in budgets_in(ok):
        by_norm.setdefault(norm, []).append(eps)
    threats = "; ".join(f"{norm} eps {', '.join(fmt_eps(e) for e in eps)}" for norm, eps in by_norm.items())
    minimal = sorted({r["attack"] for r in ok if r.get("eps") is None})
    text = (f"n = {', '.join(map(str, ns))} test examples of `{spec.dataset}`, seed {', '.join(map(str, seeds))}; "
            f"threat models: {threats or 'none'}")
    if minimal:
        text += f"; unbounded minimal-norm attacks: {', '.join(minimal)}"
    return text + ". Brackets: 95% Wilson interval in accuracy points, rounded outward."


def notes_path(leaderboard: Path) -> Path:
    """The hand-written notes of a leaderboard file: ``<name>.notes.md`` beside ``<name>.md``."""
    return leaderboard.parent / f"{leaderboard.stem}.notes.md"


def render(records: list[dict[str, Any]], spec: GridSpec, results_path: Path | None = None,
           figures_dir: Path | None = None, link_prefix: str = "", notes: str | None = None) -> str:
    """The leaderboard Markdown; with ``figures_dir`` also its PNG pictures (bench.report.plots), linked
    as ``link_prefix/<name>.png``. ``notes`` (hand-written Markdown, see ``notes_path``) is appended
    verbatim, so regenerating the file keeps it."""
    from bench.report.flags import cell_flags
    from bench.report.indicators import indicator_lines

    flags = cell_flags(records)
    df = build_table(records, spec, flags)
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    n = max((r["n"] for r in ok), default=0)
    fewer = sorted({(r["runtime_defense"], int(r["n"])) for r in ok if r["n"] < n})
    n_text = f"{n} test examples" + (
        f"; fewer for the rows of {', '.join(f'{rt} ({k})' for rt, k in fewer)}: the first of the same points"
        if fewer else "")
    versions = sorted({r.get("code_version", "") for r in ok})
    devices = sorted({r.get("device", "") for r in ok})
    date = max((r.get("finished_at", "") for r in ok), default="")[:10]
    lines = [f"<!-- advbench grid={spec.name} date={date or '-'} code={','.join(versions) or '-'} n={n} "
             f"device={','.join(devices) or '-'} -->", f"# Leaderboard: {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    head, budget = headline(records, spec)
    if budget is not None and len(head):
        lines += [f"## Headline: worst case under {budget_label(budget)}", "",
                  f"Rows ranked by the share of examples that survive every attack with budget "
                  f"{budget_label(budget)} (the grid's main threat model: the budget most cells share), "
                  "white-box, adaptive and transfer alike. `attacks`: how many attacks that is; a row met by "
                  "fewer attacks may look stronger than it is. A row is called better than the next only when "
                  f"an exact McNemar test on the same examples gives p < {ALPHA}.", "",
                  head.to_markdown(index=False, tablefmt="pipe", disable_numparse=True), "",
                  footer([r for r in ok if budget_of(r) == budget], spec), ""]
    lines += ["## All cells", "",
              f"Dataset `{spec.dataset}` ({n_text}), architecture `{spec.arch}`. Accuracy in %. "
              "Columns: clean accuracy, robust accuracy per attack (threat model in parentheses when not `base`, "
              "then the budget: norm and eps), for the minimal-norm attacks the median perturbation norm over "
              "the examples they flip (`med L2`, `med L0`) and Deep Defense's rho_2 (mean ||delta||_2 / ||x||_2 "
              "over those examples)" + (
                  ", their robust accuracy when only perturbations within the grid's threshold count "
                  "(`cw-l2 L2 ≤ 1.5`, the RMC paper's Table 1 convention)" if _thresholds(spec) else "") +
              ", and per threat model the worst case: the share of examples that survive every attack of that "
              "budget in the row (never mixing budgets or norms).", ""]
    if spec.reference:
        lines += [f"Numbers in parentheses are the seed paper's ({spec.reference_source or 'reference'}), "
                  f"shown beside ours, not in place of ours; {OUTSIDE} marks one outside our 95% interval.", ""]
    lines.append(df.to_markdown(index=False, tablefmt="pipe", disable_numparse=True) if len(df)
                 else "(no finished cells)")
    if ok:
        lines += ["", footer(ok, spec)]
    if flags:
        by_id = {r.get("cell_id"): r for r in ok}
        lines += ["", f"{FLAG.strip()} Evaluation looks unreliable (AutoAttack-style checks), the number may "
                  "overstate robustness:"]
        lines += [f"- {by_id[cid]['key']}: {'; '.join(why)}" for cid, why in flags.items() if cid in by_id]
    lines += indicator_lines(records)
    if figures_dir is not None and ok:
        from bench.report.plots import write_figures

        pictures = write_figures(ok, spec, Path(figures_dir), budget)
        if pictures:
            lines += ["", "## Pictures", ""]
            prefix = f"{link_prefix.rstrip('/')}/" if link_prefix else ""
            lines += [f"![{title}]({prefix}{p.name})" for title, p in pictures]
    lines += ["", f"Reproduce: `bench run --grid {spec.name}` then `bench leaderboard --grid {spec.name}`."]
    if ok:
        lines.append(f"Code version {', '.join(versions)}; device {', '.join(devices)}; seed {ok[0].get('seed')}.")
    if failed:
        lines += ["", f"{len(failed)} cell(s) failed and are not shown:"]
        lines += [f"- {r['key']}: {r.get('error', '')}" for r in failed]
    if notes and notes.strip():
        lines += ["", notes.strip("\n")]
    return "\n".join(lines) + "\n"
