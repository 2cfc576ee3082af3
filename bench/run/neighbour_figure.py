"""RMC paper Figure 1 (b, c): the labels of an adversarial point's K nearest neighbours in D and in D'.

Computed at plot time from what a run cached (the trained model, D' and the adversarial examples of
a ``base`` cell): the fixed model's deep features of x_adv are searched among the clean rows of D'
(that is D) and among all of D'. RMC's premise (Section 3): in D the neighbours of x_adv
concentrate on one wrong class; in D' they scatter over classes, so adapting to them cleanses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.core.errors import BenchError
from bench.spec.grid import GridSpec


def _cell(spec: GridSpec, fig: dict[str, Any]) -> Any:
    rows, atks = fig["rows"], fig["attacks"]
    for c in spec.cells():
        if (not rows or c.runtime_defense in rows) and (not atks or c.attack_label in atks) and c.threat == "base":
            return c
    raise BenchError(f"{spec.name}: figure {fig['name']} needs a base-threat cell of a nearest-neighbour defense "
                     f"(rows {rows}, attacks {atks}); none in the grid")


def label_histograms(defense: Any, feats: torch.Tensor, k: int, classes: int) -> tuple[list[float], list[float]]:
    """Share (%) of each class among the k nearest neighbours of one feature vector in D and in D'."""
    from defenses.knn_index import KnnIndex

    db = defense.database
    clean = (~db.is_adv).nonzero().flatten()
    in_d = clean[KnnIndex(db.features[clean]).search(feats, k)[1][0]]
    in_dp = defense.index.search(feats, k)[1][0]
    out = []
    for idx in (in_d, in_dp):
        counts = torch.bincount(db.y[idx], minlength=classes).float()
        out.append((100 * counts / counts.sum()).tolist())
    return out[0], out[1]


def neighbour_series(spec: GridSpec, fig: dict[str, Any], cache_dir: Path | None = None,
                     data_dir: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """The two bars of Figure 1 and a caption naming the point, its label and the base model's guess."""
    from bench.run.runner import Runner, RunOptions

    opts = RunOptions(tracking=False, progress=False, data_dir=data_dir,
                      **({} if cache_dir is None else {"cache_dir": Path(cache_dir)}))
    runner = Runner(spec, opts)
    runner.setup()
    cell = _cell(spec, fig)
    art = runner.artifacts
    model, key = art.model(cell.arch, cell.train_defense, cell.train_params, cell.seed)
    defense = art.runtime(cell, model, key)
    if not hasattr(defense, "database"):
        raise BenchError(f"figure {fig['name']}: {cell.runtime_defense} has no database D' to search")
    attack, _ = art.attack(cell)
    x, y = runner.test.x.to(runner.device), runner.test.y.to(runner.device)
    x_adv, _ = runner.evaluation.craft(cell, attack, model, defense, x, y, art.adv_key(cell))
    with torch.no_grad():
        pred = model(x_adv).argmax(1).cpu()
    fooled = (pred != y.cpu()).nonzero().flatten().tolist()
    point = int(fig.get("point", fooled[0] if fooled else 0))
    classes = int(max(int(defense.database.y.max()) + 1, 2))
    with torch.no_grad():
        feats = model.features(x_adv[point : point + 1]).float().cpu()
    in_d, in_dp = label_histograms(defense, feats, defense.k, classes)
    xs = list(range(classes))
    caption = (f"test point {point}: label {int(y[point])}, {cell.attack} x_adv classified {int(pred[point])} "
               f"by the base model; K = {defense.k}")
    return [{"label": "N(x_adv) in D", "x": xs, "y": in_d}, {"label": "N'(x_adv) in D'", "x": xs, "y": in_dp}], caption
