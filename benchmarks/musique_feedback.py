r"""Tuning the iterative mode's fills on the MuSiQue train questions: variants of ``DecomposingRetriever``, paired.

Each question is decomposed once by ``--decomposer``/``--adapter`` (the plans are cached in ``--plans``, so every
variant sees the same sub-questions and only retrieval differs; ``--steps gold`` gives MuSiQue's gold steps with
``#N`` kept instead), then every variant of :func:`variants` runs ``DecomposingRetriever(iterative=True)`` with
those plans. recall@k of each, paired per question against ``default`` (the defaults before this tuning,
:data:`BEFORE`) and ``plain``.

Variants (issue 13):

- ``feedback T, pool P``: ``fill_feedback=T, fill_pool=P`` (a bridge's first P candidates each rewrite the later
  step; they are ordered by how many of the first T documents each query finds are about the candidate, and
  the first ``fills`` are fused); ``, title`` when only the title counts (not the first sentence);
- ``read_top R``: the span reader sees R passages, not 2;
- ``fills M``: M fills in the reader's order;
- ``rrf_k R``: the fusion's damping constant (60 before); ``fill_weight W``: the j-th fill's list weighs W ** (j - 1);
  ``read passages kept``: the passages the bridge was read from may support a candidate (left out otherwise).

The chosen setting (``feedback 1, pool 8, rrf_k 0, fill_weight 0.5``) became the span reader's iterative
defaults.

    python -m benchmarks.musique_feedback --file train100.json --retriever bm25 \
        --out benchmarks/results/musique/feedback_train100_bm25
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_musique import build_retriever
from benchmarks.report import run_meta, write_result
from langchain_dod import retrievers as retrievers_module
from langchain_dod.evaluation.musique import (
    default_dir,
    document_id,
    gold_queries,
    load_questions,
    pooled_corpus,
    recall_at_k,
)

__all__ = ["main", "variants"]


# the defaults before issue 13's feedback: every variant starts from them (``default`` is these alone)
BEFORE = {"fills": 3, "fill_depth": 1, "fill_weight": 1.0, "fill_feedback": 0, "fill_pool": 3, "rrf_k": 60}


def variants() -> dict[str, dict[str, Any]]:
    """Label -> ``DecomposingRetriever`` options over :data:`BEFORE`.

    ``head``: ``"title"`` counts a document's title only, not its first sentence; ``exclude_read``: ``False`` lets
    the passages the bridge was read from count; both are ablations of :func:`langchain_dod.retrievers._support`.
    """
    out: dict[str, dict[str, Any]] = {"default": {}}
    out["read_top 3"] = {"read_top": 3}
    out["fills 5"] = {"fills": 5}
    for t in (1, 2):
        for p in (3, 5, 8):
            out[f"feedback {t}, pool {p}"] = {"fill_feedback": t, "fill_pool": p}
    out["feedback 1, pool 8, read passages kept"] = {"fill_feedback": 1, "fill_pool": 8, "exclude_read": False}
    out["feedback 1, pool 8, title"] = {"fill_feedback": 1, "fill_pool": 8, "head": "title"}
    out["feedback 1, pool 8, fills 2"] = {"fill_feedback": 1, "fill_pool": 8, "fills": 2}
    out["feedback 1, pool 8, fills 4"] = {"fill_feedback": 1, "fill_pool": 8, "fills": 4}
    out["feedback 1, pool 8, read_top 3"] = {"fill_feedback": 1, "fill_pool": 8, "read_top": 3}
    out["feedback 1, pool 8, fill_depth 2"] = {"fill_feedback": 1, "fill_pool": 8, "fill_depth": 2}
    for r in (0, 2, 5, 10, 20, 30):
        out[f"rrf_k {r}"] = {"rrf_k": r}
        out[f"feedback 1, pool 8, rrf_k {r}"] = {"fill_feedback": 1, "fill_pool": 8, "rrf_k": r}
    z = {"rrf_k": 0, "fill_feedback": 1, "fill_pool": 8}
    out["feedback 1, pool 5, rrf_k 0"] = {**z, "fill_pool": 5}
    out["feedback 1, pool 12, rrf_k 0"] = {**z, "fill_pool": 12}
    out["feedback 2, pool 8, rrf_k 0"] = {**z, "fill_feedback": 2}
    out["feedback 1, pool 8, rrf_k 0, fill_weight 0.5"] = {**z, "fill_weight": 0.5}
    out["feedback 1, pool 8, rrf_k 0, fills 2"] = {**z, "fills": 2}
    out["feedback 1, pool 8, rrf_k 0, fills 4"] = {**z, "fills": 4}
    out["feedback 1, pool 8, rrf_k 0, read_top 3"] = {**z, "read_top": 3}
    out["feedback 1, pool 8, rrf_k 0, read passages kept"] = {**z, "exclude_read": False}
    out["feedback 1, pool 8, rrf_k 0, title"] = {**z, "head": "title"}
    out["rrf_k 0, fill_weight 0.5"] = {"rrf_k": 0, "fill_weight": 0.5}
    out["feedback 1, pool 8, rrf_k 0, fill_weight 0.25"] = {**z, "fill_weight": 0.25}
    out["feedback 1, pool 5, rrf_k 0, fill_weight 0.5"] = {**z, "fill_pool": 5, "fill_weight": 0.5}
    out["feedback 1, pool 8, rrf_k 0, fill_weight 0.5, read passages kept"] = {
        **z,
        "fill_weight": 0.5,
        "exclude_read": False,
    }
    out["feedback 1, pool 8, rrf_k 1, fill_weight 0.5"] = {**z, "rrf_k": 1, "fill_weight": 0.5}
    return out


def _bridges(q: Any, steps: list[dict[str, Any]]) -> list[tuple[bool, bool]]:
    """Per bridge (a gold step a later one refers to as ``#N``): its gold answer named first, and among the kept."""
    from benchmarks.musique_bridges import matches

    out = []
    for i, step in enumerate(steps[:-1]):
        if any(f"#{i + 1}" in later.question for later in q.steps[i + 1 :]):
            gold = q.steps[i].answer
            out.append((matches(step["answer"], gold), any(matches(a, gold) for a in step.get("answers", []))))
    return out


def _paired(mine: list[float], other: list[float]) -> dict[str, Any]:
    diffs = [a - b for a, b in zip(mine, other, strict=True)]
    mean = statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs)) if any(diffs) else 0.0
    return {"difference": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)]}


def _plans(args: argparse.Namespace, questions: list[Any]) -> dict[str, dict[str, Any]]:
    """Question text -> its decomposition (as a dict), made once and cached in ``--plans``."""
    cache: dict[str, dict[str, Any]] = json.loads(args.plans.read_text()) if args.plans.is_file() else {}
    missing = [q for q in questions if q.question not in cache]
    if missing:
        from benchmarks.bench_musique import _decomposer

        ns = argparse.Namespace(
            decomposer=args.decomposer, adapter=args.adapter, threads=1, max_subquestions=args.max_subquestions
        )
        decomposer = _decomposer(ns)
        for q in missing:
            cache[q.question] = decomposer.invoke(q.question).model_dump()
            args.plans.parent.mkdir(parents=True, exist_ok=True)
            args.plans.write_text(json.dumps(cache, ensure_ascii=False))
    return cache


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this module and ``benchmarks.musique_static`` share (data, base retriever, plans, k, out)."""
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--file", default="train100.json")
    parser.add_argument("--retriever", choices=["bm25", "minilm"], default="bm25")
    parser.add_argument("--embedding-cache", type=Path, default=None)
    parser.add_argument("--decomposer", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default="langchain_dod/data/smollm2-135m-multihop-lora.gguf")
    parser.add_argument("--max-subquestions", type=int, default=4)
    parser.add_argument("--plans", type=Path, default=None, help="cache of the decompositions (JSON)")
    parser.add_argument("--variants", nargs="+", default=None, help="labels of variants() to run (default: all)")
    parser.add_argument("--k", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--out", type=Path, default=None)


def setup(args: argparse.Namespace, gold_steps: bool = False) -> tuple[list[Any], Any, Any]:
    """(questions, base retriever, decomposer) for ``args``; the decomposer replays the cached plans.

    ``gold_steps``: it replays MuSiQue's gold steps (``#N`` kept) instead, and no plan is made.
    """
    from langchain_dod import ChatGGUF, Decomposer
    from langchain_dod.decomposition_model import Decomposition

    if args.plans is None:
        args.plans = Path("runs") / f"plans-{Path(args.file).stem}.json"
    questions = load_questions((args.data or default_dir()) / args.file)
    base = build_retriever(args.retriever, pooled_corpus(questions), max(args.k), args.embedding_cache, 1)
    plans = {} if gold_steps else _plans(args, questions)
    gold: dict[str, list[str]] = {q.question: gold_queries(q, "keep") for q in questions}

    class Cached(Decomposer):
        """Not a model: the cached plan (or the gold steps) of the question asked."""

        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Decomposition:
            if gold_steps:
                return Decomposition(subquestions=gold[input], model="gold")
            return Decomposition.model_validate(plans[input])

    return questions, base, Cached(llm=ChatGGUF(model="smollm2-135m-instruct"), profile="multihop", max_subquestions=4)


def plain_recall(questions: list[Any], base: Any, ks: Sequence[int]) -> tuple[dict[int, list[float]], list[float]]:
    """recall@k per question and seconds per question of the base retriever alone."""
    recall: dict[int, list[float]] = {k: [] for k in ks}
    seconds: list[float] = []
    for q in questions:
        started = time.perf_counter()
        ranked = [document_id(d) for d in base.invoke(q.question)]
        seconds.append(time.perf_counter() - started)
        for k in ks:
            recall[k].append(recall_at_k(ranked, q.supporting_ids, k))
    return recall, seconds


def variant_table(
    recall: dict[str, dict[int, list[float]]],
    seconds: dict[str, list[float]],
    hops: list[int],
    ks: Sequence[int],
    *,
    two_hop: bool = False,
    seconds_label: str = "s/query",
) -> tuple[dict[str, Any], str]:
    """Per variant: recall@k, recall@5 by hops, paired Δ@5 against ``default`` and ``plain``; (summary, table).

    ``two_hop`` adds the paired Δ@5 against plain on the 2-hop questions alone.
    """
    two = [i for i, n in enumerate(hops) if n == 2]
    head = "| variant | " + " | ".join(f"recall@{k}" for k in ks) + " | 2-hop@5 | 3-hop@5 | 4-hop@5 | "
    head += "Δ@5 vs default (95 % CI) | Δ@5 vs plain (95 % CI) | "
    head += ("2-hop Δ@5 vs plain (95 % CI) | " if two_hop else "") + f"{seconds_label} |"
    lines = [head, "|---" * (len(ks) + 7 + two_hop) + "|"]
    summary: dict[str, Any] = {}
    for label, by_k in recall.items():
        entry: dict[str, Any] = {f"recall@{k}": round(statistics.fmean(by_k[k]), 4) for k in ks}
        for h in (2, 3, 4):
            members = [r for r, n in zip(by_k[5], hops, strict=True) if n == h]
            entry[f"{h}-hop recall@5"] = round(statistics.fmean(members), 4) if members else None
        entry["vs_default"] = _paired(by_k[5], recall["default"][5])
        entry["vs_plain"] = _paired(by_k[5], recall["plain"][5])
        if two_hop:
            entry["2-hop vs_plain"] = _paired([by_k[5][i] for i in two], [recall["plain"][5][i] for i in two])
        entry["median_seconds"] = round(statistics.median(seconds[label]), 4)
        summary[label] = entry
        cells = [f"{entry[f'recall@{k}']:.3f}" for k in ks]
        hop_cells = [entry[f"{h}-hop recall@5"] for h in (2, 3, 4)]
        cells += ["–" if v is None else f"{v:.3f}" for v in hop_cells]
        for key in ("vs_default", "vs_plain", *(["2-hop vs_plain"] if two_hop else [])):
            e = entry[key]
            cells.append(f"{e['difference']:+.3f} ({e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f})")
        cells.append(f"{entry['median_seconds']:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return summary, "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    from langchain_dod import DecomposingRetriever

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.add_argument(
        "--steps",
        choices=["model", "gold"],
        default="model",
        help="plans: the decomposer's (cached), or MuSiQue's gold steps (then the bridges named are counted too)",
    )
    args = parser.parse_args(argv)
    questions, base, steps = setup(args, gold_steps=args.steps == "gold")
    depth = max(args.k)
    chosen = variants() if not args.variants else {v: variants()[v] for v in ["default", *args.variants]}
    plain, plain_seconds = plain_recall(questions, base, args.k)
    recall: dict[str, dict[int, list[float]]] = {"plain": plain}
    seconds: dict[str, list[float]] = {"plain": plain_seconds}
    bridges: dict[str, list[int]] = {}  # --steps gold: label -> [named first, among the kept fills, bridges]
    for label, options in chosen.items():
        options = {**BEFORE, **options}
        retrievers_module._FEEDBACK_SENTENCE = options.pop("head", "title+sentence") == "title+sentence"
        retrievers_module._FEEDBACK_SKIPS_READ = options.pop("exclude_read", True)
        retriever = DecomposingRetriever(retriever=base, decomposer=steps, iterative=True, k=depth, **options)
        recall[label], seconds[label] = {k: [] for k in args.k}, []
        for q in questions:
            started = time.perf_counter()
            docs = retriever.invoke(q.question)
            seconds[label].append(time.perf_counter() - started)
            ranked = [document_id(d) for d in docs]
            if args.steps == "gold" and docs:  # the plan is the gold one: its bridges can be judged
                named = bridges.setdefault(label, [0, 0, 0])
                for first, kept in _bridges(q, docs[0].metadata["dod_trace"]["steps"]):
                    named[0], named[1], named[2] = named[0] + first, named[1] + kept, named[2] + 1
            for k in args.k:
                recall[label][k].append(recall_at_k(ranked, q.supporting_ids, k))
    retrievers_module._FEEDBACK_SENTENCE, retrievers_module._FEEDBACK_SKIPS_READ = True, True

    hops = [q.hops for q in questions]
    bridge_text = ""
    if bridges:
        lines = ["| variant | bridge answers named first | among the fills kept |", "|---|---|---|"]
        for label, (first, kept, n) in bridges.items():
            lines.append(f"| {label} | {first} / {n} ({first / n:.1%}) | {kept} / {n} ({kept / n:.1%}) |")
        bridge_text = "\n".join(lines)
        print(bridge_text)
    summary, text = variant_table(recall, seconds, hops, args.k, seconds_label="retrieval s/query")
    print(text)
    per_question = {label: by_k[5] for label, by_k in recall.items()}
    result: dict[str, Any] = {
        "summary": summary,
        "recall@5": per_question,
        "ids": [q.id for q in questions],
        "variants": {label: chosen.get(label, {}) for label in recall if label != "plain"},
        "bridges": bridges,
        "meta": run_meta(
            "benchmarks.musique_feedback", argv, file=args.file, retriever=args.retriever, steps=args.steps
        ),
    }
    if args.out:
        plan = "MuSiQue's gold steps (`#N` kept)" if args.steps == "gold" else f"{args.decomposer} + {args.adapter}"
        write_result(
            args.out,
            result,
            f"# Iterative-mode variants on MuSiQue {args.file} ({args.retriever}, plans: {plan})\n\n"
            f"Command: `{result['meta']['command']}`\n\n{text}\n\n"
            + (f"Bridges (gold steps; a later step refers to them as `#N`):\n\n{bridge_text}\n\n" if bridges else "")
            + "Every variant is `DecomposingRetriever(iterative=True, reader='spans')` with the options of "
            "`variants()` in benchmarks/musique_feedback.py over the same cached plans; `default`: the "
            "defaults before issue 13's feedback (fills=3, fill_depth=1, fill_weight=1, rrf_k=60, read_top=2, no "
            "feedback); every other variant changes only what its label names. Δ: paired per question (95 % normal "
            "CI). "
            "Retrieval s/query: median wall seconds of the retriever call without the decomposer (one core).\n",
        )
    return result


if __name__ == "__main__":
    main()
