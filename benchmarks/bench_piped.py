"""A batch of questions piped into ``dod decompose --json -``: whole processes, side by side (issue 16, target 1).

What a user pays to decompose a batch from the shell, start-up and model load included: each decomposer gets the
same questions (GSM8K, spread evenly over the split) on stdin, one process per repeat, the decomposers interleaved
so that a change in the machine's load hits each alike. Wall seconds, the child's CPU seconds (user + system, from
``wait4``) and its peak RSS; medians over ``--repeats``; ratios against the first decomposer. Also how many
questions each one planned (the shipped adapter leaves easy questions to the solver: an empty plan).

    python -m benchmarks.bench_piped --n 20 --repeats 3 --threads 2

Writes benchmarks/results/piped.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_cold_start import spawn
from benchmarks.bench_decompose import gsm8k_questions
from benchmarks.report import run_meta, write_result

__all__ = ["main", "run_batch"]

RESULTS = Path(__file__).parent / "results" / "piped"
DECOMPOSERS = ("default", "runtime", "llamacpp:qwen2.5-coder-1.5b-instruct")
"""``default``: what ``dod decompose`` runs with no ``--decomposer`` (the shipped adapter, merged into its base since
session 8); ``merged`` / ``runtime``: the same with ``--merge-adapter`` / ``--no-merge-adapter`` (the adapter merged
once and cached, or applied at run time); else a ``--decomposer`` SPEC."""


def run_batch(decomposer: str, questions: Sequence[str], threads: int) -> dict[str, Any]:
    """One cold ``dod decompose --json -`` with ``questions`` on stdin."""
    ways = {"default": [], "merged": ["--merge-adapter"], "runtime": ["--no-merge-adapter"]}
    extra = ways.get(decomposer, ["--decomposer", decomposer])
    run = spawn(
        ["-m", "langchain_dod.cli", "decompose", "--json", "-", "--threads", str(threads), *extra],
        stdin="".join(f"{q}\n" for q in questions),
    )
    answers = [json.loads(line) for line in run.pop("stdout").splitlines() if line.strip()]
    if len(answers) != len(questions):
        raise RuntimeError(
            f"{decomposer}: {len(answers)} answers for {len(questions)} questions: {run['stderr'][-2000:]}"
        )
    run.pop("stderr")
    run["subquestions"] = [a.get("subquestions") for a in answers]
    run["output_tokens"] = sum(a.get("output_tokens") or 0 for a in answers)
    run["model"] = answers[0].get("model")
    return run


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (and every run) of one decomposer's batches."""
    keys = ("exit_s", "cpu_s", "peak_rss_mb")
    return {
        **{k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
        **{f"{k}_all": [round(r[k], 3) for r in runs] for k in keys},
        "planned": sum(bool(s) for s in runs[0]["subquestions"]),
        "output_tokens": runs[0]["output_tokens"],
        "same_answers_every_run": all(r["subquestions"] == runs[0]["subquestions"] for r in runs),
        "model": runs[0]["model"],
    }


def markdown(result: dict[str, Any]) -> str:
    """One row per decomposer; ratios are the row's median over the first row's."""
    rows = result["decomposers"]
    first = rows[0]["summary"]
    lines = [
        "| decomposer | model | wall s (median) | ratio | CPU s (median) | ratio | peak RSS MB | planned | out tokens "
        "| same every run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["summary"]
        lines.append(
            f"| {row['decomposer']} | {s['model']} | {s['exit_s']} {s['exit_s_all']} | "
            f"{s['exit_s'] / first['exit_s']:.2f}× | {s['cpu_s']} {s['cpu_s_all']} | "
            f"{s['cpu_s'] / first['cpu_s']:.2f}× | "
            f"{s['peak_rss_mb']:.0f} | {s['planned']}/{result['meta']['questions']} | {s['output_tokens']} | "
            f"{s['same_answers_every_run']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="questions per batch")
    parser.add_argument("--split", default="test", help="GSM8K split the questions come from")
    parser.add_argument("--repeats", type=int, default=3, help="batches per decomposer (medians)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (--threads of dod decompose)")
    parser.add_argument("--decomposers", nargs="+", default=list(DECOMPOSERS), help="'default' or --decomposer SPECs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="write OUT.json and OUT.md ('-': nothing)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--n, --repeats and --threads must be >= 1")

    questions = gsm8k_questions(args.n, args.split)
    runs: dict[str, list[dict[str, Any]]] = {d: [] for d in args.decomposers}
    for _ in range(args.repeats):  # interleaved: a change in the machine's load hits every decomposer alike
        for decomposer in args.decomposers:
            runs[decomposer].append(run_batch(decomposer, questions, args.threads))
    result = {
        "decomposers": [{"decomposer": d, "summary": summarize(r)} for d, r in runs.items()],
        "questions_asked": questions,
        "meta": run_meta(
            "benchmarks.bench_piped", argv, questions=len(questions), split=args.split, threads=args.threads
        ),
    }
    table = markdown(result)
    print(table)
    if str(args.out) != "-":
        meta = result["meta"]
        write_result(
            args.out,
            result,
            f"# A batch piped into `dod decompose --json -`, whole processes side by side\n\n"
            f"Command: `{meta['command']}` ({meta['cpu_count']} CPUs, {args.threads} llama.cpp thread(s), load "
            f"average at end {meta['load_average_at_end']}; {len(questions)} GSM8K {args.split} questions spread "
            f"evenly over the split; medians of {args.repeats} batches, the decomposers interleaved)\n\n{table}\n\n"
            "Wall and CPU: the whole process (start-up, model load, every question); CPU and peak RSS are the "
            "child's own (wait4). planned: questions given at least one sub-question. Ratios: over the first row.\n",
        )
    return result


if __name__ == "__main__":
    main()
