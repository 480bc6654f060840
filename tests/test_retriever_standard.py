"""langchain-tests' standard retriever suite against DecomposingRetriever with the real SmolLM2 decomposer."""

from __future__ import annotations

from typing import Any

from langchain_community.retrievers import BM25Retriever
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from langchain_dod import ChatGGUF, DecomposingRetriever
from langchain_dod.decomposer import Decomposer

TEXTS = [
    "The Varnholt Bridge crosses the river Ebbe in the town of Kessler.",
    "The engineer Mira Talloway designed the Varnholt Bridge in 1911.",
    "Mira Talloway was born in the fishing village of Orrin Cove.",
    "Orrin Cove lies at the mouth of the river Seld.",
    "The town of Kessler is famous for its clock tower and its cheese market.",
    "The river Seld freezes over in most winters.",
]


class TestDecomposingRetrieverStandard(RetrieversIntegrationTests):
    """The standard suite: ``k`` at construction and per call, sync and async, Documents out."""

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return DecomposingRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "retriever": BM25Retriever.from_texts(TEXTS, k=3),
            "decomposer": Decomposer(
                llm=ChatGGUF(model="smollm2-135m-instruct", max_tokens=96, n_threads=1), profile="multihop"
            ),
            "k": 2,
        }

    @property
    def retriever_query_example(self) -> str:
        return "Near which river was the designer of the Varnholt Bridge born?"
