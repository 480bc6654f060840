r"""Paired recall@k differences between methods of a ``bench_musique`` rows file, overall and by hops.

``bench_musique`` pairs every method against ``plain``; this pairs ``--methods`` against any ``--against`` method
of the same rows (the previous default, say), question by question (normal 95 % CI of the mean difference),
with the median seconds per question of each.

    python -m benchmarks.musique_pairs --rows benchmarks/results/musique/bm25.rows.jsonl \
        --against plain dod_iterative_spans_fills3:multihop-lora \
        --methods dod_iterative_spans_fills3_w0.5_fb1_p8_rrf0:multihop-lora
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_musique import paired
from langchain_dod.evaluation.musique import recall_at_k

__all__ = ["main", "paired"]

GROUPS = ("all", "2", "3", "4")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; prints a markdown table and returns the pairs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, required=True, help="a bench_musique OUT.rows.jsonl")
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--against", nargs="+", required=True)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    k = args.k
    lines = [
        f"| method | against | recall@{k} | against's | Δ all (95 % CI) | 2-hop | 3-hop | 4-hop | s/query (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    out: dict[str, Any] = {}
    for method in args.methods:
        for against in args.against:
            entry = paired(rows, method, against, k)
            out[f"{method} vs {against}"] = entry
            ids = {r["id"] for r in rows if r["method"] == method}
            mean = {
                m: statistics.fmean(
                    recall_at_k(r["ranked"], r["supporting"], k) for r in rows if r["method"] == m and r["id"] in ids
                )
                for m in (method, against)
            }
            seconds = statistics.median(r["seconds"] for r in rows if r["method"] == method)
            cells = [method, against, f"{mean[method]:.3f}", f"{mean[against]:.3f}"]
            for group in GROUPS:
                e = entry.get(group)
                cells.append("–" if e is None else f"{e['difference']:+.3f} ({e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f})")
            cells.append(f"{seconds:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
