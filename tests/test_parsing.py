"""The text parser for decomposers we do not control, on ugly real-world shapes of output."""

from __future__ import annotations

import pytest

from langchain_dod.parsing import extract_answer, last_number, parse_subquestions

CASES = [
    # numbered list with a preamble the paper's rule drops
    (
        "Sure! Here are the sub-questions:\n1. How many apples does Tom have?\n2. How many does he give away?\n",
        ["How many apples does Tom have?", "How many does he give away?"],
    ),
    # bullets of several styles and a trailing remark
    ("- What is A?\n* What is B?\n• What is C?\nHope this helps.", ["What is A?", "What is B?", "What is C?"]),
    # JSON in a code fence
    ('```json\n{"subquestions": ["What is x?", "What is y?"]}\n```', ["What is x?", "What is y?"]),
    # bare JSON list, with object items as some chat models write
    ('[{"question": "Who wrote it?"}, {"question": "When?"}]', ["Who wrote it?", "When?"]),
    # alternative key
    ('{"sub_questions": ["Q one?", "Q two?"]}', ["Q one?", "Q two?"]),
    # "Sub-question 1:" markers and parenthesised numbers
    ("Sub-question 1: How far is it?\n(2) How fast does she walk?", ["How far is it?", "How fast does she walk?"]),
    # two questions on one line
    ("What is the price? What is the discount?", ["What is the price?", "What is the discount?"]),
    # duplicates (case-insensitive) collapse
    ("1. How many?\n2. how many?\n3. How much?", ["How many?", "How much?"]),
    # an explicit refusal to decompose
    ("No decomposition needed.", []),
    ("None", []),
    ('{"subquestions": []}', []),
    # no question marks: keep list items only
    (
        "1) Find the total cost\n2) Divide by the number of people",
        ["Find the total cost", "Divide by the number of people"],
    ),
    # Windows line endings and blank lines
    ("1. What is A?\r\n\r\n2. What is B?\r\n", ["What is A?", "What is B?"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse_subquestions(text: str, expected: list[str]) -> None:
    assert parse_subquestions(text) == expected


def test_cap_is_applied() -> None:
    text = "\n".join(f"{i}. Question number {i}?" for i in range(1, 8))
    assert parse_subquestions(text, 3) == ["Question number 1?", "Question number 2?", "Question number 3?"]


def test_prose_without_questions_gives_nothing() -> None:
    assert parse_subquestions("I think the answer is 42 because of reasons.") == []


def test_non_string_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="expects a string"):
        parse_subquestions(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step 1...\nThe answer is: 72", "72"),
        ("The answer is 18.", "18"),
        ("So the answer is: $1,250.", "$1,250"),
        ("The answer is: **5**", "5"),
        ("first The answer is: 3\nthen corrected. The answer is: 4", "4"),
        ("Final answer: 12 apples", "12 apples"),
        ("She has 3 + 4 = 7 apples left.", "7"),
        ("I do not know.", None),
        # math display on the lines after the marker (Qwen's habit); a boxed answer anywhere
        ("Therefore the answer is:\n\\[ \\boxed{39} \\]", "39"),
        ("The answer is:\n\\[ 17 \\]", "17"),
        ("The answer is: \\( 5 \\)", "5"),
        ("The answer is: $x=5$", "x=5"),
        ("so \\(\\boxed{42}\\) in total", "42"),
        ("", None),
        # the marker without its colon, followed by a number: the answer is that number's phrase, which ends at a
        # parenthesis or the end of its sentence (the working after it holds other numbers)
        ("So the answer is 18 apples. Check: 3*6=18, 5 left", "18 apples"),
        ("The answer is 31 pens (3 boxes of 12, minus 5).", "31 pens"),
        ("The answer is: 31 pens (3 boxes of 12, minus 5).", "31 pens"),
        ("The answer is **18** apples. Indeed 3*6=18.", "18 apples"),
        ("The answer is 4.50 dollars", "4.50 dollars"),
        # without the colon and without a number it is prose, not a marker
        ("The answer is not obvious; 3 + 4 = 7", "7"),
        # nested braces inside \boxed{}
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("The answer is:\n\\[ \\boxed{\\dfrac{3}{4}} \\]", "\\dfrac{3}{4}"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_last_number_normalises() -> None:
    assert last_number("costs $1,234.0 in total") == "1234"
    assert last_number("it fell to -3.5 degrees") == "-3.5"
    assert last_number("no digits") is None
