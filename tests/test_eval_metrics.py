"""Metrics, prices and the McNemar test against hand-checked cases (no models needed)."""

from __future__ import annotations

import json

import pytest

from langchain_dod.evaluation.cost import PAPER_RATE, REFERENCE_PARAMS, PriceTable, Rate, parameter_count
from langchain_dod.evaluation.metrics import (
    bamboogle_accuracy,
    drop_em_f1,
    gsm8k_lenient,
    gsm8k_strict,
    numbers_in,
    score,
)
from langchain_dod.evaluation.report import mcnemar_exact
from langchain_dod.parsing import extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,250.00", [1250.0]),
        ("1,000,000 people", [1_000_000.0]),
        ("-5", [-5.0]),
        ("\u22127 degrees", [-7.0]),  # unicode minus
        ("it costs $-3", [-3.0]),
        ("10-5", [10.0, 5.0]),  # a hyphen between numbers is not a minus
        ("3/4 of a cup", [0.75]),
        ("12.5.", [12.5]),
        ("50%", [50.0]),
        ("1, 2 and 3", [1.0, 2.0, 3.0]),
        ("x2", []),
        ("2024-05-01", [2024.0, 5.0, 1.0]),
        ("eighteen", []),
        (None, []),
        # a number glued to a letter by a hyphen is an expression with an unknown (or a name), not a number
        ("L-8", []),
        ("L\u22128", []),
        ("COVID-19", []),
        (".5 of a cup", [0.5]),
        ("$.50", [0.5]),
        ("1 1/2 cups", [1.5]),  # a mixed number is one value
        ("-1 1/2", [-1.5]),
        ("12 3/2", [12.0, 1.5]),  # not a mixed number (3/2 is not a proper fraction)
        ("1e3", [1000.0]),
        ("2.5e-1", [0.25]),
        ("\\frac{1}{2}", [0.5]),
        ("-\\dfrac{3}{4} cup", [-0.75]),
    ],
)
def test_numbers_in(text, expected):
    assert numbers_in(text) == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "strict", "lenient"),
    [
        ("18", "18", True, True),
        ("$18.00", "18", True, True),
        ("18 dollars", "18", True, True),
        ("18 ($18)", "18", True, True),  # the same number twice is still one number
        ("1,250", "1250", True, True),
        ("$2,500", "2500", True, True),
        ("-5", "-5", True, True),
        ("5", "-5", False, False),
        ("4.50", "4.5", True, True),
        ("9 * 2 = 18", "18", False, True),  # strict wants one number; the paper's lenient finds the token
        ("about 17 or 18", "18", False, True),
        ("180", "18", False, False),  # a token, not a substring
        ("eighteen", "18", False, False),
        (None, "18", False, False),
        ("", "18", False, False),
        ("L-8", "8", False, False),  # an expression with an unknown is not the number 8
        ("x = L-8", "8", False, False),
        (".5", "0.5", True, True),
        ("1 1/2", "1.5", True, True),
        ("1 1/2", "1", False, False),
        ("1e3", "1000", True, True),
        ("1e3", "1", False, False),
        ("\\frac{1}{2}", "0.5", True, True),
    ],
)
def test_gsm8k_strict_and_lenient(prediction, gold, strict, lenient):
    assert gsm8k_strict(prediction, gold) is strict
    assert gsm8k_lenient(prediction, gold) is lenient


@pytest.mark.parametrize(
    ("solution", "gold"),
    [
        ("So the answer is 18 apples. Check: 3*6=18, 5 left", "18"),
        ("The answer is 31 pens (3 boxes of 12, minus 5).", "31"),
        ("Half of it: \\(\\boxed{\\frac{1}{2}}\\)", "0.5"),
    ],
)
def test_extracted_answers_score_strictly_right(solution, gold):
    assert gsm8k_strict(extract_answer(solution), gold)


@pytest.mark.parametrize(
    ("prediction", "golds", "em", "f1"),
    [
        ("2", [("2",)], 1.0, 1.0),
        ("2 touchdowns", [("2",)], 0.0, 0.67),  # bag {2.0, touchdowns} vs {2.0}: P 0.5, R 1
        ("3", [("2",)], 0.0, 0.0),  # gold number missing from the prediction: F1 0
        ("two", [("2",)], 0.0, 0.0),
        ("1250 yards", [("1,250",)], 0.0, 0.67),  # 1,250 and 1250 are the same number
        # dates: "8 September 1985" is the gold string of {"day": 8, "month": "September", "year": 1985}
        ("September 8, 1985", [("8 September 1985",)], 0.0, 1.0),  # same bag, other order: EM 0
        ("1985", [("8 September 1985",)], 0.0, 0.5),  # P 1, R 1/3
        # multi-span answers: spans aligned one to one, order does not matter
        ("23, 41", [("23", "41")], 1.0, 1.0),
        ("41; 23", [("23", "41")], 1.0, 1.0),
        ("23", [("23", "41")], 0.0, 0.5),
        ("23 and 41", [("23", "41")], 0.0, 0.25),  # one predicted span {23, and, 41}: 0.5 / 2 spans
        # articles and punctuation are dropped; the best gold alternative counts
        ("Lions", [("the Lions",), ("Detroit Lions",)], 1.0, 1.0),
        ("the Detroit Lions.", [("the Lions",), ("Detroit Lions",)], 1.0, 1.0),
        ("Chicago Bears", [("the Lions",)], 0.0, 0.0),
        (None, [("2",)], 0.0, 0.0),
    ],
)
def test_drop_em_f1(prediction, golds, em, f1):
    assert drop_em_f1(prediction, golds) == (em, f1)


@pytest.mark.parametrize(
    ("prediction", "gold", "correct"),
    [
        ("It was James I.", "James I", True),
        ("james i", "James I", True),
        ("James", "James I", False),
        ("Paris, France", "Paris", True),
        ("Parisian food", "Paris", False),  # whole words only
        (None, "Paris", False),
    ],
)
def test_bamboogle_substring_accuracy(prediction, gold, correct):
    assert bamboogle_accuracy(prediction, [(gold,)]) is correct


def test_score_flags_unparsed_answers_and_never_raises():
    assert score("gsm8k", None, [("18",)]) == {"strict": 0.0, "lenient": 0.0, "parsed": False}
    assert score("gsm8k", "no idea", [("18",)])["parsed"] is False
    assert score("drop", "", [("2",)]) == {"em": 0.0, "f1": 0.0, "parsed": False}
    assert score("bamboogle", "Paris", [("Paris",)]) == {"acc": 1.0, "parsed": True}
    generic_number = score("jsonl", "24 legs", [("24",)])
    assert (generic_number["strict"], generic_number["lenient"], generic_number["contains"]) == (1.0, 1.0, 1.0)
    assert "strict" not in score("jsonl", "green", [("green",), ("Green",)])
    with pytest.raises(ValueError, match="Unknown data set format"):
        score("squad", "x", [("x",)])


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [(0, 0, 1.0), (0, 5, 0.0625), (5, 0, 0.0625), (3, 3, 1.0), (1, 9, 22 / 1024)],
)
def test_mcnemar_exact_by_hand(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p)


def test_mcnemar_matches_scipy_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(2, 11), (7, 4), (10, 30), (0, 1)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue)


def test_parameter_count_from_labels():
    assert parameter_count("smollm2-135m-instruct") == 135e6
    assert parameter_count("qwen2.5-coder-1.5b-instruct") == 1.5e9
    assert parameter_count("/models/Llama-3-8B.Q4_K_M.gguf") == 8e9
    assert parameter_count("gpt-4o-mini") is None


def test_price_table_follows_the_paper_by_default():
    table = PriceTable()
    assert PAPER_RATE.dollars(1000, 500) == pytest.approx(0.002)
    solver = "qwen2.5-coder-1.5b-instruct"
    assert table.rate("solver", solver, solver) == PAPER_RATE
    assert table.rate("decomposer", solver, solver) == PAPER_RATE  # the solver decomposing for itself pays full
    small = table.rate("decomposer", "smollm2-135m-instruct", solver)
    assert small.input_per_1k == pytest.approx(0.001 * 135e6 / REFERENCE_PARAMS)
    assert table.rate("decomposer", "oracle:gsm8k-socratic", solver) == Rate(0.0, 0.0)
    usage = {"model": solver, "input_tokens": 2000, "output_tokens": 1000}
    assert table.stage_dollars("solver", usage, solver) == pytest.approx(0.004)


def test_price_table_from_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "default": {"input_per_1k": 0.01, "output_per_1k": 0.03},
                "models": {"qwen2.5*": {"input_per_1k": 0, "output_per_1k": 0}},
                "scale_decomposer_by_params": False,
            }
        )
    )
    table = PriceTable.from_file(path)
    assert table.rate("solver", "qwen2.5-coder-1.5b-instruct") == Rate(0.0, 0.0)
    assert table.rate("decomposer", "smollm2-135m-instruct", "gpt-4o") == Rate(0.01, 0.03)
    assert PriceTable.from_dict(table.to_dict()) == table
    path.write_text('{"default": {"input_per_1k": 1}}')
    with pytest.raises(ValueError, match="price table"):
        PriceTable.from_file(path)


def test_drop_alignment_without_scipy(monkeypatch):
    """scipy is optional: without it the span alignment is exhaustive and gives the same scores."""
    monkeypatch.setitem(__import__("sys").modules, "scipy.optimize", None)  # import now raises ImportError
    assert drop_em_f1("41; 23", [("23", "41")]) == (1.0, 1.0)
    assert drop_em_f1("23", [("23", "41")]) == (0.0, 0.5)
    assert drop_em_f1("x; b; 7", [("b", "7")]) == (0.0, 0.67)  # 3 predicted spans, 2 aligned perfectly: 2/3
