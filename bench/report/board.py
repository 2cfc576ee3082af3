"""A leaderboard as plain Python data (dicts, lists, numbers, strings): what the Markdown renderer
(bench.report.leaderboard) and the static site print, kept apart from either format.

``board(records, spec)`` returns the whole board: per threat model (norm, eps) a ranked headline and
the robust accuracy of every attack with that budget (tables of at most ``MAX_COLUMNS`` columns),
the minimal-norm attacks with their norms (median L2 / L0, Deep Defense's rho_2), per-model metrics,
and the notes that go under the tables (flags, rows whose clean accuracy dropped, code versions).

A table is ``{"title", "columns", "rows"}``; a row maps column -> cell; a cell is a string, an int,
or a dict: ``{"kind": "acc", "value", "ci", "ref", "outside", "flag"}`` (accuracy in [0, 1], its 95%
Wilson interval, the seed paper's number in %), ``{"kind": "norm", "value", "norm"}`` or
``{"kind": "metric", "value", "ref"}`` (a per-model metric).
``fmt_cell`` prints a cell the way the Markdown board does.

The headline ranks rows by the worst case (the share of examples that survive every attack of the
budget; RobustBench's "AutoAttack robust accuracy" generalised to a set of attacks) and never ranks
a row whose clean accuracy is more than ``CLEAN_DROP`` below the undefended model's above it: a
defense that answers wrongly on clean inputs can look robust (RobustBench ranks clean and robust
accuracy together for the same reason; Croce et al., NeurIPS 2021 Datasets and Benchmarks).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

from bench.core.stats import interval_of, mcnemar, wilson_interval
from bench.report.rows import budgets_in, row_worst, table_rows
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, attack_label, budget_label, budget_of, column_label, fmt_eps

#: The widest table (columns, row labels included).
MAX_COLUMNS = 12
#: A row whose clean accuracy is more than this below the undefended model's is marked and ranked
#: no higher than it.
CLEAN_DROP = 0.10
ALPHA = 0.05  # McNemar significance level for "better than" claims in the headline
OUTSIDE = "‡"  # a paper number outside our 95% interval
FLAG = " †"  # a cell with a reliability flag (bench.report.flags)
DROP = " ▼"  # a row whose clean accuracy fell more than CLEAN_DROP below the undefended model's
ROW_COLUMNS = ("train-time", "runtime")
VS_NEXT = "vs next row (McNemar)"


# -- cells ------------------------------------------------------------------------------------------

def acc_cell(value: float | None, ci: tuple[float, float] | None = None, ref: float | None = None,
             flag: bool = False, spread: list[float] | None = None) -> dict[str, Any] | str:
    """An accuracy cell ('-' when there is no value); ``ref`` is a paper number in %; ``spread``
    the [min, max] over the seeds of a multi-seed grid (see ``pool_seeds``)."""
    if value is None:
        return "-"
    outside = ref is not None and ci is not None and not (100 * ci[0] <= ref <= 100 * ci[1])
    cell = {"kind": "acc", "value": float(value), "ci": list(ci) if ci is not None else None, "ref": ref,
            "outside": outside, "flag": flag}
    if spread is not None:
        cell["spread"] = [float(spread[0]), float(spread[1])]
    return cell


def outcomes_cell(outcomes: str, flag: bool = False) -> dict[str, Any] | str:
    """The accuracy of per-example outcomes ('1' robust) with its Wilson interval."""
    if not outcomes:
        return "-"
    return acc_cell(outcomes.count("1") / len(outcomes), interval_of(outcomes), flag=flag)


def fmt_cell(cell: Any) -> str:
    """A cell as the Markdown board prints it: ``67.0 [57–76] (70)`` (interval rounded outward)."""
    if isinstance(cell, dict) and cell.get("kind") == "acc":
        text = f"{100 * cell['value']:.1f}"
        if cell.get("ci") is not None:
            text += f" [{math.floor(100 * cell['ci'][0]):d}–{math.ceil(100 * cell['ci'][1]):d}]"
        if cell.get("spread") is not None:
            text += f" {{{100 * cell['spread'][0]:.1f}–{100 * cell['spread'][1]:.1f}}}"
        if cell.get("ref") is not None:
            text += f" ({cell['ref']:g}{OUTSIDE if cell.get('outside') else ''})"
        clip = " ✂" if cell.get("clipped") else ""  # bench.report.position_tables: a window cut by the stream's end
        return text + clip + (FLAG if cell.get("flag") else "") + (DROP if cell.get("drop") else "")
    if isinstance(cell, dict) and cell.get("kind") == "metric":
        from bench.spec.metric_columns import fmt as metric_fmt

        return metric_fmt(cell["value"], cell.get("ref"))
    if isinstance(cell, dict) and cell.get("kind") == "norm":
        v = cell["value"]
        if v is None:
            return "-"
        if isinstance(v, float) and math.isinf(v):
            return "∞"
        return f"{v:.0f}" if cell.get("norm") == "L0" else f"{v:.3f}"
    return "-" if cell is None else str(cell)


def sort_value(cell: Any) -> float | str | None:
    """What a column sorts by: the accuracy or norm of a cell, else its text."""
    if isinstance(cell, dict):
        return cell.get("value")
    return cell


def record_ci(rec: dict[str, Any], which: str) -> tuple[float, float] | None:
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


def reference(ref: dict[str, float], train: str, runtime: str, r: dict[str, Any]) -> float | None:
    """A paper number keyed by the full column label, or by the bare attack label (older specs)."""
    for key in (column_label(r), attack_label(r)):
        if f"{train}/{runtime}/{key}" in ref:
            return ref[f"{train}/{runtime}/{key}"]
    return None


def in_grid_order(records: list[dict[str, Any]], spec: GridSpec | None) -> list[dict[str, Any]]:
    """``records`` ordered by their attack's place in the grid file, then eps, then the row's place
    (train-time, runtime) and the seed, so columns, rows and the flags under the tables come in the
    grid's order whatever order the cells finished in."""
    if spec is None:
        return list(records)
    order = {attack_label({"attack": a.label or a.name, "threat": a.threat}): i for i, a in enumerate(spec.attacks)}
    pairs = {p: i for i, p in enumerate(spec.pairs())}

    def key(r: dict[str, Any]) -> tuple[int, float, int, str]:
        where = order.get(attack_label(r), len(order)) if "attack" in r and "threat" in r else len(order)
        eps = -1.0 if r.get("eps") is None else float(r["eps"])
        return where, eps, pairs.get((r.get("train_defense"), r.get("runtime_defense")), len(pairs)), str(r.get("seed"))
    return sorted(records, key=key)


# -- rows, the baseline and the clean-accuracy rule --------------------------------------------------

def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


def main_budget(records: list[dict[str, Any]], spec: GridSpec | None = None) -> Budget | None:
    """The grid's main threat model: the budget most attack cells share (ties: the smallest eps)."""
    counts = Counter(b for r in records if r.get("status") == "ok" and (b := budget_of(r)) is not None)
    if not counts:
        return None
    return min(counts, key=lambda b: (-counts[b], b[1], b[0]))


def threat_models(records: list[dict[str, Any]], spec: GridSpec | None = None) -> list[Budget]:
    """Every budget of the records, the main one first."""
    main = main_budget(records, spec)
    rest = [b for b in budgets_in(records) if b != main]
    return ([main] if main is not None else []) + rest


def baseline_row(records: list[dict[str, Any]], spec: GridSpec | None) -> tuple[str, str] | None:
    """The undefended model: the grid's base model (``standard``) without a runtime defense, when the
    grid has that row with a clean accuracy."""
    base = (spec.base_model if spec is not None else "standard", "none")
    rows = table_rows(ok_records(records), spec)
    return base if rows.get(base) else None


def dprime_variants(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per D' variant of a row whose runtime defense builds D' per attack (records with
    ``dprime``, bench.spec.dprime), the fallback PGD D' of the adaptive cells left out when the row has
    others; [] for any other row."""
    import json

    variants: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for r in recs:
        if r.get("dprime") is not None and r.get("clean_acc") is not None:
            variants.setdefault(json.dumps((r.get("params") or {}).get("runtime"), sort_keys=True, default=str), r)
    own = [r for r in variants.values() if not str(r["dprime"]).endswith("(fallback)")]
    return own or list(variants.values())


def row_clean(recs: list[dict[str, Any]], ref: float | None = None) -> dict[str, Any] | str:
    """A row's clean cell: its first record's clean accuracy; for a row with several D' variants the
    mean over them, as the RMC paper's Table 1 reports it, with braces {min-max} over the variants and
    the Wilson interval of one variant at the mean (the variants share their test points)."""
    variants = dprime_variants(recs)
    if len(variants) < 2:
        first = recs[0] if recs else {}
        return acc_cell(first.get("clean_acc"), record_ci(first, "clean"), ref, spread=seed_spread(first, "clean"))
    accs = [float(r["clean_acc"]) for r in variants]
    mean, n = sum(accs) / len(accs), int(variants[0].get("n") or 0)
    ci = wilson_interval(round(mean * n), n) if n > 0 else None
    return acc_cell(mean, ci, ref, spread=[min(accs), max(accs)])


def clean_of(recs: list[dict[str, Any]]) -> float | None:
    cell = row_clean(recs) if recs else "-"
    return float(cell["value"]) if isinstance(cell, dict) else None


def clean_drops(records: list[dict[str, Any]], spec: GridSpec | None) -> dict[tuple[str, str], float]:
    """Rows whose clean accuracy is more than CLEAN_DROP below the undefended model's: row -> drop."""
    base = baseline_row(records, spec)
    if base is None:
        return {}
    rows = table_rows(ok_records(records), spec)
    ref = clean_of(rows[base])
    if ref is None:
        return {}
    out = {}
    for row, recs in rows.items():
        c = clean_of(recs)
        if c is not None and row != base and ref - c > CLEAN_DROP + 1e-9:
            out[row] = ref - c
    return out


def headline_rows(records: list[dict[str, Any]], spec: GridSpec | None, budget: Budget) -> list[dict[str, Any]]:
    """Rows ranked by the worst case under ``budget``, a row with a clean-accuracy drop never above the
    undefended one; each compared with the next one down by an exact McNemar test on the same
    examples. Keys: rank, train-time, runtime, clean, worst, attacks, vs next row, clean_drop,
    outcomes (the joint per-example string)."""
    ok = ok_records(records)
    drops = clean_drops(ok, spec)
    base = baseline_row(ok, spec)
    ref = spec.reference if spec is not None else {}
    entries = []
    for (train, runtime), recs in table_rows(ok, spec).items():
        joint = row_worst(recs, budget)
        if joint:
            entries.append({"row": (train, runtime), "joint": joint, "acc": joint.count("1") / len(joint),
                            "n_att": sum(budget_of(r) == budget for r in recs), "first": recs[0], "recs": recs})
    base_acc = next((e["acc"] for e in entries if e["row"] == base), None)

    def key(e: dict[str, Any]) -> tuple[float, int]:
        if e["row"] in drops and base_acc is not None:
            return -min(e["acc"], base_acc), 1  # at best just below the undefended row
        return -e["acc"], 0

    entries.sort(key=key)
    out = []
    for i, e in enumerate(entries):
        verdict = "-"
        if i + 1 < len(entries):
            # A row with its own, smaller limit evaluated a prefix of the other rows' test points:
            # pair the two rows on the points both saw.
            joint, other = e["joint"], entries[i + 1]["joint"]
            joint, other, m = paired_prefix(joint, e["first"], other, entries[i + 1]["first"])
            a, b, p = mcnemar(joint, other)
            on = "" if len(e["joint"]) == len(entries[i + 1]["joint"]) else f"; first {m} examples"
            if p < ALPHA and a > b:
                verdict = f"better (p = {p:.2g}; {a} vs {b} discordant{on})"
            elif p < ALPHA:  # the next row is more robust but lost clean accuracy (CLEAN_DROP)
                verdict = f"above by the clean-accuracy rule (next row more robust: p = {p:.2g}; {a} vs {b}{on})"
            else:
                verdict = f"not distinguishable (p = {p:.2g}{on})"
        train, runtime = e["row"]
        first = e["first"]
        clean = row_clean(e["recs"], ref.get(f"{train}/{runtime}/clean"))
        if isinstance(clean, dict) and e["row"] in drops:
            clean["drop"] = True
        out.append({"rank": i + 1, "train-time": train, "runtime": runtime, "clean": clean,
                    "worst": worst_cell(e["joint"], first), "attacks": e["n_att"], VS_NEXT: verdict,
                    "clean_drop": e["row"] in drops, "outcomes": e["joint"]})
    return out


# -- tables -----------------------------------------------------------------------------------------

def _chunks(labels: list[str], width: int) -> list[list[str]]:
    """``labels`` in as few parts of at most ``width`` as possible, of nearly equal size."""
    parts = max(1, math.ceil(len(labels) / width))
    size = math.ceil(len(labels) / parts)
    return [labels[i:i + size] for i in range(0, len(labels), size)] or [[]]


def _row_cells(train: str, runtime: str, recs: list[dict[str, Any]], ref: dict[str, float],
               drops: dict[tuple[str, str], float]) -> dict[str, Any]:
    clean = row_clean(recs, ref.get(f"{train}/{runtime}/clean"))
    if isinstance(clean, dict) and (train, runtime) in drops:
        clean["drop"] = True
    return {"train-time": train, "runtime": runtime, "clean": clean}


def budget_tables(records: list[dict[str, Any]], spec: GridSpec | None, budget: Budget,
                  flags: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Robust accuracy of every attack with ``budget``, per row: white-box and transfer attacks in one
    table, adaptive attacks in another (only the rows they ran on), each split so that no table is
    wider than MAX_COLUMNS; the worst case closes every table of the budget."""
    flags = flags or {}
    ok = [r for r in ok_records(records) if budget_of(r) == budget]
    ref = spec.reference if spec is not None else {}
    drops = clean_drops(ok_records(records), spec)
    rows = table_rows(ok_records(records), spec)
    groups = [("white-box and transfer attacks", [r for r in ok if r.get("threat") != "adaptive"]),
              ("adaptive attacks", [r for r in ok if r.get("threat") == "adaptive"])]
    width = MAX_COLUMNS - len(ROW_COLUMNS) - 2  # clean and worst
    tables = []
    for what, recs in groups:
        labels = list(OrderedDict.fromkeys(attack_label(r) for r in recs))
        if not labels:
            continue
        parts = _chunks(labels, width)
        for j, part in enumerate(parts):
            title = f"{budget_label(budget)}: {what}" + (f" ({j + 1} of {len(parts)})" if len(parts) > 1 else "")
            columns = [*ROW_COLUMNS, "clean", *part, f"worst {budget_label(budget)}"]
            out_rows = []
            for (train, runtime), row_recs in rows.items():
                mine = {attack_label(r): r for r in row_recs if budget_of(r) == budget}
                if not any(label in mine for label in part):
                    continue
                row = _row_cells(train, runtime, row_recs, ref, drops)
                for label in part:
                    r = mine.get(label)
                    row[label] = "-" if r is None else acc_cell(
                        r["robust_acc"], record_ci(r, "robust"), reference(ref, train, runtime, r),
                        bool(flags.get(r.get("cell_id", ""))), seed_spread(r, "robust"))
                row[columns[-1]] = worst_cell(row_worst(row_recs, budget), row_recs[0])
                out_rows.append(row)
            tables.append({"title": title, "columns": columns, "rows": out_rows})
    return tables


def thresholds(spec: GridSpec | None) -> dict[tuple[str, str, str], float]:
    """(attack name, label, threat) -> the grid's norm threshold for a minimal-norm attack."""
    if spec is None:
        return {}
    return {(a.name, a.label or a.name, a.threat): a.threshold for a in spec.attacks if a.threshold is not None}


def threshold_label(rec: dict[str, Any], thr: float) -> str:
    return f"{column_label(rec)} {rec.get('norm') or 'L2'} ≤ {thr:g}"


def robust_at_threshold(rec: dict[str, Any], threshold: float) -> str:
    """Per-example outcomes when a minimal-norm attack only counts if its perturbation is at most
    ``threshold`` (the RMC paper's Table 1 convention): robust if the attack failed or needed more
    ('' when the record has no per-example norms)."""
    norms, outcomes = rec.get("per_example_norm"), rec.get("per_example", "")
    if not norms or len(norms) != len(outcomes):
        return ""
    return "".join("1" if o == "1" or v > threshold else "0" for o, v in zip(outcomes, norms))


def minimal_columns(rec: dict[str, Any], spec: GridSpec | None) -> list[str]:
    """The columns of one minimal-norm attack: robust accuracy, median norm, rho_2 (and the accuracy
    within the grid's threshold, when it sets one)."""
    label, norm = column_label(rec), rec.get("norm") or "L2"
    cols = [label, f"{label} med {norm}", f"{label} ρ2"]
    thr = thresholds(spec).get((rec.get("attack_name", rec["attack"]), rec["attack"], rec["threat"]))
    if thr is not None:
        cols.append(threshold_label(rec, thr))
    return cols


def minimal_norm_tables(records: list[dict[str, Any]], spec: GridSpec | None,
                        flags: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Minimal-norm attacks (no eps): robust accuracy (the attack failed), the median perturbation
    norm over the examples they flip, Deep Defense's rho_2 (mean ||delta||_2 / ||x||_2 over those)."""
    flags = flags or {}
    ok = [r for r in ok_records(records) if budget_of(r) is None]
    if not ok:
        return []
    ref = spec.reference if spec is not None else {}
    thr_of = thresholds(spec)
    per_attack: OrderedDict[str, list[str]] = OrderedDict()
    for r in ok:
        per_attack.setdefault(column_label(r), minimal_columns(r, spec))
    parts: list[list[str]] = [[]]
    for label, cols in per_attack.items():  # never split one attack's columns over two tables
        if parts[-1] and len(ROW_COLUMNS) + len(parts[-1]) + len(cols) > MAX_COLUMNS:
            parts.append([])
        parts[-1].append(label)
    tables = []
    for j, part in enumerate(parts):
        columns = [*ROW_COLUMNS, *(c for label in part for c in per_attack[label])]
        out_rows = []
        for (train, runtime), row_recs in table_rows(ok_records(records), spec).items():
            mine = {column_label(r): r for r in row_recs if budget_of(r) is None}
            if not any(label in mine for label in part):
                continue
            row: dict[str, Any] = {"train-time": train, "runtime": runtime}
            for label in part:
                r = mine.get(label)
                cols = per_attack[label]
                if r is None:
                    row.update({c: "-" for c in cols})
                    continue
                norm = r.get("norm") or "L2"
                row[cols[0]] = acc_cell(r["robust_acc"], record_ci(r, "robust"), reference(ref, train, runtime, r),
                                        bool(flags.get(r.get("cell_id", ""))), seed_spread(r, "robust"))
                row[cols[1]] = {"kind": "norm", "value": r.get("median_norm"), "norm": norm}
                row[cols[2]] = {"kind": "norm", "value": r.get("mean_rho2_success", r.get("mean_rho2")), "norm": "L2"}
                thr = thr_of.get((r.get("attack_name", r["attack"]), r["attack"], r["threat"]))
                if thr is not None:
                    row[cols[3]] = outcomes_cell(robust_at_threshold(r, thr))
            out_rows.append(row)
        title = "minimal-norm attacks" + (f" ({j + 1} of {len(parts)})" if len(parts) > 1 else "")
        tables.append({"title": title, "columns": columns, "rows": out_rows})
    return tables


def metric_cell(value: float | None, ref: float | None) -> dict[str, Any]:
    """A per-model metric as measured, with the paper's number when given (printed by ``fmt_cell``)."""
    return {"kind": "metric", "value": None if value is None else float(value), "ref": ref}


def metrics_table(records: list[dict[str, Any]], spec: GridSpec | None) -> dict[str, Any] | None:
    """Per-model metrics (Deep Defense's Table 2), as measured, beside the paper's when given."""
    from bench.spec.metric_columns import metric_values

    ok = ok_records(records)
    metrics = metric_values(ok)
    cols = list(OrderedDict.fromkeys(c for m in metrics.values() for c in m))
    if not cols:
        return None
    ref = spec.reference if spec is not None else {}
    rows = [{"train-time": t, "runtime": rt,
             **{c: metric_cell(metrics.get((t, rt), {}).get(c), ref.get(f"{t}/{rt}/{c}")) for c in cols}}
            for (t, rt), recs in table_rows(ok, spec).items() if recs and metrics.get((t, rt))]
    return {"title": "per-model metrics", "columns": [*ROW_COLUMNS, *cols], "rows": rows}


# -- provenance ---------------------------------------------------------------------------------------

def versions_note(records: list[dict[str, Any]]) -> list[str]:
    """Which rows (or, where a row mixes them, which of its cells) each code version produced, the
    version of most cells last as "every other cell"; empty when one version made the whole board."""
    ok = ok_records(records)
    version = [r.get("code_version") or "-" for r in ok]
    counts = Counter(version)
    if len(counts) < 2:
        return []
    rows: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
    for r, v in zip(ok, version):
        rows.setdefault((r["train_defense"], r["runtime_defense"]), []).append(v)
    ordered = sorted(counts, key=lambda v: (counts[v], v))
    lines = []
    for v in ordered[:-1]:
        whole = [f"{t}/{rt}" for (t, rt), vs in rows.items() if set(vs) == {v}]
        cells = [f"{r['train_defense']}/{r['runtime_defense']} {column_label(r)}" for r, rv in zip(ok, version)
                 if rv == v and len(set(rows[(r["train_defense"], r["runtime_defense"])])) > 1]
        parts = ([f"rows {', '.join(whole)}"] if whole else []) + ([f"cells {', '.join(cells)}"] if cells else [])
        lines.append(f"`{v}` ({counts[v]} cells): {'; '.join(parts)}")
    lines.append(f"`{ordered[-1]}` ({counts[ordered[-1]]} cells): every other cell")
    return lines


def commit_of(version: str) -> str | None:
    """The git commit of a code version (``0.1.0+60c2d68`` -> ``60c2d68``)."""
    _, plus, sha = version.partition("+")
    return sha if plus and sha and all(c in "0123456789abcdef" for c in sha.lower()) else None


def _builtin(spec: GridSpec) -> bool:
    from bench.spec import grid as grids

    try:
        return bool(spec.path) and Path(str(grids.GRIDS.get(spec.name))).resolve() == Path(spec.path).resolve()
    except Exception:  # not a registered name
        return False


def reproduce(spec: GridSpec, versions: list[str] | None = None, limit: int | None = None,
              data_dir: str | Path | None = None, smoke: bool = False) -> str:
    """The exact commands that rerun the grid and render its board: the code version to check out,
    then ``bench run`` with the grid (its file path unless it is a built-in) and the options used."""
    grid = spec.name if _builtin(spec) or not spec.path else spec.path
    opts = f" --grid {grid}"
    extra = ""
    if limit is not None:
        extra += f" --limit {limit}"
    run = f"bench run{opts}{extra}"
    if data_dir:
        run += f" --data-dir {data_dir}"
    if smoke:
        run += " --smoke"
    commits = [c for v in versions or [] if (c := commit_of(v))]
    steps = [f"git checkout {commits[-1]}"] if len(commits) == 1 else []
    steps += [run, f"bench leaderboard{opts}{extra}"]
    return " && ".join(steps)


# -- the whole board ------------------------------------------------------------------------------------

def board(records: list[dict[str, Any]], spec: GridSpec, limit: int | None = None,
          data_dir: str | Path | None = None, smoke: bool = False,
          flags: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Everything a leaderboard shows, as plain data (see the module docstring)."""
    from bench.report.findings import findings
    from bench.report.flags import cell_flags
    from bench.report.indicators import indicator_rows
    from bench.report.position_tables import position_tables

    records = in_grid_order(records, spec)
    indicators = indicator_rows(records)  # per cell and seed, as the runner stored them
    seeds = seeds_of(records)
    flags = cell_flags(records) if flags is None else flags
    if len(seeds) > 1:
        records, flags = pool_seeds(records), pool_flags(records, flags)
    ok = ok_records(records)
    n = max((int(r["n"]) for r in ok), default=0)
    versions = sorted({r.get("code_version", "") for r in ok if r.get("code_version")})
    base = baseline_row(ok, spec)
    drops = clean_drops(ok, spec)
    by_id = {r.get("cell_id"): r for r in ok}
    budgets = threat_models(ok, spec)
    return {
        "grid": spec.name, "description": spec.description, "dataset": spec.dataset, "arch": spec.arch,
        "wiring_check": bool(getattr(spec, "wiring_check", False)),
        "n": n, "fewer": sorted({(r["runtime_defense"], int(r["n"])) for r in ok if int(r["n"]) < n}),
        "seeds": seeds, "seeds_note": seeds_note(seeds), "fewer_seeds": fewer_seeds(ok, seeds),
        "date": max((r.get("finished_at", "") for r in ok), default="")[:10],
        "versions": versions, "devices": device_labels(ok),
        "baseline": list(base) if base else None,
        "clean_drops": {f"{t}/{rt}": d for (t, rt), d in drops.items()},
        "dprime_rows": [f"{t}/{rt}" for (t, rt), recs in table_rows(ok, spec).items()
                        if len(dprime_variants(recs)) > 1],
        "threat_models": [{"budget": list(b), "label": budget_label(b), "main": i == 0,
                           "headline": headline_rows(ok, spec, b), "tables": budget_tables(ok, spec, b, flags)}
                          for i, b in enumerate(budgets)],
        "minimal_norm": minimal_norm_tables(ok, spec, flags),
        "metrics": metrics_table(ok, spec),
        "positions": position_tables(ok, spec),
        "flags": [{"cell": by_id[cid]["key"], "reasons": why} for cid, why in flags.items() if cid in by_id],
        "versions_note": versions_note(ok),
        "failed": [{"cell": r["key"], "error": r.get("error", "")} for r in records if r.get("status") != "ok"],
        "reproduce": reproduce(spec, versions, limit, data_dir, smoke),
        "reference_source": spec.reference_source if spec.reference else "",
        "threats_text": threats_text(ok),
        "findings": findings(records, spec),
        "indicators": indicators,
    }


def threats_text(ok: list[dict[str, Any]]) -> str:
    """``Linf eps 0.05, 0.1; L2 eps 1`` and the minimal-norm attacks."""
    by_norm: dict[str, list[float]] = {}
    for norm, eps in budgets_in(ok):
        by_norm.setdefault(norm, []).append(eps)
    text = "; ".join(f"{norm} eps {', '.join(fmt_eps(e) for e in eps)}" for norm, eps in by_norm.items()) or "none"
    minimal = sorted({r["attack"] for r in ok if r.get("eps") is None})
    return text + (f"; unbounded minimal-norm attacks: {', '.join(minimal)}" if minimal else "")


# -- several seeds (``seeds = [...]`` in a grid) ------------------------------------------------------
# The RMC supplement's Figure 3 reports the variance over runs; a multi-seed board separates that
# seed noise (the spread over seeds) from sampling noise (the Wilson interval of the pooled outcomes).

def seeds_of(records: list[dict[str, Any]]) -> list[Any]:
    """The seeds of the finished records, in order (numbers first)."""
    return sorted({r.get("seed") for r in ok_records(records)}, key=lambda s: (not isinstance(s, int), str(s)))


def seeds_note(seeds: list[Any]) -> str:
    """The sentence that explains a multi-seed board's cells ('' for one seed)."""
    if len(seeds) < 2:
        return ""
    return (f"Seeds {', '.join(map(str, seeds))}: each cell runs once per seed (training, attack randomness "
            "and stream order follow the seed); an accuracy is the mean over seeds, brackets the 95% Wilson "
            "interval of the outcomes pooled over seeds (n per seed times the number of seeds), braces "
            "{min–max} the spread over seeds; McNemar tests pair the same example under the same seed.")


def fewer_seeds(pooled: list[dict[str, Any]], seeds: list[Any]) -> list[str]:
    """Cells of a multi-seed board that finished under only some of its seeds: ``key (seeds 0, 2)``."""
    if len(seeds) < 2:
        return []
    return [f"{r['key']} (seeds {', '.join(map(str, r.get('seeds', [r.get('seed')])))})"
            for r in pooled if len(r.get("seeds", [])) < len(seeds)]


def _cell_identity(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r.get("train_defense"), r.get("runtime_defense"), r.get("attack"), r.get("attack_name"),
            r.get("threat"), r.get("eps"), r.get("norm"))


def _mean(values: list[Any]) -> Any:
    if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        return values[0] if values else None
    return sum(values) / len(values)


def pooled_record(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's records over its seeds as one record: accuracies (and minimal-norm statistics) are
    the mean over seeds, intervals the Wilson interval of the pooled outcomes, ``seed_spread`` the
    [min, max] over seeds, ``per_example`` the seeds' outcome strings one after another (seed order)."""
    import re

    recs = sorted(recs, key=lambda r: (not isinstance(r.get("seed"), int), str(r.get("seed"))))
    first = recs[0]
    ns = [int(r.get("n") or 0) for r in recs]
    out = {**first, "key": re.sub(r"/seed[^/]*$", "", str(first.get("key", ""))),
           "seeds": [r.get("seed") for r in recs], "seed_n": ns, "seed_cell_ids": [r.get("cell_id") for r in recs],
           "n": max(ns), "seed_spread": {}}
    for which in ("clean", "robust"):
        accs = [r.get(f"{which}_acc") for r in recs]
        if any(a is None for a in accs):
            continue
        out[f"{which}_acc"] = sum(map(float, accs)) / len(accs)
        out["seed_spread"][which] = [min(map(float, accs)), max(map(float, accs))]
        out[f"{which}_ci"] = list(wilson_interval(sum(round(float(a) * n) for a, n in zip(accs, ns)), sum(ns)))
    outcomes = [r.get("per_example") or "" for r in recs]
    out["per_example"] = "".join(outcomes) if all(outcomes) else ""
    if out["per_example"]:
        out["robust_ci"] = list(interval_of(out["per_example"]))
    norms = [r.get("per_example_norm") for r in recs]
    out["per_example_norm"] = [v for ns_ in norms for v in ns_] if all(norms) else None
    for key in ("median_norm", "mean_rho2", "mean_rho2_success"):
        if key in first:
            out[key] = _mean([r.get(key) for r in recs])
    return out


def pool_seeds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A multi-seed grid's records, one pooled record per cell (``pooled_record``), failed records as
    they are; the records of one seed unchanged."""
    if len(seeds_of(records)) < 2:
        return records
    groups: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
    for r in ok_records(records):
        groups.setdefault(_cell_identity(r), []).append(r)
    return [pooled_record(g) for g in groups.values()] + [r for r in records if r.get("status") != "ok"]


def pool_flags(records: list[dict[str, Any]], flags: dict[str, list[str]]) -> dict[str, list[str]]:
    """Reliability flags of the seeds' cells, under the pooled record's cell id (its first seed's),
    each reason prefixed with its seed."""
    out: dict[str, list[str]] = {}
    for pooled in pool_seeds(records):
        for seed, cid in zip(pooled.get("seeds", []), pooled.get("seed_cell_ids", [])):
            out.setdefault(pooled["cell_id"], []).extend(f"seed {seed}: {why}" for why in flags.get(cid, []))
    return {cid: why for cid, why in out.items() if why}


def seed_spread(rec: dict[str, Any], which: str) -> list[float] | None:
    """[min, max] over seeds of a pooled record's ``which`` accuracy (None for one seed)."""
    return (rec.get("seed_spread") or {}).get(which)


def worst_cell(joint: str, first: dict[str, Any]) -> dict[str, Any] | str:
    """A row's worst case; for pooled records also its spread over seeds (the joint string is the
    seeds' outcomes one after another, ``seed_n`` long each)."""
    sizes = first.get("seed_n")
    if not joint or not sizes or sum(sizes) != len(joint):
        return outcomes_cell(joint)
    parts, start = [], 0
    for n in sizes:
        parts.append(joint[start:start + n].count("1") / n if n else 0.0)
        start += n
    return acc_cell(joint.count("1") / len(joint), interval_of(joint), spread=[min(parts), max(parts)])


def paired_prefix(joint: str, first: dict[str, Any], other: str, other_first: dict[str, Any]) -> tuple[str, str, int]:
    """The outcomes two rows share: the first ``m`` examples of each (a row with its own, smaller
    limit saw a prefix of the other's points); for pooled records the first ``m`` of every seed both
    rows ran (``m`` per seed)."""
    if "seed_n" not in first or "seed_n" not in other_first:
        m = min(len(joint), len(other))
        return joint[:m], other[:m], m
    mine, theirs = _seed_parts(joint, first), _seed_parts(other, other_first)
    common = [s for s in mine if s in theirs]
    m = min((min(len(mine[s]), len(theirs[s])) for s in common), default=0)
    return "".join(mine[s][:m] for s in common), "".join(theirs[s][:m] for s in common), m


def _seed_parts(joint: str, first: dict[str, Any]) -> dict[Any, str]:
    """A pooled row's joint outcomes cut back into its seeds' strings."""
    out, start = {}, 0
    for seed, n in zip(first["seeds"], first["seed_n"]):
        out[seed] = joint[start:start + n]
        start += n
    return out


def device_labels(records: list[dict[str, Any]]) -> list[str]:
    """Each distinct device of ``records`` with the hardware's name where the record has it, e.g.
    ``cpu (AMD EPYC, 2 logical cores)``."""
    return sorted({f"{r['device']} ({r['device_name']})" if r.get("device_name") else str(r["device"])
                   for r in records if r.get("device")})

