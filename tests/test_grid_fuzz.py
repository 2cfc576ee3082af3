"""Hostile and malformed grid files (issues 15 and 30): whatever TOML a user writes, `bench run
--dry-run` ends with exit 0 or a one-line error (exit 2 in `bench.cli.main`), never a traceback, and
writes nothing.

Grids are generated with hypothesis: wrong types, huge or negative numbers, unknown keys at every
level, deep nesting, unicode, NaN and inf, duplicate cells, path-like names, run-level settings in
method tables, and undecodable bytes. A second test takes a valid grid and breaks one value (a name,
epochs, an eps, the limit, a method name, a duplicate entry): it must be refused, naming what is
wrong. The CLI is called in-process (click's CliRunner), so 200+ cases take seconds, not 200
interpreter starts.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attacks
import defenses
from bench.cli import cli
from bench.core.errors import BenchError
from bench.core.paths import NAME_PATTERN
from bench.spec.grid import RUN_SETTINGS

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.integers(min_value=-3, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), TEXT,
)
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                   max_leaves=24)
UNKNOWN = st.dictionaries(st.sampled_from(["colour", "épsilon", "train2", "x"]) | TEXT, ANY, max_size=2)


def maybe(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly plausible values (9 in 10), sometimes anything at all: most files then break one rule,
    so the checks deep in the parser and the runner's plan are reached too."""
    return st.integers(0, 9).flatmap(lambda i: ANY if i == 0 else good)


def with_unknown(d: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(d, st.booleans(), UNKNOWN).map(lambda t: {**t[0], **t[2]} if t[1] else t[0])


HYPER = with_unknown(st.dictionaries(st.sampled_from(["epochs", "lr", "steps", "eps", "n", *RUN_SETTINGS]),
                                     maybe(st.integers(-5, 5)), max_size=3))
NAMES = st.sampled_from(["..", ".", "../x", "a/b", "x\x00y", ".hidden", "ok-name@v1.2"]) | TEXT
EPS = maybe(st.one_of(st.floats(0, 1), st.lists(st.floats(-1, 2) | st.just(math.nan), max_size=4),
                      st.sampled_from(["8/255", "1/0", "0/0", "x/y", "1e999"])))
ATTACK = with_unknown(st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["fgsm", "pgd", "deepfool", "eot", "nope"]))},
    optional={"threat": maybe(st.sampled_from(["base", "adaptive", "transfer", "evil"])), "eps": EPS,
              "params": maybe(HYPER), "label": maybe(TEXT),
              "surrogate": maybe(st.fixed_dictionaries({}, optional={"arch": maybe(st.sampled_from(["lenet5"])),
                                                                     "seed": maybe(st.integers(-2, 2))})),
              "runtime": maybe(st.lists(st.sampled_from(["none", "deepnn", "bogus"]), max_size=2))}))
# a + a: every cell listed twice
ATTACKS = maybe(st.lists(ATTACK, min_size=1, max_size=3).flatmap(lambda a: st.sampled_from([a, a + a])))
TABLES = maybe(st.dictionaries(st.sampled_from(["standard", "adv-fgsm", "none", "deepnn", "bogus"]) | TEXT,
                               maybe(HYPER), max_size=3))
GRID = with_unknown(st.fixed_dictionaries(
    {"dataset": maybe(st.sampled_from(["digits", "mnist", "nope"])),
     "arch": maybe(st.sampled_from(["small-cnn", "x"])), "attacks": ATTACKS},
    optional={"name": maybe(NAMES), "description": maybe(TEXT),
              "layout": maybe(st.sampled_from(["star", "cross", "ring"])),
              "base_model": maybe(st.sampled_from(["standard", "none"])), "limit": maybe(st.integers(-(2**70), 2**70)),
              "train_limit": maybe(st.integers(-5, 10**12)), "seed": maybe(st.integers(-(2**80), 2**80)),
              "reference": maybe(st.dictionaries(TEXT, maybe(st.floats()), max_size=2)),
              "reference_source": maybe(TEXT), "train": TABLES, "runtime": TABLES}))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_str(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML forbids a raw DEL


def to_toml(grid: dict[str, Any]) -> str:
    return "".join(f"{toml_str(k)} = {toml_value(v)}\n" for k, v in grid.items())


# One file in ten is not TOML at all (random text, bytes that are not UTF-8).
DOCUMENT = st.integers(0, 9).flatmap(lambda i: st.one_of(TEXT.map(str.encode), st.binary(max_size=40)) if i == 0
                                     else GRID.map(to_toml).map(str.encode))


@pytest.mark.slow
@settings(max_examples=220, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENT)
def test_dry_run_on_any_grid_file_exits_0_or_one_line(document: bytes) -> None:
    result, left = _dry_run(document)
    assert left == ["fuzz.toml"], left
    exc = result.exception
    # bench.cli.main maps BenchError and ClickException to one stderr line and exit 2; anything else
    # would reach the user as a traceback.
    assert exc is None or isinstance(exc, (BenchError, click.ClickException)), (
        f"{type(exc).__name__}: {exc}\n--- grid ---\n{document[:2000]!r}")
    if exc is not None:
        message = str(exc) if isinstance(exc, BenchError) else exc.format_message()
        assert message.strip() and "\n" not in message.strip(), message
    else:
        assert result.output.startswith("grid ")


def _dry_run(document: bytes) -> tuple[Any, list[str]]:
    """``bench run --dry-run`` on ``document`` with results and cache in a scratch folder: the result,
    and what the folder holds afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.toml"
        path.write_bytes(document)
        args = ["run", "--grid", str(path), "--dry-run", "--no-tracking", "--results-dir", str(Path(tmp) / "results")]
        result = CliRunner(env={"BENCH_CACHE_DIR": str(Path(tmp) / "cache")}).invoke(
            cli, args, standalone_mode=False, catch_exceptions=True)
        left = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*"))
    return result, left


# -- one bad value in a valid grid: refused, and the line names it -------------------------------
VALID = {"dataset": "digits", "arch": "small-cnn", "limit": 10, "train": {"standard": {"epochs": 1}},
         "attacks": [{"name": "fgsm", "eps": 0.1}]}
RUN_KEY = st.sampled_from(sorted(RUN_SETTINGS))
NON_FINITE = st.sampled_from([math.inf, -math.inf, math.nan])
#: (what to change in VALID, a word the error line must hold)
BAD_VALUE = st.one_of(
    NAMES.filter(lambda s: not NAME_PATTERN.fullmatch(s)).map(lambda s: ({"name": s}, "cannot be a file name")),
    st.integers(-(2**62), -1).map(lambda e: ({"train": {"standard": {"epochs": e}}}, "epochs")),
    st.integers(-5, 0).map(lambda e: ({"train": {"standard": {}, "adv-fgsm": {"epochs": e}}}, "epochs")),
    st.integers(-(2**62), 0).map(lambda s: ({"attacks": [{"name": "pgd", "eps": 0.1, "params": {"steps": s}}]},
                                            "steps")),
    NON_FINITE.map(lambda v: ({"train": {"standard": {"epochs": 1, "lr": v}}}, "lr")),
    (st.floats(min_value=8.0001, allow_nan=False) | st.integers(9, 2**62) | NON_FINITE).map(
        lambda e: ({"attacks": [{"name": "pgd-l2", "eps": e}]}, "eps")),  # digits: L2 at most sqrt(64)
    (st.floats(min_value=1.0001, allow_nan=False) | st.floats(max_value=-1e-9)).map(
        lambda e: ({"attacks": [{"name": "fgsm", "eps": e}]}, "eps")),
    (st.integers(64 + 1, 2**62) | st.floats(64.0001, allow_nan=False)).map(
        lambda e: ({"attacks": [{"name": "pgd", "eps": e, "params": {"norm": "L0"}}]}, "eps")),
    st.integers(501, 2**62).map(lambda n: ({"limit": n}, "larger than the digits test split")),
    st.tuples(RUN_KEY, TEXT).map(lambda t: ({"runtime": {"deepnn": {t[0]: t[1]}}}, t[0])),
    st.tuples(RUN_KEY, TEXT).map(lambda t: ({"train": {"standard": {"epochs": 1, t[0]: t[1]}}}, t[0])),
    st.tuples(RUN_KEY, TEXT).map(lambda t: ({"attacks": [{"name": "fgsm", "eps": 0.1, "params": {t[0]: t[1]}}]},
                                            t[0])),
    TEXT.filter(lambda s: s not in attacks.ATTACKS).map(
        lambda s: ({"attacks": [{"name": s, "eps": 0.1}]}, "unknown attack")),
    TEXT.filter(lambda s: s not in defenses.DEFENSES).map(
        lambda s: ({"runtime": {s: {}}}, "unknown defense")),
    st.tuples(st.integers(2, 3), st.sampled_from([0.1, 0.2])).map(
        lambda t: ({"attacks": [{"name": "fgsm", "eps": t[1]}] * t[0]}, "are the same cell")),
)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(BAD_VALUE)
def test_one_bad_value_in_a_valid_grid_is_refused_by_name(bad: tuple[dict[str, Any], str]) -> None:
    change, needle = bad
    result, left = _dry_run(to_toml({**VALID, **change}).encode())
    exc = result.exception
    assert isinstance(exc, BenchError), (change, result.output, exc)
    assert needle in str(exc) and "\n" not in str(exc), (needle, str(exc))
    assert left == ["fuzz.toml"], left
