"""Leaderboard columns for per-model metrics in the records (bench.run.model_metrics), without importing torch.

Values are shown as measured (l2 norms, ratios, scores), not as percentages; a seed paper's number
for ``"<train>/<runtime>/<column>"`` in the grid's [reference] is shown in parentheses beside ours.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

#: Record field -> column label (Deep Defense's supplement Table 2).
COLUMNS = OrderedDict([("deepfool_l2", "l2 (DeepFool)"), ("deepfool_rho2", "rho_2 (DeepFool)"),
                       ("fgs_rho_inf", "rho_inf (FGS)"), ("cw_l2", "l2 (C&W)"), ("pass", "PASS")])


def metric_values(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(train-time, runtime) -> {column label: value}, from the first record of the pair holding it."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        row = out.setdefault((r["train_defense"], r["runtime_defense"]), {})
        for field, label in COLUMNS.items():
            if r.get(field) is not None and label not in row:
                row[label] = float(r[field])
    return out


def fmt(value: float | None, reference: float | None) -> str:
    ours = "-" if value is None else f"{value:.3g}"
    return ours if reference is None else f"{ours} ({reference:g})"
