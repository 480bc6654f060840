"""Seconds per optimizer step and peak RSS: LoRA vs full fine-tune of SmolLM2-135M on this CPU.

Each (method, repeat) runs in a fresh process (so peak RSS is that method's alone) through the real
``training.sft.sft`` on the same synthetic SD-T records (the real decomposer prompt, ~210 tokens each),
batch 4, no evaluation and no checkpoint during the timed steps. The first ``--warmup`` steps are not timed.
Reported: median seconds per step over all timed steps of all repeats, median peak RSS over repeats, and the
full/LoRA ratios.

Run:  ``python benchmarks/bench_sft.py``  (writes benchmarks/results/sft.json + sft.md)
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
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "worker"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sft"


def _records(path: Path, n: int) -> None:
    from langchain_dod.prompts import decomposer_messages, decomposition_target

    with open(path, "w") as handle:
        for i in range(n):
            messages = decomposer_messages(
                f"A baker bakes {i + 3} trays of {i + 10} rolls and sells {i + 7} rolls. How many rolls are left?"
            )
            target = decomposition_target(["How many rolls does the baker bake?", "How many rolls are left?"])
            handle.write(
                json.dumps(
                    {
                        "id": f"b{i}",
                        "kind": "SD-T",
                        "messages": [*messages, {"role": "assistant", "content": target}],
                    }
                )
                + "\n"
            )


def worker(method: str, steps: int, batch_size: int, out: Path, threads: int | None) -> dict[str, Any]:
    """One timed run in this process."""
    import torch
    from transformers import TrainerCallback

    from training.basemodel import prepare_base
    from training.sft import SFTConfig, sft

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, D102
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, D102
            self.times.append(time.perf_counter() - self._start)

    base = prepare_base("smollm2-135m-instruct")
    data = out / "train.jsonl"
    _records(data, steps * batch_size)
    timer = Timer()
    config = SFTConfig(
        method=method,
        max_steps=steps,
        batch_size=batch_size,
        save_steps=10_000,
        eval_before=False,
        learning_rate=2e-4 if method == "lora" else 2e-5,
        logging_steps=1,
        threads=threads,
    )
    sft(data, base, out / "run", config=config, progress=False, callbacks=[timer])
    return {
        "method": method,
        "step_seconds": timer.times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", choices=("lora", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size, Path(args.worker_dir), args.threads or None)))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {"lora": [], "full": []}
    for repeat in range(args.repeats):
        for method in ("lora", "full"):
            with tempfile.TemporaryDirectory() as tmp:
                done = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        method,
                        "--worker-dir",
                        tmp,
                        "--steps",
                        str(args.steps),
                        "--batch-size",
                        str(args.batch_size),
                        "--threads",
                        str(args.threads),
                    ],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "HF_HUB_OFFLINE": "1"},
                    cwd=ROOT,
                )
            if done.returncode != 0:
                raise SystemExit(f"{method} worker failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[method].append(result)
            print(
                f"repeat {repeat + 1} {method}: steps {[round(t, 2) for t in result['step_seconds']]} s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    summary = {}
    for method, results in runs.items():
        timed = [t for r in results for t in r["step_seconds"][args.warmup :]]
        summary[method] = {
            "median_step_seconds": round(statistics.median(timed), 3),
            "median_peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in results)),
            "timed_steps": len(timed),
        }
    ratios = {
        "step_seconds_full_over_lora": round(
            summary["full"]["median_step_seconds"] / summary["lora"]["median_step_seconds"], 2
        ),
        "peak_rss_full_over_lora": round(
            summary["full"]["median_peak_rss_mb"] / summary["lora"]["median_peak_rss_mb"], 2
        ),
    }
    command = "python benchmarks/bench_sft.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "command": command.strip(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "batch_size": args.batch_size,
        "steps_per_run": args.steps,
        "warmup_steps": args.warmup,
        "repeats": args.repeats,
        "torch_threads": runs["lora"][0]["torch_threads"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "ratios": ratios, "runs": runs}, indent=2) + "\n"
    )
    lines = [
        "# Fine-tuning cost: LoRA vs full, SmolLM2-135M on CPU",
        "",
        f"Command: `{meta['command']}` ({meta['cpus']} CPUs, torch threads {meta['torch_threads']}, batch "
        f"{args.batch_size} x ~210 tokens, {args.repeats} fresh processes per method, first {args.warmup} step(s) of "
        f"each untimed; load average at end {meta['load_average_at_end']} — the machine was shared, so absolute "
        "times are pessimistic; the ratio is the point)",
        "",
        "| method | median s/step | median peak RSS MB | vs LoRA (time) | vs LoRA (RSS) |",
        "|---|---|---|---|---|",
    ]
    for method in ("lora", "full"):
        s = summary[method]
        lines.append(
            f"| {method} (r=16, all linear layers) | {s['median_step_seconds']} | {s['median_peak_rss_mb']} | "
            f"{s['median_step_seconds'] / summary['lora']['median_step_seconds']:.2f}x | "
            f"{s['median_peak_rss_mb'] / summary['lora']['median_peak_rss_mb']:.2f}x |"
            if method == "lora"
            else f"| {method} | {s['median_step_seconds']} | {s['median_peak_rss_mb']} | "
            f"{ratios['step_seconds_full_over_lora']:.2f}x | {ratios['peak_rss_full_over_lora']:.2f}x |"
        )
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
