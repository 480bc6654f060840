"""The training stages' view of the one data layer (:mod:`langchain_dod.evaluation.datasets`).

Formats (``format=`` or guessed from the file) are the data layer's, plus ``socratic``: GSM8K Socratic JSONL,
whose steps become each example's sub-questions by the data layer's rule (:class:`SocraticOptions`; teacher
``given`` writes them out as decompositions). Sources may also be ``hf:NAME[:CONFIG][@SPLIT]``.

``musique``: MuSiQue gold decompositions, the gold steps written as questions become the sub-questions, each
``#N`` (the answer of step N) written as ``step_style`` says (default ``keep``: see :data:`MUSIQUE_STEP_STYLE`).
The source is a folder holding ``dev_decompositions2417.json``, ``train100.json`` and ``dev_eval292.jsonl`` (the
2,417 answerable dev questions minus the 292 evaluation questions, then the 100 train questions), or one MuSiQue
``.json``/``.jsonl`` file (name its evaluation ids in ``exclude=`` yourself). See training/MULTIHOP.md.

Ids are the record's own ``id``/``query_id`` when it has one, else its row in the plain spelling
(``train-24``: what the committed training outputs are keyed by; the evaluation pads it, ``train-0024``), so
they are stable across reruns of the same file: resumable stages key their outputs by them. ``exclude=``
names evaluation ``manifest.json`` files (or JSONL with ids) whose items stay out of training; the data layer
matches either spelling, for every format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from langchain_dod.evaluation.datasets import (
    MUSIQUE_STEP_STYLE,
    MUSIQUE_STEP_STYLES,
    DatasetError,
    Item,
    SocraticOptions,
    bad_rows_message,
    detect_format,
    drop_excluded,
    looks_socratic,
    read_ids,
    read_items,
)
from training.errors import TrainingError
from training.settings import setting

__all__ = [
    "FORMATS",
    "MUSIQUE_STEP_STYLE",
    "DataConfig",
    "Example",
    "Item",
    "SocraticOptions",
    "excluded_ids",
    "guess_format",
    "load_examples",
]

FORMATS = ("gsm8k", "socratic", "jsonl", "bamboogle", "drop", "musique")


class Example(Item):
    """An :class:`Item` made by hand with one gold answer: ``Example(id, question, answer, context, subquestions)``.

    :func:`load_examples` returns plain :class:`Item` objects; they have the same attributes (``answer`` is the
    first gold answer, ``None`` without one).
    """

    def __init__(
        self,
        id: str,  # noqa: A002 - the field's name
        question: str,
        answer: str | None = None,
        context: str | None = None,
        subquestions: list[str] | None = None,
    ) -> None:
        super().__init__(id, question, ((answer,),) if answer else (), context, subquestions=subquestions)


def guess_format(path: Path) -> str:
    """The format of a file (or folder: ``musique``): the data layer's guess, ``socratic`` for GSM8K in steps."""
    try:
        fmt = detect_format(path)
    except DatasetError as err:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            return "jsonl"  # no JSON object in it: loading says what is wrong, row by row
        raise TrainingError(f"{err} Formats: {', '.join(FORMATS)}.") from None
    if fmt == "gsm8k":
        with open(path, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "{}")
        if looks_socratic(json.loads(first).get("answer")):
            return "socratic"
    return fmt


def excluded_ids(paths: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Ids to keep out of training (from eval ``manifest.json`` files or JSONL with ids), as the files spell them."""
    try:
        return read_ids(paths)
    except DatasetError as err:
        raise TrainingError(str(err)) from None


def load_examples(
    source: str | os.PathLike[str],
    format: str | None = None,  # noqa: A002 - the natural name for a CLI option
    *,
    limit: int | None = None,
    offset: int = 0,
    socratic: SocraticOptions | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
    step_style: str = MUSIQUE_STEP_STYLE,
) -> list[Item]:
    """Load a data set (see the module docstring); at most ``limit`` examples, in file order.

    Examples named in the ``exclude`` files are skipped before ``offset`` and ``limit`` count, so ``limit=800``
    gives 800 examples none of which is an evaluation item, and ``offset=400, limit=400`` is the second half of
    them (a shard for a second process). ``step_style``: how the ``musique`` format writes ``#N`` references
    (see :data:`MUSIQUE_STEP_STYLE`).

    Raises :class:`TrainingError` for a missing file, an unknown format, a bad record (listed), duplicate ids,
    or an empty result.
    """
    if offset < 0:
        raise TrainingError(f"offset must be 0 or more, got {offset}.")
    skip = excluded_ids([exclude] if isinstance(exclude, (str, os.PathLike)) else exclude)
    text = str(source)
    path = Path(source).expanduser()
    if not text.startswith("hf:") and not (path.is_file() or (path.is_dir() and format in (None, "musique"))):
        raise TrainingError(
            f"Data file {source} does not exist. Pass a GSM8K/JSONL/CSV/DROP/MuSiQue file, a MuSiQue folder or hf:NAME."
        )
    fmt = format or ("auto" if text.startswith("hf:") else guess_format(path))
    if fmt not in FORMATS and fmt != "auto":
        raise TrainingError(f"Unknown data format {fmt!r}; choose one of {', '.join(FORMATS)} (or hf:NAME).")
    options = (socratic or SocraticOptions()) if fmt == "socratic" else None
    try:
        _, items, bad = read_items(
            source,
            "gsm8k" if fmt == "socratic" else fmt,
            row_ids="plain",
            require_answer=False,
            socratic=options,
            step_style=step_style,
        )
    except DatasetError as err:
        raise TrainingError(str(err)) from None
    if bad:
        raise TrainingError(bad_rows_message(f"{source} ({fmt})", bad) + " Fix them: outputs are keyed by id.")
    kept = drop_excluded(items, skip)
    out = kept[offset:][:limit] if limit is not None else kept[offset:]
    if not out:
        hint = (
            " (all of them excluded)" if skip and items and not kept else f" after the first {offset}" if offset else ""
        )
        raise TrainingError(f"{source} holds no examples{hint}; check the file, its format and exclude.")
    return out


@dataclass
class DataConfig:
    """Which examples a run uses: the ``[data]`` table of a distill config and ``dod-train generate``'s data flags."""

    source: str = setting(
        flag="--data",
        help="GSM8K/Socratic/generic JSONL, Bamboogle CSV, DROP JSON, a MuSiQue folder or file, or hf:NAME",
    )
    format: str | None = setting(None, choices=FORMATS)
    limit: int | None = setting(None, type=int, help="at most this many examples, counted after --exclude")
    offset: int = setting(0, help="skip the first N (after --exclude): a shard for a 2nd process")
    exclude: list[str] = setting(
        [],
        action="append",
        metavar="FILE",
        help="skip the ids in an eval manifest.json or a JSONL of records with ids (repeatable): keep test items out",
    )
    cap: int = setting(3, help="keep at most this many sub-questions (default 3)")
    overflow: str = setting(
        "first",
        choices=("first", "ends", "skip"),
        help="more than --cap: keep the first ones, the first cap-1 and the last, or skip the example",
    )
    drop_restatement: bool = setting(
        True,
        flag="--keep-restatement",
        action="store_false",
        help="keep a final sub-question that restates the main question (dropped by default)",
    )
    restatement_threshold: float = setting(0.7)
    step_style: str = setting(
        MUSIQUE_STEP_STYLE,
        choices=MUSIQUE_STEP_STYLES,
        help="musique: how a step writes the answer of step N (default keep: '#N'; see training/MULTIHOP.md)",
    )

    SOCRATIC = ("cap", "overflow", "drop_restatement", "restatement_threshold")
    """The settings of the Socratic normalisation (format socratic), a group of their own on the command line."""

    def socratic(self) -> SocraticOptions:
        """The Socratic normalisation these settings ask for."""
        return SocraticOptions(self.cap, self.overflow, self.drop_restatement, self.restatement_threshold)  # type: ignore[arg-type]

    def load(self) -> list[Item]:
        """The examples (:func:`load_examples`)."""
        return load_examples(
            self.source,
            self.format,
            limit=self.limit,
            offset=self.offset,
            socratic=self.socratic(),
            exclude=self.exclude,
            step_style=self.step_style,
        )
