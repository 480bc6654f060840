"""Data loaders, Socratic normalisation, the crash-safe JSONL store, build, config and answer matching.

No models here: these are the pure-data parts of the training pipeline, checked against small fixture
files (tests/fixtures/training/) and, when present, the real GSM8K Socratic file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_dod.evaluation.datasets import is_restatement, socratic_subquestions
from training.build import build, with_gold_answer
from training.config import load_config, validate_config
from training.data import SocraticOptions, load_examples
from training.errors import TrainingError
from training.screen import answers_match
from training.store import JsonlWriter, read_jsonl, read_records

FIX = Path(__file__).parent / "fixtures" / "training"


# -- loaders ---------------------------------------------------------------------------------------------------


def test_gsm8k_loader_reads_gold_after_hashes_without_commas():
    examples = load_examples(FIX / "gsm8k_tiny.jsonl")
    assert [e.id for e in examples] == ["gsm8k_tiny-0", "gsm8k_tiny-1", "gsm8k_tiny-2"]
    assert [e.answer for e in examples] == ["31", "1000", "140"]
    assert all(e.subquestions is None and e.context is None for e in examples)


def test_socratic_loader_caps_and_drops_restatement():
    examples = load_examples(FIX / "socratic_tiny.jsonl")
    by_q = dict(zip(["Tom", "Ana", "Mia", "Bus"], [e.subquestions for e in examples], strict=True))
    # "How many pens does he have left?" restates the question -> dropped
    assert by_q["Tom"] == ["How many pens does Tom have?"]
    # 5 steps, last restates "How much does she pay?" -> 4 left -> capped at the first 3
    assert by_q["Ana"] == [
        "How many apples does Ana buy?",
        "How much do the apples cost?",
        "How much do the pears cost?",
    ]
    # a single sub-question that restates the question is kept (never drop the only one)
    assert by_q["Mia"] == ["How many pages does Mia read in a week?"]


def test_socratic_options_are_honoured():
    keep = load_examples(FIX / "socratic_tiny.jsonl", socratic=SocraticOptions(drop_restatement=False, cap=5))
    assert keep[0].subquestions == ["How many pens does Tom have?", "How many pens does he have left?"]
    assert len(keep[1].subquestions) == 5
    skip = load_examples(FIX / "socratic_tiny.jsonl", socratic=SocraticOptions(cap=2, overflow="skip"))
    assert [e.id for e in skip] == ["socratic_tiny-0", "socratic_tiny-2", "socratic_tiny-3"]
    # "ends": the first cap-1 steps and the last, which reaches the answer (here the restatement, kept)
    ends = load_examples(FIX / "socratic_tiny.jsonl", socratic=SocraticOptions(drop_restatement=False, overflow="ends"))
    assert ends[1].subquestions == [
        "How many apples does Ana buy?",
        "How much do the apples cost?",
        "How much does Ana pay?",
    ]
    assert ends[0].subquestions == keep[0].subquestions  # within the cap nothing changes
    with pytest.raises(ValueError, match="cap"):
        SocraticOptions(cap=0)
    with pytest.raises(ValueError, match="'ends'"):
        SocraticOptions(overflow="last")  # type: ignore[arg-type]


def test_restatement_judgement():
    q = "Eliza earns $10 an hour. If she worked 45 hours this week, how much are her earnings for this week?"
    assert is_restatement("How much are Eliza's earnings for this week?", q)
    assert not is_restatement("How much does Eliza earn in overtime?", q)
    with pytest.raises(ValueError, match="not a GSM8K Socratic"):
        socratic_subquestions(q, "She earns 450.\n#### 450")


def test_real_socratic_file_normalises_all_1319(gsm8k_dir):
    examples = load_examples(gsm8k_dir / "test_socratic.jsonl")
    assert len(examples) == 1319
    assert all(1 <= len(e.subquestions) <= 3 for e in examples)
    assert all(e.answer for e in examples)
    raw = load_examples(gsm8k_dir / "test_socratic.jsonl", socratic=SocraticOptions(drop_restatement=False))
    assert sum(len(e.subquestions) for e in raw) > sum(len(e.subquestions) for e in examples)


def test_generic_bamboogle_and_drop_loaders():
    generic = load_examples(FIX / "generic.jsonl")
    assert [e.id for e in generic] == ["q1", "q2", "q3"]
    assert generic[1].context.startswith("The team scored")
    assert generic[2].answer is None and generic[2].subquestions == [
        "What novel is Clueless based on?",
        "Who wrote that novel?",
    ]
    bamboogle = load_examples(FIX / "bamboogle_tiny.csv")
    assert [(e.answer, e.context) for e in bamboogle] == [("Edmund Barton", None), ("1847", None)]
    drop = load_examples(FIX / "drop_tiny.json")
    assert [(e.id, e.answer) for e in drop] == [("d1", "2"), ("d2", "Hanson")]
    assert drop[0].context == drop[1].context and "Hanson" in drop[0].context
    assert len(load_examples(FIX / "generic.jsonl", limit=2)) == 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.jsonl", "holds no examples"),
        ("missing_question.jsonl", "1 bad row.*line 2: needs 'question'"),
        ("malformed.jsonl", "line 2: not JSON"),
        ("does_not_exist.jsonl", "does not exist"),
    ],
)
def test_bad_data_files_give_clear_errors(name, message):
    with pytest.raises(TrainingError, match=message):
        load_examples(FIX / name)


def test_gsm8k_without_hashes_and_duplicate_ids(tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps({"question": "q?", "answer": "no marker"}) + "\n")
    with pytest.raises(TrainingError, match="line 1: needs 'question' and an 'answer' ending in '#### <number>'"):
        load_examples(bad, "gsm8k")
    dup = tmp_path / "d.jsonl"
    dup.write_text("".join(json.dumps({"id": "a", "question": f"q{i}?"}) + "\n" for i in range(2)))
    with pytest.raises(TrainingError, match="duplicate id 'a'"):
        load_examples(dup)
    with pytest.raises(TrainingError, match="Unknown data format"):
        load_examples(dup, "parquet")
    with pytest.raises(TrainingError, match="datasets|Could not load"):
        load_examples("hf:gsm8k:main@test")


def test_exclude_keeps_evaluation_items_out_before_the_limit(tmp_path):
    """An eval manifest keeps exactly its items out of training, though the harness zero-pads row numbers."""
    from langchain_dod.evaluation.datasets import load_dataset, select_items

    data = FIX / "gsm8k_tiny.jsonl"
    eval_items = select_items(load_dataset(data).items, limit=1, seed=0)
    eval_ids = [item.id for item in eval_items]
    assert eval_ids[0] not in {e.id for e in load_examples(data)}  # 'gsm8k_tiny-0002' vs 'gsm8k_tiny-2'
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"seed": 0, "limit": 1, "ids": eval_ids}))
    everything = [e.id for e in load_examples(data)]
    held = {e.id for e in load_examples(data) if e.question == eval_items[0].question}
    assert held <= set(everything) and len(held) == 1
    kept = [e.id for e in load_examples(data, exclude=[manifest], limit=2)]
    assert kept == [i for i in everything if i not in held][:2]
    results = tmp_path / "run.jsonl"
    results.write_text("".join(json.dumps({"id": i, "prediction": "1"}) + "\n" for i in everything[:2]))
    assert [e.id for e in load_examples(data, exclude=[results, manifest])] == [
        i for i in everything if i not in held and i not in everything[:2]
    ]
    with pytest.raises(TrainingError, match="all of them excluded"):
        load_examples(data, exclude=[results, _all(tmp_path, everything)])
    with pytest.raises(TrainingError, match="Exclude file .* does not exist"):
        load_examples(data, exclude=[tmp_path / "nope.json"])
    (tmp_path / "bad.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(TrainingError, match="no 'ids' list"):
        load_examples(data, exclude=[tmp_path / "bad.json"])


def _all(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "all.json"
    path.write_text(json.dumps({"ids": ids}))
    return path


EVAL_FIX = Path(__file__).parent / "fixtures" / "eval"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (FIX / "gsm8k_tiny.jsonl", "gsm8k"),
        (FIX / "socratic_tiny.jsonl", "socratic"),
        (FIX / "generic.jsonl", "jsonl"),
        (EVAL_FIX / "gsm8k_mini.jsonl", "jsonl"),  # generic JSONL without ids: rows named by number
        (FIX / "bamboogle_tiny.csv", "bamboogle"),  # 'bamboogle-001' in an eval manifest, '<stem>-1' here
        (FIX / "drop_tiny.json", "drop"),
        (EVAL_FIX / "drop_mini.json", "drop"),
    ],
)
def test_exclude_works_for_every_format(tmp_path, data, fmt):
    """Whatever the format, an evaluation manifest over the same file keeps its items out of training."""
    from langchain_dod.evaluation.datasets import load_dataset, select_items

    eval_fmt = "gsm8k" if fmt == "socratic" else fmt
    held = select_items(load_dataset(data, eval_fmt, skip_bad=True).items, limit=1, seed=0)[0]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"seed": 0, "limit": 1, "ids": [held.id]}))
    everything = load_examples(data, fmt)
    kept = load_examples(data, fmt, exclude=[manifest])
    assert [e.question for e in everything if e.question != held.question] == [e.question for e in kept]
    assert len(kept) == len(everything) - 1


GSM8K_TRAIN_ROWS = {0: "train-0", 7: "train-7", 24: "train-24", 4530: "train-4530"}


def test_committed_ids_keep_matching(gsm8k_dir):
    """The ids committed files are keyed by: training outputs (runs/smollm2-sdr: ``train-0``) and evaluation
    folders (benchmarks/results/eval: ``train-0024``); and an evaluation manifest keeps exactly its rows out."""
    from langchain_dod.evaluation.datasets import load_dataset

    train = gsm8k_dir / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
    examples = load_examples(train, "gsm8k")
    for row, ident in GSM8K_TRAIN_ROWS.items():
        assert examples[row].id == ident and examples[row].question == rows[row]["question"].strip()
    assert examples[0].answer == "72"  # runs/smollm2-sdr/shard0/decompositions.jsonl, first line
    items = load_dataset(train).items
    assert [items[r].id for r in (0, 24, 4530)] == ["train-0000", "train-0024", "train-4530"]
    manifest = Path(__file__).parents[1] / "benchmarks/results/eval/gsm8k-train-distilled/manifest.json"
    held = json.loads(manifest.read_text())["ids"]
    assert "train-0024" in held and "train-4530" in held
    kept = load_examples(train, "gsm8k", exclude=[manifest])
    assert len(kept) == len(rows) - len(held)
    kept_ids = {e.id for e in kept}
    assert "train-24" not in kept_ids and "train-4530" not in kept_ids and "train-0" in kept_ids
    # the shards of runs/smollm2-sdr: --exclude the manifest --offset S*500 --limit 500
    shard1 = load_examples(train, "gsm8k", exclude=[manifest], offset=500, limit=500)
    assert shard1[0].id == kept[500].id and len(shard1) == 500


# -- the crash-safe store --------------------------------------------------------------------------------------


def test_store_tolerates_and_repairs_a_torn_last_line(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"id": "a", "v": 1})
        writer.write({"id": "b", "v": 2})
    with open(path, "a") as handle:  # a crash mid-write leaves half a line
        handle.write('{"id": "c", "v"')
    assert set(read_records(path)) == {"a", "b"}
    with JsonlWriter(path) as writer:  # reopening cuts the torn line before appending
        writer.write({"id": "c", "v": 3})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]
    assert path.read_text().count("\n") == 3


def test_store_refuses_corruption_in_the_middle(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\ngarbage\n{"id": "b"}\n')
    with pytest.raises(TrainingError, match=r"out.jsonl:2 is not valid JSON"):
        read_records(path)


# -- build -----------------------------------------------------------------------------------------------------


def _decomposition(i, question, subs, **extra):
    return {
        "id": f"e{i}",
        "question": question,
        "context": None,
        "answer": str(i),
        "subquestions": subs,
        "teacher": "t",
        "profile": "math",
        "max_subquestions": 3,
        **extra,
    }


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_build_sd_t_uses_exactly_the_inference_prompt_and_splits_by_question(tmp_path):
    from langchain_dod.decomposer import Decomposer
    from langchain_dod.prompts import decomposition_target

    records = [_decomposition(i, f"Question number {i}?", [f"Sub {i}?"]) for i in range(20)]
    records.append(_decomposition(99, "Question number 3?", ["Different?"]))  # duplicate prompt
    src = _write(tmp_path / "dec.jsonl", records)
    report = build(tmp_path / "a", decompositions=src, val_fraction=0.2, seed=1)
    assert (report.train, report.validation, report.duplicates) == (16, 4, 1)
    train = read_jsonl(tmp_path / "a" / "train.jsonl")
    val = read_jsonl(tmp_path / "a" / "validation.jsonl")
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    first = train[0]
    question = next(r["question"] for r in records if r["id"] == first["id"])
    # the runtime's Decomposer sends exactly these messages
    assert first["messages"][:-1] == Decomposer.model_construct(profile="math", max_subquestions=3).messages(question)
    subs = next(r["subquestions"] for r in records if r["id"] == first["id"])
    assert first["messages"][-1] == {"role": "assistant", "content": decomposition_target(subs)}
    # seeded: same seed, same split; another seed, another split
    build(tmp_path / "b", decompositions=src, val_fraction=0.2, seed=1)
    build(tmp_path / "c", decompositions=src, val_fraction=0.2, seed=2)
    ids = lambda d: sorted(r["id"] for r in read_jsonl(tmp_path / d / "validation.jsonl"))  # noqa: E731
    assert ids("a") == ids("b") != ids("c")


def test_build_sd_r_se_t_se_a_from_screened(tmp_path):
    from langchain_dod.prompts import ANSWER_MARKER, solver_messages

    screened = [
        {**_decomposition(1, "Q one?", ["A?"]), "correct": True, "solution": f"A is 2.\n{ANSWER_MARKER} 2"},
        {**_decomposition(2, "Q two?", ["B?"]), "correct": False, "solution": f"B is 5.\n{ANSWER_MARKER} 5"},
        {**_decomposition(3, "Q three?", []), "correct": True, "solution": "It is 3"},
    ]
    src = _write(tmp_path / "scr.jsonl", screened)
    report = build(tmp_path / "o", screened=src, kinds=["SD-R", "SE-T", "SE-A"], val_fraction=0.0)
    assert report.per_kind == {"SD-R": 2, "SE-T": 3, "SE-A": 3}
    rows = read_jsonl(tmp_path / "o" / "train.jsonl")
    se_a = {r["id"]: r for r in rows if r["kind"] == "SE-A"}
    assert se_a["e2"]["messages"][-1]["content"] == f"B is 5.\n{ANSWER_MARKER} 2"  # gold replaces the wrong 5
    assert se_a["e3"]["messages"][-1]["content"] == f"It is 3\n{ANSWER_MARKER} 3"
    se_t = next(r for r in rows if r["kind"] == "SE-T" and r["id"] == "e1")
    assert se_t["messages"][:-1] == solver_messages("Q one?", None, ["A?"], mode="decomposed")
    dropped = build(tmp_path / "p", screened=src, kinds=["SD-R"], drop_empty=True, val_fraction=0.0)
    assert (dropped.train, dropped.dropped_empty) == (1, 1)


def test_build_skip_where_solved_turns_plans_of_solved_questions_into_skips(tmp_path):
    from langchain_dod.prompts import decomposition_target

    screened = [
        {**_decomposition(1, "Q one?", ["A?"]), "correct": True},  # CoT also right: the plan becomes a skip
        {**_decomposition(2, "Q two?", ["B?", "C?"]), "correct": True},  # CoT wrong: the plan stays
        {**_decomposition(3, "Q three?", ["D?"]), "correct": False},  # screened out either way
        {**_decomposition(4, "Q four?", []), "correct": True},  # already a skip
    ]
    src = _write(tmp_path / "scr.jsonl", screened)

    def row(i, strict, mode="single-stage-cot"):  # an evaluation pads row numbers: e0001 is the screen's e1
        return {"id": f"e{i:04d}", "mode": mode, "scores": {"strict": strict, "lenient": strict}}

    cot = _write(tmp_path / "cot.jsonl", [row(1, 1.0), row(2, 0.0), row(3, 1.0), row(4, 1.0)])
    report = build(tmp_path / "o", screened=src, kinds=["SD-R"], val_fraction=0.0, skip_where_solved=str(cot))
    assert (report.train, report.plans_to_skips) == (3, 1)
    assert "1 plans made skips" in report.summary()
    targets = {r["id"]: r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "o" / "train.jsonl")}
    assert targets == {
        "e1": decomposition_target([]),
        "e2": decomposition_target(["B?", "C?"]),
        "e4": decomposition_target([]),
    }
    assert json.loads((tmp_path / "o" / "build.json").read_text())["skip_where_solved"] == str(cot)
    # without the run, the same input keeps every plan
    assert build(tmp_path / "p", screened=src, kinds=["SD-R"], val_fraction=0.0).plans_to_skips == 0
    # a two-stage run, or a file that is no run at all, is refused with what to pass instead
    two_stage = _write(tmp_path / "two.jsonl", [row(1, 1.0, mode="two-stage")])
    with pytest.raises(TrainingError, match="needs a single-stage run"):
        build(tmp_path / "q", screened=src, kinds=["SD-R"], skip_where_solved=str(two_stage))
    with pytest.raises(TrainingError, match="dod eval run"):
        build(tmp_path / "q", screened=src, kinds=["SD-R"], skip_where_solved=str(src))


def test_build_bad_inputs(tmp_path):
    src = _write(tmp_path / "dec.jsonl", [{"id": "x", "question": "q?"}])
    with pytest.raises(TrainingError, match="has no 'subquestions'"):
        build(tmp_path / "o", decompositions=src)
    with pytest.raises(TrainingError, match="needs screened results"):
        build(tmp_path / "o", decompositions=src, kinds=["SD-R"])
    with pytest.raises(TrainingError, match="Unknown kind"):
        build(tmp_path / "o", decompositions=src, kinds=["SD-X"])
    none_pass = _write(tmp_path / "s.jsonl", [{**_decomposition(1, "q?", ["a?"]), "correct": False}])
    with pytest.raises(TrainingError, match="No SD-R records"):
        build(tmp_path / "o", screened=none_pass, kinds=["SD-R"])


def test_with_gold_answer_replaces_only_the_last_marker():
    text = "The answer is: 1 (first try)\nthen\nThe answer is: 7"
    assert with_gold_answer(text, "8") == "The answer is: 1 (first try)\nthen\nThe answer is: 8"


# -- config and answers ----------------------------------------------------------------------------------------


def test_config_unknown_keys_are_errors(tmp_path):
    with pytest.raises(TrainingError, match=r"unknown keys in \[sft\]: \['lora_rank'\]; allowed: .*lora_r"):
        load_config(FIX / "distill_bad_key.toml")
    good = {"out_dir": "x", "data": {"source": "d"}, "generate": {"teacher": "human"}, "sft": {"base": "b"}}
    assert validate_config(good) is good
    with pytest.raises(TrainingError, match="unknown top-level keys"):
        validate_config({**good, "trainer": {}})
    with pytest.raises(TrainingError, match=r"\[generate\] needs \['teacher'\]"):
        validate_config({**good, "generate": {}})
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("out_dir: x\ndata: {source: d}\ngenerate: {teacher: human}\nsft: {base: b, lr: 1}\n")
    with pytest.raises(TrainingError, match=r"unknown keys in \[sft\]: \['lr'\]"):
        load_config(yaml_file)
    broken = tmp_path / "c.toml"
    broken.write_text("out_dir = \n")
    with pytest.raises(TrainingError, match="does not parse"):
        load_config(broken)


@pytest.mark.parametrize(
    ("predicted", "gold", "ok"),
    [
        ("18", "18", True),
        ("$1,000.00", "1000", True),
        ("17", "18", False),
        (None, "1", False),
        ("Edmund Barton", "Edmund Barton", True),
        ("It was edmund barton.", "Edmund Barton", True),
        ("Barton", "Edmund Barton", False),
        ("about 18 eggs", "18", True),
    ],
)
def test_answers_match(predicted, gold, ok):
    assert answers_match(predicted, gold) is ok


def test_offset_shards_the_examples_after_the_exclusion(tmp_path):
    data = FIX / "generic.jsonl"
    everything = [e.id for e in load_examples(data)]
    assert len(everything) >= 3
    first = [e.id for e in load_examples(data, limit=2)]
    second = [e.id for e in load_examples(data, offset=2)]
    assert first + second == everything  # two shards cover the file once, in order
    assert [e.id for e in load_examples(data, offset=1, limit=1)] == everything[1:2]
    with pytest.raises(TrainingError, match="after the first"):
        load_examples(data, offset=len(everything))
    with pytest.raises(TrainingError, match="offset must be"):
        load_examples(data, offset=-1)


# -- stage settings: declared once, CLI flags and recipe tables derive from them -------------------------------

OLD_DEFAULTS = {  # the defaults the stages' signatures and flags had before the settings dataclasses
    "generate": {
        "profile": "math",
        "max_subquestions": 3,
        "max_concurrency": 1,
        "retries": 2,
        "backoff": 1.0,
        "temperature": None,
        "seed": 0,
        "max_tokens": 256,
        "price_in": None,
        "price_out": None,
    },
    "screen": {
        "second_teacher": None,
        "second_temperature": 0.7,
        "skip": None,
        "max_tokens": 400,
        "max_concurrency": 1,
        "retries": 2,
        "backoff": 1.0,
    },
    "build": {"kinds": ["SD-T"], "val_fraction": 0.1, "seed": 0, "drop_empty": False},
    "export": {
        "kind": "adapter",
        "outtype": "f16",
        "quantize": ["Q8_0"],
        "verify": True,
        "probe_tokens": 8,
        "min_match": 4,
    },
    "data": {
        "format": None,
        "limit": None,
        "offset": 0,
        "exclude": [],
        "cap": 3,
        "overflow": "first",
        "drop_restatement": True,
        "restatement_threshold": 0.7,
        "step_style": "keep",
    },
}
NOT_SETTINGS = {"generate": {"teacher"}, "screen": {"solver"}, "sft": {"base", "resume"}}


def _stage_classes():
    from training.build import BuildConfig
    from training.data import DataConfig
    from training.export import ExportConfig
    from training.generate import GenerateConfig
    from training.screen import ScreenConfig
    from training.sft import SFTConfig

    return {
        "data": DataConfig,
        "generate": GenerateConfig,
        "screen": ScreenConfig,
        "build": BuildConfig,
        "sft": SFTConfig,
        "export": ExportConfig,
    }


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "training" / "recipes").glob("*.toml")))
def test_every_shipped_recipe_loads_and_means_the_same(recipe):
    """Each table of a shipped recipe becomes its stage's settings: the keys as written, the rest the old defaults."""
    from dataclasses import asdict

    config = load_config(recipe)
    for stage, cls in _stage_classes().items():
        if stage not in config:
            continue
        table = {k: v for k, v in config[stage].items() if k not in NOT_SETTINGS.get(stage, set())}
        settings = asdict(cls(**table))
        for key, value in table.items():
            assert settings[key] == value, (recipe.name, stage, key)
        for key, value in OLD_DEFAULTS.get(stage, {}).items():
            if key not in table:
                assert list(settings[key]) == value if isinstance(value, list) else settings[key] == value


def test_cli_flags_derive_from_the_stage_settings():
    """Every setting has its flag, and a command line without them gives the dataclass defaults."""
    from training.cli import build_parser
    from training.settings import from_args

    parser = build_parser()
    minimal = {
        "generate": ["--data", "d.jsonl", "--teacher", "human", "--out", "o"],
        "screen": ["--decompositions", "d", "--solver", "s", "--out", "o"],
        "build": ["--out", "o"],
        "export": ["--model", "m", "--out", "o"],
        "sft": ["--data", "d", "--base", "b", "--out", "o"],
    }
    classes = _stage_classes()
    for command, argv in minimal.items():
        args = parser.parse_args([command, *argv])
        cls = classes[command]
        if command == "sft":
            assert from_args(cls, args, target_modules="all-linear", kinds=None) == cls()
            continue
        assert from_args(cls, args) == cls(), command
        for key, value in OLD_DEFAULTS[command].items():
            assert getattr(args, key) == value, (command, key)
    args = parser.parse_args(
        ["generate", *minimal["generate"], "--keep-restatement", "--exclude", "a", "--exclude", "b"]
    )
    data = from_args(classes["data"], args)
    assert data.source == "d.jsonl" and data.drop_restatement is False and data.exclude == ["a", "b"]
    args = parser.parse_args(["export", *minimal["export"], "--no-verify", "--quantize", "Q8_0,Q4_K_M"])
    assert from_args(classes["export"], args).verify is False and args.quantize == ["Q8_0", "Q4_K_M"]
    with pytest.raises(TrainingError, match=r"generate: unknown settings \['profil'\]"):
        from training.generate import generate

        generate([], "human", "o.jsonl", profil="math")
