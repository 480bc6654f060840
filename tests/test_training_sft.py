"""A tiny real distillation: SmolLM2-135M from its GGUF, 16 examples, a few LoRA steps, exported to a GGUF
adapter that llama.cpp loads; plus the merged export, resume after SIGKILL mid-sft, and bad inputs.

Expensive shared artefacts are made once: the HF folder dequantised from the GGUF and llama.cpp's
converters live in the user cache (~/.cache/langchain-dod/), the tiny run in a module fixture.
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.errors import TrainingError
from training.store import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["Tom", "Ana", "Raj", "Mia", "Leo", "Zoe", "Sam", "Ivy"]
ITEMS = ["apples", "pens", "cards", "shells"]


def _socratic_file(path: Path) -> Path:
    """16 templated GSM8K-Socratic-style problems (two useful steps plus a restatement that gets dropped)."""
    rows = []
    for i in range(16):
        name, item = NAMES[i % 8], ITEMS[i % 4]
        a, b, c, d = 2 + i % 5, 3 + i % 4, 1 + i % 3, 2 + i % 2
        bags, total = a * b, a * b + c
        rows.append(
            {
                "question": f"{name} buys {a} bags of {item} with {b} {item} in each bag and {c} loose {item}. "
                f"{name} uses {d} of them. How many {item} are left?",
                "answer": f"How many {item} are in the bags? ** {a} * {b} = <<{a}*{b}={bags}>>{bags}\n"
                f"How many {item} does {name} have in total? ** {bags} + {c} = <<{bags}+{c}={total}>>{total}\n"
                f"How many {item} are left? ** {total} - {d} = <<{total}-{d}={total - d}>>{total - d}\n"
                f"#### {total - d}",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def hf_base(smollm2_path):
    """SmolLM2-135M dequantised from its GGUF into a plain HF folder (cached across test runs)."""
    from training.basemodel import prepare_base

    return prepare_base(smollm2_path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, hf_base, smollm2_path):
    """`distill` end to end: human Socratic teacher -> SD-T -> 6 LoRA steps -> GGUF adapter, verified.

    One torch thread: `make test` shares this 2-core CPU, where two threads run several times slower.
    """
    from training.distill import distill

    root = tmp_path_factory.mktemp("distill")
    config = {
        "out_dir": str(root / "run"),
        "seed": 0,
        "data": {"source": str(_socratic_file(root / "socratic.jsonl")), "format": "socratic"},
        "generate": {"teacher": "human"},
        "build": {"kinds": ["SD-T"], "val_fraction": 0.125},
        "sft": {
            "base": str(smollm2_path),
            "lora_r": 8,
            "lora_alpha": 16,
            "learning_rate": 3e-3,
            "max_steps": 6,
            "batch_size": 2,
            "logging_steps": 1,
            "eval_steps": 6,
            "save_steps": 6,
            "threads": 1,
        },
        "export": {"kind": "adapter", "probe_tokens": 8, "min_match": 4},
    }
    reports = distill(config, progress=False)
    return root / "run", reports


def test_tiny_lora_run_lowers_loss(tiny_run):
    _, reports = tiny_run
    assert reports["generate"]["written"] == 16
    assert (reports["build"]["train"], reports["build"]["validation"]) == (14, 2)
    sft = reports["sft"]
    assert sft["steps"] == 6 and sft["method"] == "lora"
    assert sft["eval_loss_after"] < sft["eval_loss_before"]
    assert sft["train_loss_last"] < sft["train_loss_first"]


def test_adapter_gguf_loads_matches_transformers_and_moves_output_to_the_format(tiny_run, smollm2_path):
    from langchain_dod.chat_models import ChatGGUF
    from langchain_dod.gguf_file import inspect_gguf

    run, reports = tiny_run
    adapter = Path(reports["export"]["adapter"])
    info = inspect_gguf(adapter)
    assert info.file_type == "adapter" and info.architecture == "llama"
    verify = reports["export"]["verify"]
    assert verify["ok"] and verify["matched_tokens"] >= 4, verify  # llama.cpp agrees with transformers

    record = read_jsonl(run / "data" / "train.jsonl")[0]
    prompt, target = record["messages"][:-1], record["messages"][-1]["content"]
    base = ChatGGUF(model=str(smollm2_path), max_tokens=24, n_ctx=1024).invoke(prompt).content
    tuned = ChatGGUF(model=str(smollm2_path), lora_path=str(adapter), max_tokens=24, n_ctx=1024).invoke(prompt).content

    def closeness(text: str) -> float:
        return difflib.SequenceMatcher(None, text, target[: len(text)]).ratio()

    assert closeness(tuned) > closeness(base), (base, tuned, target)
    assert '"subquestions"' in tuned and '"subquestions"' not in base


def test_merged_export_to_f16_and_q8_0(tiny_run, tmp_path):
    from training.export import export_merged, verify_gguf

    run, _ = tiny_run
    outputs = export_merged(run / "sft" / "final", tmp_path, quantizations=["Q8_0"])
    prompt = read_jsonl(run / "data" / "validation.jsonl")[0]["messages"][:-1]
    strict = verify_gguf(outputs["f16"], outputs["hf"], messages=prompt, n_tokens=8)
    assert strict.ok and strict.matched_tokens >= 4
    q8 = verify_gguf(outputs["Q8_0"], outputs["hf"], messages=prompt, n_tokens=8, strict=False)
    assert q8.gguf_text  # loads and decodes
    assert outputs["Q8_0"].stat().st_size < outputs["f16"].stat().st_size


def test_export_refuses_a_wrong_base(tiny_run, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.export import export_adapter

    run, _ = tiny_run
    small = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=30,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(small).save_pretrained(tmp_path / "other", safe_serialization=True)
    with pytest.raises(TrainingError, match="does not fit the base .* Wrong base"):
        export_adapter(run / "sft" / "final", tmp_path / "a.gguf", base=tmp_path / "other")
    with pytest.raises(TrainingError, match="not a LoRA adapter folder"):
        export_adapter(tmp_path / "other", tmp_path / "b.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_sft_bad_inputs(tmp_path, hf_base):
    from training.sft import SFTConfig, sft

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "kind": "SD-T"}) + "\n")
    with pytest.raises(TrainingError, match="no valid 'messages' list"):
        sft(bad, hf_base, tmp_path / "o")
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps(
            {
                "id": "x",
                "kind": "SD-T",
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            }
        )
        + "\n"
    )
    with pytest.raises(TrainingError, match="holds no training records of kinds"):
        sft(good, hf_base, tmp_path / "o", config=SFTConfig(kinds=["SD-R"]))
    with pytest.raises(TrainingError, match="method must be"):
        SFTConfig(method="qlora")
    with pytest.raises(TrainingError, match="is a folder but not a transformers model"):
        sft(good, tmp_path, tmp_path / "o")


def test_sft_resumes_after_sigkill(tmp_path, hf_base):
    """Real `dod-train sft` subprocess, SIGKILLed after its first checkpoint, then resumed to the end."""
    from langchain_dod.prompts import decomposer_messages, decomposition_target
    from training.sft import last_checkpoint

    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{i}",
                    "kind": "SD-T",
                    "messages": [
                        *decomposer_messages(
                            f"Sara has {i + 2} cats. How many cats does she have after buying {i} more?"
                        ),
                        {
                            "role": "assistant",
                            "content": decomposition_target(["How many cats does Sara buy?"]),
                        },
                    ],
                }
            )
            + "\n"
            for i in range(6)
        )
    )
    out = tmp_path / "sft"
    command = [
        sys.executable,
        "-m",
        "training.cli",
        "sft",
        "--data",
        str(data),
        "--base",
        str(hf_base),
        "--out",
        str(out),
        "--max-steps",
        "4",
        "--save-steps",
        "1",
        "--batch-size",
        "1",
        "--lora-r",
        "4",
        "--save-total-limit",
        "3",
        "--threads",
        "1",
        "--no-progress",
        "--json",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None and last_checkpoint(out) is None:
        time.sleep(0.1)
    assert proc.poll() is None, f"sft ended before it could be killed: {proc.communicate()[1][-2000:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = last_checkpoint(out)
    assert killed_at is not None and not (out / "final").exists()

    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "Pass --resume" in refused.stderr

    done = subprocess.run([*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    step = int(killed_at.name.split("-")[1])
    assert report["resumed_from"] is not None and int(report["resumed_from"].split("-")[1]) >= step
    assert report["steps"] == 4
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert not (out / "final" / "training_args.bin").exists()  # no pickles in what we hand on


def test_keep_best_makes_final_the_lowest_validation_checkpoint(tmp_path, hf_base):
    """`keep_best`: final = the checkpoint with the lowest validation loss (epochs chosen on validation)."""
    from langchain_dod.prompts import decomposer_messages, decomposition_target
    from training.sft import SFTConfig, sft

    def rows(n: int, offset: int) -> str:
        return "".join(
            json.dumps(
                {
                    "id": f"r{offset + i}",
                    "kind": "SD-R",
                    "messages": [
                        *decomposer_messages(f"Sara has {offset + i} cats and buys {i} more. How many now?"),
                        {"role": "assistant", "content": decomposition_target([] if i % 2 else ["How many more?"])},
                    ],
                }
            )
            + "\n"
            for i in range(n)
        )

    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text(rows(6, 0))
    val.write_text(rows(2, 100))
    with pytest.raises(TrainingError, match="must be a multiple of eval_steps"):
        SFTConfig(keep_best=True, eval_steps=2, save_steps=3)
    with pytest.raises(TrainingError, match="give validation records"):
        sft(train, hf_base, tmp_path / "none", config=SFTConfig(keep_best=True))
    # a learning rate far too high: validation loss does not fall monotonically over the 4 steps
    config = SFTConfig(
        keep_best=True, max_steps=4, eval_steps=1, save_steps=1, batch_size=2, lora_r=4, learning_rate=0.3, threads=1
    )
    report = sft(train, hf_base, tmp_path / "o", validation=val, config=config, progress=False)
    evals = {e["step"]: e["eval_loss"] for e in report.log if "eval_loss" in e and "step" in e}
    best_step = min(evals, key=lambda s: evals[s])
    assert best_step < 4, evals  # the case that matters: the last checkpoint is not the best one
    assert report.best_checkpoint == f"checkpoint-{best_step}"
    assert report.eval_loss_after == pytest.approx(evals[best_step], rel=1e-4)
    info = json.loads((Path(report.final) / "dod_training.json").read_text())
    assert info["report"]["best_checkpoint"] == report.best_checkpoint

    # early stopping: the same run stops one evaluation after the validation loss first fails to fall
    with pytest.raises(TrainingError, match="set keep_best with it"):
        SFTConfig(early_stopping=2)
    trained = {s: v for s, v in evals.items() if s >= 1}  # step 0 is the loss before training, not a checkpoint
    first_rise = next(s for s in sorted(trained) if s > 1 and trained[s] >= min(trained[t] for t in trained if t < s))
    stopped = sft(
        train,
        hf_base,
        tmp_path / "e",
        validation=val,
        progress=False,
        config=SFTConfig(**{**config.__dict__, "early_stopping": 1}),
    )
    assert stopped.steps == first_rise < 4, (evals, stopped.steps)
    best_before = min((s for s in trained if s < first_rise), key=trained.__getitem__)
    assert stopped.best_checkpoint == f"checkpoint-{best_before}"
    # early stopping switched on for a run under way: the resumed run saves its checkpoints (transformers alone
    # fails with KeyError: the checkpoint it resumes from has no entry for the callback's state)
    resumed = sft(
        train,
        hf_base,
        tmp_path / "o",
        validation=val,
        progress=False,
        resume=True,
        config=SFTConfig(**{**config.__dict__, "max_steps": 5, "early_stopping": 9}),
    )
    assert resumed.steps == 5 and resumed.resumed_from == "checkpoint-4"
