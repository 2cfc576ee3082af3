"""Locks for concurrent runs over one results folder: a locked read-merge-write of the results
file, and a claim per cell so two runs split a grid instead of computing every cell twice.

Both are ``flock`` locks on small files. The kernel drops a lock when its process dies (killed,
crashed, out of memory), so a claim left by a dead run is recovered by the next run that asks for
it, with no timeout to tune and no pid file to inspect. On Linux, ``flock`` on NFS is mapped to
POSIX byte-range locks, so a results folder on NFSv4 (or NFSv3 with lockd), CephFS, or Lustre
mounted with ``-o flock`` works across machines; file systems without working locks (sshfs, some
SMB mounts, Lustre with ``-o localflock``) only protect runs on one machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bench.core.cache import lock as file_lock  # noqa: F401 - re-exported: the blocking lock on <path>.lock
from bench.core.errors import BenchError
from bench.core.paths import inside

CLAIMS_DIR = ".claims"


class CellClaim:
    """A non-blocking exclusive claim on ``<results folder>/.claims/<grid>/<cell_id>``.

    ``acquire()`` is False while another live process holds the claim; ``release()`` (or the death
    of this process) frees it."""

    def __init__(self, results_dir: Path, grid: str, cell_id: str) -> None:
        self.path = inside(results_dir, CLAIMS_DIR, grid, cell_id)
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise BenchError(f"cannot create the claim file {self.path} ({exc.strerror}); "
                             "pass --results-dir with a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        with contextlib.suppress(OSError):  # who holds it, for a human looking at the folder
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        # The file stays: unlinking it would let two processes lock two different inodes of one path.
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


@contextlib.contextmanager
def claimed(results_dir: Path, grid: str, cell_id: str) -> Iterator[bool]:
    """``with claimed(...) as ok:`` holds the cell's claim for the block when ``ok``."""
    claim = CellClaim(results_dir, grid, cell_id)
    ok = claim.acquire()
    try:
        yield ok
    finally:
        claim.release()
