"""The ``purifier-distances`` metric's names and its load-time check, without importing torch.

RIDE (Lin, Pfister, Zhang), Figure 7: after BPDA attacks on MNIST, (a) the distributions of three
image distances per purifier g (defend2adv = ||g(x_adv) - x_adv||, adv2gt = ||x_adv - x||,
defense2gt = ||g(x_adv) - x||), (b) the classifier's top-1 accuracy on x_adv and on g(x_adv).
bench.run.purifier_distances computes the record fields; bench.report.purifier_figure draws them.
"""

from __future__ import annotations

from typing import Any

from bench.core.errors import BenchError

#: The grid-level ``metrics = [...]`` name.
NAME = "purifier-distances"
#: Figure 7(a)'s distances, in the paper's order.
DISTANCES = ("defend2adv", "adv2gt", "defense2gt")
#: The norm of every distance: the paper does not name one; L2 over the whole image is our choice.
NORM = "L2"
#: Summary statistics per distance: ``<distance>_<stat>`` (quartiles by linear interpolation).
STATS = ("q1", "median", "q3")
#: The classifier's top-1 accuracy on x_adv without the defense (Figure 7(b)'s "adversarial" bar;
#: the "defended" bar is the cell's ``robust_acc``).
ADV_ACC = "adv_acc_undefended"


def per_example_field(distance: str) -> str:
    """The record field holding one distance per test example."""
    return f"per_example_{distance}"


def check_metric(metrics: list[Any], attacks: list[Any], figures: tuple[dict[str, Any], ...], where: str) -> None:
    """``purifier-distances`` needs a BPDA attack under threat "adaptive" (the cells it applies to);
    a ``purifier-analysis`` figure needs the metric. One line each."""
    if NAME in metrics and not any(a.name == "bpda" and a.threat == "adaptive" for a in attacks):
        raise BenchError(f"{where}: metrics = [\"{NAME}\"] applies to BPDA cells only (RIDE's Figure 7); add an "
                         "[[attacks]] entry with name = \"bpda\" and threat = \"adaptive\" on a purifier "
                         "(median, tvm, ride), or remove the metric")
    for f in figures:
        if f["kind"] == "purifier-analysis" and NAME not in metrics:
            raise BenchError(f"{where}: figure {f['name']!r} (kind purifier-analysis) draws the fields of "
                             f"metrics = [\"{NAME}\"]; add that line to the grid")
