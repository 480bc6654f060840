"""The prompts: the single source of truth for inference *and* training.

The distilled decomposer is trained on exactly :func:`decomposer_messages` + :func:`decomposition_target`,
so what it sees at run time is what it learned. Change a prompt here and the training data changes with it
(and a shipped adapter trained on the old text may get worse: retrain).

Profiles follow the paper's three task families: math word problems (GSM8K), reading comprehension with a
passage (DROP), multi-hop factual questions (Bamboogle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ANSWER_FORMATS",
    "ANSWER_MARKER",
    "DEFAULT_MAX_SUBQUESTIONS",
    "PROFILES",
    "Profile",
    "check_answer_format",
    "decomposer_messages",
    "decomposition_target",
    "solver_messages",
]

DEFAULT_MAX_SUBQUESTIONS = 3
ANSWER_MARKER = "The answer is:"


@dataclass(frozen=True)
class Profile:
    """A task family: what the decomposer is told and one worked example."""

    name: str
    task: str
    example_question: str
    example_subquestions: tuple[str, ...]
    example_context: str | None = None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="math",
            task="a math word problem",
            example_question=(
                "A baker makes 12 muffins per tray and bakes 4 trays. She sells 30 muffins. How many are left?"
            ),
            example_subquestions=("How many muffins does she bake?", "How many muffins are left after she sells 30?"),
        ),
        Profile(
            name="reading",
            task="a question about a passage",
            example_context=(
                "The Bears scored two touchdowns in the first half and a field goal in the fourth quarter."
            ),
            example_question="How many times did the Bears score?",
            example_subquestions=(
                "How many touchdowns did the Bears score?",
                "How many field goals did the Bears score?",
            ),
        ),
        Profile(
            name="multihop",
            task="a factual question that needs several facts",
            example_question="Who was president of the United States when the Eiffel Tower was completed?",
            example_subquestions=(
                "In what year was the Eiffel Tower completed?",
                "Who was president of the United States in that year?",
            ),
        ),
    )
}


def _profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"Unknown profile {name!r}; choose one of {sorted(PROFILES)}.") from None


def decomposition_target(subquestions: Sequence[str]) -> str:
    """The decomposer's reply for these sub-questions: what the grammar allows and what training teaches."""
    return json.dumps({"subquestions": list(subquestions)}, ensure_ascii=False)


def _user(question: str, context: str | None) -> str:
    if context:
        return f"Passage: {context}\n\nQuestion: {question}"
    return f"Question: {question}"


def decomposer_messages(
    question: str,
    context: str | None = None,
    *,
    profile: str = "math",
    max_subquestions: int = DEFAULT_MAX_SUBQUESTIONS,
) -> list[dict[str, str]]:
    """Chat messages asking for at most ``max_subquestions`` sub-questions, as the paper instructs.

    Returned as OpenAI-style dicts so LangChain chat models, llama.cpp and the training tokenizer all take
    them unchanged.
    """
    p = _profile(profile)
    example = _user(p.example_question, p.example_context)
    system = (
        f"You break {p.task} into simpler sub-questions. Write at most {max_subquestions} sub-questions that, "
        "answered in order, lead to the answer. Write questions only: never answer them or compute anything. "
        "If the question is simple enough to answer directly, write no sub-questions. "
        'Reply with JSON only: {"subquestions": [...]}.\n\n'
        f"Example.\n{example}\n{decomposition_target(p.example_subquestions[:max_subquestions])}"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": _user(question, context)}]


ANSWER_FORMATS = ("text", "program")
"""How the solver writes its solution: ``text`` (reasoning ending in ``The answer is: X``) or ``program``
(arithmetic assignments ending in ``answer = ...``, computed by :mod:`langchain_dod.program`)."""


def check_answer_format(mode: str, answer_format: str) -> None:
    """Raise ``ValueError`` unless ``answer_format`` is one of :data:`ANSWER_FORMATS` and fits ``mode``."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, not {answer_format!r}")
    if mode == "direct" and answer_format == "program":
        raise ValueError("mode 'direct' answers in one line; answer_format 'program' needs mode 'cot' or a decomposer")


def solver_messages(
    question: str,
    context: str | None = None,
    subquestions: Sequence[str] = (),
    *,
    mode: str = "decomposed",
    answer_format: str = "text",
) -> list[dict[str, str]]:
    """Chat messages for the solver: one call answering the sub-questions, then the question.

    ``mode`` is ``"decomposed"`` (two-stage; falls back to chain-of-thought wording when there are no
    sub-questions), ``"cot"`` (single-stage chain of thought) or ``"direct"`` (single-stage, answer only, as in
    the paper's single-stage baseline). ``answer_format="program"`` asks for a program instead of prose
    (:data:`ANSWER_FORMATS`; not with ``direct``).
    """
    if mode not in ("decomposed", "cot", "direct"):
        raise ValueError(f"mode must be 'decomposed', 'cot' or 'direct', not {mode!r}")
    check_answer_format(mode, answer_format)
    body = _user(question, context)
    planned = mode == "decomposed" and bool(subquestions)
    if planned:
        listed = "\n".join(f"{i}. {q}" for i, q in enumerate(subquestions, 1))
        body = f"{body}\n\nSub-questions:\n{listed}"
    if answer_format == "program":
        # Measured, benchmarks/results/solver_wording (session 14): with every Socratic step as the plan this
        # wording scored 57/100 against 59 for plain-text CoT at 0.66x its tokens, and 47 with no plan; defining
        # the problem's numbers first stopped undefined names (28 of 96 programs without that sentence).
        if planned:
            instruction = (
                "Solve the problem by writing a short Python program and nothing else. First assign each number "
                "the problem gives to a variable. Then, for each sub-question below in order, write one assignment "
                "that computes its answer from those variables, and add an assignment for any step the "
                "sub-questions miss. Use only numbers, variables, + - * / // % and round(); no numbering, no "
                "loops, no functions, no print. The last line assigns the final answer to `answer`."
            )
        else:  # no plan: 56/100 on the validation items vs 68 for plain-text CoT, at 0.27x its tokens
            instruction = (
                "Solve the problem by writing a short Python program and nothing else: one assignment per line, "
                "each computing one quantity from the numbers in the problem or from earlier variables, with a "
                "name that says what it is. Use only numbers, variables, + - * / // % and round(). The last line "
                "assigns the final answer to `answer`. No loops, no functions, no print."
            )
    elif planned:
        # Measured, benchmarks/results/solver_wording: an equation per sub-question writes half of CoT's tokens;
        # telling the solver the plan may stop short (a small model's plans often do) and to add the missing
        # steps lifted Socratic plans from 11/23 to 14/23 (CoT 12/23) and a 135M model's plans from 7/35 to 15/35.
        instruction = (
            "Work through the sub-questions below in order. For each one write a line with its number, the "
            "equation that answers it (for example 3 * 4 = 12) and a few words saying what the result is. "
            "The sub-questions may be incomplete: add a line for every further step the question needs. "
            f'Then answer the question itself. Finish with a line "{ANSWER_MARKER} X" where X is only the final '
            "answer."
        )
    elif mode == "direct":
        instruction = f'Answer with a single line "{ANSWER_MARKER} X" where X is only the final answer.'
    else:
        # Measured, benchmarks/results/solver_wording: Qwen 1.5B's chain of thought first lists its own steps, then
        # works them in LaTeX and restates the question; asking for plain text without those keeps its accuracy
        # (validation 100 items) at about 0.77x the output tokens.
        instruction = (
            "Think step by step, briefly. Write each calculation in plain text (no LaTeX), without listing the "
            f'steps first and without restating the problem. Finish with a line "{ANSWER_MARKER} X" where X is '
            "only the final answer."
        )
    return [{"role": "system", "content": instruction}, {"role": "user", "content": body}]
