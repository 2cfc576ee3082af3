"""Generated findings list only the differences an exact McNemar test supports (p < 0.05)."""

from __future__ import annotations

import random
import re

from bench.core.stats import mcnemar
from bench.report.findings import findings, findings_lines, holm
from bench.report.leaderboard import render
from bench.report.site import BoardInput, board_model, render_board
from bench.spec import grid


def rec(cid: str, per_example: str, runtime: str = "none", attack: str = "pgd", threat: str = "base",
        eps: float = 0.1) -> dict:
    return {"cell_id": cid, "key": f"standard/{runtime}/{attack}/{threat}/{eps}", "status": "ok",
            "train_defense": "standard", "runtime_defense": runtime, "attack": attack, "attack_name": attack,
            "threat": threat, "eps": eps, "norm": "Linf", "clean_acc": 0.95, "n": len(per_example), "seed": 0,
            "robust_acc": per_example.count("1") / len(per_example), "per_example": per_example,
            "code_version": "0.1.0+abc1234"}


SPEC = grid.parse({"dataset": "digits", "arch": "small-cnn",
                   "runtime": {"none": {}, "median": {}, "tvm": {}, "ride": {}}}, "g")
BASE = "0" * 10 + "1" * 10  # undefended: 50% on 20 points


def known_records() -> list[dict]:
    """median: 10 vs 0 discordant against the undefended row (p = 2/1024); tvm: 6 vs 3 (p = 0.51)."""
    median = "1" * 20
    tvm = "1" * 6 + "0" * 4 + "0" * 3 + "1" * 7
    assert mcnemar(median, BASE)[:2] == (10, 0) and mcnemar(tvm, BASE)[:2] == (6, 3)
    return [rec("a", BASE), rec("b", median, runtime="median"), rec("c", tvm, runtime="tvm"),
            {**rec("d", "1" * 20, runtime="ride"), "per_example": ""}]  # an older record: no outcomes


def test_ten_against_zero_is_listed_and_six_against_three_is_not():
    found = findings(known_records(), SPEC)
    by_row = {t["a"]: t for t in found["tests"]}
    assert set(by_row) == {"standard/median", "standard/tvm"}
    median, tvm = by_row["standard/median"], by_row["standard/tvm"]
    assert (median["only_a"], median["only_b"], median["difference"]) == (10, 0, True)
    assert abs(median["p"] - 2 / 1024) < 1e-12
    assert (tvm["only_a"], tvm["only_b"], tvm["difference"]) == (6, 3, False)
    assert abs(tvm["p"] - 2 * (1 + 9 + 36 + 84) / 512) < 1e-12
    # two tests: Holm doubles the smaller p
    assert abs(median["p_holm"] - 4 / 1024) < 1e-12
    assert any("standard/ride" in s and "no per-example" in s for s in found["skipped"])

    text = "\n".join(findings_lines(found))
    differences, rest = text.split("Not distinguishable:")
    assert "worst case of standard/median 100.0% vs standard/none 50.0% (10 vs 0 discordant of 20" in differences
    assert "standard/tvm" not in differences and "standard/tvm 65.0% vs standard/none 50.0%" in rest
    assert "p = 0.51" in rest and "Skipped: Linf 0.1: standard/ride" in rest
    board_text = render(known_records(), SPEC)
    assert "## Flags and findings" in board_text and "### Findings (generated" in board_text
    page = render_board(board_model(BoardInput(SPEC, known_records())), [])
    assert "<h3>Findings</h3>" in page and "standard/median 100.0%" in page


def test_no_listed_difference_has_p_at_or_above_alpha_on_random_boards():
    rng = random.Random(0)
    seen = 0
    for _ in range(30):
        n = rng.randint(5, 40)
        records = []
        for i, runtime in enumerate(("none", "median", "tvm", "ride")):
            for j, attack in enumerate(("pgd", "fgsm")):
                keep = rng.random()
                records.append(rec(f"{i}{j}", "".join("1" if rng.random() < keep else "0" for _ in range(n)),
                                   runtime=runtime, attack=attack))
        found = findings(records, SPEC)
        assert len(found["tests"]) == 3 + 4  # three rows against the undefended one, one attack pair per row
        for t in found["tests"]:
            assert t["difference"] == (t["p"] < 0.05)
            assert t["p_holm"] >= t["p"]
        listed = [line for line in "\n".join(findings_lines(found)).split("Not distinguishable:")[0].splitlines()
                  if line.startswith("- ")]
        assert len(listed) == sum(t["difference"] for t in found["tests"])
        assert all(float(re.search(r", p = ([0-9.e-]+);", line).group(1)) < 0.05 for line in listed)
        seen += len(listed)
    assert seen > 0  # the boards did hold differences to check


def test_holm_is_step_down_and_monotone():
    assert [round(p, 6) for p in holm([0.01, 0.04, 0.03])] == [0.03, 0.06, 0.06]
    assert holm([]) == [] and holm([0.7]) == [0.7]
