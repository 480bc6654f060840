"""DecomposingRetriever(iterative=True, fill_feedback=T): a bridge's candidates ranked by what their queries find.

With ``fill_feedback`` each of the span reader's first ``fill_pool`` candidates rewrites the later step and is
retrieved; a candidate whose own query's first T documents are *about* it (title or first sentence) goes first.
A tiny BM25 corpus where the span rule's best candidate is the wrong one and only the right one has a passage
about it; scripted decomposers (the decomposer is not under test) and, last, the real SmolLM2-135M.
"""

from __future__ import annotations

import json

import pytest
from langchain_community.retrievers import BM25Retriever
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langchain_dod import ChatGGUF, DecomposingRetriever
from langchain_dod.decomposer import Decomposer
from langchain_dod.decomposition_model import Decomposition
from langchain_dod.retrievers import _head, _IterativeRun, _support, rank_answer_spans

# The builder comes first in the bridge passage, so the span rule answers "Who designed ...?" with him; only the
# designer has a passage of her own (title "Mira Talloway"); the builder's birthplace passage is about the town.
TEXTS = [
    "Varnholt Bridge\nGustav Brenn built the Varnholt Bridge that Mira Talloway designed.",
    "Mira Talloway\nMira Talloway was born in the fishing village of Orrin Cove.",
    "Kessler\nKessler is a market town famous for its clock tower. The engineer Gustav Brenn was born there.",
    "Orrin Cove\nOrrin Cove lies at the mouth of the river Seld.",
    "River Seld\nThe river Seld freezes over in most winters.",
]
QUESTION = "Where was the designer of the Varnholt Bridge born?"
STEPS = ["Who designed the Varnholt Bridge?", "Where was #1 born?"]


def decomposer(steps: list[str]) -> Decomposer:
    reply = AIMessage(json.dumps({"subquestions": steps}))
    return Decomposer(llm=GenericFakeChatModel(messages=iter([reply])), profile="multihop")


@pytest.fixture
def bm25() -> BM25Retriever:
    docs = [Document(page_content=t, id=str(i), metadata={"title": t.split("\n")[0]}) for i, t in enumerate(TEXTS)]
    return BM25Retriever.from_documents(docs, k=2)


def test_head_is_the_title_and_the_first_sentence() -> None:
    titled = Document(
        page_content="Kessler\nKessler is a town. Gustav Brenn was born there.", metadata={"title": "Kessler"}
    )
    assert _head(titled) == "kessler\nkessler is a town."
    # no title in the metadata: a first line followed by more text is the title
    assert _head(Document(page_content="Orrin Cove\nIt lies at the mouth of the Seld. Fish.")) == (
        "orrin cove\nit lies at the mouth of the seld."
    )
    # one line only: no title, the first sentence
    assert _head(Document(page_content="Mira Talloway was born in Orrin Cove. She moved.")) == (
        "\nmira talloway was born in orrin cove."
    )
    # a metadata title that the text does not repeat: the text's first sentence is still read
    assert _head(Document(page_content="Born in 1901. Died 1950.", metadata={"title": "Gustav Brenn"})) == (
        "gustav brenn\nborn in 1901."
    )


def test_support_counts_an_earlier_document_more() -> None:
    about = Document(page_content="Mira Talloway\nShe was born in Orrin Cove.")
    mentions = Document(page_content="Orrin Cove\nA village. Mira Talloway was born there.")
    assert _support("Mira Talloway", [about]) == 1.0
    assert _support("Mira Talloway", [mentions, about]) == 0.5  # named only in the second's title
    assert _support("Mira Talloway", [mentions]) == 0.0  # named, but not in its title or first sentence


def test_the_rule_alone_picks_the_builder(bm25: BM25Retriever) -> None:
    docs = bm25.invoke(STEPS[0])[:2]
    assert rank_answer_spans(STEPS[0], docs)[:2] == ["Gustav Brenn", "Mira Talloway"]


def ask(bm25: BM25Retriever, **options: object) -> list[Document]:
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=2, k=5, **options
    )
    return retriever.invoke(QUESTION)


def test_feedback_puts_the_candidate_with_a_passage_of_its_own_first(bm25: BM25Retriever) -> None:
    trace = ask(bm25, fill_feedback=0)[0].metadata["dod_trace"]
    assert trace["steps"][0]["answer"] == "Gustav Brenn"
    assert trace["steps"][1]["query"] == "Where was Gustav Brenn born?"

    docs = ask(bm25, fill_feedback=1, fill_pool=2)
    trace = docs[0].metadata["dod_trace"]
    assert trace["steps"][0]["answer"] == "Mira Talloway"
    assert trace["steps"][0]["answers"] == ["Mira Talloway", "Gustav Brenn"]
    assert trace["steps"][0]["support"] == {"Mira Talloway": 1.0, "Gustav Brenn": 0.0}
    assert trace["steps"][1]["query"] == "Where was Mira Talloway born?"
    assert trace["steps"][1]["fills"] == ["Where was Gustav Brenn born?"]
    assert docs[0].metadata["dod_trace"]["model_calls"] == 1  # feedback costs retrievals, no model call


def test_the_passages_the_bridge_was_read_from_do_not_count(bm25: BM25Retriever) -> None:
    """The bridge passage names both candidates in its first sentence: it must not support either."""
    owner = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=2, fill_feedback=2, fill_pool=2
    )
    run = _IterativeRun(owner, QUESTION, Decomposition(subquestions=STEPS, model="scripted"), 0.0)
    bridge = Document(page_content=TEXTS[0], id="0")
    kessler, mira = Document(page_content=TEXTS[2], id="2"), Document(page_content=TEXTS[1], id="1")
    run.results = [[]]  # the question's list
    run.add(run.next_query(1, STEPS[0]), [bridge])
    run.answered_spans(1, ["Gustav Brenn", "Mira Talloway"])
    run.next_query(2, STEPS[1])
    assert run.wants_feedback(2, STEPS[1])
    asked = run.candidate_queries(2, STEPS[1])
    assert asked == ["Where was Gustav Brenn born?", "Where was Mira Talloway born?"]
    # Gustav's query finds the bridge passage first (named in its first sentence), Mira's her own passage second
    best = run.rank_by_feedback(2, STEPS[1], dict(zip(asked, [[bridge, kessler], [kessler, mira]], strict=True)))
    assert best == "Where was Mira Talloway born?"
    assert run.trace_steps[0]["support"] == {"Mira Talloway": 0.5, "Gustav Brenn": 0.0}
    assert run.queries[-2:] == ["Where was Mira Talloway born?", "Where was Gustav Brenn born?"]
    assert run.weights[-2:] == [1.0, owner.fill_weight] and run.depths[-2:] == [None, owner.fill_depth]


def test_feedback_ties_keep_the_reader_order(bm25: BM25Retriever) -> None:
    """No candidate has a passage about it: the order stays the span reader's, the best list is the reader's."""
    docs = [Document(page_content="Kessler\nA market town.", metadata={"title": "Kessler"})]
    owner = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fill_feedback=1)
    run = _IterativeRun(owner, QUESTION, Decomposition(subquestions=STEPS, model="scripted"), 0.0)
    run.results = [[]]  # the question's list
    run.add(run.next_query(1, STEPS[0]), docs)
    run.answered_spans(1, ["Gustav Brenn", "Mira Talloway", "Orrin Cove"])
    run.next_query(2, STEPS[1])
    asked = run.candidate_queries(2, STEPS[1])
    assert run.rank_by_feedback(2, STEPS[1], {q: docs for q in asked}) == "Where was Gustav Brenn born?"
    assert run.ranked[1] == ["Gustav Brenn", "Mira Talloway", "Orrin Cove"]


def test_pool_keeps_more_candidates_than_fills(bm25: BM25Retriever) -> None:
    owner = DecomposingRetriever(
        retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=2, fill_feedback=1, fill_pool=4
    )
    run = _IterativeRun(owner, QUESTION, Decomposition(subquestions=STEPS, model="scripted"), 0.0)
    run.results = [[]]  # the question's list
    run.add(run.next_query(1, STEPS[0]), [Document(page_content=TEXTS[0])])
    run.answered_spans(1, ["A One", "B Two", "C Three", "D Four", "E Five"])
    assert run.ranked[1] == ["A One", "B Two", "C Three", "D Four"]  # the pool, ranked by feedback later
    run.next_query(2, STEPS[1])
    found = {q: [Document(page_content="Elsewhere\nA town.")] for q in run.candidate_queries(2, STEPS[1])}
    found["Where was D Four born?"] = [Document(page_content="D Four\nD Four is a place.")]
    run.rank_by_feedback(2, STEPS[1], found)
    assert run.ranked[1] == ["D Four", "A One"]  # the first ``fills`` after feedback
    assert run.answers[1] == "D Four"


def test_options_are_checked(bm25: BM25Retriever) -> None:
    reader = GenericFakeChatModel(messages=iter([]))
    with pytest.raises(ValueError, match="fill_feedback"):
        DecomposingRetriever(
            retriever=bm25, decomposer=decomposer(STEPS), iterative=True, reader=reader, fill_feedback=1
        )
    with pytest.raises(ValueError):
        DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fill_feedback=-1)
    with pytest.raises(ValueError):
        DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fill_pool=0)


def test_defaults(bm25: BM25Retriever) -> None:
    """The span reader's iterative mode: feedback on, a pool of 8, fill_weight 0.5 and RRF k 0 (issue 13); static
    mode: RRF k 0 and question weight 2; a model reader: RRF k 60."""
    spans = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True)
    assert (spans.fills, spans.fill_feedback, spans.fill_pool, spans.fill_weight, spans.rrf_k) == (3, 1, 8, 0.5, 0)
    assert DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, rrf_k=60).rrf_k == 60
    assert spans.question_weight == 1.0  # the static default (2) does not apply: the iterative fusion weighs 1
    static = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS))
    assert (static.rrf_k, static.question_weight) == (0, 2.0)  # the static mode's own tuning (musique_static)
    reader = GenericFakeChatModel(messages=iter([]))
    model = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, reader=reader)
    assert (model.fills, model.fill_feedback, model.rrf_k) == (1, 0, 60)  # measured with rrf_k 60; unchanged
    told = DecomposingRetriever(retriever=bm25, decomposer=decomposer(STEPS), iterative=True, reader=reader, rrf_k=5)
    assert told.rrf_k == 5


async def test_async_feedback_matches_sync(bm25: BM25Retriever) -> None:
    def make() -> DecomposingRetriever:
        return DecomposingRetriever(
            retriever=bm25, decomposer=decomposer(STEPS), iterative=True, fills=2, fill_feedback=1, k=5
        )

    sync_docs = make().invoke(QUESTION)
    async_docs = await make().ainvoke(QUESTION)
    assert [d.page_content for d in async_docs] == [d.page_content for d in sync_docs]
    assert async_docs[0].metadata["dod_trace"]["steps"] == sync_docs[0].metadata["dod_trace"]["steps"]
    assert sync_docs[0].metadata["dod_trace"]["steps"][0]["answer"] == "Mira Talloway"


def test_real_decomposer_with_feedback(bm25: BM25Retriever) -> None:
    """The real SmolLM2-135M writes the plan; feedback adds retrievals, never model calls, and shows in the trace."""
    llm = ChatGGUF(model="smollm2-135m-instruct", max_tokens=96, n_threads=1)
    retriever = DecomposingRetriever(
        retriever=bm25, decomposer=Decomposer(llm=llm, profile="multihop"), iterative=True, k=3
    )
    docs = retriever.invoke(QUESTION)
    trace = docs[0].metadata["dod_trace"]
    assert 1 <= len(docs) <= 3 and trace["model_calls"] == 1
    for step in trace["steps"]:
        assert len(step.get("answers", [])) <= 3
        if "support" in step:
            assert step["answers"] == list(step["support"])[:3] and step["answer"] == step["answers"][0]
