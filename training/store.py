"""The training stages' view of the runtime's crash-safe JSONL store (:mod:`langchain_dod.jsonl_store`).

Two things differ from the shared store, both on purpose: errors are :class:`~training.errors.TrainingError`
(what ``dod-train`` prints without a traceback), and a repeated id keeps its FIRST record: the stages never
write an id twice, and the first record is the one the later stages already used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from langchain_dod import jsonl_store
from langchain_dod.jsonl_store import JsonlError
from training.errors import TrainingError

__all__ = ["JsonlWriter", "read_jsonl", "read_records"]


@contextlib.contextmanager
def _as_training_error() -> Iterator[None]:
    try:
        yield
    except JsonlError as err:
        raise TrainingError(str(err)) from None


def read_jsonl(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = True) -> list[dict[str, Any]]:
    """All records of a JSONL file; a torn last line (a crash mid-write) is ignored, any other bad line is an error."""
    with _as_training_error():
        return jsonl_store.read_jsonl(path, tolerate_torn_tail=tolerate_torn_tail)


def read_records(path: str | os.PathLike[str], key: str = "id") -> dict[str, dict[str, Any]]:
    """Records by ``key``; a missing file is an empty dict (nothing done yet). The first record per id wins."""
    with _as_training_error():
        return jsonl_store.read_records(path, key=key, keep="first")


class JsonlWriter(jsonl_store.JsonlWriter):
    """Append records one line at a time, each flushed and fsynced (crash-safe, never rewrites old lines)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        with _as_training_error():
            super().__init__(path)
