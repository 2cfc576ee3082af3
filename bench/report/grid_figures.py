"""The figures a grid asks for (``[[figures]]`` tables), drawn by ``bench plot --grid NAME``.

RMC paper (Wu, Yuan, Wu, ICML 2020) Figures 1-4 as kinds:

- ``vs-points``: a quantity along one stream, one line per record (Figure 2: ``metric = "delay_s"``;
  Figure 3a: ``"robust_acc"``, the accuracy over the points seen so far, or over the last
  ``window`` points; Figure 3b: ``"adapt_epochs"``), from the records' ``per_point`` field. With
  ``over_seeds = true``, one line per row and attack: the mean over the grid's seeds, its band one
  standard deviation over them (the supplement's Figure 3: "the mean robustness of RMC with 6
  different runs, while the translucent areas are the variance").
- ``vs-param``: accuracy against a runtime hyperparameter (Figure 4: ``param = "k"`` or
  ``"copies"``, i.e. |D'| = (1 + copies) |D|) over the rows listed, one line per attack (``metric =
  "clean_acc"``: one line, "clean"); ``by = ["target_noise"]`` also splits the lines by the values of
  those runtime hyperparameters (RIDE's supplement Figure 9: fixed against noisy target over the
  loss-masking ratio).
- ``vs-eps``: robust accuracy (or ``metric = "success_rate"``: 100 minus it, the share of test
  images misclassified under the attack) against eps, one line per (row, attack).

Deep Defense supplement (Yan, Guo, Zhang, NeurIPS 2018) Figure 6 as a kind:

- ``rho-vs-acc``: each model's rho_2 under DeepFool (its records' ``mean_rho2_success``: mean
  ||r|| / ||x|| over the examples DeepFool flipped) against its clean accuracy, one line per train
  defense, its ``@`` variants (e.g. ``adv-fgsm@eps0.1``) the points, in the order ``rows`` lists them.
- ``neighbour-labels``: Figure 1, the label histogram of an adversarial point's K nearest
  neighbours in D and in D' (computed at plot time from the cached model and D'; bench.run.neighbour_figure).

RIDE (Lin, Pfister, Zhang) Figure 7 as a kind (bench.report.purifier_figure):

- ``purifier-analysis``: after BPDA, ``metric = "distances"`` (7a) box plots of defend2adv, adv2gt and
  defense2gt per purifier; ``metric = "accuracy"`` (7b) bars of the classifier's accuracy on the
  adversarial and on the defended images per purifier (records of ``metrics = ["purifier-distances"]``).

Keys: ``name`` (the PNG's file name), ``kind``, ``title``, ``metric``, ``rows`` (runtime defense
names as the grid spells them, e.g. ``rmc@k64``, or ``train/runtime``), ``attacks`` (attack labels),
``param``, ``by``, ``window``, ``point`` (neighbour-labels: which test point), ``over_seeds``. Series are computed by
``figure_series`` (pure; tests compare it with the records) and drawn by ``draw``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core.paths import inside
from bench.report import purifier_figure
from bench.spec.figure_tables import FIGURE_KEYS, FIGURE_KINDS, METRICS, check_figures  # noqa: F401  (re-exported)


def _row_match(r: dict[str, Any], rows: list[str]) -> bool:
    return not rows or r["runtime_defense"] in rows or f"{r['train_defense']}/{r['runtime_defense']}" in rows


def selected(records: list[dict[str, Any]], fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished records a figure draws from, in the order its ``rows`` and ``attacks`` list them."""
    rows, atks = fig["rows"], fig["attacks"]
    picked = [r for r in records if r.get("status") == "ok" and _row_match(r, rows)
              and (not atks or r["attack"] in atks)]

    def rank(r: dict[str, Any]) -> tuple[int, int]:
        ri = next((i for i, n in enumerate(rows) if n in (r["runtime_defense"],
                                                          f"{r['train_defense']}/{r['runtime_defense']}")), 0)
        return ri, atks.index(r["attack"]) if r["attack"] in atks else 0

    return sorted(picked, key=rank)


def _label(r: dict[str, Any], with_row: bool = True, with_train: bool = False) -> str:
    threat = "" if r.get("threat", "base") == "base" else f" ({r['threat']})"
    row = f"{r['runtime_defense']}: " if with_row else ""
    if with_train:
        row = f"{r['train_defense']}/{row}" if with_row else f"{r['train_defense']}: "
    return f"{row}{r['attack']}{threat}"


def param_value(r: dict[str, Any], param: str) -> Any:
    """A runtime hyperparameter of a record, as the grid set it (None where it did not)."""
    return (r.get("params", {}).get("runtime") or {}).get(param)


def _value_text(v: Any) -> str:
    """A hyperparameter's value as a grid file spells it (``true``, not ``True``)."""
    return str(v).lower() if isinstance(v, bool) else str(v)


def figure_series(records: list[dict[str, Any]], fig: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines of a figure: [{"label", "x", "y"}] and, for an accuracy, "n" (the examples behind
    each y, for its interval band); what ``draw`` plots, nothing else."""
    from bench.core import stream_records as perpoint

    kind, metric = fig["kind"], fig["metric"]
    recs = selected(records, fig)
    out: list[dict[str, Any]] = []
    if kind == "vs-points" and fig.get("over_seeds"):
        out = seed_mean_series(recs, metric, fig.get("window"))
    elif kind == "vs-points":
        for r in recs:
            xs, ys = perpoint.series(r, metric, fig.get("window"))
            if xs:
                line: dict[str, Any] = {"label": _label(r), "x": xs, "y": ys}
                if metric == "robust_acc":  # the accuracy over this many points: its interval's n
                    line["n"] = [min(x, fig["window"]) if fig.get("window") else x for x in xs]
                out.append(line)
    elif kind == "vs-param":
        lines: dict[str, list[tuple[Any, float, int]]] = {}
        for r in recs:
            v = param_value(r, fig["param"])
            if v is None or r.get(metric) is None:
                continue
            label = "clean" if metric == "clean_acc" else _label(r, with_row=False)
            label += "".join(f", {p} = {_value_text(param_value(r, p))}" for p in fig.get("by", []))
            pts0 = lines.setdefault(label, [])
            if metric != "clean_acc" or not any(p[0] == v for p in pts0):  # clean: one point per row
                pts0.append((v, 100 * float(r[metric]), int(r.get("n") or 0)))
        for label, pts in lines.items():
            pts.sort(key=lambda p: p[0])
            out.append({"label": label, "x": [p[0] for p in pts], "y": [p[1] for p in pts], "n": [p[2] for p in pts]})
    elif kind == "vs-eps":
        lines2: dict[str, list[tuple[float, float]]] = {}
        # Rows that differ only in their train-time defense (Figure 6: runtime none) keep apart lines.
        by_train = len({r["train_defense"] for r in recs}) > 1
        for r in recs:
            if r.get("eps") is not None:
                acc = 100 * float(r["robust_acc"])
                lines2.setdefault(f"{_label(r, with_train=by_train)} {r.get('norm', '')}".strip(), []).append(
                    (float(r["eps"]), 100 - acc if metric == "success_rate" else acc, int(r.get("n") or 0)))
        for label, pts in lines2.items():
            pts.sort()
            out.append({"label": label, "x": [p[0] for p in pts], "y": [p[1] for p in pts], "n": [p[2] for p in pts]})
    elif kind == "purifier-analysis":
        out = purifier_figure.series(recs, metric)
    elif kind == "rho-vs-acc":
        lines3: dict[str, list[tuple[float, float, str]]] = {}
        seen: set[str] = set()
        for r in recs:  # one point per model: its first record with a DeepFool rho_2
            model = f"{r['train_defense']}/{r['runtime_defense']}"
            if model in seen or r.get("mean_rho2_success") is None:
                continue
            seen.add(model)
            base, _, variant = r["train_defense"].partition("@")
            lines3.setdefault(base, []).append((100 * float(r["clean_acc"]), float(r["mean_rho2_success"]), variant))
        for label, pts3 in lines3.items():
            out.append({"label": label, "x": [p[0] for p in pts3], "y": [p[1] for p in pts3],
                        "tags": [p[2] for p in pts3]})
    return out


def seed_mean_series(recs: list[dict[str, Any]], metric: str, window: int | None) -> list[dict[str, Any]]:
    """vs-points lines pooled over seeds: per (row, attack) the mean at each stream position over the
    seeds' records, and "spread", the mean -/+ one (population) standard deviation over them; the
    lines stop where the shortest seed's stream does."""
    import numpy as np

    from bench.core import stream_records as perpoint

    runs: dict[str, list[list[float]]] = {}
    for r in recs:
        ys = perpoint.series(r, metric, window)[1]
        if ys:
            runs.setdefault(_label(r), []).append(ys)
    out = []
    for label, ys_runs in runs.items():
        length = min(len(ys) for ys in ys_runs)
        arr = np.array([ys[:length] for ys in ys_runs], dtype=float)
        mean, sd = arr.mean(axis=0), arr.std(axis=0)
        out.append({"label": f"{label} (mean of {len(ys_runs)} seeds)", "x": list(range(1, length + 1)),
                    "y": mean.tolist(), "spread": ((mean - sd).tolist(), (mean + sd).tolist())})
    return out


def interval_band(line: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """Lower and upper 95% Wilson bounds (in %) of an accuracy line with its "n" per point."""
    from bench.core.stats import wilson_interval

    ns = line.get("n")
    if not ns or len(ns) != len(line["y"]) or not all(ns):
        return None
    bounds = [wilson_interval(round(y * k / 100), k) for y, k in zip(line["y"], ns)]
    return [100 * lo for lo, _ in bounds], [100 * hi for _, hi in bounds]


_YLABEL = {"robust_acc": "robust accuracy (%)", "clean_acc": "clean accuracy (%)",
           "success_rate": "attack success rate (%)", "rho2": "rho_2 under DeepFool"}
_PERCENT = ("robust_acc", "clean_acc", "success_rate")


def draw(series: list[dict[str, Any]], fig: dict[str, Any], path: Path, n: int | None = None) -> Path | None:
    """One PNG (the style of bench.report.plots); None when there is nothing to draw."""
    if not series:
        return None
    from bench.core import stream_records as perpoint
    from bench.report.plots import pyplot

    plt = pyplot()
    f, ax = plt.subplots(figsize=(7, 4.5))
    kind, metric = fig["kind"], fig["metric"]
    note = ""
    if kind == "purifier-analysis":
        note = " " + purifier_figure.draw_on(ax, series, metric)
    elif kind == "neighbour-labels":
        width = 0.8 / len(series)
        for j, s in enumerate(series):
            ax.bar([x + (j - (len(series) - 1) / 2) * width for x in s["x"]], s["y"], width=width, label=s["label"])
        ax.set_xticks(series[0]["x"])
        ax.set_xlabel("class label of the neighbour")
        ax.set_ylabel("share of the K nearest neighbours (%)")
    else:
        for s in series:
            (line,) = ax.plot(s["x"], s["y"], marker="o" if len(s["x"]) < 20 else None, label=s["label"])
            for x, y, tag in zip(s["x"], s["y"], s.get("tags", [])):  # rho-vs-acc: which variant a point is
                if tag:
                    ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            band = s.get("spread") or (interval_band(s) if metric in _PERCENT else None)
            if band:
                ax.fill_between(s["x"], band[0], band[1], color=line.get_color(), alpha=0.15, linewidth=0)
        if kind == "vs-points":
            ax.set_xlabel("test points seen")
            ax.set_ylabel(perpoint.VS_POINTS_METRICS[metric] if not fig.get("window") or metric != "robust_acc"
                          else f"robust accuracy over the last {fig['window']} points (%)")
        elif kind == "rho-vs-acc":
            ax.set_xlabel("clean accuracy (%)")
            ax.set_ylabel(_YLABEL[metric])
        else:
            ax.set_xlabel(fig.get("param", "eps") if kind == "vs-param" else "eps")
            ax.set_ylabel(_YLABEL.get(metric, metric))
        if metric in _PERCENT:
            ax.set_ylim(0, 100)
    title = fig.get("title") or fig["name"]
    if any("spread" in s for s in series):
        title += " (band: mean -/+ 1 s.d. over seeds)"
    elif metric in _PERCENT and kind != "neighbour-labels":
        title += " (band: 95% Wilson interval)"
    title += note
    ax.set_title("\n".join(textwrap.wrap(title + (f" (n = {n})" if n else ""), 80)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    f.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    f.savefig(path, dpi=120)
    plt.close(f)
    return path


NeighbourSeries = Callable[[Any, dict[str, Any]], tuple[dict[str, Any], str]]


def write_grid_figures(spec: Any, records: list[dict[str, Any]], folder: Path,
                       neighbour_series: NeighbourSeries | None = None
                       ) -> list[tuple[dict[str, Any], Path | None, str]]:
    """Every figure the grid lists, as ``folder/<name>.png``; (figure, path or None, note) per figure.

    ``neighbour-labels`` figures need a run of the grid's models (bench.run.neighbour_figure): the
    caller passes ``neighbour_series(spec, figure)``; without it they are skipped with a note."""
    out = []
    n = max((r.get("n", 0) for r in records if r.get("status") == "ok"), default=0) or None
    for fig in spec.figures:
        note = ""
        if fig["kind"] == "neighbour-labels":
            if neighbour_series is None:
                out.append((fig, None, "a neighbour-labels figure needs its models: draw it with `bench plot`"))
                continue
            series, note = neighbour_series(spec, fig)
            fig = {**fig, "title": f"{fig.get('title') or fig['name']}\n{note}"}
            path = draw(series, fig, inside(folder, f"{fig['name']}.png"))
        else:
            series = figure_series(records, fig)
            path = draw(series, fig, inside(folder, f"{fig['name']}.png"), n)
            if path is None:
                note = "no finished record has the data (rows / attacks / per-point fields)"
        out.append((fig, path, note))
    return out
