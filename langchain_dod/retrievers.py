"""``DecomposingRetriever``: retrieval for multi-hop questions through a tiny local decomposer.

A multi-hop question ("Which river flows through the city where the inventor of X was born?") rarely shares
words or meaning with *every* passage it needs. The decomposer splits it into sub-questions that each point at
one passage; each sub-question (and, by default, the original question) is sent to the base retriever in one
``batch``/``abatch`` call, and the ranked lists are merged with reciprocal-rank fusion (Cormack et al., 2009):
``score(d) = sum over lists of 1 / (rrf_k + rank(d))``.

Unlike LangChain's ``MultiQueryRetriever`` (which asks a general LLM for paraphrases), the sub-questions come
from the same ~100 MB model that the rest of this package uses, grammar-constrained, in about a second on a
CPU.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field, field_validator

from langchain_dod.decomposer import Decomposer, Decomposition, DecompositionError

__all__ = ["DecomposingRetriever", "reciprocal_rank_fusion"]

logger = logging.getLogger(__name__)

QUERIES_KEY = "dod_queries"
"""Metadata key: the queries (sub-questions and/or the original question) whose results held the document."""
SCORE_KEY = "dod_rrf_score"
"""Metadata key: the document's reciprocal-rank-fusion score (higher is better)."""


def _multihop_decomposer() -> Decomposer:
    return Decomposer(profile="multihop")


def _dedupe_key(doc: Document) -> str:
    """Identity of a document across result lists: its id, else its text plus metadata (ours excluded)."""
    if doc.id:
        return f"id:{doc.id}"
    meta = {k: v for k, v in doc.metadata.items() if k not in (QUERIES_KEY, SCORE_KEY)}
    return "content:" + json.dumps([doc.page_content, meta], sort_keys=True, default=str)


def reciprocal_rank_fusion(
    results: Sequence[Sequence[Document]], queries: Sequence[str], *, rrf_k: int = 60
) -> list[Document]:
    """Merge ranked lists into one, best first; duplicates (by id, else content+metadata) are merged.

    Returns *new* ``Document`` objects (the base retriever's are never mutated) whose metadata adds
    ``dod_queries`` (which of ``queries`` found the document, in query order) and ``dod_rrf_score``.
    Ties keep the order in which documents were first seen.
    """
    if len(results) != len(queries):
        raise ValueError(f"Got {len(results)} result lists for {len(queries)} queries; they must match.")
    scores: dict[str, float] = {}
    found_by: dict[str, list[str]] = {}
    first: dict[str, Document] = {}
    for query, docs in zip(queries, results, strict=True):
        seen_here: set[str] = set()
        for rank, doc in enumerate(docs, start=1):
            key = _dedupe_key(doc)
            if key in seen_here:  # a list that repeats a document counts it once, at its best rank
                continue
            seen_here.add(key)
            first.setdefault(key, doc)
            scores[key] = scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
            if query not in found_by.setdefault(key, []):
                found_by[key].append(query)
    order = sorted(first, key=lambda key: -scores[key])  # sorted() is stable: ties stay in first-seen order
    return [
        Document(
            id=first[key].id,
            page_content=first[key].page_content,
            metadata={**first[key].metadata, QUERIES_KEY: found_by[key], SCORE_KEY: round(scores[key], 6)},
        )
        for key in order
    ]


class DecomposingRetriever(BaseRetriever):
    """Decompose the query, retrieve for every sub-question at once, fuse the lists by reciprocal rank.

    Example:
        .. code-block:: python

            from langchain_community.retrievers import BM25Retriever
            from langchain_dod import DecomposingRetriever

            base = BM25Retriever.from_texts(texts, k=5)
            retriever = DecomposingRetriever(retriever=base, k=4)
            docs = retriever.invoke("Which river flows through the birthplace of the author of X?")
            docs[0].metadata["dod_queries"]  # the sub-questions that found it

    The base retriever's own depth (e.g. ``BM25Retriever.k``) sets how many documents each query contributes;
    ``k`` caps the fused list. ``invoke(query, k=2)`` overrides ``k`` for one call.

    """

    retriever: BaseRetriever
    """The retriever each query goes to (BM25, a vector store's ``as_retriever()``, …)."""
    decomposer: Decomposer = Field(default_factory=_multihop_decomposer)
    """Writes the sub-questions; by default our local SmolLM2 decomposer with the ``multihop`` profile."""
    k: int = 4
    """How many fused documents to return."""
    include_original: bool = True
    """Also retrieve for the original question (recommended: it guards against a poor decomposition)."""
    rrf_k: int = 60
    """The RRF damping constant; 60 is the value from the original paper and a robust default."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @field_validator("k", mode="before")
    @classmethod
    def _check_k(cls, value: int) -> int:
        return _valid_k(value)

    @field_validator("rrf_k")
    @classmethod
    def _check_rrf_k(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"rrf_k must be >= 0, got {value}.")
        return value

    def _queries(self, query: str, decomposition: Decomposition | None) -> list[str]:
        subquestions = decomposition.subquestions if decomposition else []
        queries = ([query] if self.include_original or not subquestions else []) + subquestions
        unique: list[str] = []
        for item in queries:  # a sub-question equal to the question must not count twice in the fusion
            if item.strip().lower() not in {u.strip().lower() for u in unique}:
                unique.append(item)
        return unique

    def _fuse(self, queries: list[str], results: list[list[Document]], k: int | None) -> list[Document]:
        return reciprocal_rank_fusion(results, queries, rrf_k=self.rrf_k)[: _valid_k(self.k if k is None else k)]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        _valid_k(self.k if k is None else k)
        config: RunnableConfig = {"callbacks": run_manager.get_child()}
        try:
            decomposition: Decomposition | None = self.decomposer.invoke(query, config)
        except DecompositionError as err:
            logger.warning("Decomposition failed (%s); retrieving for the original question only.", err)
            decomposition = None
        queries = self._queries(query, decomposition)
        results = self.retriever.batch(queries, {"callbacks": run_manager.get_child()})
        return self._fuse(queries, results, k)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        _valid_k(self.k if k is None else k)
        config: RunnableConfig = {"callbacks": run_manager.get_child()}
        try:
            decomposition: Decomposition | None = await self.decomposer.ainvoke(query, config)
        except DecompositionError as err:
            logger.warning("Decomposition failed (%s); retrieving for the original question only.", err)
            decomposition = None
        queries = self._queries(query, decomposition)
        results = await self.retriever.abatch(queries, {"callbacks": run_manager.get_child()})
        return self._fuse(queries, results, k)


def _valid_k(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"k must be a positive integer (the number of documents to return), got {value!r}.")
    return value
