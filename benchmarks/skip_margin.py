r"""Does the decomposer know when its plan will hurt? Issue 12: a skip threshold, measured before it is built.

The first token where ``{"subquestions": []}`` and ``{"subquestions": ["…`` differ is the decomposer's choice between
skipping and planning. This script reads, for every item of a committed two-stage ``dod eval`` run, the adapter's
probability of each (one forward pass of the prompt, no decoding), and simulates a chain that plans only where
``p(plan) − p(skip) > m``: items it skips take the same evaluation's single-stage CoT record (the two-stage chain
falls back to that wording when there is no plan), items it plans take the run's own record. Only the items the
run planned can be planned, so ``m = −1`` is the run itself (up to the CoT rerun of its skipped items).

    python -m benchmarks.skip_margin --adapter runs/sdr-lora/export/adapter.gguf --run \
        benchmarks/results/eval/gsm8k-train-validation/runs/dec-default-sdr-lora__qwen2.5-coder-1.5b-instruct.jsonl

Writes ``benchmarks/results/skip_margin/<run name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from langchain_dod import engine
from langchain_dod.evaluation.datasets import load_dataset
from langchain_dod.models import ROLE_DEFAULTS
from langchain_dod.prompts import decomposer_messages

RESULTS = Path(__file__).parent / "results" / "skip_margin"
GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
SOLVER = "qwen2.5-coder-1.5b-instruct"
MARGINS = (-1.0, 0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 1.0)


def choice_probabilities(adapter: str, questions: list[str]) -> list[tuple[float, float]]:
    """``(p_skip, p_plan)`` of the decomposer's first choosing token, per question."""
    loaded, _ = engine.load(
        ROLE_DEFAULTS["decomposer"],
        adapter,
        engine.llama_params(n_ctx=2048, n_threads=1, model_kwargs={"logits_all": True}),
    )
    llm = loaded.llm
    skip = llm.tokenize(b'{"subquestions": []}', add_bos=False, special=False)
    plan = llm.tokenize(b'{"subquestions": ["How', add_bos=False, special=False)
    k = next(i for i, (a, b) in enumerate(zip(skip, plan, strict=False)) if a != b)
    out = []
    for question in tqdm(questions, desc="choice", unit="item"):
        prompt, _ = engine.render(loaded, decomposer_messages(question))
        llm.reset()
        llm.eval(prompt + skip[:k])
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        out.append((float(p[skip[k]]), float(p[plan[k]])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a two-stage dod eval run JSONL (GSM8K train items)")
    parser.add_argument("--adapter", required=True, help="the LoRA GGUF that run's decomposer applied")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.run.read_text().splitlines() if line.strip()]
    cot_path = args.run.parent / f"cot__{SOLVER}.jsonl"
    cot = {r["id"]: r for r in map(json.loads, cot_path.read_text().splitlines())}
    rows = [r for r in rows if r["id"] in cot]
    by_id = {name: item.question for item in load_dataset(GSM8K_TRAIN).items for name in item.names}
    questions = [by_id[r["id"]] for r in rows]
    probs = choice_probabilities(args.adapter, questions)

    def tokens(r: dict) -> int:
        return r["usage"]["solver"]["output_tokens"]

    agree = sum((p_plan > p_skip) == bool(r["subquestions"]) for r, (p_skip, p_plan) in zip(rows, probs, strict=True))
    table = []
    for m in MARGINS:
        chosen = [
            r if r["subquestions"] and p_plan - p_skip > m else cot[r["id"]]
            for r, (p_skip, p_plan) in zip(rows, probs, strict=True)
        ]
        planned = sum(c is r for c, r in zip(chosen, rows, strict=True))
        correct = sum(c["scores"]["strict"] for c in chosen)
        table.append(
            {
                "margin": m,
                "planned": planned,
                "correct": correct,
                "accuracy": correct / len(rows),
                "solver_tokens": float(np.mean([tokens(c) for c in chosen])),
            }
        )
    margins = [p_plan - p_skip for p_skip, p_plan in probs]
    planned_rows = [(d, r) for d, r in zip(margins, rows, strict=True) if r["subquestions"]]
    result = {
        "run": str(args.run),
        "adapter": Path(args.adapter).name,
        "n": len(rows),
        "argmax_agrees_with_run": agree,
        "margin_quartiles_planned": np.quantile([d for d, _ in planned_rows], [0, 0.25, 0.5, 0.75, 1]).tolist(),
        "items": [
            {"id": r["id"], "p_skip": s, "p_plan": p, "planned": bool(r["subquestions"])}
            for r, (s, p) in zip(rows, probs, strict=True)
        ],
        "table": table,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.run.stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [
        f"# Skip threshold, simulated: `{args.run.name}`",
        "",
        f"Decomposer adapter `{Path(args.adapter).name}`; {len(rows)} items; the first choosing token's argmax agrees "
        f"with the run's skip/plan on {agree}. Plan only where p(plan) − p(skip) > m; skipped items take the CoT "
        "record of the same evaluation. `python -m benchmarks.skip_margin --run RUN --adapter GGUF`.",
        "",
        "| m | planned | correct | strict % | solver tokens / item |",
        "|---|---|---|---|---|",
        *(
            f"| {t['margin']:+.3f} | {t['planned']} | {t['correct']:.0f} | {100 * t['accuracy']:.1f} | "
            f"{t['solver_tokens']:.0f} |"
            for t in table
        ),
    ]
    (RESULTS / f"{args.run.stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
