"""A grid's paper numbers can never silently go missing (issue 14): every ``[reference]`` key names
a leaderboard cell (checked when the grid loads, one line with the closest keys otherwise), and
hand-written leaderboard notes survive regeneration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.core.errors import BenchError
from bench.report.leaderboard import build_table
from bench.spec import grid
from bench.spec.metric_columns import COLUMNS

SHIPPED = sorted(p.stem for p in (Path(grid.__file__).parents[1] / "grids").glob("*.toml"))


def synthetic_records(spec: grid.GridSpec) -> list[dict]:
    """One ok record per (row, attack, eps) of the grid, as the runner would label it (synthetic
    outcomes: 10 examples, half robust), without resolving checkpoints or running anything."""
    out = []
    for train, runtime in spec.pairs():
        for a in spec.attacks:
            if a.runtime and runtime not in a.runtime:
                continue
            for eps in a.eps:
                label = a.label or a.name
                out.append({"cell_id": f"{train}/{runtime}/{label}/{a.threat}/{eps}", "status": "ok",
                            "key": f"{train}/{runtime}/{label}/{a.threat}/{eps}", "train_defense": train,
                            "runtime_defense": runtime, "attack": label, "attack_name": a.name,
                            "threat": a.threat, "eps": eps, "norm": grid._norms_of(a)[0], "n": 10,
                            "seed": 0, "clean_acc": 0.9, "robust_acc": 0.5, "per_example": "1" * 5 + "0" * 5,
                            **({f: 0.5 for f in COLUMNS} if spec.metrics else {})})
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_reference_key_lands_in_a_leaderboard_column(name):
    spec = grid.load(name)  # the load-time check itself (the only check for grids without [reference])
    df = build_table(synthetic_records(spec), spec)
    df["train-time"] = df["train-time"].replace("", None).ffill()
    rows = {(r["train-time"], r["runtime"]): r for _, r in df.iterrows()}
    for key, value in spec.reference.items():
        train, runtime, column = key.split("/", 2)
        if " @ p=" in column:  # accuracy at a stream position: its own table (tests/test_stream_position.py)
            continue
        row = rows.get((train, runtime))
        assert row is not None, f"{name}: {key}: no row {train}/{runtime}"
        # the key is a full header or an attack label that every budget's header starts with
        cells = [row[c] for c in df.columns if c == column or c.startswith(column + " ")]
        assert any(f"({value:g}" in str(c) for c in cells), f"{name}: {key} = {value:g} shown nowhere: {cells}"


def tiny(reference: dict[str, float], **extra) -> dict:
    return {"dataset": "digits", "arch": "small-cnn", "train": {"standard": {}},
            "runtime": {"none": {}, "ride": {}},
            "attacks": [{"name": "pgd", "eps": 0.1},
                        {"name": "bpda", "threat": "adaptive", "eps": 0.1, "runtime": ["ride"]}],
            "reference": reference, **extra}


def test_the_ride_bpda_mistake_is_one_line_with_the_right_key():
    with pytest.raises(BenchError) as exc:
        grid.parse(tiny({"standard/ride/bpda": 98.0}), path="g.toml")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("g.toml: [reference] key 'standard/ride/bpda' matches no leaderboard cell")
    assert "did you mean 'standard/ride/bpda (adaptive)'" in msg


@pytest.mark.parametrize("key, suggestion", [
    ("standard/none/pdg", "standard/none/pgd"),                      # misspelt attack
    ("standard/nnoe/clean", "standard/none/clean"),                  # misspelt runtime
    ("standard/none/bpda (adaptive)", "standard/ride/bpda (adaptive)"),  # attack restricted to ride
    ("standard/none/pgd Linf 0.2", "standard/none/pgd Linf 0.1"),    # a budget the grid does not run
])
def test_a_key_naming_no_cell_is_rejected_with_the_closest(key, suggestion):
    with pytest.raises(BenchError, match=r"did you mean .*" + suggestion.replace("(", r"\(").replace(")", r"\)")):
        grid.parse(tiny({key: 1.0}), path="g.toml")


def test_valid_keys_are_accepted():
    ok = {"standard/none/clean": 99.0, "standard/none/pgd": 1.0, "standard/ride/pgd Linf 0.1": 2.0,
          "standard/ride/bpda (adaptive)": 98.0, "standard/ride/bpda (adaptive) Linf 0.1": 98.0}
    assert grid.parse(tiny(ok), path="g.toml").reference == ok
    # metric columns only where the grid asks for metrics
    with pytest.raises(BenchError, match="l2 \\(DeepFool\\)"):
        grid.parse(tiny({"standard/none/l2 (DeepFool)": 1.48}), path="g.toml")
    grid.parse(tiny({"standard/none/l2 (DeepFool)": 1.48}, metrics=["deep-defense"]), path="g.toml")

    # the budget's norm follows a norm parameter (and a bpda wrapper's inner attack), as records do
    l2 = tiny({"standard/none/pgd L2 0.5": 1.0}, attacks=[{"name": "pgd", "eps": 0.5, "params": {"norm": "L2"}}])
    grid.parse(l2, path="g.toml")
    with pytest.raises(BenchError, match="did you mean 'standard/none/pgd L2 0.5'"):
        grid.parse({**l2, "reference": {"standard/none/pgd Linf 0.5": 1.0}}, path="g.toml")


def test_misspelt_key_through_the_cli_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "g.toml"
    path.write_text('dataset = "digits"\narch = "small-cnn"\n[[attacks]]\nname = "fgsm"\neps = 0.1\n'
                    '[reference]\n"standard/none/fgsn" = 90.0\n')
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--grid", str(path), "--dry-run",
                           "--no-tracking", "--results-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "standard/none/fgsn" in lines[0] and "'standard/none/fgsm'" in lines[0], lines
    assert "Traceback" not in proc.stderr


def test_regenerating_a_leaderboard_keeps_its_hand_written_notes(tmp_path, monkeypatch):
    from bench.cli import cli

    path = tmp_path / "g.toml"
    path.write_text('name = "g"\ndataset = "digits"\narch = "small-cnn"\n[[attacks]]\nname = "fgsm"\neps = 0.1\n')
    spec = grid.load(str(path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    records = synthetic_records(spec)
    for r, c in zip(records, spec.cells()):
        r.update(cell_id=c.cell_id, code_version="0.1.0+abc", device="cpu", finished_at="2026-11-29T03:00:00Z")
    (tmp_path / "results" / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lb = tmp_path / "leaderboards"
    lb.mkdir()
    notes = ("## Ours beside the paper's (hand-written)\n\n"
             "| row | ours | paper |\n| --- | --- | --- |\n| a | 50 | 98 |\n")
    (lb / "g.notes.md").write_text(notes)
    runner = CliRunner()
    for _ in range(2):  # the second run regenerates the file that already holds the notes
        result = runner.invoke(cli, ["leaderboard", "--grid", str(path), "--publish"])
        assert result.exit_code == 0, result.output
        md = (lb / "g.md").read_text()
        assert md.count(notes) == 1 and md.endswith(notes)
        assert "### Linf 0.1: white-box and transfer attacks" in md and "| fgsm |" in md  # the generated part
    # a local board (no --publish) is about the local numbers: the published notes stay out of it
    result = runner.invoke(cli, ["leaderboard", "--grid", str(path)])
    assert result.exit_code == 0, result.output
    local = (tmp_path / "results" / "leaderboards" / "g.md").read_text()
    assert notes not in local and "| fgsm |" in local
    from bench.report.board_index import write_index

    index = write_index(lb).read_text()
    assert "[g](g.md)" in index and "notes" not in index


SHIPPED_NOTES = sorted((Path(__file__).parents[1] / "leaderboards").glob("*.notes.md"))


@pytest.mark.parametrize("notes", SHIPPED_NOTES, ids=lambda p: p.name)
def test_published_leaderboards_end_with_their_notes(notes):
    md = notes.parent / notes.name.replace(".notes.md", ".md")
    assert md.is_file(), f"{notes.name} has no leaderboard {md.name}"
    assert md.read_text().endswith("\n\n" + notes.read_text()), f"{md.name} does not end with {notes.name}"
