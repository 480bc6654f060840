r"""Tuning the *static* mode on the MuSiQue train questions: fusion settings of ``DecomposingRetriever``, paired.

The static mode (``iterative=False``) retrieves the question and every sub-question at once and fuses the lists
with reciprocal-rank fusion, ``score(d) = sum over lists of weight / (rrf_k + rank(d))``. Issue 13 asks it to
beat plain retrieval by 0.02 recall@5 and never to lose on 2-hop questions. Each question is decomposed once
(the plans are cached in ``--plans``, shared with ``benchmarks.musique_feedback``), then every variant of
:func:`variants` retrieves with those plans; recall@k paired per question against ``default`` and ``plain``.

    python -m benchmarks.musique_static --file train100.json --retriever bm25 \
        --out benchmarks/results/musique/static_train100_bm25
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.musique_feedback import common_arguments, plain_recall, setup, variant_table
from benchmarks.report import run_meta, write_result
from langchain_dod.evaluation.musique import document_id, recall_at_k

__all__ = ["main", "nest_references", "variants"]


def variants() -> dict[str, dict[str, Any]]:
    """Label -> static ``DecomposingRetriever`` options, each spelled out (``default`` is whatever today's is)."""
    out: dict[str, dict[str, Any]] = {"default": {}}
    for r in (0, 2, 5, 10, 20, 30, 60):
        out[f"rrf_k {r}, question_weight 1"] = {"rrf_k": r, "question_weight": 1.0}
    for w in (1.5, 2.0, 3.0, 4.0):
        for r in (60, 0):
            out[f"rrf_k {r}, question_weight {w:g}"] = {"rrf_k": r, "question_weight": w}
    for d in (0.8, 0.6):  # an experiment, not a retriever option: later sub-questions weigh d ** (j - 1)
        out[f"rrf_k 0, question_weight 2, step decay {d:g}"] = {"rrf_k": 0, "question_weight": 2.0, "step_decay": d}
    for how in ("nest", "skip"):  # an experiment: how a step that names #N is sent (default: as written)
        out[f"rrf_k 0, question_weight 2, references {how}"] = {"rrf_k": 0, "question_weight": 2.0, "references": how}
    for how in ("all", "refs"):  # an experiment: steps sent with the question after them (see _retriever)
        for w in (1.0, 2.0):
            out[f"rrf_k 0, question_weight {w:g}, context {how}"] = {"rrf_k": 0, "question_weight": w, "context": how}
    return out


# What a step asks for, as a noun phrase: "Who is the husband of Empress Wang?" -> "the husband of Empress Wang".
_ASKING = re.compile(
    r"^\s*(?:(?:who|whom|whose|what|which|where|when|how many|how much|in what|in which|of what|of which)\s+"
    r"(?:is|was|are|were|did|does|do|has|had)?\b\s*)",
    re.I,
)


def nest_references(steps: list[str]) -> list[str]:
    """A static plan's steps with each ``#N`` written out as what step N asks for, nested (an experiment).

    ``["Who is the husband of Empress Wang?", "Who is the father of #1?"]`` becomes ``[..., "Who is the father
    of the husband of Empress Wang?"]``. A reference to a missing or later step is kept.
    """
    from langchain_dod.references import has_reference, rewrite_references, tidy

    phrases: dict[int, str] = {}
    out: list[str] = []
    for number, step in enumerate(steps, 1):
        earlier = {n: p for n, p in phrases.items() if n < number}
        text = rewrite_references(step, "fill", earlier) if has_reference(step) else tidy(step)
        out.append(text)
        phrases[number] = _ASKING.sub("", text).rstrip(" ?.") or text.rstrip(" ?.")
    return out


def _retriever(options: dict[str, Any], **fixed: Any) -> Any:
    """``DecomposingRetriever(**options, **fixed)``, with the experiment's ``step_decay`` option.

    ``step_decay``: the j-th sub-question's list weighs ``step_decay ** (j - 1)`` in the static fusion (the
    question keeps ``question_weight``). ``references``: ``nest`` writes each ``#N`` out as what step N asks
    (:func:`nest_references`); ``skip`` leaves out the steps that name one. ``context``: a step is sent as
    ``"<step> <question>"``, so a step that lost the question's entities keeps them: ``all`` for every step,
    ``refs`` only for the steps that name ``#N`` (the reference dropped, as it names nothing a retriever knows).
    """
    from langchain_dod import DecomposingRetriever
    from langchain_dod.references import has_reference, rewrite_references

    options = dict(options)
    decay = options.pop("step_decay", None)
    references = options.pop("references", None)
    context = options.pop("context", None)
    retriever = DecomposingRetriever(**fixed, **options)
    if references is not None or context is not None:
        queries = retriever._queries

        def rewritten(query: str, decomposition: Any) -> list[str]:
            steps = list(decomposition.subquestions) if decomposition else []
            if references == "nest":
                steps = nest_references(steps)
            elif references == "skip":  # a step that depends on an answer is not sent
                steps = [s for s in steps if not has_reference(s)]
            if context is not None:
                steps = [
                    f"{rewrite_references(s, 'drop')} {query}" if context == "all" or has_reference(s) else s
                    for s in steps
                ]
            return queries(query, decomposition.model_copy(update={"subquestions": steps}) if decomposition else None)

        object.__setattr__(retriever, "_queries", rewritten)
    if decay is None:
        return retriever

    def weights(query: str, queries: list[str]) -> list[float]:
        first = retriever.include_original and queries[0] == query
        return [
            retriever.question_weight if first and i == 0 else decay ** (i - int(first)) for i in range(len(queries))
        ]

    object.__setattr__(retriever, "_static_weights", weights)
    return retriever


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    args = parser.parse_args(argv)
    questions, base, steps = setup(args)
    depth = max(args.k)
    chosen = variants() if not args.variants else {v: variants()[v] for v in ["default", *args.variants]}
    plain, plain_seconds = plain_recall(questions, base, args.k)
    recall: dict[str, dict[int, list[float]]] = {"plain": plain}
    seconds: dict[str, list[float]] = {"plain": plain_seconds}
    for label, options in chosen.items():
        retriever = _retriever(options, retriever=base, decomposer=steps, k=depth)
        recall[label], seconds[label] = {k: [] for k in args.k}, []
        for q in questions:
            started = time.perf_counter()
            ranked = [document_id(d) for d in retriever.invoke(q.question)]
            seconds[label].append(time.perf_counter() - started)
            for k in args.k:
                recall[label][k].append(recall_at_k(ranked, q.supporting_ids, k))

    hops = [q.hops for q in questions]
    summary, text = variant_table(recall, seconds, hops, args.k, two_hop=True)
    print(text)
    result = {
        "summary": summary,
        "recall@5": {label: by_k[5] for label, by_k in recall.items()},
        "ids": [q.id for q in questions],
        "variants": {label: chosen.get(label, {}) for label in recall if label != "plain"},
        "meta": run_meta("benchmarks.musique_static", argv, file=args.file, retriever=args.retriever),
    }
    if args.out:
        write_result(
            args.out,
            result,
            f"# Static-mode variants on MuSiQue {args.file} ({args.retriever}, plans: {args.decomposer} + "
            f"{args.adapter})\n\nCommand: `{result['meta']['command']}`\n\n{text}\n\n"
            "Every variant is `DecomposingRetriever(iterative=False)` with the options of `variants()` in "
            "benchmarks/musique_static.py over the same cached plans; `default`: the retriever's defaults when "
            "this ran (since session 9 rrf_k 0, question_weight 2; before, 60 and 1). Δ: paired per question "
            "(95 % normal CI). s/query: median wall seconds of the "
            "retriever call without the decomposer (one core).\n",
        )
    return result


if __name__ == "__main__":
    main()
