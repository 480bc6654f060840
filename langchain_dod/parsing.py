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

__all__ = ["extract_answer", "last_number", "normalize_subquestions", "parse_subquestions"]

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


_ANSWER = re.compile(re.escape(ANSWER_MARKER).replace(r"\:", ":?"), re.I)
_ANSWER_LOOSE = re.compile(r"(?:final answer|answer)\s*(?:is)?\s*[:=]", re.I)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MATH_DELIMS = re.compile(r"^(\\\[|\\\()\s*|\s*(\\\]|\\\))$")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The last number in ``text`` without thousands separators or currency, or ``None``."""
    found = _NUMBER.findall(text or "")
    if not found:
        return None
    value = found[-1].replace(",", "").replace("$", "")
    return value[:-2] if value.endswith(".0") else value


def extract_answer(text: str) -> str | None:
    """The final answer from a solver's text.

    Order: the last "The answer is: X" line; else the last "answer: X" / "final answer is X"; else the
    last number; else ``None`` (callers count that as unanswered, never crash).
    """
    if not text:
        return None
    for pattern in (_ANSWER, _ANSWER_LOOSE):
        matches = list(pattern.finditer(text))
        if matches:
            answer = _answer_after(text[matches[-1].end() :])
            if answer is not None:
                return answer
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip() or None
    return last_number(text)


def _answer_after(rest: str) -> str | None:
    """The answer that follows a marker: on the same line, or (math display, ``\\boxed{}``) on the next ones."""
    boxed = _BOXED.search(rest[:300])
    if boxed:
        return boxed.group(1).strip() or None
    for line in rest.splitlines():
        answer = _MATH_DELIMS.sub("", line.strip().strip("*").strip()).strip().rstrip(".").strip()
        if len(answer) > 2 and answer[0] == answer[-1] == "$":  # inline math $...$, not a price
            answer = answer.strip("$").strip()
        if answer:
            return answer
    return None
