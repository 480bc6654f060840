"""Reports from hand-made result files: Table 1 numbers, paired comparison, plot, and no torch import."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_dod.evaluation.report import load_evaluation, paired_comparison, summarize, write_report

SOLVER = "llamacpp:qwen2.5-coder-1.5b-instruct"
IDS = ["a", "b", "c", "d"]
GOLD = {"a": "10", "b": "20", "c": "30", "d": "40"}


def _record(
    run: str,
    item: str,
    prediction: str | None,
    solver_tokens: tuple[int, int],
    decomposer: dict | None = None,
    stale_scores: dict | None = None,
) -> dict:
    return {
        "id": item,
        "run": run,
        "gold": GOLD.get(item, "1"),
        "golds": [[GOLD.get(item, "1")]],
        "prediction": prediction,
        "parsed": prediction is not None,
        "scores": stale_scores or {},
        "subquestions": [],
        "solution": None if prediction is None else f"Step by step.\nThe answer is: {prediction}",
        "error": None,
        "usage": {
            "decomposer": decomposer,
            "solver": {
                "model": "qwen2.5-coder-1.5b-instruct",
                "input_tokens": solver_tokens[0],
                "output_tokens": solver_tokens[1],
                "seconds": 2.0,
                "token_source": "usage",
                "local": True,
                "cpu_seconds": 10.0,
            },
        },
        "seconds": 2.5,
    }


@pytest.fixture
def evaluation(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "dataset": {
                    "path": "gsm8k/test.jsonl",
                    "format": "gsm8k",
                    "sha256": "0" * 64,
                    "n_items_in_file": 9,
                    "skipped_rows": [],
                },
                "seed": 0,
                "limit": 4,
                "ids": IDS,
            }
        )
    )
    # a, b right; c wrong; d wrong when strict (several numbers) but right when lenient (40 is a token)
    cot = {"a": "10", "b": "20", "c": "7", "d": "x + 40 = 41"}
    dec = {"a": "10", "b": "21", "c": "$30", "d": "40 apples"}
    smol = {
        "model": "smollm2-135m-instruct",
        "input_tokens": 200,
        "output_tokens": 20,
        "seconds": 0.5,
        "token_source": "usage",
        "local": True,
        "cpu_seconds": 0.4,
    }
    # a stale stored score (strict 0 for a right answer) must be recomputed, and an id outside the manifest dropped
    rows_a = [_record("cot", i, cot[i], (1000, 500), stale_scores={"strict": 0.0}) for i in IDS]
    rows_a.append(_record("cot", "zzz", "1", (1000, 500)))
    rows_b = [_record("smol", i, dec[i], (1200, 400), decomposer=smol) for i in IDS]
    for name, rows, spec in (
        ("cot", rows_a, {"name": "cot", "solver": SOLVER, "decomposer": None, "mode": "cot"}),
        (
            "smol",
            rows_b,
            {"name": "smol", "solver": SOLVER, "decomposer": "llamacpp:smollm2-135m-instruct", "mode": "decomposed"},
        ),
    ):
        (runs / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (runs / f"{name}.meta.json").write_text(json.dumps({"spec": spec, "segments": [], "wall_seconds": 120.0}))
    return tmp_path


def test_summary_numbers_by_hand(evaluation):
    ev = load_evaluation(evaluation)
    assert set(ev.runs["cot"][1]) == set(IDS)  # "zzz" is not in the manifest
    cot = summarize("cot", *ev.runs["cot"], ev.fmt)
    assert cot.n == 4 and cot.metrics == {"strict": 0.5, "lenient": 0.75}  # d: "x + 40 = 41" holds the token 40
    assert cot.dollars["solver"] == pytest.approx(4 * (1000 * 0.001 + 500 * 0.002) / 1000)
    assert cot.tokens["solver"]["input"] == 1000 and cot.cpu_seconds["solver"] == 10.0
    assert cot.latency["solver"] == 2.0 and cot.wall_seconds == 120.0
    smol = summarize("smol", *ev.runs["smol"], ev.fmt)
    assert smol.metrics == {"strict": 0.75, "lenient": 0.75}
    per_item = (200 * 0.001 + 20 * 0.002) / 1000 * 135e6 / 175e9  # the paper's parameter-ratio scaling
    assert smol.dollars["decomposer"] == pytest.approx(4 * per_item)
    assert smol.dollars["solver"] == pytest.approx(4 * (1200 * 0.001 + 400 * 0.002) / 1000)


def test_answers_are_re_extracted_from_the_stored_solutions(evaluation):
    """An extractor fix reaches old runs: the report reads the stored solution again, not the stored answer."""
    path = evaluation / "runs" / "cot.jsonl"
    rows = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
    # what an older extractor stored for a right solution: the last number, unparsed flag and all
    rows["c"].update(solution="So the answer is 30 apples. Check: 5*6=30, 5 left", prediction="5", parsed=True)
    rows["b"].update(solution="The answer is:\n\\[ \\boxed{20} \\]", prediction="\\[", parsed=False)
    rows["a"].update(solution=None, prediction="10")  # no solution stored: the stored prediction counts
    path.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    ev = load_evaluation(evaluation)
    cot = summarize("cot", *ev.runs["cot"], ev.fmt)
    assert cot.metrics == {"strict": 0.75, "lenient": 1.0} and cot.unparsed == 0
    assert paired_comparison(ev, "cot", "smol", "strict").score_a == 0.75


def test_paired_comparison_by_hand(evaluation):
    ev = load_evaluation(evaluation)
    p = paired_comparison(ev, "cot", "smol", "strict")
    # strict: cot right on a, b; smol right on a, c, d → only cot: b; only smol: c, d
    assert (p.n, p.only_a, p.only_b) == (4, 1, 2)
    assert p.difference == pytest.approx(0.25)
    se = math.sqrt(3 - 1 / 4) / 4
    assert p.ci95 == pytest.approx((0.25 - 1.96 * se, 1.0))  # the upper end is clipped at +100 points
    assert p.p_value == pytest.approx(1.0)  # 2 · P(X ≤ 1 | n = 3) = 2 · 4/8
    with pytest.raises(ValueError, match="No run 'nope'"):
        paired_comparison(ev, "cot", "nope")


def test_write_report_table_comparisons_and_plot(evaluation):
    md = write_report(evaluation, title="Hand-made")
    text = md.read_text()
    assert text.startswith("# Hand-made")
    row = next(line for line in text.splitlines() if line.startswith("| `cot`"))
    # dollars are per 1,000 questions: (1000 · 0.001 + 500 · 0.002) / 1000 · 1000 = $2 of solving
    assert "| — (cot) / qwen2.5-coder-1.5b-instruct | 4 | 50.0 | 75.0 | – | 0.0000 / 2.000 |" in row
    assert "| – / 10.0 |" in row and "| 2.0 |" in row
    smol_row = next(line for line in text.splitlines() if line.startswith("| `smol`"))
    assert "| 0.0 (4) |" in smol_row  # the hand-made smol records carry no sub-questions
    assert "| `cot` | `smol` | strict | 4 | 50.0 | 75.0 | +25.0 (" in text
    png = evaluation / "accuracy_vs_cost.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((evaluation / "report.json").read_text())
    assert {r["name"] for r in data["runs"]} == {"cot", "smol"} and data["prices"]["default"]["input_per_1k"] == 0.001


def test_a_mistyped_pair_is_an_error_not_a_missing_row(evaluation):
    with pytest.raises(ValueError, match=r"No run 'smoll' in .*runs: \['cot', 'smol'\]"):
        write_report(evaluation, pairs=[("cot", "smoll")], plot=False)
    text = write_report(evaluation, pairs=[("smol", "cot")], plot=False).read_text()
    assert "| `smol` | `cot` | strict | 4 |" in text


def test_report_on_a_folder_without_manifest_says_what_to_do(tmp_path):
    from langchain_dod.evaluation.runner import EvaluationError

    with pytest.raises(EvaluationError, match="dod eval run"):
        load_evaluation(tmp_path)


def test_eval_cli_never_imports_torch(evaluation):
    code = (
        "import sys\n"
        "from langchain_dod.cli import main\n"
        f"rc = main(['eval', 'report', {str(evaluation)!r}])\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert rc == 0 and not heavy, (rc, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| `smol` |" in done.stdout
