"""The multi-hop training data: MuSiQue gold decompositions -> decomposer targets, with the evaluation ids kept out.

Made-up MuSiQue-shaped fixtures (tests/fixtures/musique/); the checks on the real data skip when
../shared/data/musique is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from langchain_dod.evaluation.musique import default_dir, load_questions
from langchain_dod.prompts import decomposer_messages
from training.build import build
from training.cli import main as dod_train
from training.config import load_config
from training.data import DataConfig, guess_format, load_examples
from training.errors import TrainingError
from training.generate import generate

MUSIQUE = Path(__file__).parent / "fixtures" / "musique"
RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "smollm2-multihop.toml"
SHARED = "../shared/data/musique"
EVAL_IDS = {"2hop__1_2", "3hop1__3_4_5"}  # the fixture's dev_eval292.jsonl


def test_a_musique_folder_gives_the_non_evaluation_questions_as_natural_steps() -> None:
    assert guess_format(MUSIQUE) == "musique"
    examples = load_examples(MUSIQUE)
    assert [e.id for e in examples] == ["2hop__6_7", "2hop__8_9"]  # dev minus the evaluation ids, then train
    green, journal = examples
    assert green.question == "Who is the spouse of the Green performer?" and green.answer == "Piet Ostrow"
    assert green.subquestions == ["Who is the performer of Green?", "Who is the spouse of #1?"]
    assert journal.subquestions == ["What company published Journal of Small Bridges?", "Who founded #1?"]
    assert green.context is None


def test_one_file_needs_exclude_to_leave_the_evaluation_questions_out() -> None:
    dev = MUSIQUE / "dev_decompositions2417.json"
    assert guess_format(dev) == "musique"  # a .json list of records with question_decomposition, not DROP
    assert {e.id for e in load_examples(dev)} >= EVAL_IDS
    kept = load_examples(dev, exclude=[MUSIQUE / "dev_eval292.jsonl"])
    assert [e.id for e in kept] == ["2hop__6_7"]


def test_step_styles_and_bad_style() -> None:
    typed = load_examples(MUSIQUE, step_style="typed")
    assert typed[0].subquestions == ["Who is the performer of Green?", "Who is the spouse of that person?"]
    raw = load_examples(MUSIQUE, step_style="raw")
    assert raw[0].subquestions == ["Green >> performer", "#1 >> spouse"]
    with pytest.raises(TrainingError, match="step_style 'fill'"):
        load_examples(MUSIQUE, step_style="fill")  # needs the gold answers: a training target must not


def test_step_style_is_a_data_setting_with_its_flag() -> None:
    from training.cli import build_parser

    argv = ["generate", "--data", "d", "--teacher", "given", "--out", "o"]
    assert build_parser().parse_args(argv).step_style == DataConfig(source="d").step_style == "keep"
    assert build_parser().parse_args([*argv, "--step-style", "typed"]).step_style == "typed"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--step-style", "fill"])  # gold answers: not a training target


def test_a_folder_without_the_evaluation_file_is_refused(tmp_path: Path) -> None:
    for name in ("dev_decompositions2417.json", "train100.json"):
        shutil.copy(MUSIQUE / name, tmp_path / name)
    with pytest.raises(TrainingError, match=r"dev_eval292\.jsonl"):
        load_examples(tmp_path, "musique")  # cannot tell which questions to keep out: no data rather than leaks


def _recipe_on(folder: Path) -> dict:
    """The recipe's [data] table with the shared folder replaced by ``folder``."""
    data = dict(load_config(RECIPE)["data"])
    data["source"] = data["source"].replace(SHARED, str(folder))
    data["exclude"] = [e.replace(SHARED, str(folder)) for e in data["exclude"]]
    return data


def test_recipe_excludes_the_evaluation_ids_and_builds_multihop_records(tmp_path: Path) -> None:
    config = load_config(RECIPE)
    assert config["data"]["format"] == "musique" and config["data"]["source"] == SHARED
    assert config["data"]["exclude"] == [f"{SHARED}/dev_eval292.jsonl"]
    assert config["generate"] == {"teacher": "given", "profile": "multihop", "max_subquestions": 4}
    assert config["sft"]["base"] == "smollm2-135m-instruct" and config["sft"]["method"] == "lora"

    examples = DataConfig(**_recipe_on(MUSIQUE)).load()  # what dod-train distill does with [data]
    assert not {e.id for e in examples} & EVAL_IDS and len(examples) == 2
    decompositions = tmp_path / "decompositions.jsonl"
    report = generate(examples, "given", decompositions, profile="multihop", max_subquestions=4, progress=False)
    assert report.written == 2 and report.failed == 0
    built = build(tmp_path / "data", decompositions=decompositions, val_fraction=0.0, drop_empty=True)
    assert built.train == 2
    records = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["id"] == "2hop__6_7")
    prompt = decomposer_messages("Who is the spouse of the Green performer?", profile="multihop", max_subquestions=4)
    assert first["messages"][:2] == prompt  # exactly what DecomposingRetriever(profile multihop) sends
    assert json.loads(first["messages"][2]["content"]) == {
        "subquestions": ["Who is the performer of Green?", "Who is the spouse of #1?"]
    }


def test_dod_train_generate_reads_a_musique_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dec.jsonl"
    argv = ["generate", "--data", str(MUSIQUE), "--format", "musique", "--teacher", "given"]
    argv += ["--profile", "multihop", "--max-subquestions", "4", "--out", str(out), "--no-progress"]
    assert dod_train(argv) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["2hop__6_7", "2hop__8_9"]
    assert "2/2 decompositions" in capsys.readouterr().out


@pytest.fixture(scope="module")
def real_dir() -> Path:
    folder = default_dir()
    if not (folder / "dev_decompositions2417.json").is_file():
        pytest.skip(f"MuSiQue not found at {folder} (it lives in ../shared/data/musique beside the checkout)")
    return folder


def test_recipe_on_the_real_data_gives_2225_questions_none_of_them_evaluated(real_dir: Path) -> None:
    data = _recipe_on(real_dir)
    examples = load_examples(data["source"], data["format"], exclude=data["exclude"], step_style=data["step_style"])
    evaluated = {q.id for q in load_questions(real_dir / "dev_eval292.jsonl")}
    assert len(evaluated) == 292
    assert len(examples) == 2125 + 100 and not {e.id for e in examples} & evaluated
    assert all(2 <= len(e.subquestions or []) <= 4 for e in examples)
    assert not any(">>" in s for e in examples for s in e.subquestions or [])
    assert all(s[0].isupper() and s.endswith("?") for e in examples for s in e.subquestions or [] if s[0].isalpha())


def _record(ident: str, question: str, steps: list[tuple[str, str]], **extra: object) -> dict:
    decomposition = [
        {"id": i, "question": q, "answer": a, "paragraph_support_idx": None} for i, (q, a) in enumerate(steps)
    ]
    return {"id": ident, "question": question, "question_decomposition": decomposition, "answer": steps[-1][1], **extra}


def test_conversion_of_crowd_written_and_wikidata_steps(tmp_path: Path) -> None:
    """Made-up records with the awkward cases of the real data: lower-case steps without '?', two references in
    one step, a rare relation, and a train question that is also an evaluation question."""
    evaluated = _record("2hop__1_1", "Eval?", [("A >> spouse", "B"), ("#1 >> place of birth", "C")], paragraphs=[])
    four_hop = _record(
        "4hop3__5_6_7_8",
        "When did the birthplace of Ah Via Musicom's performer become the capital of the state Knowles is from?",
        [
            ("Ah Via Musicom >> performer", "Eric Johnson"),
            ("#1 >> place of birth", "Austin"),
            ("what state was Knowles from ", "Texas"),
            ("when did #2 become the capital of #3", "1839"),
        ],
    )
    rare = _record(
        "2hop__2_3", "Which taxon is above the one of Bluefin?", [("Bluefin >> parent taxon", "Thunnus")] * 2
    )
    (tmp_path / "dev_eval292.jsonl").write_text(json.dumps(evaluated) + "\n")
    (tmp_path / "dev_decompositions2417.json").write_text(json.dumps([evaluated, four_hop, rare]))
    (tmp_path / "train100.json").write_text(json.dumps([{**evaluated, "question": "Eval again?"}]))
    examples = load_examples(tmp_path)
    assert [e.id for e in examples] == ["4hop3__5_6_7_8", "2hop__2_3"]  # the evaluation id is gone from both files
    assert examples[0].subquestions == [
        "Who is the performer of Ah Via Musicom?",
        "Where was #1 born?",
        "What state was Knowles from?",
        "When did #2 become the capital of #3?",
    ]
    assert examples[0].answer == "1839"
    assert examples[1].subquestions == ["What is the parent taxon of Bluefin?"] * 2
