"""Figure kind ``purifier-analysis``: RIDE's Figure 7 (Lin, Pfister, Zhang), "Analysis of defense
against BPDA on MNIST", from the records of a grid with ``metrics = ["purifier-distances"]``.

- ``metric = "distances"`` (Fig. 7a): box plots of defend2adv, adv2gt and defense2gt, one box per
  purifier (row) in each of the three groups.
- ``metric = "accuracy"`` (Fig. 7b): bars of the classifier's top-1 accuracy on the adversarial
  images (no defense) and on the defended ones (the cell's robust accuracy), per purifier.

``series`` is pure (tests compare it with the records); ``draw_on`` draws it on a matplotlib axis.
"""

from __future__ import annotations

from typing import Any

from bench.spec.purifier_fields import ADV_ACC, DISTANCES, NORM, per_example_field

ADVERSARIAL, DEFENDED = "adversarial (no defense)", "defended"


def _has_fields(r: dict[str, Any]) -> bool:
    return all(r.get(per_example_field(d)) for d in DISTANCES) and r.get(ADV_ACC) is not None


def row_labels(recs: list[dict[str, Any]]) -> list[str]:
    """One label per record: the runtime defense, plus whatever else tells the records apart
    (train-time defense, attack, eps, seed)."""
    def varies(key: str) -> bool:
        return len({str(r.get(key)) for r in recs}) > 1

    out = []
    for r in recs:
        label = f"{r['train_defense']}/{r['runtime_defense']}" if varies("train_defense") else r["runtime_defense"]
        extra = [str(r["attack"])] if varies("attack") else []
        extra += [f"eps {r['eps']:g}"] if varies("eps") and r.get("eps") is not None else []
        extra += [f"seed {r['seed']}"] if varies("seed") else []
        out.append(f"{label} ({', '.join(extra)})" if extra else label)
    return out


def series(recs: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """``distances``: per record {"label", "x": the three distance names, "y": each one's per-example
    values}. ``accuracy``: two bars series {"label", "x": row labels, "y": accuracy in %, "n"}: the
    classifier on x_adv without the defense, and with it. Records without the metric are left out."""
    recs = [r for r in recs if _has_fields(r)]
    labels = row_labels(recs)
    if metric == "distances":
        return [{"label": lab, "x": list(DISTANCES), "y": [list(r[per_example_field(d)]) for d in DISTANCES]}
                for lab, r in zip(labels, recs)]
    if not recs:
        return []
    n = [int(r.get("n") or 0) for r in recs]
    return [{"label": ADVERSARIAL, "x": labels, "y": [100 * float(r[ADV_ACC]) for r in recs], "n": n},
            {"label": DEFENDED, "x": labels, "y": [100 * float(r["robust_acc"]) for r in recs], "n": n}]


def draw_on(ax: Any, data: list[dict[str, Any]], metric: str) -> str:
    """Draw ``series(..., metric)`` on ``ax``; returns the note for the title."""
    colors = [f"C{i}" for i in range(10)]
    if metric == "distances":
        k = len(data)
        for i, s in enumerate(data):
            pos = [j * (k + 1) + i for j in range(len(s["x"]))]
            box = ax.boxplot(s["y"], positions=pos, widths=0.8, patch_artist=True, medianprops={"color": "black"})
            for patch in box["boxes"]:
                patch.set(facecolor=colors[i % 10], alpha=0.6)
            box["boxes"][0].set_label(s["label"])
        ax.set_xticks([j * (k + 1) + (k - 1) / 2 for j in range(len(DISTANCES))], list(DISTANCES))
        ax.set_ylabel(f"{NORM} distance (images in [0, 1])")
        return "(box: quartiles, whiskers 1.5 IQR)"
    from bench.report.grid_figures import interval_band  # imported here: grid_figures imports this module

    width = 0.8 / max(len(data), 1)
    for j, s in enumerate(data):
        xs = [i + (j - (len(data) - 1) / 2) * width for i in range(len(s["x"]))]
        band = interval_band(s)  # None where a bar has no examples: no error bars then
        err = None if band is None else [[max(0.0, y - lo) for y, lo in zip(s["y"], band[0])],
                                         [max(0.0, hi - y) for y, hi in zip(s["y"], band[1])]]
        ax.bar(xs, s["y"], width=width, yerr=err, capsize=3, label=s["label"], color=colors[j % 10])
    ax.set_xticks(range(len(data[0]["x"])), data[0]["x"])
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    return "(bars: 95% Wilson interval)"
