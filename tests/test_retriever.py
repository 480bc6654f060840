"""DecomposingRetriever: fusion arithmetic, which queries reach the base retriever, callbacks, sync/async.

The base retriever is always a real BM25 index. The decomposer is scripted (GenericFakeChatModel) where the
test is about the retriever's own logic, so the sub-questions are known; the standard-test class in
``test_retriever_standard.py`` runs the real SmolLM2 decomposer.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_community.retrievers import BM25Retriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_dod import DecomposingRetriever
from langchain_dod.decomposer import Decomposer
from langchain_dod.retrievers import reciprocal_rank_fusion

TEXTS = [
    "The Varnholt Bridge crosses the river Ebbe in the town of Kessler.",
    "The engineer Mira Talloway designed the Varnholt Bridge in 1911.",
    "Mira Talloway was born in the fishing village of Orrin Cove.",
    "Orrin Cove lies at the mouth of the river Seld.",
    "The town of Kessler is famous for its clock tower and its cheese market.",
    "The river Seld freezes over in most winters.",
]
QUESTION = "Where was the designer of the Varnholt Bridge born?"
SUBQUESTIONS = ["Who designed the Varnholt Bridge?", "Where was Mira Talloway born?"]


def scripted_decomposer(*replies: str) -> Decomposer:
    """Build a Decomposer whose model replies with fixed text (the decomposer itself is tested elsewhere)."""
    return Decomposer(llm=GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies])), profile="multihop")


def subquestion_reply(items: list[str]) -> str:
    import json

    return json.dumps({"subquestions": items})


@pytest.fixture
def bm25() -> BM25Retriever:
    return BM25Retriever.from_texts(TEXTS, metadatas=[{"n": i} for i in range(len(TEXTS))], k=2)


class Recorder(BaseCallbackHandler):
    """Collects the queries the retriever runs saw and the chains that started."""

    def __init__(self) -> None:
        self.retriever_queries: list[str] = []
        self.chains: list[str] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.retriever_queries.append(query)

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        self.chains.append(kwargs.get("name") or "")


def test_rrf_scores_and_order() -> None:
    a, b, c = (Document(page_content=t) for t in ("a", "b", "c"))
    fused = reciprocal_rank_fusion([[a, b], [b, c]], ["q1", "q2"], rrf_k=60)
    assert [d.page_content for d in fused] == ["b", "a", "c"]
    assert fused[0].metadata["dod_rrf_score"] == pytest.approx(1 / 62 + 1 / 61, abs=1e-6)
    assert fused[1].metadata["dod_rrf_score"] == pytest.approx(1 / 61, abs=1e-6)
    assert fused[0].metadata["dod_queries"] == ["q1", "q2"]
    assert fused[2].metadata["dod_queries"] == ["q2"]


def test_rrf_dedupes_by_id_then_content_and_never_mutates_inputs() -> None:
    x1 = Document(id="x", page_content="one text", metadata={"src": 1})
    x2 = Document(id="x", page_content="other text", metadata={"src": 2})  # same id: same document
    y1 = Document(page_content="y", metadata={"src": 3})
    y2 = Document(page_content="y", metadata={"src": 3})  # no id, same content+metadata
    y3 = Document(page_content="y", metadata={"src": 4})  # same text, different metadata: distinct
    fused = reciprocal_rank_fusion([[x1, y1], [y2, x2, y3]], ["q1", "q2"])
    assert len(fused) == 3
    assert {d.metadata["src"] for d in fused} == {1, 3, 4}
    assert "dod_queries" not in x1.metadata and "dod_queries" not in y2.metadata


def test_rrf_rejects_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="must match"):
        reciprocal_rank_fusion([[]], ["a", "b"])


def test_subquestions_reach_the_base_retriever(bm25: BM25Retriever) -> None:
    recorder = Recorder()
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=scripted_decomposer(subquestion_reply(SUBQUESTIONS)), k=4
    )
    docs = retriever.invoke(QUESTION, {"callbacks": [recorder]})
    # the outer run plus one child run per query, all through the base retriever's batch
    assert recorder.retriever_queries[0] == QUESTION
    assert sorted(recorder.retriever_queries[1:]) == sorted([QUESTION, *SUBQUESTIONS])
    assert any(name == "Decomposer" for name in recorder.chains)
    texts = [d.page_content for d in docs]
    assert len(set(texts)) == len(texts) == 3  # three queries x top-2 each, fused and deduplicated
    birthplace = next(d for d in docs if "born in" in d.page_content)
    assert "Where was Mira Talloway born?" in birthplace.metadata["dod_queries"]
    scores = [d.metadata["dod_rrf_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    # the corpus held by BM25 is untouched
    assert all("dod_queries" not in d.metadata for d in bm25.docs)


def test_per_call_k_and_include_original(bm25: BM25Retriever) -> None:
    retriever = DecomposingRetriever(
        retriever=bm25,
        decomposer=scripted_decomposer(subquestion_reply(SUBQUESTIONS)),
        k=4,
        include_original=False,
    )
    docs = retriever.invoke(QUESTION, k=1)
    assert len(docs) == 1
    assert QUESTION not in docs[0].metadata["dod_queries"]


async def test_async_matches_sync(bm25: BM25Retriever) -> None:
    reply = subquestion_reply(SUBQUESTIONS)
    sync_docs = DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(reply), k=3).invoke(QUESTION)
    recorder = Recorder()
    async_docs = await DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(reply), k=3).ainvoke(
        QUESTION, {"callbacks": [recorder]}
    )
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert [d.metadata for d in async_docs] == [d.metadata for d in sync_docs]
    assert sorted(recorder.retriever_queries[1:]) == sorted([QUESTION, *SUBQUESTIONS])


def test_failed_decomposition_falls_back_to_the_question(bm25: BM25Retriever, caplog) -> None:
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=scripted_decomposer("I think it was somewhere near the sea."), k=2
    )
    with caplog.at_level("WARNING"):
        docs = retriever.invoke(QUESTION)
    assert len(docs) == 2
    assert all(d.metadata["dod_queries"] == [QUESTION] for d in docs)
    assert "original question only" in caplog.text


def test_no_subquestions_uses_the_question_even_without_include_original(bm25: BM25Retriever) -> None:
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=scripted_decomposer(subquestion_reply([])), include_original=False, k=2
    )
    docs = retriever.invoke("Where does the river Seld freeze?")
    assert docs and docs[0].metadata["dod_queries"] == ["Where does the river Seld freeze?"]


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_bad_k_is_a_clear_error(bm25: BM25Retriever, bad: Any) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(), k=bad)
    retriever = DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(), k=2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.invoke(QUESTION, k=bad)


def test_empty_query_is_a_clear_error(bm25: BM25Retriever) -> None:
    retriever = DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(), k=2)
    with pytest.raises(ValueError, match="question is empty"):
        retriever.invoke("   ")


# Both sub-questions find the designer's paragraph (1) first; only the question finds the birthplace (2), second.
AGREEING = ["Who designed the Varnholt Bridge?", "Which engineer designed the bridge in 1911?"]


def _fused(bm25: BM25Retriever, **options: Any) -> list[Document]:
    decomposer = scripted_decomposer(subquestion_reply(AGREEING))
    return DecomposingRetriever(retriever=bm25, decomposer=decomposer, k=3, **options).invoke(QUESTION)


def test_question_weight_lifts_the_questions_list(bm25: BM25Retriever) -> None:
    # the question's list is [0, 2], each sub-question's [1, 0] (BM25, k=2); the paper's rrf_k 60
    assert [d.metadata["n"] for d in _fused(bm25, rrf_k=60, question_weight=1.0)] == [0, 1, 2]  # 2/61 beats 1/62
    weighted = _fused(bm25, rrf_k=60, question_weight=3.0)
    assert [d.metadata["n"] for d in weighted] == [0, 2, 1]  # 3/62 beats 2/61
    assert weighted[0].metadata["dod_rrf_score"] == round(3 / 61 + 2 / 62, 6)
    assert weighted[1].metadata["dod_rrf_score"] == round(3 / 62, 6)
    assert weighted[2].metadata["dod_rrf_score"] == round(2 / 61, 6)


def test_static_defaults_are_rrf_k_0_and_question_weight_2(bm25: BM25Retriever) -> None:
    # chosen on MuSiQue train100 (issue 13): the question's first document scores 2/1 + 2 * 1/2, each
    # sub-question's first 1/1 twice, the question's second 2/2
    retriever = DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer())
    assert (retriever.rrf_k, retriever.question_weight) == (0, 2.0)
    fused = _fused(bm25)
    assert [d.metadata["n"] for d in fused] == [0, 1, 2]
    assert [d.metadata["dod_rrf_score"] for d in fused] == [3.0, 2.0, 1.0]
    assert [d.metadata for d in fused] == [d.metadata for d in _fused(bm25, rrf_k=0, question_weight=2.0)]


async def test_question_weight_async_matches_sync(bm25: BM25Retriever) -> None:
    decomposer = scripted_decomposer(subquestion_reply(AGREEING))
    retriever = DecomposingRetriever(retriever=bm25, decomposer=decomposer, k=3, question_weight=3.0)
    docs = await retriever.ainvoke(QUESTION)
    assert [d.metadata for d in docs] == [d.metadata for d in _fused(bm25, question_weight=3.0)]


def test_question_weight_needs_the_question_in_the_fusion(bm25: BM25Retriever) -> None:
    # without the original question there is nothing to weight: the sub-questions' fusion is unchanged
    plain = _fused(bm25, include_original=False)
    assert [d.metadata for d in _fused(bm25, include_original=False, question_weight=3.0)] == [
        d.metadata for d in plain
    ]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_bad_question_weight_is_a_clear_error(bm25: BM25Retriever, bad: float) -> None:
    with pytest.raises(ValueError, match="question_weight must be a finite number > 0"):
        DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(), question_weight=bad)


def test_question_weight_is_refused_in_iterative_mode(bm25: BM25Retriever) -> None:
    with pytest.raises(ValueError, match="static mode only"):
        DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(), iterative=True, question_weight=2.0)
    DecomposingRetriever(retriever=bm25, decomposer=scripted_decomposer(), iterative=True, question_weight=1.0)
