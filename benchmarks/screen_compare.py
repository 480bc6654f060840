"""Two SD-R screens of the same teacher plans side by side (issue 12): which solver wording do the plans serve.

Reads two ``dod-train screen`` outputs (JSONL, one line per question) over the same decompositions, e.g. the
text-wording screen (``screened.jsonl``) and the program-wording one (``screened-program.jsonl``) of
``runs/smollm2-sdr/shard*``, joins them on the question id and counts, on the questions both screened:

* **plan right**: the teacher's plan led the solver to the gold answer (``sample`` 1), in each wording, with the
  exact McNemar test of the difference (the same teacher plan, two solver wordings);
* **kept**: what SD-R keeps (the plan, a learned skip, or nothing), per wording;
* solver output length (characters of ``solution``; the screens do not store token counts).

Only stored records are read; nothing is re-run.

    python -m benchmarks.screen_compare --a runs/smollm2-sdr/shard0/screened.jsonl \
        --a runs/smollm2-sdr/shard1/screened.jsonl --b runs/smollm2-sdr/shard0/screened-program.jsonl \
        --b runs/smollm2-sdr/shard1/screened-program.jsonl --out benchmarks/results/sdr_program_screen
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from langchain_dod.evaluation.report import mcnemar_exact


def _read(paths: list[str]) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                rows[str(record["id"])] = record
    return rows


def _kept(record: dict) -> str:
    if not record.get("correct"):
        return "dropped"
    return "skip" if record.get("sample") == "skip" else "plan"


def _plan_right(record: dict) -> bool:
    """The teacher's own plan won (a learned skip or a failure keeps the plan's try under ``first``/top level)."""
    return bool(record.get("correct")) and record.get("sample") == 1


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Counts over the ids both screens hold."""
    ids = sorted(set(a) & set(b))
    both = Counter((_plan_right(a[i]), _plan_right(b[i])) for i in ids)
    only_a, only_b = both[(True, False)], both[(False, True)]

    def side(rows: dict[str, dict]) -> dict:
        kept = Counter(_kept(rows[i]) for i in ids)
        plans = [len(rows[i]["first"]["subquestions"] if "first" in rows[i] else rows[i]["subquestions"]) for i in ids]
        return {
            "plan_right": sum(_plan_right(rows[i]) for i in ids),
            "kept_plan": kept["plan"],
            "kept_skip": kept["skip"],
            "dropped": kept["dropped"],
            "median_solution_chars_with_plan": statistics.median(
                len(rows[i]["solution"]) for i in ids if rows[i].get("sample") != "skip"
            )
            if ids
            else None,
            "mean_plan_length": round(statistics.fmean(plans), 2) if plans else None,
        }

    return {
        "n": len(ids),
        "a": side(a),
        "b": side(b),
        "plan_right_a_only": only_a,
        "plan_right_b_only": only_b,
        "plan_right_both": both[(True, True)],
        "plan_right_neither": both[(False, False)],
        "mcnemar_p": mcnemar_exact(only_a, only_b),
    }


def write(out: Path, results: dict, labels: tuple[str, str]) -> str:
    a, b = results["a"], results["b"]
    n = results["n"]
    rows = [
        ("teacher plan led to the gold answer", "plan_right"),
        ("SD-R keeps the plan", "kept_plan"),
        ("SD-R keeps a learned skip", "kept_skip"),
        ("dropped (neither)", "dropped"),
        ("median solver reply with the plan, characters", "median_solution_chars_with_plan"),
    ]
    lines = [
        f"# The same teacher plans screened in two solver wordings ({n} questions both screened)",
        "",
        f"| | {labels[0]} | {labels[1]} |",
        "|---|---|---|",
        *(f"| {name} | {a[key]} | {b[key]} |" for name, key in rows),
        "",
        f"Plan right in {labels[0]} only: {results['plan_right_a_only']}, in {labels[1]} only: "
        f"{results['plan_right_b_only']}, both: {results['plan_right_both']}, neither: "
        f"{results['plan_right_neither']} (exact McNemar p = {results['mcnemar_p']:.3g}).",
        "",
    ]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "screen_compare.json").write_text(json.dumps({"labels": labels, **results}, indent=2) + "\n")
    (out / "screen_compare.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", action="append", required=True, help="a screened JSONL (repeat for shards)")
    parser.add_argument("--b", action="append", required=True, help="the other screen's JSONL (repeat for shards)")
    parser.add_argument("--labels", default="text wording,program wording")
    parser.add_argument("--out", required=True, help="folder for screen_compare.{json,md}")
    args = parser.parse_args()
    labels = tuple(args.labels.split(",", 1))
    print(write(Path(args.out), compare(_read(args.a), _read(args.b)), (labels[0], labels[1])))


if __name__ == "__main__":
    main()
