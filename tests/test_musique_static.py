"""benchmarks/musique_static.py: the experiment options (step decay, how steps naming ``#N`` are sent)."""

from __future__ import annotations

from langchain_community.retrievers import BM25Retriever
from langchain_core.documents import Document

from benchmarks import musique_static
from langchain_dod import ChatGGUF, Decomposer
from langchain_dod.decomposition_model import Decomposition

STEPS = ["Who is the husband of Empress Wang?", "Who is the father of #1?", "Where was #2 born ?"]


def test_nest_references_writes_each_reference_out_as_what_its_step_asks() -> None:
    assert musique_static.nest_references(STEPS) == [
        "Who is the husband of Empress Wang?",
        "Who is the father of the husband of Empress Wang?",
        "Where was the father of the husband of Empress Wang born?",
    ]
    # a reference to a later or missing step is kept; no reference, no change (tidied)
    assert musique_static.nest_references(["What is #2 near?", "Where is  Bonn ?"]) == [
        "What is #2 near?",
        "Where is Bonn?",
    ]
    assert musique_static.nest_references([]) == []


def test_the_references_variants_change_what_is_retrieved() -> None:
    docs = [Document(id=str(i), page_content=t) for i, t in enumerate(["Empress Wang married Liu.", "Liu's father."])]
    base = BM25Retriever.from_documents(docs, k=2)
    plan = Decomposer(llm=ChatGGUF(model="smollm2-135m-instruct"), profile="multihop")  # not called: no load
    sent = {}
    for how in ("nest", "skip"):
        options = musique_static.variants()[f"rrf_k 0, question_weight 2, references {how}"]
        retriever = musique_static._retriever(options, retriever=base, decomposer=plan, k=2)
        sent[how] = retriever._queries("Q?", Decomposition(subquestions=STEPS))
    assert sent["nest"] == ["Q?", *musique_static.nest_references(STEPS)]
    assert sent["skip"] == ["Q?", STEPS[0]]


def test_the_context_variants_send_steps_with_the_question_after_them() -> None:
    base = BM25Retriever.from_documents([Document(id="0", page_content="Empress Wang married Liu.")], k=1)
    plan = Decomposer(llm=ChatGGUF(model="smollm2-135m-instruct"), profile="multihop")  # not called: no load
    sent = {}
    for how in ("all", "refs"):
        options = musique_static.variants()[f"rrf_k 0, question_weight 2, context {how}"]
        retriever = musique_static._retriever(options, retriever=base, decomposer=plan, k=2)
        sent[how] = retriever._queries("Q?", Decomposition(subquestions=STEPS[:2]))
    assert sent["all"] == ["Q?", "Who is the husband of Empress Wang? Q?", "Who is the father of? Q?"]
    assert sent["refs"] == ["Q?", STEPS[0], "Who is the father of? Q?"]
