"""Untrusted data files (issue 30): every reader of a data or results file answers bad bytes with one
BenchError line naming the file, never another exception, and never runs code a file asks for.

Hypothesis fuzzes each format the project reads: CIFAR-10 python batches (pickles), CIFAR-10 .npz,
MNIST IDX .gz and results JSONL, with random bytes, mutations of a valid file and crafted pickles.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.core import data
from bench.core.errors import BenchError
from bench.track.results import ResultStore, load_records
from tests.test_bad_input import one_line_exit_2
from tests.test_cli import bench

# tmp_path is shared by a test's examples: each example rewrites the files it reads
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def refused(load, path: Path, needle: str = "") -> str:
    """``load()`` raises one BenchError line naming ``path`` (and holding ``needle``)."""
    with pytest.raises(BenchError) as err:
        load()
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg and str(path) in msg and needle in msg, msg
    return msg


def loads_or_refused(load, path: Path) -> None:
    """A mutated file may still be valid; if not, the answer is one BenchError line naming it."""
    try:
        load()
    except BenchError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)


class _Call:
    """Unpickles as ``func(*args)``: what a malicious file asks the unpickler to do."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> list[_Call]:
    """Ways a pickle can try to create ``marker``."""
    return [_Call(os.system, f"touch {marker}"), _Call(open, str(marker), "w"),
            _Call(exec, f"open({str(marker)!r}, 'w')"), _Call(eval, f"open({str(marker)!r}, 'w')"),
            _Call(subprocess.call, ["touch", str(marker)]), _Call(Path.touch, Path(marker))]


# -- CIFAR-10 python batches ------------------------------------------------------------------------

def _batch(n: int = 4) -> dict:
    rng = np.random.default_rng(n)
    return {"batch_label": "testing batch 1 of 1", "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [int(c) for c in rng.integers(0, 10, n)], "filenames": [f"img_{i}.png" for i in range(n)]}


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 strings (BINSTRING), as the official batches (cPickle) do."""

    def _save_py2_str(self, obj) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, str: _save_py2_str, bytes: _save_py2_str}


def official_batch(entry: dict) -> bytes:
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(entry)
    return out.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")  # numpy 1's name


def mutate(d, raw: bytes, flips: int = 4) -> bytes:
    """``raw`` with up to ``flips`` bytes changed and, half the time, cut short."""
    out = bytearray(raw)
    for _ in range(d.draw(st.integers(0, flips))):
        out[d.draw(st.integers(0, len(out) - 1))] = d.draw(st.integers(0, 255))
    return bytes(out[:d.draw(st.one_of(st.just(len(out)), st.integers(0, len(out))))])


def write_batch(root: Path, payload: bytes) -> Path:
    path = root / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def load_cifar(root: Path):
    return lambda: data.load("cifar10", "test", root)


@pytest.mark.parametrize("protocol", ["py2", 0, 1, 2, 3, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(tmp_path, protocol):
    entry = _batch(6)
    write_batch(tmp_path, official_batch(entry) if protocol == "py2" else pickle.dumps(entry, protocol=protocol))
    ds = data.load("cifar10", "test", tmp_path)
    assert ds.x.shape == (6, 3, 32, 32) and ds.y.tolist() == entry["labels"]
    assert torch.equal((ds.x * 255).round().to(torch.uint8), torch.from_numpy(entry["data"].reshape(-1, 3, 32, 32)))


@FUZZ
@given(which=st.integers(0, 5), protocol=st.integers(0, 5),
       where=st.sampled_from(["top", "data", "labels", "key", "object array"]))
def test_malicious_cifar_batch_runs_nothing(tmp_path, which, protocol, where):
    marker = tmp_path / "pwned"
    evil = _payloads(marker)[which]
    entry = _batch()
    if where == "top":
        entry = evil
    elif where == "key":
        entry[("x", evil)] = 1
    elif where == "object array":
        entry["data"] = np.array([evil, 1], dtype=object)
    else:
        entry[where] = [evil] if where == "labels" else evil
    path = write_batch(tmp_path, pickle.dumps(entry, protocol=protocol))
    refused(load_cifar(tmp_path), path, "is not a CIFAR-10 batch: it asks to load")
    assert not marker.exists(), "the malicious pickle ran"


def test_the_malicious_batch_message_names_what_it_asked_for(tmp_path):
    marker = tmp_path / "pwned"
    path = write_batch(tmp_path, pickle.dumps({"data": _Call(os.system, f"touch {marker}"), "labels": [1]}))
    msg = refused(load_cifar(tmp_path), path)
    assert msg == f"{path} is not a CIFAR-10 batch: it asks to load posix.system; only numpy arrays, dicts, lists, " \
                  "str and numbers are read (re-extract cifar-10-python.tar.gz)"
    assert not marker.exists()


@FUZZ
@given(payload=st.binary(max_size=2000))
def test_random_bytes_as_a_cifar_batch_are_one_line(tmp_path, payload):
    path = write_batch(tmp_path, payload)
    refused(load_cifar(tmp_path), path)


@FUZZ
@given(st.data())
def test_mutated_cifar_batch_loads_or_is_one_line(tmp_path, d):
    path = write_batch(tmp_path, mutate(d, official_batch(_batch())))
    loads_or_refused(load_cifar(tmp_path), path)


@pytest.mark.parametrize("entry,needle", [
    ({"labels": [1]}, "expected a dict whose 'data' is a uint8 array"),
    ([1, 2, 3], "expected a dict whose 'data' is a uint8 array"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [1, 2]}, "uint8 array"),
    ({"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]}, "(N, 3072)"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}, "expected 2 integer labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1, [2]]}, "expected 2 integer labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "expected 2 integer labels"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 10]}, "labels must lie in 0..9"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "expected 2 integer labels"),
])
def test_cifar_batch_of_the_wrong_shape_is_one_line(tmp_path, entry, needle):
    path = write_batch(tmp_path, pickle.dumps(entry, protocol=2))
    refused(load_cifar(tmp_path), path, needle)


def test_truncated_cifar_batch_is_one_line(tmp_path):
    path = write_batch(tmp_path, official_batch(_batch())[:-100])
    refused(load_cifar(tmp_path), path, "cannot read CIFAR-10 batch")


# -- CIFAR-10 .npz ----------------------------------------------------------------------------------

def npz_bytes(**arrays) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def good_npz(n: int = 4) -> bytes:
    rng = np.random.default_rng(0)
    return npz_bytes(x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 10, n))


def write_npz(root: Path, payload: bytes) -> Path:
    path = root / "cifar10_test.npz"
    path.write_bytes(payload)
    return path


@FUZZ
@given(payload=st.binary(max_size=2000))
def test_random_bytes_as_a_cifar_npz_are_one_line(tmp_path, payload):
    refused(load_cifar(tmp_path), write_npz(tmp_path, payload))


@FUZZ
@given(st.data())
def test_mutated_cifar_npz_loads_or_is_one_line(tmp_path, d):
    loads_or_refused(load_cifar(tmp_path), write_npz(tmp_path, mutate(d, good_npz())))


def test_cifar_npz_holding_a_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = np.array([_Call(os.system, f"touch {marker}")], dtype=object)
    path = write_npz(tmp_path, npz_bytes(x=evil, y=np.zeros(1, np.int64)))
    refused(load_cifar(tmp_path), path, "cannot read")
    path.write_bytes(pickle.dumps({"x": _Call(os.system, f"touch {marker}")}))  # a bare pickle named .npz
    refused(load_cifar(tmp_path), path, "cannot read")
    assert not marker.exists()


@pytest.mark.parametrize("arrays,needle", [
    ({"x": np.zeros((2, 32, 32, 3), np.uint8)}, "KeyError"),
    ({"x": np.zeros((2, 32, 32, 3), np.float32), "y": np.zeros(2, np.int64)}, "x must be uint8 (N,32,32,3)"),
    ({"x": np.zeros((2, 28, 28, 3), np.uint8), "y": np.zeros(2, np.int64)}, "x must be uint8 (N,32,32,3)"),
    ({"x": np.zeros((32, 32, 3), np.uint8), "y": np.zeros(1, np.int64)}, "x must be uint8 (N,32,32,3)"),
    ({"x": np.zeros((2, 32, 32, 3), np.uint8), "y": np.zeros(3, np.int64)}, "expected 2 integer labels"),
    ({"x": np.zeros((2, 32, 32, 3), np.uint8), "y": np.zeros(2, np.float32)}, "expected 2 integer labels"),
    ({"x": np.zeros((2, 32, 32, 3), np.uint8), "y": np.array(["a", "b"])}, "expected 2 integer labels"),
    ({"x": np.zeros((2, 32, 32, 3), np.uint8), "y": np.array([-1, 3])}, "labels must lie in 0..9"),
])
def test_cifar_npz_of_the_wrong_shape_is_one_line(tmp_path, arrays, needle):
    refused(load_cifar(tmp_path), write_npz(tmp_path, npz_bytes(**arrays)), needle)


# -- MNIST IDX .gz ----------------------------------------------------------------------------------

def idx(array: np.ndarray, magic: bytes = b"\x00\x00\x08") -> bytes:
    return magic + bytes([array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


def write_mnist(root: Path, images: bytes, labels: bytes, compress: bool = True) -> tuple[Path, Path]:
    folder = root / "mnist"
    folder.mkdir(exist_ok=True)
    img, lbl = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    img.write_bytes(gzip.compress(images, mtime=0) if compress else images)
    lbl.write_bytes(gzip.compress(labels, mtime=0) if compress else labels)
    return img, lbl


IMAGES = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
LABELS = np.array([0, 1, 2, 3, 9], dtype=np.uint8)


def load_mnist(root: Path):
    return lambda: data.load("mnist", "test", root)


def test_valid_mnist_files_load(tmp_path):
    write_mnist(tmp_path, idx(IMAGES), idx(LABELS))
    ds = data.load("mnist", "test", tmp_path)
    assert ds.x.shape == (5, 1, 28, 28) and ds.y.tolist() == LABELS.tolist()


@FUZZ
@given(payload=st.binary(max_size=2000), compress=st.booleans())
def test_random_bytes_as_mnist_images_are_one_line(tmp_path, payload, compress):
    img, lbl = write_mnist(tmp_path, idx(IMAGES), idx(LABELS))
    img.write_bytes(gzip.compress(payload) if compress else payload)
    refused(load_mnist(tmp_path), img)


@FUZZ
@given(st.data())
def test_mutated_mnist_files_load_or_are_one_line(tmp_path, d):
    img, lbl = write_mnist(tmp_path, idx(IMAGES), idx(LABELS))
    target = d.draw(st.sampled_from([img, lbl]))
    packed = d.draw(st.booleans())  # mutate the gzip stream, or the IDX bytes inside it
    raw = mutate(d, target.read_bytes() if packed else gzip.decompress(target.read_bytes()))
    target.write_bytes(raw if packed else gzip.compress(raw))
    try:
        load_mnist(tmp_path)()
    except BenchError as exc:
        assert "\n" not in str(exc) and (str(img) in str(exc) or str(lbl) in str(exc)), str(exc)


@pytest.mark.parametrize("images,labels,bad,needle", [
    pytest.param(idx(IMAGES, b"\x08\x03\x08"), idx(LABELS), "img", "not an unsigned-byte IDX file", id="magic"),
    pytest.param(idx(IMAGES.astype(">f4"), b"\x00\x00\x0d"), idx(LABELS), "img", "not an unsigned-byte IDX file",
                 id="float"),
    pytest.param(idx(IMAGES)[:-10], idx(LABELS), "img", "cannot read IDX file", id="short-pixels"),
    pytest.param(idx(IMAGES)[:6], idx(LABELS), "img", "cannot read IDX file", id="cut-header"),
    pytest.param(b"\x00\x00\x08\x03" + struct.pack(">III", 2**32 - 1, 28, 28) + IMAGES.tobytes(), idx(LABELS),
                 "img", "cannot read IDX file", id="absurd-length"),
    pytest.param(idx(IMAGES.reshape(5, -1)), idx(LABELS), "img", "expected 28x28 images", id="2-d"),
    pytest.param(idx(IMAGES[..., :27]), idx(LABELS), "img", "expected 28x28 images", id="28x27"),
    pytest.param(b"\x00\x00\x08\x00\x07", idx(LABELS), "img", "expected 28x28 images", id="0-d"),
    pytest.param(idx(IMAGES), idx(LABELS[:4]), "img", "disagree in length", id="4-labels"),
    pytest.param(idx(IMAGES), idx(LABELS.reshape(5, 1)), "lbl", "expected 5 integer labels", id="2-d-labels"),
    pytest.param(idx(IMAGES), idx(np.array([0, 1, 2, 3, 200], np.uint8)), "lbl", "labels must lie in 0..9",
                 id="label-200"),
])
def test_mnist_files_of_the_wrong_shape_are_one_line(tmp_path, images, labels, bad, needle):
    img, lbl = write_mnist(tmp_path, images, labels)
    refused(load_mnist(tmp_path), img if bad == "img" else lbl, needle)


def test_truncated_and_corrupt_gzip_are_one_line(tmp_path):
    img, _ = write_mnist(tmp_path, idx(IMAGES), idx(LABELS))
    packed = img.read_bytes()
    img.write_bytes(packed[: len(packed) // 2])  # truncated: EOFError inside gzip
    refused(load_mnist(tmp_path), img, "cannot read IDX file")
    corrupt = bytearray(packed)
    corrupt[20:40] = bytes(20)  # a damaged deflate stream: zlib.error
    img.write_bytes(bytes(corrupt))
    refused(load_mnist(tmp_path), img, "cannot read IDX file")
    img.write_bytes(packed[:-4] + b"\x00\x00\x00\x00")  # a wrong length in the trailer: BadGzipFile
    refused(load_mnist(tmp_path), img, "cannot read IDX file")


# -- ImageNet files ---------------------------------------------------------------------------------

def test_broken_imagenet_files_are_one_line(tmp_path):
    from PIL import Image

    wnids = [f"n{i:08d}" for i in range(1000)]
    (tmp_path / "wnids.txt").write_text("\n".join(wnids))
    folder = tmp_path / "val" / wnids[0]
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)).save(folder / f"{i}.JPEG")
    bad = folder / "1.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    ds = data.load("imagenet", "test", tmp_path)
    for workers in (0, 2):  # a worker's failure comes back as one line too, not its traceback
        refused(lambda w=workers: list(ds.batches(batch_size=2, workers=w)), bad, "cannot decode image")
    (tmp_path / "wnids.txt").write_bytes(b"\xff\xfe\x00 not text")
    refused(lambda: data.load("imagenet", "test", tmp_path), tmp_path / "wnids.txt", "as text")


# -- results JSONL ----------------------------------------------------------------------------------

GOOD = {"cell_id": "a", "status": "ok", "robust_acc": 0.5}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def _store_and_records(path: Path) -> None:
    ResultStore(path)
    load_records(path)


@pytest.mark.parametrize("line,needle", [
    (b'{"x": 1}', "is not a result record"),
    (b'[1, 2]', "is not a result record"),
    (b'"cell_id"', "is not a result record"),
    (b'{"cell_id": 5, "status": "ok"}', "is not a result record"),
    (b'{"cell_id": {"a": 1}, "status": "ok"}', "is not a result record"),
    (b'{"cell_id": "b"}', "is not a result record"),
    (b'{"cell_id": "b", "sta', "is not valid JSON"),
    (b"\xff\xfe garbage", "is not valid JSON"),
    (b"[" * 100_000, "is not valid JSON"),
])
def test_bad_results_lines_are_one_line_naming_file_and_line(tmp_path, line, needle):
    path = tmp_path / "g.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n")
    refused(lambda: _store_and_records(path), path, f"g.jsonl:2 {needle}")


@FUZZ
@given(line=st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()),
                      st.dictionaries(st.sampled_from(["cell_id", "status", "x"]), JSON).map(
                          lambda v: json.dumps(v).encode())))
def test_fuzzed_results_lines_load_or_are_one_line(tmp_path, line):
    path = tmp_path / "g.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line + b"\n")
    try:
        _store_and_records(path)
    except BenchError as exc:
        assert "\n" not in str(exc) and f"{path}:" in str(exc), str(exc)


def test_a_line_separator_inside_a_value_is_not_a_line_break(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({**GOOD, "note": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_records(path)[0]["note"] == "a\u2028b"


# -- RobustBench checkpoints ------------------------------------------------------------------------

@pytest.mark.slow  # about 8 s, most of it importing robustbench and timm
def test_robustbench_checkpoint_with_a_malicious_pickle_is_refused(tmp_path, monkeypatch):
    """robustbench calls torch.load without weights_only; the env var below would make that a full
    unpickle, so only load_robustbench's forced weights_only=True keeps the payload from running."""
    from bench.core.zoo import load_robustbench

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "cifar10" / "Linf" / "Ding2020MMA.pt"  # robustbench's layout: no download when present
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": _Call(os.system, f"touch {marker}")}, ckpt)
    msg = refused(lambda: load_robustbench("robustbench:Ding2020MMA", model_dir=tmp_path), ckpt)
    assert "weights_only=True" in msg and "posix.system" in msg
    assert not marker.exists(), "the malicious checkpoint ran"
    ckpt.write_bytes(b"not a checkpoint")
    refused(lambda: load_robustbench("robustbench:Ding2020MMA", model_dir=tmp_path), ckpt, "weights_only=True")


def test_weights_only_loads_patches_robustbench_only_within_the_block(tmp_path):
    from bench.core.compat import import_robustbench
    from bench.core.zoo import weights_only_loads

    import_robustbench()
    import robustbench.utils

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save(_Call(os.system, f"touch {marker}"), evil)
    with weights_only_loads():
        refused(lambda: robustbench.utils.torch.load(evil, weights_only=False), evil)
        assert robustbench.utils.torch.zeros(2).shape == (2,)  # the rest of torch is torch's
    assert robustbench.utils.torch is torch and not marker.exists()


# -- the CLI ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["batch", "npz"])
def test_bench_run_dry_run_on_a_malicious_cifar_file_is_one_line_and_runs_nothing(tmp_path, layout):
    marker = tmp_path / "pwned"
    data_dir = tmp_path / "data"
    evil = {"data": _Call(os.system, f"touch {marker}"), "labels": [1]}
    if layout == "batch":
        write_batch(data_dir, pickle.dumps(evil))
    else:
        data_dir.mkdir()
        write_npz(data_dir, pickle.dumps(evil))
    weights = tmp_path / "weights"
    (weights / "cifar10-resnet").mkdir(parents=True)
    (weights / "cifar10-resnet" / "resnet32-d509ac18.th").write_bytes(b"")  # the grid's checkpoint must exist
    proc = bench("run", "--grid", "cifar10-pretrained", "--dry-run", "--no-tracking", "--data-dir", str(data_dir),
                 "--results-dir", str(tmp_path / "results"), cwd=tmp_path, env={"BENCH_WEIGHTS_DIR": str(weights)})
    one_line_exit_2(proc, "asks to load posix.system" if layout == "batch" else "cannot read")
    assert str(data_dir) in proc.stderr and "  run " not in proc.stdout
    assert not marker.exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("line", [b'{"x": 1}', b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b'{"cell_id": 3}'])
def test_a_broken_outbox_line_is_one_line_naming_it(tmp_path, line):
    from bench.track.outbox import Outbox

    box = Outbox(tmp_path, "g")
    box.path.parent.mkdir(parents=True, exist_ok=True)
    box.path.write_bytes(b'{"cell_id": "a", "record": {}}\n' + line + b"\n")
    with pytest.raises(BenchError, match=r":2 is not (valid JSON|an outbox entry)") as info:
        box.entries()
    assert "\n" not in str(info.value)
