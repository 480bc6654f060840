"""Stage 4: supervised fine-tuning with the transformers ``Trainer`` — LoRA (peft, default) or full.

The loss is on the assistant turn only: the prompt is rendered with the tokenizer's own chat template (the
one llama.cpp applies from the GGUF at inference) and its tokens are masked with -100. Checkpoints go to
``<out>/checkpoint-N``; ``resume=True`` continues from the last complete one (a run killed mid-save is
ignored). The result is ``<out>/final``: the adapter (or full model), the tokenizer and ``dod_training.json``
(base folder, settings, losses), which ``export`` reads. The ``Trainer`` runs on a GPU when one is present,
and ``accelerate launch`` / ``torchrun`` scale it to several (see ``training/README.md``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.basemodel import load_causal_lm, load_tokenizer, prepare_base
from training.errors import TrainingError
from training.runs import training_info_path
from training.settings import setting
from training.store import read_jsonl

__all__ = ["SFTConfig", "SFTReport", "encode_chat", "last_checkpoint", "load_sft_records", "sft"]


@dataclass
class SFTConfig:
    """Fine-tuning settings (CLI flags and the ``[sft]`` table of a distill config have the same names)."""

    method: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = setting(
        "all-linear", csv=True, cli_default=None, help="comma-separated (default all-linear)"
    )
    learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 768
    warmup: float = 0.0
    """Linear warm-up: a float in [0, 1) is a share of all steps, a larger number is a step count."""
    weight_decay: float = 0.0
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 2
    eval_before: bool = True
    keep_best: bool = False
    """Make ``final`` the checkpoint with the lowest validation loss, not the last one: the number of epochs is then
    chosen on validation (needs a validation set, and ``save_steps`` a multiple of ``eval_steps``)."""
    early_stopping: int = 0
    """With ``keep_best``: stop after this many evaluations in a row without a lower validation loss (0: train all
    the epochs). The epochs after the best one only cost CPU: ``final`` is the best checkpoint either way."""
    kinds: list[str] | None = setting(None, csv=True, help="comma-separated (default None)")
    threads: int | None = setting(None, type=int, help="torch CPU threads (default: all cores)")
    """torch CPU threads (``None``: torch's default, all cores). On a CPU shared with other jobs, 1 is often
    several times faster than 2 (threads that wait for a busy core stall each other)."""

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise TrainingError(f"method must be 'lora' or 'full', got {self.method!r}.")
        for name in (
            "lora_r",
            "lora_alpha",
            "batch_size",
            "grad_accum",
            "max_length",
            "save_steps",
            "eval_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise TrainingError("Give a positive epochs or max_steps.")
        if self.keep_best and self.save_steps % self.eval_steps:
            raise TrainingError(
                f"keep_best compares checkpoints by validation loss: save_steps ({self.save_steps}) must be a "
                f"multiple of eval_steps ({self.eval_steps})."
            )
        if self.early_stopping < 0 or (self.early_stopping and not self.keep_best):
            raise TrainingError(
                f"early_stopping={self.early_stopping}: give a number of evaluations >= 0, and set keep_best with it "
                "(training stops at the best validation checkpoint, which only keep_best makes final)."
            )

    @classmethod
    def names(cls) -> set[str]:
        """The accepted setting names."""
        return {f.name for f in fields(cls)}


@dataclass
class SFTReport:
    """Where the result is and how the losses went."""

    final: str
    method: str
    steps: int
    train_records: int
    validation_records: int
    dropped_too_long: int
    eval_loss_before: float | None
    eval_loss_after: float | None
    train_loss_first: float | None
    train_loss_last: float | None
    resumed_from: str | None = None
    best_checkpoint: str | None = None
    """With ``keep_best``: the checkpoint ``final`` was taken from (lowest validation loss)."""
    log: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the CLI."""

        def fmt(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.4f}"

        resumed = f", resumed from {self.resumed_from}" if self.resumed_from else ""
        if self.best_checkpoint:
            resumed += f", final = best validation checkpoint {self.best_checkpoint}"
        return (
            f"{self.method} fine-tune: {self.steps} steps on {self.train_records} records{resumed}; validation loss "
            f"{fmt(self.eval_loss_before)} -> {fmt(self.eval_loss_after)}, train loss {fmt(self.train_loss_first)} -> "
            f"{fmt(self.train_loss_last)}; saved to {self.final}"
        )


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> dict[str, list[int]] | None:
    """Token ids and labels for one chat whose last message is the assistant's; prompt tokens get -100.

    Returns ``None`` when the chat is longer than ``max_length`` (truncating would cut the target).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise TrainingError("An SFT record's messages must end with the assistant's reply.")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise TrainingError("The chat template renders the prompt differently inside the full chat; cannot mask it.")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = prompt_ids + reply_ids
    if len(ids) > max_length:
        return None
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [-100] * len(prompt_ids) + reply_ids,
    }


def load_sft_records(path: str | Path, kinds: list[str] | None = None) -> list[dict[str, Any]]:
    """Records from a ``build`` JSONL, optionally only some kinds."""
    records = read_jsonl(path)
    for number, record in enumerate(records, 1):
        messages = record.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages)
        ):
            raise TrainingError(
                f"{path} record {number} has no valid 'messages' list; build it with `dod-train build`."
            )
    if kinds:
        records = [r for r in records if r.get("kind") in kinds]
    return records


def last_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint folder that was completely written (state, weights and optimizer present)."""
    best: tuple[int, Path] | None = None
    for folder in out_dir.glob("checkpoint-*"):
        try:
            step = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        complete = (
            (folder / "trainer_state.json").is_file()
            and (folder / "optimizer.pt").is_file()
            and any(folder.glob("*.safetensors"))
        )
        if complete:
            try:
                json.loads((folder / "trainer_state.json").read_text())
            except json.JSONDecodeError:
                continue
            if best is None or step > best[0]:
                best = (step, folder)
    return best[1] if best else None


def _data_paths(data: str | Path, validation: str | Path | None) -> tuple[Path, Path | None]:
    data = Path(data)
    if data.is_dir():
        train = data / "train.jsonl"
        if validation is None and (data / "validation.jsonl").is_file():
            validation = data / "validation.jsonl"
        data = train
    return data, Path(validation) if validation else None


def sft(
    data: str | Path,
    base: str | Path,
    out: str | Path,
    *,
    validation: str | Path | None = None,
    config: SFTConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[Any] | None = None,
) -> SFTReport:
    """Fine-tune ``base`` (HF folder, GGUF path or registry name) on ``data`` (a build folder or train JSONL).

    ``callbacks`` are extra ``transformers.TrainerCallback`` objects (the benchmark times steps with one).
    """
    config = config or SFTConfig()
    out = Path(out)
    train_path, validation_path = _data_paths(data, validation)
    train_records, val_records = _records(train_path, validation_path, config.kinds)
    if config.keep_best and not val_records:
        raise TrainingError("keep_best chooses the checkpoint by validation loss; give validation records.")
    checkpoint = _checkpoint_to_resume(out, resume)
    base_dir = prepare_base(base)
    tokenizer, train_set, val_set, dropped = _tokenized(base_dir, train_records, val_records, config)
    trainer = _trainer(base_dir, out, config, tokenizer, train_set, val_set, progress, callbacks)
    eval_before = (
        _eval_before(trainer, out, resuming=checkpoint is not None) if val_set and config.eval_before else None
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    eval_after = trainer.evaluate()["eval_loss"] if val_set else None
    final = _save_final(trainer, tokenizer, out)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e and math.isfinite(e["loss"])]
    report = SFTReport(
        final=str(final),
        method=config.method,
        steps=trainer.state.global_step,
        train_records=len(train_set),
        validation_records=len(val_set),
        dropped_too_long=dropped,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
        train_loss_first=losses[0] if losses else None,
        train_loss_last=losses[-1] if losses else None,
        resumed_from=checkpoint.name if checkpoint else None,
        best_checkpoint=Path(trainer.state.best_model_checkpoint).name if config.keep_best else None,
        log=list(trainer.state.log_history),
    )
    _write_training_info(final, base_dir, config, report, train_path, validation_path)
    os.sync()
    return report


def _records(
    train_path: Path, validation_path: Path | None, kinds: list[str] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training and validation records of the kinds asked for; no training record is an error."""
    train_records = load_sft_records(train_path, kinds)
    val_records = load_sft_records(validation_path, kinds) if validation_path else []
    if not train_records:
        raise TrainingError(f"{train_path} holds no training records{' of kinds ' + str(kinds) if kinds else ''}.")
    return train_records, val_records


def _tokenized(
    base_dir: Path, train_records: list[dict[str, Any]], val_records: list[dict[str, Any]], config: SFTConfig
) -> tuple[Any, list[dict[str, list[int]]], list[dict[str, list[int]]], int]:
    """``(tokenizer, train set, validation set, records dropped as too long)``, after seeding torch."""
    import torch
    from transformers import set_seed

    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    tokenizer = load_tokenizer(base_dir)
    train_set, dropped = _encode(tokenizer, train_records, config.max_length)
    val_set, val_dropped = _encode(tokenizer, val_records, config.max_length)
    if not train_set:
        raise TrainingError(f"Every training record is longer than max_length={config.max_length}; raise it.")
    return tokenizer, train_set, val_set, dropped + val_dropped


def _trainer(
    base_dir: Path,
    out: Path,
    config: SFTConfig,
    tokenizer: Any,
    train_set: list[dict[str, list[int]]],
    val_set: list[dict[str, list[int]]],
    progress: bool,
    callbacks: list[Any] | None,
) -> Any:
    """The transformers ``Trainer`` over the model (LoRA-wrapped or full) and the tokenised records."""
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, Trainer

    if config.early_stopping and val_set:
        stopper = EarlyStoppingCallback(early_stopping_patience=config.early_stopping)
        callbacks = [*(callbacks or []), stopper, _stateful_entry(stopper)]
    return Trainer(
        model=_model(base_dir, config),
        args=_training_arguments(out, config, evaluate=bool(val_set), progress=progress),
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def _stateful_entry(callback: Any) -> Any:
    """A callback that gives ``callback`` an entry in a resumed run's ``stateful_callbacks``.

    transformers keeps the state of callbacks like ``EarlyStoppingCallback`` in each checkpoint, and its checkpoint
    saving fails (``KeyError``) in a run resumed from a checkpoint that was made without that callback (early
    stopping switched on for a run already under way). The state is loaded before ``on_train_begin``.
    """
    from transformers import TrainerCallback

    class _Entry(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            state.stateful_callbacks.setdefault(type(callback).__name__, callback.state())

    return _Entry()


def _save_final(trainer: Any, tokenizer: Any, out: Path) -> Path:
    """Save the model (adapter or full) and the tokenizer to ``out/final``."""
    final = out / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    (final / "training_args.bin").unlink(missing_ok=True)  # a pickle; settings are in the training info
    return final


def _checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The checkpoint to continue from; checkpoints without ``resume`` are an error (they would be overwritten)."""
    checkpoint = last_checkpoint(out) if out.exists() else None
    if checkpoint is not None and not resume:
        raise TrainingError(
            f"{out} already holds checkpoints (latest {checkpoint.name}). Pass --resume to continue that run, or "
            "choose another output folder."
        )
    return checkpoint


def _encode(tokenizer: Any, records: list[dict[str, Any]], max_length: int) -> tuple[list[dict[str, list[int]]], int]:
    """The records' token ids and labels, and how many were dropped as longer than ``max_length``."""
    encoded = [encode_chat(tokenizer, r["messages"], max_length) for r in records]
    return [e for e in encoded if e is not None], sum(e is None for e in encoded)


def _model(base_dir: Path, config: SFTConfig) -> Any:
    """The base model, wrapped in a LoRA (peft) unless the method is a full fine-tune."""
    model = load_causal_lm(base_dir)
    if config.method != "lora":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _training_arguments(out: Path, config: SFTConfig, *, evaluate: bool, progress: bool) -> Any:
    """The ``Trainer``'s settings from ``config``: checkpoints in ``out``, bf16 where the GPU has it."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        report_to="none",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        save_only_model=False,
        load_best_model_at_end=config.keep_best and evaluate,  # final = the lowest validation loss
        metric_for_best_model="eval_loss",
        greater_is_better=False,
    )


def _eval_before(trainer: Any, out: Path, *, resuming: bool) -> float | None:
    """The validation loss before training; a resumed run reads the one its first session measured."""
    path = out / "dod_eval_before.json"
    if resuming and path.is_file():
        return json.loads(path.read_text()).get("eval_loss")
    loss = trainer.evaluate()["eval_loss"]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"eval_loss": loss}) + "\n")
    return loss


def _write_training_info(
    final: Path,
    base_dir: Path,
    config: SFTConfig,
    report: SFTReport,
    train_path: Path,
    validation_path: Path | None,
) -> None:
    """What ``export`` and ``distill`` read back: the base (and the GGUF it came from), settings, losses, data."""
    source = base_dir / "dod_source.json"
    base_info = json.loads(source.read_text()) if source.is_file() else {}
    info = {
        "base": str(base_dir),
        "base_gguf": base_info.get("gguf"),
        "config": asdict(config),
        "report": asdict(report),
        "train_file": str(train_path),
        "validation_file": str(validation_path) if validation_path else None,
    }
    training_info_path(final).write_text(json.dumps(info, indent=2) + "\n")
