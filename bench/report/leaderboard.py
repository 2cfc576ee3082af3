"""Markdown leaderboards that fit a screen, rendered from the plain-data board of bench.report.board.

Layout: the headline per threat model (norm, eps): rows ranked by the worst case, the share of
examples that survive every attack of that budget in the row, white-box, adaptive and transfer alike
(never an average over attacks, never across budgets), with an exact McNemar test between
neighbours and a row whose clean accuracy dropped more than 10 points below the undefended model's
never ranked above it; then one table per threat model (at most ``MAX_COLUMNS`` columns), a table
for the minimal-norm attacks with their norms, per-model metrics, and the flags and findings.

Every accuracy carries its 95% Wilson interval (bench.core.stats). Where the grid spec carries a seed
paper's number for a cell, it is shown in parentheses beside ours, never in place of ours, and
marked when it lies outside our interval. ``build_table`` keeps the wide one-table view of every
cell (the RMC paper's Table-1 layout) as a DataFrame, for scripts and tests.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.board import (  # noqa: F401
    ALPHA,
    CLEAN_DROP,
    DROP,
    FLAG,
    MAX_COLUMNS,
    OUTSIDE,
    ROW_COLUMNS,
    VS_NEXT,
    acc_cell,
    fmt_cell,
    headline_rows,
    in_grid_order,
    main_budget,
    outcomes_cell,
    pool_seeds,
    record_ci,
    reference,
    robust_at_threshold,
    row_clean,
    seed_spread,
    seeds_note,
    threshold_label,
    thresholds,
    worst_cell,
)
from bench.report.rows import budgets_in, row_worst, table_rows, worst_case, worst_outcomes  # noqa: F401  (re-exported)
from bench.spec.grid import GridSpec
from bench.spec.labels import Budget, budget_label, budget_of, column_label, fmt_eps

WORST = "worst"


def worst_label(budget: Budget) -> str:
    return f"{WORST} {budget_label(budget)}"


def build_table(records: list[dict[str, Any]], spec: GridSpec | None = None,
                flags: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The Table-1 layout; a value whose cell has a reliability flag (``flags``: cell_id -> reasons,
    see bench.report.flags) carries the marker FLAG."""
    flags = flags or {}
    ok = [r for r in in_grid_order(records, spec) if r.get("status") == "ok"]
    columns: OrderedDict[str, None] = OrderedDict()
    for r in ok:
        label = column_label(r)
        columns[label] = None
        if budget_of(r) is None:  # minimal-norm: the size of the perturbation is what compares
            columns[f"{label} med {r.get('norm') or 'L2'}"] = None
            columns[f"{label} ρ2"] = None
    by_attack = thresholds(spec)
    for r in ok:
        thr = by_attack.get((r.get("attack_name", r["attack"]), r["attack"], r["threat"]))
        if budget_of(r) is None and thr is not None:
            columns[threshold_label(r, thr)] = None
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
        row["clean"] = fmt_cell(row_clean(recs, ref.get(f"{train}/{runtime}/clean")))
        for r in recs:
            label = column_label(r)
            cell = fmt_cell(acc_cell(r["robust_acc"], record_ci(r, "robust"), reference(ref, train, runtime, r),
                                     spread=seed_spread(r, "robust")))
            row[label] = cell + (FLAG if flags.get(r.get("cell_id", "")) else "")
            if budget_of(r) is None:
                norm = r.get("norm") or "L2"
                row[f"{label} med {norm}"] = fmt_cell({"kind": "norm", "value": r.get("median_norm"), "norm": norm})
                row[f"{label} ρ2"] = fmt_cell({"kind": "norm", "value": r.get("mean_rho2_success", r.get("mean_rho2")),
                                               "norm": "L2"})
                thr = by_attack.get((r.get("attack_name", r["attack"]), r["attack"], r["threat"]))
                if thr is not None:
                    at = robust_at_threshold(r, thr)
                    row[threshold_label(r, thr)] = fmt_cell(outcomes_cell(at))
        for b, col in zip(budgets_in(ok), worst_cols):
            joint = row_worst(recs, b)
            row[col] = fmt_cell(worst_cell(joint, first)) if joint else "-"
        for col in metric_cols:
            row[col] = metric_fmt(metrics.get((train, runtime), {}).get(col), ref.get(f"{train}/{runtime}/{col}"))
        table.append(row)
    cols = ["train-time", "runtime", "clean", *columns, *worst_cols, *metric_cols]
    return pd.DataFrame(table, columns=cols).fillna("-")


def headline(records: list[dict[str, Any]], spec: GridSpec | None = None,
             budget: Budget | None = None) -> tuple[pd.DataFrame, Budget | None]:
    """Rows ranked by the worst case under ``budget`` (default: the main threat model), each compared
    with the next one down by an exact McNemar test on the same examples (bench.report.board)."""
    ok = [r for r in records if r.get("status") == "ok"]
    budget = budget or main_budget(ok, spec)
    if budget is None:
        return pd.DataFrame(), None
    rows = [{"rank": h["rank"], "train-time": h["train-time"], "runtime": h["runtime"], "clean": fmt_cell(h["clean"]),
             worst_label(budget): fmt_cell(h["worst"]), "attacks": h["attacks"], VS_NEXT: h[VS_NEXT]}
            for h in headline_rows(ok, spec, budget)]
    return pd.DataFrame(rows), budget


def footer(ok: list[dict[str, Any]], spec: GridSpec) -> str:
    """n, seed and threat models of a table (the text under it)."""
    ns = sorted({int(r["n"]) for r in ok})
    seeds = sorted({s for r in ok for s in r.get("seeds", [r.get("seed")])}, key=str)
    by_norm: dict[str, list[float]] = {}
    for norm, eps in budgets_in(ok):
        by_norm.setdefault(norm, []).append(eps)
    threats = "; ".join(f"{norm} eps {', '.join(fmt_eps(e) for e in eps)}" for norm, eps in by_norm.items())
    minimal = sorted({r["attack"] for r in ok if r.get("eps") is None})
    text = (f"n = {', '.join(map(str, ns))} test examples of `{spec.dataset}`, seed {', '.join(map(str, seeds))}; "
            f"threat models: {threats or 'none'}")
    if minimal:
        text += f"; unbounded minimal-norm attacks: {', '.join(minimal)}"
    text += ". Brackets: 95% Wilson interval in accuracy points, rounded outward."
    return text + (f" {seeds_note(seeds)}" if len(seeds) > 1 else "")


def notes_path(leaderboard: Path) -> Path:
    """The hand-written notes of a leaderboard file: ``<name>.notes.md`` beside ``<name>.md``."""
    return leaderboard.parent / f"{leaderboard.stem}.notes.md"


def markdown_table(table: dict[str, Any], blank_repeats: bool = True) -> str:
    """A board table (bench.report.board) as a Markdown pipe table; a train-time defense repeated on
    consecutive rows is printed once."""
    cols = table["columns"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(":---" for _ in cols) + "|"]
    last = None
    for row in table["rows"]:
        cells = []
        for c in cols:
            text = fmt_cell(row.get(c, "-"))
            if c == "train-time" and blank_repeats:
                text, last = ("" if text == last else text), text
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def title_of(spec: GridSpec) -> str:
    return f"Leaderboard: {spec.name}" + (" (wiring check, not a measurement)" if spec.wiring_check else "")


WIRING_TEXT = ("**Wiring check, not a measurement.** This grid runs every cell end to end on a model that was "
               "never trained (or at settings far below the paper's), so its numbers say nothing about the "
               "defenses: robust accuracy near 0% is expected by construction.")


def notes_under_tables(model: dict[str, Any]) -> list[str]:
    """The Markdown under the tables: the clean-accuracy rule, reliability flags, which code version
    produced what, failed cells. Further notes (indicators) are appended after these lines."""
    lines: list[str] = []
    if model["clean_drops"]:
        t, rt = model["baseline"]
        dropped = ", ".join(f"{row} ({100 * d:.1f} points lower)" for row, d in model["clean_drops"].items())
        lines += ["", f"{DROP.strip()} Clean accuracy more than {100 * CLEAN_DROP:.0f} points below the undefended "
                  f"model ({t}/{rt}): {dropped}. Such a row is never ranked above the undefended one: a "
                  "defense that misclassifies clean inputs can look robust."]
    if model.get("dprime_rows"):
        lines += ["", f"Clean accuracy of {', '.join(model['dprime_rows'])}: the mean over the row's D' variants, "
                  "braces {min–max} over them. Each white-box cell of such a row builds D' with its own attack "
                  "(db_attacks = \"per-attack\"), as the RMC paper's Table 1 does, so each has its own clean "
                  "accuracy; the adaptive attacks' cells use a PGD D'."]
    if model["flags"]:
        lines += ["", f"{FLAG.strip()} Evaluation looks unreliable (AutoAttack-style checks), the number may "
                  "overstate robustness:"]
        lines += [f"- {f['cell']}: {'; '.join(f['reasons'])}" for f in model["flags"]]
    if model["versions_note"]:
        lines += ["", "Code versions: the cells of this board come from more than one version of the code "
                  "(cells of a finished grid are kept when the code changes; rerun a cell to refresh it):"]
        lines += [f"- {line}" for line in model["versions_note"]]
    if model["failed"]:
        lines += ["", f"{len(model['failed'])} cell(s) failed and are not shown:"]
        lines += [f"- {f['cell']}: {f['error']}" for f in model["failed"]]
    return lines


def n_examples(model: dict[str, Any]) -> str:
    """``100 test examples``, and which rows ran fewer (a board model of bench.report.board)."""
    return f"{model['n']} test examples" + (
        f"; fewer for the rows of {', '.join(f'{rt} ({k})' for rt, k in model['fewer'])}: the first of the same points"
        if model["fewer"] else "")


def headline_note(model: dict[str, Any]) -> str:
    """The Markdown under the headlines: n, seeds, threat models, what the brackets (and braces) mean."""
    return (f"n = {n_examples(model)} of `{model['dataset']}`, seed {', '.join(map(str, model['seeds']))}; "
            f"threat models: {model['threats_text']}. Brackets: 95% Wilson interval in accuracy points, rounded "
            "outward." + (f" {model['seeds_note']}" if model["seeds_note"] else "")
            + (" Cells with fewer seeds (their mean and spread cover only those): "
               f"{'; '.join(model['fewer_seeds'])}." if model["fewer_seeds"] else ""))


def render(records: list[dict[str, Any]], spec: GridSpec, results_path: Path | None = None,
           figures_dir: Path | None = None, link_prefix: str = "", notes: str | None = None,
           limit: int | None = None, data_dir: str | Path | None = None, smoke: bool = False) -> str:
    """The leaderboard Markdown: the headline per threat model, one table per threat model, the
    minimal-norm attacks, then flags and findings; with ``figures_dir`` also its PNG pictures
    (bench.report.plots), linked as ``link_prefix/<name>.png``. ``notes`` (hand-written Markdown, see
    ``notes_path``) is appended verbatim, so regenerating the file keeps it. ``limit``, ``data_dir``
    and ``smoke`` are the run's options, repeated in the Reproduce line."""
    from bench.report.board import board

    records = in_grid_order(records, spec)  # flags and findings list cells in the grid's order too
    model = board(records, spec, limit=limit, data_dir=data_dir, smoke=smoke)
    ok = [r for r in records if r.get("status") == "ok"]
    n = model["n"]
    n_text = n_examples(model)
    versions, devices = model["versions"], model["devices"]
    meta = (f"<!-- advbench grid={spec.name} date={model['date'] or '-'} code={','.join(versions) or '-'} n={n} "
            f"device={','.join(devices) or '-'}" + (" wiring_check=1" if spec.wiring_check else "") + " -->")
    lines = [meta, f"# {title_of(spec)}", ""]
    if spec.description:
        lines += [spec.description, ""]
    if spec.wiring_check:
        lines += [f"> {WIRING_TEXT}", ""]
    tms = model["threat_models"]
    if tms:
        lines += ["## Headline" + (" (wiring check: not a ranking of the defenses)" if spec.wiring_check else ""), "",
                  "Per threat model (norm, eps), rows ranked by the worst case: the share of examples that survive "
                  "every attack with that budget in the row, white-box, adaptive and transfer alike. `attacks`: how "
                  "many attacks that is; a row met by fewer attacks may look stronger than it is. A row is called "
                  "better than the next only when an exact McNemar test on the same examples gives "
                  f"p < {ALPHA}." + (f" {DROP.strip()}: clean accuracy more than {100 * CLEAN_DROP:.0f} points "
                                     "below the undefended model's; such a row is never ranked above it."
                                     if model["clean_drops"] else ""), ""]
        for tm in tms:
            head = {"columns": ["rank", *ROW_COLUMNS, "clean", f"worst {tm['label']}", "attacks", VS_NEXT],
                    "rows": [{**h, f"worst {tm['label']}": h["worst"]} for h in tm["headline"]]}
            main = " (main threat model: the budget most cells share)" if tm["main"] else ""
            lines += [f"### {tm['label']}{main}", "", markdown_table(head, blank_repeats=False), ""]
        lines += [headline_note(model), ""]
    lines += ["## Robust accuracy per threat model", "",
              f"Dataset `{spec.dataset}` ({n_text}), architecture `{spec.arch}`. Accuracy in %, one column per "
              "attack (threat model in parentheses when not `base`), the last column the row's worst case.", ""]
    if spec.reference:
        lines += [f"Numbers in parentheses are the seed paper's ({spec.reference_source or 'reference'}), "
                  f"shown beside ours, not in place of ours; {OUTSIDE} marks one outside our 95% interval.", ""]
    if not ok:
        lines += ["(no finished cells)", ""]
    for tm in tms:
        for table in tm["tables"]:
            lines += [f"### {table['title']}", "", markdown_table(table), ""]
    if model["minimal_norm"]:
        lines += ["## Minimal-norm attacks", "",
                  "Attacks without a budget: robust accuracy is the share they fail to flip; `med L2` / `med L0`: "
                  "the median perturbation norm over the examples they flip; ρ2: Deep Defense's rho_2, mean "
                  "||delta||_2 / ||x||_2 over those examples" + (
                      "; `L2 ≤ t`: robust accuracy when only perturbations within the grid's threshold count (the "
                      "RMC paper's Table 1 convention)" if thresholds(spec) else "") + ".", ""]
        for table in model["minimal_norm"]:
            lines += [markdown_table(table), ""]
    if model["metrics"]:
        lines += ["## Per-model metrics", "", markdown_table(model["metrics"]), ""]
    if model.get("positions"):
        from bench.report.position_tables import position_lines

        lines += position_lines(model["positions"], markdown_table)
    from bench.report.findings import findings_lines
    from bench.report.indicators import indicator_lines

    under = notes_under_tables(model) + indicator_lines(records) + findings_lines(model["findings"])
    if under:
        lines += ["## Flags and findings", *under, ""]
    if figures_dir is not None and ok:
        from bench.report.plots import write_figures

        main = tuple(tms[0]["budget"]) if tms else None
        # a multi-seed grid's pictures draw the pooled cells, as the tables do (one seed: unchanged)
        pictures = write_figures(pool_seeds(ok), spec, Path(figures_dir), main)  # type: ignore[arg-type]
        if pictures:
            lines += ["## Pictures", ""]
            prefix = f"{link_prefix.rstrip('/')}/" if link_prefix else ""
            lines += [f"![{title}]({prefix}{p.name})" for title, p in pictures]
            lines.append("")
    lines.append(f"Reproduce: `{model['reproduce']}`" + (
        " (with the current code: this board mixes code versions, see above)." if len(versions) > 1 else "."))
    if ok:
        lines.append(f"Code version {', '.join(versions) or '-'}; device {', '.join(devices) or '-'}; "
                     f"seed {', '.join(map(str, model['seeds'])) if model['seeds_note'] else ok[0].get('seed')}.")
    if notes and notes.strip():
        lines += ["", notes.strip("\n")]
    return "\n".join(lines) + "\n"
