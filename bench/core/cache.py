"""The content-addressed artifact cache: config hashing, atomic writes, checksummed entries.

Every expensive artifact (trained models, D' with its features, adversarial examples crafted
against a base model, training resume state) lives under the cache folder as ``<kind>/<key>.pt``,
where ``key`` hashes everything that determines it. A payload is written atomically (temporary
file, fsync, rename), then its sha256 goes to a ``<key>.pt.sha256`` sidecar, written the same way.
An entry whose sidecar is missing (killed between the two writes) or does not match, or whose
payload does not load with ``weights_only=True``, is reported on stderr, removed and rebuilt.

torch is imported lazily, so planning and resuming a finished grid stay light.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bench.core.errors import BenchError

CHECKSUM_SUFFIX = ".sha256"
LOCK_SUFFIX = ".lock"
#: Counts entries found corrupt or partial and dropped (tests read it).
REBUILDS = {"count": 0}


def config_hash(config: Any, length: int = 16) -> str:
    """Stable hash of a JSON-serialisable config (dict key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def default_cache_dir() -> Path:
    env = os.environ.get("BENCH_CACHE_DIR")
    return Path(env) if env else Path(".bench-cache")


# -- the cache's own marker and the entries it holds ------------------------------------------------
TAG_NAME = "CACHEDIR.TAG"
TAG_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
TAG_TEXT = (f"{TAG_SIGNATURE}\n"
            "# This file is a cache directory tag created by advbench (`bench run`).\n"
            "# For information about cache directory tags, see https://bford.info/cachedir/\n")
#: The folders the harness writes under the cache: trained models, adversarial examples and clean
#: predictions (models, adv, clean), D' (databases), training resume state and RobustBench downloads.
KINDS = ("models", "adv", "clean", "databases", "training", "robustbench")
#: Also the project's, but no cache entries (no checksum), so `bench cache` leaves them alone:
#: python -m bench.benchmarks.rmc_floor keeps its models there.
_UNMANAGED = {"benchmark-models": re.compile(r"[\w.-]+-standard\.pt")}
_KEY = r"[0-9a-f]{16}"  # config_hash()
# <key>.pt, its sidecar and lock, and _atomic_write's temporaries (mkstemp: .<name>.<random>.tmp)
_FILE = re.compile(rf"{_KEY}\.pt(\.sha256|\.lock)?|\.{_KEY}\.pt(\.sha256)?\.\w+\.tmp")
_FILE_KINDS = ("models", "adv", "clean", "databases")
_DIRS = {"training": re.compile(_KEY), "databases": re.compile(rf"{_KEY}-disk"),
         "robustbench": re.compile("cifar10|cifar100|imagenet")}  # robustbench's <model_dir>/<dataset>


def _owned(kind: str, p: Path) -> bool:
    """Whether ``p`` (in the cache's ``kind`` folder) is an entry the harness writes."""
    if p.is_symlink():  # the harness never writes links; following one could reach anywhere
        return False
    if p.is_dir():
        pattern = _DIRS.get(kind)
        return bool(pattern and pattern.fullmatch(p.name))
    if kind in _UNMANAGED:
        return bool(_UNMANAGED[kind].fullmatch(p.name))
    return kind in _FILE_KINDS and bool(_FILE.fullmatch(p.name))


def is_marked(cache_dir: Path) -> bool:
    """Whether ``cache_dir`` holds a CACHEDIR.TAG that begins with the standard signature."""
    try:
        with open(Path(cache_dir) / TAG_NAME, "rb") as f:
            return f.read(len(TAG_SIGNATURE)) == TAG_SIGNATURE.encode()
    except OSError:
        return False


def foreign(cache_dir: Path) -> list[Path]:
    """What in ``cache_dir`` (top level and inside its kind folders) the harness did not write."""
    out: list[Path] = []
    for p in sorted(Path(cache_dir).iterdir()):
        if p.name == TAG_NAME or p.name.startswith(f".{TAG_NAME}."):  # or another worker's tag being written
            continue
        if p.name not in (*KINDS, *_UNMANAGED) or p.is_symlink() or not p.is_dir():
            out.append(p)
        else:
            out.extend(q for q in sorted(p.iterdir()) if not _owned(p.name, q))
    return out


def mark_cache(cache_dir: Path) -> bool:
    """Create ``cache_dir`` if needed and write its CACHEDIR.TAG; ``bench run`` calls it once at start.

    A folder that exists without the tag is marked only when it holds nothing but the harness's
    entries (a cache from an older version); one with other files gets a warning and stays unmarked,
    so ``bench cache gc`` keeps refusing it. Returns whether the folder is marked."""
    root = Path(cache_dir)
    if is_marked(root):
        return True
    try:
        others = foreign(root) if root.is_dir() else []
        if others:
            print(f"warning: cache folder {root} holds files advbench did not write (e.g. {others[0]}); not "
                  f"marking it with {TAG_NAME}, so `bench cache` refuses it; give the cache a folder of its own",
                  file=sys.stderr, flush=True)
            return False
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / TAG_NAME, TAG_TEXT)
    except (BenchError, OSError):  # a read-only shared cache still serves a run that only reads it
        return False
    return True


def require_cache(cache_dir: Path) -> Path:
    """``cache_dir`` when it is an advbench cache (or does not exist); a one-line BenchError otherwise."""
    root = Path(cache_dir)
    if not root.exists():
        return root
    if not root.is_dir():
        raise BenchError(f"cache folder {root} is not a folder")
    if not is_marked(root):
        why = f"its {TAG_NAME} lacks the standard signature" if (root / TAG_NAME).exists() else f"no {TAG_NAME}"
        raise BenchError(f"{root} is not an advbench cache ({why}); nothing was touched: pass the --cache-dir "
                         "`bench run` uses (an older advbench cache gets its tag on its next `bench run`)")
    return root


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask, read once (os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results and leaderboards are for sharing
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _denied(path: Path) -> BenchError:
    return BenchError(f"cannot write to {Path(path).parent}: permission denied; choose a writable folder")


def disk_error(path: Path | str, exc: OSError) -> BenchError | None:
    """The one-line error for a write that failed because the disk is full or read-only (None for
    other OS errors, which are bugs or transient and keep their traceback for the record)."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    elif exc.errno == errno.EROFS:
        why = "read-only file system"
    else:
        return None
    from bench.core.errors import DiskError

    return DiskError(f"cannot write {path}: {why}; records finished so far are kept, free space (or make "
                     "the folder writable) and rerun the same command to continue")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        _atomic_write(Path(path), lambda f: f.write(data))
    except PermissionError:
        raise _denied(path) from None
    except OSError as exc:
        raise (disk_error(path, exc) or exc) from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checksum_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + CHECKSUM_SUFFIX)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save ``obj`` as a cache entry: payload atomically, then its sha256 sidecar atomically."""
    import torch

    path = Path(path)
    h = hashlib.sha256()

    def write(f: BinaryIO) -> None:
        class _Hashing:  # hash while writing: no second read of a large payload
            def write(self, b: bytes) -> int:
                h.update(b)
                return f.write(b)

            def flush(self) -> None:
                f.flush()

        torch.save(obj, _Hashing())

    try:
        checksum_path(path).unlink(missing_ok=True)  # a payload without a sidecar is never trusted
        _atomic_write(path, write)
        _atomic_write(checksum_path(path), lambda f: f.write(h.hexdigest().encode()))
    except PermissionError:
        raise _denied(path) from None
    except OSError as exc:
        raise (disk_error(path, exc) or exc) from None


def entry_status(path: Path) -> str:
    """``ok``, ``missing``, ``partial`` (no checksum sidecar) or ``corrupt`` (checksum mismatch)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    side = checksum_path(path)
    if not side.is_file():
        return "partial"
    return "ok" if side.read_text().strip() == file_sha256(path) else "corrupt"


def drop_entry(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def _warn(path: Path, why: str) -> None:
    REBUILDS["count"] += 1
    print(f"warning: cache entry {path} is {why}; removed, rebuilding it", file=sys.stderr, flush=True)


def torch_load_or_none(path: Path) -> Any:
    """Load a cache entry (checksum verified, ``weights_only=True``); None when it is missing,
    partial or corrupt, in which case it is removed so the caller rebuilds it."""
    import torch

    path = Path(path)
    status = entry_status(path)
    if status == "missing":
        return None
    if status != "ok":
        drop_entry(path)
        _warn(path, "partial (no checksum)" if status == "partial" else "corrupt (checksum mismatch)")
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # e.g. a pickle that weights_only refuses
        drop_entry(path)
        _warn(path, f"unloadable ({type(exc).__name__})")
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # mtime = last use, for `bench cache gc --older-than`
    return obj


def lock_path_of(path: Path) -> Path:
    """The file ``lock(path)`` locks: ``<path>.lock`` beside the artifact."""
    return Path(path).with_name(Path(path).name + LOCK_SUFFIX)


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>.lock``: concurrent workers (Ray tasks) sharing a cache
    build an artifact once; the others wait, then load it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking, at worst duplicate work
        yield
        return
    lock_path = lock_path_of(path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_path, "a+b")  # noqa: SIM115 - held for the with-block
    except PermissionError:
        raise _denied(lock_path) from None
    except OSError as exc:
        raise (disk_error(lock_path, exc) or exc) from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def held_elsewhere(path: Path) -> bool:
    """Whether some other holder has ``lock(path)`` right now (a worker building that artifact): a
    non-blocking try, released at once. False where locks are unsupported or the lock file is absent."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    lock_path = lock_path_of(path)
    try:
        f = open(lock_path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False
    finally:
        f.close()


# -- `bench cache ls | du | gc` -----------------------------------------------------------------
@dataclass
class Entry:
    path: Path
    kind: str  # models, adv, databases, training, robustbench, ...
    size: int
    mtime: float
    status: str  # ok, partial, corrupt, unverified, temp, lock, orphan, dir

    @property
    def age_days(self) -> float:
        return max(0.0, (time.time() - self.mtime) / 86400)


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def scan(cache_dir: Path, verify: bool = False) -> list[Entry]:
    """Every entry the harness wrote under ``cache_dir`` (sidecars are folded into their payload);
    other files in the folder are not listed, so ``gc`` never touches them."""
    root = Path(cache_dir)
    if not root.exists():
        return []
    if not root.is_dir():
        raise BenchError(f"cache folder {root} is not a folder")
    out: list[Entry] = []
    for kind_dir in (root / k for k in KINDS):
        if kind_dir.is_symlink() or not kind_dir.is_dir():
            continue
        for p in sorted(q for q in kind_dir.iterdir() if _owned(kind_dir.name, q)):
            st = p.stat()
            name = p.name
            if name.endswith(".tmp"):
                status = "temp"
            elif name.endswith(LOCK_SUFFIX):
                status = "lock"
            elif name.endswith(CHECKSUM_SUFFIX):
                if (p.with_name(name[: -len(CHECKSUM_SUFFIX)])).exists():
                    continue
                status = "orphan"
            elif p.is_dir():
                status = "dir"  # e.g. training resume state, robustbench downloads
            elif not checksum_path(p).is_file():
                status = "partial"
            else:
                status = entry_status(p) if verify else "unverified"
            out.append(Entry(p, kind_dir.name, _size(p), st.st_mtime, status))
    return out


def remove(entry: Entry) -> None:
    if entry.path.is_dir():
        shutil.rmtree(entry.path, ignore_errors=True)
    elif entry.status in ("temp", "lock", "orphan"):
        entry.path.unlink(missing_ok=True)
    else:
        drop_entry(entry.path)


def gc_candidates(entries: list[Entry], older_than_days: float | None = None, everything: bool = False
                  ) -> list[tuple[Entry, str]]:
    """What ``bench cache gc`` removes, with the reason: temporary leftovers, orphan sidecars,
    partial or corrupt entries, entries unused for ``older_than_days``, or everything."""
    out = []
    for e in entries:
        if everything:
            out.append((e, "--all"))
        elif e.status == "temp":
            out.append((e, "temporary leftover"))
        elif e.status == "orphan":
            out.append((e, "checksum without payload"))
        elif e.status in ("partial", "corrupt"):
            out.append((e, f"{e.status} entry"))
        elif older_than_days is not None and e.status != "lock" and e.age_days > older_than_days:
            out.append((e, f"unused for {e.age_days:.1f} days"))
    return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
