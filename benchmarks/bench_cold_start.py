"""Cold start: ``import langchain_dod`` and ``dod decompose "…"`` in fresh processes (issue 16, target 3).

Every measurement is a new Python process started from this checkout, so nothing is warm but the OS page cache
(the first, discarded run warms that). Per repeat:

* ``import``: seconds of ``import langchain_dod`` inside the process (``time.perf_counter`` around it), and the
  same for ``from langchain_dod import Decomposer`` (what a LangChain user pays on first use);
* ``dod decompose``: wall seconds from starting ``python -m langchain_dod.cli decompose QUESTION`` to its printed
  answer and to its exit, the child's CPU seconds (user + system) and its peak RSS, read from ``wait4``'s rusage
  for that one child. The shipped default takes the lean path (no LangChain) and reads the system prompt's KV
  state from the cache (filled by the discarded warm-up run, as by any earlier use); the same with
  ``DOD_PROMPT_CACHE=0`` evaluates the system prompt, as a first run does; ``--decomposer`` with the same model and
  adapter takes the LangChain ``Decomposer`` path (no prompt cache), for comparison.

Medians over ``--repeats``. Targets: import ≤ 0.4 s, decompose ≤ 1.0 s wall to the answer, peak RSS ≤ 300 MB.

Run:  ``python -m benchmarks.bench_cold_start --repeats 7``  (writes benchmarks/results/cold_start.json + .md)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import run_meta, write_result

__all__ = ["main", "measure_decompose", "measure_import", "spawn"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cold_start"
QUESTION = "Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens does he have left?"
TARGETS = {"import_s": 0.4, "answer_s": 1.0, "peak_rss_mb": 300}
_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def spawn(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> dict[str, Any]:
    """Run ``python ARGS`` from the checkout; wall to the first stdout line and to exit, CPU and peak RSS.

    ``stdin``: text piped in.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**_ENV, **(env or {})},
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    if proc.stdin is not None:  # small inputs (a few KB): written whole before reading, within the pipe's buffer
        proc.stdin.write(stdin or "")
        proc.stdin.close()
    first = proc.stdout.readline()
    answered = time.perf_counter() - started
    rest = proc.stdout.read()
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    exited = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed ({proc.returncode}): {errors[-2000:]}")
    return {
        "answer_s": answered,
        "exit_s": exited,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "stdout": first + rest,
        "stderr": errors,
    }


def measure_import(statement: str) -> float:
    """Seconds ``statement`` takes in a fresh interpreter (the interpreter's own start-up excluded)."""
    code = f"import time\nt = time.perf_counter()\n{statement}\nprint(time.perf_counter() - t)"
    return float(spawn(["-c", code])["stdout"].strip().splitlines()[-1])


def measure_decompose(
    extra: Sequence[str], question: str = QUESTION, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One cold ``dod decompose --json QUESTION EXTRA...`` (``env``: extra environment variables)."""
    run = spawn(["-m", "langchain_dod.cli", "decompose", "--json", question, *extra], env)
    answer = json.loads(run.pop("stdout").strip().splitlines()[0])
    run["subquestions"] = answer.get("subquestions")
    run["model"] = answer.get("model")
    run["input_tokens"], run["output_tokens"] = answer.get("input_tokens"), answer.get("output_tokens")
    return run


LEAN_IMPORTS = (
    "import langchain_dod.cli, langchain_dod.decomposition, langchain_dod.engine, llama_cpp.llama_chat_format"
)
"""What the lean ``dod decompose`` has imported by the time it answers."""


def importtime_top(statement: str = LEAN_IMPORTS, top: int = 12) -> list[tuple[str, float]]:
    """Where import time goes: each module's own seconds (``python -X importtime``) summed per top-level package."""
    errors = spawn(["-X", "importtime", "-c", statement])["stderr"]
    totals: dict[str, float] = {}
    for line in errors.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and parts[1].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(parts[0].removeprefix("import time:")) / 1e6
    return sorted(((k, round(v, 3)) for k, v in totals.items()), key=lambda kv: -kv[1])[:top]


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("answer_s", "exit_s", "cpu_s", "peak_rss_mb")
    return {
        **{k: _median(rows, k) for k in keys},
        **{f"{k}_all": [round(r[k], 3) for r in rows] for k in keys},
        "subquestions": rows[0]["subquestions"],
        "same_answer_every_run": all(r["subquestions"] == rows[0]["subquestions"] for r in rows),
        "model": rows[0]["model"],
        "tokens": [rows[0]["input_tokens"], rows[0]["output_tokens"]],
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown table (medians)."""
    imp = result["import"]
    lines = [
        "| what | median | all runs | target |",
        "|---|---|---|---|",
        f"| python start-up (`python -c pass`, wall s) | {imp['python_s']} | {imp['python_s_all']} | |",
        f"| `import langchain_dod` (s) | **{imp['langchain_dod_s']}** | {imp['langchain_dod_s_all']} | "
        f"≤ {TARGETS['import_s']} |",
        f"| `from langchain_dod import Decomposer` (s) | {imp['decomposer_s']} | {imp['decomposer_s_all']} | |",
    ]
    for path in result["decompose"]:
        s = path["summary"]
        lines += [
            f"| {path['label']}: wall to answer (s) | **{s['answer_s']}** | {s['answer_s_all']} | "
            f"≤ {TARGETS['answer_s']} |",
            f"| {path['label']}: wall to exit (s) | {s['exit_s']} | {s['exit_s_all']} | |",
            f"| {path['label']}: CPU s (user + sys) | {s['cpu_s']} | {s['cpu_s_all']} | |",
            f"| {path['label']}: peak RSS (MB) | **{s['peak_rss_mb']:.0f}** | "
            f"{[round(x) for x in s['peak_rss_mb_all']]} | ≤ {TARGETS['peak_rss_mb']} |",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="cold processes per measurement (medians)")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--skip-langchain", action="store_true", help="do not measure the LangChain path")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    from langchain_dod.decomposition import default_decomposer_model

    model, adapter = default_decomposer_model("math")
    paths: list[tuple[str, list[str], dict[str, str]]] = [
        ("`dod decompose` (default: lean path, cached prompt state)", [], {}),
        ("`dod decompose`, `DOD_PROMPT_CACHE=0`", [], {"DOD_PROMPT_CACHE": "0"}),
    ]
    if not args.skip_langchain:
        same = ["--decomposer", f"llamacpp:{model}", *(["--adapter", adapter] if adapter else [])]
        paths.append(("`dod decompose --decomposer llamacpp:…` (LangChain path, same model)", same, {}))

    # warm the page cache (model files, site-packages) and fill the prompt-state cache, as any earlier use does
    measure_decompose([], args.question)
    imports: dict[str, list[float]] = {"python_s": [], "langchain_dod_s": [], "decomposer_s": []}
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in paths}
    for _ in range(args.repeats):  # interleaved, so that a change in the machine's load hits every path alike
        imports["python_s"].append(spawn(["-c", "pass"])["exit_s"])
        imports["langchain_dod_s"].append(measure_import("import langchain_dod"))
        imports["decomposer_s"].append(measure_import("from langchain_dod import Decomposer"))
        for label, extra, env in paths:
            rows[label].append(measure_decompose(extra, args.question, env))
    result = {
        "importtime_top": importtime_top(),
        "import": {
            **{k: round(statistics.median(v), 3) for k, v in imports.items()},
            **{f"{k}_all": [round(x, 3) for x in v] for k, v in imports.items()},
        },
        "decompose": [
            {"label": label, "args": extra, "env": env, "summary": _summary(rows[label])} for label, extra, env in paths
        ],
        "targets": TARGETS,
        "meta": run_meta("benchmarks.bench_cold_start", argv, question=args.question, repeats=args.repeats),
    }
    meta, table = result["meta"], markdown(result)
    print(table)
    answer = result["decompose"][0]["summary"]
    write_result(
        args.out,
        result,
        f"# Cold start: `import langchain_dod` and `dod decompose` in fresh processes\n\n"
        f"Command: `{meta['command']}` ({meta['cpu_count']} CPUs, llama.cpp threads: the "
        f"default (physical cores), load average at end {meta['load_average_at_end']}; medians of "
        f"{args.repeats} cold processes after one discarded warm-up)\n\n{table}\n\n"
        f"Imports of the lean path (`python -X importtime -c {LEAN_IMPORTS!r}`, one process, own s per "
        f"top-level package): {', '.join(f'{k} {v}' for k, v in result['importtime_top'])}.\n\n"
        f"Question: {args.question!r}. Answer: {answer['subquestions']} ({answer['model']}, tokens in/out "
        f"{answer['tokens']}). Wall to answer is from process start to the printed "
        "JSON line; peak RSS and CPU are the child's own (wait4). Absolute seconds depend on the machine's load: "
        "compare rows of one run.\n",
    )
    return result


if __name__ == "__main__":
    main()
