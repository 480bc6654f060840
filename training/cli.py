"""The ``dod-train`` command line: one subcommand per stage, plus ``distill`` for all of them.

Every subcommand prints one summary line (``--json``: one JSON object) and exits 0; bad input prints
``error: ...`` (what is wrong and what to do) and exits 2; Ctrl-C exits 130 and keeps everything finished so
far (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_socratic(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Socratic normalisation (format socratic)")
    g.add_argument("--cap", type=int, default=3, help="keep at most this many sub-questions (default 3)")
    g.add_argument(
        "--overflow",
        choices=("first", "ends", "skip"),
        default="first",
        help="more than --cap: keep the first ones, the first cap-1 and the last, or skip the example",
    )
    g.add_argument(
        "--keep-restatement",
        action="store_true",
        help="keep a final sub-question that restates the main question (dropped by default)",
    )
    g.add_argument("--restatement-threshold", type=float, default=0.7)


def _cmd_generate(args: argparse.Namespace) -> Any:
    from training.data import load_examples
    from training.generate import generate
    from training.socratic import SocraticOptions

    socratic = SocraticOptions(
        cap=args.cap,
        overflow=args.overflow,
        drop_restatement=not args.keep_restatement,
        restatement_threshold=args.restatement_threshold,
    )
    examples = load_examples(
        args.data,
        args.format,
        limit=args.limit,
        offset=args.offset,
        socratic=socratic,
        exclude=args.exclude,
        step_style=args.step_style,
    )
    return generate(
        examples,
        args.teacher,
        args.out,
        profile=args.profile,
        max_subquestions=args.max_subquestions,
        max_concurrency=args.max_concurrency,
        retries=args.retries,
        backoff=args.backoff,
        temperature=args.temperature,
        seed=args.seed,
        max_tokens=args.max_tokens,
        price_in=args.price_in,
        price_out=args.price_out,
        progress=not args.no_progress,
    )


def _cmd_screen(args: argparse.Namespace) -> Any:
    from training.screen import screen

    return screen(
        args.decompositions,
        args.solver,
        args.out,
        second_teacher=args.second_teacher,
        second_temperature=args.second_temperature,
        skip=args.skip,
        max_tokens=args.max_tokens,
        max_concurrency=args.max_concurrency,
        retries=args.retries,
        backoff=args.backoff,
        progress=not args.no_progress,
    )


def _cmd_build(args: argparse.Namespace) -> Any:
    from training.build import build

    return build(
        args.out,
        kinds=args.kinds,
        decompositions=args.decompositions,
        screened=args.screened,
        val_fraction=args.val_fraction,
        seed=args.seed,
        drop_empty=args.drop_empty,
    )


def _sft_config_args(p: argparse.ArgumentParser) -> None:
    from training.sft import SFTConfig

    g = p.add_argument_group("fine-tuning settings")
    for f in fields(SFTConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if f.name in ("target_modules", "kinds"):
            g.add_argument(flag, type=_csv, default=None, help=f"comma-separated (default {default})")
        elif f.name == "threads":
            g.add_argument(flag, type=int, default=None, help="torch CPU threads (default: all cores)")
        elif isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            g.add_argument(flag, type=type(default), default=default, help=f"default {default}")


def _cmd_sft(args: argparse.Namespace) -> Any:
    from training.sft import SFTConfig, sft

    values = {f.name: getattr(args, f.name) for f in fields(SFTConfig)}
    if values["target_modules"] is None:
        values["target_modules"] = "all-linear"
    elif values["target_modules"] == ["all-linear"]:
        values["target_modules"] = "all-linear"
    report = sft(
        args.data,
        args.base,
        args.out,
        validation=args.validation,
        config=SFTConfig(**values),
        resume=args.resume,
        progress=not args.no_progress,
    )
    report.log = []
    return report


def _cmd_export(args: argparse.Namespace) -> Any:
    from training.export import export_and_verify, probe_messages
    from training.runs import read_training_info

    model = Path(args.model)
    info = read_training_info(model)
    base_gguf = args.base_gguf or info.get("base_gguf")
    probe = None
    if info.get("train_file") and Path(info["train_file"]).is_file():
        from training.store import read_jsonl

        probe = probe_messages(read_jsonl(info["train_file"]))
    settings = {
        "kind": args.kind,
        "outtype": args.outtype,
        "quantize": args.quantize,
        "verify": not args.no_verify,
        "probe_tokens": args.probe_tokens,
        "min_match": args.min_match,
    }
    return export_and_verify(model, Path(args.out), settings, probe, base_gguf, base=args.base)


def _cmd_distill(args: argparse.Namespace) -> Any:
    from training.distill import distill

    return distill(args.config, progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="dod-train",
        description="Distil a question decomposer: teacher data -> SD-T/SD-R -> fine-tune -> GGUF.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the report as one JSON object")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("generate", help="teacher decompositions (resumable, append-only JSONL)")
    p.add_argument(
        "--data",
        required=True,
        help="GSM8K/Socratic/generic JSONL, Bamboogle CSV, DROP JSON, a MuSiQue folder or file, or hf:NAME",
    )
    p.add_argument("--format", choices=("gsm8k", "socratic", "jsonl", "bamboogle", "drop", "musique"))
    p.add_argument(
        "--step-style",
        default="keep",
        choices=("keep", "raw", "drop", "it", "that", "typed"),
        help="musique: how a step writes the answer of step N (default keep: '#N'; see training/MULTIHOP.md)",
    )
    p.add_argument("--limit", type=int, help="at most this many examples, counted after --exclude")
    p.add_argument(
        "--offset", type=int, default=0, help="skip the first N (after --exclude): a shard for a 2nd process"
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="FILE",
        help="skip the ids in an eval manifest.json or a JSONL of records with ids (repeatable): keep test items out",
    )
    p.add_argument(
        "--teacher",
        required=True,
        help="a SPEC as in `dod ask` (llamacpp:NAME|PATH, openai:MODEL, ...) or 'human' (Socratic steps)",
    )
    p.add_argument("--out", required=True, help="output JSONL (appended to; rerun to resume)")
    p.add_argument("--profile", default="math", choices=("math", "reading", "multihop"))
    p.add_argument("--max-subquestions", type=int, default=3)
    p.add_argument("--max-concurrency", type=int, default=1)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry (doubles)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--price-in", type=float, help="$ per 1K input tokens (default: paper's for hosted, 0 local)")
    p.add_argument("--price-out", type=float, help="$ per 1K output tokens")
    _add_socratic(p)
    common(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("screen", help="SD-R: keep decompositions that lead the solver to the gold answer")
    p.add_argument("--decompositions", required=True)
    p.add_argument("--solver", required=True, help="solver SPEC")
    p.add_argument("--out", required=True)
    p.add_argument("--second-teacher", help="teacher SPEC for a second sample of the failures")
    p.add_argument("--second-temperature", type=float, default=0.7)
    p.add_argument(
        "--skip",
        choices=("cot",),
        help="learned skip: keep an empty plan where no decomposition but the solver's own chain of thought won",
    )
    p.add_argument("--max-tokens", type=int, default=400, help="solver output limit (as dod eval run)")
    p.add_argument("--max-concurrency", type=int, default=1)
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--backoff", type=float, default=1.0)
    common(p)
    p.set_defaults(func=_cmd_screen)

    p = sub.add_parser("build", help="SFT records (SD-T, SD-R, SE-T, SE-A) + train/validation split")
    p.add_argument("--decompositions")
    p.add_argument("--screened")
    p.add_argument("--kinds", type=_csv, default=["SD-T"], help="comma-separated, default SD-T")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop-empty", action="store_true", help="drop decompositions with no sub-questions")
    common(p)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("sft", help="fine-tune (LoRA or full) with the transformers Trainer")
    p.add_argument("--data", required=True, help="a build folder (train.jsonl + validation.jsonl) or a JSONL")
    p.add_argument("--validation")
    p.add_argument("--base", required=True, help="HF model folder, GGUF file or registry name")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out")
    _sft_config_args(p)
    common(p)
    p.set_defaults(func=_cmd_sft)

    p = sub.add_parser("export", help="GGUF adapter or merged GGUF (+ quantised), then verify against transformers")
    p.add_argument("--model", required=True, help="sft's final folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", choices=("adapter", "merged"), default="adapter")
    p.add_argument("--base", help="HF folder or GGUF of the base (default: the one recorded by sft)")
    p.add_argument("--base-gguf", help="GGUF base to verify the adapter on (default: the one sft started from)")
    p.add_argument("--outtype", default="f16", choices=("f32", "f16", "bf16", "q8_0"))
    p.add_argument("--quantize", type=_csv, default=["Q8_0"], help="for merged: comma-separated, e.g. Q8_0,Q4_K_M")
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--probe-tokens", type=int, default=8)
    p.add_argument("--min-match", type=int, default=4)
    common(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("distill", help="all stages from one TOML/YAML config (resumable)")
    p.add_argument("config")
    common(p)
    p.set_defaults(func=_cmd_distill)
    return parser


def _print(result: Any, as_json: bool) -> None:
    data = asdict(result) if hasattr(result, "__dataclass_fields__") else result
    if as_json or not hasattr(result, "summary"):
        print(json.dumps(data, default=str))
    else:
        print(result.summary())


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dod-train``."""
    from training.errors import TrainingError

    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except TrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: everything finished so far is saved; rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130
    _print(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
