"""References between the steps of a multi-hop plan: ``#N`` ("the answer of step N") and pronouns.

MuSiQue writes a later step as ``"Where was #1 born?"``; a decomposer may instead write ``"Where was he
born?"`` or ``"Where was that person born?"``. A static plan cannot know the answer a reference stands for, so
:func:`rewrite_references` offers the ways a static query can be written (keep ``#N``, drop it, say "it" or
"that", or fill in a known answer), and :func:`resolve_step` is what the iterative retriever does once it has
read the earlier answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

__all__ = ["REFERENCE", "ReferenceMode", "has_reference", "resolve_step", "rewrite_references", "tidy"]

REFERENCE = re.compile(r"#\s?(\d+)")
"""``#N``: the answer of step N (1-based). MuSiQue also writes ``#1 ?`` with a space before the mark."""

ReferenceMode = Literal["keep", "drop", "it", "that", "fill"]
REFERENCE_MODES: tuple[str, ...] = ("keep", "drop", "it", "that", "fill")

# A pronoun that stands for the previous step's answer. Only unambiguous ones: "her" may be an object or a
# possessive, "that" alone is usually a relative pronoun ("the city that hosts ..."), so both are left alone.
_PRONOUN = re.compile(r"\b(it|he|she|him|they|them)\b", re.I)
_POSSESSIVE = re.compile(r"\b(its|his|their)\b", re.I)
# "in that year", "was this person": a demonstrative with its noun. Only after a preposition or an auxiliary
# verb (or at the start), because after a noun "that" is a relative pronoun ("the city that hosts ..."); and
# the next word must be a noun, not one that shows a conjunction ("that is", "that the").
_DEMONSTRATIVE = re.compile(
    r"(?:^|\b(?:in|of|on|at|to|by|for|from|with|about|into|is|was|are|were|did|does|do)\s+)"
    r"((?:that|this|these|those)\s+([A-Za-z]+))\b",
    re.I,
)
_NOT_A_NOUN = frozenset(
    "a an the is was are were be been has have had did does do can could will would may might "
    "of in on at to by for from with as and or not he she it they his her its their which who what".split()
)


def tidy(text: str) -> str:
    """One space between words, none before punctuation (MuSiQue writes ``"in #1 ?"``)."""
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s+([?.,;:!'])", r"\1", text)


def has_reference(text: str) -> bool:
    """True when ``text`` contains a ``#N`` reference."""
    return REFERENCE.search(text) is not None


def rewrite_references(text: str, mode: ReferenceMode = "keep", answers: Mapping[int, str] | None = None) -> str:
    """Write each ``#N`` in ``text`` the way ``mode`` says.

    ``keep`` leaves ``#N``; ``drop`` removes it; ``it`` / ``that`` put that word in its place; ``fill`` puts
    ``answers[N]`` there (a reference with no answer, or an empty one, is kept, so nothing is silently lost).
    """
    if mode not in REFERENCE_MODES:
        raise ValueError(f"Unknown reference mode {mode!r}; choose one of {', '.join(REFERENCE_MODES)}.")
    if mode == "fill" and answers is None:
        raise ValueError("mode='fill' needs answers: a mapping from step number (1-based) to its answer.")

    def replace(match: re.Match[str]) -> str:
        if mode == "keep":
            return f"#{match.group(1)}"
        if mode == "drop":
            return ""
        if mode in ("it", "that"):
            return mode
        answer = (answers or {}).get(int(match.group(1)), "").strip()
        return answer or f"#{match.group(1)}"

    return tidy(REFERENCE.sub(replace, text))


def resolve_step(step: str, answers: Mapping[int, str], previous: str | None = None) -> str:
    """The query to retrieve for ``step`` once earlier answers are known (the iterative retriever's rewrite).

    - ``#N`` references are filled from ``answers`` (1-based step numbers);
    - otherwise the first pronoun or demonstrative phrase ("he", "its", "that year") becomes ``previous``
      (the previous step's answer);
    - otherwise ``previous`` is appended in parentheses: a step such as "Where was the designer born?" names
      no reference but still needs the name for retrieval to find the right passage.

    With no usable answer the step comes back unchanged (tidied).
    """
    if has_reference(step):
        return rewrite_references(step, "fill", answers)
    previous = (previous or "").strip()
    if not previous:
        return tidy(step)
    for match in _DEMONSTRATIVE.finditer(step):
        if match.group(2).lower() not in _NOT_A_NOUN:
            return tidy(step[: match.start(1)] + previous + step[match.end(1) :])
    if possessive := _POSSESSIVE.search(step):
        return tidy(step[: possessive.start()] + f"{previous}'s" + step[possessive.end() :])
    if pronoun := _PRONOUN.search(step):
        return tidy(step[: pronoun.start()] + previous + step[pronoun.end() :])
    return tidy(f"{step} ({previous})")
