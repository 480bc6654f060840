"""Scoring, per data set, of the answer a solver gave (the text ``extract_answer`` pulled from its reply).

- GSM8K ``strict``: the answer reads as exactly one number (``$1,250.00`` → 1250; units, currency and words
  around it are ignored) and that number equals the gold one. ``lenient`` (the paper's): the gold number
  appears as a number token anywhere in the answer, so ``9 * 2 = 18`` counts for 18. Both side by side.
- DROP ``em`` / ``f1`` in the official style: lower case, punctuation and articles dropped, numbers
  normalised (``1,000`` = ``1000.0``), bag-of-token F1 per span with spans aligned one to one, a span F1 of 0
  when the gold has numbers the prediction lacks, the best over the gold alternatives.
- Bamboogle ``acc``: the normalised gold answer is a substring of the normalised prediction (the paper's).
- Generic JSONL: ``em``, ``f1``, ``contains``, and ``strict``/``lenient`` when the gold is a number.

An answer that cannot be parsed scores 0 and is flagged (``parsed=False``); nothing here raises on model
output.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Sequence
from typing import Any

__all__ = [
    "METRICS",
    "PRIMARY_METRIC",
    "bamboogle_accuracy",
    "drop_em_f1",
    "gsm8k_lenient",
    "gsm8k_strict",
    "numbers_in",
    "score",
]

METRICS = {
    "gsm8k": ("strict", "lenient"),
    "drop": ("em", "f1"),
    "bamboogle": ("acc",),
    "jsonl": ("em", "f1", "contains", "strict", "lenient"),
}
PRIMARY_METRIC = {"gsm8k": "strict", "drop": "f1", "bamboogle": "acc", "jsonl": "em"}

_NUMBER = re.compile(
    # not inside a word or after a decimal point, and not after "letter-" ("L-8" is an expression, no number)
    r"(?<![\w.])(?<![^\W\d_][-−])(?P<sign>[-−])?(?:[$€£¥]\s?)?(?P<sign2>[-−])?"
    r"(?:(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?|(?P<bare>\.\d+))"  # 1,250 / 12.5 / .5
    r"(?:[eE](?P<exp>[-+]?\d+))?"  # 1e3
    r"(?:\s+(?P<whole_num>\d+)\s*/\s*(?P<whole_den>\d+)(?![\d.])"  # a mixed number: 1 1/2
    r"|\s*/\s*(?P<den>\d+)(?![\d.]))?"  # a fraction: 3/4
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}")  # \frac{1}{2} → 1/2


def numbers_in(text: str | None) -> list[float]:
    r"""Every number in ``text``, as floats.

    Understood: thousands commas, currency, a leading minus, ``.5``, ``1e3``, fractions ``a/b`` and
    ``\frac{a}{b}``, mixed numbers (``1 1/2`` is 1.5). A number glued to a letter by a hyphen (``L-8``,
    ``COVID-19``) is part of an expression or a name, not a number.
    """
    values = []
    for m in _NUMBER.finditer(_LATEX_FRAC.sub(r"\1/\2", text or "")):
        digits = (m["int"] or "0").replace(",", "") + (m["frac"] or m["bare"] or "")
        value = float(f"{digits}e{m['exp'] or 0}")
        whole = not (m["frac"] or m["bare"] or m["exp"])  # only a whole number takes a fraction after it
        following = None  # a fraction after this number that is not part of it
        if m["den"] and whole:
            if int(m["den"]) == 0:
                continue
            value /= int(m["den"])
        elif m["whole_den"] and int(m["whole_den"]):
            part = int(m["whole_num"]) / int(m["whole_den"])
            if whole and part < 1:  # 1 1/2 is one value; "12 3/2" stays two numbers
                value += part
            else:
                following = part
        values.append(-value if (m["sign"] or m["sign2"]) else value)
        if following is not None:
            values.append(following)
    return values


def _gold_number(gold: str) -> float | None:
    found = numbers_in(gold)
    return found[0] if len(found) == 1 else None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def gsm8k_strict(prediction: str | None, gold: str) -> bool:
    """The answer is one number (repeats allowed, e.g. ``18 ($18)``) equal to the gold number."""
    target = _gold_number(gold)
    found = numbers_in(prediction)
    if target is None or not found:
        return False
    return all(_same(v, found[0]) for v in found) and _same(found[0], target)


def gsm8k_lenient(prediction: str | None, gold: str) -> bool:
    """The gold number appears among the answer's number tokens (the paper's scoring)."""
    target = _gold_number(gold)
    return target is not None and any(_same(v, target) for v in numbers_in(prediction))


# -- DROP, official style ------------------------------------------------------------------------------------

_ARTICLES = {"a", "an", "the"}
_PUNCT = set(string.punctuation)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _norm_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in _PUNCT)
    if _is_number(token):
        token = str(float(token))
    return "" if token in _ARTICLES else token


def _normalize(span: str) -> str:
    tokens = (_norm_token(t) for t in re.split(r"[\s-]+", span))
    return " ".join(t for t in tokens if t)


def _bags(spans: Sequence[str]) -> tuple[list[str], list[set[str]]]:
    normalized = [_normalize(s) for s in spans]
    return normalized, [set(n.split()) for n in normalized]


def _span_f1(pred: set[str], gold: set[str]) -> float:
    gold_numbers = {t for t in gold if _is_number(t)}
    if gold_numbers and not gold_numbers & {t for t in pred if _is_number(t)}:
        return 0.0
    common = len(pred & gold)
    precision = common / len(pred) if pred else 1.0
    recall = common / len(gold) if gold else 1.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _best_alignment(scores: list[list[float]]) -> float:
    """The largest sum of one-to-one pairs (gold rows × predicted columns)."""
    rows, cols = len(scores), len(scores[0])
    try:
        from scipy.optimize import linear_sum_assignment  # optional: exact and fast for many spans
    except ImportError:
        if min(rows, cols) <= 7:
            small, large, by_row = (rows, cols, True) if rows <= cols else (cols, rows, False)
            best = 0.0
            for perm in itertools.permutations(range(large), small):
                total = sum(scores[i][j] if by_row else scores[j][i] for i, j in enumerate(perm))
                best = max(best, total)
            return best
        total, used = 0.0, set()  # greedy beyond 7 spans (never seen in DROP)
        for i in range(rows):
            j = max((j for j in range(cols) if j not in used), key=lambda j: scores[i][j], default=None)
            if j is not None:
                used.add(j)
                total += scores[i][j]
        return total
    r, c = linear_sum_assignment([[-v for v in row] for row in scores])
    return float(sum(scores[i][j] for i, j in zip(r, c, strict=True)))


def _pred_spans(prediction: str, multi: bool) -> list[str]:
    if not multi:
        return [prediction]
    parts = [p for p in re.split(r"\s*(?:;|\||,(?!\d{3}))\s*", prediction) if p.strip()]
    return parts or [prediction]


def drop_em_f1(prediction: str | None, golds: Sequence[Sequence[str]]) -> tuple[float, float]:
    """DROP exact match and F1 of ``prediction`` against the best of ``golds`` (each a tuple of spans)."""
    if not prediction or not prediction.strip():
        return 0.0, 0.0
    best_em, best_f1 = 0.0, 0.0
    for gold in golds:
        pred_norm, pred_bags = _bags(_pred_spans(prediction, len(gold) > 1))
        gold_norm, gold_bags = _bags(gold)
        em = float(set(pred_norm) == set(gold_norm) and len(pred_norm) == len(gold_norm))
        scores = [[_span_f1(p, g) for p in pred_bags] for g in gold_bags]
        f1 = round(_best_alignment(scores) / max(len(gold_bags), len(pred_bags)), 2)
        best_em, best_f1 = max(best_em, em), max(best_f1, f1)
    return best_em, best_f1


def _loose(text: str) -> str:
    text = "".join(ch if ch not in _PUNCT else " " for ch in text.lower())
    return " ".join(t for t in text.split() if t not in _ARTICLES)


def bamboogle_accuracy(prediction: str | None, golds: Sequence[Sequence[str]]) -> bool:
    """The paper's Bamboogle accuracy: a normalised gold answer occurs inside the normalised prediction."""
    if not prediction:
        return False
    pred = f" {_loose(prediction)} "
    return any(f" {_loose(', '.join(g))} " in pred for g in golds if _loose(", ".join(g)))


def score(fmt: str, prediction: str | None, golds: Sequence[Sequence[str]]) -> dict[str, Any]:
    """All metrics of ``fmt`` for one prediction, plus ``parsed`` (whether an answer could be read at all)."""
    gold = ", ".join(golds[0])
    if fmt == "gsm8k":
        return {
            "strict": float(gsm8k_strict(prediction, gold)),
            "lenient": float(gsm8k_lenient(prediction, gold)),
            "parsed": bool(numbers_in(prediction)),
        }
    if fmt == "drop":
        em, f1 = drop_em_f1(prediction, golds)
        return {"em": em, "f1": f1, "parsed": bool(prediction and prediction.strip())}
    if fmt == "bamboogle":
        return {"acc": float(bamboogle_accuracy(prediction, golds)), "parsed": bool(prediction and prediction.strip())}
    if fmt == "jsonl":
        em, f1 = drop_em_f1(prediction, golds)
        out: dict[str, Any] = {"em": em, "f1": f1, "contains": float(bamboogle_accuracy(prediction, golds))}
        if all(_gold_number(", ".join(g)) is not None for g in golds):
            out["strict"] = float(any(gsm8k_strict(prediction, ", ".join(g)) for g in golds))
            out["lenient"] = float(any(gsm8k_lenient(prediction, ", ".join(g)) for g in golds))
        out["parsed"] = bool(prediction and prediction.strip())
        return out
    raise ValueError(f"Unknown data set format {fmt!r}.")
