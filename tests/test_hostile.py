"""Hostile inputs (issue 15): each case once gave an abort, a silently wrong result or an unclear error.

Every test here failed before its fix. The real small model (SmolLM2-135M, loads in well under a second) runs
where a model is involved; files are written into ``tmp_path``.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_dod import ChatGGUF, Decomposer

SMALL = "smollm2-135m-instruct"


# -- 1. numeric settings are checked at construction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("lora_scale", math.nan),  # aborted the process (SIGABRT in llama.cpp's grammar sampler)
        ("lora_scale", math.inf),
        ("lora_scale", 1e30),
        ("lora_scale", -1e30),
        ("temperature", -0.5),
        ("temperature", math.nan),
        ("top_p", 1.5),
        ("top_p", -0.1),
        ("n_ctx", -5),  # was "check that the file is a complete GGUF"
        ("max_tokens", 0),  # was "no limit"
        ("max_tokens", -5),
        ("n_threads", 0),
        ("n_threads", -2),
        ("repeat_penalty", 0.0),
        ("timeout", 0),
    ],
)
def test_chat_model_refuses_numbers_out_of_range_naming_the_setting(setting, value):
    with pytest.raises(ValueError, match=rf"{setting} must be .* (at least|above) .*; got"):
        ChatGGUF(model=SMALL, **{setting: value})


def test_chat_model_refuses_a_per_call_max_tokens_of_zero():
    with pytest.raises(ValueError, match=r"max_tokens must be an integer at least 1"):
        ChatGGUF(model=SMALL, max_tokens=8).invoke("Hi", max_tokens=0)


def test_chat_model_keeps_the_documented_special_values():
    ChatGGUF(model=SMALL, n_ctx=0, max_tokens=None, n_threads=None, timeout=None, lora_scale=-1.0, top_k=0)


def test_empty_model_name_says_it_is_empty():
    from langchain_dod.models import resolve

    with pytest.raises(ValueError, match="empty model name"):  # was ". is a directory with 9 .gguf files"
        ChatGGUF(model="")
    with pytest.raises(ValueError, match="model name is empty"):
        resolve("  ")


@pytest.mark.parametrize(
    ("setting", "value"), [("max_tokens", 0), ("max_tokens", -1), ("max_subquestions", 0), ("max_subquestions", 11)]
)
def test_decomposer_refuses_limits_out_of_range(setting, value):
    with pytest.raises(ValueError, match=setting):
        Decomposer(llm=ChatGGUF(model=SMALL), **{setting: value})


# -- 2. a reply cut off by max_tokens is not an empty plan ---------------------------------------------------

PENS = "Tom has 3 boxes of 12 pens and gives away 5. How many are left?"
# a question the shipped decomposer plans (merged or at run time), where a test needs a plan
SHOPPING = (
    "Sam buys 3 shirts at $15 each and 2 pairs of pants at $25 each. He has a coupon for $10 off. How much does he pay?"
)


def test_reply_cut_off_before_its_first_subquestion_is_an_error_not_an_empty_plan():
    from langchain_dod.decomposer import DecompositionError, default_decomposer_llm

    # was Decomposition(subquestions=[]): the chain then answered single-stage without a word
    with pytest.raises(DecompositionError, match=r"cut off by max_tokens=5 .* Raise max_tokens"):
        Decomposer(llm=default_decomposer_llm(), max_tokens=5).invoke(PENS)
    with pytest.raises(DecompositionError, match=r"cut off by max_tokens=5"):
        Decomposer(llm=ChatGGUF(model=SMALL), max_tokens=5).invoke(PENS)  # under the grammar from the start


async def test_cut_off_reply_is_an_error_in_async_too():
    from langchain_dod.decomposer import DecompositionError

    with pytest.raises(DecompositionError, match=r"cut off by max_tokens=5"):
        await Decomposer(llm=ChatGGUF(model=SMALL), max_tokens=5).ainvoke(PENS)


def test_cut_off_free_text_reply_is_an_error_too():
    """Any chat model that reports ``finish_reason="length"`` (OpenAI, llama.cpp's server) is read the same way."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from langchain_dod.decomposer import DecompositionError

    cut = AIMessage(content="Sure! Here are the", response_metadata={"finish_reason": "length"})
    llm = GenericFakeChatModel(messages=iter([cut]))
    with pytest.raises(DecompositionError, match="cut off by max_tokens"):
        Decomposer(llm=llm, structured_output="never").invoke(PENS)


# -- 3. questions the model cannot read ----------------------------------------------------------------------


@pytest.mark.parametrize("question", ["\x00\x00\x01", "?!? ...", "\u200b\t\x7f", "🙂🙂"])
def test_question_without_letters_or_digits_is_an_error(question):
    from langchain_dod import DecomposeSolve
    from langchain_dod.decomposer import normalize_input

    with pytest.raises(ValueError, match="no letters or digits"):  # was the example's "muffins" sub-questions
        normalize_input(question)
    with pytest.raises(ValueError, match="no letters or digits"):  # before any model is loaded
        Decomposer(llm=ChatGGUF(model=SMALL)).invoke(question)
    with pytest.raises(ValueError, match="no letters or digits"):
        DecomposeSolve(decomposer=Decomposer(llm=ChatGGUF(model=SMALL)), solver=ChatGGUF(model=SMALL)).invoke(
            {"question": question}
        )


ARABIC = "🙂 كم عدد التفاحات إذا كان لدي ثلاثة وأكلت واحدة؟"


@pytest.mark.parametrize("distilled", [True, False], ids=["adapter", "untuned-grammar"])
def test_question_the_model_cannot_read_gets_no_plan_rather_than_the_examples(distilled):
    from langchain_dod.decomposer import default_decomposer_llm

    llm = default_decomposer_llm() if distilled else ChatGGUF(model=SMALL)
    result = Decomposer(llm=llm).invoke(ARABIC)
    if not distilled:  # the shipped adapter learned to write no plan here; the untuned base copies the example
        assert "muffin" in (result.raw or "")  # precondition: SmolLM2 copied the prompt's example
    assert result.subquestions == []  # was ["How many muffins does ...", "How many muffins are left ..."]
    # a question it can read keeps its plan
    assert Decomposer(llm=llm).invoke(SHOPPING).subquestions


def test_question_about_the_examples_subject_keeps_the_examples_words():
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    reply = '{"subquestions": ["How many muffins does she bake?", "How many muffins are left after she sells 5?"]}'
    llm = GenericFakeChatModel(messages=iter([AIMessage(content=reply)] * 2))
    decomposer = Decomposer(llm=llm, structured_output="never")
    kept = decomposer.invoke("A baker bakes 20 muffins and sells 5 muffins. How many muffins are left?")
    assert len(kept.subquestions) == 2
    assert decomposer.invoke("I have 20 apples and eat 5. How many apples are left?").subquestions == []


# -- 4. DOD_ALLOW_DOWNLOAD reads yes/no values ---------------------------------------------------------------


@pytest.fixture
def ghost_model(monkeypatch):
    """A registry entry that is installed nowhere, whose hub download must not be attempted here."""
    import huggingface_hub

    from langchain_dod.models import MODELS, ModelSpec

    spec = ModelSpec(
        name="ghost-hostile",
        filename="g.gguf",
        license="none",
        package=("dod_absent_hostile_pkg", "g.gguf"),
        install="pip install dod-absent-hostile-pkg",
        hub=("someone/g", "g.gguf"),
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    return spec.name


@pytest.mark.parametrize("value", ["False", "NO", "off", "0", " false "])
def test_download_switch_off_values_mean_off(ghost_model, monkeypatch, value):
    from langchain_dod.models import ModelNotFoundError, resolve

    monkeypatch.setenv("DOD_ALLOW_DOWNLOAD", value)  # "False", "NO", "off" turned downloads on
    with pytest.raises(ModelNotFoundError, match="downloads not allowed; set DOD_ALLOW_DOWNLOAD=1"):
        resolve(ghost_model)


@pytest.mark.parametrize("value", ["1", "TRUE", "Yes", "on", "", None])  # unset or empty: on, as users expect
def test_download_switch_on_values_mean_on(ghost_model, monkeypatch, value):
    from langchain_dod.models import ModelNotFoundError, resolve

    if value is None:
        monkeypatch.delenv("DOD_ALLOW_DOWNLOAD", raising=False)
    else:
        monkeypatch.setenv("DOD_ALLOW_DOWNLOAD", value)
    with pytest.raises(ModelNotFoundError, match="failed: AssertionError: a download was attempted"):
        resolve(ghost_model)


@pytest.mark.parametrize("value", ["maybe", "2", "enable"])
def test_download_switch_other_values_are_an_error(ghost_model, monkeypatch, value):
    from langchain_dod.models import resolve

    monkeypatch.setenv("DOD_ALLOW_DOWNLOAD", value)
    with pytest.raises(ValueError, match=f"DOD_ALLOW_DOWNLOAD='{value}' is not a yes/no value"):
        resolve(ghost_model)


# -- 5. run names stay inside --out --------------------------------------------------------------------------


def test_eval_label_that_leaves_the_out_folder_is_refused(tmp_path, capsys):
    from langchain_dod.cli import main

    out = tmp_path / "deep" / "out"
    argv = ["eval", "run", "--data", str(tmp_path / "none.jsonl"), "--out", str(out), "--no-progress"]
    argv += ["--decomposer", "llamacpp:smollm2-135m-instruct", "--solver", "llamacpp:smollm2-135m-instruct"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--label", "x/../../../escaped"])  # wrote runs/dec-x/../../../escaped__... above --out
    assert exit_.value.code == 2
    assert "is not a safe label; use letters, digits and . _ + - only" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*escaped*"))


@pytest.mark.parametrize("name", ["../escaped", "a/b", ".hidden", ""])
def test_run_name_must_be_a_file_name(name):
    from langchain_dod.evaluation.runner import RunSpec

    with pytest.raises(ValueError, match="not a safe file name"):
        RunSpec(solver="llamacpp:smollm2-135m-instruct", mode="cot", name=name)


# -- 6. numeric command-line flags are checked --------------------------------------------------------------

ASK = ["ask", "What is 2 + 3?", "--single-stage", "--solver", "llamacpp:smollm2-135m-instruct"]


@pytest.mark.parametrize(
    ("argv", "flag", "allowed"),
    [
        ([*ASK, "--max-tokens", "0"], "--max-tokens", "at least 1"),  # was "no limit"
        ([*ASK, "--max-tokens", "-5"], "--max-tokens", "at least 1"),
        ([*ASK, "--max-tokens", "lots"], "--max-tokens", "not an integer"),
        (["decompose", "q", "--max-subquestions", "0"], "--max-subquestions", "at least 1 and at most 10"),
        (["decompose", "q", "--max-subquestions", "11"], "--max-subquestions", "at least 1 and at most 10"),
        (["eval", "run", "--data", "d.jsonl", "--out", "o", "--max-tokens", "0"], "--max-tokens", "at least 1"),
        (["eval", "run", "--data", "d.jsonl", "--out", "o", "--limit", "0"], "--limit", "at least 1"),
        (["eval", "run", "--data", "d.jsonl", "--out", "o", "--seed", "-2"], "--seed", "at least -1"),
        (["eval", "run", "--data", "d.jsonl", "--out", "o", "--chunk", "0"], "--chunk", "at least 1"),
        (["eval", "run", "--data", "d.jsonl", "--out", "o", "--max-concurrency", "0"], "--max-concurrency", "1"),
        (["eval", "run", "--data", "d.jsonl", "--out", "o", "--n-threads", "-1"], "--n-threads", "at least 1"),
    ],
)
def test_cli_numbers_out_of_range_are_usage_errors(argv, flag, allowed, capsys, tmp_path, monkeypatch):
    from langchain_dod.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err and allowed in err


# -- 7. resuming dod-train generate after a cut-off last line ------------------------------------------------


def _examples(n: int = 3) -> list:
    from training.data import Example

    return [
        Example(
            id=f"e{i}",
            question=f"Café {i}: how many crêpes for {i} people? 🙂",
            answer=str(i),
            subquestions=[f"How many crêpes does one person eat at café {i}?"],
        )
        for i in range(n)
    ]


def test_resume_keeps_a_last_record_that_lacks_only_its_newline(tmp_path):
    from training.generate import generate
    from training.store import read_jsonl

    out = tmp_path / "d.jsonl"
    generate(_examples(), "human", out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2])[:-1])  # `head -n2 d.jsonl | head -c-1`: a crash before the newline
    report = generate(_examples(), "human", out, progress=False)
    assert (report.already_done, report.written) == (2, 1)
    rows = read_jsonl(out, tolerate_torn_tail=False)
    assert [r["id"] for r in rows] == ["e0", "e1", "e2"]  # e1 was counted as done, then cut off: lost
    assert out.read_bytes().count(b"\n") == 3


def test_resume_redoes_a_last_line_torn_inside_a_utf8_character(tmp_path):
    from training.generate import generate
    from training.store import read_jsonl, read_records

    out = tmp_path / "d.jsonl"
    generate(_examples(), "human", out, progress=False)
    data = out.read_bytes()
    third = data.rfind(b"\n", 0, len(data) - 1) + 1
    cut = data.index("ê".encode(), third) + 1  # inside the two bytes of "ê"
    out.write_bytes(data[:cut])
    assert set(read_records(out)) == {"e0", "e1"}  # was UnicodeDecodeError
    report = generate(_examples(), "human", out, progress=False)
    assert (report.already_done, report.written) == (2, 1)
    assert [r["id"] for r in read_jsonl(out, tolerate_torn_tail=False)] == ["e0", "e1", "e2"]


def test_invalid_utf8_inside_the_file_names_its_line(tmp_path):
    from training.errors import TrainingError
    from training.store import read_records

    out = tmp_path / "d.jsonl"
    out.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n{"id": "c"}\n')
    with pytest.raises(TrainingError, match=r"d.jsonl:2 is not valid UTF-8"):
        read_records(out)


# -- 8. one output file, one set of generate settings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_subquestions": 2}, "holds records made with max_subquestions=3, but this run has max_subquestions=2"),
        ({"profile": "reading"}, "holds records made with profile=math, but this run has profile=reading"),
    ],
)
def test_generate_refuses_to_mix_settings_in_one_output(tmp_path, change, message):
    from training.errors import TrainingError
    from training.generate import generate
    from training.store import read_jsonl

    out = tmp_path / "d.jsonl"
    generate(_examples(2), "human", out, progress=False)
    with pytest.raises(TrainingError, match=rf"{message}; use another --out or the same settings"):
        generate(_examples(3), "human", out, progress=False, **change)  # was: a silent mix
    with pytest.raises(TrainingError, match=message):
        generate(_examples(2), "human", out, progress=False, **change)  # nothing to do, but not what was asked
    assert len(read_jsonl(out)) == 2


def test_generate_refuses_another_teacher_in_one_output(tmp_path):
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from training.errors import TrainingError
    from training.generate import generate

    out = tmp_path / "d.jsonl"
    generate(_examples(2), "human", out, progress=False)
    teacher = GenericFakeChatModel(messages=iter([AIMessage(content='{"subquestions": ["How many crêpes?"]}')]))
    with pytest.raises(TrainingError, match="made with teacher=given, but this run has teacher=GenericFakeChatModel"):
        generate(_examples(3), teacher, out, progress=False)


def test_generate_cli_reports_mixed_settings_with_exit_2(tmp_path, capsys):
    from training.cli import main

    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in _examples(3)), encoding="utf-8")
    argv = ["generate", "--data", str(data), "--teacher", "human", "--out", str(tmp_path / "d.jsonl"), "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--max-subquestions", "2"]) == 2
    assert "use another --out or the same settings" in capsys.readouterr().err


# -- 9. errors that say what is wrong ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _dod(*args: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real ``dod`` command line of this checkout, bytes in and out (the point here is the encoding)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "langchain_dod.cli", *args], input=stdin, capture_output=True, cwd=ROOT, env=env
    )


def test_invalid_utf8_on_stdin_is_reported_per_line_as_valid_json():
    run = _dod("decompose", "-", "--json", stdin=b"caf\xe9 au lait: how many cups?\n" + SHOPPING.encode() + b"\n")
    assert run.returncode == 1
    bad, good = (json.loads(line.decode("utf-8")) for line in run.stdout.splitlines())  # was not valid UTF-8
    assert bad["error"] == (
        "ValueError: line 1 of stdin is not valid UTF-8 (byte 0xe9 at offset 3); save the input as UTF-8."
    )  # was "surrogates not allowed"
    assert bad["question"] == "caf\ufffd au lait: how many cups?"
    assert good["question"] == SHOPPING and good["subquestions"]  # the other lines are answered


def test_invalid_utf8_question_argument_is_a_clear_error():
    run = _dod("decompose", b"caf\xe9?")
    assert run.returncode == 1
    assert run.stderr.decode("utf-8").strip() == (
        "error: the question is not valid UTF-8 (byte 0xe9 at offset 3); save the input as UTF-8."
    )


def test_hosted_solver_without_its_key_is_a_one_line_error(monkeypatch, capsys):
    pytest.importorskip("langchain_openai")
    from langchain_dod.cli import main

    for name in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["ask", PENS, "--single-stage", "--solver", "openai:gpt-4o-mini"]) == 1  # was an OpenAIError traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Could not create the model 'openai:gpt-4o-mini'")
    assert "OPENAI_API_KEY" in err


def test_empty_manifest_error_names_the_file(tmp_path, capsys):
    from langchain_dod.cli import main

    out = tmp_path / "eval"
    out.mkdir()
    (out / "manifest.json").write_text("")
    data = Path(__file__).parent / "fixtures" / "eval" / "gsm8k_mini.jsonl"
    argv = ["eval", "run", "--data", str(data), "--out", str(out), "--single-stage", "cot", "--no-progress"]
    assert main([*argv, "--solver", "llamacpp:smollm2-135m-instruct"]) == 1
    err = capsys.readouterr().err  # was "error: Expecting value: line 1 column 1 (char 0)"
    assert f"{out / 'manifest.json'} is empty or not valid JSON" in err and "use another --out" in err
    assert main(["eval", "report", str(out)]) == 1  # the report reads it too
    assert f"{out / 'manifest.json'} is empty or not valid JSON" in capsys.readouterr().err


# -- 10. weights that are not numbers: a Python error, not abort() --------------------------------------------

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_gguf import write_lora  # noqa: E402

NAN_F16, INF_F16 = b"\x00\x7e", b"\x00\x7c"


def _tensor(path: Path, name: str) -> tuple[int, int]:
    """(absolute data offset, byte size) of one tensor of a GGUF."""
    from langchain_dod.gguf_file import inspect_gguf

    return next((offset, size) for n, _, offset, size in inspect_gguf(path).tensor_data if n == name)


def _damaged(src: Path, dst: Path, name: str, at: int, data: bytes) -> Path:
    """A copy of ``src`` with ``data`` written ``at`` bytes into tensor ``name``."""
    blob = bytearray(src.read_bytes())
    offset, _ = _tensor(src, name)
    blob[offset + at : offset + at + len(data)] = data
    dst.write_bytes(bytes(blob))
    return dst


def _decompose_in_a_child(**chat: str) -> subprocess.CompletedProcess[str]:
    """One grammar-constrained decomposition in its own process: an abort() fails the test, not pytest."""
    code = (
        "from langchain_dod import ChatGGUF, Decomposer\n"
        f"Decomposer(llm=ChatGGUF(n_threads=1, **{chat!r})).invoke({PENS!r})\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


@pytest.mark.parametrize(
    ("tensor", "at", "data"),
    [
        ("blk.0.attn_q.weight", 5 * 20, NAN_F16),  # the scale d of the 6th Q4_1 block
        ("blk.3.ffn_up.weight", 7 * 20 + 2, INF_F16),  # the minimum m of a Q4_1 block
        ("token_embd.weight", 34 * 1000, NAN_F16),  # the scale of a Q8_0 block
        ("blk.0.attn_norm.weight", 4 * 17, struct.pack("<f", math.nan)),  # an F32 weight
    ],
    ids=["q4_1-scale", "q4_1-min", "q8_0-scale", "f32"],
)
def test_model_with_nan_weights_is_a_clear_error_not_an_abort(smollm2_path, tmp_path, tensor, at, data):
    bad = _damaged(smollm2_path, tmp_path / "bad.gguf", tensor, at, data)
    run = _decompose_in_a_child(model=str(bad))
    assert run.returncode == 1, run.stderr[-2000:]  # was -6 (SIGABRT in the grammar sampler), or a silent answer
    assert f"tensor {tensor} holds NaN or Inf weights" in run.stderr
    assert "download or export it again" in run.stderr


def test_adapter_with_nan_weights_is_a_clear_error_not_an_abort(tmp_path):
    adapter = write_lora(tmp_path / "nan-lora.gguf", b_scale=math.nan)
    run = _decompose_in_a_child(model=SMALL, lora_path=str(adapter))
    assert run.returncode == 1, run.stderr[-2000:]  # was -6
    assert "nan-lora.gguf: tensor blk.0.attn_q.weight.lora_b holds NaN or Inf weights" in run.stderr


def test_finite_weights_that_overflow_are_a_clear_error_not_an_abort(smollm2_path, tmp_path):
    """Every Q4_1 scale of three layers at 6e4: finite, so the file check passes, but the scores come out NaN."""
    import numpy as np

    blob = bytearray(smollm2_path.read_bytes())
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_up.weight"):
        offset, size = _tensor(smollm2_path, name)
        blocks = np.frombuffer(blob, np.uint8, size, offset).reshape(-1, 20).copy()
        blocks[:, 0:2] = np.frombuffer(np.float16(60000).tobytes(), np.uint8)
        blob[offset : offset + size] = blocks.tobytes()
    (tmp_path / "huge.gguf").write_bytes(bytes(blob))
    run = _decompose_in_a_child(model=str(tmp_path / "huge.gguf"))
    assert run.returncode == 1, run.stderr[-2000:]  # was -6: SIGABRT in the grammar sampler
    assert "NonFiniteLogitsError: " in run.stderr and "computed NaN or Inf scores" in run.stderr


def test_garbage_weights_are_refused_in_process(smollm2_path, tmp_path):
    from langchain_dod.gguf_file import GGUFError, check_finite

    offset, size = _tensor(smollm2_path, "blk.5.ffn_down.weight")
    blob = bytearray(smollm2_path.read_bytes())
    blob[offset : offset + size] = os.urandom(size)  # random bytes: some block scales are NaN or Inf
    (tmp_path / "garbage.gguf").write_bytes(bytes(blob))
    with pytest.raises(GGUFError, match="tensor blk.5.ffn_down.weight holds NaN or Inf"):
        ChatGGUF(model=str(tmp_path / "garbage.gguf")).load()
    check_finite(smollm2_path)  # the real model passes


def test_float_field_table_matches_gguf_py_dequantize():
    """Every float field of each block layout, found by writing a NaN at each offset of a zero block."""
    import warnings

    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    from langchain_dod.gguf_file import FLOAT_FIELDS

    for name, fields in FLOAT_FIELDS.items():
        qtype = GGMLQuantizationType[name]
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if block_size == 1 or qtype.name == "Q8_K":  # plain floats; gguf-py cannot dequantise Q8_K
            continue
        found = []
        for at in range(type_size - 1):
            block = np.zeros(type_size, np.uint8)
            block[at : at + 2] = np.frombuffer(NAN_F16, np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                if not np.isfinite(dequantize(block, qtype)).all():
                    found.append(at)
        assert found == [at for at, _ in fields], qtype.name


# -- 11. a stage that never returns: chain-level time limits ---------------------------------------------------

HANG = 3600.0  # "never" for a test


def _plan(seconds: float = 0.0):
    """A decomposer stand-in that takes ``seconds`` and plans one sub-question (the model is not under test)."""
    import time

    from langchain_core.runnables import RunnableLambda

    return RunnableLambda(lambda _: time.sleep(seconds) or ["How many pens are there?"], name="plan")


def _run_path(chain, path: str):
    """One question through the chain by ``path``; batch paths return their single result or raise it."""
    import asyncio

    async def astream():
        return [chunk async for chunk in chain.astream(PENS)]

    runs = {
        "invoke": lambda: chain.invoke(PENS),
        "stream": lambda: list(chain.stream(PENS)),
        "ainvoke": lambda: asyncio.run(chain.ainvoke(PENS)),
        "astream": lambda: asyncio.run(astream()),
        "batch": lambda: chain.batch([PENS], return_exceptions=True)[0],
        "abatch": lambda: asyncio.run(chain.abatch([PENS], return_exceptions=True))[0],
    }
    result = runs[path]()
    if isinstance(result, BaseException):
        raise result
    return result


PATHS = ["invoke", "stream", "ainvoke", "astream", "batch", "abatch"]


@pytest.mark.parametrize("path", PATHS)
def test_solver_that_never_returns_times_out_on_every_path(path):
    import time

    from langchain_dod import DecomposeSolve
    from langchain_dod.chains import StageTimeoutError
    from tests.scripted import ScriptedSolver

    chain = DecomposeSolve(decomposer=_plan(), solver=ScriptedSolver(delay=HANG), solver_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(StageTimeoutError, match=r"The solver stage timed out after solver_timeout=0.3s\. Raise"):
        _run_path(chain, path)  # was: blocked for ever
    assert time.monotonic() - started < 5
    # the limits leave a call that finishes in time alone
    quick = DecomposeSolve(decomposer=_plan(), solver=ScriptedSolver(), timeout=30, solver_timeout=30)
    result = _run_path(quick, path)
    answer = "".join(c.get("answer", "") for c in result) if isinstance(result, list) else result["answer"]
    assert answer == "5"


@pytest.mark.parametrize("path", PATHS)
def test_total_timeout_names_the_stage_it_ran_out_in(path):
    from langchain_dod import DecomposeSolve, SingleStage
    from langchain_dod.chains import StageTimeoutError
    from tests.scripted import ScriptedSolver

    slow_plan = DecomposeSolve(decomposer=_plan(0.3), solver=ScriptedSolver(delay=HANG), timeout=0.8)
    with pytest.raises(StageTimeoutError, match=r"The chain timed out after timeout=0.8s, in the solver stage"):
        _run_path(slow_plan, path)
    stuck_plan = DecomposeSolve(decomposer=_plan(HANG), solver=ScriptedSolver(), timeout=0.3, solver_timeout=9)
    with pytest.raises(StageTimeoutError, match=r"timeout=0.3s, in the decomposer stage"):
        _run_path(stuck_plan, path)
    with pytest.raises(StageTimeoutError, match=r"The solver stage timed out after solver_timeout=0.3s"):
        _run_path(SingleStage(solver=ScriptedSolver(delay=HANG), solver_timeout=0.3), path)


def test_decomposer_timeout_falls_back_when_asked_but_the_total_does_not():
    from langchain_dod import DecomposeSolve
    from langchain_dod.chains import StageTimeoutError
    from tests.scripted import ScriptedSolver

    settings = {"decomposer": _plan(HANG), "solver": ScriptedSolver(), "fallback_to_single_stage": True}
    result = DecomposeSolve(**settings, decomposer_timeout=0.3).invoke(PENS)
    assert (result["mode"], result["answer"]) == ("fallback", "5")
    assert "decomposer_timeout=0.3s" in result["decomposer_error"]
    with pytest.raises(StageTimeoutError, match="in the decomposer stage"):
        DecomposeSolve(**settings, timeout=0.3).invoke(PENS)


@pytest.mark.parametrize("path", ["ainvoke", "astream"])
def test_model_with_its_own_async_client_is_cancelled_not_abandoned(path):
    """A model with native ``_agenerate``/``_astream`` (a network client) is awaited under ``wait_for``."""
    import asyncio

    from langchain_dod import DecomposeSolve
    from langchain_dod.chains import StageTimeoutError
    from tests.scripted import ScriptedSolver

    cancelled = []

    class AsyncHang(ScriptedSolver):
        async def _agenerate(self, *args, **kwargs):
            try:
                await asyncio.sleep(HANG)
            finally:
                cancelled.append("agenerate")

        async def _astream(self, *args, **kwargs):
            try:
                await asyncio.sleep(HANG)
            finally:
                cancelled.append("astream")
            yield  # pragma: no cover

    chain = DecomposeSolve(decomposer=_plan(), solver=AsyncHang(), solver_timeout=0.3)
    with pytest.raises(StageTimeoutError, match="solver_timeout=0.3s"):
        _run_path(chain, path)
    assert cancelled  # the coroutine was cancelled, no thread left behind


@pytest.mark.parametrize("setting", ["timeout", "decomposer_timeout", "solver_timeout"])
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf])
def test_time_limits_must_be_positive_seconds(setting, value):
    from pydantic import ValidationError

    from langchain_dod import DecomposeSolve
    from tests.scripted import ScriptedSolver

    with pytest.raises(ValidationError, match=setting):
        DecomposeSolve(decomposer=_plan(), solver=ScriptedSolver(), **{setting: value})


HANGING_CHAIN = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from langchain_core.runnables import RunnableLambda
from langchain_dod import DecomposeSolve
from tests.scripted import ScriptedSolver
chain = DecomposeSolve(decomposer=RunnableLambda(lambda _: ["How many?"]), solver=ScriptedSolver(delay=3600),
                       solver_timeout=0.3)
for run in (lambda: chain.invoke("How many pens?"), lambda: asyncio.run(chain.ainvoke("How many pens?")),
            lambda: list(chain.stream("How many pens?"))):
    try:
        run()
    except TimeoutError as err:
        print(type(err).__name__, flush=True)
"""


def test_process_exits_promptly_after_a_timeout():
    """asyncio.run waits for the loop's default executor and the interpreter joins pool threads at exit: a
    stage abandoned in either would keep the process alive for the solver's full hour."""
    import time

    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", HANGING_CHAIN.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=60,  # was: TimeoutExpired (no chain-level limit; wait_for left a thread that blocked exit)
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["StageTimeoutError"] * 3
    assert time.monotonic() - started < 30


# -- 12. dod eval run: wall time survives a kill ---------------------------------------------------------------

SLOW_EVAL = """
import sys, time
import langchain_dod.evaluation.runner as runner
from langchain_dod.chat_models import ChatGGUF
from langchain_dod.cli import main

runner.HEARTBEAT_SECONDS = 0.25
generate = ChatGGUF._generate


def slow(self, *args, **kwargs):  # a slow item, so that the kill lands while one is in flight
    result = generate(self, *args, **kwargs)
    time.sleep(float(sys.argv[1]))
    return result


ChatGGUF._generate = slow
sys.exit(main(sys.argv[2:]))
"""


def test_eval_meta_keeps_the_wall_time_of_a_killed_session(tmp_path):
    import signal
    import time

    out = tmp_path / "eval"
    data = Path(__file__).parent / "fixtures" / "eval" / "gsm8k_mini.jsonl"
    argv = ["eval", "run", "--data", str(data), "--out", str(out), "--single-stage", "cot", "--no-progress"]
    argv += ["--solver", f"llamacpp:{SMALL}", "--max-tokens", "32", "--n-threads", "1", "--label", "k"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVAL, "4", *argv], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        meta_path, first = None, None
        while time.monotonic() < deadline and proc.poll() is None:
            metas = list((out / "runs").glob("*.meta.json")) if (out / "runs").is_dir() else []
            if metas:
                meta_path = metas[0]
                meta = json.loads(meta_path.read_text())
                if meta["segments"] and meta["segments"][0]["items"] >= 1:
                    first = (time.monotonic(), meta["wall_seconds"])
                    break
            time.sleep(0.05)
        assert first is not None and proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        time.sleep(2.5)  # mid second item (each takes over 4 s)
        proc.send_signal(signal.SIGKILL)
        lived = time.monotonic() - first[0]
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = json.loads(meta_path.read_text())
    assert killed["segments"][0]["items"] == 1
    # was: the 2.5 s of the item in flight were lost (the segment grew only when an item finished)
    assert killed["wall_seconds"] - first[1] >= lived - 1.0, (killed, lived)
    assert killed["wall_seconds"] - first[1] <= lived + 0.5
    # the next session adds its own segment and finishes the rest
    fast = [sys.executable, "-c", SLOW_EVAL, "0", *argv]
    done = subprocess.run(fast, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    meta = json.loads(meta_path.read_text())
    assert [s["items"] for s in meta["segments"]] == [1, 4]
    assert meta["segments"][0]["seconds"] == killed["segments"][0]["seconds"]


# -- 13. an answer followed by its working is that answer, not the working's last number ---------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 31 pens (3 boxes of 12, minus 5).", 31),  # was "5"
        ("So the answer is 18 apples. Check: 3*6=18, 5 left", 18),  # was "5": a marker without its colon
    ],
)
def test_answer_marker_followed_by_working_gives_the_answer(text, number):
    from langchain_dod.evaluation.metrics import numbers_in
    from langchain_dod.parsing import extract_answer

    assert numbers_in(extract_answer(text)) == [number]
