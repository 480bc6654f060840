"""Decomposition latency: SmolLM2-135M vs Qwen2.5-Coder-1.5B (both through ChatGGUF) vs SmolLM2 in transformers.

Same GSM8K questions, same prompt (``langchain_dod.prompts.decomposer_messages``), greedy decoding, one
question at a time. Each backend runs in its own subprocess (clean RSS, no shared caches). The llama.cpp
backends decode under the sub-question grammar; transformers has no grammar and decodes freely up to the
same token limit (noted in the results).

    python -m benchmarks.bench_decompose --n 30
Writes benchmarks/results/decompose.json and .md.
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
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
BACKENDS = ("gguf:smollm2-135m-instruct", "gguf:qwen2.5-coder-1.5b-instruct", "transformers:smollm2-135m-instruct")
MAX_TOKENS = 192
THREADS = int(os.environ.get("DOD_BENCH_THREADS", "1"))  # 1: the 2-core machine is shared


def gsm8k_questions(n: int, split: str = "test") -> list[str]:
    """``n`` questions spread evenly over the split; ``n`` = 0: all of them."""
    lines = (GSM8K_DIR / f"{split}.jsonl").read_text().splitlines()
    n = n or len(lines)
    step = max(1, len(lines) // n)
    return [json.loads(lines[i])["question"] for i in range(0, step * n, step)][:n]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_gguf(name: str, questions: list[str], adapter: str | None = None, grammar: str = "auto") -> dict:
    from langchain_dod import ChatGGUF, Decomposer

    started = time.perf_counter()
    llm = ChatGGUF(model=name, n_threads=THREADS, lora_path=adapter).load()
    load = time.perf_counter() - started
    decomposer = Decomposer(llm=llm, max_tokens=MAX_TOKENS, grammar=grammar)
    seconds, counts, outputs, form = [], [], [], {"free_valid": 0, "all_questions": 0, "repeats_removed": 0}
    for question in questions:
        t = time.perf_counter()
        result = decomposer.invoke(question)
        seconds.append(time.perf_counter() - t)
        counts.append(len(result.subquestions))
        outputs.append(result.output_tokens or 0)
        form["free_valid"] += result.constrained is False  # valid JSON without the grammar's help
        form["all_questions"] += all(q.endswith("?") for q in result.subquestions)
        form["repeats_removed"] += len(json.loads(result.raw or "{}").get("subquestions", [])) > len(
            result.subquestions
        )
    return {"load_s": load, "seconds": seconds, "n_subquestions": counts, "output_tokens": outputs, "form": form}


def run_transformers(name: str, questions: list[str]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langchain_dod.models import resolve
    from langchain_dod.prompts import decomposer_messages

    torch.set_num_threads(THREADS)
    path = resolve(name)
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    model.eval()
    load = time.perf_counter() - started
    # the GGUF-derived generation config may not name the chat turn's end token: stop where llama.cpp stops
    stop_ids = [i for i in {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} if isinstance(i, int)]
    seconds, outputs = [], []
    for question in questions:
        ids = tok.apply_chat_template(
            decomposer_messages(question), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=stop_ids)
        seconds.append(time.perf_counter() - t)
        outputs.append(int(out.shape[1] - ids["input_ids"].shape[1]))
    return {"load_s": load, "seconds": seconds, "n_subquestions": None, "output_tokens": outputs}


def child(backend: str, n: int, split: str) -> None:
    kind, name = backend.split(":", 1)
    questions = gsm8k_questions(n, split)
    if kind == "gguf-lora":  # gguf-lora:ADAPTER_PATH on the SmolLM2 base
        result = run_gguf("smollm2-135m-instruct", questions, adapter=name)
    elif kind == "gguf":
        result = run_gguf(name, questions)
    elif kind == "gguf-distilled":  # a merged distilled GGUF: writes the format itself, grammar only as fallback
        result = run_gguf(name, questions, grammar="fallback")
    else:
        result = run_transformers(name, questions)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30, help="questions, spread over the split; 0: all")
    parser.add_argument("--child", default=None)
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument(
        "--backends",
        nargs="+",
        default=list(BACKENDS),
        help="gguf:NAME gguf-lora:ADAPTER gguf-distilled:MERGED_GGUF transformers:NAME",
    )
    parser.add_argument("--name", default="decompose", help="results file stem under benchmarks/results/")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.split)
        return
    rows = {}
    for backend in args.backends:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_decompose",
                "--child",
                backend,
                "--n",
                str(args.n),
                "--split",
                args.split,
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        raw = json.loads(out.stdout.strip().splitlines()[-1])
        s = raw["seconds"]
        rows[backend] = {
            "n": len(s),
            "load_s": round(raw["load_s"], 3),
            "p50_s": round(statistics.median(s), 3),
            "p95_s": round(_pct(s, 0.95), 3),
            "mean_s": round(statistics.fmean(s), 3),
            "median_output_tokens": statistics.median(raw["output_tokens"]),
            "peak_rss_mb": round(raw["peak_rss_mb"], 1),
            "decomposed_share": None
            if raw["n_subquestions"] is None
            else round(sum(c > 0 for c in raw["n_subquestions"]) / len(s), 3),
            "total_s": round(sum(s), 1),
        }
        if form := raw.get("form"):
            counts = raw["n_subquestions"]
            rows[backend]["form"] = {
                **{k: round(v / len(s), 4) for k, v in form.items()},
                "subquestions_histogram": {str(k): counts.count(k) for k in sorted(set(counts))},
            }
        print(backend, rows[backend], flush=True)
    base = rows[args.backends[0]]["p50_s"]
    for row in rows.values():
        row["p50_vs_first"] = round(row["p50_s"] / base, 2)
        row["total_vs_first"] = round(row["total_s"] / rows[args.backends[0]]["total_s"], 2)
    meta = {
        "command": "python -m benchmarks.bench_decompose " + " ".join(sys.argv[1:]),
        "split": args.split,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "loadavg_at_end": os.getloadavg(),
        "max_tokens": MAX_TOKENS,
        "threads": THREADS,
        "note": "llama.cpp rows decode under the sub-question grammar, except gguf-lora (a distilled "
        "adapter) and gguf-distilled rows (a merged distilled model), which decode freely and fall back to the "
        "grammar on an invalid reply (`free valid`: the share "
        "that needed no fallback); transformers decodes without a grammar (fp32, dequantized from the same GGUF)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = [
        f"# Decomposition latency (GSM8K {args.split} sample, one question at a time)",
        "",
        f"`{meta['command']}` on {meta['machine']}, {THREADS} thread(s) per backend; load average at end "
        f"{meta['loadavg_at_end'][0]:.1f}.",
        "",
        "| backend | n | load s | p50 s | p95 s | p50 ratio | total s | total ratio | median out tokens | "
        "peak RSS MB | decomposed | free valid | all end in ? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        form = r.get("form", {})
        lines.append(
            f"| {name} | {r['n']} | {r['load_s']} | {r['p50_s']} | {r['p95_s']} | {r['p50_vs_first']}× | "
            f"{r['total_s']} | {r['total_vs_first']}× | {r['median_output_tokens']} | {r['peak_rss_mb']} | "
            f"{r['decomposed_share']} | {form.get('free_valid', '')} | {form.get('all_questions', '')} |"
        )
    lines += ["", meta["note"] + "."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
