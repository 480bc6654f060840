"""Read evaluation data sets into one shape, :class:`Item`, with stable ids.

Formats (``fmt``):

- ``gsm8k``: JSONL ``{"question", "answer"}``; the gold number follows the last ``####``. Ids are
  ``<file stem>-<0-based line>`` (``test-0000``), since GSM8K rows carry none.
- ``drop``: the official DROP JSON (``{passage_id: {"passage", "qa_pairs": [...]}}``; each answer is a number,
  a date or spans, plus ``validated_answers``), or JSONL rows ``{"query_id", "passage", "question",
  "answers_spans": {"spans": [...]}}``. Ids are the ``query_id``.
- ``bamboogle``: CSV with ``Question`` / ``Answer`` columns, or JSONL with ``question`` / ``answer``.
- ``jsonl``: generic ``{"id"?, "question", "answer", "context"?}``; ``answer`` may be a list of alternatives.

A row that lacks a field is never dropped silently: loading stops with every bad row listed, unless
``skip_bad=True``, in which case the skipped rows are returned so the caller can record them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "DatasetError", "Item", "LoadedDataset", "detect_format", "load_dataset", "select_items"]

FORMATS = ("gsm8k", "drop", "bamboogle", "jsonl")
PROFILE_FOR_FORMAT = {"gsm8k": "math", "drop": "reading", "bamboogle": "multihop", "jsonl": "math"}


class DatasetError(ValueError):
    """The data file cannot be read as the requested format, or rows lack required fields."""


@dataclass(frozen=True)
class Item:
    """One question to evaluate.

    ``answers`` holds the acceptable gold answers; each is a tuple of spans (one span except for DROP's
    multi-span answers).
    """

    id: str
    question: str
    answers: tuple[tuple[str, ...], ...]
    context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer(self) -> str:
        """The first gold answer as one string (spans joined by ``, ``)."""
        return ", ".join(self.answers[0]) if self.answers else ""


@dataclass
class LoadedDataset:
    """The items of a file plus what identifies that file (recorded in every evaluation's manifest)."""

    path: Path
    fmt: str
    items: list[Item]
    sha256: str
    skipped: list[str] = field(default_factory=list)

    @property
    def profile(self) -> str:
        """The decomposer prompt profile that fits this data set."""
        return PROFILE_FOR_FORMAT[self.fmt]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                rows.append((number, err))
    return rows


def detect_format(path: Path) -> str:
    """Guess the format from the extension, the file name and the first row's keys."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "bamboogle"
    if suffix == ".json":
        return "drop"
    if suffix not in (".jsonl", ".ndjson"):
        raise DatasetError(
            f"Cannot tell the format of {path.name!r} from its extension; pass fmt= one of {', '.join(FORMATS)} "
            "(--format on the command line)."
        )
    first = next((row for _, row in _read_jsonl(path) if isinstance(row, dict)), None)
    if first is None:
        raise DatasetError(f"{path} holds no JSON object rows.")
    keys = {k.lower() for k in first}
    if "passage" in keys or "answers_spans" in keys:
        return "drop"
    if isinstance(first.get("answer"), str) and "####" in first["answer"]:
        return "gsm8k"
    if "bamboogle" in path.name.lower():
        return "bamboogle"
    return "jsonl"


def _text(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _gsm8k(path: Path) -> tuple[list[Item], list[str]]:
    items, bad = [], []
    for index, (number, row) in enumerate(_read_jsonl(path)):
        if isinstance(row, Exception):
            bad.append(f"line {number}: not JSON ({row})")
            continue
        question = _text(row.get("question")) if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if question is None or not isinstance(answer, str) or "####" not in answer:
            bad.append(f"line {number}: needs 'question' and an 'answer' ending in '#### <number>'")
            continue
        gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
        if not gold:
            bad.append(f"line {number}: empty gold answer after '####'")
            continue
        items.append(Item(f"{path.stem}-{index:04d}", question, ((gold,),), meta={"reasoning": answer}))
    return items, bad


def _drop_answer(answer: Any) -> tuple[str, ...] | None:
    """One DROP answer object → its spans (a number and a date each become one span)."""
    if not isinstance(answer, dict):
        return None
    if _text(answer.get("number")):
        return (_text(answer["number"]),)  # type: ignore[return-value]
    spans = tuple(s.strip() for s in answer.get("spans") or [] if isinstance(s, str) and s.strip())
    if spans:
        return spans
    date = answer.get("date") or {}
    text = " ".join(str(date.get(k) or "").strip() for k in ("day", "month", "year")).strip()
    return (" ".join(text.split()),) if text else None


def _drop(path: Path) -> tuple[list[Item], list[str]]:
    items, bad = [], []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path} is not valid JSON ({err}); DROP is one JSON object of passages.") from err
        if not isinstance(data, dict):
            raise DatasetError(f"{path}: expected the official DROP layout {{passage_id: {{passage, qa_pairs}}}}.")
        for pid, entry in data.items():
            passage = _text(entry.get("passage")) if isinstance(entry, dict) else None
            pairs = entry.get("qa_pairs") if isinstance(entry, dict) else None
            if passage is None or not isinstance(pairs, list):
                bad.append(f"passage {pid}: needs 'passage' and 'qa_pairs'")
                continue
            for k, qa in enumerate(pairs):
                qid = str(qa.get("query_id") or f"{pid}-{k}") if isinstance(qa, dict) else f"{pid}-{k}"
                question = _text(qa.get("question")) if isinstance(qa, dict) else None
                golds = [_drop_answer(qa.get("answer"))] if isinstance(qa, dict) else []
                golds += [_drop_answer(a) for a in (qa.get("validated_answers") or [])] if isinstance(qa, dict) else []
                unique = tuple(dict.fromkeys(g for g in golds if g))
                if question is None or not unique:
                    bad.append(f"query {qid}: needs 'question' and a non-empty 'answer' (number, date or spans)")
                    continue
                items.append(Item(qid, question, unique, context=passage))
        return items, bad
    for number, row in _read_jsonl(path):
        if not isinstance(row, dict):
            bad.append(f"line {number}: not a JSON object")
            continue
        spans = (row.get("answers_spans") or {}).get("spans") if isinstance(row.get("answers_spans"), dict) else None
        gold = tuple(s.strip() for s in spans or [] if isinstance(s, str) and s.strip())
        question, passage = _text(row.get("question")), _text(row.get("passage"))
        if question is None or passage is None or not gold:
            bad.append(f"line {number}: needs 'passage', 'question' and 'answers_spans': {{'spans': [...]}}")
            continue
        items.append(Item(str(row.get("query_id") or f"{path.stem}-{number}"), question, (gold,), context=passage))
    return items, bad


def _bamboogle(path: Path) -> tuple[list[Item], list[str]]:
    items, bad = [], []
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = [
                (n, {(k or "").strip().lower(): v for k, v in row.items()})
                for n, row in enumerate(csv.DictReader(fh), 2)
            ]
    else:
        rows = [
            (n, {str(k).lower(): v for k, v in r.items()} if isinstance(r, dict) else r) for n, r in _read_jsonl(path)
        ]
    for index, (number, row) in enumerate(rows):
        question = _text(row.get("question")) if isinstance(row, dict) else None
        answer = _text(row.get("answer")) if isinstance(row, dict) else None
        if question is None or answer is None:
            bad.append(f"row {number}: needs 'Question' and 'Answer'")
            continue
        items.append(Item(str(row.get("id") or f"bamboogle-{index:03d}"), question, ((answer,),)))
    return items, bad


def _generic(path: Path) -> tuple[list[Item], list[str]]:
    items, bad = [], []
    for index, (number, row) in enumerate(_read_jsonl(path)):
        if not isinstance(row, dict):
            bad.append(f"line {number}: not a JSON object")
            continue
        question, answer = _text(row.get("question")), row.get("answer")
        alternatives = answer if isinstance(answer, list) else [answer]
        golds = tuple((t,) for t in (_text(a) for a in alternatives) if t)
        context = row.get("context")
        if question is None or not golds:
            bad.append(f"line {number}: needs 'question' and 'answer' (a string, number or list of them)")
            continue
        if context is not None and not isinstance(context, str):
            bad.append(f"line {number}: 'context' must be a string")
            continue
        items.append(
            Item(
                str(row.get("id") if row.get("id") is not None else f"{path.stem}-{index:04d}"),
                question,
                golds,
                context=(context or None),
            )
        )
    return items, bad


_READERS = {"gsm8k": _gsm8k, "drop": _drop, "bamboogle": _bamboogle, "jsonl": _generic}


def load_dataset(path: str | Path, fmt: str = "auto", *, skip_bad: bool = False) -> LoadedDataset:
    """Read ``path`` as ``fmt`` (``auto`` guesses). Bad rows raise :class:`DatasetError` unless ``skip_bad``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"Data set file not found: {path}.")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in _READERS:
        raise DatasetError(f"Unknown data set format {fmt!r}; choose one of {', '.join(FORMATS)} or auto.")
    items, bad = _READERS[fmt](path)
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.id in seen:
            bad.append(f"duplicate id {item.id!r} (the first row with it is kept)")
            continue
        seen.add(item.id)
        unique.append(item)
    items = unique
    if bad and not skip_bad:
        shown = "; ".join(bad[:5]) + (f"; … {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DatasetError(
            f"{path} ({fmt}): {len(bad)} bad row(s): {shown}. Fix them, or pass skip_bad=True "
            "(--skip-bad-items on the command line) to skip them (skipped rows are listed in the manifest)."
        )
    if not items:
        raise DatasetError(f"{path} ({fmt}) holds no usable items.")
    return LoadedDataset(path=path, fmt=fmt, items=items, sha256=_sha256(path), skipped=bad)


def select_items(items: list[Item], limit: int | None = None, seed: int | None = 0) -> list[Item]:
    """Shuffle with ``seed`` (``None`` keeps file order), then keep the first ``limit``.

    Prefix-stable: the first 50 items of ``limit=100`` are the items of ``limit=50`` with the same seed,
    so an evaluation can be extended without redoing work.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (--limit on the command line), got {limit}.")
    chosen = list(items)
    if seed is not None:
        random.Random(seed).shuffle(chosen)
    return chosen[:limit] if limit is not None else chosen
