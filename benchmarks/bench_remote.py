"""Throughput of concurrent decompositions: in-process ChatGGUF vs an OpenAI-compatible llama.cpp server.

Both run the same SmolLM2-135M GGUF with the same threads, greedy, grammar-constrained (the server through
``response_format={"type": "json_object", "schema": ...}``). For each concurrency level, ``--requests``
multi-hop questions are decomposed through ``Decomposer.abatch(max_concurrency=c)``; each cell is repeated
``--repeats`` times and the medians are reported. llama-cpp-python's server runs one request at a time per
model (requests queue behind a lock), so its throughput should not grow with concurrency; llama.cpp's own
``llama-server -np N`` (parallel slots + continuous batching, see examples/README.md) is the server that does.

Run:  ``python benchmarks/bench_remote.py``  (writes benchmarks/results/remote.json + remote.md)
      ``python benchmarks/bench_remote.py --llama-server /path/to/llama-server --slots 4`` adds llama.cpp's
      own server (started and stopped here); ``--server-url URL --label NAME`` adds a server you run yourself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from langchain_dod import ChatGGUF, Decomposer
from langchain_dod.models import resolve

__all__ = ["llama_cpp_python_server", "llama_server", "main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "examples" / "data" / "multihop_questions.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "remote"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _serve(command: list[str], port: int, ready_path: str, timeout_s: float = 180) -> Iterator[str]:
    """Run a server command until the block ends; yields ``http://127.0.0.1:PORT/v1`` once it is ready."""
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"

    def tail() -> str:
        log.seek(0)
        return log.read()[-2000:]

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {proc.returncode}: {tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(root + ready_path, timeout=2):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[0]} did not answer within {timeout_s}s: {tail()}")
            time.sleep(0.5)
        yield root + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def llama_cpp_python_server(model: Path, threads: int) -> contextlib.AbstractContextManager[str]:
    """``python -m llama_cpp.server`` on a free port (one request at a time per model)."""
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return _serve(command, port, "/v1/models")


def llama_server(binary: Path, model: Path, threads: int, slots: int) -> contextlib.AbstractContextManager[str]:
    """llama.cpp's ``llama-server`` on a free port: ``slots`` slots of 1024 tokens, continuous batching."""
    port = _free_port()
    command = [
        str(binary),
        "-m",
        str(model),
        "--alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    command += ["-np", str(slots), "-c", str(1024 * slots), "-t", str(threads), "-tb", str(threads)]
    return _serve(command, port, "/health")


def _remote(url: str, max_tokens: int) -> Decomposer:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=url,
        api_key="x",
        model="smollm2",
        temperature=0,
        timeout=300,
        max_retries=0,
        extra_body={"repeat_penalty": 1.0},
    )
    return Decomposer(llm=llm, profile="multihop", max_tokens=max_tokens)


def measure(decomposer: Decomposer, questions: list[str], levels: Sequence[int], repeats: int) -> list[dict]:
    """Median throughput and latency of ``len(questions)`` decompositions at each concurrency level.

    Everything runs in one event loop: HTTP clients (ChatOpenAI's) are bound to the loop that created them.
    """
    return asyncio.run(_measure(decomposer, questions, levels, repeats))


async def _measure(decomposer: Decomposer, questions: list[str], levels: Sequence[int], repeats: int) -> list[dict]:
    await decomposer.ainvoke(questions[0])  # warm-up: model load, grammar, first prompt, HTTP connection
    rows = []
    for level in levels:
        walls, latencies, tokens = [], [], []
        for _ in tqdm(range(repeats), desc=f"concurrency {level}", leave=False):
            started = time.perf_counter()
            results = await decomposer.abatch(questions, {"max_concurrency": level})
            walls.append(time.perf_counter() - started)
            latencies += [r.seconds for r in results if r.seconds is not None]
            tokens.append(sum(r.output_tokens or 0 for r in results))
        wall = statistics.median(walls)
        rows.append(
            {
                "concurrency": level,
                "requests": len(questions),
                "repeats": repeats,
                "median_wall_s": round(wall, 3),
                "decompositions_per_s": round(len(questions) / wall, 3),
                "output_tokens_per_s": round(statistics.median(tokens) / wall, 2),
                "median_latency_s": round(statistics.median(latencies), 3),
                "walls_s": [round(w, 3) for w in walls],
            }
        )
    return rows


NOTES = (
    "Each cell decomposes the same multi-hop questions (`examples/data/multihop_questions.jsonl`) greedily "
    "under the sub-question JSON schema; latency is per request, including time queued behind other requests. "
    "One model instance serves one request at a time in-process and in llama-cpp-python's server, so "
    "concurrency adds queueing, not throughput. llama-server's slots decode concurrent requests in one batch; "
    "that pays off when a decode step is bound by memory traffic (bigger models, more cores, GPUs), and did "
    "not here (one thread on a shared 2-core CPU, a 135M model). llama-server's grammar lets the model "
    "pretty-print the JSON, so it writes a few more tokens per decomposition. The machine's 2 cores were shared "
    "with other jobs (see the load average): compare rows of one run, not runs."
)


def markdown(result: dict[str, Any]) -> str:
    """Side-by-side table with the throughput ratio to the in-process baseline at concurrency 1."""
    base = next(r for r in result["backends"][0]["rows"] if r["concurrency"] == 1)["decompositions_per_s"]
    lines = [
        "| backend | concurrency | decompositions/s | output tok/s | median latency s | vs in-process c=1 |",
        "|---|---|---|---|---|---|",
    ]
    for backend in result["backends"]:
        for r in backend["rows"]:
            lines.append(
                f"| {backend['label']} | {r['concurrency']} | {r['decompositions_per_s']:.3f} | "
                f"{r['output_tokens_per_s']:.1f} | {r['median_latency_s']:.2f} | "
                f"{r['decompositions_per_s'] / base:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6, help="decompositions per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads on both sides")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--llama-server", type=Path, default=None, help="also start and measure this llama-server binary"
    )
    parser.add_argument("--slots", type=int, default=4, help="llama-server parallel slots (-np)")
    parser.add_argument("--server-url", default=None, help="also measure this running OpenAI-compatible server")
    parser.add_argument("--label", default=None, help="name of --server-url's server in the table")
    parser.add_argument("--skip-local", action="store_true", help="do not measure the in-process baseline")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.repeats < 1 or min(args.concurrency) < 1:
        parser.error("--requests, --repeats and --concurrency must be >= 1")

    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
    questions = (questions * (args.requests // len(questions) + 1))[: args.requests]
    model = resolve("smollm2-135m-instruct")
    levels = sorted(set(args.concurrency) | {1})
    backends = []
    if not args.skip_local:
        local = Decomposer(
            llm=ChatGGUF(model=str(model), n_ctx=2048, n_threads=args.threads),
            profile="multihop",
            max_tokens=args.max_tokens,
        )
        backends.append({"label": "in-process ChatGGUF", "rows": measure(local, questions, levels, args.repeats)})
    with llama_cpp_python_server(model, args.threads) as url:
        rows = measure(_remote(url, args.max_tokens), questions, levels, args.repeats)
    backends.append({"label": "llama-cpp-python server", "rows": rows})
    if args.llama_server:
        with llama_server(args.llama_server, model, args.threads, args.slots) as url:
            rows = measure(_remote(url, args.max_tokens), questions, levels, args.repeats)
        backends.append({"label": f"llama-server -np {args.slots}", "rows": rows})
    if args.server_url:
        rows = measure(_remote(args.server_url, args.max_tokens), questions, levels, args.repeats)
        backends.append({"label": args.label or args.server_url, "rows": rows})
    result = {
        "backends": backends,
        "meta": {
            "command": "python benchmarks/bench_remote.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "model": model.name,
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "cpu_count": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "machine": f"{platform.processor() or platform.machine()}, python {platform.python_version()}",
        },
    }
    table = markdown(result)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(
        f"# Concurrent decompositions: in-process vs OpenAI-compatible server\n\nCommand: "
        f"`{result['meta']['command']}` ({result['meta']['cpu_count']} CPUs, "
        f"{args.threads} llama.cpp threads, "
        f"load average at end {result['meta']['load_average_at_end']}; medians of {args.repeats} runs)\n\n"
        f"{table}\n\n{NOTES}\n"
    )
    return result


if __name__ == "__main__":
    main()
