"""Append-only JSONL files keyed by example id: the resumable output of every long stage.

Why this shape: a stage that pays for each example (a hosted teacher, minutes of CPU) must survive a SIGKILL
without losing or duplicating work. Each finished example is written as ONE line and flushed and fsynced
before the next one starts, so after a crash the file holds every finished example exactly once, plus at
most one torn (half-written) last line. Reopening truncates that torn line (its example was not finished and
is redone), and the ids already present are skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.errors import TrainingError

__all__ = ["JsonlWriter", "read_jsonl", "read_records"]


def _parse_lines(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | None, bool]]:
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        last = number == len(lines)
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            yield number, None, last
            continue
        if not isinstance(value, dict):
            raise TrainingError(f"{path}:{number} is not a JSON object; each line must be one record.")
        yield number, value, last


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = True) -> list[dict[str, Any]]:
    """All records of a JSONL file; a torn last line (a crash mid-write) is ignored, any other bad line is an error."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; check the path (or run the stage that writes it first).")
    text = path.read_text(encoding="utf-8")
    records = []
    for number, value, last in _parse_lines(path, text):
        if value is None:
            if last and tolerate_torn_tail and not text.endswith("\n"):
                continue
            raise TrainingError(
                f"{path}:{number} is not valid JSON. Fix or delete that line; the other lines are kept."
            )
        records.append(value)
    return records


def read_records(path: str | os.PathLike[str], key: str = "id") -> dict[str, dict[str, Any]]:
    """Records by ``key``; a missing file is an empty dict (nothing done yet). The first record per id wins."""
    path = Path(path)
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(read_jsonl(path), 1):
        if key not in record:
            raise TrainingError(f"{path}: record {number} has no {key!r} field; this is not a file this stage wrote.")
        out.setdefault(str(record[key]), record)
    return out


class JsonlWriter:
    """Append records one line at a time, each flushed and fsynced (crash-safe, never rewrites old lines)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _repair_tail(self) -> None:
        """Cut a torn last line (no trailing newline) so the next record starts on a line of its own."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())

    def write(self, record: dict[str, Any]) -> None:
        """Append one record durably: it is on disk when this returns."""
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (every record is already on disk)."""
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
