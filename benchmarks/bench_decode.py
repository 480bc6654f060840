"""Decode speed: the JSON grammar's cost, and tokens/s against this machine's memory-bandwidth bound (issue 16).

(a) **Constrained vs free.** For each question the distilled decomposer (base + shipped adapter, which writes the
    JSON by itself) decodes its reply freely and then under the sub-question grammar; with greedy decoding both
    give the same reply (checked and reported), so the time ratio is the grammar's cost for the same tokens. The
    prompt is evaluated once beforehand and served from the KV cache in both timed calls, so they time decoding.
    Target 4: grammar ≤ 1.3× free. Greedy constrained calls check only the chosen token against the grammar
    (``engine._GreedyGrammar``); llama-cpp-python's grammar sampler, which checks the whole vocabulary at every
    step, is timed beside them in the same run for reference.
(b) **Bandwidth bound.** Every decoded token reads every weight once (plus the adapter's, and the KV cache so far):
    bytes per token come from the GGUF's tensor sizes (gguf-py's reader); ``token_embd`` counts in full when the
    model has no separate ``output`` matrix (tied embeddings: it is the output layer), else one row. Memory
    bandwidth is measured in the same run: numpy sums over a buffer much larger than the caches, split over T
    threads (numpy releases the GIL). ``llama.cpp``'s own decode timer (``llama_perf_context``: ``t_eval_ms``) gives
    tokens/s without Python's sampling overhead; end-to-end tokens/s (wall per generated token) is shown beside
    it. Target 2: bytes/token × tokens/s ≥ 50 % of the measured bandwidth, per thread count.

Run:  ``python -m benchmarks.bench_decode --n 10 --threads 1 2``  (writes benchmarks/results/decode.json + .md;
``--way runtime --out benchmarks/results/decode_runtime`` for the adapter applied at run time)
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import run_meta, write_result

__all__ = ["bytes_per_token", "decode_questions", "main", "memory_bandwidth"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "decode"
QUESTIONS = ROOT / "tests" / "fixtures" / "questions.jsonl"


def bytes_per_token(model: Path, adapter: Path | None = None) -> dict[str, int]:
    """Bytes of weights one decoded token reads: the model's tensors (see the module docstring) and the adapter's."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(str(model)).tensors}
    weights = sum(int(t.n_bytes) for t in tensors.values())
    embd = tensors.get("token_embd.weight")
    if embd is not None and "output.weight" in tensors:  # untied: the embedding is only looked up, one row
        rows = int(embd.shape[-1]) if len(embd.shape) > 1 else 1
        weights -= int(embd.n_bytes) - int(embd.n_bytes) // max(rows, 1)
    lora = sum(int(t.n_bytes) for t in GGUFReader(str(adapter)).tensors) if adapter else 0
    return {"model": weights, "adapter": lora, "total": weights + lora}


def memory_bandwidth(threads: int, megabytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: ``threads`` numpy sums over their own parts of one large buffer (best of runs)."""
    data = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    parts = np.array_split(data, threads)
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.sum, args=(part,)) for part in parts]
        started = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - started)
    return data.nbytes / best


def decode_questions(n: int) -> list[str]:
    """GSM8K *train* questions (the adapter never saw them), spread over the split; the test fixtures without it."""
    from benchmarks.bench_decompose import GSM8K_DIR, gsm8k_questions

    if (GSM8K_DIR / "train.jsonl").is_file():
        return gsm8k_questions(n, "train")
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    questions = [r["question"] for r in rows if r.get("profile") == "math"]
    return (questions * (n // len(questions) + 1))[:n]


def _perf(loaded: Any) -> tuple[float, int]:
    """llama.cpp's decode timer since the last reset: (seconds in single-token evals, tokens)."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(loaded.llm._ctx.ctx)
    return data.t_eval_ms / 1000, int(data.n_eval)


def _reset(loaded: Any) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(loaded.llm._ctx.ctx)


def _full_grammar(loaded: Any, messages: list[dict[str, Any]], model: str, max_tokens: int, schema: Any) -> Any:
    """``engine.complete`` under llama-cpp-python's own grammar sampler (the whole vocabulary every step).

    What constrained decoding cost before the one-token check, timed beside it in the same run.
    """
    from langchain_dod import engine

    tokens, stops = engine.render(loaded, messages)
    args = engine.completion_args(loaded, tokens, stops, model=model, max_tokens=max_tokens, json_schema=schema)
    args["grammar"] = engine._grammar(schema)
    args["logits_processor"] = args["logits_processor"][:1]  # the NaN guard only
    started = time.perf_counter()
    text = "".join(piece for piece, _ in engine.run(loaded, args, model=model))
    seconds = round(time.perf_counter() - started, 4)
    return engine.Completion(text, "stop", len(tokens), engine.count_tokens(loaded, text), 0, seconds)


def measure(
    threads: int,
    questions: list[str],
    model: str,
    adapter: str | None,
    max_tokens: int,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Free vs grammar decoding of each question's reply with ``threads`` llama.cpp threads.

    ``model_kwargs``: further ``llama_cpp.Llama`` arguments (e.g. ``{"flash_attn": True}``).
    """
    from langchain_dod import engine
    from langchain_dod.decomposition import subquestion_schema
    from langchain_dod.prompts import decomposer_messages

    loaded, _ = engine.load(model, adapter, engine.llama_params(n_threads=threads, model_kwargs=model_kwargs))
    schema = subquestion_schema()
    rows = []
    for question in questions:
        messages = decomposer_messages(question)
        engine.complete(loaded, messages, model=model, max_tokens=1)  # evaluate the prompt: all calls reuse it
        timed = {}
        for how, grammar in (("free", None), ("grammar", schema), ("full_grammar", schema)):
            _reset(loaded)
            if how == "full_grammar":
                done = _full_grammar(loaded, messages, model, max_tokens, schema)
            else:
                done = engine.complete(loaded, messages, model=model, max_tokens=max_tokens, json_schema=grammar)
            eval_s, n_eval = _perf(loaded)
            timed[how] = {
                "text": done.text,
                "tokens": done.output_tokens,
                "wall_s": done.seconds,
                "eval_s": eval_s,
                "n_eval": n_eval,
            }
        rows.append(
            {
                "question": question,
                "same_reply": timed["free"]["text"] == timed["grammar"]["text"] == timed["full_grammar"]["text"],
                "ratio": timed["grammar"]["wall_s"] / timed["free"]["wall_s"],
                "ratio_full": timed["full_grammar"]["wall_s"] / timed["free"]["wall_s"],
                **timed,
            }
        )
    free_tokens = sum(r["free"]["tokens"] for r in rows)
    free_wall = sum(r["free"]["wall_s"] for r in rows)
    eval_tokens = sum(r["free"]["n_eval"] for r in rows)
    eval_s = sum(r["free"]["eval_s"] for r in rows)
    return {
        "threads": threads,
        "rows": rows,
        "same_reply": sum(r["same_reply"] for r in rows),
        "ratio_median": statistics.median(r["ratio"] for r in rows),
        "ratio_total": sum(r["grammar"]["wall_s"] for r in rows) / free_wall,
        "ratio_full_median": statistics.median(r["ratio_full"] for r in rows),
        "ratio_full_total": sum(r["full_grammar"]["wall_s"] for r in rows) / free_wall,
        "free_tok_s_wall": free_tokens / free_wall,
        "free_tok_s_eval": eval_tokens / eval_s if eval_s else None,
        "grammar_tok_s_wall": sum(r["grammar"]["tokens"] for r in rows) / sum(r["grammar"]["wall_s"] for r in rows),
    }


def markdown(result: dict[str, Any]) -> str:
    """Both tables."""
    per_token = result["bytes_per_token"]["total"]
    lines = [
        "| threads | same reply | grammar / free time (median, total) | full-vocabulary grammar / free (median, "
        "total) | free tok/s (wall) | grammar tok/s (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for m in result["threads"]:
        lines.append(
            f"| {m['threads']} | {m['same_reply']}/{len(m['rows'])} | {m['ratio_median']:.2f}×, "
            f"{m['ratio_total']:.2f}× | {m['ratio_full_median']:.2f}×, {m['ratio_full_total']:.2f}× | "
            f"{m['free_tok_s_wall']:.1f} | {m['grammar_tok_s_wall']:.1f} |"
        )
    lines += [
        "",
        f"Bytes read per decoded token: {per_token / 1e6:.1f} MB (model {result['bytes_per_token']['model'] / 1e6:.1f}"
        f" MB + adapter {result['bytes_per_token']['adapter'] / 1e6:.1f} MB).",
        "",
        "| threads | memory bandwidth GB/s | decode tok/s (llama.cpp timer) | implied GB/s | % of bandwidth "
        "| tok/s bound |",
        "|---|---|---|---|---|---|",
    ]
    for m in result["threads"]:
        bandwidth = m["bandwidth_bytes_s"]
        tok_s = m["free_tok_s_eval"] or m["free_tok_s_wall"]
        lines.append(
            f"| {m['threads']} | {bandwidth / 1e9:.1f} | {tok_s:.1f} | {tok_s * per_token / 1e9:.2f} | "
            f"{100 * tok_s * per_token / bandwidth:.0f} % | {bandwidth / per_token:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="questions")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--bandwidth-mb", type=int, default=512, help="buffer for the bandwidth measurement")
    parser.add_argument(
        "--way",
        choices=("merged", "runtime", "base"),
        default=None,
        help="the shipped math adapter merged into the base, applied at run time, or the untuned base (its free "
        "reply differs); default: what the default decomposer does",
    )
    parser.add_argument(
        "--flash-attn", action="store_true", help="load with llama.cpp's flash attention (not what ships)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.n < 1 or min(args.threads) < 1:
        parser.error("--n and --threads must be >= 1")

    from langchain_dod.decomposition import default_decomposer_model, default_merge
    from langchain_dod.merge import merged_gguf
    from langchain_dod.models import resolve

    model, adapter = default_decomposer_model("math")
    way = args.way or ("merged" if default_merge("math", adapter) else "runtime")
    if way == "base" or adapter is None:
        adapter = None
    elif way == "merged":  # the merged file is the model: no adapter at run time, its own bytes per token
        model, adapter = str(merged_gguf(resolve(model), Path(adapter))), None
    questions = decode_questions(args.n)
    per_thread = []
    for threads in args.threads:
        bandwidth = memory_bandwidth(threads, args.bandwidth_mb)
        row = measure(
            threads, questions, model, adapter, args.max_tokens, {"flash_attn": True} if args.flash_attn else None
        )
        row["bandwidth_bytes_s"] = (bandwidth + memory_bandwidth(threads, args.bandwidth_mb)) / 2  # before and after
        per_thread.append(row)
    result = {
        "bytes_per_token": bytes_per_token(resolve(model), Path(adapter) if adapter else None),
        "threads": per_thread,
        "meta": run_meta(
            "benchmarks.bench_decode",
            argv,
            way=way,
            model=model,
            adapter=Path(adapter).name if adapter else None,
            flash_attn=args.flash_attn,
        ),
    }
    meta, table = result["meta"], markdown(result)
    print(table)
    write_result(
        args.out,
        result,
        f"# Decode speed: grammar vs free, and against the memory-bandwidth bound\n\nCommand: "
        f"`{meta['command']}` ({meta['cpu_count']} CPUs, {way}: {Path(model).name}"
        f"{' + ' + meta['adapter'] if adapter else ''}, "
        f"greedy, load average at end {meta['load_average_at_end']})\n\n{table}\n\n"
        "Grammar vs free: the same prompt (served from the KV cache), the same greedy reply when 'same reply' "
        "says so (free, grammar and full-vocabulary grammar all alike); time per call, the three calls of a "
        "question one after another. 'Grammar' checks only the greedy token against the grammar, and the whole "
        "vocabulary only when it is rejected (engine._GreedyGrammar); 'full-vocabulary grammar' is "
        "llama-cpp-python's grammar sampler, which checks every token at every step.\n\nBandwidth: numpy sums "
        "over a buffer far larger than the caches, T threads; the bound is bandwidth / bytes per token. Absolute "
        "numbers depend on the machine's load: compare rows of one run.\n",
    )
    return result


if __name__ == "__main__":
    main()
