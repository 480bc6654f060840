"""DecomposingRetriever(iterative=True, fills=m): a bridge filled with the span reader's first m candidates.

The span reader ranks candidates by rule (``rank_answer_spans``); with ``fills=m`` each later step is retrieved
once per each of the first m candidates for the bridge it uses, and every list is fused. Scripted decomposers
and a six-passage BM25 corpus where the best-ranked candidate is the wrong one; the last test runs the real
SmolLM2-135M as decomposer.
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

from langchain_dod import ChatGGUF, DecomposingRetriever
from langchain_dod.decomposer import Decomposer
from langchain_dod.retrievers import (
    _IterativeRun,
    pick_answer_span,
    rank_answer_spans,
    reciprocal_rank_fusion,
)

# The designer's passage names the builder first, so the span rule's best answer to "Who designed ...?" is the
# builder (earlier in the same sentence); the designer is its second candidate.
TEXTS = [
    "Varnholt Bridge\nGustav Brenn built the Varnholt Bridge that Mira Talloway designed.",
    "Mira Talloway was born in the fishing village of Orrin Cove.",
    "Gustav Brenn was born in Kessler, a market town.",
    "Orrin Cove lies at the mouth of the river Seld.",
    "The town of Kessler is famous for its clock tower and its cheese market.",
    "The river Seld freezes over in most winters.",
]
QUESTION = "Where was the designer of the Varnholt Bridge born?"
STEPS = ["Who designed the Varnholt Bridge?", "Where was #1 born?"]
BIRTHPLACE = "Mira Talloway was born in the fishing village of Orrin Cove."


def decomposer(steps: list[str]) -> Decomposer:
    reply = AIMessage(json.dumps({"subquestions": steps}))
    return Decomposer(llm=GenericFakeChatModel(messages=iter([reply])), profile="multihop")


@pytest.fixture
def bm25() -> BM25Retriever:
    return BM25Retriever.from_texts(TEXTS, k=1)


class Queries(BaseCallbackHandler):
    def __init__(self) -> None:
        self.queries: list[str] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.queries.append(query)


# -- the ranking ------------------------------------------------------------------------------------------------

DOCS = [
    Document(page_content="Blue Fields\nBlue Fields is a 1990 novel by the Welsh writer Jane Doe, set in Cardiff."),
    Document(page_content="Jane Doe\nJane Doe was born in Swansea on 4 May 1950. She moved to London in 1971."),
]


def test_rank_answer_spans_orders_every_candidate_by_the_rule() -> None:
    # a name before a demonym or a number; then the sentence sharing "Blue Fields"; then the earlier passage
    assert rank_answer_spans("Who wrote Blue Fields?", DOCS) == [
        "Jane Doe",
        "Cardiff",
        "Swansea",
        "London",
        "1990",
        "Welsh",
        "4 May 1950",
        "1971",
    ]
    # "when": dates first, the one in the sentence that shares "Jane Doe born" before the others
    assert rank_answer_spans("When was Jane Doe born?", DOCS)[:3] == ["4 May 1950", "1990", "1971"]
    assert rank_answer_spans("Who wrote it?", [Document(page_content="nothing here, all lower case.")]) == []


@pytest.mark.parametrize(
    "question", ["Who wrote Blue Fields?", "When was Jane Doe born?", "Where was Jane Doe born?", "How many?"]
)
def test_pick_answer_span_is_the_first_ranked(question: str) -> None:
    assert pick_answer_span(question, DOCS) == rank_answer_spans(question, DOCS)[0]


def test_a_candidate_in_no_single_sentence_ranks_last() -> None:
    """ "J. R. R. Tolkien" runs across what the sentence splitter takes for sentence ends."""
    docs = [Document(page_content="The Hobbit was written by J. R. R. Tolkien in Oxford.")]
    assert rank_answer_spans("Who wrote The Hobbit?", docs) == ["Oxford", "J. R. R. Tolkien"]


# -- weighted fusion --------------------------------------------------------------------------------------------


def test_fusion_weights_scale_each_list() -> None:
    a, b = Document(page_content="a", id="a"), Document(page_content="b", id="b")
    fused = reciprocal_rank_fusion([[a], [b]], ["q1", "q2"], rrf_k=0, weights=[1.0, 0.5])
    assert [(d.id, d.metadata["dod_rrf_score"]) for d in fused] == [("a", 1.0), ("b", 0.5)]
    assert [d.id for d in reciprocal_rank_fusion([[a], [b]], ["q1", "q2"], rrf_k=0, weights=[0.5, 1.0])] == ["b", "a"]
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([[a], [b]], ["q1", "q2"], weights=[1.0])


# -- the rewriting ----------------------------------------------------------------------------------------------


def run_for(
    steps: list[str], fills: int, bm25: BM25Retriever, fill_weight: float = 1.0, fill_depth: int | None = 1
) -> _IterativeRun:
    owner = DecomposingRetriever(
        retriever=bm25,
        decomposer=decomposer(steps),
        iterative=True,
        fills=fills,
        fill_weight=fill_weight,
        fill_depth=fill_depth,
    )
    from langchain_dod.decomposition_model import Decomposition

    return _IterativeRun(owner, QUESTION, Decomposition(subquestions=steps, model="scripted"), 0.0)


def test_only_the_most_recent_bridge_is_varied(bm25: BM25Retriever) -> None:
    steps = ["Who designed it?", "Where was #1 born?", "When did #1 move to #2?"]
    run = run_for(steps, 3, bm25, fill_weight=0.5)
    run.answers = {1: "Mira Talloway", 2: "Orrin Cove"}
    run.ranked = {1: ["Mira Talloway", "Gustav Brenn"], 2: ["Orrin Cove", "Kessler", "Seld"]}
    assert run.next_query(3, steps[2]) == "When did Mira Talloway move to Orrin Cove?"
    assert run.fill_queries(3, steps[2]) == [
        "When did Mira Talloway move to Kessler?",  # #1 keeps its best answer
        "When did Mira Talloway move to Seld?",
    ]
    assert run.trace_steps[-1]["fills"] == run.fill_queries(3, steps[2])
    run.add_fills(run.fill_queries(3, steps[2]), [[], []])
    assert run.weights[-2:] == [0.5, 0.25]  # fill_weight ** (rank - 1)


def test_a_pronoun_or_no_reference_varies_the_previous_answer(bm25: BM25Retriever) -> None:
    steps = ["Who designed it?", "Where was he born?", "Which river is near there?"]
    run = run_for(steps, 2, bm25)
    run.answers, run.ranked = {1: "Gustav Brenn"}, {1: ["Gustav Brenn", "Mira Talloway"]}
    run.next_query(2, steps[1])
    assert run.fill_queries(2, steps[1]) == ["Where was Mira Talloway born?"]
    run.answers[2], run.ranked[2] = "Kessler", ["Kessler", "Orrin Cove", "Kessler"]
    run.add(run.next_query(3, steps[2]), [])  # the best fill, retrieved: a fill equal to it is not asked again
    assert run.fill_queries(3, steps[2]) == ["Which river is near there? (Orrin Cove)"]


def test_a_lower_fill_adds_only_its_first_documents(bm25: BM25Retriever) -> None:
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(TEXTS)]
    # ties (every list's first document) keep first-seen order: the question's, the step's, the fill's
    expected = {1: ["0", "2", "3", "1"], 2: ["0", "2", "3", "1", "4"], None: ["0", "2", "3", "1", "4", "5"]}
    for depth, fused in expected.items():
        run = run_for(STEPS, 2, bm25, fill_depth=depth)
        run.results = [[docs[0], docs[1]]]  # the question's list
        run.answers, run.ranked = {1: "Gustav Brenn"}, {1: ["Gustav Brenn", "Mira Talloway"]}
        run.add(run.next_query(2, STEPS[1]), [docs[2]])
        run.add_fills(run.fill_queries(2, STEPS[1]), [[docs[3], docs[4], docs[5]]])
        assert [d.id for d in run.finish(k=10)] == fused
        assert run.results[-1] == [docs[3], docs[4], docs[5]]  # kept whole for reading; cut only in the fusion


def test_fills_one_asks_nothing_more(bm25: BM25Retriever) -> None:
    run = run_for(STEPS, 1, bm25)
    run.answers, run.ranked = {1: "Gustav Brenn"}, {1: ["Gustav Brenn", "Mira Talloway"]}
    run.next_query(2, STEPS[1])
    assert run.fill_queries(2, STEPS[1]) == []
    assert "fills" not in run.trace_steps[-1]


# -- end to end -------------------------------------------------------------------------------------------------


def test_the_second_candidate_finds_the_passage_the_best_misses(bm25: BM25Retriever) -> None:
    def ask(fills: int) -> tuple[list[Document], list[str]]:
        recorder = Queries()
        retriever = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=fills, k=4)
        return retriever.invoke(QUESTION, {"callbacks": [recorder]}), recorder.queries[1:]

    docs, queries = ask(1)
    assert queries == [QUESTION, STEPS[0], "Where was Gustav Brenn born?"]  # the rule's best is the builder
    assert BIRTHPLACE not in [d.page_content for d in docs]
    assert set(docs[0].metadata["dod_trace"]["steps"][0]) == {"subquestion", "query", "answer"}  # as before

    docs, queries = ask(2)
    assert queries == [QUESTION, STEPS[0], "Where was Gustav Brenn born?", "Where was Mira Talloway born?"]
    assert BIRTHPLACE in [d.page_content for d in docs]
    trace = docs[0].metadata["dod_trace"]
    assert trace["steps"][0]["answer"] == "Gustav Brenn"
    assert trace["steps"][0]["answers"] == ["Gustav Brenn", "Mira Talloway"]
    assert trace["steps"][1]["query"] == "Where was Gustav Brenn born?"
    assert trace["steps"][1]["fills"] == ["Where was Mira Talloway born?"]
    assert trace["model_calls"] == 1  # the decomposer only: filling costs retrievals, not model calls


async def test_async_fills_match_sync(bm25: BM25Retriever) -> None:
    def make() -> DecomposingRetriever:
        return DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=3, k=4)

    sync_docs = make().invoke(QUESTION)
    async_docs = await make().ainvoke(QUESTION)
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert async_docs[0].metadata["dod_trace"]["steps"] == sync_docs[0].metadata["dod_trace"]["steps"]
    assert sync_docs[0].metadata["dod_trace"]["steps"][1]["fills"]


def test_a_model_reader_refuses_more_than_one_fill(bm25: BM25Retriever) -> None:
    reader = GenericFakeChatModel(messages=iter([]))
    with pytest.raises(ValueError, match="fills=2 needs reader='spans'"):
        DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, reader=reader, fills=2)
    with pytest.raises(ValueError):
        DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=0)
    DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, reader=reader, fills=1)


def test_real_decomposer_with_fills(bm25: BM25Retriever) -> None:
    """The real SmolLM2-135M writes the plan; fills add retrievals, never model calls, and show in the trace."""
    llm = ChatGGUF(model="smollm2-135m-instruct", max_tokens=96, n_threads=1)
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=Decomposer(llm=llm, profile="multihop"), iterative=True, fills=3, k=3
    )
    docs = retriever.invoke(QUESTION)
    trace = docs[0].metadata["dod_trace"]
    assert 1 <= len(docs) <= 3 and trace["model_calls"] == 1
    assert all("fills" in step and len(step["fills"]) <= 2 for step in trace["steps"])
    assert all(len(step.get("answers", [])) <= 3 for step in trace["steps"])
