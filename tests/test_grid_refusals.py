"""Grid inputs a careless or hostile user may write (issue 30): each is one line on stderr, exit
code 2, and nothing written: no record, no leaderboard, no picture, no cache entry, no claim.

Every bad grid is tried with ``bench run`` and ``bench run --dry-run``, which must agree. The
command runs in ``tmp_path / "proj"`` with the grid beside that folder, so a file written anywhere
under ``tmp_path`` (the project root, results/, leaderboards/, the cache, a folder outside them)
fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.core.paths import check_name, inside
from tests.test_bad_input import one_line_exit_2
from tests.test_cli import bench

BASE = """
dataset = "digits"
arch = "small-cnn"
limit = 10
train_limit = 100
[train.standard]
epochs = 1
"""
FGSM = """
[[attacks]]
name = "fgsm"
eps = 0.1
"""


def refused(tmp_path: Path, text: str, *needles: str, args: tuple[str, ...] = ()) -> None:
    """``bench run`` and ``bench run --dry-run`` on ``text``: exit 2, one stderr line holding every
    needle, and no file or folder left under ``tmp_path`` but the grid and the empty project folder."""
    grid = tmp_path / "g.toml"
    grid.write_text(text)
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    for extra in ((), ("--dry-run",)):
        proc = bench("run", "--grid", str(grid), "--no-tracking", *extra, *args, cwd=proj)
        for needle in needles:
            one_line_exit_2(proc, needle)
        left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        assert left == ["g.toml", "proj"], (extra, left)


def accepted(tmp_path: Path, text: str) -> str:
    """``bench run --dry-run`` on ``text`` exits 0; its output."""
    grid = tmp_path / "ok.toml"
    grid.write_text(text)
    proc = bench("run", "--grid", str(grid), "--no-tracking", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- 1. names that become file names, and the paths built from them ------------------------------
@pytest.mark.parametrize("name", ["..", "x\u0000y", "a/b", ".hidden", "/etc/passwd", "", "a b", "x" * 101])
def test_a_grid_name_that_is_no_safe_file_name(tmp_path, name):
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\u0000", "\\u0000")
    refused(tmp_path, f'name = "{escaped}"\n' + BASE + FGSM, "grid name", "cannot be a file name")


def test_a_grid_file_whose_name_is_no_safe_file_name(tmp_path):
    grid = tmp_path / "my grid.toml"
    grid.write_text(BASE + FGSM)
    proc = bench("run", "--grid", str(grid), "--no-tracking", cwd=tmp_path)
    one_line_exit_2(proc, "(from the file name; set name = ...)")


def test_a_figure_name_that_leaves_its_folder(tmp_path):
    refused(tmp_path, BASE + FGSM + '[[figures]]\nname = "../../worst"\nkind = "vs-eps"\n',
            "figures[0]: name '../../worst' cannot be a file name")


def test_paths_from_names_stay_in_their_folder(tmp_path):
    assert inside(tmp_path, "g.jsonl") == tmp_path / "g.jsonl"
    assert inside("results", ".claims", "g", "abc") == Path("results/.claims/g/abc")
    for parts in (("..", "x"), ("/etc/passwd",), ("a/../../x",), ("x\u0000y",), (".",)):
        with pytest.raises(BenchError, match="would leave the folder"):
            inside(tmp_path, *parts)
    assert check_name("rmc-ablations-cifar10.smoke", "grid name") == "rmc-ablations-cifar10.smoke"
    assert check_name("median@k5", "name") == "median@k5"


# -- 2. run-level settings in a method's table --------------------------------------------------
def test_a_runtime_table_cannot_move_the_cache(tmp_path):
    refused(tmp_path, BASE + '[runtime.deepnn]\ncache_dir = "../outside-cache"\n' + FGSM,
            "[runtime.deepnn] sets cache_dir", "--cache-dir")


@pytest.mark.parametrize("where,key,option", [
    ("[train.standard]", "results_dir", "--results-dir"),
    ("attacks[0]: params", "tracking_uri", "--tracking-uri"),
    ("attacks[0]: params", "leaderboard_dir", "bench leaderboard --out"),
])
def test_run_level_settings_belong_to_the_command_line(tmp_path, where, key, option):
    text = BASE.replace("epochs = 1", f'epochs = 1\n{key} = "../elsewhere"') + FGSM if where.startswith("[train") \
        else BASE + FGSM + f'params = {{ {key} = "../elsewhere" }}\n'
    refused(tmp_path, text, f"{where} sets {key}", option)


def test_the_runner_still_hands_runtime_defenses_its_cache_dir():
    import defenses
    from bench.run.artifacts import resolve_params

    params = resolve_params(defenses.DEFENSES.get("deepnn"), "digits", {}, seed=0, cache_dir="/the/run/cache")
    assert params["cache_dir"] == "/the/run/cache"


# -- 3. values checked where they are declared --------------------------------------------------
def test_negative_epochs(tmp_path):
    refused(tmp_path, BASE.replace("epochs = 1", "epochs = -1") + FGSM,
            "[train.standard]: parameter epochs = -1 must be at least 0", "0 means no training")


def test_zero_epochs_only_where_no_training_is_meant(tmp_path):
    refused(tmp_path, BASE + "[train.adv-fgsm]\nepochs = 0\n" + FGSM,
            "[train.adv-fgsm]: parameter epochs = 0 must be at least 1")
    assert "run   standard/none/fgsm" in accepted(tmp_path, BASE.replace("epochs = 1", "epochs = 0") + FGSM)


@pytest.mark.parametrize("eps,needle", [
    ("inf", "eps inf is not finite"),
    ("800", "eps 800 is larger than any L2 perturbation of a digits image (1x8x8 values in [0, 1]) can be; "
            "use at most 8"),
])
def test_an_l2_budget_beyond_what_the_image_allows(tmp_path, eps, needle):
    refused(tmp_path, BASE + f'[[attacks]]\nname = "pgd-l2"\neps = {eps}\n', needle)


def test_the_largest_l2_budget_is_accepted(tmp_path):
    assert "run   standard/none/pgd-l2/base/8" in accepted(tmp_path, BASE + '[[attacks]]\nname = "pgd-l2"\neps = 8\n')


def test_a_limit_beyond_the_dataset(tmp_path):
    refused(tmp_path, BASE.replace("limit = 10", "limit = 100000") + FGSM,
            "limit 100000 is larger than the digits test split, which has 500 images")


def test_a_command_line_limit_beyond_the_dataset(tmp_path):
    refused(tmp_path, BASE + FGSM, "limit 501 is larger than the digits test split", args=("--limit", "501"))


def test_duplicate_attack_entries(tmp_path):
    refused(tmp_path, BASE + FGSM + "[[attacks]]\nname = \"pgd\"\neps = 0.1\n" + FGSM,
            "attacks[0] and attacks[2] are the same cell (fgsm, base at eps 0.1, standard/none)")


def test_a_budget_listed_twice(tmp_path):
    refused(tmp_path, BASE + '[[attacks]]\nname = "pgd"\neps = [0.1, 0.2, 0.1]\n', "eps 0.1 is listed twice")


def test_entries_that_differ_are_not_duplicates(tmp_path):
    out = accepted(tmp_path, BASE + FGSM + FGSM.replace("0.1", "0.2") + FGSM + 'threat = "adaptive"\n')
    assert out.count("  run ") == 3


# -- 4. unknown names are refused, unless optional ----------------------------------------------
def test_an_unknown_attack(tmp_path):
    refused(tmp_path, BASE + FGSM.replace("fgsm", "pgdd"), "unknown attack 'pgdd'. Did you mean 'pgd'?",
            "optional = true")


def test_an_unknown_runtime_defense(tmp_path):
    refused(tmp_path, BASE + "[runtime.rcm]\n" + FGSM, "[runtime.rcm]: unknown defense 'rcm'. Did you mean 'rmc'?")


def test_an_unknown_name_in_an_attacks_runtime_list(tmp_path):
    refused(tmp_path, BASE + FGSM + 'runtime = ["none", "rcm"]\n', "attacks[0]: unknown defense 'rcm'")


def test_optional_entries_are_skipped_with_a_warning(tmp_path):
    out = accepted(tmp_path, BASE + "[runtime.none]\n[runtime.from-a-plugin]\noptional = true\n" + FGSM
                   + FGSM.replace("fgsm", "pgdd") + "optional = true\n")
    assert "skip  standard/none/pgdd/base/0.1: attack 'pgdd' is not registered (optional = true: skipped)" in out
    assert "runtime defense 'from-a-plugin' is not registered (optional = true: skipped)" in out
    assert "run   standard/none/fgsm/base/0.1" in out


def test_an_empty_grid_is_refused_by_run_and_dry_run_alike(tmp_path):
    refused(tmp_path, BASE, "has no cells")
