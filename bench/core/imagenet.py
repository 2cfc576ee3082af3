"""ImageNet (ILSVRC-2012) from image files, decoded lazily: only the images a run uses are read.

Layouts, under ``<data_dir>/imagenet/`` or ``<data_dir>/`` (split ``test`` = the ``val`` folder,
``train`` = ``train``):

- torchvision's ImageFolder: ``<split>/<wnid>/*.JPEG``;
- the official flat validation folder ``val/ILSVRC2012_val_*.JPEG`` with a ground-truth file beside
  it: ``LOC_val_solution.csv`` (Kaggle: ``ImageId,<wnid> ...``) or ``val_labels.txt`` (lines
  ``<file name> <wnid>``), or the official devkit (``ILSVRC2012_devkit_t12/data/``: the validation
  ground truth, one ILSVRC2012_ID a line, and ``meta.mat``, which maps those IDs to wnids).

Class index = position of the wnid in sorted order: ``wnids.txt`` (all 1,000 wnids, one a line) when
present, else the sorted class folders when there are 1,000 of them, else an error (a folder holding
a few classes cannot say which index each one has). Preprocessing is the standard one: resize the
short side to 256, centre crop 224, float [0, 1] (normalisation lives inside the models).

Order: a fixed, class-balanced interleaving. Each class's files are sorted by name; round r takes
the r-th file of every class that has one, the classes in a fixed seeded order (seed 0) rather than
by index, because ImageNet's sorted wnids group similar classes (the first ~400 are animals). So
the first ``n`` images are a class-balanced subset (class counts differ by at most one) spread over
the label space, and ``subset(n, offset)`` slices give disjoint balanced sets.

Images are decoded in batches with a DataLoader (``$BENCH_DATA_WORKERS`` workers, pinned memory when
CUDA is present) when ``x`` is first read, for the (sub)set at hand only; ``batches()`` streams them
without holding the set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from bench.core.dataset_base import Dataset, register_dataset
from bench.core.errors import BenchError

NUM_CLASSES = 1000
DEVKIT, DEVKIT_TRUTH = "ILSVRC2012_devkit_t12", "ILSVRC2012_validation_ground_truth.txt"
RESIZE, CROP = 256, 224
EXTENSIONS = (".jpeg", ".jpg", ".png")
#: ``x`` of more images than this would hold over 12 GB as float32; stream with ``batches()`` instead.
MAX_DECODED = 20_000
SPLIT_FOLDERS = {"test": "val", "train": "train"}
ORDER_SEED = 0


def preprocess(path: str | Path) -> torch.Tensor:
    """One image file -> (3, 224, 224) float in [0, 1]: resize the short side to 256 (PIL bilinear),
    centre crop 224; the same pixels as torchvision's Resize(256), CenterCrop(224), ToTensor() on PIL
    images (tests compare them), without importing torchvision in every loader worker."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(RESIZE * long / short)
            img = img.resize((RESIZE, new_long) if w <= h else (new_long, RESIZE), Image.BILINEAR)
            w, h = img.size
            top, left = int(round((h - CROP) / 2.0)), int(round((w - CROP) / 2.0))
            img = img.crop((left, top, left + CROP, top + CROP))
            arr = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # PIL raises many types on broken or hostile files (OSError, ValueError, bombs)
        raise BenchError(f"cannot decode image {path}: {str(exc)[:200]}; replace or remove the file") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        # A failure travels back as text: DataLoader re-raises a worker's exception with the worker's
        # traceback folded into its message, which would not be one line.
        try:
            return preprocess(self.paths[i]), ""
        except BenchError as exc:
            return torch.zeros(3, CROP, CROP), str(exc)


class ImageFiles(Dataset):
    """A ``Dataset`` whose images stay on disk until ``x`` is read (then only this subset's)."""

    def __init__(self, name: str, split: str, paths: list[Path], y: torch.Tensor, num_classes: int) -> None:
        self.name, self.split, self.paths, self.y, self.num_classes = name, split, list(paths), y, num_classes
        self._x: torch.Tensor | None = None

    def __repr__(self) -> str:
        return f"ImageFiles({self.name!r}, {self.split!r}, {len(self.paths)} images, decoded={self._x is not None})"

    @property
    def x(self) -> torch.Tensor:  # type: ignore[override]
        if self._x is None:
            if len(self.paths) > MAX_DECODED:
                raise BenchError(f"{self.name} {self.split}: {len(self.paths)} images would not fit in memory "
                                 f"as tensors (at most {MAX_DECODED}); pass --limit (and train_limit in the grid)")
            self._x = torch.cat([xb for xb in self.batches()]) if self.paths else torch.empty(0, 3, CROP, CROP)
        return self._x

    def batches(self, batch_size: int = 64, workers: int | None = None) -> Iterator[torch.Tensor]:
        """The images in order, ``batch_size`` at a time, decoded by a DataLoader."""
        if workers is None:
            env = os.environ.get("BENCH_DATA_WORKERS")
            workers = int(env) if env else (min(4, (os.cpu_count() or 1)) if len(self.paths) > batch_size else 0)
        loader = torch.utils.data.DataLoader(_Files(self.paths), batch_size=batch_size, shuffle=False,
                                             num_workers=workers, pin_memory=torch.cuda.is_available())
        for xb, errors in loader:
            failed = next((e for e in errors if e), None)
            if failed:
                raise BenchError(failed)
            yield xb

    def subset(self, n: int | None, offset: int = 0) -> ImageFiles:
        end = None if n is None else offset + n
        out = ImageFiles(self.name, self.split, self.paths[offset:end], self.y[offset:end], self.num_classes)
        if self._x is not None:
            out._x = self._x[offset:end]
        return out


def balanced_order(labels: list[int], names: list[str], num_classes: int = NUM_CLASSES) -> list[int]:
    """Indices of the files in the class-balanced interleaved order (see the module docstring)."""
    per_class: dict[int, list[int]] = {}
    for i in sorted(range(len(labels)), key=lambda i: names[i]):
        per_class.setdefault(labels[i], []).append(i)
    rank = torch.randperm(num_classes, generator=torch.Generator().manual_seed(ORDER_SEED)).tolist()
    classes = sorted(per_class, key=lambda c: rank[c])
    order: list[int] = []
    for r in range(max((len(v) for v in per_class.values()), default=0)):
        order += [per_class[c][r] for c in classes if r < len(per_class[c])]
    return order


def _root(root: Path, split: str) -> tuple[Path, Path]:
    """(base folder, split folder) for ``split``; one clear line when absent."""
    folder = SPLIT_FOLDERS[split]
    for base in (root / "imagenet", root):
        if (base / folder).is_dir():
            return base, base / folder
    raise BenchError(f"imagenet {split} images not found: expected {root / 'imagenet' / folder}/<wnid>/*.JPEG or "
                     f"{root / folder}/<wnid>/*.JPEG (pass --data-dir / set BENCH_DATA_DIR; ImageNet is not "
                     "downloadable, see image-net.org)")


def _text(path: Path) -> str:
    """A small text file's contents, or one line naming it (a binary or unreadable file)."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"imagenet: cannot read {path} as text ({str(exc)[:120]}); replace it") from None


def _wnids(base: Path, class_dirs: list[str]) -> list[str]:
    path = base / "wnids.txt"
    if path.is_file():
        wnids = sorted(w.strip() for w in _text(path).split() if w.strip())
        if len(wnids) != NUM_CLASSES:
            raise BenchError(f"{path} lists {len(wnids)} wnids, expected {NUM_CLASSES}; use the full sorted list")
        return wnids
    if len(class_dirs) == NUM_CLASSES:
        return sorted(class_dirs)
    raise BenchError(f"imagenet: {base} has {len(class_dirs)} class folders and no wnids.txt, so class indices are "
                     f"unknown; put wnids.txt (all {NUM_CLASSES} wnids, one a line) in {base}")


def _flat_labels(folder: Path) -> dict[str, str]:
    """file name -> wnid from a ground-truth file beside (or in) a flat validation folder."""
    for gt in (folder.parent / "LOC_val_solution.csv", folder / "LOC_val_solution.csv"):
        if gt.is_file():
            out = {}
            for line in _text(gt).splitlines()[1:]:
                image_id, _, pred = line.partition(",")
                if pred.split():
                    out[image_id.strip()] = pred.split()[0]
            return {f"{k}.JPEG": v for k, v in out.items()}
    for gt in (folder.parent / "val_labels.txt", folder / "val_labels.txt"):
        if gt.is_file():
            return dict(line.split()[:2] for line in _text(gt).splitlines() if len(line.split()) >= 2)
    for devkit in (folder.parent / DEVKIT, folder / DEVKIT):
        if (devkit / "data" / DEVKIT_TRUTH).is_file():
            return _devkit_labels(devkit / "data")
    raise BenchError(f"imagenet: {folder} holds images but no class folders, and no ground-truth file; put "
                     f"LOC_val_solution.csv, val_labels.txt (<file> <wnid> per line) or the official devkit "
                     f"({DEVKIT}/data/{DEVKIT_TRUTH} and meta.mat) in {folder.parent}")


def _devkit_labels(folder: Path) -> dict[str, str]:
    """The official devkit: line i of the ground truth is image i's ILSVRC2012_ID (1-1,000, the
    devkit's own class order, not the sorted wnids), which meta.mat's synsets map to wnids."""
    import scipy.io

    meta = folder / "meta.mat"
    if not meta.is_file():
        raise BenchError(f"imagenet: {folder / DEVKIT_TRUTH} needs meta.mat beside it (it maps ILSVRC2012_IDs to "
                         f"wnids); extract the whole devkit")
    try:
        synsets = scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"]
        wnid_of = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
        ids = [int(t) for t in _text(folder / DEVKIT_TRUTH).split()]
        return {f"ILSVRC2012_val_{n:08d}.JPEG": wnid_of[i] for n, i in enumerate(ids, start=1)}
    except BenchError:
        raise
    except Exception as e:  # scipy.io raises many types on a broken .mat (MatReadError, ValueError, ...)
        raise BenchError(f"imagenet: cannot read the devkit labels in {folder} ({type(e).__name__}: {e}); "
                         f"re-extract ILSVRC2012_devkit_t12.tar.gz") from None


# 128 synthetic stand-ins, not 1,024: 0.6 MB per image
@register_dataset("imagenet", shape=(3, 224, 224), num_classes=1000, synthetic_size=128)
def _imagenet(split: str, root: Path, download: bool = False) -> ImageFiles:
    """ILSVRC-2012 images (ImageFolder or flat val + ground truth), 224x224, 1,000 classes; lazy."""
    base, folder = _root(root, split)
    class_dirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if class_dirs:
        wnids = _wnids(base, class_dirs)
        index = {w: i for i, w in enumerate(wnids)}
        unknown = [d for d in class_dirs if d not in index]
        if unknown:
            raise BenchError(f"imagenet: class folder {folder / unknown[0]} is not a wnid of {base / 'wnids.txt'}")
        files = [(p, index[d]) for d in class_dirs for p in (folder / d).iterdir()
                 if p.suffix.lower() in EXTENSIONS]
    else:
        labels = _flat_labels(folder)
        wnids = _wnids(base, sorted(set(labels.values())))
        index = {w: i for i, w in enumerate(wnids)}
        files = [(p, index[labels[p.name]]) for p in folder.iterdir()
                 if p.suffix.lower() in EXTENSIONS and p.name in labels and labels[p.name] in index]
    if not files:
        raise BenchError(f"imagenet: no images (.JPEG/.jpg/.png) under {folder}")
    order = balanced_order([c for _, c in files], [p.name for p, _ in files])
    paths = [files[i][0] for i in order]
    y = torch.tensor([files[i][1] for i in order], dtype=torch.int64)
    return ImageFiles("imagenet", split, paths, y, NUM_CLASSES)
