"""Markdown leaderboards in the RMC paper's Table-1 layout (pandas + tabulate).

Rows are grouped by train-time defense, one row per runtime defense; columns are clean accuracy,
then robust accuracy per attack, then the worst case: the share of examples that survive every
eps-bounded attack of the row (never an average over attacks; minimal-norm attacks have no budget,
so they would always win against an undefended model and are left out of it). Where the grid spec carries a seed paper's
number for a cell, it is shown in parentheses beside ours, never in place of ours.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import pandas as pd

from bench.grid import GridSpec

WORST = "worst case"
FLAG = " †"


def column_label(rec: dict[str, Any], multi_eps: bool) -> str:
    label = rec["attack"]
    if rec["threat"] != "base":
        label += f" ({rec['threat']})"
    if multi_eps and rec.get("eps") is not None:
        label += f" @{rec['eps']:.3g}"
    return label


def worst_case(per_example: list[str]) -> float | None:
    """Share of examples robust under every attack: AND over the per-example outcome strings."""
    if not per_example or len({len(s) for s in per_example}) != 1:
        return None
    n = len(per_example[0])
    survive = sum(all(s[i] == "1" for s in per_example) for i in range(n))
    return survive / n if n else None


def build_table(records: list[dict[str, Any]], spec: GridSpec | None = None,
                flags: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The Table-1 layout; a value whose cell has a reliability flag (``flags``: cell_id -> reasons,
    see bench.reliability) carries the marker FLAG."""
    flags = flags or {}
    ok = [r for r in records if r.get("status") == "ok"]
    flagged: set[tuple[tuple[str, str], str]] = set()
    eps_per_attack: dict[tuple[str, str], set] = {}
    for r in ok:
        eps_per_attack.setdefault((r["attack"], r["threat"]), set()).add(r.get("eps"))
    columns: OrderedDict[str, None] = OrderedDict()
    rows: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
    if spec is not None:
        for pair in spec.pairs():
            rows[pair] = {}
    per_example: dict[tuple[str, str], list[str]] = {}
    clean: dict[tuple[str, str], list[float]] = {}
    for r in ok:
        pair = (r["train_defense"], r["runtime_defense"])
        label = column_label(r, len(eps_per_attack[(r["attack"], r["threat"])]) > 1)
        columns[label] = None
        rows.setdefault(pair, {})[label] = r["robust_acc"]
        if flags.get(r.get("cell_id", "")):
            flagged.add((pair, label))
        clean.setdefault(pair, []).append(r["clean_acc"])
        if r.get("eps") is not None:  # minimal-norm attacks are unbounded: they always win against `none`
            per_example.setdefault(pair, []).append(r.get("per_example", ""))
    ref = spec.reference if spec is not None else {}
    from bench.metric_columns import fmt as metric_fmt
    from bench.metric_columns import metric_values

    metrics = metric_values(ok)  # per-model metrics (Deep Defense's Table 2), shown as measured
    metric_cols = list(OrderedDict.fromkeys(c for m in metrics.values() for c in m))
    table = []
    last_train = None
    for (train, runtime), vals in rows.items():
        if not vals:
            continue
        row = {"train-time": train if train != last_train else "", "runtime": runtime}
        last_train = train
        c = clean.get((train, runtime))
        row["clean"] = _fmt(sum(c) / len(c) if c else None, ref.get(f"{train}/{runtime}/clean"))
        for col in columns:
            row[col] = _fmt(vals.get(col), ref.get(f"{train}/{runtime}/{col}"))
            if ((train, runtime), col) in flagged:
                row[col] += FLAG
        row[WORST] = _fmt(worst_case(per_example.get((train, runtime), [])), None)
        for col in metric_cols:
            row[col] = metric_fmt(metrics.get((train, runtime), {}).get(col), ref.get(f"{train}/{runtime}/{col}"))
        table.append(row)
    return pd.DataFrame(table, columns=["train-time", "runtime", "clean", *columns, WORST, *metric_cols])


def _fmt(value: float | None, reference: float | None) -> str:
    ours = "-" if value is None else f"{100 * value:.1f}"
    return ours if reference is None else f"{ours} ({reference:g})"


def render(records: list[dict[str, Any]], spec: GridSpec, results_path: Path | None = None) -> str:
    from bench.reliability import cell_flags

    flags = cell_flags(records)
    df = build_table(records, spec, flags)
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    n = max((r["n"] for r in ok), default=0)
    lines = [f"# Leaderboard: {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"Dataset `{spec.dataset}` ({n} test examples), architecture `{spec.arch}`. Accuracy in %. "
        f"Columns: clean accuracy, robust accuracy per attack (threat model in parentheses when not `base`), "
        f"and the worst case: the share of examples that survive every eps-bounded attack in the row "
        f"(the unbounded minimal-norm attacks, DeepFool, CW-L2 and JSMA, are left out of it).",
        "",
    ]
    if spec.reference:
        lines += [f"Numbers in parentheses are the seed paper's ({spec.reference_source or 'reference'}), "
                  "shown beside ours, not in place of ours.", ""]
    table = df.to_markdown(index=False, tablefmt="pipe", disable_numparse=True) if len(df) else "(no finished cells)"
    lines.append(table)
    if flags:
        by_id = {r.get("cell_id"): r for r in ok}
        lines += ["", f"{FLAG.strip()} Evaluation looks unreliable (AutoAttack-style checks), the number may "
                  "overstate robustness:"]
        lines += [f"- {by_id[cid]['key']}: {'; '.join(why)}" for cid, why in flags.items() if cid in by_id]
    lines += ["", f"Reproduce: `bench run --grid {spec.name}` then `bench leaderboard --grid {spec.name}`."]
    if ok:
        versions = sorted({r.get("code_version", "") for r in ok})
        devices = sorted({r.get("device", "") for r in ok})
        lines.append(f"Code version {', '.join(versions)}; device {', '.join(devices)}; seed {ok[0].get('seed')}.")
    if failed:
        lines += ["", f"{len(failed)} cell(s) failed and are not shown:"]
        lines += [f"- {r['key']}: {r.get('error', '')}" for r in failed]
    return "\n".join(lines) + "\n"
