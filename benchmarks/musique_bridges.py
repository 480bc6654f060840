r"""Where the iterative mode loses its bridges on MuSiQue: retrieval, the candidate spans, or the reader.

For every step of the gold decomposition that a later step refers to (``#N``), in the 292 evaluation questions:

1. *reachable*: the gold answer of the step is in the first ``--read-top`` passages the base retriever returns for
   the step (each cut to ``--read-chars``, as the reader sees them). Step 1 is asked as written; a later step is
   asked with the earlier ``#N`` filled by the gold answers, so each step is judged on its own.
2. *a candidate*: one of ``answer_candidates`` (the spans the reader's grammar allows) is the gold answer.
3. *picked by rule*: the answer ``pick_answer_span`` (the span reader, ``reader="spans"``) picks from the same
   passages; its rules were tuned on ``--file train100.json`` (the 100 MuSiQue train questions), not on these.
   *In the top m*: the gold answer is among the first m of ``rank_answer_spans`` (the same rule's ranking: what
   ``DecomposingRetriever(fills=m)`` fills a bridge with), for each m of ``--top``.
4. *read*: the answer the reader actually gave in the ``gold_iterative`` rows of ``--rows`` (the gold steps, the
   reader filling ``#N`` as it went; later steps there carry the reader's earlier answers: judged as run).

An answer matches when one contains the other, case folded (MuSiQue's gold answers are short names).

    python -m benchmarks.musique_bridges --rows benchmarks/results/musique/bm25.rows.jsonl \
        --out benchmarks/results/musique/bridges_bm25
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_musique import build_retriever
from benchmarks.report import run_meta, write_result
from langchain_dod.evaluation.musique import default_dir, load_questions, pooled_corpus, step_to_question
from langchain_dod.retrievers import answer_candidates, pick_answer_span, rank_answer_spans

__all__ = ["main", "matches"]


def matches(answer: str | None, gold: str) -> bool:
    """``answer`` names the gold answer: one contains the other, case folded."""
    if not answer:
        return False
    a, g = answer.strip().lower(), gold.strip().lower()
    return bool(a) and (a in g or g in a)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder with dev_eval292.jsonl (default: shared)")
    parser.add_argument("--file", default="dev_eval292.jsonl", help="questions with paragraphs, in --data")
    parser.add_argument("--retriever", choices=["bm25", "minilm"], default="bm25")
    parser.add_argument("--embedding-cache", type=Path, default=None)
    parser.add_argument("--read-top", type=int, default=2, help="passages the reader sees per step")
    parser.add_argument("--read-chars", type=int, default=600, help="characters kept per passage")
    parser.add_argument("--rows", type=Path, default=None, help="bench_musique rows with gold_iterative (the reader)")
    parser.add_argument("--top", type=int, nargs="+", default=[2, 3, 5], help="m: gold among the first m ranked")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)

    questions = load_questions((args.data or default_dir()) / args.file)
    base = build_retriever(args.retriever, pooled_corpus(questions), args.read_top, args.embedding_cache, 1)
    read: dict[str, list[str | None]] = {}
    if args.rows:
        for line in args.rows.read_text().splitlines():
            row = json.loads(line)
            if row["method"] == "gold_iterative":
                read[row["id"]] = [s["answer"] for s in row["steps"]]

    counts = {"bridges": 0, "reachable": 0, "candidate": 0, "first_candidate": 0, "spans": 0, "read_n": 0, "read": 0}
    counts.update({f"top{m}": 0 for m in args.top})
    for q in questions:
        answers = {i: s.answer for i, s in enumerate(q.steps, 1)}
        for number, step in enumerate(q.steps[:-1], 1):  # the last step's answer is the question's: not a bridge
            query = step_to_question(step.question, "fill", answers)  # earlier bridges filled with gold
            docs = base.invoke(query)[: args.read_top]
            seen = " ".join(d.page_content[: args.read_chars] for d in docs)
            candidates = answer_candidates(query, docs, args.read_chars)
            counts["bridges"] += 1
            counts["reachable"] += step.answer.lower() in seen.lower()
            counts["candidate"] += any(matches(c, step.answer) for c in candidates)
            counts["first_candidate"] += bool(candidates) and matches(candidates[0], step.answer)
            counts["spans"] += matches(pick_answer_span(query, docs, args.read_chars), step.answer)
            ranked = rank_answer_spans(query, docs, args.read_chars)
            for m in args.top:
                counts[f"top{m}"] += any(matches(c, step.answer) for c in ranked[:m])
            if q.id in read and number <= len(read[q.id]):
                counts["read_n"] += 1
                counts["read"] += matches(read[q.id][number - 1], step.answer)

    def share(key: str, of: str = "bridges") -> str:
        return f"{counts[key]} / {counts[of]} ({counts[key] / counts[of]:.1%})" if counts[of] else "not run"

    table = "\n".join(
        [
            "| bridge answers (gold steps a later step refers to) | count |",
            "|---|---|",
            f"| in the top {args.read_top} passages ({args.read_chars} characters each) | {share('reachable')} |",
            f"| among the reader's candidate spans | {share('candidate')} |",
            f"| the first candidate (no model) | {share('first_candidate')} |",
            f"| picked by the span reader (`pick_answer_span`, no model) | {share('spans')} |",
            *(
                f"| in the span reader's top {m} (`rank_answer_spans`, no model) | {share(f'top{m}')} |"
                for m in args.top
            ),
            f"| named by the reader (gold_iterative rows) | {share('read', 'read_n')} |",
        ]
    )
    result = {
        "counts": counts,
        "meta": run_meta("benchmarks.musique_bridges", argv, retriever=args.retriever, file=args.file),
    }
    print(table)
    if args.out:
        write_result(
            args.out,
            result,
            f"# Where the iterative mode loses its bridges (MuSiQue {args.file}, {args.retriever})\n\n"
            f"Command: `{result['meta']['command']}`\n\n{table}\n\n"
            "A bridge is a gold step whose answer a later step uses (`#N`). Steps are retrieved as the gold writes "
            "them, earlier bridges filled with the gold answers; the reader's row is the gold_iterative run of "
            "`bench_musique` (its later steps carry its own earlier answers). Match: one string contains the other, "
            "case folded.\n",
        )
    return result


if __name__ == "__main__":
    main()
