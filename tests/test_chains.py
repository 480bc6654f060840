"""DecomposeSolve and SingleStage: output shape, streaming, async, batch, events, callbacks, errors.

The decomposer is the real local SmolLM2 under grammar; the solver is scripted except in the test marked
``slow``, which runs the real local Qwen 1.5B solver end to end.
"""

from __future__ import annotations

import asyncio
from operator import itemgetter
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda

from langchain_dod import (
    SUBQUESTIONS_EVENT,
    ChatGGUF,
    Decomposer,
    DecomposeSolve,
    SingleStage,
    StageError,
    create_dod_chain,
)
from tests.scripted import ScriptedSolver

QUESTION = "Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens does he have left?"
KEYS = {"question", "context", "subquestions", "solution", "answer", "mode", "usage"}


@pytest.fixture(scope="module")
def decomposer() -> Decomposer:
    return Decomposer(llm=ChatGGUF(model="smollm2-135m-instruct"))


def _chain(decomposer: Decomposer, **kwargs: Any) -> DecomposeSolve:
    return DecomposeSolve(decomposer=decomposer, solver=kwargs.pop("solver", ScriptedSolver()), **kwargs)


def test_invoke_shape_and_one_solver_call_with_all_subquestions(decomposer: Decomposer) -> None:
    solver = ScriptedSolver()
    result = _chain(decomposer, solver=solver).invoke(QUESTION)
    assert set(result) == KEYS
    assert result["question"] == QUESTION and result["context"] is None
    assert 1 <= len(result["subquestions"]) <= 3 and result["mode"] == "two-stage"
    assert result["answer"] == "5" and result["solution"] == solver.reply
    assert len(solver.seen) == 1  # ONE solver call
    prompt = solver.seen[0][-1].content
    assert QUESTION in prompt and all(q in prompt for q in result["subquestions"])
    dec, sol = result["usage"]["decomposer"], result["usage"]["solver"]
    assert dec["model"] == "smollm2-135m-instruct" and dec["input_tokens"] > 0 and dec["seconds"] > 0
    assert sol["model"] == "ScriptedSolver" and sol["input_tokens"] == 10


def test_context_reaches_both_stages(decomposer: Decomposer) -> None:
    solver = ScriptedSolver()
    chain = _chain(decomposer.model_copy(update={"profile": "reading"}), solver=solver)
    result = chain.invoke(
        {"question": "How many points did the Lions score?", "context": "The Lions kicked 3 field goals."}
    )
    assert result["context"] == "The Lions kicked 3 field goals."
    assert "Passage: The Lions kicked 3 field goals." in solver.seen[0][-1].content


def test_stream_yields_subquestions_then_tokens_then_answer(decomposer: Decomposer) -> None:
    chain = _chain(decomposer)
    chunks = list(chain.stream(QUESTION))
    assert "subquestions" in chunks[0] and chunks[0]["solution"] == ""
    tokens = [c["solution"] for c in chunks[1:-1]]
    assert len(tokens) == len(ScriptedSolver().reply.split(" "))
    assert set(chunks[-1]) == {"answer", "usage"}
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged["solution"] == ScriptedSolver().reply
    assert {k: merged[k] for k in ("subquestions", "answer")} == {
        k: chain.invoke(QUESTION)[k] for k in ("subquestions", "answer")
    }


async def test_ainvoke_astream_and_abatch(decomposer: Decomposer) -> None:
    chain = _chain(decomposer)
    result = await chain.ainvoke(QUESTION)
    assert set(result) == KEYS and result["answer"] == "5"
    chunks = [c async for c in chain.astream(QUESTION)]
    assert chunks[0]["subquestions"] == result["subquestions"] and chunks[-1]["answer"] == "5"
    results = await chain.abatch([QUESTION] * 3, {"max_concurrency": 2})
    assert [r["subquestions"] for r in results] == [result["subquestions"]] * 3


def test_batch_honours_max_concurrency(decomposer: Decomposer) -> None:
    solver = ScriptedSolver(delay=0.2)
    results = _chain(decomposer, solver=solver).batch([QUESTION] * 6, {"max_concurrency": 2})
    assert len(results) == 6 and all(r["answer"] == "5" for r in results)
    assert 1 <= solver.peak_concurrency <= 2


async def test_abatch_honours_max_concurrency(decomposer: Decomposer) -> None:
    solver = ScriptedSolver(delay=0.2)
    results = await _chain(decomposer, solver=solver).abatch([QUESTION] * 6, {"max_concurrency": 3})
    assert len(results) == 6 and 1 <= solver.peak_concurrency <= 3


async def test_custom_event_fires_before_the_solver_runs(decomposer: Decomposer) -> None:
    events = [e async for e in _chain(decomposer).astream_events(QUESTION, version="v2")]
    names = [(e["event"], e["name"]) for e in events]
    custom = names.index(("on_custom_event", SUBQUESTIONS_EVENT))
    solver_start = names.index(("on_chat_model_start", "ScriptedSolver"))
    assert custom < solver_start
    assert events[custom]["data"]["subquestions"]


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.runs: dict[UUID, tuple[str, UUID | None, list[str]]] = {}
        self.custom: list[tuple[str, Any]] = []

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kw: Any,
    ) -> None:
        self.runs[run_id] = (kw.get("name") or (serialized or {}).get("name", "?"), parent_run_id, tags or [])

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kw: Any,
    ) -> None:
        self.runs[run_id] = (kw.get("name") or "chat:" + str((serialized or {}).get("name")), parent_run_id, tags or [])

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        self.custom.append((name, data))


def test_callbacks_nest_decomposer_and_solver_under_the_chain(decomposer: Decomposer) -> None:
    recorder = _Recorder()
    _chain(decomposer).invoke(QUESTION, {"callbacks": [recorder], "tags": ["mine"]})
    by_name = {name: (rid, parent, tags) for rid, (name, parent, tags) in recorder.runs.items()}
    root_id, root_parent, root_tags = by_name["DecomposeSolve"]
    assert root_parent is None and "mine" in root_tags
    assert by_name["Decomposer"][1] == root_id and "decomposer" in by_name["Decomposer"][2]
    solver_runs = [r for r in recorder.runs.values() if "solver" in r[2]]
    assert solver_runs and solver_runs[0][1] == root_id
    assert recorder.custom and recorder.custom[0][0] == SUBQUESTIONS_EVENT


def test_composes_in_lcel(decomposer: Decomposer) -> None:
    prompt = PromptTemplate.from_template("{name} has 3 boxes of 12 pens and gives away 5. How many are left?")
    pipeline = prompt | _chain(decomposer) | itemgetter("answer")
    assert pipeline.invoke({"name": "Tom"}) == "5"
    mapped = RunnableLambda(lambda x: {"question": x}) | _chain(decomposer) | RunnableLambda(lambda r: r["mode"])
    assert mapped.invoke(QUESTION) == "two-stage"


def test_max_subquestions_reaches_prompt_and_output(decomposer: Decomposer) -> None:
    chain = _chain(decomposer, max_subquestions=1)
    assert "at most 1 sub-question" in chain.decomposer.messages("Q?")[0]["content"]
    assert len(chain.invoke(QUESTION)["subquestions"]) <= 1


def test_no_subquestions_means_single_stage_prompt() -> None:
    solver = ScriptedSolver()
    chain = DecomposeSolve(decomposer=RunnableLambda(lambda _: []), solver=solver)
    result = chain.invoke("What is 2 + 3?")
    assert result["mode"] == "single-stage" and result["subquestions"] == []
    assert "Sub-questions" not in solver.seen[0][-1].content
    # exactly single-stage CoT's messages: benchmarks.chain_skip_wording scores the no-plan path with CoT's rows
    cot = ScriptedSolver()
    SingleStage(solver=cot, mode="cot").invoke("What is 2 + 3?")
    assert [(m.type, m.content) for m in solver.seen[0]] == [(m.type, m.content) for m in cot.seen[0]]


def _broken(_: Any) -> Any:
    raise RuntimeError("decomposer exploded")


def test_decomposer_failure_names_the_stage_or_falls_back() -> None:
    with pytest.raises(StageError, match="decomposer stage failed.*exploded") as info:
        DecomposeSolve(decomposer=RunnableLambda(_broken), solver=ScriptedSolver()).invoke(QUESTION)
    assert info.value.stage == "decomposer"
    result = DecomposeSolve(
        decomposer=RunnableLambda(_broken), solver=ScriptedSolver(), fallback_to_single_stage=True
    ).invoke(QUESTION)
    assert result["mode"] == "fallback" and result["answer"] == "5" and "exploded" in result["decomposer_error"]


def test_decomposer_returning_garbage_is_a_stage_error() -> None:
    with pytest.raises(StageError, match="decomposer"):
        DecomposeSolve(decomposer=RunnableLambda(lambda _: 42), solver=ScriptedSolver()).invoke(QUESTION)


def test_solver_failure_names_the_stage(decomposer: Decomposer) -> None:
    chain = _chain(decomposer, solver=ScriptedSolver(fail="rate limited"))
    with pytest.raises(StageError, match="solver stage failed.*rate limited"):
        chain.invoke(QUESTION)
    with pytest.raises(StageError, match="solver"):
        list(chain.stream(QUESTION))
    with pytest.raises(StageError, match="solver"):
        asyncio.run(chain.ainvoke(QUESTION))


@pytest.mark.parametrize("bad", ["", "  ", None, 7, {"question": ""}])
def test_bad_questions_are_clear_errors(decomposer: Decomposer, bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="question"):
        _chain(decomposer).invoke(bad)


@pytest.mark.parametrize("mode", ["direct", "cot"])
def test_single_stage_has_the_same_shape(mode: str) -> None:
    solver = ScriptedSolver()
    result = SingleStage(solver=solver, mode=mode).invoke(QUESTION)
    assert set(result) == KEYS and result["subquestions"] == [] and result["usage"]["decomposer"] is None
    assert result["mode"] == f"single-stage-{mode}" and result["answer"] == "5"
    assert ("step by step" in solver.seen[0][0].content) == (mode == "cot")


PROGRAM = "```python\nboxes = 3\npens_per_box = 12\ngiven_away = 5\nanswer = boxes * pens_per_box - given_away\n```"


def test_program_answers_are_computed_from_the_solvers_assignments() -> None:
    solver = ScriptedSolver(reply=PROGRAM)
    plan = ["How many pens are in the boxes?", "How many are left?"]
    result = DecomposeSolve(decomposer=RunnableLambda(lambda _: plan), solver=solver, answer_format="program").invoke(
        QUESTION
    )
    assert result["answer"] == "31" and result["mode"] == "two-stage"
    system, user = solver.seen[0][0].content, solver.seen[0][-1].content
    assert "Python program" in system and "for each sub-question" in system and "1. How many pens" in user
    # no plan: the single-stage program wording, the same as SingleStage's
    skipped = ScriptedSolver(reply=PROGRAM)
    DecomposeSolve(decomposer=RunnableLambda(lambda _: []), solver=skipped, answer_format="program").invoke(QUESTION)
    alone = ScriptedSolver(reply=PROGRAM)
    assert SingleStage(solver=alone, answer_format="program").invoke(QUESTION)["answer"] == "31"
    assert skipped.seen[0][0].content == alone.seen[0][0].content != system
    assert "sub-question" not in alone.seen[0][0].content


def test_a_program_reply_that_is_no_program_falls_back_to_the_answer_line_or_none() -> None:
    chain = SingleStage(solver=ScriptedSolver(), answer_format="program")  # replies prose with "The answer is: 5"
    assert chain.invoke(QUESTION)["answer"] == "5"
    hostile = SingleStage(solver=ScriptedSolver(reply="import os\nos.system('rm -rf /')"), answer_format="program")
    result = hostile.invoke(QUESTION)
    assert result["answer"] is None and "import os" in result["solution"]


def test_a_direct_answer_cannot_be_a_program() -> None:
    with pytest.raises(ValueError, match="needs mode 'cot'"):
        SingleStage(solver=ScriptedSolver(), mode="direct", answer_format="program")


def test_create_dod_chain_from_specs() -> None:
    chain = create_dod_chain(decomposer="llamacpp:smollm2-135m-instruct", solver=ScriptedSolver())
    assert isinstance(chain.decomposer, Decomposer) and isinstance(chain.decomposer.llm, ChatGGUF)
    assert chain.invoke(QUESTION)["answer"] == "5"


@pytest.mark.slow
def test_real_local_solver_end_to_end(decomposer: Decomposer) -> None:
    solver = ChatGGUF(model="qwen2.5-coder-1.5b-instruct", max_tokens=256)
    question = (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?"
    )
    result = DecomposeSolve(decomposer=decomposer, solver=solver).invoke(question)
    assert result["subquestions"] and result["answer"] == "72"
    assert result["usage"]["solver"]["output_tokens"] > 0
    baseline = SingleStage(solver=solver, mode="cot").invoke(question)
    assert baseline["answer"] == "72"
