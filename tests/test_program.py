"""The program-of-thought answer reader: computes arithmetic assignments, refuses everything else."""

from __future__ import annotations

import pytest

from langchain_dod.program import ProgramError, program_answer, run_program


def test_assignments_are_computed_in_order_and_answer_is_read():
    reply = "```python\nbunches = 10\nprice = 3\ncost = bunches * price\nanswer = cost - 5\n```"
    assert program_answer(reply) == "25"


def test_without_answer_the_last_assignment_counts_and_floats_are_written_as_gsm8k_numbers():
    assert program_answer("a = 1 / 3\nb = a * 3") == "1"
    assert program_answer("share = 10 / 4") == "2.5"
    assert program_answer("x = round(2 / 3, 2)") == "0.67"


@pytest.mark.parametrize(
    "code",
    [
        "import os",
        "x = __import__('os').system('true')",
        "x = (1).__class__",
        "for i in range(3):\n    x = i",
        "x = 9 ** 9 ** 9",
        "x = round(5, -1000000000)",
        "x = int(1e999)",
        "x = round(1, 2, 3)",
        "x = y + 1",
        "x = 1 / 0",
        "x = 'text'",
        "def f():\n    return 1",
        "x = [1, 2]",
        "not python (",
        "x = 1 if y else 2",
    ],
)
def test_anything_but_arithmetic_is_refused(code):
    with pytest.raises(ProgramError):
        run_program(code)
    assert program_answer(code) is None


def test_print_and_docstrings_are_ignored():
    assert program_answer('"""total"""\nanswer = 2 + 2\nprint(answer)') == "4"


def test_a_reply_that_is_no_clean_program_is_read_line_by_line():
    reply = "Here is the program:\n1. `total = 2 * 3 = 6`\n2. total -= 1\nlet answer = total * 2\nThat is all."
    assert program_answer(reply) == "10"


def test_conditional_expressions_and_deep_nesting():
    assert program_answer("tickets = 6\ndiscount = 2 if tickets > 3 else 0\nanswer = 10 - discount") == "8"
    with pytest.raises(ProgramError, match="too deeply"):
        run_program("x = " + " + ".join(["1"] * 50_000))
