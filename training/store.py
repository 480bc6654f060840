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
from pathlib import Path
from typing import Any

from training.errors import TrainingError

__all__ = ["JsonlWriter", "read_jsonl", "read_records"]


def _split_tail(data: bytes) -> tuple[bytes, bytes]:
    """``(complete lines, last line without its newline)``; the latter is ``b""`` when the file ends in one."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def _tail_record(path: Path, tail: bytes) -> dict[str, Any] | None:
    """The record on a last line that lacks only its newline, or ``None`` for a torn line.

    A crash mid-write leaves a prefix of a record and its newline: never valid JSON (the object closes only at
    its end), possibly cut inside a UTF-8 character. A crash between the record and its newline leaves a whole
    record.
    """
    try:
        value = json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(value, dict):
        raise TrainingError(f"{path}: the last line is not a JSON object; each line must be one record.")
    return value


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = True) -> list[dict[str, Any]]:
    """All records of a JSONL file; a torn last line (a crash mid-write) is ignored, any other bad line is an error."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path} does not exist; check the path (or run the stage that writes it first).")
    body, tail = _split_tail(path.read_bytes())
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        number = body[: err.start].count(b"\n") + 1
        raise TrainingError(
            f"{path}:{number} is not valid UTF-8. Fix or delete that line; the other lines are kept."
        ) from None
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise TrainingError(
                f"{path}:{number} is not valid JSON. Fix or delete that line; the other lines are kept."
            ) from None
        if not isinstance(value, dict):
            raise TrainingError(f"{path}:{number} is not a JSON object; each line must be one record.")
        records.append(value)
    if tail.strip():
        record = _tail_record(path, tail)
        if record is not None:
            records.append(record)
        elif not tolerate_torn_tail:
            number = body.count(b"\n") + 1
            raise TrainingError(
                f"{path}:{number} is not valid JSON. Fix or delete that line; the other lines are kept."
            )
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
        """End the last line so the next record starts on a line of its own: cut it if torn, else add its newline.

        A whole record that lacks only its newline is kept: ``read_records`` counts it as done, so cutting it
        would lose it for good.
        """
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            body, tail = _split_tail(handle.read())
            if not tail:
                return
            if _tail_record(self.path, tail) is not None:
                handle.write(b"\n")
            else:
                handle.truncate(len(body))
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
