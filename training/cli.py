"""The ``dod-train`` command line: one subcommand per stage, plus ``distill`` for all of them.

Every subcommand prints one summary line (``--json``: one JSON object) and exits 0; bad input prints
``error: ...`` (what is wrong and what to do) and exits 2; Ctrl-C exits 130 and keeps everything finished so
far (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.settings import add_flags, from_args

__all__ = ["build_parser", "main"]


def _cmd_generate(args: argparse.Namespace) -> Any:
    from training.data import DataConfig
    from training.generate import GenerateConfig, generate

    examples = from_args(DataConfig, args).load()
    return generate(examples, args.teacher, args.out, from_args(GenerateConfig, args), progress=not args.no_progress)


def _cmd_screen(args: argparse.Namespace) -> Any:
    from training.screen import ScreenConfig, screen

    config = from_args(ScreenConfig, args)
    return screen(args.decompositions, args.solver, args.out, config, progress=not args.no_progress)


def _cmd_build(args: argparse.Namespace) -> Any:
    from training.build import BuildConfig, build

    config = from_args(BuildConfig, args)
    return build(args.out, config, decompositions=args.decompositions, screened=args.screened)


def _cmd_sft(args: argparse.Namespace) -> Any:
    from training.sft import SFTConfig, sft

    target_modules = args.target_modules
    if target_modules is None or target_modules == ["all-linear"]:
        target_modules = "all-linear"
    report = sft(
        args.data,
        args.base,
        args.out,
        validation=args.validation,
        config=from_args(SFTConfig, args, target_modules=target_modules),
        resume=args.resume,
        progress=not args.no_progress,
    )
    report.log = []
    return report


def _cmd_export(args: argparse.Namespace) -> Any:
    from training.export import ExportConfig, export_and_verify, probe_messages
    from training.runs import read_training_info

    model = Path(args.model)
    info = read_training_info(model)
    base_gguf = args.base_gguf or info.get("base_gguf")
    probe = None
    if info.get("train_file") and Path(info["train_file"]).is_file():
        from training.store import read_jsonl

        probe = probe_messages(read_jsonl(info["train_file"]))
    config = from_args(ExportConfig, args)
    return export_and_verify(model, Path(args.out), config, probe, base_gguf, base=args.base)


def _cmd_distill(args: argparse.Namespace) -> Any:
    from training.distill import distill

    return distill(args.config, progress=not args.no_progress)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests); each stage's flags come from its settings dataclass."""
    from training.build import BuildConfig
    from training.data import DataConfig
    from training.export import ExportConfig
    from training.generate import GenerateConfig
    from training.screen import ScreenConfig
    from training.sft import SFTConfig

    parser = argparse.ArgumentParser(
        prog="dod-train",
        description="Distil a question decomposer: teacher data -> SD-T/SD-R -> fine-tune -> GGUF.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the report as one JSON object")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("generate", help="teacher decompositions (resumable, append-only JSONL)")
    add_flags(p, DataConfig, skip=DataConfig.SOCRATIC)
    p.add_argument(
        "--teacher",
        required=True,
        help="a SPEC as in `dod ask` (llamacpp:NAME|PATH, openai:MODEL, ...) or 'given' "
        "(the data's own sub-questions, e.g. GSM8K Socratic)",
    )
    p.add_argument("--out", required=True, help="output JSONL (appended to; rerun to resume)")
    add_flags(p, GenerateConfig)
    add_flags(p.add_argument_group("Socratic normalisation (format socratic)"), DataConfig, only=DataConfig.SOCRATIC)
    common(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("screen", help="SD-R: keep decompositions that lead the solver to the gold answer")
    p.add_argument("--decompositions", required=True)
    p.add_argument("--solver", required=True, help="solver SPEC")
    p.add_argument("--out", required=True)
    add_flags(p, ScreenConfig)
    common(p)
    p.set_defaults(func=_cmd_screen)

    p = sub.add_parser("build", help="SFT records (SD-T, SD-R, SE-T, SE-A) + train/validation split")
    p.add_argument("--decompositions")
    p.add_argument("--screened")
    p.add_argument("--out", required=True, help="output folder")
    add_flags(p, BuildConfig)
    common(p)
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("sft", help="fine-tune (LoRA or full) with the transformers Trainer")
    p.add_argument("--data", required=True, help="a build folder (train.jsonl + validation.jsonl) or a JSONL")
    p.add_argument("--validation")
    p.add_argument("--base", required=True, help="HF model folder, GGUF file or registry name")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in --out")
    add_flags(p.add_argument_group("fine-tuning settings"), SFTConfig)
    common(p)
    p.set_defaults(func=_cmd_sft)

    p = sub.add_parser("export", help="GGUF adapter or merged GGUF (+ quantised), then verify against transformers")
    p.add_argument("--model", required=True, help="sft's final folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--base", help="HF folder or GGUF of the base (default: the one recorded by sft)")
    p.add_argument("--base-gguf", help="GGUF base to verify the adapter on (default: the one sft started from)")
    add_flags(p, ExportConfig)
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
