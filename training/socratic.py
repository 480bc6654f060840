"""Turn GSM8K "Socratic" decompositions into our sub-question format.

Each step of a Socratic answer reads ``SUB-QUESTION ** worked step``; the last line is ``#### ANSWER``.
The sub-questions were written by a model (GSM8K's README says so), not by people, and not in the shape the
paper's decomposer writes: there are 2–11 of them (we cap at ``cap``, the paper's best is 3) and the last one
usually restates the main question ("How many bolts in total does it take?"), which tells the solver nothing.
Both choices are options (:class:`SocraticOptions`) so they can be decided by measurement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from langchain_dod.parsing import normalize_subquestions

__all__ = ["SocraticOptions", "gold_from_gsm8k", "is_restatement", "socratic_subquestions"]

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")


@dataclass(frozen=True)
class SocraticOptions:
    """How to normalise Socratic steps.

    ``cap``: keep at most this many sub-questions. ``overflow``: what to do with an example that has more than
    ``cap`` after the other rules: ``"first"`` keeps the first ``cap``, ``"ends"`` keeps the first ``cap - 1``
    and the last one (the step that reaches the answer), ``"skip"`` drops the example.
    ``drop_restatement``: drop a final sub-question that restates the main question, judged by the share of its
    words found in the question's last sentence (``>= restatement_threshold``).
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
    return [w for w in _WORD.findall(text.lower().replace("'s", "").replace("’s", ""))]


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
    """The number after ``####`` in a GSM8K answer, without thousands separators; ``None`` if absent."""
    if "####" not in answer:
        return None
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "")
    return gold or None


def socratic_subquestions(question: str, answer: str, options: SocraticOptions = SocraticOptions()) -> list[str] | None:
    """The normalised sub-questions of one Socratic example; ``None`` when ``overflow="skip"`` drops it.

    Raises ``ValueError`` when the answer has no ``SUB-QUESTION ** step`` lines (not the Socratic format).
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
