"""RMC paper Tables 6 and 7 laid out from an ablation grid's records (Markdown on stdout).

    python examples/rmc_ablation_tables.py rmc-ablations-digits [results-dir]

Table 6: robust accuracy per attack (columns) for each D' mix (rows: None, Single-Attack,
All-In, Leave-One-Out), where the row for "Single-Attack" / "Leave-One-Out" takes, per column, the
runtime variant built for that attacker (``rmc@single-<a>`` / ``rmc@loo-<a>``; ``rmc`` is the PGD
single-attack row). Table 7: accuracy under PGD-Skip over windows of stream positions (the paper's
"p" = points seen before), from the records' ``per_point`` field. Brackets: 95% Wilson interval.
"""

from __future__ import annotations

import math
import sys

SHORT = {"cw-l2": "cw", "deepfool": "df", "jsma": "jsma", "fgsm": "fgsm", "bim": "bim", "pgd": "pgd"}


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    z, p = 1.96, k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, 100 * (c - h)), min(100.0, 100 * (c + h))


def cell(bits: str) -> str:
    k, n = bits.count("1"), len(bits)
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.0f} [{math.floor(lo)}–{math.ceil(hi)}] (n={n})" if n else "-"


def main(grid_name: str, results_dir: str = "results") -> None:
    from pathlib import Path

    from bench.spec import grid
    from bench.track.results import load_records

    spec = grid.load(grid_name)
    wanted = {c.cell_id for c in spec.cells()}  # this grid's cells only (not records of an older layout)
    recs = [r for r in load_records(Path(results_dir) / f"{spec.name}.jsonl")
            if r.get("status") == "ok" and r.get("cell_id") in wanted]
    by = {(r["runtime_defense"], r["attack"]): r for r in recs}
    attacks = [a for a in ("fgsm", "bim", "pgd", "cw-l2", "deepfool", "jsma") if ("none", a) in by]
    print("Table 6 (robust accuracy %, base threat: attacks crafted on the undefended model)\n")
    print("| D' | " + " | ".join(attacks) + " |")
    print("|---|" + "---|" * len(attacks))
    rows = {"None": lambda a: "none", "Single-Attack D'": lambda a: "rmc" if a == "pgd" else f"rmc@single-{SHORT[a]}",
            "All-In D'": lambda a: "rmc@all-in", "Leave-One-Out D'": lambda a: f"rmc@loo-{SHORT[a]}"}
    for name, runtime in rows.items():
        vals = [cell(by[(runtime(a), a)]["per_example"]) if (runtime(a), a) in by else "-" for a in attacks]
        print(f"| {name} | " + " | ".join(vals) + " |")
    skip = [r for r in recs if r["attack"] == "pgd-skip" and r.get("per_point")]
    if not skip:
        return
    n = max(len(r["per_point"]["correct"]) for r in skip)
    edges = sorted({0, min(10, n), n // 2, n})
    print("\nTable 7 (accuracy % under PGD-Skip, q = 0, whole stream known; columns: stream positions p+1..)\n")
    spans = [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
    print("| row | clean (all) | " + " | ".join(f"p = {a}..{b - 1}" for a, b in spans) + " | all |")
    print("|---|---|" + "---|" * (len(spans) + 1))
    for r in sorted(skip, key=lambda r: ["rmc", "rmc-nonmasking", "hindsight-adv"].index(r["runtime_defense"])
                    if r["runtime_defense"] in ("rmc", "rmc-nonmasking", "hindsight-adv") else 9):
        bits = r["per_point"]["correct"]
        print(f"| {r['runtime_defense']} | {cell(r['clean_per_example'])} | "
              + " | ".join(cell(bits[a:b]) for a, b in spans) + f" | {cell(bits)} |")


if __name__ == "__main__":
    main(*(sys.argv[1:] or ["rmc-ablations-digits"]))
