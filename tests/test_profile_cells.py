"""bench.benchmarks.profile_cells: inclusive shares from py-spy's raw (collapsed) stacks."""

from __future__ import annotations

from bench.benchmarks.profile_cells import GRIDS, PIECES, inclusive_shares
from bench.spec import grid


def test_a_function_counts_once_per_stack_it_appears_in(tmp_path):
    raw = tmp_path / "rmc.txt"
    raw.write_text("main (a.py:1);RMC.predict (r.py:2);RMC.adapt (r.py:3);conv (c.py:4) 6\n"
                   "main (a.py:1);RMC.predict (r.py:2);RMC.predict (r.py:9) 3\n"
                   "main (a.py:1);build_database (d.py:5) 1\n")
    total, incl = inclusive_shares(raw)
    assert total == 10 and incl["main"] == 10 and incl["RMC.predict"] == 9 and incl["RMC.adapt"] == 6


def test_the_profiling_grids_load_and_name_what_the_pieces_look_for(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    for kind, text in GRIDS.items():
        (tmp_path / f"{kind}.toml").write_text(text)
        spec = grid.load(str(tmp_path / f"{kind}.toml"))
        assert spec.limit == 4 and kind in PIECES
