"""Result records: one JSON object per cell in results/<grid>.jsonl, written atomically.

The whole file is rewritten through a temporary file and a rename, so a crash never leaves a
half record; a record for a cell replaces any earlier record of the same cell. Every write
re-reads the file under ``<file>.lock`` (bench.locks) and merges, so runs sharing a results
folder never lose each other's records, whatever the interleaving.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core.cache import atomic_write_text
from bench.core.errors import BenchError
from bench.core.locks import file_lock

#: Record fields that measure the run rather than the result (time, memory, the hardware's name): two
#: runs of one cell agree on every other field.
MEASUREMENT_FIELDS = frozenset({"seconds", "cpu_seconds", "examples_per_second", "finished_at", "delay_per_point_s",
                                "per_point_delay_s", "peak_rss_mb", "peak_cuda_mb",
                                "indicator_seconds", "device_name"})


class ResultStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            # bytes.splitlines splits at \n and \r only; str.splitlines would also split inside a string
            # value at U+2028 and other separators
            for lineno, line in enumerate(self.path.read_bytes().splitlines(), 1):
                if line.strip():
                    rec = parse_record(line, f"{self.path}:{lineno}")
                    records[rec["cell_id"]] = rec
        return records

    def reload(self) -> None:
        """Pick up records other runs wrote since this store was opened."""
        self.records = self._read()

    def check_writable(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # One probe per process: two runs starting together must not unlink each other's probe.
            probe = folder / f".{self.path.name}.{os.getpid()}.probe"
            probe.write_text("")
            probe.unlink(missing_ok=True)
        except OSError as exc:
            raise BenchError(f"results folder {folder} is not writable ({exc.strerror}); "
                             "pass --results-dir with a writable folder") from None

    def finished(self, cell_id: str) -> bool:
        rec = self.records.get(cell_id)
        return rec is not None and rec.get("status") == "ok"

    def put(self, record: dict[str, Any]) -> None:
        with file_lock(self.path):
            self.records = {**self._read(), record["cell_id"]: record}
            atomic_write_text(self.path, self._text())

    def set_flags(self, flags: dict[str, list[str]] | Callable[[list[dict[str, Any]]], dict[str, list[str]]]
                  ) -> None:
        """Store reliability flags (bench.report.flags) in the records; rewrites only on a change.
        A callable is given the records as re-read under the lock (others' included)."""
        if not self._flags_differ(flags(list(self.records.values())) if callable(flags) else flags):
            return  # no lock needed: a finished grid in a read-only folder stays readable
        with file_lock(self.path):
            self.records = self._read()
            self._set_flags(flags(list(self.records.values())) if callable(flags) else flags)

    def _flags_differ(self, flags: dict[str, list[str]]) -> bool:
        return any(rec.get("flags", []) != flags.get(cid, []) for cid, rec in self.records.items())

    def _set_flags(self, flags: dict[str, list[str]]) -> None:
        changed = False
        for cid, rec in self.records.items():
            new = flags.get(cid, [])
            if rec.get("flags", []) != new:
                changed = True
                if new:
                    rec["flags"] = new
                else:
                    rec.pop("flags", None)
        if changed:
            atomic_write_text(self.path, self._text())

    def all_finished(self, cell_ids: list[str]) -> bool:
        return bool(cell_ids) and all(self.finished(c) for c in cell_ids)

    def _text(self) -> str:
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records.values())

    def ok_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r.get("status") == "ok"]


def parse_record(line: bytes | str, where: str) -> dict[str, Any]:
    """One JSONL line as a record (a JSON object with string ``cell_id`` and ``status``), or one line
    naming ``where`` (``<file>:<line>``)."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # ValueError: bad JSON or bad UTF-8; RecursionError: absurd nesting
        raise BenchError(f"{where} is not valid JSON; fix or remove that line") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("cell_id"), str) or not isinstance(rec.get("status"), str):
        raise BenchError(f"{where} is not a result record (a JSON object with string fields cell_id and status); "
                         "fix or remove that line")
    return rec


def load_records(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        raise BenchError(f"no results at {path}; run `bench run --grid {Path(path).stem}` first")
    return list(ResultStore(path).records.values())
