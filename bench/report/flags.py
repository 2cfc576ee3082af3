"""Flags for cells whose evaluation looks unreliable (AutoAttack-style sanity checks).

- robust accuracy rises with eps (same defenses, attack and threat model): the attack is not
  converging, or the defense masks gradients;
- a transfer or black-box attack beats the white-box one of the same attack and eps: the white-box
  gradients are not informative (gradient masking or a broken adaptive attack);
- zero gradients: a large share of examples whose input gradient of the attacked model is exactly
  zero (recorded by the runner as ``zero_grad_frac``);
- a randomized runtime defense attacked adaptively without EOT (``randomized`` and ``eot_samples``
  in the record);
- an adaptive attack (BPDA, EOT) that is not stronger than the base attack of the same label and eps
  against a defense that changes the input: a working adaptive attack should beat an attack that
  ignores the defense (Athalye et al., ICML 2018; Tramer et al., NeurIPS 2020), so equal numbers
  point at too few EOT draws or steps rather than at a strong defense.

Pure Python over result records (no torch); the runner measures ``zero_grad_frac`` per cell
(bench.run.diagnostics).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: Flag a cell when more than this share of examples has an exactly-zero input gradient.
ZERO_GRAD_MAX = 0.05
WHITE_BOX = ("base", "adaptive")
#: Adaptive attacks built for defenses that transform the input (purifiers, randomized transforms).
INPUT_ATTACKS = ("bpda", "eot", "ride-st")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _is_black_box(r: dict[str, Any]) -> bool:
    return r.get("threat") == "transfer" or bool(r.get("black_box"))


def cell_flags(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """cell_id -> reasons the cell's number may overstate robustness (only cells with a flag)."""
    ok = [r for r in records if r.get("status") == "ok"]
    out: dict[str, list[str]] = defaultdict(list)
    for r in ok:
        z = r.get("zero_grad_frac")
        if z is not None and z > ZERO_GRAD_MAX:
            out[r["cell_id"]].append(f"zero input gradient on {_pct(z)} of examples (gradient masking?)")
        if r.get("threat") == "adaptive" and r.get("randomized") and int(r.get("eot_samples") or 0) <= 1:
            out[r["cell_id"]].append("randomized defense attacked adaptively without EOT")

    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        if r.get("eps") is not None:
            series[(r["train_defense"], r["runtime_defense"], r["attack"], r["threat"])].append(r)
    for rs in series.values():
        rs.sort(key=lambda r: r["eps"])
        for j, big in enumerate(rs):
            smaller = [s for s in rs[:j] if s["eps"] < big["eps"]]
            if not smaller:
                continue
            low = min(smaller, key=lambda s: s["robust_acc"])
            if big["robust_acc"] > low["robust_acc"]:
                out[big["cell_id"]].append(
                    f"robust accuracy rises with eps: {_pct(big['robust_acc'])} at eps {big['eps']:.4g} > "
                    f"{_pct(low['robust_acc'])} at eps {low['eps']:.4g}")

    base_cells = {(r["train_defense"], r["runtime_defense"], r["attack"], r.get("eps")): r
                  for r in ok if r.get("threat") == "base"}
    for r in ok:
        if r.get("threat") != "adaptive" or r.get("runtime_defense") == "none":
            continue
        if r.get("attack_name") not in INPUT_ATTACKS and not r.get("transforms_input"):
            continue
        b = base_cells.get((r["train_defense"], r["runtime_defense"], r["attack"], r.get("eps")))
        if b is not None and r["robust_acc"] >= b["robust_acc"]:
            out[r["cell_id"]].append(
                f"adaptive attack {r.get('attack_name', r['attack'])} is not stronger than the base attack "
                f"({_pct(r['robust_acc'])} >= {_pct(b['robust_acc'])}) against a defense that changes the "
                "input: raise its EOT draws / steps, or give BPDA a closer substitute than the identity (RIDE: "
                "ride-st differentiates its own estimation pass; eot on digits with 8 draws x 20 steps was no "
                "stronger than 2 x 5: leaderboards/eot-strength-digits.md); "
                "the worst-case column counts both attacks")

    def same(r: dict[str, Any]) -> tuple:
        return (r["train_defense"], r["runtime_defense"], r.get("attack_name", r["attack"]), r.get("eps"))

    white = defaultdict(list)
    for r in ok:
        if r.get("threat") in WHITE_BOX and not _is_black_box(r) and r.get("eps") is not None:
            white[same(r)].append(r)
    for t in ok:
        if not _is_black_box(t) or t.get("eps") is None:
            continue
        for w in white.get(same(t), []):
            if t["robust_acc"] < w["robust_acc"]:
                out[w["cell_id"]].append(
                    f"{t['threat']} attack {t['attack']} is stronger: {_pct(t['robust_acc'])} < "
                    f"{_pct(w['robust_acc'])} white-box")
    return dict(out)
