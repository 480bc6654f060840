"""Free-decoding speed of GGUF files side by side (issue 16, target 2): which quantisation decodes fastest here.

Each file generates 96 tokens from one prompt (end-of-text suppressed so every run is 96 tokens long), greedy,
1 thread; the rate is (96 - 1) tokens over the time of the 96-token run minus that of a 1-token run, so prompt
processing cancels out; median of ``--repeats``. Files are measured in the order given, so pass each twice,
interleaved, to see the drift.

    python -m benchmarks.probe_quant_decode MERGED_Q8_0.gguf MERGED_Q4_0.gguf MERGED_Q8_0.gguf MERGED_Q4_0.gguf \
        --out benchmarks/results/decode_builds/quant.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

PROMPT = (
    "Sam buys 3 shirts at $15 each and 2 pairs of pants at $25 each. He has a coupon for $10 off. How much does he "
    "pay? Write a long explanation."
)
TOKENS = 96


def _timed(llm, n: int) -> tuple[float, int]:  # noqa: ANN001 - llama_cpp.Llama
    llm.reset()
    start = time.perf_counter()
    out = llm.create_completion(PROMPT, max_tokens=n, temperature=0.0, logit_bias={llm.token_eos(): -1000.0})
    return time.perf_counter() - start, out["usage"]["completion_tokens"]


def measure(path: Path, repeats: int, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=threads, n_ctx=512, verbose=False)
    _timed(llm, 4)  # warm-up
    rates = []
    for _ in range(repeats):
        short, n_short = _timed(llm, 1)
        long, n_long = _timed(llm, TOKENS)
        rates.append((n_long - n_short) / (long - short))
    return {"file": path.name, "bytes": path.stat().st_size, "tok_s": statistics.median(rates), "rates": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [measure(f, args.repeats, args.threads) for f in args.files]
    for r in rows:
        gb_s = r["tok_s"] * r["bytes"] / 1e9
        print(f"{r['file']}: {r['tok_s']:.1f} tok/s, {r['bytes'] / 1e6:.1f} MB -> {gb_s:.2f} GB/s")
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "tokens": TOKENS, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
