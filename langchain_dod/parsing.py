"""Read sub-questions and final answers out of free text from models we do not control.

Our local decomposer is grammar-constrained and never needs this. Hosted or other local models reply in
every shape: JSON (fenced or not), numbered lists, bullets, prose with questions in it, "No decomposition
needed". :func:`parse_subquestions` accepts all of them; when a reply holds lines with a question mark, only
those are kept (the paper's rule), so stray commentary is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from langchain_dod.prompts import ANSWER_MARKER

__all__ = ["extract_answer", "last_number", "normalize_subquestions", "parse_subquestions", "read_answer"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_NONE = re.compile(
    r"^\W*(no (further )?(decomposition|sub-?questions?)( is| are)?( needed| required| necessary)?"
    r"|none|n/?a|not needed|no need)\W*$",
    re.I,
)
_MARKER = re.compile(
    r"^\s*(?:(?:sub-?question|question|step|q)\s*\d*\s*[:.)-]|\d+\s*[.):-]|\(\d+\)|[-*•·]|#+)\s*", re.I
)
_KEYS = ("subquestions", "sub_questions", "sub-questions", "questions", "steps")


def normalize_subquestions(items: Iterable[object], max_subquestions: int | None = None) -> list[str]:
    """Strip, drop empties and non-strings, de-duplicate (case-insensitively) and cap."""
    seen: set[str] = set()
    out: list[str] = []
    for item in items:
        if isinstance(item, dict):  # {"question": ...} items from chatty models
            item = next((v for k, v in item.items() if "question" in str(k).lower()), None)
        if not isinstance(item, str):
            continue
        text = " ".join(_MARKER.sub("", item.strip()).split())
        if not text or text.lower() in seen:
            continue
        seen.add(text.lower())
        out.append(text)
    return out if max_subquestions is None else out[:max_subquestions]


def _from_json(text: str) -> list[object] | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for opener, closer in (("{", "}"), ("[", "]")):
            start, end = candidate.find(opener), candidate.rfind(closer)
            if start == -1 or end <= start:
                continue
            try:
                value = json.loads(candidate[start : end + 1])
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                return value
            if isinstance(value, dict):
                for key in _KEYS:
                    if isinstance(value.get(key), list):
                        return value[key]
                for item in value.values():
                    if isinstance(item, list):
                        return item
    return None


def parse_subquestions(text: str, max_subquestions: int | None = None) -> list[str]:
    """Parse a decomposer's free-text reply into at most ``max_subquestions`` sub-questions.

    Returns ``[]`` for an explicit "no decomposition" reply and for replies with nothing usable.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_subquestions expects a string, got {type(text).__name__}")
    items = _from_json(text)
    if items is not None:
        return normalize_subquestions(items, max_subquestions)
    lines = [line.strip() for line in _FENCE.sub(lambda m: m.group(1), text).splitlines()]
    lines = [line for line in lines if line]
    if not lines or (len(lines) == 1 and _NONE.match(lines[0])):
        return []
    questions = [line for line in lines if "?" in line]
    if questions:
        # a line may hold several questions ("What is A? What is B?"): split after each '?'
        split = [part.strip() + "?" for line in questions for part in line.split("?")[:-1] if part.strip()]
        return normalize_subquestions(split, max_subquestions)
    listed = [line for line in lines if _MARKER.match(line)]
    if listed:
        return normalize_subquestions(listed, max_subquestions)
    return []


# The prompt's marker with its colon optional ("The answer is 18" is common). Without the colon the phrase also
# occurs in reasoning ("the answer is not 12"), so there it counts only when a number (or \boxed{}) follows.
_ANSWER = re.compile(re.escape(ANSWER_MARKER.rstrip(":")) + r"\b\s*(:)?", re.I)
_ANSWER_LOOSE = re.compile(r"(?:final answer|answer)\s*(?:is)?\s*[:=]", re.I)
_BOXED = re.compile(r"\\boxed\s*\{")
_MATH_DELIMS = re.compile(r"^(\\\[|\\\()\s*|\s*(\\\]|\\\))$")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_OPENS_WITH_NUMBER = re.compile(r"[-−]?[$€£¥]?\s?[-−]?\.?\d")
# An answer that opens with a number ends at a bracketed remark or the end of its sentence: what follows
# ("31 pens (3 boxes of 12, minus 5)", "18 apples. Check: 3*6=18") is working whose numbers are not the answer.
_NUMBER_ANSWER_END = re.compile(r"\s\(|[.!?](?:\s|$)")


def last_number(text: str) -> str | None:
    """The last number in ``text`` without thousands separators or currency, or ``None``."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    value = found[-1].replace(",", "").replace("$", "")
    return value[:-2] if value.endswith(".0") else value


def extract_answer(text: str) -> str | None:
    r"""The final answer from a solver's text.

    Order: the last "The answer is: X" (colon optional when X is a number); else the last "answer: X" /
    "final answer is X"; else the last ``\boxed{X}``; else the last number; else ``None`` (callers count
    that as unanswered, never crash). An X that opens with a number stops before a parenthesis or the end
    of its sentence.
    """
    if not text:
        return None
    for pattern in (_ANSWER, _ANSWER_LOOSE):
        for match in reversed(list(pattern.finditer(text))):
            need_number = pattern is _ANSWER and not match.group(1)
            answer = _answer_after(text[match.end() :], need_number)
            if answer is not None:
                return answer
    boxed = _boxed(text)
    if boxed:
        return boxed[-1] or None
    return last_number(text)


def _boxed(text: str) -> list[str]:
    r"""The contents of every ``\boxed{...}``, nested braces included (``\boxed{\frac{1}{2}}``)."""
    found = []
    for match in _BOXED.finditer(text):
        depth = 1
        for end in range(match.end(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                found.append(text[match.end() : end].strip())
                break
    return found


def _answer_after(rest: str, need_number: bool = False) -> str | None:
    r"""The answer that follows a marker: on the same line, or (math display, ``\boxed{}``) on the next ones."""
    boxed = _boxed(rest[:300])
    if boxed:
        return boxed[0] or None
    for line in rest.splitlines():
        answer = _MATH_DELIMS.sub("", line.replace("**", "").strip().strip("*").strip()).strip().rstrip(".").strip()
        if len(answer) > 2 and answer[0] == answer[-1] == "$":  # inline math $...$, not a price
            answer = answer.strip("$").strip()
        if not answer:
            continue
        if _OPENS_WITH_NUMBER.match(answer):
            return _NUMBER_ANSWER_END.split(answer, maxsplit=1)[0].strip()
        return None if need_number else answer
    return None


def read_answer(solution: str, answer_format: str = "text") -> str | None:
    """The final answer of a solver's reply, the one reader of the chains and of the evaluation's re-scoring.

    ``text`` reads its answer line (:func:`extract_answer`); ``program`` computes its arithmetic assignments
    (:func:`langchain_dod.program.program_answer`), else reads an answer line.
    """
    if answer_format == "program":
        from langchain_dod.program import program_answer

        return program_answer(solution) or extract_answer(solution)
    return extract_answer(solution)
