"""Bad input everywhere gets one clear line and a non-zero exit (docs/reliability.md's bad-input table).

tests/test_cli.py covers unknown grids, missing grid files, --limit, unknown devices, malformed TOML,
missing data and an unreachable tracking server; this file covers the rest.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from bench.core import cache, models
from bench.core.errors import BenchError
from tests.test_cli import bench

GRID = """
dataset = "digits"
arch = "small-cnn"
limit = 10
train_limit = 100
[train.standard]
epochs = 1
[[attacks]]
name = "fgsm"
eps = 0.1
"""


def one_line_exit_2(proc, needle: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def grid_file(tmp_path: Path, text: str = GRID, name: str = "g") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text,needle", [
    (GRID.replace("small-cnn", "no-such-net"), "unknown architecture 'no-such-net'"),
    (GRID.replace('"digits"', '"svhn"'), "unknown dataset 'svhn'"),
    (GRID.replace("eps = 0.1", "eps = -0.1"), "eps -0.1 is outside [0, 1]"),
    (GRID.split("[[attacks]]")[0], "has no cells"),
])
def test_bad_grid_contents(tmp_path, text, needle):
    proc = bench("run", "--grid", grid_file(tmp_path, text), "--no-tracking", cwd=tmp_path)
    one_line_exit_2(proc, needle)


def test_unwritable_results_folder(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    proc = bench("run", "--grid", grid_file(tmp_path), "--no-tracking", "--results-dir",
                 str(tmp_path / "blocker" / "results"), cwd=tmp_path)
    one_line_exit_2(proc, "is not writable")


def test_half_written_results_file(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "g.jsonl").write_text('{"cell_id": "x", "status": "ok"}\n{"cell_id": "y", "sta\n')
    proc = bench("run", "--grid", grid_file(tmp_path), "--no-tracking", cwd=tmp_path)
    one_line_exit_2(proc, "g.jsonl:2 is not valid JSON")


def test_bad_executor_options(tmp_path):
    proc = bench("run", "--grid", grid_file(tmp_path), "--no-tracking", "--ray-address", "h:6379", cwd=tmp_path)
    one_line_exit_2(proc, "--ray-address needs --executor ray")
    proc = bench("run", "--grid", grid_file(tmp_path), "--executor", "dask", cwd=tmp_path)
    # click's own usage errors: its usage line, then one error line
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "Error: Invalid value for '--executor': 'dask' is not one of " \
        "'local', 'ray'."


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is an optional extra (pip install -e '.[ray]')")
def test_ray_address_unreachable(tmp_path):
    proc = bench("run", "--grid", grid_file(tmp_path), "--no-tracking", "--executor", "ray",
                 "--ray-address", "ray://127.0.0.1:9", cwd=tmp_path)
    one_line_exit_2(proc, "Ray cluster at ray://127.0.0.1:9 is unreachable")


def test_ray_not_installed(monkeypatch):
    from bench.run.executors import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when it is not installed
    with pytest.raises(BenchError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()


def test_cache_gc_negative_age(tmp_path):
    proc = bench("cache", "gc", "--older-than", "-1", cwd=tmp_path)
    one_line_exit_2(proc, "--older-than must be non-negative")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_corrupt_and_malicious_checkpoints_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    models.save(models.create("small-cnn", 10, 1), corrupt, "small-cnn")
    corrupt.write_bytes(corrupt.read_bytes()[: 2000])
    with pytest.raises(BenchError, match="cannot load checkpoint .* safely"):
        models.load("small-cnn", corrupt, in_channels=1)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    with pytest.raises(BenchError, match="weights_only=True"):
        models.load("small-cnn", evil, in_channels=1)
    assert not marker.exists(), "the malicious pickle ran"


def test_malicious_cache_entry_is_refused_and_dropped(tmp_path, capsys):
    marker = tmp_path / "pwned"
    entry = tmp_path / "cache" / "models" / "k.pt"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    cache.checksum_path(entry).write_text(cache.file_sha256(entry))  # even with a matching checksum
    assert cache.torch_load_or_none(entry) is None
    assert not marker.exists() and not entry.exists()
    assert "unloadable" in capsys.readouterr().err


def test_a_bench_error_is_one_line_whatever_the_input():
    """A TOML key or value can hold a newline; the message escapes it instead of breaking the one line."""
    import pickle

    from bench.core.errors import AuditError, BenchError

    err = BenchError('fuzz.toml: unknown keys \n, "\x1b[2J"; valid: arch')
    assert "\n" not in str(err) and "\x1b" not in str(err) and "\\n" in str(err)
    assert str(pickle.loads(pickle.dumps(AuditError("a\nb")))) == "a\\nb"  # crosses Ray workers intact
