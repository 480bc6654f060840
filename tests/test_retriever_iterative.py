"""DecomposingRetriever(iterative=True): each step's answer is read from its top passages and fills later steps.

The rewrite and the bookkeeping are tested with scripted models (GenericFakeChatModel) where the model is not
under test; the last tests run the real SmolLM2-135M as reader (and as decomposer) on a six-passage corpus.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_community.retrievers import BM25Retriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from langchain_dod import ChatGGUF, DecomposingRetriever
from langchain_dod.decomposer import Decomposer
from langchain_dod.retrievers import answer_candidates, parse_answer, pick_answer_span, reader_messages
from tests.test_retriever import TEXTS  # the same tiny bridge corpus, written once

QUESTION = "At the mouth of which river lies the birthplace of the designer of the Varnholt Bridge?"
STEPS = ["Who designed the Varnholt Bridge?", "Where was #1 born?", "At the mouth of which river does #2 lie?"]


def fake(*replies: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))


def decomposer(steps: list[str]) -> Decomposer:
    return Decomposer(llm=fake(json.dumps({"subquestions": steps})), profile="multihop")


def answers(*items: str) -> GenericFakeChatModel:
    return fake(*(json.dumps({"answer": a}) for a in items))


@pytest.fixture
def bm25() -> BM25Retriever:
    return BM25Retriever.from_texts(TEXTS, k=1)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.queries: list[str] = []
        self.prompts: list[str] = []
        self.events: list[tuple[str, Any]] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.queries.append(query)

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.prompts.append(messages[0][-1].content)

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_references_are_filled_with_the_answers_read(bm25: BM25Retriever) -> None:
    recorder = Recorder()
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS), reader=answers("Mira Talloway", "Orrin Cove"), iterative=True
    )
    docs = retriever.invoke(QUESTION, {"callbacks": [recorder]})
    # the outer run, then the question, then each step as rewritten with the answers read so far
    assert recorder.queries[1:] == [
        QUESTION,
        "Who designed the Varnholt Bridge?",
        "Where was Mira Talloway born?",
        "At the mouth of which river does Orrin Cove lie?",
    ]
    trace = docs[0].metadata["dod_trace"]
    assert [s["answer"] for s in trace["steps"]] == ["Mira Talloway", "Orrin Cove", None]  # the last is not read
    assert trace["model_calls"] == 3  # the decomposer, then a reader call for steps 1 and 2
    assert trace["seconds"] >= trace["model_seconds"] >= 0
    assert trace["subquestions"] == STEPS
    assert all(d.metadata["dod_trace"] is trace for d in docs)
    # the reader saw the top passage of the step it answers
    assert "Mira Talloway designed" in recorder.prompts[1] and "Question: Who designed" in recorder.prompts[1]
    assert "Orrin Cove lies at the mouth of the river Seld." in [d.page_content for d in docs]
    # the same trace goes to callbacks as a custom event
    assert recorder.events == [("dod_trace", trace)]


def test_the_span_reader_fills_the_bridges_without_a_model_call(bm25: BM25Retriever) -> None:
    recorder = Recorder()
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS), reader="spans", iterative=True, fills=1
    )  # one fill: the best candidate only (the default, 3, is tested in test_retriever_fills.py)
    docs = retriever.invoke(QUESTION, {"callbacks": [recorder]})
    assert recorder.queries[-2:] == [
        "Where was Mira Talloway born?",
        "At the mouth of which river does Orrin Cove lie?",
    ]
    trace = docs[0].metadata["dod_trace"]
    assert [s["answer"] for s in trace["steps"]] == ["Mira Talloway", "Orrin Cove", None]
    assert trace["model_calls"] == 1  # the decomposer only
    assert len(recorder.prompts) == 1


async def test_the_span_reader_async_matches_sync(bm25: BM25Retriever) -> None:
    def make() -> DecomposingRetriever:
        return DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), reader="spans", iterative=True)

    sync_docs = make().invoke(QUESTION)
    async_docs = await make().ainvoke(QUESTION)
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert async_docs[0].metadata["dod_trace"]["steps"] == sync_docs[0].metadata["dod_trace"]["steps"]


def test_pick_answer_span_prefers_the_type_the_question_asks_for() -> None:
    docs = [
        Document(page_content="Blue Fields\nBlue Fields is a 1990 novel by the Welsh writer Jane Doe, set in Cardiff."),
        Document(page_content="Jane Doe\nJane Doe was born in Swansea on 4 May 1950. She moved to London in 1971."),
    ]
    assert pick_answer_span("Who wrote Blue Fields?", docs) == "Jane Doe"  # a name, not "1990" or "Welsh"
    assert pick_answer_span("When was Jane Doe born?", docs) in {"4 May 1950", "May 1950"}
    assert pick_answer_span("Where was Jane Doe born?", docs) == "Swansea"  # the sentence that shares "born"
    assert pick_answer_span("Who wrote it?", [Document(page_content="nothing here, all lower case.")]) == ""


def test_an_unknown_reader_name_is_refused(bm25: BM25Retriever) -> None:
    with pytest.raises(ValueError, match="spans"):
        DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), reader="span", iterative=True)


def test_pronouns_and_unreferenced_steps_get_the_previous_answer(bm25: BM25Retriever) -> None:
    recorder = Recorder()
    steps = ["Who designed the Varnholt Bridge?", "Where was that engineer born?", "Which river is near there?"]
    DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(steps), reader=answers("Mira Talloway", "Orrin Cove"), iterative=True
    ).invoke(QUESTION, {"callbacks": [recorder]})
    assert recorder.queries[-2:] == ["Where was Mira Talloway born?", "Which river is near there? (Orrin Cove)"]


def test_an_empty_answer_leaves_the_step_as_written(bm25: BM25Retriever) -> None:
    recorder = Recorder()
    docs = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS[:2]), reader=answers(""), iterative=True
    ).invoke(QUESTION, {"callbacks": [recorder]})
    assert recorder.queries[-1] == "Where was #1 born?"
    assert docs[0].metadata["dod_trace"]["steps"][0]["answer"] is None


def test_a_repeated_query_is_retrieved_once(bm25: BM25Retriever) -> None:
    recorder = Recorder()
    docs = DecomposingRetriever(
        retriever=bm25,
        decomposer=decomposer([QUESTION, "Where was #1 born?"]),
        reader=answers("Mira Talloway"),
        iterative=True,
    ).invoke(QUESTION, {"callbacks": [recorder]})
    assert recorder.queries[1:] == [QUESTION, "Where was Mira Talloway born?"]
    assert docs[0].metadata["dod_trace"]["model_calls"] == 2  # the repeated step was still read


def test_failed_decomposition_retrieves_the_question_only(bm25: BM25Retriever) -> None:
    docs = DecomposingRetriever(
        retriever=bm25,
        decomposer=Decomposer(llm=fake("no idea, sorry"), profile="multihop"),
        reader=answers(),
        iterative=True,
    ).invoke(QUESTION)
    assert docs[0].metadata["dod_queries"] == [QUESTION]
    assert docs[0].metadata["dod_trace"]["model_calls"] == 1 and docs[0].metadata["dod_trace"]["steps"] == []


async def test_async_matches_sync(bm25: BM25Retriever) -> None:
    def build() -> DecomposingRetriever:
        return DecomposingRetriever(
            retriever=bm25, decomposer=decomposer(STEPS), reader=answers("Mira Talloway", "Orrin Cove"), iterative=True
        )

    recorder = Recorder()
    sync_docs = build().invoke(QUESTION)
    async_docs = await build().ainvoke(QUESTION, {"callbacks": [recorder]})
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert async_docs[0].metadata["dod_trace"]["steps"] == sync_docs[0].metadata["dod_trace"]["steps"]
    assert [name for name, _ in recorder.events] == ["dod_trace"]


def test_static_mode_is_unchanged(bm25: BM25Retriever) -> None:
    docs = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), k=4).invoke(QUESTION)
    assert "dod_trace" not in docs[0].metadata
    assert "Where was #1 born?" in {q for d in docs for q in d.metadata["dod_queries"]}


def test_the_default_reader_is_the_span_rule_and_none_means_the_decomposer_model() -> None:
    llm = ChatGGUF(model="smollm2-135m-instruct", lora_path="/nowhere/decomposer-lora.gguf")
    decomposer = Decomposer(llm=llm, profile="multihop")
    bm25 = BM25Retriever.from_texts(TEXTS)
    default = DecomposingRetriever(retriever=bm25, decomposer=decomposer, iterative=True)
    assert default.reader == "spans" and default._reader_model() is None
    retriever = DecomposingRetriever(retriever=bm25, decomposer=decomposer, iterative=True, reader=None)
    reader = retriever._reader_model()
    assert isinstance(reader, ChatGGUF) and reader.lora_path is None and reader.model == llm.model


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"answer": "Mira Talloway"}', "Mira Talloway"),
        ('{"answer": "The engineer Mira Tall', "The engineer Mira Tall"),  # cut off by the token limit
        ("The answer is: Orrin Cove.", "Orrin Cove"),
        ("\n  Answer - 1911\nbecause ...", "1911"),
    ],
)
def test_parse_answer(reply: str, expected: str) -> None:
    assert parse_answer(AIMessage(reply)) == expected


def test_answer_candidates_are_new_names_dates_and_numbers() -> None:
    docs = [
        Document(
            page_content="Mountrail County Courthouse\nThe courthouse in Stanley, North Dakota was built in 1914."
        ),
        Document(page_content="Green is an album by Steve Hillage. It was released in April 1978 by the Duke of York."),
    ]
    candidates = answer_candidates("What is the capital of Mountrail County?", docs)
    assert candidates == ["Stanley", "North Dakota", "1914", "Green", "Steve Hillage", "April 1978", "Duke of York"]
    assert "Passages:\nMountrail" in reader_messages("q?", docs[:1], max_chars=20)[-1]["content"]


def test_answer_candidates_do_not_run_across_lines() -> None:
    """A MuSiQue passage is "title\ntext": the title and the text's first name are two candidates, not one."""
    docs = [Document(page_content="Mara Wilson\nMara Elizabeth Wilson is an American actress.")]
    candidates = answer_candidates("Who played Susan Walker in Miracle on 34th Street?", docs)
    assert candidates == ["Mara Wilson", "Mara Elizabeth Wilson", "American"]


# -- the real SmolLM2-135M --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> ChatGGUF:
    return ChatGGUF(model="smollm2-135m-instruct", max_tokens=96, n_threads=1)


def test_real_reader_bridges_three_hops(bm25: BM25Retriever, smollm2: ChatGGUF) -> None:
    """The plan is fixed (scripted); the real model must read each bridge entity from the top passage."""
    docs = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS), reader=smollm2, iterative=True, k=4
    ).invoke(QUESTION)
    trace = docs[0].metadata["dod_trace"]
    assert [s["query"] for s in trace["steps"]] == [
        "Who designed the Varnholt Bridge?",
        "Where was Mira Talloway born?",
        "At the mouth of which river does Orrin Cove lie?",
    ]
    assert trace["model_calls"] == 3 and trace["model_seconds"] > 0
    assert {
        "Mira Talloway was born in the fishing village of Orrin Cove.",
        "Orrin Cove lies at the mouth of the river Seld.",
    } <= {d.page_content for d in docs}


def test_real_model_end_to_end(bm25: BM25Retriever, smollm2: ChatGGUF) -> None:
    """Decomposer and reader both the real model: whatever plan it writes, the call is complete and costed."""
    recorder = Recorder()
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=Decomposer(llm=smollm2, profile="multihop"), iterative=True, k=3, reader=smollm2
    )
    docs = retriever.invoke(QUESTION, {"callbacks": [recorder]})
    trace = docs[0].metadata["dod_trace"]
    assert 1 <= len(docs) <= 3
    assert trace["model_calls"] == 1 + max(0, len(trace["subquestions"]) - 1)
    assert trace["seconds"] >= trace["model_seconds"] > 0
    assert len(trace["steps"]) == len(trace["subquestions"])
    assert recorder.events and recorder.events[0][0] == "dod_trace"


class TestIterativeStandard(RetrieversIntegrationTests):
    """langchain-tests' standard retriever suite, iterative mode, real SmolLM2 decomposer, the default (span) reader."""

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return DecomposingRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        llm = ChatGGUF(model="smollm2-135m-instruct", max_tokens=96, n_threads=1)
        return {
            "retriever": BM25Retriever.from_texts(TEXTS, k=3),
            "decomposer": Decomposer(llm=llm, profile="multihop"),
            "iterative": True,
            "k": 2,
        }

    @property
    def retriever_query_example(self) -> str:
        return "Near which river was the designer of the Varnholt Bridge born?"


def test_three_fills_by_default_with_the_span_reader_one_with_a_model(bm25: BM25Retriever) -> None:
    spans = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True)
    assert (spans.reader, spans.fills) == ("spans", 3)
    model = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), reader=answers("A"), iterative=True)
    assert model.fills == 1  # a model reader names one answer
    with pytest.raises(ValueError, match="fills=2 needs reader='spans'"):
        DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), reader=answers("A"), fills=2)
