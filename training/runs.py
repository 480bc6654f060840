"""What the stages share: running examples through a bounded pool, and the training-info file of a fine-tune.

``generate`` and ``screen`` both pay per example, so both submit only a few at a time (a kill loses only
those), log an example that still fails after its retries to ``<out>.failed.jsonl``, and stop at the first
error that no retry fixes. ``sft`` leaves ``dod_training.json`` beside the model it saves; ``export`` and
``distill`` read it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from training.errors import TrainingError
from training.store import JsonlWriter

__all__ = [
    "TRAINING_INFO",
    "Finished",
    "bounded",
    "failed_path",
    "is_fatal",
    "read_training_info",
    "training_info_path",
    "write_as_finished",
]

T = TypeVar("T")

TRAINING_INFO = "dod_training.json"
"""The file ``sft`` writes into its ``final`` folder: base, settings, losses, data files."""


def training_info_path(model_dir: str | Path) -> Path:
    """Where a fine-tuned folder keeps its training info."""
    return Path(model_dir) / TRAINING_INFO


def read_training_info(model_dir: str | Path) -> dict[str, Any]:
    """The training info of a fine-tuned folder; ``{}`` when it has none (a folder ``sft`` did not write)."""
    path = training_info_path(model_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def failed_path(out: str | Path) -> Path:
    """Where examples that failed after all retries are logged."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".failed.jsonl")


def is_fatal(err: BaseException | None) -> bool:
    """Errors that no retry fixes and that hit every example: stop the run instead of logging 1,000 failures."""
    from langchain_dod.chat_models import ModelLoadError
    from langchain_dod.models import ModelNotFoundError

    return isinstance(err, (ModelNotFoundError, ModelLoadError, ImportError, TrainingError))


def bounded(
    pool: ThreadPoolExecutor, work: Callable[[T], Any], todo: Sequence[T], width: int
) -> Iterator[tuple[T, Future]]:
    """Submit at most ``width`` items at a time; yield each as it finishes (so a kill loses only those)."""
    pending: dict[Future, T] = {}
    items = iter(todo)
    while True:
        while len(pending) < width:
            item = next(items, None)
            if item is None:
                break
            pending[pool.submit(work, item)] = item
        if not pending:
            return
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            yield pending.pop(future), future


@dataclass
class Finished(Generic[T]):
    """One item done: its ``record`` (written to the output) or its ``failure`` (written to the failures file)."""

    item: T
    record: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None


def write_as_finished(
    todo: Sequence[T],
    work: Callable[[T], dict[str, Any]],
    out: Path,
    *,
    stage: str,
    width: int,
    item_id: Callable[[T], str],
    safe_before: int,
    failure_fields: dict[str, Any] | None = None,
    fatal: Callable[[BaseException], bool] = is_fatal,
) -> Iterator[Finished[T]]:
    """Run ``work`` on ``todo`` (``width`` at a time); append each record to ``out`` as it finishes, then yield it.

    An item whose work raised is appended to :func:`failed_path` (its id, the error and ``failure_fields``) and
    yielded as a failure; the next run retries it. A ``fatal`` error stops the run with a :class:`TrainingError`
    saying how many records are safe (``safe_before`` from earlier runs plus this run's).
    """
    written = 0
    failed_writer: JsonlWriter | None = None
    try:
        with JsonlWriter(out) as writer, ThreadPoolExecutor(max_workers=width) as pool:
            for item, future in bounded(pool, work, todo, width):
                try:
                    record = future.result()
                except Exception as err:  # noqa: BLE001 - logged per item, fatal ones stop the run
                    if fatal(err):
                        raise TrainingError(
                            f"{stage} stopped: {type(err).__name__}: {err} ({safe_before + written} records are safe "
                            f"in {out}; rerun to continue)."
                        ) from err
                    failure = {"id": item_id(item), "error": f"{type(err).__name__}: {err}", **(failure_fields or {})}
                    failed_writer = failed_writer or JsonlWriter(failed_path(out))
                    failed_writer.write(failure)
                    yield Finished(item, failure=failure)
                    continue
                writer.write(record)
                written += 1
                yield Finished(item, record=record)
    finally:
        if failed_writer is not None:
            failed_writer.close()
