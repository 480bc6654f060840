"""Many users: decompositions/s and latency p50/p95 at 1, 8 and 32 concurrent callers (issue 16, target 5).

Backends, all with the shipped default decomposer (SmolLM2-135M + the distilled adapter, math profile, greedy):

* **in-process**: one ``Decomposer`` (its ``ChatGGUF``), called through ``abatch(max_concurrency=c)``. One
  ``llama_cpp.Llama`` is not thread-safe, so calls on it take turns behind its lock: concurrency adds queueing;
* **llama-cpp-python's server** (``python -m llama_cpp.server``, the ``server`` extra), started here on a loopback
  port and called through ``ChatOpenAI``. It has **no parallel slots**: one model, one global lock, requests
  take turns (checked in ``llama_cpp/server/app.py``, 0.3.x), so it cannot beat in-process throughput; it adds
  HTTP and process isolation;
* **llama.cpp's ``llama-server``** with ``-np SLOTS`` parallel slots and continuous batching, when
  ``--llama-server PATH`` names a binary (not on PyPI; ``examples/README.md`` builds it from the sdist's sources).

``--mode free`` (default) decodes like the shipped default: the adapter writes the JSON itself (in-process: free
first, the grammar only for an invalid reply; servers: free text, parsed). ``--mode grammar`` decodes under the
sub-question grammar everywhere (servers: ``response_format`` with the schema). Each level decomposes
``--requests`` GSM8K train questions (at least as many as callers); latency is per request, queueing included.

``--server-url URL --label NAME`` adds a server you run yourself (it must serve the same model as ``smollm2``).

Run:  ``python -m benchmarks.bench_concurrency --requests 32 --levels 1 8 32``
      ``... --llama-server /path/to/llama-server --slots 8``  (writes benchmarks/results/concurrency.json + .md)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import run_meta, write_result

__all__ = ["llama_cpp_python_server", "llama_server", "main", "measure"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "concurrency"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _level(decomposer: Any, questions: list[str], callers: int) -> dict[str, Any]:
    """``questions`` through ``callers`` concurrent callers; each request's own latency, queueing included."""
    latencies: list[float] = []
    outputs: list[Any] = []
    semaphore = asyncio.Semaphore(callers)

    async def one(question: str) -> None:
        async with semaphore:
            started = time.perf_counter()
            outputs.append(await decomposer.ainvoke(question))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(q) for q in questions))
    wall = time.perf_counter() - started
    return {
        "callers": callers,
        "requests": len(questions),
        "wall_s": round(wall, 3),
        "per_s": round(len(questions) / wall, 3),
        "p50_s": round(_pct(latencies, 0.5), 3),
        "p95_s": round(_pct(latencies, 0.95), 3),
        "output_tokens": sum(o.output_tokens or 0 for o in outputs),
        "empty_plans": sum(not o.subquestions for o in outputs),
    }


def measure(decomposer: Any, questions: list[str], levels: Sequence[int]) -> list[dict[str, Any]]:
    """One row per level, all in one event loop (HTTP clients are bound to the loop that made them).

    ``ainvoke`` with a semaphore is ``abatch(max_concurrency=c)`` with each request's latency visible.
    """

    async def run() -> list[dict[str, Any]]:
        await decomposer.ainvoke(questions[0])  # load the model / warm the connection and the prompt's KV cache
        return [await _level(decomposer, _enough(questions, c), c) for c in levels]

    return asyncio.run(run())


def _enough(questions: list[str], callers: int) -> list[str]:
    return questions if len(questions) >= callers else (questions * (callers // len(questions) + 1))[:callers]


def _remote_decomposer(url: str, mode: str, max_tokens: int) -> Any:
    from langchain_openai import ChatOpenAI

    from langchain_dod import Decomposer

    llm = ChatOpenAI(
        base_url=url,
        api_key="x",
        model="smollm2",
        temperature=0,
        timeout=600,
        max_retries=0,
        extra_body={"repeat_penalty": 1.0, "max_tokens": max_tokens},
    )
    structured = "json_object" if mode == "grammar" else "never"
    return Decomposer(llm=llm, max_tokens=max_tokens, structured_output=structured)


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


def llama_cpp_python_server(
    model: Path, threads: int, adapter: str | None = None, n_ctx: int = 4096
) -> contextlib.AbstractContextManager[str]:
    """``python -m llama_cpp.server`` on a free port, the model as ``smollm2``, ``adapter`` as ``--lora_path``.

    One model, one global lock: requests take turns (no parallel slots).
    """
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--lora_path", adapter] if adapter else []
    return _serve(command, port, "/v1/models")


def llama_server(
    binary: Path, model: Path, threads: int, slots: int, adapter: str | None = None
) -> contextlib.AbstractContextManager[str]:
    """llama.cpp's ``llama-server``: ``slots`` slots of 1024 tokens, continuous batching, the adapter as ``--lora``."""
    port = _free_port()
    command = [str(binary), "-m", str(model), "--alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    command += ["-np", str(slots), "-c", str(1024 * slots), "-t", str(threads), "-tb", str(threads)]
    command += ["--lora", adapter] if adapter else []
    return _serve(command, port, "/health")


def markdown(result: dict[str, Any]) -> str:
    """One row per backend and level."""
    lines = [
        "| backend | callers | decompositions/s | p50 latency s | p95 latency s | vs in-process, same callers |",
        "|---|---|---|---|---|---|",
    ]
    base = {r["callers"]: r["per_s"] for r in result["backends"][0]["rows"]}
    for backend in result["backends"]:
        for r in backend["rows"]:
            ratio = r["per_s"] / base[r["callers"]] if base.get(r["callers"]) else float("nan")
            lines.append(
                f"| {backend['label']} | {r['callers']} | {r['per_s']:.2f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | "
                f"{ratio:.2f}× |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32, help="decompositions per level (at least the callers)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent callers")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads, every backend")
    parser.add_argument("--mode", choices=["free", "grammar"], default="free")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--llama-server", type=Path, default=None, help="also start and measure this binary")
    parser.add_argument("--slots", type=int, default=8, help="llama-server parallel slots (-np)")
    parser.add_argument("--server-url", default=None, help="also measure this running OpenAI-compatible server")
    parser.add_argument("--label", default=None, help="name of --server-url's server in the table")
    parser.add_argument("--skip", nargs="*", default=[], choices=["in-process", "llama-cpp-python"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.requests < 1 or min(args.levels) < 1:
        parser.error("--requests and --levels must be >= 1")

    from benchmarks.bench_decode import decode_questions
    from langchain_dod import ChatGGUF, Decomposer
    from langchain_dod.decomposition import default_decomposer_model, default_merge
    from langchain_dod.merge import merged_gguf
    from langchain_dod.models import resolve

    model, adapter = default_decomposer_model("math")
    path = resolve(model)
    # the servers load what the in-process default loads: the merged file where it merges, else base + --lora
    served, served_adapter = (merged_gguf(path, adapter), None) if default_merge("math", adapter) else (path, adapter)
    questions = decode_questions(args.requests)
    backends = []
    if "in-process" not in args.skip:
        local = Decomposer(
            llm=ChatGGUF(
                model=model, lora_path=adapter, merge_lora=default_merge("math", adapter), n_threads=args.threads
            ),
            max_tokens=args.max_tokens,
            grammar="always" if args.mode == "grammar" else "auto",
        )
        backends.append({"label": "in-process Decomposer", "rows": measure(local, questions, args.levels)})
    if "llama-cpp-python" not in args.skip:
        with llama_cpp_python_server(served, args.threads, served_adapter) as url:
            rows = measure(_remote_decomposer(url, args.mode, args.max_tokens), questions, args.levels)
        backends.append({"label": "llama-cpp-python server (no slots)", "rows": rows})
    if args.llama_server:
        with llama_server(args.llama_server, served, args.threads, args.slots, served_adapter) as url:
            rows = measure(_remote_decomposer(url, args.mode, args.max_tokens), questions, args.levels)
        backends.append({"label": f"llama-server -np {args.slots}", "rows": rows})
    if args.server_url:
        rows = measure(_remote_decomposer(args.server_url, args.mode, args.max_tokens), questions, args.levels)
        backends.append({"label": args.label or args.server_url, "rows": rows})
    if not backends:
        parser.error("nothing to measure: every backend skipped and no --llama-server or --server-url")
    result = {
        "backends": backends,
        "meta": run_meta(
            "benchmarks.bench_concurrency",
            argv,
            model=path.name,
            adapter=Path(adapter).name if adapter else None,
            mode=args.mode,
            threads=args.threads,
        ),
    }
    meta, table = result["meta"], markdown(result)
    print(table)
    write_result(
        args.out,
        result,
        f"# Many users: decompositions/s and latency at 1–{max(args.levels)} concurrent callers\n\nCommand: "
        f"`{meta['command']}` ({meta['cpu_count']} CPUs, {args.threads} llama.cpp threads, "
        f"{args.mode} decoding, load average at end {meta['load_average_at_end']})\n\n{table}\n\n"
        "Latency is per request from its call to its answer, time queued behind other requests included. "
        "In-process and llama-cpp-python's server run one request at a time on one model (no parallel slots); "
        "llama-server decodes the requests of its slots together in one batch. Absolute numbers depend on the "
        "machine's load: compare rows of one run.\n",
    )
    return result


if __name__ == "__main__":
    main()
