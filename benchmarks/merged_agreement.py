r"""Does merging the adapter change what the decomposer writes? Issue 16, target 1's "no loss of accuracy".

``--merge-adapter`` loads the shipped LoRA merged into its base (``langchain_dod.merge``) and decodes faster, but
the merge rounds the merged weights (Q8_0, or F16), and the shipped adapter's skip-or-plan choice sits near 50/50
for many questions, so a small change in the weights can flip it. This script decomposes the items of a committed
two-stage ``dod eval`` run (the run's own decomposer and settings: math profile, 3 sub-questions, one thread) with
the adapter applied at run time, merged to Q8_0 and merged to F16, and counts, for each, the items whose
sub-questions equal the ones the run recorded, and how often each skips. The run-time row is the floor of what
"identical" can mean here (the same model, another process). Items that differ are listed, so a ``dod eval`` of
only those settles accuracy (identical sub-questions give the solver the same prompt).

    python -m benchmarks.merged_agreement --run \
        benchmarks/results/eval/gsm8k-train-distilled/runs/dec-default-sdr-eqp__qwen2.5-coder-1.5b-instruct.jsonl

Writes ``benchmarks/results/merged_agreement.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from benchmarks.report import run_meta, write_result
from langchain_dod import ChatGGUF, Decomposer
from langchain_dod.decomposition import default_adapter_for
from langchain_dod.evaluation.datasets import load_dataset
from langchain_dod.merge import merged_gguf
from langchain_dod.models import ROLE_DEFAULTS, resolve

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results" / "merged_agreement"
GSM8K_TRAIN = Path(__file__).parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
WAYS = ("runtime", "merged-Q8_0", "merged-F16")
CHOICES = (*WAYS, "merged-Q4_0")  # Q4_0: an opt-in merge type (langchain_dod.merge.MERGE_QTYPES)


def decomposer(way: str, adapter: str) -> Decomposer:
    """The run's decomposer with the adapter applied ``way``."""
    base = str(resolve(ROLE_DEFAULTS["decomposer"], role="decomposer"))
    if way == "runtime":
        llm = ChatGGUF(model=base, lora_path=adapter, n_threads=1)
    else:
        llm = ChatGGUF(model=str(merged_gguf(base, adapter, qtype=way.split("-", 1)[1])), n_threads=1)
    return Decomposer(llm=llm, profile="math", max_subquestions=3)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a two-stage dod eval run JSONL of GSM8K train items")
    parser.add_argument("--adapter", default=None, help="the LoRA GGUF that run applied (default: the shipped one)")
    parser.add_argument("--data", type=Path, default=GSM8K_TRAIN, help="the run's data set")
    parser.add_argument("--limit", type=int, default=None, help="the run's first N items")
    parser.add_argument(
        "--ways", nargs="+", choices=CHOICES, default=list(WAYS), help="which ways to decompose, in this order"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="write OUT.json and OUT.md ('-': nothing)")
    args = parser.parse_args(argv)
    adapter = args.adapter or str(default_adapter_for("math"))
    rows = [json.loads(line) for line in args.run.read_text().splitlines() if line.strip()][: args.limit]
    by_id = {name: item.question for item in load_dataset(args.data).items for name in item.names}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        parser.error(f"{len(missing)} ids of --run are not in --data (e.g. {missing[0]}); pass the run's data set")

    result: dict[str, Any] = {"ways": {}}
    plans: dict[str, list[list[str]]] = {}  # way -> its sub-questions, item by item
    for way in args.ways:
        dec = decomposer(way, adapter)
        same, skips, differ, seconds, plans[way] = 0, 0, [], [], []
        for row in tqdm(rows, desc=way, unit="item"):
            started = time.perf_counter()
            subquestions = dec.invoke(by_id[row["id"]]).subquestions
            seconds.append(time.perf_counter() - started)
            plans[way].append(subquestions)
            skips += not subquestions
            if subquestions == row["subquestions"]:
                same += 1
            else:
                differ.append(row["id"])
        seconds.sort()
        first = plans[args.ways[0]]
        result["ways"][way] = {
            "same": same,
            "skips": skips,
            "p50_s": round(seconds[len(seconds) // 2], 3),
            "differ": differ,
            # against the first way listed (e.g. merged-Q4_0 against merged-Q8_0): which items a switch would change
            "differ_from_first": [r["id"] for r, a, b in zip(rows, plans[way], first, strict=True) if a != b],
        }
    n = len(rows)
    recorded_skips = sum(not r["subquestions"] for r in rows)
    result["meta"] = run_meta("benchmarks.merged_agreement", argv, items=n, adapter=adapter, run=str(args.run))
    first = args.ways[0]
    lines = [
        f"| adapter applied | same sub-questions as the run | same as {first} | skips | p50 s per item (1 thread) |",
        "|---|---|---|---|---|",
        f"| (the run, as recorded) | {n} / {n} | | {recorded_skips} | |",
    ]
    for way, w in result["ways"].items():
        alike = n - len(w["differ_from_first"])
        lines.append(
            f"| {way} | {w['same']} / {n} ({w['same'] / n:.1%}) | {alike} / {n} | {w['skips']} | {w['p50_s']} |"
        )
    table = "\n".join(lines)
    print(table)
    if str(args.out) != "-":
        write_result(
            args.out,
            result,
            f"# Merged vs run-time adapter: the same sub-questions?\n\nCommand: `{result['meta']['command']}`\n\n"
            f"{table}\n\nEach way decomposes the run's {n} items in one process (math profile, at most 3 "
            "sub-questions, 1 thread, greedy). `same`: the sub-questions equal the recorded ones exactly. The "
            "ids that differ are in the JSON. Timings come from a shared, busy CPU: compare them within a row "
            "set only.\n",
        )
    return result


if __name__ == "__main__":
    main()
