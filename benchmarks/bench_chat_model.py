"""SmolLM2-135M GGUF through ``ChatGGUF`` (llama.cpp) vs the same weights through transformers (fp32, CPU).

Why: ChatGGUF is the decomposer's engine; this shows what it costs to load and run next to the obvious
alternative, and what the KV-cache reuse of a repeated system prompt saves. Optionally also
langchain_community's ``ChatLlamaCpp`` on the same file, with its defaults.

Each backend runs in its own child process (clean RSS, no shared caches), one after the other, over the same
chat prompts; every figure is the median of ``--repeats`` runs. Prompt speed is prompt tokens / time to the
first generated token (cold: the KV cache is emptied first); decode speed is (generated tokens - 1) / time
from the first to the last token, greedy, up to ``--max-tokens``.

Run:  HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_chat_model  [--repeats 5] [--skip-community]
Writes benchmarks/results/chat_model.json and chat_model.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "smollm2-135m-instruct"

#: About 300 tokens under SmolLM2's chat template: long enough for prompt speed to mean something.
CONTEXT = (
    "A bakery sells loaves of bread for 3 dollars each and muffins for 2 dollars each. On Monday it sold "
    "twice as many muffins as loaves, and on Tuesday it sold 15 more loaves than on Monday but half as many "
    "muffins. The owner pays 40 dollars a day in rent and spends 1 dollar on ingredients for every item "
    "sold. Her assistant is paid 12 dollars an hour and worked 6 hours on Monday and 8 hours on Tuesday. "
)
PROMPTS = [
    [{"role": "user", "content": CONTEXT * 3 + "How much profit did the bakery make on Monday if it sold 20 loaves?"}],
    [{"role": "user", "content": CONTEXT * 3 + "Explain, step by step, how to find Tuesday's revenue."}],
]
#: ~300-token system prompt shared by consecutive calls (the decomposer's situation: fixed instructions).
SYSTEM = (
    "You are a question decomposer. Given a math word problem, you write at most three short sub-questions "
    "that, answered in order, lead to the final answer. Each sub-question asks for one quantity, names the "
    "quantities it needs, and does not compute anything itself. You never answer the question. "
) * 5
CACHE_QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "Sara reads 12 pages a day. How many pages does she read in a week?",
]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


# -- workers (each runs in its own process) ----------------------------------------------------------------------


def _time_stream(stream: Callable[[], Any]) -> tuple[float, float, int]:
    """(seconds to first token, seconds first->last token, tokens) for an iterator of non-empty pieces."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for _ in stream():
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
    assert first is not None and last is not None
    return first - start, last - first, count


class _Calls:
    """One backend's per-call token counts and speeds (prompt tok/s to the first token, decode tok/s after it)."""

    def __init__(self) -> None:
        self.n_prompt: list[int] = []
        self.n_out: list[int] = []
        self.prompt_tps: list[float] = []
        self.decode_tps: list[float] = []

    def add(self, n_in: int, n_out: int, ttft: float, rest: float) -> None:
        self.n_prompt.append(n_in)
        self.n_out.append(n_out)
        self.prompt_tps.append(n_in / ttft)
        if n_out > 1:
            self.decode_tps.append((n_out - 1) / rest)


def _summary(backend: str, load: float, rss: float, calls: _Calls) -> dict[str, Any]:
    """One backend's row: the same fields and rounding for every worker."""
    return {
        "backend": backend,
        "load_s": round(load, 4),
        "rss_after_load_mb": round(rss, 1),
        "peak_rss_mb": round(_peak_mb(), 1),
        "prompt_tokens": sorted(set(calls.n_prompt)),
        "output_tokens_median": statistics.median(calls.n_out),
        "prompt_tok_s": _median(calls.prompt_tps),
        "decode_tok_s": _median(calls.decode_tps),
    }


def worker_chatgguf(repeats: int, max_tokens: int, threads: int) -> dict[str, Any]:
    """ChatGGUF: per-token timing from its own stream; token counts from usage_metadata."""
    from langchain_dod.chat_models import ChatGGUF

    started = time.perf_counter()
    llm = ChatGGUF(model=MODEL, max_tokens=max_tokens, n_threads=threads).load()
    load = time.perf_counter() - started
    rss = _rss_mb()
    llm.invoke("Hi", max_tokens=2)  # warm-up: first-touch page faults of the mmapped weights
    calls = _Calls()
    for _ in range(repeats):
        for messages in PROMPTS:
            llm.reset_kv_cache()
            usage: dict[str, Any] = {}

            def stream(messages: list[dict[str, str]] = messages, usage: dict[str, Any] = usage) -> Any:
                for chunk in llm.stream(messages):
                    if chunk.usage_metadata:
                        usage.update(chunk.usage_metadata)
                    if chunk.content:
                        yield chunk

            ttft, rest, count = _time_stream(stream)
            calls.add(usage["input_tokens"], usage["output_tokens"], ttft, rest)
    grammar_tps = _grammar_decode(llm, repeats)
    cache = _prefix_cache(llm, repeats)
    row = _summary("ChatGGUF (llama.cpp, Q4_1)", load, rss, calls)
    return {**row, "grammar_decode_tok_s": _median(grammar_tps), "prefix_cache": cache}


#: The decomposer's kind of output: a JSON object with a short list of strings.
SUBQUESTIONS = {
    "type": "object",
    "properties": {"subquestions": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
    "required": ["subquestions"],
}


def _grammar_decode(llm: Any, repeats: int) -> list[float]:
    """Decode speed when a JSON-schema grammar constrains every token (``.bind(json_schema=...)``)."""
    speeds = []
    for _ in range(repeats):
        for messages in PROMPTS:
            usage: dict[str, Any] = {}

            def stream(messages: list[dict[str, str]] = messages, usage: dict[str, Any] = usage) -> Any:
                for chunk in llm.stream(messages, json_schema=SUBQUESTIONS, repeat_penalty=1.3):
                    if chunk.usage_metadata:
                        usage.update(chunk.usage_metadata)
                    if chunk.content:
                        yield chunk

            _, rest, _ = _time_stream(stream)
            if usage["output_tokens"] > 1:
                speeds.append((usage["output_tokens"] - 1) / rest)
    return speeds


def _prefix_cache(llm: Any, repeats: int) -> dict[str, Any]:
    """Same ~300-token system prompt, different question: cold (KV cache emptied) vs warm (same prefix).

    A warm call's previous call had the same prefix. Time to first token is the prompt's cost; each call
    generates up to 8 tokens.
    """
    cold, warm, cold_total, warm_total, cached = [], [], [], [], []
    n_input = 0
    for _ in range(repeats):
        for j, question in enumerate(CACHE_QUESTIONS):
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
            is_cold = j == 0
            if is_cold:
                llm.reset_kv_cache()
            usage: dict[str, Any] = {}

            def stream(messages: list[dict[str, str]] = messages, usage: dict[str, Any] = usage) -> Any:
                for chunk in llm.stream(messages, max_tokens=8):
                    if chunk.usage_metadata:
                        usage.update(chunk.usage_metadata)
                    if chunk.content:
                        yield chunk

            started = time.perf_counter()
            ttft, _, _ = _time_stream(stream)
            total = time.perf_counter() - started
            n_input = usage["input_tokens"]
            if is_cold:
                cold.append(ttft)
                cold_total.append(total)
            else:
                warm.append(ttft)
                warm_total.append(total)
                cached.append(usage["input_token_details"]["cache_read"])
    return {
        "input_tokens": n_input,
        "cache_read_tokens_median": statistics.median(cached),
        "cold_first_token_s": _median(cold),
        "warm_first_token_s": _median(warm),
        "cold_call_s": _median(cold_total),
        "warm_call_s": _median(warm_total),
        "first_token_speedup": round(statistics.median(cold) / statistics.median(warm), 2),
        "n_cold": len(cold),
        "n_warm": len(warm),
    }


def worker_transformers(repeats: int, max_tokens: int, threads: int) -> dict[str, Any]:
    """The same GGUF loaded by transformers (dequantised to fp32), greedy ``generate``.

    A streamer timestamps every new token.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    from langchain_dod.models import resolve

    torch.set_num_threads(threads)
    path = resolve(MODEL)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    load = time.perf_counter() - started
    rss = _rss_mb()

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.calls = 0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls > 1:  # the first put() is the prompt itself
                self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run(messages: list[dict[str, str]], new: int) -> tuple[float, float, int, int]:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        stamps = Stamps()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=new, do_sample=False, streamer=stamps, pad_token_id=tokenizer.eos_token_id
            )
        n_in = ids["input_ids"].shape[1]
        n_out = out.shape[1] - n_in
        return stamps.times[0] - started, stamps.times[-1] - stamps.times[0], n_in, n_out

    run([{"role": "user", "content": "Hi"}], 2)  # warm-up
    calls = _Calls()
    for _ in range(repeats):
        for messages in PROMPTS:
            ttft, rest, n_in, out = run(messages, max_tokens)
            calls.add(n_in, out, ttft, rest)
    return _summary("transformers (fp32, CPU)", load, rss, calls)


def worker_community(repeats: int, max_tokens: int, threads: int) -> dict[str, Any]:
    """langchain_community's ChatLlamaCpp on the same file with its own defaults (n_batch=8)."""
    from langchain_community.chat_models import ChatLlamaCpp

    from langchain_dod.models import resolve

    started = time.perf_counter()
    llm = ChatLlamaCpp(
        model_path=str(resolve(MODEL)),
        n_ctx=4096,
        n_threads=threads,
        temperature=0,
        max_tokens=max_tokens,
        verbose=False,
    )
    load = time.perf_counter() - started
    rss = _rss_mb()
    llm.invoke("Hi")
    calls = _Calls()
    for _ in range(repeats):
        for messages in PROMPTS:
            llm.client.reset()
            pieces: list[str] = []

            def stream(messages: list[dict[str, str]] = messages, pieces: list[str] = pieces) -> Any:
                for chunk in llm.stream([(m["role"], m["content"]) for m in messages]):
                    if chunk.content:
                        pieces.append(str(chunk.content))
                        yield chunk

            ttft, rest, count = _time_stream(stream)
            # no usage metadata from this class: count with the model's tokenizer
            n_in = len(llm.client.tokenize(_template_text(messages).encode(), add_bos=False, special=True))
            out = len(llm.client.tokenize("".join(pieces).encode(), add_bos=False, special=True))
            calls.add(n_in, out, ttft, rest)
    return _summary("ChatLlamaCpp (langchain_community, defaults)", load, rss, calls)


def _template_text(messages: list[dict[str, str]]) -> str:
    """SmolLM2's ChatML rendering (its GGUF template adds a default system turn when none is given)."""
    from langchain_dod.chat_models import ChatGGUF

    llm = ChatGGUF(model=MODEL)
    loaded = llm._loaded()
    tokens, _ = loaded.render(messages)
    return loaded.llm.detokenize(tokens, special=True).decode()


WORKERS = {"chatgguf": worker_chatgguf, "transformers": worker_transformers, "community": worker_community}


# -- driver -------------------------------------------------------------------------------------------------------


def _run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_chat_model",
        "--worker",
        name,
        "--repeats",
        str(args.repeats),
        "--max-tokens",
        str(args.max_tokens),
        "--threads",
        str(args.threads),
    ]
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {name} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def _markdown(report: dict[str, Any]) -> str:
    rows = report["backends"]
    ours = rows["chatgguf"]
    lines = [
        "# ChatGGUF vs transformers on SmolLM2-135M-Instruct (CPU)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}; threads={report['threads']}; medians of {report['repeats']} repeats x "
        f"{len(PROMPTS)} prompts; greedy, up to {report['max_tokens']} new tokens.",
        "",
        "| backend | load s | RSS after load MB | peak RSS MB | prompt tok/s | decode tok/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        lines.append(
            f"| {row['backend']} | {row['load_s']:.2f} | {row['rss_after_load_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
            f"{row['prompt_tok_s']:.1f} | {row['decode_tok_s']:.1f} |"
        )
    lines += ["", "Ratios (ChatGGUF / other; for load and memory, other / ChatGGUF, so >1 favours ChatGGUF):", ""]
    for key, ratio in report["ratios"].items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v}x" for k, v in ratio.items()))
    cache = ours["prefix_cache"]
    lines += [
        "",
        f"ChatGGUF decode under a JSON-schema grammar (the decomposer's `.bind(json_schema=...)`): "
        f"{ours['grammar_decode_tok_s']:.1f} tok/s vs {ours['decode_tok_s']:.1f} tok/s free "
        f"({round(ours['grammar_decode_tok_s'] / ours['decode_tok_s'], 2)}x).",
    ]
    lines += [
        "",
        f"Prefix KV-cache reuse (ChatGGUF, {cache['input_tokens']}-token prompt with a shared system prompt; "
        f"median {cache['cache_read_tokens_median']} tokens read from cache when warm):",
        "",
        "| | first token s | whole call s (<=8 tokens) |",
        "|---|---:|---:|",
        f"| cold (cache emptied) | {cache['cold_first_token_s']:.3f} | {cache['cold_call_s']:.3f} |",
        f"| warm (same system prompt as the previous call) | {cache['warm_first_token_s']:.3f} | "
        f"{cache['warm_call_s']:.3f} |",
        f"| speed-up | {cache['first_token_speedup']}x | {round(cache['cold_call_s'] / cache['warm_call_s'], 2)}x |",
        "",
        "The machine is shared (see loadavg in the JSON): absolute numbers vary run to run; the ratios, measured "
        "in the same run, are the result.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the comparison (or, with ``--worker``, one backend) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--skip-community", action="store_true", help="leave out langchain_community ChatLlamaCpp")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads is None:
        from langchain_dod.chat_models import physical_cores

        args.threads = physical_cores()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.repeats, args.max_tokens, args.threads)))
        return

    names = ["chatgguf", "transformers"] + ([] if args.skip_community else ["community"])
    backends = {name: _run_worker(name, args) for name in names}
    ours = backends["chatgguf"]
    ratios = {}
    for name, other in backends.items():
        if name == "chatgguf":
            continue
        ratios[f"ChatGGUF vs {other['backend']}"] = {
            "prompt tok/s": round(ours["prompt_tok_s"] / other["prompt_tok_s"], 2),
            "decode tok/s": round(ours["decode_tok_s"] / other["decode_tok_s"], 2),
            "load time": round(other["load_s"] / ours["load_s"], 2),
            "RSS after load": round(other["rss_after_load_mb"] / ours["rss_after_load_mb"], 2),
        }
    report = {
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.bench_chat_model " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.python_version()}",
        "threads": args.threads,
        "repeats": args.repeats,
        "max_tokens": args.max_tokens,
        "model": MODEL,
        "backends": backends,
        "ratios": ratios,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chat_model.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "chat_model.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
