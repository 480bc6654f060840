"""What the plans did: accuracy by gold steps, skip rate, and a failure taxonomy of two-stage runs (issue 12).

Reads an evaluation folder of ``dod eval run`` on GSM8K (its ``manifest.json`` and ``runs/*.jsonl``) and the
GSM8K file the manifest names (for the gold solutions), and writes ``plan_analysis.{json,md}`` beside the report.
Only stored records are read; nothing is re-run, so anyone can re-score the committed runs.

Definitions (automatic, so they are heuristics; each is one small function below):

* **gold steps**: the lines of the GSM8K solution before ``####`` (one calculation each).
* **skip**: a two-stage item whose decomposer wrote no sub-questions (the solver then reasons on its own).
* **final = a sub-answer**: a wrong item whose final answer is a number the solver wrote as an answer to one of
  the sub-questions (the solver stopped at an intermediate quantity).

Taxonomy of the *wrong* two-stage items that had a plan, first matching class wins:

1. **restated question**: the only sub-question(s) restate what the question asks (no intermediate quantity).
2. **restated given**: every sub-question before the last asks for a number the question already states.
3. **missing step**: fewer sub-questions than the gold solution has steps − 1 (the plan skips calculations).
4. **wrong quantity**: a plan of full length that still led to a wrong answer (a sub-question asks for the wrong
   thing, or the solver slipped).

    python -m benchmarks.plan_analysis benchmarks/results/eval/gsm8k-train-distilled
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_STOP = {
    "how",
    "many",
    "much",
    "what",
    "is",
    "the",
    "a",
    "an",
    "of",
    "does",
    "do",
    "did",
    "in",
    "to",
    "are",
    "was",
    "were",
    "for",
    "on",
    "and",
    "he",
    "she",
    "they",
    "it",
    "his",
    "her",
    "their",
    "there",
    "have",
    "has",
    "had",
    "be",
    "will",
    "at",
    "by",
}


def _content(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower().replace("'s", "")) if w not in _STOP}


def _numbers(text: str) -> set[float]:
    out = set()
    for m in _NUM.findall(text or ""):
        try:
            out.add(float(m.replace(",", "")))
        except ValueError:
            pass
    return out


def gold_steps(answer: str) -> int:
    """Calculation lines of a GSM8K solution (before ``####``)."""
    return sum(1 for line in answer.split("####")[0].splitlines() if line.strip())


def restates_question(sub: str, question: str, threshold: float = 0.7) -> bool:
    """The sub-question's content words are mostly those of the question's last (asking) sentence.

    Stricter than ``langchain_dod.evaluation.datasets.is_restatement``, which counts every word: with
    "how many ... does" counted, "How many pencils does Sarah buy on Tuesday?" would restate "How many pencils
    does Sarah have?".
    """
    sentences = [s for s in _SENTENCE.split(question.strip()) if s.strip()]
    asked = [s for s in sentences if "?" in s] or sentences
    target, words = _content(asked[-1]), _content(sub)
    return bool(words and target) and len(words & target) / len(words) >= threshold


def restates_given(sub: str, question: str, solution: str, index: int) -> bool:
    """The sub-question asks for a number the question states: the solver's line for it holds only given numbers.

    The solver numbers its answers ``1.``, ``2.``, ...; when that line's numbers all appear in the question, the
    sub-question asked for nothing new.
    """
    given = _numbers(question)
    lines = [ln for ln in solution.splitlines() if re.match(rf"\s*(?:\*\*)?{index}[.)]", ln)]
    if not lines:
        return False
    found = _numbers(lines[0].split(".", 1)[-1])
    return bool(found) and found <= given


def sub_answers(solution: str, n: int) -> set[float]:
    """The last number of each numbered answer line ``1.`` … ``n.``."""
    out = set()
    for i in range(1, n + 1):
        for line in solution.splitlines():
            if re.match(rf"\s*(?:\*\*)?{i}[.)]", line):
                nums = _NUM.findall(line.split(".", 1)[-1])
                if nums:
                    out.add(float(nums[-1].replace(",", "")))
                break
    return out


def classify(record: dict, question: str, steps: int) -> str:
    """The failure class of one wrong item with a plan (module docstring)."""
    subs, solution = record.get("subquestions") or [], record.get("solution") or ""
    if all(restates_question(s, question) for s in subs):
        return "restated question"
    if len(subs) > 1 and all(restates_given(s, question, solution, i) for i, s in enumerate(subs[:-1], 1)):
        return "restated given"
    if len(subs) < steps - 1:
        return "missing step"
    return "wrong quantity"


def _bucket(steps: int) -> str:
    return "≥4" if steps >= 4 else str(steps)


def analyse(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    data = Path(manifest["dataset"]["path"])
    if not data.is_absolute() and not data.exists():
        data = Path(__file__).resolve().parents[1] / data
    rows = {}
    for number, line in enumerate(data.read_text().splitlines()):
        row = json.loads(line)
        rows[f"{data.stem}-{number:04d}"] = row
    results = {}
    for path in sorted((folder / "runs").glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        by_steps: dict[str, list[int]] = {}
        taxonomy: Counter = Counter()
        skipped = skip_right = final_is_sub = wrong_with_plan = 0
        for r in records:
            row = rows[r["id"]]
            steps = gold_steps(row["answer"])
            ok = bool(r["scores"].get("strict"))
            by_steps.setdefault(_bucket(steps), []).append(ok)
            if r.get("mode") not in ("two-stage", "single-stage"):  # "single-stage": the chain's own skip
                continue
            subs = r.get("subquestions") or []
            if not subs:
                skipped += 1
                skip_right += ok
                continue
            if ok:
                continue
            wrong_with_plan += 1
            taxonomy[classify(r, row["question"], steps)] += 1
            pred = _numbers(r.get("prediction") or "")
            if pred and pred <= sub_answers(r.get("solution") or "", len(subs)):
                final_is_sub += 1
        two_stage = any(r.get("mode") in ("two-stage", "single-stage") for r in records)
        results[path.stem] = {
            "n": len(records),
            "accuracy": sum(bool(r["scores"].get("strict")) for r in records) / max(1, len(records)),
            "by_gold_steps": {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(by_steps.items())},
            **(
                {
                    "skip_rate": skipped / max(1, len(records)),
                    "skip_accuracy": skip_right / skipped if skipped else None,
                    "wrong_with_plan": wrong_with_plan,
                    "final_is_a_sub_answer": final_is_sub,
                    "taxonomy": dict(taxonomy),
                }
                if two_stage
                else {}
            ),
        }
    return results


def write(folder: Path, results: dict) -> str:
    buckets = sorted({b for r in results.values() for b in r["by_gold_steps"]})
    classes = ["restated question", "restated given", "missing step", "wrong quantity"]
    head = "| run | n | strict % | " + " | ".join(f"{b} steps % (n)" for b in buckets) + " | skip % (acc %) |"
    lines = [
        f"# Plan analysis: {folder.name}",
        "",
        f"`python -m benchmarks.plan_analysis {folder}`; definitions in `benchmarks/plan_analysis.py`.",
        "",
        head,
        "|" + "---|" * (4 + len(buckets)),
    ]
    for name, r in results.items():
        cells = []
        for b in buckets:
            s = r["by_gold_steps"].get(b)
            cells.append(f"{100 * s['accuracy']:.1f} ({s['n']})" if s else "–")
        skip = (
            f"{100 * r['skip_rate']:.1f} ({100 * r['skip_accuracy']:.1f})"
            if r.get("skip_accuracy") is not None
            else (f"{100 * r['skip_rate']:.1f}" if "skip_rate" in r else "–")
        )
        lines.append(f"| `{name}` | {r['n']} | {100 * r['accuracy']:.1f} | " + " | ".join(cells) + f" | {skip} |")
    lines += [
        "",
        "Wrong two-stage items with a plan, by failure class (first match wins), and how many ended on a sub-answer:",
        "",
        "| run | wrong with a plan | " + " | ".join(classes) + " | final = a sub-answer |",
        "|" + "---|" * (3 + len(classes)),
    ]
    for name, r in results.items():
        if "taxonomy" not in r:
            continue
        t = r["taxonomy"]
        lines.append(
            f"| `{name}` | {r['wrong_with_plan']} | "
            + " | ".join(str(t.get(c, 0)) for c in classes)
            + f" | {r['final_is_a_sub_answer']} |"
        )
    text = "\n".join(lines) + "\n"
    (folder / "plan_analysis.md").write_text(text)
    (folder / "plan_analysis.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(write(args.folder, analyse(args.folder)))


if __name__ == "__main__":
    main()
