"""Load question data sets into one shape, :class:`Example`, for every training stage.

Formats (``format=`` or guessed from the file):

* ``gsm8k`` — JSONL ``{"question", "answer": "... #### 42"}``; gold is the number after ``####``.
* ``socratic`` — GSM8K Socratic JSONL (steps ``SUB-QUESTION ** step``): also carries the Socratic sub-questions,
  normalised by :mod:`training.socratic` (teacher ``human`` writes them out as decompositions).
* ``jsonl`` — generic ``{"id"?, "question", "answer"?, "context"?, "subquestions"?}``.
* ``bamboogle`` — CSV with ``Question`` and ``Answer`` columns.
* ``drop`` — DROP's JSON (``{passage_id: {"passage", "qa_pairs": [...]}}``); the passage becomes the context.
* ``musique`` — MuSiQue gold decompositions (:mod:`langchain_dod.evaluation.musique`): a folder holding
  ``dev_decompositions2417.json`` and ``train100.json`` (the 2,417 answerable dev questions minus the evaluation
  questions of ``dev_eval292.jsonl`` in the same folder, then the 100 train questions), or one MuSiQue
  ``.json``/``.jsonl`` file. The sub-questions are the gold steps written as questions, each ``#N`` (the answer
  of step N) written as ``step_style`` says (default ``keep``: see :data:`MUSIQUE_STEP_STYLE`).
* ``hf:NAME[:CONFIG][@SPLIT]`` — a Hugging Face data set by name (needs ``datasets`` and network).

Ids are the record's own ``id``/``query_id`` when it has one, else ``<file stem>-<index>``, so they are stable
across reruns of the same file: resumable stages key their outputs by them. They name the same rows as the
evaluation harness's ids (which zero-pad the row number: :func:`canonical_id` bridges the two), so ``exclude=``
can name an evaluation folder's ``manifest.json`` to keep its items out of training.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.socratic import SocraticOptions, gold_from_gsm8k, socratic_subquestions
from training.store import read_jsonl

__all__ = [
    "FORMATS",
    "MUSIQUE_STEP_STYLE",
    "Example",
    "canonical_id",
    "excluded_ids",
    "guess_format",
    "load_examples",
]

FORMATS = ("gsm8k", "socratic", "jsonl", "bamboogle", "drop", "musique")

MUSIQUE_STEP_STYLE = "keep"
"""How a MuSiQue training target writes a reference to an earlier step's answer: ``"Where was #1 born?"``.

Chosen by measurement (training/MULTIHOP.md, benchmarks/results/musique/bm25.md: BM25 recall of the gold steps over the
pooled 292-question corpus): keeping ``#N`` retrieves as well as dropping it or writing "it", "that" or "that person",
and it is the one form the iterative retriever fills without guessing (``resolve_step``)."""


@dataclass
class Example:
    """One question with its gold answer, optional passage and optional Socratic sub-questions."""

    id: str
    question: str
    answer: str | None = None
    context: str | None = None
    subquestions: list[str] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSONL)."""
        return asdict(self)


def _text(value: Any, what: str, where: str, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise TrainingError(f"{where}: missing or empty {what!r}. Every record needs a non-empty {what}.")
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        raise TrainingError(f"{where}: {what!r} must be a string, got {type(value).__name__}.")
    return value.strip()


def guess_format(path: Path) -> str:
    """The format a file most likely has, from its suffix and (for JSONL) its first record; a folder is MuSiQue."""
    if path.is_dir():
        return "musique"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "bamboogle"
    if suffix == ".json":
        with open(path, encoding="utf-8") as handle:
            head = handle.read(4096)
        return "musique" if '"question_decomposition"' in head else "drop"
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            record = json.loads(first) if first else {}
        except json.JSONDecodeError:
            return "jsonl"
        answer = record.get("answer") if isinstance(record, dict) else None
        if isinstance(answer, str) and "####" in answer:
            return "socratic" if " ** " in answer else "gsm8k"
        if isinstance(record, dict) and "question_decomposition" in record:
            return "musique"
        return "jsonl"
    raise TrainingError(f"Cannot tell the format of {path} from its suffix; pass format= one of {', '.join(FORMATS)}.")


def _jsonl_examples(path: Path, fmt: str, socratic: SocraticOptions) -> Iterable[Example]:
    for index, record in enumerate(read_jsonl(path, tolerate_torn_tail=False)):
        where = f"{path} record {index + 1}"
        question = _text(record.get("question"), "question", where, True)
        ident = str(record.get("id", f"{path.stem}-{index}"))
        if fmt in ("gsm8k", "socratic"):
            raw = _text(record.get("answer"), "answer", where, True)
            gold = gold_from_gsm8k(raw)
            if gold is None:
                raise TrainingError(f"{where}: the answer has no '#### N' line; is this really {fmt} data?")
            subquestions = None
            if fmt == "socratic":
                try:
                    subquestions = socratic_subquestions(question, raw, socratic)
                except ValueError as err:
                    raise TrainingError(f"{where}: {err}.") from None
                if subquestions is None:  # overflow="skip"
                    continue
            yield Example(ident, question, gold, None, subquestions)
        else:
            subquestions = record.get("subquestions")
            if subquestions is not None and not (
                isinstance(subquestions, list) and all(isinstance(s, str) for s in subquestions)
            ):
                raise TrainingError(f"{where}: 'subquestions' must be a list of strings.")
            yield Example(
                ident,
                question,
                _text(record.get("answer"), "answer", where, False),
                _text(record.get("context"), "context", where, False),
                subquestions,
            )


def _bamboogle(path: Path) -> Iterable[Example]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "question" not in columns:
            raise TrainingError(f"{path} has no 'Question' column (columns: {reader.fieldnames}); not Bamboogle CSV.")
        for index, row in enumerate(reader):
            where = f"{path} row {index + 2}"
            yield Example(
                str(row.get(columns.get("id", ""), "") or f"{path.stem}-{index}"),
                _text(row[columns["question"]], "question", where, True),
                _text(row.get(columns.get("answer", ""), None), "answer", where, False),
            )


def _drop_gold(answer: dict[str, Any]) -> str | None:
    if not isinstance(answer, dict):
        return None
    if str(answer.get("number", "")).strip():
        return str(answer["number"]).strip()
    spans = [s for s in answer.get("spans") or [] if isinstance(s, str) and s.strip()]
    if spans:
        return ", ".join(spans)
    date = answer.get("date") or {}
    parts = [str(date.get(k, "")).strip() for k in ("day", "month", "year")]
    return " ".join(p for p in parts if p) or None


def _drop(path: Path) -> Iterable[Example]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TrainingError(f"{path} is not valid JSON ({err}); expected DROP's JSON file.") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: DROP JSON is an object of passages, got {type(data).__name__}.")
    for passage_id, item in data.items():
        where = f"{path} passage {passage_id}"
        if not isinstance(item, dict) or "qa_pairs" not in item:
            raise TrainingError(f"{where}: no 'qa_pairs'; is this DROP's JSON?")
        passage = _text(item.get("passage"), "passage", where, True)
        for index, pair in enumerate(item["qa_pairs"]):
            yield Example(
                str(pair.get("query_id") or f"{passage_id}-{index}"),
                _text(pair.get("question"), "question", f"{where} pair {index}", True),
                _drop_gold(pair.get("answer")),
                passage,
            )


def _musique(path: Path, step_style: str) -> Iterable[Example]:
    from langchain_dod.evaluation import musique

    if step_style not in musique.STEP_STYLES or step_style == "fill":
        allowed = ", ".join(s for s in musique.STEP_STYLES if s != "fill")
        raise TrainingError(f"Unknown MuSiQue step_style {step_style!r}; choose one of {allowed}.")
    try:
        if path.is_dir():  # the evaluation questions of the folder's dev_eval292.jsonl are left out here already
            questions = musique.training_questions(path)
        else:
            questions = musique.load_decompositions(path)
    except (OSError, ValueError) as err:
        raise TrainingError(f"{path}: {err}") from None
    for q in questions:
        yield Example(q.id, q.question, q.answer, None, musique.gold_queries(q, step_style))


def _huggingface(name: str) -> Iterable[Example]:
    try:
        import datasets
    except ImportError:
        raise TrainingError(f"Loading {name!r} needs the 'datasets' package: pip install datasets") from None
    spec, _, split = name.removeprefix("hf:").partition("@")
    path, _, config = spec.partition(":")
    try:
        rows = datasets.load_dataset(path, config or None, split=split or "train")
    except Exception as err:  # offline, unknown name, ...
        raise TrainingError(f"Could not load Hugging Face data set {name!r}: {err}") from None
    for index, row in enumerate(rows):
        answer = row.get("answer")
        gold = gold_from_gsm8k(answer) if isinstance(answer, str) and "####" in answer else answer
        if isinstance(gold, dict):  # DROP-style answers on the hub
            gold = _drop_gold(gold)
        yield Example(
            str(row.get("id") or row.get("query_id") or f"{path.replace('/', '_')}-{index}"),
            _text(row.get("question"), "question", f"{name} row {index}", True),
            _text(gold, "answer", f"{name} row {index}", False),
            _text(row.get("context") or row.get("passage"), "context", f"{name} row {index}", False),
        )


def canonical_id(ident: str) -> str:
    """``train-0024`` and ``train-24`` are the same row: the evaluation harness zero-pads row numbers, we don't."""
    stem, sep, number = ident.rpartition("-")
    return f"{stem}-{int(number)}" if sep and number.isdigit() else ident


def excluded_ids(paths: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Ids to keep out of training (canonical, see :func:`canonical_id`), so a decomposer never sees its test items.

    They come from an evaluation ``manifest.json`` (its ``ids``) or any JSONL of records with an ``id`` (e.g. an
    evaluation run's results).
    """
    ids: set[str] = set()
    for item in paths:
        path = Path(item).expanduser()
        if not path.is_file():
            raise TrainingError(f"Exclude file {path} does not exist; name an eval manifest.json or a JSONL with ids.")
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise TrainingError(f"Exclude file {path} is not valid JSON: {err}.") from None
            found = data.get("ids") if isinstance(data, dict) else None
            if not (isinstance(found, list) and all(isinstance(i, str) for i in found)):
                raise TrainingError(f"Exclude file {path} has no 'ids' list; is it an evaluation manifest.json?")
        else:
            found = [str(r["id"]) for r in read_jsonl(path) if isinstance(r, dict) and "id" in r]
            if not found:
                raise TrainingError(f"Exclude file {path} holds no records with an 'id'.")
        ids.update(canonical_id(i) for i in found)
    return ids


def load_examples(
    source: str | os.PathLike[str],
    format: str | None = None,  # noqa: A002 - the natural name for a CLI option
    *,
    limit: int | None = None,
    offset: int = 0,
    socratic: SocraticOptions | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
    step_style: str = MUSIQUE_STEP_STYLE,
) -> list[Example]:
    """Load a data set (see the module docstring); at most ``limit`` examples, in file order.

    Examples whose ids are listed in the ``exclude`` files (see :func:`excluded_ids`) are skipped before
    ``offset`` and ``limit`` count, so ``limit=800`` gives 800 examples none of which is an evaluation item, and
    ``offset=400, limit=400`` is the second half of them (a shard for a second process). ``step_style``: how
    the ``musique`` format writes ``#N`` references (see :data:`MUSIQUE_STEP_STYLE`).

    Raises :class:`TrainingError` for a missing file, an unknown format, a record without a question, duplicate
    ids, or an empty result.
    """
    if offset < 0:
        raise TrainingError(f"offset must be 0 or more, got {offset}.")
    skip = excluded_ids([exclude] if isinstance(exclude, (str, os.PathLike)) else exclude)
    socratic = socratic or SocraticOptions()
    text = str(source)
    if text.startswith("hf:"):
        examples = _huggingface(text)
    else:
        path = Path(source).expanduser()
        if not (path.is_file() or (path.is_dir() and format in (None, "musique"))):
            raise TrainingError(
                f"Data file {path} does not exist. Pass a GSM8K/JSONL/CSV/DROP file, a MuSiQue folder or hf:NAME."
            )
        fmt = format or guess_format(path)
        if fmt not in FORMATS:
            raise TrainingError(f"Unknown data format {fmt!r}; choose one of {', '.join(FORMATS)} (or hf:NAME).")
        if fmt == "musique":
            examples = _musique(path, step_style)
        elif fmt in ("gsm8k", "socratic", "jsonl"):
            examples = _jsonl_examples(path, fmt, socratic)
        elif fmt == "bamboogle":
            examples = _bamboogle(path)
        else:
            examples = _drop(path)
    out: list[Example] = []
    seen: set[str] = set()
    passed = 0
    for example in examples:
        if example.id in seen:
            raise TrainingError(f"{source}: duplicate id {example.id!r}; ids must be unique (outputs are keyed by id).")
        seen.add(example.id)
        if skip and canonical_id(example.id) in skip:
            continue
        passed += 1
        if passed <= offset:
            continue
        out.append(example)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        hint = " (all of them excluded)" if skip and seen else f" after the first {offset}" if offset else ""
        raise TrainingError(f"{source} holds no examples{hint}; check the file, its format and exclude.")
    return out
