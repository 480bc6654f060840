"""Append-only JSONL files keyed by record id: the resumable output of every long job (distillation, evaluation).

Why this shape: a job that pays for each record (a hosted model, minutes of CPU) must survive a SIGKILL without
losing or duplicating work. Each finished record is written as ONE line, flushed and fsynced before the next one
starts, so after a crash the file holds every finished record, plus at most one torn (half-written) last line.
Reopening cuts that torn line (its record was not finished and is redone); a whole record that lacks only its
newline (a crash between the two writes) is kept and its newline added. Any other damage is an error naming the
line, never a silent skip.

A repeated id is resolved by an explicit rule (``keep``), because the two clients need opposite ones: the
evaluation appends a new record to replace a failed item (``retry_errors``), so its last record wins; the
distillation stages never write an id twice, and the first record is the one later stages already used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

__all__ = ["JsonlError", "JsonlWriter", "append_jsonl", "read_jsonl", "read_records", "repair_tail"]

Keep = Literal["first", "last"]


class JsonlError(ValueError):
    """A JSONL file is damaged other than by a torn last line; the message names the file and the line."""


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
        raise JsonlError(f"{path}: the last line is not a JSON object; each line must be one record.")
    return value


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = True) -> list[dict[str, Any]]:
    """All records of a JSONL file; a torn last line (a crash mid-write) is ignored, any other bad line is an error.

    Reading never changes the file (see :func:`repair_tail`). A missing file is a :class:`JsonlError`.
    """
    path = Path(path)
    if not path.is_file():
        raise JsonlError(f"{path} does not exist; check the path (or run the stage that writes it first).")
    body, tail = _split_tail(path.read_bytes())
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        number = body[: err.start].count(b"\n") + 1
        raise JsonlError(
            f"{path}:{number} is not valid UTF-8. Fix or delete that line; the other lines are kept."
        ) from None
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            raise JsonlError(
                f"{path}:{number} is not valid JSON. Fix or delete that line; the other lines are kept."
            ) from None
        if not isinstance(value, dict):
            raise JsonlError(f"{path}:{number} is not a JSON object; each line must be one record.")
        records.append(value)
    if tail.strip():
        record = _tail_record(path, tail)
        if record is not None:
            records.append(record)
        elif not tolerate_torn_tail:
            number = body.count(b"\n") + 1
            raise JsonlError(f"{path}:{number} is not valid JSON. Fix or delete that line; the other lines are kept.")
    return records


def read_records(path: str | os.PathLike[str], *, keep: Keep, key: str = "id") -> dict[str, dict[str, Any]]:
    """Records by ``key`` (as a string); a missing file is an empty dict (nothing done yet).

    ``keep`` says which record of a repeated id counts: ``"first"`` or ``"last"`` (see the module docstring).
    """
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', got {keep!r}.")
    path = Path(path)
    if not path.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(read_jsonl(path), 1):
        if key not in record:
            raise JsonlError(f"{path}: record {number} has no {key!r} field; this is not a file this stage wrote.")
        if keep == "last":
            out[str(record[key])] = record
        else:
            out.setdefault(str(record[key]), record)
    return out


def repair_tail(path: str | os.PathLike[str]) -> bool:
    """End the last line so the next record starts on a line of its own: cut it if torn, else add its newline.

    Returns True when a torn line was cut. A whole record that lacks only its newline is kept: :func:`read_records`
    counts it as done, so cutting it would lose it for good.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as handle:
        body, tail = _split_tail(handle.read())
        if not tail:
            return False
        torn = _tail_record(path, tail) is None
        if torn:
            handle.truncate(len(body))
        else:
            handle.write(b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return torn


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record durably (on disk when this returns); call :func:`repair_tail` once before the first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(_line(record))
        handle.flush()
        os.fsync(handle.fileno())


class JsonlWriter:
    """Append records one line at a time, each flushed and fsynced (crash-safe, never rewrites old lines).

    Opening repairs the last line (:func:`repair_tail`) and keeps the file open for a stream of records.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record durably: it is on disk when this returns."""
        self._handle.write(_line(record))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (every record is already on disk)."""
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
