"""``DecomposingRetriever``: retrieval for multi-hop questions through a tiny local decomposer.

A multi-hop question ("Which river flows through the city where the inventor of X was born?") rarely shares
words or meaning with *every* passage it needs. The decomposer splits it into sub-questions that each point at
one passage; each sub-question (and, by default, the original question) is sent to the base retriever in one
``batch``/``abatch`` call, and the ranked lists are merged with reciprocal-rank fusion (Cormack et al., 2009):
``score(d) = sum over lists of weight / (rrf_k + rank(d))``, with ``rrf_k=0`` by default (each list's first
document counts most; tuned on MuSiQue's train questions) and the original question's list weighing 2 in the
static mode.

Unlike LangChain's ``MultiQueryRetriever`` (which asks a general LLM for paraphrases), the sub-questions come
from the same ~100 MB model that the rest of this package uses, grammar-constrained, in about a second on a
CPU.

``iterative=True`` retrieves the sub-questions one after another instead: after step N a reader names step N's
answer from the top passage(s) (by default a rule that picks a name, place, date or number from them, with no
model call; or a model), and later steps that refer to it (``#N``, "he", "that year", or none at all) are
rewritten with that answer before they are retrieved. A static plan cannot know the bridge entity of a
multi-hop question; this is where most of the recall gain lies. With the span reader a later step is retrieved
for several of its candidates (``fills``, ``fill_pool``), and the candidate whose query finds a passage *about*
it (its title or first sentence names it) is taken as the answer (``fill_feedback``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field, field_validator, model_validator

from langchain_dod.chat_models import ChatGGUF
from langchain_dod.decomposer import Decomposer, Decomposition, DecompositionError
from langchain_dod.references import REFERENCE, resolve_step

__all__ = [
    "DecomposingRetriever",
    "answer_candidates",
    "pick_answer_span",
    "parse_answer",
    "rank_answer_spans",
    "reader_messages",
    "reciprocal_rank_fusion",
]

logger = logging.getLogger(__name__)

QUERIES_KEY = "dod_queries"
"""Metadata key: the queries (sub-questions and/or the original question) whose results held the document."""
SCORE_KEY = "dod_rrf_score"
"""Metadata key: the document's reciprocal-rank-fusion score (higher is better)."""
TRACE_KEY = "dod_trace"
"""Metadata key (iterative mode): what the call did and cost; the same dict is sent as the custom callback event
``dod_trace``. Keys: ``subquestions`` (as decomposed), ``steps`` (``[{subquestion, query, answer}]``: the query
actually retrieved and the answer read from its top passages; with ``fills > 1`` also ``fills``, the step's
queries with the lower-ranked candidates, and on a step that was read ``answers``, its candidates kept, best
first; with ``fill_feedback`` the bridge step's ``answers`` are reordered by what their queries retrieved, its
``answer`` is the first of them, and ``support`` holds each candidate's score), ``model_calls``,
``model_seconds``, ``seconds``."""


def _multihop_decomposer() -> Decomposer:
    return Decomposer(profile="multihop")


def _dedupe_key(doc: Document) -> str:
    """Identity of a document across result lists: its id, else its text plus metadata (ours excluded)."""
    if doc.id:
        return f"id:{doc.id}"
    meta = {k: v for k, v in doc.metadata.items() if k not in (QUERIES_KEY, SCORE_KEY, TRACE_KEY)}
    return "content:" + json.dumps([doc.page_content, meta], sort_keys=True, default=str)


def reciprocal_rank_fusion(
    results: Sequence[Sequence[Document]],
    queries: Sequence[str],
    *,
    rrf_k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[Document]:
    """Merge ranked lists into one, best first; duplicates (by id, else content+metadata) are merged.

    Returns *new* ``Document`` objects (the base retriever's are never mutated) whose metadata adds
    ``dod_queries`` (which of ``queries`` found the document, in query order) and ``dod_rrf_score``.
    Ties keep the order in which documents were first seen. ``weights``: one per list, multiplying its
    ``1 / (rrf_k + rank)`` terms (default: 1 each).
    """
    if len(results) != len(queries):
        raise ValueError(f"Got {len(results)} result lists for {len(queries)} queries; they must match.")
    if weights is not None and len(weights) != len(queries):
        raise ValueError(f"Got {len(weights)} weights for {len(queries)} queries; they must match.")
    weights = [1.0] * len(queries) if weights is None else weights
    scores: dict[str, float] = {}
    found_by: dict[str, list[str]] = {}
    first: dict[str, Document] = {}
    for query, docs, weight in zip(queries, results, weights, strict=True):
        seen_here: set[str] = set()
        for rank, doc in enumerate(docs, start=1):
            key = _dedupe_key(doc)
            if key in seen_here:  # a list that repeats a document counts it once, at its best rank
                continue
            seen_here.add(key)
            first.setdefault(key, doc)
            scores[key] = scores.get(key, 0.0) + weight / (rrf_k + rank)
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


READER_INSTRUCTION = (
    "Read the passages, then answer the question with a short phrase copied from them: a name, a place, a date "
    'or a number. Reply with JSON only: {"answer": "..."}.'
)
# one worked example: the 135M reader copies whole sentences without it
_READER_EXAMPLE = (
    "Passages:\nBlue Fields is a 1990 novel by the Welsh writer Jane Doe, set in Cardiff.\n\n"
    "Question: Who wrote Blue Fields?",
    '{"answer": "Jane Doe"}',
)
MAX_CANDIDATES = 40

# Candidate answers: runs of capitalised words or numbers ("Mountrail County", "April 1978", "J. R. R. Tolkien"),
# joined by the lower-case particles names contain ("Duke of York", "Ludwig van Beethoven"). A bridge entity in
# MuSiQue is nearly always such a span, and a 135M model picks the right one from a list far more reliably than
# it writes one (it copies whole sentences when free).
_WORD = r"(?:[A-Z][a-z]{0,2}\.(?=\s)|[A-Z](?:[\w'’&\-]*\w)?|\d[\d,]*\d|\d)"
_PARTICLE = r"(?:of|the|de|du|da|del|la|le|von|van|der|den|and|y|al|el|bin)"
_PHRASE = re.compile(rf"{_WORD}(?:\s+(?:{_PARTICLE}\s+)?{_WORD})*")
_LEADING = re.compile(r"^(?:The|A|An|In|On|At|By|It|He|She|His|Her|Its|This|That|These|Those)\s+")
_NOT_ANSWERS = frozenset(
    "The A An It In On At As By For From After Before During When Where Which Who Whom Whose What Why How He She "
    "His Her This That They Their Its There These Those However Although Since While If Is Was Are Were".split()
)


def _spans(text: str) -> list[str]:
    spans = []
    # line by line: a span must not run from a passage's title line into its text ("Mara Wilson\nMara Elizabeth")
    for match in (m for line in text.splitlines() for m in _PHRASE.finditer(line)):
        span = _LEADING.sub("", match.group(0)).strip(" ,")
        if span and span not in _NOT_ANSWERS:
            spans.append(span)
    return spans


def answer_candidates(question: str, docs: Sequence[Document], max_chars: int = 600) -> list[str]:
    """Spans of ``docs`` that could answer ``question``: names, places, dates and numbers, first seen first.

    A span the question already names, or one that contains such a name ("Mountrail County Courthouse" for
    "What is the capital of Mountrail County?"), is left out: a step's answer is a new entity.
    """
    asked = question.lower()
    named = [s.lower() for s in _spans(question) if len(s) > 3]
    out: list[str] = []
    for doc in docs:
        for span in _spans(doc.page_content[:max_chars]):
            low = span.lower()
            if low in asked or any(n in low for n in named) or span in out:
                continue
            out.append(span)
    return out[:MAX_CANDIDATES]


# The span reader: which candidate answers a step, by rule (issue 13: on MuSiQue's bridge steps it names the gold
# answer for 28.7 % (BM25) / 34.8 % (MiniLM) where the 135M model reading the same passages names 15.0 %; tuned on
# the 100 MuSiQue *train* questions only, see benchmarks/musique_bridges.py). A candidate scores by, in order:
# its type fits the question (a date for "when", a number for "how many", a name that is not a demonym for the
# rest), how many of the question's content words its sentence shares, an earlier passage, an earlier sentence,
# an earlier position.
_STOPWORDS = frozenset(
    "the a an of in on at to for from by with and or is was are were be been what which who whom whose when where "
    "why how did does do that this it its as into than then".split()
)
_TOKEN = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")
_DATE = re.compile(
    r"\b(?:1[0-9]{3}|20[0-9]{2})\b|January|February|March|April|May|June|July|August|September|October|November|"
    r"December"
)
# "American", "Ghanaian", "Chinese", "Welsh": an adjective of nationality is rarely a bridge entity
_DEMONYM = re.compile(r"[A-Z][a-z]+(?:an|ese|ish|ic|i)|French|Dutch|Welsh|Greek|Thai|Swiss|Czech")


def _content_words(text: str) -> set[str]:
    return {t for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS}


def _type_fit(question: str, span: str) -> int:
    asked = question.lower()
    if re.match(r"(?:when|what year|in what year|what date)\b", asked):
        return 2 if _DATE.search(span) else 0
    has_digit = bool(re.search(r"\d", span))
    if re.match(r"how (?:many|much)\b", asked):
        return int(has_digit)
    return int(not has_digit) + int(not _DEMONYM.fullmatch(span))


def rank_answer_spans(question: str, docs: Sequence[Document], max_chars: int = 600) -> list[str]:
    """All of :func:`answer_candidates`, best first by the span reader's rule (see above).

    A candidate scores by its best occurrence; ties keep candidate order; a candidate found in no single sentence
    (it runs across a sentence break) comes after every one that is, in candidate order. The first is
    :func:`pick_answer_span`'s answer; ``DecomposingRetriever(fills=m)`` fills a bridge with the first ``m``.
    """
    candidates = answer_candidates(question, docs, max_chars)
    words = _content_words(question)
    best: dict[str, tuple[Any, ...]] = {}
    for d, doc in enumerate(docs):
        for s, sentence in enumerate(_SENTENCE.split(doc.page_content[:max_chars])):
            shared = len(words & _content_words(sentence))
            for candidate in candidates:
                position = sentence.find(candidate)
                if position >= 0:
                    key = (_type_fit(question, candidate), shared, -d, -s, -position)
                    if candidate not in best or key > best[candidate]:
                        best[candidate] = key
    order = {c: i for i, c in enumerate(candidates)}
    found = sorted(best, key=lambda c: (tuple(-x for x in best[c]), order[c]))
    return found + [c for c in candidates if c not in best]


def pick_answer_span(question: str, docs: Sequence[Document], max_chars: int = 600) -> str:
    """``question``'s answer in ``docs`` by rule, with no model call: the first of :func:`rank_answer_spans`.

    ``""`` when the passages hold no candidate.
    """
    ranked = rank_answer_spans(question, docs, max_chars)
    return ranked[0] if ranked else ""


def answer_schema(candidates: Sequence[str] = ()) -> dict[str, Any]:
    """The reader's reply: ``{"answer": ...}``, one of ``candidates`` when there are any."""
    answer: dict[str, Any] = (
        {"enum": list(candidates)} if candidates else {"type": "string", "minLength": 1, "maxLength": 60}
    )
    return {"type": "object", "properties": {"answer": answer}, "required": ["answer"]}


def reader_messages(question: str, docs: Sequence[Document], max_chars: int = 600) -> list[dict[str, str]]:
    """The prompt that asks the reader for ``question``'s answer in ``docs`` (each cut to ``max_chars``)."""
    passages = "\n\n".join(d.page_content[:max_chars].strip() for d in docs)
    return [
        {"role": "system", "content": READER_INSTRUCTION},
        {"role": "user", "content": _READER_EXAMPLE[0]},
        {"role": "assistant", "content": _READER_EXAMPLE[1]},
        {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: {question}"},
    ]


_ANSWER_PREFIX = re.compile(r"^\s*(?:the answer is|answer)\s*[:\-]\s*", re.I)
_PARTIAL_ANSWER = re.compile(r'"answer"\s*:\s*"([^"]*)')


def parse_answer(output: Any) -> str:
    """The answer in a reader's reply.

    The JSON ``answer`` (also from JSON cut off by the token limit), else the first line without an "Answer:"
    prefix.
    """
    text = output.content if isinstance(output, BaseMessage) else str(output)
    text = text if isinstance(text, str) else json.dumps(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("answer"), str):
        answer = value["answer"]
    elif partial := _PARTIAL_ANSWER.search(text):
        answer = partial.group(1)
    else:
        answer = next((line for line in text.splitlines() if line.strip()), "")
        answer = _ANSWER_PREFIX.sub("", answer)
    return answer.strip().strip("\"'").rstrip(".").strip()[:80]


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

    ``DecomposingRetriever(retriever=base, iterative=True)`` reads each step's answer from its top passages
    (``reader``) and fills it into the later steps; ``docs[0].metadata["dod_trace"]`` then shows the rewritten
    queries, the answers read, and the model calls and seconds the call took.

    """

    retriever: BaseRetriever
    """The retriever each query goes to (BM25, a vector store's ``as_retriever()``, …)."""
    decomposer: Decomposer = Field(default_factory=_multihop_decomposer)
    """Writes the sub-questions; by default our local SmolLM2 decomposer with the ``multihop`` profile."""
    k: int = 4
    """How many fused documents to return."""
    include_original: bool = True
    """Also retrieve for the original question (recommended: it guards against a poor decomposition)."""
    rrf_k: int = 0
    """The RRF damping constant: a list's document at rank r adds ``weight / (rrf_k + r)``. 0 (default) lets each
    list's first document outrank documents that several lists hold lower down; the original paper's 60 flattens
    the ranks. Chosen on the 100 MuSiQue train questions with our decomposer, per mode: static mode (with
    ``question_weight`` 2) recall@5 0.477 -> 0.519 (BM25) and 0.595 -> 0.646 (MiniLM) against 60
    (benchmarks/results/musique/static_train100_*.md); iterative mode with the span reader 0.507 -> 0.581 and
    0.629 -> 0.691 from that alone (feedback_rrfk_train100_*.md). Iterative mode with a model ``reader`` keeps 60
    (not measured at 0)."""
    question_weight: float = 2.0
    """Static mode (``iterative=False``), with ``include_original``: the RRF weight of the original question's
    list; each sub-question's list has weight 1. A larger weight keeps more of the plain ranking and adds what the
    sub-questions find. Must be > 0. 2 (default) was chosen with ``rrf_k=0`` on the 100 MuSiQue train questions
    (recall@5 0.521 -> 0.519 BM25, 0.626 -> 0.646 MiniLM against weight 1; at ``rrf_k`` 60 weight 1 was best,
    question_weight.md); on the 292 evaluation questions the static defaults give 0.486 (BM25) and 0.552 (MiniLM)
    with the shipped multihop adapter (0.484 and 0.546 with its 1-epoch predecessor, static_292_*.md) against
    plain retrieval's 0.450 and 0.528 (benchmarks/results/musique/multihop_e15.md). Iterative mode fuses the
    question's list with weight 1: there the default becomes 1 and another value is refused (``ValueError``)."""
    iterative: bool = False
    """Retrieve the sub-questions in order and rewrite each with the answers read so far (see the module
    docstring). A model ``reader`` costs one call per sub-question but the last; ``dod_trace`` reports the cost."""
    reader: BaseLanguageModel | Literal["spans"] | None = "spans"
    """Iterative mode: what names each step's answer. ``"spans"`` (default): no model, :func:`pick_answer_span`;
    on MuSiQue it names more bridge answers than the 135M model does (28.7 vs 15.0 %, BM25) and iterative
    recall@5 rises from 0.476 to 0.501 (BM25) and from 0.522 to 0.550 (MiniLM). A model: it reads the passages
    and answers (a ``ChatGGUF`` picks among the candidate spans under a grammar). ``None``: the decomposer's
    model (without its LoRA adapter, which was trained to decompose, not to read)."""
    read_top: int = Field(default=2, ge=1)
    """Iterative mode: how many of a step's top passages the reader sees."""
    read_chars: int = Field(default=600, ge=50)
    """Iterative mode: each passage is cut to this many characters (prompt length is most of the reader's time)."""
    reader_max_tokens: int = Field(default=32, ge=4)
    """Iterative mode: the reader's output limit (an answer is a short phrase)."""
    fills: int = Field(default=3, ge=1)
    """Iterative mode with the span reader: a later step is retrieved once per each of the reader's first
    ``fills`` candidates for the bridge it uses (:func:`rank_answer_spans`; one inside another counts once), not
    only with the best. The best fill's list is fused as usual, the others' first ``fill_depth`` documents with
    them, and the step's own answer is read from the best fill's passages. A step that uses several answers
    varies only the most recent one (the others keep their best), so a step costs at most ``fills`` retrievals
    (``fill_pool`` with ``fill_feedback``, the default, which also orders the candidates) and no model call.
    1: the best candidate only. A model ``reader`` names one answer: with one the default becomes 1, and
    ``fills > 1`` is refused (``ValueError``). 3 (default) was chosen on the 100 MuSiQue train questions (gold
    steps, BM25: recall@5 0.537 -> 0.573, benchmarks/results/musique/fills_train100_bm25.md); on the 292
    evaluation questions with our decomposer recall@5 rose from 0.501 to 0.519 (BM25) and from 0.550 to 0.573
    (MiniLM), about 3 more base-retriever calls per question (before ``fill_feedback``)."""
    fill_depth: int | None = Field(default=1, ge=1)
    """Iterative mode, ``fills > 1``: how many of a lower-ranked fill's documents enter the fusion (``None``:
    all). Its whole list would count as much as the best fill's, and the documents every fill finds (those that
    match the step's wording, not its bridge) would climb; tuned on the 100 MuSiQue train questions."""
    fill_weight: float = Field(default=0.5, gt=0.0, le=1.0)
    """Iterative mode, ``fills > 1``: the RRF weight of the list of the j-th candidate's query is
    ``fill_weight ** (j - 1)`` (1: every fill counts as much as the best). 0.5 (default; 1 before issue 13's
    feedback) was chosen with ``fill_feedback`` and ``rrf_k=0`` on the 100 MuSiQue train questions
    (benchmarks/results/musique/feedback_rrf0_train100_*.md)."""
    fill_feedback: int = Field(default=1, ge=0)
    """Iterative mode, ``fills > 1``: rank a bridge's candidates by what their queries retrieve. Each of the first
    ``fill_pool`` candidates rewrites the later step and is retrieved; a candidate that the first ``fill_feedback``
    documents of its own list are *about* (it appears in a document's title: ``metadata["title"]`` when there is
    one, else the first line of ``page_content``; or in its first sentence) goes before one that they are not,
    an earlier document counting more; ties keep the reader's order. The first ``fills`` of that order are fused
    (the best in full, as ``fills`` describes) and the best is the step's answer for the later steps. 0: the
    reader's order only. The passages the bridge was read from do not count (they are about the bridge step's
    subject, not its answer). No model call; ``fill_pool`` retrievals per step instead of ``fills``. A model
    ``reader`` names one answer: with one the default becomes 0, and ``fill_feedback > 0`` is refused.
    1 (default) was chosen on the 100 MuSiQue train questions: with the gold steps it names the bridge answer
    first for 68 of 137 bridges (49.6 %; BM25) and 72 (52.6 %; MiniLM) where the reader's order does for 42 and
    52; with our decomposer recall@5 0.507 -> 0.527 (BM25) and 0.629 -> 0.657 (MiniLM) at ``rrf_k`` 60,
    0.581 -> 0.622 and 0.691 -> 0.730 at ``rrf_k`` 0 with ``fill_weight`` 0.5. On the 292 evaluation questions
    these defaults together (with ``rrf_k`` 0 and ``fill_weight`` 0.5) raise recall@5 from 0.519 to 0.573 (BM25;
    plain 0.449) and from 0.573 to 0.651 (MiniLM; plain 0.528), for about 0.3 s more per question with MiniLM
    (benchmarks/results/musique/feedback.md; the 1-epoch multihop adapter; the shipped one reaches 0.589 and
    0.667, multihop_e15.md). The trace's bridge step shows ``support``, each candidate's
    score."""
    fill_pool: int = Field(default=8, ge=1)
    """Iterative mode, ``fill_feedback > 0``: how many of the span reader's candidates are retrieved and ranked by
    their documents (at least ``fills`` are). 8 (default) against 3, 5 and 12 on the 100 MuSiQue train questions."""

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

    @field_validator("question_weight")
    @classmethod
    def _check_question_weight(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"question_weight must be a finite number > 0 (the RRF weight of the question's list), got {value}."
            )
        return value

    @model_validator(mode="after")
    def _check_modes(self) -> DecomposingRetriever:
        if self.iterative and "question_weight" not in self.model_fields_set:
            self.question_weight = 1.0  # the default (2) is the static mode's
        if self.iterative and self.question_weight != 1.0:
            raise ValueError(
                f"question_weight={self.question_weight} applies to the static mode only (iterative=False); the "
                "iterative mode fuses the question's list with weight 1."
            )
        if self.reader != "spans" and "fills" not in self.model_fields_set:
            self.fills = 1  # the default is for the span reader; a model reader names one answer
        if self.reader != "spans" and self.fill_feedback > 0:
            if "fill_feedback" in self.model_fields_set:
                raise ValueError(
                    f"fill_feedback={self.fill_feedback} needs reader='spans': it ranks the span reader's candidate "
                    "answers (a model reader names one); use fill_feedback=0 with a model reader."
                )
            self.fill_feedback = 0
        if self.iterative and self.reader != "spans" and "rrf_k" not in self.model_fields_set:
            self.rrf_k = 60  # 0 was tuned for the static mode and the span reader (issue 13); see rrf_k
        if self.fills > 1 and self.reader != "spans":
            raise ValueError(
                f"fills={self.fills} needs reader='spans': only the span reader ranks candidate answers (a model "
                "reader names one); use fills=1 with a model reader."
            )
        return self

    def _queries(self, query: str, decomposition: Decomposition | None) -> list[str]:
        subquestions = decomposition.subquestions if decomposition else []
        queries = ([query] if self.include_original or not subquestions else []) + subquestions
        unique: list[str] = []
        for item in queries:  # a sub-question equal to the question must not count twice in the fusion
            if item.strip().lower() not in {u.strip().lower() for u in unique}:
                unique.append(item)
        return unique

    def _static_weights(self, query: str, queries: list[str]) -> list[float] | None:
        """Static mode: ``question_weight`` for the original question's list (when it is fused), 1 for the rest."""
        if self.question_weight == 1.0 or not self.include_original:
            return None
        # with include_original the question always comes first (``_queries``)
        return [self.question_weight if i == 0 and item == query else 1.0 for i, item in enumerate(queries)]

    def _fuse(
        self,
        queries: list[str],
        results: list[list[Document]],
        k: int | None,
        weights: Sequence[float] | None = None,
    ) -> list[Document]:
        fused = reciprocal_rank_fusion(results, queries, rrf_k=self.rrf_k, weights=weights)
        return fused[: _valid_k(self.k if k is None else k)]

    def _reader_model(self) -> BaseLanguageModel | None:
        """The model that reads; ``None`` for the span reader (``reader="spans"``)."""
        llm = self.reader
        if llm == "spans":
            return None
        if llm is None:
            llm = self.decomposer.llm
            if isinstance(llm, ChatGGUF) and llm.lora_path:
                llm = llm.model_copy(update={"lora_path": None})
        return llm

    def _reader(self, llm: BaseLanguageModel, question: str, docs: Sequence[Document]) -> Runnable:
        """Our local model answers under a grammar that allows only candidate spans; other models write freely."""
        if isinstance(llm, ChatGGUF):
            schema = answer_schema(answer_candidates(question, docs, self.read_chars))
            return llm.bind(json_schema=schema, max_tokens=self.reader_max_tokens)
        return llm

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        _valid_k(self.k if k is None else k)
        config: RunnableConfig = {"callbacks": run_manager.get_child()}
        started = time.perf_counter()
        try:
            decomposition: Decomposition | None = self.decomposer.invoke(query, config)
        except DecompositionError as err:
            logger.warning("Decomposition failed (%s); retrieving for the original question only.", err)
            decomposition = None
        if not self.iterative:
            queries = self._queries(query, decomposition)
            results = self.retriever.batch(queries, {"callbacks": run_manager.get_child()})
            return self._fuse(queries, results, k, self._static_weights(query, queries))
        run = _IterativeRun(self, query, decomposition, started)
        if run.queries:  # the original question goes first, in one batch with nothing else to wait for
            run.results = self.retriever.batch(run.queries, {"callbacks": run_manager.get_child()})
        llm = self._reader_model()
        for number, step in enumerate(run.steps, 1):
            text = run.next_query(number, step)
            if run.wants_feedback(number, step):
                asked = run.candidate_queries(number, step)
                results = self.retriever.batch(asked, {"callbacks": run_manager.get_child()}) if asked else []
                text = run.rank_by_feedback(number, step, dict(zip(asked, results, strict=True)))
            else:
                if run.needs_retrieval(text):
                    run.add(text, self.retriever.invoke(text, {"callbacks": run_manager.get_child()}))
                if fills := run.fill_queries(number, step):
                    run.add_fills(fills, self.retriever.batch(fills, {"callbacks": run_manager.get_child()}))
            if run.wants_answer(number):
                docs = run.read(text)
                if llm is None:
                    run.answered_spans(number, rank_answer_spans(text, docs, self.read_chars))
                    continue
                reading = time.perf_counter()
                output = self._reader(llm, text, docs).invoke(
                    reader_messages(text, docs, self.read_chars), {"callbacks": run_manager.get_child()}
                )
                run.answered(number, parse_answer(output), time.perf_counter() - reading)
        docs = run.finish(k)
        dispatch_custom_event(TRACE_KEY, run.trace, config={"callbacks": run_manager.get_child()})
        return docs

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        _valid_k(self.k if k is None else k)
        config: RunnableConfig = {"callbacks": run_manager.get_child()}
        started = time.perf_counter()
        try:
            decomposition: Decomposition | None = await self.decomposer.ainvoke(query, config)
        except DecompositionError as err:
            logger.warning("Decomposition failed (%s); retrieving for the original question only.", err)
            decomposition = None
        if not self.iterative:
            queries = self._queries(query, decomposition)
            results = await self.retriever.abatch(queries, {"callbacks": run_manager.get_child()})
            return self._fuse(queries, results, k, self._static_weights(query, queries))
        run = _IterativeRun(self, query, decomposition, started)
        if run.queries:
            run.results = await self.retriever.abatch(run.queries, {"callbacks": run_manager.get_child()})
        llm = self._reader_model()
        for number, step in enumerate(run.steps, 1):
            text = run.next_query(number, step)
            if run.wants_feedback(number, step):
                asked = run.candidate_queries(number, step)
                results = await self.retriever.abatch(asked, {"callbacks": run_manager.get_child()}) if asked else []
                text = run.rank_by_feedback(number, step, dict(zip(asked, results, strict=True)))
            else:
                if run.needs_retrieval(text):
                    run.add(text, await self.retriever.ainvoke(text, {"callbacks": run_manager.get_child()}))
                if fills := run.fill_queries(number, step):
                    run.add_fills(fills, await self.retriever.abatch(fills, {"callbacks": run_manager.get_child()}))
            if run.wants_answer(number):
                docs = run.read(text)
                if llm is None:
                    run.answered_spans(number, rank_answer_spans(text, docs, self.read_chars))
                    continue
                reading = time.perf_counter()
                output = await self._reader(llm, text, docs).ainvoke(
                    reader_messages(text, docs, self.read_chars), {"callbacks": run_manager.get_child()}
                )
                run.answered(number, parse_answer(output), time.perf_counter() - reading)
        docs = run.finish(k)
        await adispatch_custom_event(TRACE_KEY, run.trace, config={"callbacks": run_manager.get_child()})
        return docs


def _key(text: str) -> str:
    return text.strip().lower()


# ablation switches of the feedback signal (benchmarks/musique_feedback.py turns them off to measure them)
_FEEDBACK_SENTENCE = True  # a document's first sentence counts, not only its title
_FEEDBACK_SKIPS_READ = True  # the passages a bridge was read from cannot support its candidates


def _head(doc: Document) -> str:
    """What a document is about, case folded.

    Its title (``metadata["title"]``, else a first line followed by more text) and its first sentence.
    """
    content = doc.page_content.strip()
    first, _, rest = content.partition("\n")
    title = doc.metadata.get("title")
    if not isinstance(title, str) or not title.strip():
        title, body = (first, rest) if rest.strip() and len(first) <= 120 else ("", content)
    else:
        body = rest if first.strip() == title.strip() else content
    head = title
    if _FEEDBACK_SENTENCE:
        head += "\n" + _SENTENCE.split(body.strip(), maxsplit=1)[0]
    return head.lower()


def _support(candidate: str, docs: Sequence[Document]) -> float:
    """How much ``docs`` (one query's first documents, best first) are about ``candidate``.

    1 / rank summed over the documents whose title or first sentence names it.
    """
    low = candidate.lower()
    return sum(1.0 / rank for rank, doc in enumerate(docs, 1) if low in _head(doc))


class _IterativeRun:
    """The bookkeeping of one iterative call, shared by the sync and async paths (which differ only in awaits)."""

    def __init__(
        self, owner: DecomposingRetriever, query: str, decomposition: Decomposition | None, started: float
    ) -> None:
        self.owner, self.started = owner, started
        self.steps: list[str] = decomposition.subquestions if decomposition else []
        # the decomposer is one model call (its rare grammar retry is not counted separately)
        self.model_calls = 1
        self.model_seconds = (decomposition.seconds or 0.0) if decomposition else time.perf_counter() - started
        self.queries: list[str] = [query] if owner.include_original or not self.steps else []
        self.results: list[list[Document]] = []
        self.weights: list[float] = [1.0] * len(self.queries)
        self.depths: list[int | None] = [None] * len(self.queries)  # how much of each list is fused (None: all)
        self.answers: dict[int, str] = {}
        self.ranked: dict[int, list[str]] = {}  # fills > 1: a step's first ``fills`` candidates, best first
        self._fill_weights: dict[str, float] = {}  # the current step's fill queries and their RRF weights
        self.trace_steps: list[dict[str, Any]] = []
        self.trace: dict[str, Any] = {}

    def next_query(self, number: int, step: str) -> str:
        text = resolve_step(step, self.answers, self.answers.get(number - 1))
        self.trace_steps.append({"subquestion": step, "query": text, "answer": None})
        return text

    def needs_retrieval(self, text: str) -> bool:
        """A query equal to an earlier one is not retrieved (or fused) twice; its earlier results are read."""
        return _key(text) not in {_key(q) for q in self.queries}

    def add(self, text: str, docs: list[Document], weight: float = 1.0, depth: int | None = None) -> None:
        self.queries.append(text)
        self.results.append(docs)
        self.weights.append(weight)
        self.depths.append(depth)

    def fill_queries(self, number: int, step: str) -> list[str]:
        """``fills > 1``: step ``number`` rewritten with each lower-ranked candidate of the bridge it uses.

        The bridge varied is the most recent one: the highest ``#N`` the step refers to, else the previous step
        (a pronoun or no reference, as in :func:`resolve_step`); other references keep their best answer.
        Queries already retrieved are left out. Empty when ``fills == 1``.
        """
        if self.owner.fills == 1:
            return []
        bridge = self._bridge(number, step)
        self._fill_weights = {}
        for rank, candidate in enumerate(self.ranked.get(bridge, [])[1 : self.owner.fills], 2):
            answers = {**self.answers, bridge: candidate}
            text = resolve_step(step, answers, answers.get(number - 1))
            if self.needs_retrieval(text) and _key(text) not in {_key(t) for t in self._fill_weights}:
                self._fill_weights[text] = self.owner.fill_weight ** (rank - 1)
        self.trace_steps[-1]["fills"] = list(self._fill_weights)
        return list(self._fill_weights)

    @staticmethod
    def _bridge(number: int, step: str) -> int:
        """The bridge step ``number`` varies: the highest ``#N`` it refers to, else the previous step."""
        referenced = [int(n) for n in REFERENCE.findall(step) if int(n) < number]
        return max(referenced) if referenced else number - 1

    def wants_feedback(self, number: int, step: str) -> bool:
        """``fill_feedback > 0``: step ``number``'s bridge has candidates to rank by their documents."""
        return (
            self.owner.fills > 1 and self.owner.fill_feedback > 0 and bool(self.ranked.get(self._bridge(number, step)))
        )

    def _candidate_texts(self, number: int, step: str) -> dict[str, str]:
        """Each pool candidate of the step's bridge -> the step rewritten with it (reader order)."""
        bridge = self._bridge(number, step)
        out: dict[str, str] = {}
        for candidate in self.ranked[bridge]:
            answers = {**self.answers, bridge: candidate}
            out[candidate] = resolve_step(step, answers, answers.get(number - 1))
        return out

    def candidate_queries(self, number: int, step: str) -> list[str]:
        """The queries :meth:`rank_by_feedback` needs retrieved: each candidate's, unless retrieved before."""
        texts = dict.fromkeys(t for t in self._candidate_texts(number, step).values() if self.needs_retrieval(t))
        return list(texts)

    def rank_by_feedback(self, number: int, step: str, retrieved: dict[str, list[Document]]) -> str:
        """Order the bridge's candidates by what their queries found, fuse the first ``fills``; the best's query.

        ``retrieved``: :meth:`candidate_queries`' results. The best candidate becomes the bridge's answer (the
        trace of the bridge step shows it, and ``support``, each candidate's score).
        """
        bridge, owner = self._bridge(number, step), self.owner
        texts = self._candidate_texts(number, step)
        known = {_key(q): docs for q, docs in zip(self.queries, self.results, strict=True)}
        lists = {c: retrieved.get(t, known.get(_key(t), [])) for c, t in texts.items()}
        # the passages the bridge was read from are about the bridge step's subject, not its answer: left out
        read = (
            {_dedupe_key(d) for d in self.read(self.trace_steps[bridge - 1]["query"])}
            if _FEEDBACK_SKIPS_READ
            else set()
        )
        support = {
            c: _support(c, [d for d in lists[c] if _dedupe_key(d) not in read][: owner.fill_feedback]) for c in texts
        }
        order = sorted(texts, key=lambda c: -support[c])  # stable: ties keep the reader's order
        kept = order[: owner.fills]
        self.ranked[bridge], self.answers[bridge] = kept, kept[0]
        bridge_trace = self.trace_steps[bridge - 1]
        bridge_trace.update(answer=kept[0], answers=kept, support={c: round(support[c], 3) for c in order})
        best = texts[kept[0]]
        self.trace_steps[-1]["query"] = best
        self._fill_weights = {}
        if self.needs_retrieval(best):
            self.add(best, lists[kept[0]])
        for rank, candidate in enumerate(kept[1:], 2):
            text = texts[candidate]
            if self.needs_retrieval(text) and _key(text) not in {_key(t) for t in self._fill_weights}:
                self._fill_weights[text] = owner.fill_weight ** (rank - 1)
                self.add(text, lists[candidate], self._fill_weights[text], owner.fill_depth)
        self.trace_steps[-1]["fills"] = list(self._fill_weights)
        return best

    def add_fills(self, texts: list[str], results: list[list[Document]]) -> None:
        for text, docs in zip(texts, results, strict=True):
            self.add(text, docs, self._fill_weights[text], self.owner.fill_depth)

    def wants_answer(self, number: int) -> bool:
        """Only a step that a later step can use is read: the last step's answer is what the caller wants."""
        return number < len(self.steps) and bool(self._docs_for(self.trace_steps[-1]["query"]))

    def _docs_for(self, text: str) -> list[Document]:
        index = [_key(q) for q in self.queries].index(_key(text))
        return self.results[index]

    def read(self, text: str) -> list[Document]:
        """The passages the reader sees for the step whose query is ``text``."""
        return self._docs_for(text)[: self.owner.read_top]

    def answered_spans(self, number: int, ranked: list[str]) -> None:
        """Step ``number`` read by the span reader: ``ranked`` (:func:`rank_answer_spans`), best first.

        ``fills > 1``: its first ``fills`` candidates are kept for the later steps, leaving out any that contains,
        or is contained in, one kept before it.
        """
        if self.owner.fills > 1:  # a candidate inside another ("University of Vienna") is no new fill
            keep = max(self.owner.fills, self.owner.fill_pool) if self.owner.fill_feedback else self.owner.fills
            fills: list[str] = []
            for candidate in ranked:
                low = candidate.lower()
                if len(fills) < keep and not any(low in f.lower() or f.lower() in low for f in fills):
                    fills.append(candidate)
            self.ranked[number] = fills
            self.trace_steps[-1]["answers"] = fills
        self.answered(number, ranked[0] if ranked else "", None)

    def answered(self, number: int, answer: str, seconds: float | None) -> None:
        """Step ``number``'s answer; ``seconds``: the reader model's time (``None``: read by rule, no model call)."""
        if seconds is not None:
            self.model_calls += 1
            self.model_seconds += seconds
        self.trace_steps[-1]["answer"] = answer or None
        if answer:
            self.answers[number] = answer

    def finish(self, k: int | None) -> list[Document]:
        self.trace = {
            "subquestions": list(self.steps),
            "steps": self.trace_steps,
            "model_calls": self.model_calls,
            "model_seconds": round(self.model_seconds, 4),
            "seconds": round(time.perf_counter() - self.started, 4),
        }
        # new Documents: the base retriever's stay as they are
        fused = [docs[:depth] for docs, depth in zip(self.results, self.depths, strict=True)]
        docs = self.owner._fuse(self.queries, fused, k, self.weights)
        for doc in docs:  # one shared dict per call: the trace describes the call, not the document
            doc.metadata[TRACE_KEY] = self.trace
        return docs


def _valid_k(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"k must be a positive integer (the number of documents to return), got {value!r}.")
    return value
