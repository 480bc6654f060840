r"""Tuning ``DecomposingRetriever(fills=m)`` on the 100 MuSiQue train questions: which m, and how to fuse the fills.

With ``fills=m`` the span reader's first m candidates for a bridge each rewrite the later step, and each such
query is retrieved. This script runs the iterative retriever with the gold steps (``#N`` kept, filled by the
span reader as it goes; as ``gold_iterative_spans`` in ``bench_musique``) for each m of ``--fills``, keeps every
query's ranked list, and scores ways of fusing them, all on the same lists:

- ``all w=W``: every list fused by reciprocal rank, the j-th fill's list with weight W ** (j - 1) (what
  ``DecomposingRetriever(fill_weight=W)`` does);
- ``top T, w=W``: the same, a fill's list (j > 1) cut to its first T documents (``fill_depth=T``);
- ``new top T, w=W``: the same, without the documents the step's best fill already found;
- ``interleave``: a step's fill lists merged round-robin into one list (the step counts once in the fusion).

Questions: ``--file`` (train100.json by default: the only questions tuning may look at), paragraphs pooled as
``bench_musique`` pools them; the base retriever returns max(k) documents per query.

    python -m benchmarks.musique_fills --file train100.json --retriever bm25 \
        --out benchmarks/results/musique/fills_train100_bm25
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from benchmarks.bench_musique import build_retriever
from benchmarks.report import run_meta, write_result
from langchain_dod.evaluation.musique import (
    default_dir,
    document_id,
    gold_queries,
    load_questions,
    pooled_corpus,
    recall_at_k,
)
from langchain_dod.retrievers import reciprocal_rank_fusion

__all__ = ["main", "schemes"]

MARK = 0.5  # the runs use fill_weight=MARK so that a list's weight tells which fill it is: MARK ** (j - 1)


def _groups(weights: Sequence[float]) -> list[list[int]]:
    """Indices of the lists by step: a list of weight 1 opens a group, its fills (weight < 1) follow it."""
    groups: list[list[int]] = []
    for i, w in enumerate(weights):
        if w == 1.0 or not groups:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def _ids(docs: Sequence[Document]) -> list[str]:
    return [document_id(d) or "" for d in docs]


def fuse(
    lists: list[list[Document]],
    weights: list[float],
    *,
    weight: float = 1.0,
    top: int | None = None,
    new_only: bool = False,
    interleave: bool = False,
) -> list[str]:
    """One fusion scheme over a call's lists (see the module docstring); the fused ids, best first."""
    out_lists: list[list[Document]] = []
    out_weights: list[float] = []
    for group in _groups(weights):
        best = lists[group[0]]
        if interleave:
            merged: list[Document] = []
            seen: set[str] = set()
            for rank in range(max(len(lists[i]) for i in group)):
                for i in group:
                    if rank < len(lists[i]) and (document_id(lists[i][rank]) or "") not in seen:
                        seen.add(document_id(lists[i][rank]) or "")
                        merged.append(lists[i][rank])
            out_lists.append(merged)
            out_weights.append(1.0)
            continue
        out_lists.append(best)
        out_weights.append(1.0)
        found = set(_ids(best))
        for i in group[1:]:
            j = 1 + round(math.log(1 / weights[i], 1 / MARK))
            docs = [d for d in lists[i] if not (new_only and document_id(d) in found)][:top]
            out_lists.append(docs)
            out_weights.append(weight ** (j - 1))
    queries = [f"q{i}" for i in range(len(out_lists))]
    return _ids(reciprocal_rank_fusion(out_lists, queries, weights=out_weights))


def schemes() -> dict[str, dict[str, Any]]:
    """The fusion schemes scored, by label."""
    out: dict[str, dict[str, Any]] = {"interleave": {"interleave": True}}
    for w in (1.0, 0.5, 0.25):
        out[f"all w={w:g}"] = {"weight": w}
        for top in (1, 2, 3):
            out[f"top {top}, w={w:g}"] = {"weight": w, "top": top}
            out[f"new top {top}, w={w:g}"] = {"weight": w, "top": top, "new_only": True}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    from langchain_dod import ChatGGUF, Decomposer, DecomposingRetriever
    from langchain_dod.decomposition_model import Decomposition

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with the MuSiQue files (default: shared)")
    parser.add_argument("--file", default="train100.json", help="questions with paragraphs, in --data")
    parser.add_argument("--retriever", choices=["bm25", "minilm"], default="bm25")
    parser.add_argument("--embedding-cache", type=Path, default=None)
    parser.add_argument("--fills", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--k", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    questions = load_questions((args.data or default_dir()) / args.file)
    depth = max(args.k)
    base = build_retriever(args.retriever, pooled_corpus(questions), depth, args.embedding_cache, 1)
    gold: dict[str, list[str]] = {}
    captured: list[tuple[list[list[Document]], list[float]]] = []

    class GoldSteps(Decomposer):
        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Decomposition:
            return Decomposition(subquestions=gold[input], model="gold")

    class Capturing(DecomposingRetriever):
        def _fuse(self, queries: Any, results: Any, k: Any, weights: Any = None) -> list[Document]:
            captured.append((list(results), list(weights or [1.0] * len(results))))
            return super()._fuse(queries, results, k, weights)

    steps = GoldSteps(llm=ChatGGUF(model="smollm2-135m-instruct"), profile="multihop", max_subquestions=4)
    recall: dict[str, dict[str, list[float]]] = {}
    for m in [1, *args.fills]:
        retriever = Capturing(
            retriever=base,
            decomposer=steps,
            iterative=True,
            k=depth,
            fills=m,
            fill_weight=MARK if m > 1 else 1.0,
            fill_depth=None,  # every list whole: the schemes cut them
            fill_feedback=0,  # the reader's order, as when this was run (issue 13's feedback came later)
            rrf_k=60,
        )
        for q in questions:
            gold[q.question] = gold_queries(q, "keep")
            captured.clear()
            retriever.invoke(q.question)
            lists, weights = captured[0]
            for label, options in schemes().items() if m > 1 else [("best only", {})]:
                ranked = fuse(lists, weights, **options)
                row = recall.setdefault(f"m={m}, {label}" if m > 1 else "m=1 (fills=1)", {})
                for k in args.k:
                    row.setdefault(f"recall@{k}", []).append(recall_at_k(ranked, q.supporting_ids, k))
                row.setdefault("queries", []).append(len(lists))

    base_row = recall["m=1 (fills=1)"]["recall@5"]
    table = ["| fills, fusion | " + " | ".join(f"recall@{k}" for k in args.k) + " | Δ recall@5 vs m=1 (95 % CI) |"]
    table.append("|---|" + "---|" * (len(args.k) + 1))
    summary: dict[str, dict[str, Any]] = {}
    for label, row in recall.items():
        diffs = [a - b for a, b in zip(row["recall@5"], base_row, strict=True)]
        mean = statistics.fmean(diffs)
        half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if any(diffs) else 0.0
        summary[label] = {
            **{f"recall@{k}": round(statistics.fmean(row[f"recall@{k}"]), 4) for k in args.k},
            "queries": round(statistics.fmean(row["queries"]), 2),
            "diff_recall@5": round(mean, 4),
            "ci95": [round(mean - half, 4), round(mean + half, 4)],
        }
        cells = [f"{summary[label][f'recall@{k}']:.3f}" for k in args.k]
        table.append(f"| {label} | " + " | ".join(cells) + f" | {mean:+.3f} ({mean - half:+.3f}, {mean + half:+.3f}) |")
    text = "\n".join(table)
    print(text)
    result = {"summary": summary, "meta": run_meta("benchmarks.musique_fills", argv, file=args.file)}
    if args.out:
        write_result(
            args.out,
            result,
            f"# Fills on MuSiQue {args.file} ({args.retriever}, gold steps, span reader)\n\n"
            f"Command: `{result['meta']['command']}`\n\n{text}\n\n"
            "Gold steps with `#N` kept, filled by the span reader (`gold_iterative_spans` of bench_musique); each "
            f"query retrieves {depth} documents. m: the span reader's first m candidates (a candidate inside an "
            "earlier one left out) each rewrite the later step; the fusion schemes are in "
            "`benchmarks/musique_fills.py`. Δ: paired per question against m=1.\n",
        )
    return result


if __name__ == "__main__":
    main()
