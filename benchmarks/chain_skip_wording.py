r"""The chain's no-plan path with the plain-text chain-of-thought wording, on the 400 evaluation items (issue 12).

Where the decomposer writes no sub-questions, the chain sends the solver exactly what single-stage CoT sends
(``prompts.solver_messages`` falls back to the CoT wording). So when the CoT wording changes, the chain's rows
for its skipped items are the new CoT run's rows for those items, and its rows for planned items are unchanged.
This script builds that chain from committed runs and pairs it, and both CoT wordings, item by item:

- the merged default decomposer's rows (``benchmarks.merged_accuracy.composite_rows``: the merged file's rows
  where it writes other sub-questions than the run-time adapter, the run's rows elsewhere);
- ``--cot-old``: single-stage CoT with the previous wording; ``--cot-new``: with the new one (one or more JSONLs);
- the chain now: the merged default's planned rows + ``--cot-new``'s rows where it skips.

Strict accuracy as ``dod eval`` recorded it; solver output tokens per item (mean) and their ratio to each CoT.

    python -m benchmarks.chain_skip_wording
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.merged_accuracy import composite_rows, paired_runs, rows_by_id
from benchmarks.report import run_meta, write_result

__all__ = ["chain_rows", "main"]

EVAL = Path(__file__).parent / "results" / "eval"
RESULTS = Path(__file__).parent / "results" / "chain_skip_wording"
SOLVER = "qwen2.5-coder-1.5b-instruct"
RUN = EVAL / "gsm8k-train-distilled" / "runs" / f"dec-default-sdr-eqp__{SOLVER}.jsonl"
MERGED = [
    EVAL / f / "runs" / f"dec-SmolLM2-135M-Instruct.Q4_1-98362432+9a0ac607834b7cf6-Q8_0-eqp__{SOLVER}.jsonl"
    for f in ("gsm8k-train-merged", "gsm8k-train-merged-rest")
]
COT_OLD = EVAL / "gsm8k-train-distilled" / "runs" / f"cot__{SOLVER}.jsonl"
COT_NEW = [EVAL / f"gsm8k-train-cotplain-{p}" / "runs" / f"cot__{SOLVER}.jsonl" for p in ("a", "b")]
AGREEMENT = Path(__file__).parent / "results" / "merged_agreement.json"


def chain_rows(decomposer: dict[str, dict[str, Any]], cot: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The chain's row per item: the decomposer run's where it planned, ``cot``'s where it wrote no sub-questions."""
    missing = [i for i, row in decomposer.items() if not row["subquestions"] and i not in cot]
    if missing:
        raise ValueError(f"{len(missing)} skipped items have no CoT row (e.g. {missing[0]}): finish that run first.")
    return {i: (cot[i] if not row["subquestions"] else row) for i, row in decomposer.items()}


def _tokens(rows: Sequence[dict[str, Any]]) -> float:
    return statistics.fmean(r["usage"]["solver"]["output_tokens"] for r in rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=RUN, help="the two-stage run with the run-time adapter")
    parser.add_argument("--merged", type=Path, nargs="+", default=MERGED, help="the merged file's rows")
    parser.add_argument("--agreement", type=Path, default=AGREEMENT, help="merged_agreement's JSON")
    parser.add_argument("--cot-old", type=Path, default=COT_OLD)
    parser.add_argument("--cot-new", type=Path, nargs="+", default=COT_NEW)
    parser.add_argument("--out", type=Path, default=RESULTS, help="write OUT.json and OUT.md ('-': nothing)")
    args = parser.parse_args(argv)
    differ = json.loads(args.agreement.read_text())["ways"]["merged-Q8_0"]["differ"]
    try:
        merged = composite_rows(rows_by_id([args.run]), differ, rows_by_id(args.merged))
        cot_old, cot_new = rows_by_id([args.cot_old]), rows_by_id(args.cot_new)
        chain = chain_rows(merged, cot_new)
    except ValueError as err:
        parser.error(str(err))
    ids = [i for i in merged if i in cot_old and i in cot_new]
    runs = {"cot (old wording)": cot_old, "cot (plain wording)": cot_new, "chain, old skip wording": merged,
            "chain, plain skip wording": chain}  # fmt: skip
    pairs = [
        ("cot (old wording)", "cot (plain wording)"),
        ("cot (old wording)", "chain, old skip wording"),
        ("cot (old wording)", "chain, plain skip wording"),
        ("cot (plain wording)", "chain, plain skip wording"),
        ("chain, old skip wording", "chain, plain skip wording"),
    ]
    comparisons = [
        paired_runs(f"{b} vs {a}", a, b, [runs[a][i] for i in ids], [runs[b][i] for i in ids]) for a, b in pairs
    ]
    tokens = {name: round(_tokens([rows[i] for i in ids]), 1) for name, rows in runs.items()}
    result = {
        "n": len(ids),
        "skips": sum(not merged[i]["subquestions"] for i in ids),
        "solver_tokens_mean": tokens,
        "comparisons": comparisons,
        "meta": run_meta("benchmarks.chain_skip_wording", argv),
    }
    lines = [
        "# The chain's no-plan path with plain-text chain of thought (issue 12, target 2)",
        "",
        f"Command: `{result['meta']['command']}`. {len(ids)} GSM8K train items (seed 0, the 400 of "
        f"`gsm8k-train-distilled`), solver Qwen2.5-Coder-1.5B; the merged default decomposer skips {result['skips']}.",
        "",
        "| run | n | strict % | solver tokens (mean) | × old CoT's | × plain CoT's |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        correct = sum(int(rows[i]["scores"]["strict"]) for i in ids)
        lines.append(
            f"| {name} | {len(ids)} | {100 * correct / len(ids):.1f} | {tokens[name]} | "
            f"{tokens[name] / tokens['cot (old wording)']:.2f} | {tokens[name] / tokens['cot (plain wording)']:.2f} |"
        )
    lines += ["", "| B vs A | A % | B % | B − A (95 % CI) | only A / only B | McNemar p |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        lo, hi = c["ci95"]
        lines.append(
            f"| {c['comparison']} | {100 * c['a']['correct'] / c['a']['n']:.1f} | "
            f"{100 * c['b']['correct'] / c['b']['n']:.1f} | {100 * c['difference']:+.1f} "
            f"({100 * lo:+.1f}..{100 * hi:+.1f}) | {c['only_a']} / {c['only_b']} | {c['p_value']:.3g} |"
        )
    lines += [
        "",
        "The chain's rows are assembled, not rerun: for a skipped item the chain sends the solver the very messages "
        "single-stage CoT sends, so its row is the CoT run's row for that item. The solver is not bit-reproducible "
        "across processes, so a rerun of the chain would differ by that noise.",
    ]
    text = "\n".join(lines)
    print(text)
    if str(args.out) != "-":
        write_result(args.out, result, text + "\n")
    return result


if __name__ == "__main__":
    main()
