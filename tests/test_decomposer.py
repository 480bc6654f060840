"""The Decomposer with the real local model, with other LangChain models, and on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda

from langchain_dod import ChatGGUF, Decomposer, Decomposition, DecompositionError
from langchain_dod.prompts import decomposer_messages, decomposition_target

FIXTURES = Path(__file__).parent / "fixtures" / "questions.jsonl"


@pytest.fixture(scope="module")
def local() -> ChatGGUF:
    return ChatGGUF(model="smollm2-135m-instruct")


def _valid(result: Decomposition, cap: int) -> None:
    assert isinstance(result, Decomposition)
    assert len(result.subquestions) <= cap
    assert all(isinstance(q, str) and q.strip() == q and q for q in result.subquestions)
    assert len({q.lower() for q in result.subquestions}) == len(result.subquestions)
    # grammar-constrained: the raw reply is always the JSON the prompt asks for
    assert isinstance(json.loads(result.raw or "")["subquestions"], list)
    assert result.input_tokens and result.input_tokens > 0
    assert result.model == "smollm2-135m-instruct"


def test_gsm8k_50_questions_are_valid_and_capped(local: ChatGGUF, gsm8k_dir: Path) -> None:
    lines = (gsm8k_dir / "test.jsonl").read_text().splitlines()[:50]
    questions = [json.loads(line)["question"] for line in lines]
    results = Decomposer(llm=local).batch(questions, {"max_concurrency": 2})
    for result in results:
        _valid(result, 3)
    # the untuned model still decomposes a majority of real word problems under the grammar
    assert sum(bool(r.subquestions) for r in results) >= 25


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_own_fixtures_all_profiles_and_caps(local: ChatGGUF, cap: int) -> None:
    for line in FIXTURES.read_text().splitlines():
        item = json.loads(line)
        decomposer = Decomposer(llm=local, profile=item["profile"], max_subquestions=cap)
        _valid(decomposer.invoke({"question": item["question"], "context": item.get("context")}), cap)


def test_prompt_is_the_training_prompt(local: ChatGGUF) -> None:
    decomposer = Decomposer(llm=local, profile="reading", max_subquestions=2)
    assert decomposer.messages("Q?", "ctx") == decomposer_messages("Q?", "ctx", profile="reading", max_subquestions=2)
    system = decomposer.messages("Q?")[0]["content"]
    assert "at most 2 sub-questions" in system
    assert decomposition_target(["a?", "b?"]) == '{"subquestions": ["a?", "b?"]}'


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("", ValueError, "empty"),
        ("   \n", ValueError, "empty"),
        (None, TypeError, "question string"),
        (42, TypeError, "question string"),
        ({"context": "x"}, ValueError, "'question' key"),
        ({"question": 3}, TypeError, "must be a string"),
        ({"question": "Why?", "context": 5}, TypeError, "context must be a string"),
    ],
)
def test_bad_input_is_a_clear_error(local: ChatGGUF, bad: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Decomposer(llm=local).invoke(bad)


def test_none_context_is_fine(local: ChatGGUF) -> None:
    _valid(Decomposer(llm=local).invoke({"question": "What is 2 plus 2?", "context": None}), 3)


def test_question_over_the_window_names_the_limit() -> None:
    small = ChatGGUF(model="smollm2-135m-instruct", n_ctx=256)
    with pytest.raises(ValueError, match="n_ctx=256"):
        Decomposer(llm=small).invoke("How many apples? " * 200)


def test_unknown_profile_fails_at_construction(local: ChatGGUF) -> None:
    with pytest.raises(ValueError, match="Unknown profile"):
        Decomposer(llm=local, profile="poetry")


async def test_async_and_abatch(local: ChatGGUF) -> None:
    decomposer = Decomposer(llm=local, max_subquestions=2)
    results = await decomposer.abatch(
        ["Tom has 4 boxes of 6 eggs and breaks 3. How many eggs are whole?"] * 4, {"max_concurrency": 4}
    )
    for result in results:
        _valid(result, 2)
    assert len({tuple(r.subquestions) for r in results}) == 1  # greedy decoding is deterministic


# -- other LangChain models: text parser and structured output ------------------------------------------------


def test_any_chat_model_through_the_text_parser() -> None:
    reply = "Here you go:\n1. How many pens are in the boxes?\n2. How many are left after giving 5 away?\nDone."
    decomposer = Decomposer(llm=FakeListChatModel(responses=[reply]), max_subquestions=3)
    result = decomposer.invoke("Tom has 3 boxes of 12 pens and gives away 5. How many are left?")
    assert result.subquestions == ["How many pens are in the boxes?", "How many are left after giving 5 away?"]
    assert result.model == "FakeListChatModel"


def test_completion_llm_through_the_text_parser() -> None:
    decomposer = Decomposer(llm=FakeListLLM(responses=["- What is A?\n- What is B?\n- What is C?\n- What is D?"]))
    assert decomposer.invoke("Q?").subquestions == ["What is A?", "What is B?", "What is C?"]


def test_no_decomposition_reply_means_zero_subquestions() -> None:
    decomposer = Decomposer(llm=FakeListChatModel(responses=["No decomposition needed."]))
    assert decomposer.invoke("What is 2+2?").subquestions == []


@pytest.mark.parametrize("reply", ['{"subquestions": []}', '```json\n{ "subquestions" : [ ] }\n```'])
def test_the_formats_own_empty_plan_from_a_model_without_a_schema(reply: str) -> None:
    # e.g. our distilled decomposer served by llama-server and called through ChatOpenAI (was a DecompositionError)
    decomposer = Decomposer(llm=FakeListChatModel(responses=[reply]), structured_output="never")
    assert decomposer.invoke("What is 2+2?").subquestions == []


def test_unusable_reply_is_a_decomposition_error() -> None:
    decomposer = Decomposer(llm=FakeListChatModel(responses=["I like turtles and long walks."]))
    with pytest.raises(DecompositionError, match="did not say none are needed"):
        decomposer.invoke("What is 2+2?")


class _StructuredChat(BaseChatModel):
    """A scripted chat model with native structured output (the way hosted providers expose it)."""

    calls: list[Any] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-structured"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="unused"))])

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Any:
        self.calls.append(schema)
        raw = AIMessage(content="{}", usage_metadata={"input_tokens": 11, "output_tokens": 7, "total_tokens": 18})
        return RunnableLambda(
            lambda _: {"raw": raw, "parsed": {"subquestions": [" What is x? ", "What is y?", "What is z?", "W?"]}}
        )


def test_structured_output_path_is_used_and_capped() -> None:
    llm = _StructuredChat()
    result = Decomposer(llm=llm, max_subquestions=2).invoke("Q?")
    assert result.subquestions == ["What is x?", "What is y?"]
    assert llm.calls and llm.calls[-1]["properties"]["subquestions"]["maxItems"] == 2
    assert (result.input_tokens, result.output_tokens) == (11, 7)
