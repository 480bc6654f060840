r"""``dod eval run|report|compare``: evaluate decomposer × solver grids from the command line.

Example (the first committed report)::

    dod eval run --data ../shared/data/gsm8k/test.jsonl --limit 100 --seed 0 \
        --out benchmarks/results/eval/gsm8k-qwen1.5b --solver llamacpp:qwen2.5-coder-1.5b-instruct \
        --single-stage direct --single-stage cot --decomposer llamacpp:smollm2-135m-instruct \
        --decomposer oracle --decomposer llamacpp:qwen2.5-coder-1.5b-instruct --chunk 10
    dod eval report benchmarks/results/eval/gsm8k-qwen1.5b
    dod eval compare benchmarks/results/eval/gsm8k-qwen1.5b \
        cot__qwen2.5-coder-1.5b-instruct oracle__qwen2.5-coder-1.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _label(value: str) -> str:
    """``--label`` goes into file names under ``--out``: a slug, so that "x/../../y" cannot write outside it."""
    from langchain_dod.evaluation.runner import SAFE_NAME

    if not SAFE_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a safe label; use letters, digits and . _ + - only (e.g. v3 or adapter-r16)"
        )
    return value


def _prices(path: str | None) -> Any:
    from langchain_dod.evaluation.cost import PriceTable

    return PriceTable.from_file(path) if path else PriceTable()


def cmd_run(args: argparse.Namespace) -> int:
    """Run the grid (decomposers × solvers, plus single-stage modes × solvers) resumably."""
    from langchain_dod.evaluation.datasets import load_dataset
    from langchain_dod.evaluation.runner import RunSpec, run_evaluation
    from langchain_dod.prompts import check_answer_format
    from langchain_dod.solvers import DEFAULT_SOLVER

    dataset = load_dataset(args.data, args.format, skip_bad=args.skip_bad_items)
    solvers = args.solver or [DEFAULT_SOLVER]
    profile = args.profile or dataset.profile
    socratic = args.socratic
    if "oracle" in (args.decomposer or []) and socratic is None:
        guess = dataset.path.with_name(dataset.path.stem + "_socratic.jsonl")
        if not guess.is_file():
            print(f"error: --decomposer oracle needs --socratic PATH ({guess} does not exist)", file=sys.stderr)
            return 2
        socratic = str(guess)
    for mode in args.single_stage or []:
        try:
            check_answer_format(mode, args.answer_format)
        except ValueError as err:
            print(f"error: --single-stage {mode} with --answer-format {args.answer_format}: {err}", file=sys.stderr)
            return 2
    if not args.decomposer and not args.single_stage:
        print("error: nothing to run; pass --decomposer and/or --single-stage", file=sys.stderr)
        return 2
    common = {
        "max_tokens": args.max_tokens,
        "max_subquestions": args.max_subquestions,
        "profile": profile,
        "n_threads": args.n_threads,
        "answer_format": args.answer_format,
    }
    specs = []
    for solver in solvers:
        for mode in args.single_stage or []:
            specs.append(RunSpec(solver=solver, mode=mode, **common))
        for dec in args.decomposer or []:
            spec = RunSpec(solver=solver, decomposer=dec, socratic=socratic if dec == "oracle" else None, **common)
            if args.label:  # e.g. two adapters behind "default": dec-default-v3__solver next to dec-default__solver
                assert spec.name is not None  # RunSpec.__post_init__ always sets it
                stage, _, rest = spec.name.partition("__")
                spec.name = f"{stage}-{args.label}__{rest}"
            specs.append(spec)
    summary = run_evaluation(
        dataset,
        specs,
        args.out,
        limit=args.limit,
        seed=None if args.seed < 0 else args.seed,
        exclude=args.exclude or (),
        max_concurrency=args.max_concurrency,
        chunk=args.chunk,
        retry_errors=args.retry_errors,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=1))
    if args.report:
        md = _report(args.out, args.prices, None, None)
        print(f"report: {md}")
    return 1 if any(s["errors"] for s in summary.values()) and args.strict else 0


def _report(out: str, prices: str | None, pairs: list[str] | None, title: str | None) -> Path:
    from langchain_dod.evaluation.report import write_report

    parsed = None
    if pairs:
        parsed = []
        for pair in pairs:
            a, sep, b = pair.partition(",")
            if not sep:
                raise ValueError(f"--pair takes RUN_A,RUN_B, got {pair!r}")
            parsed.append((a.strip(), b.strip()))
    return write_report(out, _prices(prices), parsed, title)


def cmd_report(args: argparse.Namespace) -> int:
    """Write report.md / report.json / accuracy_vs_cost.png into the evaluation folder."""
    md = _report(args.out, args.prices, args.pair, args.title)
    print(md.read_text(encoding="utf-8"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Print the paired comparison of two runs."""
    from langchain_dod.evaluation.report import load_evaluation, paired_comparison

    p = paired_comparison(load_evaluation(args.out), args.run_a, args.run_b, args.metric)
    if args.json:
        print(json.dumps(p.__dict__))
        return 0
    print(f"{p.metric} on {p.n} common items: {p.a} {100 * p.score_a:.1f}%  {p.b} {100 * p.score_b:.1f}%")
    print(f"B - A = {100 * p.difference:+.1f} points, 95% CI ({100 * p.ci95[0]:+.1f}, {100 * p.ci95[1]:+.1f})")
    if p.p_value is not None:
        print(f"only A right: {p.only_a}, only B right: {p.only_b}, McNemar exact p = {p.p_value:.3g}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``dod eval`` to the ``dod`` parser (called by ``langchain_dod.cli``)."""
    from langchain_dod.cli import EVAL_HELP, int_in
    from langchain_dod.evaluation.datasets import FORMATS

    ev = subparsers.add_parser("eval", help=EVAL_HELP)
    sub = ev.add_subparsers(dest="eval_command", required=True)

    p = sub.add_parser("run", help="run a grid; resumable (rerun the same command to continue)")
    p.add_argument("--data", required=True, help="data set file (GSM8K JSONL, DROP JSON, Bamboogle CSV/JSONL, JSONL)")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    p.add_argument("--out", required=True, help="evaluation folder (manifest.json, runs/*.jsonl)")
    p.add_argument("--limit", type=int_in(1), default=None, help="evaluate the first N items after shuffling")
    p.add_argument("--seed", type=int_in(-1), default=0, help="shuffle seed; -1 keeps file order")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="FILE",
        help="repeatable: leave out the ids in FILE (an eval manifest.json, or JSONL records with 'id', e.g. a "
        "decomposer's training decompositions) before shuffling",
    )
    p.add_argument("--solver", action="append", help="SPEC, repeatable (default: the local Qwen 1.5B)")
    p.add_argument(
        "--decomposer",
        action="append",
        help="repeatable: default | oracle | SPEC (llamacpp:smollm2-135m-instruct, openai:...) | GGUF path",
    )
    p.add_argument(
        "--label",
        default=None,
        type=_label,
        help="append -LABEL to the two-stage run names (keeps e.g. a second adapter's 'default' run apart)",
    )
    p.add_argument("--single-stage", action="append", choices=["direct", "cot"], help="repeatable baseline")
    p.add_argument("--socratic", default=None, help="Socratic JSONL for --decomposer oracle (default: beside --data)")
    p.add_argument(
        "--profile",
        default=None,
        choices=["math", "reading", "multihop"],
        help="decomposer prompt profile (default: from the data set format)",
    )
    p.add_argument("--max-tokens", type=int_in(1), default=400, help="solver output limit")
    p.add_argument("--max-subquestions", type=int_in(1, 10), default=3)
    p.add_argument(
        "--answer-format",
        choices=["text", "program"],
        default="text",
        help="program: the solver writes arithmetic assignments and the answer is computed (runs named -program)",
    )
    p.add_argument(
        "--max-concurrency",
        type=int_in(1),
        default=1,
        help="items in flight per run (one in-process llama.cpp model serves one at a time: keep 1-2)",
    )
    p.add_argument(
        "--n-threads",
        type=int_in(1),
        default=None,
        help="llama.cpp threads for local models (on a busy shared CPU 1 can beat 2 several times over)",
    )
    p.add_argument(
        "--chunk", type=int_in(1), default=None, help="interleave runs every N items (same n for all if stopped)"
    )
    p.add_argument("--retry-errors", action="store_true", help="redo items recorded with an error")
    p.add_argument("--skip-bad-items", action="store_true", help="skip malformed rows (listed in the manifest)")
    p.add_argument("--prices", default=None, help="price table JSON (default: the paper's $0.001/$0.002 per 1K)")
    p.add_argument("--report", action="store_true", help="write the report when done")
    p.add_argument("--strict", action="store_true", help="exit 1 when any item ended in an error")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="write report.md, report.json and accuracy_vs_cost.png")
    p.add_argument("out")
    p.add_argument("--prices", default=None)
    p.add_argument("--pair", action="append", help="RUN_A,RUN_B to compare (default: each run vs single-stage cot)")
    p.add_argument("--title", default=None)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="paired comparison of two runs (difference, 95%% CI, McNemar)")
    p.add_argument("out")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--metric", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)
