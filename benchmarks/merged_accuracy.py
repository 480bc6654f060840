r"""Does the merged adapter lose accuracy? Issue 16, target 1's quality condition, settled by ``dod eval``.

``benchmarks.merged_agreement`` lists the items of a committed two-stage run where the merged adapter writes other
sub-questions than the run-time adapter. Identical sub-questions give the solver the same prompt, so only those
items need solving again: a ``dod eval`` of them with the merged file *and* with the run-time adapter, interleaved
in one process (the solver is not bit-reproducible across processes; the rerun measures that noise). This script
scores them (the evaluation's own strict rule, as recorded in the rows) and reports, with paired 95 % CIs and
McNemar's exact test:

1. merged vs the run-time rerun, on the differing items (same process, same order: the fairest pair);
2. merged vs the run as recorded, on the differing items;
3. over all the run's items: the merged decomposer (the run's rows where it agrees, its own rows where it does
   not) vs the run as recorded. That is the score ``dod eval`` would give the merged decomposer, up to the
   solver's run-to-run noise on the agreeing items.

``--against RUN...`` adds the merged decomposer against other runs of the same items (the teacher, CoT, ...).

    python -m benchmarks.merged_accuracy \
        --run benchmarks/results/eval/gsm8k-train-distilled/runs/dec-default-sdr-eqp__*.jsonl \
        --merged benchmarks/results/eval/gsm8k-train-merged*/runs/dec-SmolLM2-*-Q8_0-eqp__*.jsonl \
        --rerun benchmarks/results/eval/gsm8k-train-merged*/runs/dec-default-eqp__*.jsonl

Writes ``benchmarks/results/merged_accuracy.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import run_meta, write_result
from langchain_dod.evaluation.report import Paired, paired_scores

__all__ = ["compare", "composite_rows", "main", "paired_runs", "rows_by_id"]

RESULTS = Path(__file__).parent / "results" / "merged_accuracy"
AGREEMENT = Path(__file__).parent / "results" / "merged_agreement.json"
METRIC = "strict"


def rows_by_id(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Rows by id from one or more run JSONLs; an id twice with different results is an error, not a choice."""
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            seen = rows.get(row["id"])
            if seen is not None and seen["scores"] != row["scores"]:
                raise ValueError(f"{row['id']} is in two of {[str(p) for p in paths]} with different scores.")
            rows[row["id"]] = row
    return rows


def _summary(name: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    solver = [r["usage"]["solver"]["output_tokens"] for r in rows if r.get("usage", {}).get("solver")]
    return {
        "run": name,
        "n": len(rows),
        "correct": sum(int(r["scores"][METRIC]) for r in rows),
        "skips": sum(not r["subquestions"] for r in rows),
        "solver_tokens_mean": round(statistics.fmean(solver), 1) if solver else None,
    }


def paired_runs(label: str, a: str, b: str, rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> dict:
    p: Paired = paired_scores(
        a, b, METRIC, [r["scores"][METRIC] for r in rows_a], [r["scores"][METRIC] for r in rows_b]
    )
    return {
        "comparison": label,
        "a": _summary(a, rows_a),
        "b": _summary(b, rows_b),
        "difference": round(p.difference, 4),
        "ci95": [round(x, 4) for x in p.ci95],
        "only_a": p.only_a,
        "only_b": p.only_b,
        "p_value": p.p_value,
    }


def composite_rows(
    run: dict[str, dict[str, Any]], differ: Sequence[str], merged: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The merged decomposer's rows over all the run's items: its own where it differs, the run's elsewhere."""
    differ_set = set(differ)
    return {i: merged[i] if i in differ_set else row for i, row in run.items()}


def compare(
    run: dict[str, dict[str, Any]],
    differ: Sequence[str],
    merged: dict[str, dict[str, Any]],
    rerun: dict[str, dict[str, Any]],
    against: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The three comparisons of the module docstring; ``differ``: the run's ids where the merge disagrees.

    ``against``: other runs of the same items by name; the merged decomposer is compared with each on the items
    both have (B = merged), as ``dod eval report`` compares the runs of one folder.
    """
    missing = [i for i in differ if i not in merged]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(differ)} differing items have no merged row (e.g. {missing[0]}): finish "
            "their dod eval first (ids are compared as the run spells them)."
        )
    unknown = [i for i in differ if i not in run]
    if unknown:
        raise ValueError(f"{len(unknown)} differing ids are not in the run (e.g. {unknown[0]}): wrong --run?")
    both = [i for i in differ if i in rerun]
    composite = composite_rows(run, differ, merged)
    others = []
    for name, rows in (against or {}).items():
        common = [i for i in run if i in rows]
        if common:
            others.append(
                paired_runs(
                    f"merged vs {name}", name, "merged", [rows[i] for i in common], [composite[i] for i in common]
                )
            )
    return {
        "others": others,
        "differing_items": len(differ),
        "comparisons": [
            paired_runs("differing items: merged vs run-time rerun (one process)", "run-time rerun", "merged",
                    [rerun[i] for i in both], [merged[i] for i in both]),
            paired_runs("differing items: merged vs the run as recorded", "run", "merged",
                    [run[i] for i in differ], [merged[i] for i in differ]),
            paired_runs(f"all {len(run)} items: merged (its rows where it differs) vs the run", "run", "merged",
                    list(run.values()), [composite[i] for i in run]),
        ],
    }  # fmt: skip


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# Merged vs run-time adapter: accuracy on the evaluation items",
        "",
        f"Command: `{command}`",
        "",
        "| comparison | n | A | A % | B | B % | B − A (95 % CI) | only A / only B | McNemar p | skips A / B "
        "| solver tokens A / B |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in [*result["comparisons"], *result.get("others", [])]:
        a, b = c["a"], c["b"]
        lo, hi = c["ci95"]
        lines.append(
            f"| {c['comparison']} | {a['n']} | {a['run']} | {100 * a['correct'] / a['n']:.1f} | {b['run']} | "
            f"{100 * b['correct'] / b['n']:.1f} | {100 * c['difference']:+.1f} ({100 * lo:+.1f}..{100 * hi:+.1f}) "
            f"| {c['only_a']} / {c['only_b']} | {c['p_value']:.3g} | {a['skips']} / {b['skips']} | "
            f"{a['solver_tokens_mean']} / {b['solver_tokens_mean']} |"
        )
    lines += [
        "",
        f"{result['differing_items']} items get other sub-questions from the merged adapter "
        "(`benchmarks.merged_agreement`); on the others the solver sees the same prompt, so the last row takes the "
        "run's own rows there. Strict accuracy as the evaluation recorded it. The run-time rerun and the merged "
        "run were interleaved in one `dod eval` process; the gap between the rerun and the recorded run on the same "
        "items is the solver's run-to-run noise.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the committed two-stage run (run-time adapter)")
    parser.add_argument("--agreement", type=Path, default=AGREEMENT, help="merged_agreement's JSON")
    parser.add_argument("--way", default="merged-Q8_0", help="which merge of the agreement JSON")
    parser.add_argument("--merged", type=Path, nargs="+", required=True, help="dod eval rows of the merged file")
    parser.add_argument("--rerun", type=Path, nargs="+", required=True, help="rows of the run-time rerun")
    parser.add_argument(
        "--against", type=Path, nargs="*", default=[], help="other runs of the same items to compare the merge with"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="write OUT.json and OUT.md ('-': nothing)")
    args = parser.parse_args(argv)
    agreement = json.loads(args.agreement.read_text())
    if args.way not in agreement["ways"]:
        parser.error(f"--way {args.way!r} is not in {args.agreement}; it has {sorted(agreement['ways'])}")
    try:
        against = {path.name.split("__")[0]: rows_by_id([path]) for path in args.against}
        result = compare(
            rows_by_id([args.run]),
            agreement["ways"][args.way]["differ"],
            rows_by_id(args.merged),
            rows_by_id(args.rerun),
            against,
        )
    except ValueError as err:
        parser.error(str(err))
    result["meta"] = run_meta("benchmarks.merged_accuracy", argv, way=args.way)
    text = markdown(result, result["meta"]["command"])
    print(text)
    if str(args.out) != "-":
        write_result(args.out, result, text)
    return result


if __name__ == "__main__":
    main()
