"""The one data layer: question data sets read into one shape, :class:`Item`, for evaluation and training alike.

It owns the items, their ids, their gold answers and the GSM8K Socratic sub-questions; ``dod eval``
(:func:`load_dataset`) and the training stages (``training.data.load_examples``) are both clients of
:func:`read_items`.

Formats (``fmt``):

- ``gsm8k``: JSONL ``{"question", "answer"}``; the gold number follows the last ``####`` (thousands commas and
  ``$`` removed). With ``socratic=`` options the Socratic steps (``SUB-QUESTION ** step``) become the item's
  :attr:`Item.subquestions` (:func:`socratic_subquestions`).
- ``drop``: the official DROP JSON (``{passage_id: {"passage", "qa_pairs": [...]}}``; each answer is a number,
  a date or spans, plus ``validated_answers``), or JSONL rows ``{"query_id", "passage", "question",
  "answers_spans": {"spans": [...]}}``. Ids are the ``query_id``.
- ``bamboogle``: CSV with ``Question`` / ``Answer`` columns, or JSONL with ``question`` / ``answer``.
- ``jsonl``: generic ``{"id"?, "question", "answer"?, "context"?, "subquestions"?}``; ``answer`` may be a list of
  alternatives.
- ``musique``: MuSiQue records (``.json`` list or ``.jsonl``, read by :mod:`langchain_dod.evaluation.musique`);
  the gold answer and its ``answer_aliases`` are the gold answers, the gold decomposition steps written as
  questions are the :attr:`Item.subquestions` (each ``#N``, the answer of step N, written as ``step_style`` says:
  :data:`MUSIQUE_STEP_STYLES`). The source may also be a MuSiQue *folder* (``../shared/data/musique``): its
  training questions, :func:`~langchain_dod.evaluation.musique.training_questions` (the dev decompositions
  without the evaluation questions of the folder's ``dev_eval292.jsonl``, then the train questions); a folder
  is training data only, :func:`load_dataset` refuses it.
- ``hf:NAME[:CONFIG][@SPLIT]`` (a source, not a format): a Hugging Face data set (needs ``datasets`` and network).

**Ids.** A record's own ``id`` / ``query_id`` when it has one, else a name for its row. Committed files are keyed
by two spellings of the same row, and both stay so they keep matching: evaluation folders (``manifest.json``,
``runs/*.jsonl``) pad the row number (``row_ids="padded"``: ``train-0024``, Bamboogle ``bamboogle-007``), the
training stages' files (``decompositions.jsonl``, ``screened.jsonl``) do not (``row_ids="plain"``: ``train-24``,
Bamboogle ``<file stem>-7``). Each item knows both its names (:attr:`Item.names`), so :func:`drop_excluded`
keeps an evaluation's items out of training whichever spelling a file uses, for every format.

A row that lacks a field is never dropped silently: loading stops with every bad row listed, unless
``skip_bad=True``, in which case the skipped rows are returned so the caller can record them.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_dod.evaluation import musique
from langchain_dod.parsing import normalize_subquestions

__all__ = [
    "FORMATS",
    "MUSIQUE_STEP_STYLE",
    "MUSIQUE_STEP_STYLES",
    "DatasetError",
    "Item",
    "LoadedDataset",
    "SocraticOptions",
    "detect_format",
    "drop_excluded",
    "gold_from_gsm8k",
    "is_restatement",
    "load_dataset",
    "looks_socratic",
    "read_ids",
    "read_items",
    "select_items",
    "socratic_subquestions",
]

FORMATS = ("gsm8k", "drop", "bamboogle", "jsonl", "musique")
PROFILE_FOR_FORMAT = {
    "gsm8k": "math",
    "drop": "reading",
    "bamboogle": "multihop",
    "jsonl": "math",
    "musique": "multihop",
}
MUSIQUE_STEP_STYLES: tuple[str, ...] = tuple(s for s in musique.STEP_STYLES if s != "fill")
"""The ways a MuSiQue item's sub-questions may write ``#N`` (:data:`~langchain_dod.evaluation.musique.STEP_STYLES`
without ``fill``, which writes in the gold answers: a decomposition must not know them)."""
MUSIQUE_STEP_STYLE = "keep"
"""How a MuSiQue item's sub-questions write a reference to an earlier step's answer: ``"Where was #1 born?"``.

Chosen by measurement (training/MULTIHOP.md, benchmarks/results/musique/bm25.md: BM25 recall of the gold steps
over the pooled 292-question corpus): keeping ``#N`` retrieves as well as dropping it or writing "it", "that" or
"that person", and it is the one form the iterative retriever fills without guessing (``resolve_step``)."""
RowIds = Literal["padded", "plain"]


class DatasetError(ValueError):
    """The data file cannot be read as the requested format, or rows lack required fields."""


@dataclass(frozen=True)
class Item:
    """One question with its gold answers, optional passage and optional sub-questions (GSM8K Socratic, JSONL).

    ``answers`` holds the acceptable gold answers; each is a tuple of spans (one span except for DROP's
    multi-span answers); empty when the data has no gold (allowed for training data without answers).
    """

    id: str
    question: str
    answers: tuple[tuple[str, ...], ...]
    context: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    subquestions: list[str] | None = field(default=None, compare=False, hash=False)
    aliases: frozenset[str] = field(default=frozenset(), compare=False, hash=False)
    """Other ids committed files use for this row (the other row-id spelling, see the module docstring)."""

    @property
    def answer(self) -> str | None:
        """The first gold answer as one string (spans joined by ``, ``); ``None`` when there is no gold."""
        return ", ".join(self.answers[0]) if self.answers else None

    @property
    def names(self) -> frozenset[str]:
        """Every id this item answers to: its own and its aliases."""
        return self.aliases | {self.id}

    def to_dict(self) -> dict[str, Any]:
        """The item as a generic-JSONL record (``id``, ``question``, ``answer``, ``context``, ``subquestions``)."""
        subquestions = list(self.subquestions) if self.subquestions is not None else None
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "context": self.context,
            "subquestions": subquestions,
        }


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


# -- GSM8K gold answers and Socratic sub-questions ----------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


@dataclass(frozen=True)
class SocraticOptions:
    """How GSM8K Socratic steps become sub-questions: the one rule, for training data and the oracle alike.

    The sub-questions were written by a model (GSM8K's README says so), not in the shape the paper's decomposer
    writes: there are 2–11 of them and the last one usually restates the main question ("How many bolts in
    total does it take?"), which tells the solver nothing. ``cap``: keep at most this many sub-questions.
    ``overflow``: what to do with an example that has more than ``cap`` after the other rules: ``"first"``
    keeps the first ``cap``, ``"ends"`` keeps the first ``cap - 1`` and the last one (the step that reaches the
    answer), ``"skip"`` drops the example. ``drop_restatement``: drop a final sub-question that restates the
    main question, judged by the share of its words found in the question's last sentence
    (``>= restatement_threshold``).
    """

    cap: int = 3
    overflow: Literal["first", "ends", "skip"] = "first"
    drop_restatement: bool = True
    restatement_threshold: float = 0.7

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ValueError(f"cap must be at least 1, got {self.cap}")
        if self.overflow not in ("first", "ends", "skip"):
            raise ValueError(f"overflow must be 'first', 'ends' or 'skip', got {self.overflow!r}")
        if not 0.0 < self.restatement_threshold <= 1.0:
            raise ValueError(f"restatement_threshold must be in (0, 1], got {self.restatement_threshold}")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("'s", "").replace("’s", ""))


def is_restatement(subquestion: str, question: str, threshold: float = 0.7) -> bool:
    """Whether ``subquestion`` mostly repeats the question's last sentence (what is being asked)."""
    sentences = [s for s in _SENTENCE.split(question.strip()) if s.strip()]
    asked = [s for s in sentences if "?" in s] or sentences
    target = set(_words(asked[-1])) if asked else set()
    words = _words(subquestion)
    if not words or not target:
        return False
    return sum(w in target for w in words) / len(words) >= threshold


def gold_from_gsm8k(answer: str) -> str | None:
    """The number after the last ``####`` of a GSM8K answer, without thousands separators or ``$``; else ``None``."""
    if "####" not in answer:
        return None
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    return gold or None


def looks_socratic(answer: Any) -> bool:
    """Whether a GSM8K answer is written in Socratic steps (``SUB-QUESTION ** step``)."""
    return isinstance(answer, str) and " ** " in answer


def socratic_subquestions(question: str, answer: str, options: SocraticOptions = SocraticOptions()) -> list[str] | None:
    """The normalised sub-questions of one Socratic example; ``None`` when ``overflow="skip"`` drops it.

    The same rule serves the training data (teacher ``given``) and the evaluation's oracle
    (:class:`~langchain_dod.evaluation.oracle.SocraticOracle`), so the oracle measures exactly the
    decompositions an adapter could learn from. Raises ``ValueError`` when the answer has no
    ``SUB-QUESTION ** step`` lines (not the Socratic format).
    """
    steps = [line for line in answer.splitlines() if line.strip() and not line.startswith("####")]
    raw = [line.split(" ** ", 1)[0].strip() for line in steps if " ** " in line]
    if not raw:
        raise ValueError("no 'SUB-QUESTION ** step' lines: this is not a GSM8K Socratic answer")
    subquestions = normalize_subquestions(raw)
    if (
        options.drop_restatement
        and len(subquestions) > 1
        and is_restatement(subquestions[-1], question, options.restatement_threshold)
    ):
        subquestions = subquestions[:-1]
    if len(subquestions) > options.cap:
        if options.overflow == "skip":
            return None
        if options.overflow == "ends":
            return subquestions[: options.cap - 1] + subquestions[-1:]
        subquestions = subquestions[: options.cap]
    return subquestions


# -- reading files ------------------------------------------------------------------------------------------


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
    """Guess the format from the extension, the file name and the first row's keys; a folder is MuSiQue."""
    if path.is_dir():
        return "musique"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "bamboogle"
    if suffix == ".json":
        with path.open(encoding="utf-8") as fh:
            head = fh.read(4096)
        return "musique" if '"question_decomposition"' in head else "drop"
    if suffix not in (".jsonl", ".ndjson"):
        raise DatasetError(
            f"Cannot tell the format of {path.name!r} from its extension; pass fmt= one of {', '.join(FORMATS)} "
            "(--format on the command line)."
        )
    first = next((row for _, row in _read_jsonl(path) if isinstance(row, dict)), None)
    if first is None:
        raise DatasetError(f"{path} holds no JSON object rows.")
    keys = {k.lower() for k in first}
    if "question_decomposition" in keys:
        return "musique"
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


@dataclass(frozen=True)
class _Reading:
    """How to read one file: row-id spelling, whether a gold answer is required, Socratic rule, MuSiQue steps."""

    row_ids: RowIds = "padded"
    require_answer: bool = True
    socratic: SocraticOptions | None = None
    step_style: str = MUSIQUE_STEP_STYLE

    def row_item(self, prefix: str, row: int, width: int, **fields: Any) -> Item:
        """An item named after its row; ``plain_prefix`` (default ``prefix``) names it in the plain spelling."""
        plain = f"{fields.pop('plain_prefix', prefix)}-{row}"
        padded = f"{prefix}-{row:0{width}d}"
        ident, alias = (padded, plain) if self.row_ids == "padded" else (plain, padded)
        return Item(ident, aliases=frozenset({alias} - {ident}), **fields)


def _objects(path: Path, bad: list[str]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(row index, line number, object)`` of each JSONL row; a row that is not a JSON object goes to ``bad``."""
    for index, (number, row) in enumerate(_read_jsonl(path)):
        if isinstance(row, Exception):
            bad.append(f"line {number}: not JSON ({row})")
        elif not isinstance(row, dict):
            bad.append(f"line {number}: not a JSON object")
        else:
            yield index, number, row


def _gsm8k(path: Path, how: _Reading) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    bad: list[str] = []
    for index, number, row in _objects(path, bad):
        question = _text(row.get("question"))
        answer = row.get("answer")
        if question is None or not isinstance(answer, str) or "####" not in answer:
            bad.append(f"line {number}: needs 'question' and an 'answer' ending in '#### <number>'")
            continue
        gold = gold_from_gsm8k(answer)
        if gold is None:
            bad.append(f"line {number}: empty gold answer after '####'")
            continue
        subquestions = None
        if how.socratic is not None:
            try:
                subquestions = socratic_subquestions(question, answer, how.socratic)
            except ValueError as err:
                bad.append(f"line {number}: {err}")
                continue
            if subquestions is None:  # overflow="skip"
                continue
        items.append(
            how.row_item(
                path.stem,
                index,
                4,
                question=question,
                answers=((gold,),),
                meta={"reasoning": answer},
                subquestions=subquestions,
            )
        )
    return items, bad


def _drop_answer(answer: Any) -> tuple[str, ...] | None:
    """One DROP answer object → its spans (a number and a date each become one span)."""
    if not isinstance(answer, dict):
        return None
    number = _text(answer.get("number"))
    if number:
        return (number,)
    spans = tuple(s.strip() for s in answer.get("spans") or [] if isinstance(s, str) and s.strip())
    if spans:
        return spans
    date = answer.get("date") or {}
    text = " ".join(str(date.get(k) or "").strip() for k in ("day", "month", "year")).strip()
    return (" ".join(text.split()),) if text else None


def _drop(path: Path, how: _Reading) -> tuple[list[Item], list[str]]:
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
                qa = qa if isinstance(qa, dict) else {}
                qid = str(qa.get("query_id") or f"{pid}-{k}")
                question = _text(qa.get("question"))
                golds = [_drop_answer(qa.get("answer"))] + [_drop_answer(a) for a in qa.get("validated_answers") or []]
                unique = tuple(dict.fromkeys(g for g in golds if g))
                if question is None or (how.require_answer and not unique):
                    bad.append(f"query {qid}: needs 'question' and a non-empty 'answer' (number, date or spans)")
                    continue
                items.append(Item(qid, question, unique, context=passage))
        return items, bad
    for _, number, row in _objects(path, bad):
        spans = (row.get("answers_spans") or {}).get("spans") if isinstance(row.get("answers_spans"), dict) else None
        gold = tuple(s.strip() for s in spans or [] if isinstance(s, str) and s.strip())
        question, passage = _text(row.get("question")), _text(row.get("passage"))
        if question is None or passage is None or (how.require_answer and not gold):
            bad.append(f"line {number}: needs 'passage', 'question' and 'answers_spans': {{'spans': [...]}}")
            continue
        ident = str(row.get("query_id") or f"{path.stem}-{number}")
        items.append(Item(ident, question, (gold,) if gold else (), context=passage))
    return items, bad


def _bamboogle(path: Path, how: _Reading) -> tuple[list[Item], list[str]]:
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
        if question is None or (how.require_answer and answer is None):
            bad.append(f"row {number}: needs 'Question' and 'Answer'")
            continue
        answers = ((answer,),) if answer else ()
        if row.get("id"):
            items.append(Item(str(row["id"]), question, answers))
        else:
            items.append(
                how.row_item("bamboogle", index, 3, plain_prefix=path.stem, question=question, answers=answers)
            )
    return items, bad


def _subquestions(value: Any) -> list[str] | None:
    if value is None or (isinstance(value, list) and all(isinstance(s, str) for s in value)):
        return value
    raise TypeError


def _generic(path: Path, how: _Reading) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    bad: list[str] = []
    for index, number, row in _objects(path, bad):
        question, answer = _text(row.get("question")), row.get("answer")
        alternatives = answer if isinstance(answer, list) else [answer]
        golds = tuple((t,) for t in (_text(a) for a in alternatives) if t)
        context = row.get("context")
        if question is None or (how.require_answer and not golds):
            bad.append(f"line {number}: needs 'question' and 'answer' (a string, number or list of them)")
            continue
        if context is not None and not isinstance(context, str):
            bad.append(f"line {number}: 'context' must be a string")
            continue
        try:
            subquestions = _subquestions(row.get("subquestions"))
        except TypeError:
            bad.append(f"line {number}: 'subquestions' must be a list of strings")
            continue
        fields: dict[str, Any] = {
            "question": question,
            "answers": golds,
            "context": context or None,
            "subquestions": subquestions,
        }
        if row.get("id") is not None:
            items.append(Item(str(row["id"]), **fields))
        else:
            items.append(how.row_item(path.stem, index, 4, **fields))
    return items, bad


def _musique(path: Path, how: _Reading) -> tuple[list[Item], list[str]]:
    if how.step_style not in MUSIQUE_STEP_STYLES:
        raise DatasetError(
            f"Unknown MuSiQue step_style {how.step_style!r}; choose one of {', '.join(MUSIQUE_STEP_STYLES)}."
        )
    try:
        # a folder: its evaluation questions (dev_eval292.jsonl, required) are left out by the MuSiQue module
        questions = musique.training_questions(path) if path.is_dir() else musique.load_decompositions(path)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path} (musique): {err}") from None
    items = [
        Item(
            q.id,
            q.question,
            tuple((answer,) for answer in dict.fromkeys((q.answer, *q.aliases)) if answer.strip()),
            meta={"hops": q.hops},
            subquestions=musique.gold_queries(q, how.step_style),
        )
        for q in questions
    ]
    return items, []


def _huggingface(name: str) -> tuple[list[Item], list[str]]:
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise DatasetError(f"Loading {name!r} needs the 'datasets' package: pip install datasets") from None
    spec, _, split = name.removeprefix("hf:").partition("@")
    path, _, config = spec.partition(":")
    try:
        rows = datasets.load_dataset(path, config or None, split=split or "train")
    except Exception as err:  # offline, unknown name, ...
        raise DatasetError(f"Could not load Hugging Face data set {name!r}: {err}") from None
    items, bad = [], []
    for index, row in enumerate(rows):
        answer = row.get("answer")
        if isinstance(answer, dict):  # DROP-style answers on the hub
            gold = ", ".join(_drop_answer(answer) or ()) or None
        else:
            gold = gold_from_gsm8k(answer) if isinstance(answer, str) and "####" in answer else _text(answer)
        question = _text(row.get("question"))
        if question is None:
            bad.append(f"row {index}: missing or empty 'question'")
            continue
        ident = str(row.get("id") or row.get("query_id") or f"{path.replace('/', '_')}-{index}")
        context = _text(row.get("context") or row.get("passage"))
        items.append(Item(ident, question, ((gold,),) if gold else (), context=context))
    return items, bad


_READERS: dict[str, Callable[[Path, _Reading], tuple[list[Item], list[str]]]] = {
    "gsm8k": _gsm8k,
    "drop": _drop,
    "bamboogle": _bamboogle,
    "jsonl": _generic,
    "musique": _musique,
}


def read_items(
    source: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    row_ids: RowIds = "padded",
    require_answer: bool = True,
    socratic: SocraticOptions | None = None,
    step_style: str = MUSIQUE_STEP_STYLE,
) -> tuple[str, list[Item], list[str]]:
    """``(fmt, items, bad rows)`` of a file (``hf:NAME``, a MuSiQue folder), in file order; a repeated id: first wins.

    ``row_ids`` spells the ids of rows without their own (module docstring); ``require_answer`` makes a row
    without a gold answer a bad row; ``socratic`` turns GSM8K Socratic steps into sub-questions (``gsm8k``
    only); ``step_style`` says how MuSiQue sub-questions write ``#N`` (``musique`` only). Raises
    :class:`DatasetError` for a missing file, an unknown format or a file that is not the format.
    """
    if str(source).startswith("hf:"):
        fmt, (items, bad) = "hf", _huggingface(str(source))
    else:
        path = Path(source).expanduser()
        if path.is_dir() and fmt not in ("auto", "musique"):
            raise DatasetError(f"{path} is a folder; only the musique format reads a folder (pass a file for {fmt}).")
        if not (path.is_file() or path.is_dir()):
            raise DatasetError(f"Data set file not found: {path}.")
        if fmt == "auto":
            fmt = detect_format(path)
        if fmt not in _READERS:
            raise DatasetError(f"Unknown data set format {fmt!r}; choose one of {', '.join(FORMATS)} or auto.")
        how = _Reading(row_ids, require_answer, socratic if fmt == "gsm8k" else None, step_style)
        items, bad = _READERS[fmt](path, how)
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.id in seen:
            bad.append(f"duplicate id {item.id!r} (the first row with it is kept)")
            continue
        seen.add(item.id)
        unique.append(item)
    return fmt, unique, bad


def bad_rows_message(where: str, bad: list[str]) -> str:
    """``where: N bad row(s): ...`` with the first five listed."""
    shown = "; ".join(bad[:5]) + (f"; … {len(bad) - 5} more" if len(bad) > 5 else "")
    return f"{where}: {len(bad)} bad row(s): {shown}."


def load_dataset(path: str | Path, fmt: str = "auto", *, skip_bad: bool = False) -> LoadedDataset:
    """Read ``path`` as ``fmt`` (``auto`` guesses). Bad rows raise :class:`DatasetError` unless ``skip_bad``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DatasetError(
            f"{path} is a folder; evaluate one file (a MuSiQue folder gives the training questions, "
            f"its evaluation questions left out: name its {musique.EVAL_FILE} instead)."
        )
    fmt, items, bad = read_items(path, fmt)
    if bad and not skip_bad:
        raise DatasetError(
            bad_rows_message(f"{path} ({fmt})", bad) + " Fix them, or pass skip_bad=True "
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


# -- keeping items out ---------------------------------------------------------------------------------------


def read_ids(paths: Iterable[str | os.PathLike[str]]) -> set[str]:
    """The ids named in the files: evaluation ``manifest.json`` files (their ``ids``) or JSONL records with an ``id``.

    A JSONL may be an evaluation run's results, or any list of records.
    """
    from langchain_dod.jsonl_store import JsonlError
    from langchain_dod.jsonl_store import read_jsonl as read_records_list

    ids: set[str] = set()
    for item in paths:
        path = Path(item).expanduser()
        if not path.is_file():
            raise DatasetError(f"Exclude file {path} does not exist; name an eval manifest.json or a JSONL with ids.")
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise DatasetError(f"Exclude file {path} is not valid JSON: {err}.") from None
            found = data.get("ids") if isinstance(data, dict) else None
            if not (isinstance(found, list) and all(isinstance(i, str) for i in found)):
                raise DatasetError(f"Exclude file {path} has no 'ids' list; is it an evaluation manifest.json?")
        else:
            try:
                records = read_records_list(path)
            except JsonlError as err:
                raise DatasetError(str(err)) from None
            found = [str(r["id"]) for r in records if isinstance(r, dict) and "id" in r]
            if not found:
                raise DatasetError(f"Exclude file {path} holds no records with an 'id'.")
        ids.update(found)
    return ids


def drop_excluded(items: Iterable[Item], ids: set[str]) -> list[Item]:
    """The items none of whose names (:attr:`Item.names`, both row-id spellings) is in ``ids``."""
    return [item for item in items if not (item.names & ids)]
