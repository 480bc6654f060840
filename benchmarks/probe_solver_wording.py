"""Which two-stage solver wording lets *good* sub-questions help? Issue 12, item 1.

The plan is held fixed at GSM8K's Socratic sub-questions (written by a model, one per solution step: a
complete plan), so only the solver's instruction and the cap vary. Items: GSM8K **test**, the first ``--n``
of the committed ``gsm8k-qwen1.5b`` evaluation (seed 0); single-stage chain of thought on the same items comes
from that evaluation's run (re-scored from its stored solution with today's extractor). No decomposer we
compare is evaluated on test items, so choosing the wording here leaks nothing into the final evaluation.

Each condition is ``WORDING:CAP`` (``CAP`` = ``all`` or a number; capped plans keep the first ``CAP - 1`` steps
and the last, so the step that reaches the answer stays; ``0`` sends no plan, a single-stage wording on the same
items). Resumable: results append to
``benchmarks/results/solver_wording/results.jsonl`` keyed by (condition, id).

    python -m benchmarks.probe_solver_wording --n 60 --conditions plan:all,brief:all
    python -m benchmarks.probe_solver_wording --report
    python -m benchmarks.probe_solver_wording --report --only equations+:all,cot-plain:0 --against cot-plain:0

``--plans RUN.jsonl`` holds the plans of a committed ``dod eval`` two-stage run fixed instead (the items where that
run's decomposer wrote sub-questions; GSM8K train questions, CoT from the same evaluation folder): which wording
lets a *weak* plan do least harm. Results then go to ``solver_wording/<run name>.jsonl``.

``--single-stage`` gives the solver no plan at all, on the 100 items of the validation evaluation
(``gsm8k-train-validation``, GSM8K train, seed 1, none of them in any training set or in the 400-item evaluation):
which wording the no-plan path (a decomposer's skip) should use. Its ``CAP`` is ignored; results go to
``solver_wording/single_stage_validation.jsonl`` and are compared with that folder's CoT run.

    python -m benchmarks.probe_solver_wording --single-stage --conditions terse:all

    python -m benchmarks.probe_solver_wording --conditions hint:all --plans \
        benchmarks/results/eval/gsm8k-train-validation/runs/dec-default-sdr-lora__qwen2.5-coder-1.5b-instruct.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from tqdm.auto import tqdm

RESULTS = Path(__file__).parent / "results" / "solver_wording"
EVAL = Path(__file__).parent / "results" / "eval" / "gsm8k-qwen1.5b"
VALIDATION = Path(__file__).parent / "results" / "eval" / "gsm8k-train-validation"
SINGLE_STAGE = "single_stage_validation"
GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
SOLVER = "qwen2.5-coder-1.5b-instruct"
MARKER = 'Finish with a line "The answer is: X" where X is only the final answer.'


def _runtime_program(planned: bool) -> str:
    """The system message the runtime sends with ``answer_format="program"``, with or without a plan."""
    from langchain_dod.prompts import solver_messages

    return solver_messages("Q?", subquestions=["S?"] if planned else (), answer_format="program")[0]["content"]


# Candidate instructions for the two-stage solver (the system message; the user message is the runtime's).
WORDINGS = {
    # the first shipped wording
    "brief": "Answer the sub-questions below one by one, briefly, then use them to answer the question. " + MARKER,
    # the probe: the plan is to be followed with full calculations
    "plan": (
        "The sub-questions are a plan: answer each one in order, writing out the full calculation with the "
        "numbers from the problem, then answer the question. " + MARKER
    ),
    # chain of thought, with the sub-questions as the steps to work through
    "steps": (
        "Solve the problem step by step. The sub-questions below are the steps: for each one, write the "
        "calculation that answers it, using the numbers from the problem and the earlier results, and its "
        "result. Then check that you answered the question that was asked. " + MARKER
    ),
    # one line per sub-question, an equation on each (shipped in sessions 2-3)
    "equations": (
        "Work through the sub-questions below in order. For each one write a line with its number, the "
        "equation that answers it (for example 3 * 4 = 12) and a few words saying what the result is. "
        "Then answer the question itself. " + MARKER
    ),
    # chain of thought first; the plan is advice the solver may correct (a 135M model's plans miss steps)
    "hint": (
        "Solve the problem step by step, briefly, writing each calculation. The sub-questions below are hints "
        "from a small model: they may be incomplete or ask for numbers the problem already gives, so use them "
        "only where they help and make sure you answer the question that was asked. " + MARKER
    ),
    # `equations`, told that the plan may stop short of the answer (shipped since session 4)
    "equations+": (
        "Work through the sub-questions below in order. For each one write a line with its number, the "
        "equation that answers it (for example 3 * 4 = 12) and a few words saying what the result is. "
        "The sub-questions may be incomplete: add a line for every further step the question needs. "
        "Then answer the question itself. " + MARKER
    ),
    # single stage (no plan): `equations+` without sub-questions, one equation per step of the solver's own
    "terse": (
        "Solve the problem one step per line: for each step write the equation that computes it (for example "
        "3 * 4 = 12) and a few words saying what the result is, using the numbers from the problem and your "
        "earlier results. Then answer the question itself. " + MARKER
    ),
    # `terse` copied its example ("3 * 4 = 12") into 6 of the first 9 solutions (1/9 right): no example here
    "lines": (
        "Solve the problem in short steps, one per line: each line is a calculation with the numbers from the "
        "problem or your earlier results, its result, and a few words saying what the result is. No other "
        "text. " + MARKER
    ),
    # session 10: chain of thought without its overhead. The shipped CoT lists its own plan first, then works it
    # in LaTeX display math and restates the question: keep the reasoning, drop the rest
    "cot-plain": (
        "Think step by step, briefly. Write each calculation in plain text (no LaTeX), without listing the steps "
        "first and without restating the problem. " + MARKER
    ),
    # session 11: `cot-plain` that follows a plan (one step per sub-question), for complete plans
    "plan-plain": (
        "Think step by step, briefly, following the sub-questions below in order: for each one write its "
        "calculation in plain text (no LaTeX) and its result. Add any step they miss. Do not restate the problem. "
        + MARKER
    ),
    "cot-short": (
        "Think step by step, in as few words as you can: per step, one short sentence with its calculation, in "
        "plain text (no LaTeX). " + MARKER
    ),
    # session 14: program of thought. The solver writes arithmetic assignments and `langchain_dod.program` computes them
    # (no Python is executed): 10 of `lines`' 54 misses and 9 of `cot-short`'s 45 held an arithmetic slip. `pot` and
    # `pot-plan2` are the runtime's own texts (`answer_format="program"`, without and with a plan)
    "pot": _runtime_program(planned=False),
    "pot-plan": (
        "Solve the problem by writing a short Python program and nothing else. The sub-questions below are a "
        "plan: write one assignment per sub-question, in order, computing its quantity from the numbers in the "
        "problem or from earlier variables, with a name that says what it is, and add an assignment for any step "
        "they miss. Use only numbers, variables, + - * / // % and round(). The last line assigns the final answer "
        "to `answer`. No loops, no functions, no print."
    ),
    # `pot-plan` left the problem's numbers undefined in 28 of 96 programs and numbered its lines like the plan
    "pot-plan2": _runtime_program(planned=True),
    # session 15: 40 % of `pot-plan2`'s output characters were comments and code fences (199 of 503 per item on the
    # 100 probe items; `pot` with no plan wrote none): the same wording asking for none
    "pot-plan3": _runtime_program(planned=True).replace("no numbering,", "no comments, no numbering,", 1),
}
assert WORDINGS["pot-plan3"] != WORDINGS["pot-plan2"], "the runtime's program wording changed: update pot-plan3"


def _answer_format(wording: str) -> str:
    return "program" if wording.startswith("pot") else "text"


def _items(n: int) -> list[dict]:
    ids = json.loads((EVAL / "manifest.json").read_text())["ids"][:n]
    test = [json.loads(line) for line in (GSM8K_DIR / "test.jsonl").read_text().splitlines()]
    socratic = [json.loads(line) for line in (GSM8K_DIR / "test_socratic.jsonl").read_text().splitlines()]
    from langchain_dod.evaluation.datasets import SocraticOptions, socratic_subquestions

    every_step = SocraticOptions(cap=100, drop_restatement=False)  # all steps; _cap() cuts them

    out = []
    for item_id in ids:
        row = int(item_id.split("-")[1])
        assert socratic[row]["question"] == test[row]["question"]
        gold = test[row]["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        out.append(
            {
                "id": item_id,
                "question": test[row]["question"],
                "gold": gold,
                "plan": socratic_subquestions(test[row]["question"], socratic[row]["answer"], every_step),
            }
        )
    return out


def _items_from_run(run: Path) -> list[dict]:
    """The items where a committed two-stage run's decomposer wrote a plan, with that plan (GSM8K train)."""
    from langchain_dod.evaluation.datasets import load_dataset

    questions = {name: item.question for item in load_dataset(GSM8K_DIR / "train.jsonl").items for name in item.names}
    out = []
    for line in run.read_text().splitlines():
        r = json.loads(line)
        if r["subquestions"]:
            out.append({"id": r["id"], "question": questions[r["id"]], "gold": r["gold"], "plan": r["subquestions"]})
    return out


def _validation_items() -> list[dict]:
    """Every item of the validation evaluation, with no plan (GSM8K train, seed 1)."""
    from langchain_dod.evaluation.datasets import load_dataset

    ids = json.loads((VALIDATION / "manifest.json").read_text())["ids"]
    items = {name: item for item in load_dataset(GSM8K_DIR / "train.jsonl").items for name in item.names}
    return [{"id": i, "question": items[i].question, "gold": str(items[i].answer), "plan": []} for i in ids]


def _cap(plan: list[str], cap: str) -> list[str]:
    """The plan cut to ``cap`` sub-questions (``all``: every one; ``0``: none, the solver gets no plan)."""
    if cap == "0":
        return []
    if cap == "all" or len(plan) <= int(cap):
        return plan
    k = int(cap)
    return plan[: k - 1] + plan[-1:]


def _results(plans: Path | str | None) -> Path:
    if plans == SINGLE_STAGE:
        return RESULTS / f"{SINGLE_STAGE}.jsonl"
    return RESULTS / (f"{plans.stem}.jsonl" if plans else "results.jsonl")


def _done(path: Path) -> set[tuple[str, str]]:
    if not path.exists():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        done.add((r["condition"], r["id"]))
    return done


def run(n: int, conditions: list[str], threads: int, plans: Path | str | None = None) -> None:
    from langchain_dod import ChatGGUF
    from langchain_dod.evaluation.metrics import gsm8k_strict
    from langchain_dod.parsing import read_answer
    from langchain_dod.prompts import solver_messages

    for c in conditions:
        wording, _, cap = c.partition(":")
        if wording not in WORDINGS or not (cap == "all" or cap.isdigit()):
            raise SystemExit(f"condition {c!r}: WORDING:CAP with WORDING in {sorted(WORDINGS)}, CAP all or N")
    llm = ChatGGUF(model=SOLVER, n_threads=threads, max_tokens=400, temperature=0.0)
    if plans == SINGLE_STAGE:
        items = _validation_items()[:n]
    else:
        items = _items_from_run(plans)[:n] if plans else _items(n)
    results = _results(plans)
    done = _done(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    todo = [(c, it) for it in items for c in conditions if (c, it["id"]) not in done]
    with results.open("a", encoding="utf-8") as fh:
        for condition, item in tqdm(todo, desc="probe", unit="solve"):
            wording, _, cap = condition.partition(":")
            plan = _cap(item["plan"], cap)
            messages = solver_messages(item["question"], subquestions=plan)
            messages[0]["content"] = WORDINGS[wording]
            reply = llm.invoke(messages)
            answer = read_answer(str(reply.content), _answer_format(wording))
            record = {
                "condition": condition,
                "id": item["id"],
                "gold": item["gold"],
                "subquestions": plan,
                "solution": reply.content,
                "prediction": answer,
                "correct": gsm8k_strict(answer, item["gold"]),
                "output_tokens": (reply.usage_metadata or {}).get("output_tokens"),
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _cot(ids: set[str], folder: Path = EVAL) -> dict[str, dict]:
    from langchain_dod.evaluation.metrics import gsm8k_strict
    from langchain_dod.parsing import extract_answer

    out = {}
    for line in (folder / "runs" / f"cot__{SOLVER}.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["id"] in ids:
            answer = extract_answer(r["solution"])
            out[r["id"]] = {
                "correct": gsm8k_strict(answer, r["gold"]),
                "output_tokens": r["usage"]["solver"]["output_tokens"],
            }
    return out


def report(plans: Path | str | None = None, conditions: list[str] | None = None, against: str | None = None) -> None:
    """Summary table of the results: each condition paired with single-stage CoT, or with ``against``.

    ``conditions`` keeps only those (the table is over the items every kept condition has); the committed CoT run
    is always a row.
    """
    from scipy.stats import binomtest

    from langchain_dod.evaluation.metrics import gsm8k_strict
    from langchain_dod.parsing import read_answer

    rows = [json.loads(line) for line in _results(plans).read_text().splitlines() if line.strip()]
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        fmt = _answer_format(r["condition"].partition(":")[0])
        if fmt == "program":  # re-scored with today's reader (it grew more lenient in use)
            r["correct"] = gsm8k_strict(read_answer(r["solution"], fmt), r["gold"])
        if conditions is None or r["condition"] in conditions:
            by.setdefault(r["condition"], {})[r["id"]] = r
    if against is not None and against not in by:
        raise SystemExit(f"--against {against!r} has no results; conditions with results: {sorted(by)}")
    single = plans == SINGLE_STAGE
    if plans and not single:  # the run the plans come from: its own solver wording, as committed
        for line in plans.read_text().splitlines():
            r = json.loads(line)
            if r["subquestions"]:
                by.setdefault("the run itself", {})[r["id"]] = {
                    "correct": r["scores"]["strict"],
                    "output_tokens": r["usage"]["solver"]["output_tokens"],
                }
    common = set.intersection(*(set(v) for v in by.values()))
    cot = _cot(common, VALIDATION if single else plans.parent.parent if plans else EVAL)
    by["cot (single-stage)"] = cot
    base = by[against] if against else cot
    table, summary = [], {}
    for name, results in sorted(by.items()):
        rs = [results[i] for i in sorted(common)]
        correct = sum(bool(r["correct"]) for r in rs)
        tokens = statistics.mean(r["output_tokens"] or 0 for r in rs)
        b = sum(1 for i in common if results[i]["correct"] and not base[i]["correct"])
        c = sum(1 for i in common if base[i]["correct"] and not results[i]["correct"])
        p = binomtest(b, b + c).pvalue if b + c else 1.0
        summary[name] = {
            "n": len(rs),
            "correct": correct,
            "accuracy": correct / len(rs),
            "mean_output_tokens": tokens,
            "vs_" + (against or "cot"): {"wins": b, "losses": c, "mcnemar_p": p},
        }
        table.append(
            f"| {name} | {len(rs)} | {correct} | {100 * correct / len(rs):.1f} | {tokens:.0f} | "
            f"+{b} / −{c} (p = {p:.2g}) |"
        )
    stem = f"{SINGLE_STAGE}." if single else f"{plans.stem}." if plans else ""
    if conditions:
        stem += "-".join(c.replace(":", "_") for c in conditions) + "."
    summary_json = json.dumps({"wordings": WORDINGS, "results": summary}, indent=1) + "\n"
    (RESULTS / f"{stem}summary.json").write_text(summary_json)
    head = [
        "# Two-stage solver wording, Socratic plans fixed (issue 12, item 1)",
        "",
        "GSM8K test, the first items of the `gsm8k-qwen1.5b` evaluation (seed 0), solver Qwen2.5-Coder-1.5B Q4_K_M,",
        "greedy, ≤ 400 output tokens; plans are GSM8K's Socratic sub-questions (model-written, one per step);",
        "`CAP` keeps the first CAP − 1 steps and the last. CoT: the committed evaluation's run on the same items.",
        "`python -m benchmarks.probe_solver_wording --n N --conditions ...` then `--report`; wordings in",
        "`summary.json`.",
    ]
    if single:
        head = [
            "# Single-stage solver wording: the no-plan path (issue 12)",
            "",
            "The 100 items of the validation evaluation (`gsm8k-train-validation`: GSM8K train, seed 1), no plan;",
            "solver Qwen2.5-Coder-1.5B Q4_K_M, greedy, ≤ 400 output tokens. CoT: that folder's committed run.",
            "`python -m benchmarks.probe_solver_wording --single-stage --conditions ...` then",
            "`--single-stage --report`; wordings in the summary JSON.",
        ]
    elif plans:
        head = [
            "# Two-stage solver wording, a decomposer's own plans fixed (issue 12)",
            "",
            f"The items where `{plans.name}` wrote a plan, with that plan; solver Qwen2.5-Coder-1.5B Q4_K_M, greedy,",
            "≤ 400 output tokens. CoT and `the run itself` (its solver wording when it ran) come from the same",
            f"evaluation folder. `python -m benchmarks.probe_solver_wording --plans {plans} --conditions ...`",
            "then `--report`; wordings in the summary JSON.",
        ]
    md = [
        *head,
        "",
        f"| condition | n | correct | strict % | solver tokens out | vs {against or 'CoT'} (McNemar) |",
        "|---|---|---|---|---|---|",
        *table,
    ]
    (RESULTS / f"{stem}summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60, help="at most N items")
    parser.add_argument("--conditions", default="plan:all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plans", type=Path, help="a dod eval two-stage run JSONL whose plans to hold fixed")
    parser.add_argument("--single-stage", action="store_true", help="no plan, the 100 validation items")
    parser.add_argument("--report", action="store_true")
    parser.add_argument(
        "--only", default=None, help="with --report: only these conditions (comma-separated), over their common items"
    )
    parser.add_argument("--against", default=None, help="with --report: pair each row with this condition, not CoT")
    args = parser.parse_args()
    plans = SINGLE_STAGE if args.single_stage else args.plans
    if args.report:
        report(plans, args.only.split(",") if args.only else None, args.against)
    else:
        run(args.n, args.conditions.split(","), args.threads, plans)


if __name__ == "__main__":
    main()
