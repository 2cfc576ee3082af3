"""Datasets as float [0, 1] NCHW tensors with int64 labels, read offline from standard files.

``digits`` (scikit-learn) is always available. ``mnist`` / ``fashion-mnist`` read IDX .gz files,
``cifar10`` reads the python batches (pickles, through an unpickler that admits numpy arrays, containers,
str and numbers and nothing that could run code) or an .npz (``x`` uint8 NHWC, ``y``; no pickles). A
broken or hostile file is one BenchError line naming it. Files are looked up in
``data_dir`` (or ``$BENCH_DATA_DIR``), under ``<data_dir>/<name>/`` or directly in ``data_dir``.
Downloads (torchvision) happen only with ``download=True``.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.core import imagenet  # noqa: F401  (registers the lazy, file-backed imagenet)
from bench.core.dataset_base import (  # noqa: F401  (re-exported: bench.core.data is where users look)
    DATASETS,
    SPLITS,
    SYNTHETIC_SIZE,
    Dataset,
    DatasetInfo,
    family_of,
    info,
    register_dataset,
)
from bench.core.errors import BenchError


def default_data_dir() -> Path:
    env = os.environ.get("BENCH_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "bench" / "data"


def load(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
    synthetic: bool = False,
) -> Dataset:
    """Load ``split`` ('train' or 'test') of dataset ``name``, the first ``limit`` examples.

    ``synthetic``: when the files are missing, seeded data of the dataset's exact shape and label
    count instead (see ``synthetic``), announced on stderr."""
    if split not in SPLITS:
        raise BenchError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if limit is not None and limit <= 0:
        raise BenchError(f"limit must be positive, got {limit}")
    loader = DATASETS.get(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        ds = loader(split=split, root=root, download=download)
    except BenchError as exc:
        if not synthetic:
            raise
        ds = make_synthetic(name, split, limit or info(name).synthetic_size)
        import sys

        print(f"synthetic data: {name} {split}, {len(ds)} seeded images of shape {tuple(ds.x.shape[1:])}, "
              f"{ds.num_classes} classes (real files not found: {str(exc)[:120]})", file=sys.stderr, flush=True)
    if limit is not None and limit > len(ds):  # a silent clamp would evaluate fewer points than asked
        raise BenchError(f"limit {limit} is larger than the {name} {split} split, which has {len(ds)} images; "
                         f"use a limit of at most {len(ds)} (the grid's limit or --limit)")
    return ds.subset(limit) if limit is not None else ds


def make_synthetic(name: str, split: str, n: int) -> Dataset:
    """``n`` seeded images of dataset ``name``'s shape and label count: a fixed random template per
    class plus noise, in [0, 1], so that a model can learn something. For smoke runs, never for numbers."""
    declared = info(name)
    if declared.shape is None or declared.num_classes is None:
        known = [n for n in DATASETS.list_names() if info(n).shape is not None]
        raise BenchError(f"no synthetic stand-in for dataset {name!r} (it declares no shape and class count: "
                         f"register_dataset(..., shape=, num_classes=)); these have one: {', '.join(known)}")
    shape, nc = declared.shape, declared.num_classes
    gen = torch.Generator().manual_seed(0)
    big = nc * int(np.prod(shape)) > 10_000_000  # ImageNet: 1,000 templates would take 600 MB
    templates = None if big else torch.rand((nc, *shape), generator=gen)
    gen.manual_seed({"train": 1, "test": 2}[split])
    y = torch.arange(n) % nc
    y = y[torch.randperm(n, generator=gen)]
    if templates is None:  # only the classes drawn, each from its own seeded generator
        used = {int(c): torch.rand(shape, generator=torch.Generator().manual_seed(10_000 + int(c)))
                for c in y.unique()}
        base = torch.stack([used[int(c)] for c in y]) if n else torch.empty(0, *shape)
    else:
        base = templates[y]
    x = (0.7 * base + 0.3 * torch.rand((n, *shape), generator=gen)).clamp_(0, 1)
    return Dataset(name, split, x, y.long(), nc)


def _to_tensor(images: np.ndarray, labels: np.ndarray, name: str, split: str, nc: int) -> Dataset:
    x = torch.from_numpy(np.array(images, copy=True)).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(name, split, x, y, nc)


@register_dataset("digits", shape=(1, 8, 8), num_classes=10)
def _digits(split: str, root: Path, download: bool = False) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images): a fixed, stratified 1,297 / 500 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    idx = np.arange(len(images))
    train_idx, test_idx = train_test_split(idx, test_size=500, random_state=0, stratify=bunch.target)
    sel = train_idx if split == "train" else test_idx
    x = torch.from_numpy(images[sel]).unsqueeze(1)
    y = torch.from_numpy(bunch.target[sel].astype(np.int64))
    return Dataset("digits", split, x, y, 10)


def _find(root: Path, sub: str, filenames: list[str]) -> Path | None:
    for base in (root / sub, root, root / sub / "raw"):
        for fn in filenames:
            if (base / fn).is_file():
                return base / fn
    return None


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, struct.error, EOFError, zlib.error) as exc:  # zlib.error: a corrupt gzip body
        raise BenchError(f"cannot read IDX file {path}: {str(exc)[:200]}; replace it with the original file") from None


def _check_labels(y: np.ndarray, n: int, path: Path, num_classes: int = 10) -> np.ndarray:
    """``y`` as ``n`` integer labels in [0, num_classes), or one line naming ``path``."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != n:
        raise BenchError(f"{path}: expected {n} integer labels, got {y.dtype} of shape {y.shape}; "
                         "replace it with the original file")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise BenchError(f"{path}: labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}; "
                         "replace it with the original file")
    return y


def _mnist_like(name: str, tv_class: str, split: str, root: Path, download: bool) -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    img_names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"]
    lbl_names = [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"]
    img, lbl = _find(root, name, img_names), _find(root, name, lbl_names)
    if (img is None or lbl is None) and download:
        _torchvision_download(tv_class, root / name, split)
        img, lbl = _find(root / name, tv_class, img_names), _find(root / name, tv_class, lbl_names)
    if img is None or lbl is None:
        raise BenchError(
            f"{name} {split} files not found: put {img_names[0]} and {lbl_names[0]} in {root / name} "
            f"(or pass --data-dir / set BENCH_DATA_DIR; --download fetches them when online)"
        )
    images, labels = _read_idx(img), _read_idx(lbl)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise BenchError(f"{img}: expected 28x28 images, got shape {images.shape}; replace it with the original file")
    if labels.ndim == 1 and len(labels) != len(images):
        raise BenchError(f"{img} and {lbl} disagree in length ({len(images)} vs {len(labels)})")
    return _to_tensor(images[:, None], _check_labels(labels, len(images), lbl), name, split, 10)


@register_dataset("mnist", shape=(1, 28, 28), num_classes=10)
def _mnist(split: str, root: Path, download: bool = False) -> Dataset:
    """MNIST handwritten digits (LeCun et al. 1998), 28x28 grey, 60,000 / 10,000, from the IDX files."""
    return _mnist_like("mnist", "MNIST", split, root, download)


@register_dataset("mnist-split", family="mnist")
def _mnist_split(split: str, root: Path, download: bool = False) -> Dataset:
    """MNIST's 10,000 test images cut in two fixed halves, for when only the t10k files are at hand.

    'train' is the first 5,000, 'test' the last 5,000 (MNIST's own ordering), disjoint."""
    full = _mnist_like("mnist", "MNIST", "test", root, download)
    sel = slice(0, MNIST_SPLIT) if split == "train" else slice(MNIST_SPLIT, None)
    return Dataset("mnist-split", split, full.x[sel], full.y[sel], 10)


MNIST_SPLIT = 5000


@register_dataset("fashion-mnist", family="mnist", shape=(1, 28, 28), num_classes=10)
def _fashion(split: str, root: Path, download: bool = False) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): Zalando's 28x28 grey clothing images, 60,000 / 10,000, IDX files."""
    return _mnist_like("fashion-mnist", "FashionMNIST", split, root, download)


@register_dataset("cifar10", shape=(3, 32, 32), num_classes=10)
def _cifar10(split: str, root: Path, download: bool = False) -> Dataset:
    """CIFAR-10 from ``cifar-10-batches-py`` or ``cifar10_<split>*.npz`` (x uint8 NHWC, y)."""
    for base in (root / "cifar10", root):
        npz = sorted(base.glob(f"cifar10_{split}*.npz")) if base.is_dir() else []
        if npz:
            return _cifar_npz(npz[0], split)
        batches = base / "cifar-10-batches-py"
        if batches.is_dir():
            return _cifar_batches(batches, split)
    if download:
        _torchvision_download("CIFAR10", root / "cifar10", split)
        return _cifar_batches(root / "cifar10" / "cifar-10-batches-py", split)
    raise BenchError(
        f"cifar10 {split} files not found: put cifar-10-batches-py/ or cifar10_{split}.npz "
        f"(x uint8 NHWC, y) in {root / 'cifar10'} (or pass --data-dir / set BENCH_DATA_DIR; "
        "--download fetches them when online)"
    )


def _cifar_npz(path: Path, split: str) -> Dataset:
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # else numpy reads it as a pickle, refuses, and advises allow_pickle
                raise ValueError("not a zip archive of .npy arrays")
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except Exception as exc:  # a garbage or truncated file raises many types (zip, zlib, numpy, KeyError)
        raise BenchError(f"cannot read {path} ({type(exc).__name__}: {str(exc)[:200]}); it must be an .npz "
                         "holding x (N,32,32,3) uint8 and y") from None
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8:
        raise BenchError(f"{path}: x must be uint8 (N,32,32,3), got {x.dtype} {x.shape}")
    return _to_tensor(x.transpose(0, 3, 1, 2), _check_labels(y, len(x), path), "cifar10", split, 10)


def _latin1(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickles of protocol 0-2 written by Python 3 spell bytes, latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode is admitted only as str -> latin-1 bytes")
    return text.encode("latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Reads dicts, lists, tuples, str, bytes, numbers and numpy arrays; refuses every other global,
    so that a crafted file cannot run code (a plain pickle.load calls whatever the file names)."""

    ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                         ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
                         ("numpy", "ndarray"), ("numpy", "dtype")})

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")  # the official batches are Python 2 pickles
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        if (module, name) not in self.ALLOWED:
            raise BenchError(f"{self.path} is not a CIFAR-10 batch: it asks to load {module}.{name}; only "
                             "numpy arrays, dicts, lists, str and numbers are read (re-extract cifar-10-python.tar.gz)")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N,3,32,32) uint8, labels) of one python batch, read without running any code."""
    try:
        entry = _BatchUnpickler(path.read_bytes(), path).load()
    except BenchError:
        raise
    except Exception as exc:  # a truncated or garbage pickle raises many types
        raise BenchError(f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}: {str(exc)[:200]}); "
                         "re-extract cifar-10-python.tar.gz") from None
    data = entry.get("data") if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise BenchError(f"{path} is not a CIFAR-10 batch: expected a dict whose 'data' is a uint8 array "
                         "(N, 3072); re-extract cifar-10-python.tar.gz")
    try:
        labels = np.asarray(entry.get("labels"))
    except (ValueError, TypeError, OverflowError):  # ragged or odd lists
        labels = np.asarray(None)
    return data.reshape(-1, 3, 32, 32), _check_labels(labels, len(data), path)


def _cifar_batches(folder: Path, split: str) -> Dataset:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for n in names:
        path = folder / n
        if not path.is_file():
            raise BenchError(f"missing CIFAR-10 batch {path}; re-extract cifar-10-python.tar.gz there")
        x, y = _read_cifar_batch(path)
        xs.append(x)
        ys.append(y)
    return _to_tensor(np.concatenate(xs), np.concatenate(ys), "cifar10", split, 10)


def _torchvision_download(tv_class: str, root: Path, split: str) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, tv_class)(str(root), train=(split == "train"), download=True)
    except Exception as exc:  # network errors come in many types
        raise BenchError(f"download of {tv_class} to {root} failed ({type(exc).__name__}); "
                         "are you offline? Put the files there by hand") from None




def _load_plugins() -> None:
    from bench.core.entrypoints import GROUPS, load_entry_points

    load_entry_points(GROUPS["datasets"], DATASETS)


_load_plugins()
