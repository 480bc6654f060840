"""The ``dod`` command line: ``dod decompose``, ``dod ask``, ``dod models`` (and ``dod eval``).

``--json`` prints exactly one JSON object per line. QUESTION ``-`` reads questions from stdin, one per
line, and answers one line each; a failing question prints an ``{"question": ..., "error": ...}`` line and
the exit status is 1 at the end, so one bad line never loses the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["EVAL_HELP", "build_parser", "int_in", "main"]

EVAL_HELP = "evaluate decomposer x solver pipelines (the paper's Table 1)"

EXAMPLE_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``; out of range is a usage error, never "unlimited"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            allowed = f"at least {low}" + (f" and at most {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {value}")
        return value

    return parse


def _questions(value: str) -> Iterator[tuple[str, str | None]]:
    """``(question, None)`` per question, or ``(readable text, error)`` for one that is not valid UTF-8.

    Python hands undecodable bytes over as lone surrogates, which fail much later ("surrogates not allowed") and
    would make the ``--json`` error line itself invalid UTF-8: decode strictly here instead.
    """
    if value != "-":
        yield _decoded(os.fsencode(value), "the question")
        return
    stdin = getattr(sys.stdin, "buffer", None)
    lines = stdin if stdin is not None else (line.encode("utf-8", "surrogateescape") for line in sys.stdin)
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield _decoded(line.rstrip(b"\r\n"), f"line {number} of stdin")


def _decoded(raw: bytes, where: str) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return raw.decode("utf-8", "replace"), (
            f"{where} is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); save the input as UTF-8."
        )


def _local(args: argparse.Namespace) -> dict[str, Any]:
    """``--[no-]merge-adapter`` and ``--threads`` as ``ChatGGUF`` settings; only those given (the rest: defaults)."""
    given = (("merge_lora", args.merge_adapter), ("n_threads", args.threads))
    return {name: value for name, value in given if value is not None}


def _decomposer(args: argparse.Namespace) -> Any:
    from langchain_core.language_models import BaseChatModel

    from langchain_dod.decomposer import Decomposer, default_decomposer_llm
    from langchain_dod.solvers import load_chat_model

    llm: BaseChatModel
    if args.decomposer is None:
        llm = default_decomposer_llm(profile=args.profile, **_local(args))
        if args.adapter:  # another adapter: merged only when asked (the default merge was measured for ours)
            llm = llm.model_copy(update={"lora_path": args.adapter, "merge_lora": bool(args.merge_adapter)})
    else:  # --decomposer is a SPEC or a bare GGUF name/path
        adapter = {"lora_path": args.adapter} if args.adapter else {}
        llm = load_chat_model(args.decomposer, allow_path=True, local_kwargs=_local(args), **adapter)
    return Decomposer(llm=llm, max_subquestions=args.max_subquestions, profile=args.profile)


def _decompose_fn(args: argparse.Namespace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What ``dod decompose`` calls per question: the decomposition's fields as a dict.

    The shipped default runs through :func:`langchain_dod.decomposition.read_gguf`, which gives what
    :class:`~langchain_dod.decomposer.Decomposer` gives without importing LangChain or pydantic: a cold ``dod
    decompose`` is import, load and one decode (issue 16). ``--decomposer`` (any SPEC) takes the LangChain path.
    """
    if args.decomposer is not None:
        decomposer = _decomposer(args)
        return lambda value: decomposer.invoke(value).model_dump()
    from dataclasses import asdict

    from langchain_dod.decomposition import default_decomposer_model, default_merge, read_gguf
    from langchain_dod.engine import llama_params

    model, adapter = default_decomposer_model(args.profile)
    merge = args.merge_adapter
    if merge is None:  # as default_decomposer_llm decides; another adapter only when asked
        merge = False if args.adapter else default_merge(args.profile, adapter)
    settings = {
        "max_subquestions": args.max_subquestions,
        "profile": args.profile,
        "merge_lora": merge,
        "params": llama_params(n_threads=args.threads),
    }
    return lambda value: asdict(read_gguf(value, model=model, lora_path=args.adapter or adapter, **settings))


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, ensure_ascii=False), flush=True)


def _run_each(args: argparse.Namespace, handle: Any) -> int:
    status = 0
    for question, bad in _questions(args.question):
        try:
            if bad:
                raise ValueError(bad)
            handle(question)
        except (ValueError, TypeError, RuntimeError, FileNotFoundError, ImportError) as err:
            status = 1
            if args.json:
                _print({"question": question, "error": f"{type(err).__name__}: {err}"})
            else:
                print(f"error: {err}", file=sys.stderr)
    return status


def cmd_decompose(args: argparse.Namespace) -> int:
    """Print the sub-questions for each question."""
    decompose = _decompose_fn(args)

    def handle(question: str) -> None:
        result = decompose({"question": question, "context": args.context})
        if args.json:
            _print({"question": question, **{k: v for k, v in result.items() if k != "raw"}})
        else:
            if not result["subquestions"]:
                print("(no decomposition needed)")
            for i, sub in enumerate(result["subquestions"], 1):
                print(f"{i}. {sub}")

    return _run_each(args, handle)


def cmd_ask(args: argparse.Namespace) -> int:
    """Decompose and solve (or solve single-stage) each question."""
    from langchain_dod.chains import DecomposeSolve, SingleStage
    from langchain_dod.solvers import load_chat_model

    # --max-tokens is documented for local solvers; a hosted one keeps its provider's default
    threads = {"n_threads": args.threads} if args.threads else {}
    solver = load_chat_model(args.solver, local_kwargs={"max_tokens": args.max_tokens, **threads})
    if args.single_stage:
        chain: Any = SingleStage(solver=solver, mode=args.mode, answer_format=args.answer_format)
    else:
        chain = DecomposeSolve(
            decomposer=_decomposer(args),
            solver=solver,
            fallback_to_single_stage=args.fallback,
            answer_format=args.answer_format,
        )

    def handle(question: str) -> None:
        value = {"question": question, "context": args.context}
        if args.stream and not args.json:
            for chunk in chain.stream(value):
                if "subquestions" in chunk:
                    for i, sub in enumerate(chunk["subquestions"], 1):
                        print(f"{i}. {sub}", flush=True)
                    print("---", flush=True)
                print(chunk.get("solution", ""), end="", flush=True)
                if "answer" in chunk:
                    print(f"\n\nanswer: {chunk['answer']}", flush=True)
            return
        result = chain.invoke(value)
        if args.json:
            _print(result)
            return
        for i, sub in enumerate(result["subquestions"], 1):
            print(f"{i}. {sub}")
        if result["subquestions"]:
            print("---")
        print(result["solution"].strip())
        print(f"\nanswer: {result['answer']}")

    return _run_each(args, handle)


def cmd_eval(args: argparse.Namespace) -> int:
    """``dod eval ...``: parse the arguments with the evaluation's own parser, then run its command."""
    from langchain_dod.evaluation.cli import register

    parser = argparse.ArgumentParser(prog="dod")
    register(parser.add_subparsers(dest="command", required=True))
    eval_args = parser.parse_args(["eval", *args.eval_args])
    return int(eval_args.func(eval_args) or 0)


def cmd_models(args: argparse.Namespace) -> int:
    """List the registry and where each model resolves, or download one (``--download NAME``)."""
    from langchain_dod.models import MODELS, ModelNotFoundError, resolve

    if args.download:
        print(resolve(args.download, allow_download=True))  # errors say what to do; main() prints them
        return 0
    for name, spec in MODELS.items():
        try:
            where = str(resolve(name, allow_download=False))  # listing must not start a 1 GB download
        except ModelNotFoundError:
            where = f"not installed ({spec.install}, or dod models --download {name})"
        print(f"{name}\t{spec.license}\t{where}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``dod`` argument parser (subcommands register themselves here)."""
    parser = argparse.ArgumentParser(prog="dod", description="Divide-or-Conquer: decompose with a tiny local model.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("question", help="the question, or - to read one question per line from stdin")
        p.add_argument("--context", default=None, help="a passage the question is about")
        p.add_argument("--decomposer", default=None, help="NAME|PATH of a GGUF, or a SPEC such as openai:gpt-4o-mini")
        p.add_argument("--adapter", default=None, help="GGUF LoRA adapter for the decomposer")
        p.add_argument(
            "--merge-adapter",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="load the decomposer's adapter merged into its base (merged once, cached; decodes faster, but the "
            "requantised weights can change its sub-questions). Default: merged for the shipped math adapter "
            "(measured: no loss of accuracy), at run time otherwise; DOD_DECOMPOSER_MERGE=0/1 sets the default",
        )
        p.add_argument(
            "--threads",
            type=int_in(1, 4096),
            default=None,
            metavar="N",
            help="llama.cpp threads of the local models (default: one per physical core)",
        )
        p.add_argument("--max-subquestions", type=int_in(1, 10), default=3)
        p.add_argument("--profile", default="math", choices=["math", "reading", "multihop"])
        p.add_argument("--json", action="store_true", help="print one JSON object per line")

    p = sub.add_parser("decompose", help="print sub-questions")
    common(p)
    p.set_defaults(func=cmd_decompose)

    p = sub.add_parser("ask", help="decompose, then solve in one solver call")
    common(p)
    from langchain_dod.models import DEFAULT_SOLVER  # not from solvers: that imports LangChain for every command

    p.add_argument("--solver", default=DEFAULT_SOLVER, help="SPEC: provider:model or llamacpp:NAME|PATH")
    p.add_argument("--single-stage", action="store_true", help="no decomposition (baseline)")
    p.add_argument("--mode", default="cot", choices=["cot", "direct"], help="single-stage prompt")
    p.add_argument("--fallback", action="store_true", help="answer single-stage if the decomposer fails")
    p.add_argument(
        "--answer-format",
        default="text",
        choices=["text", "program"],
        help="program: the solver writes arithmetic assignments and the answer is computed from them",
    )
    p.add_argument("--max-tokens", type=int_in(1), default=512, help="solver output limit (local solvers)")
    p.add_argument("--stream", action="store_true", help="print the solver's tokens as they come")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("models", help="list known models and where they resolve")
    p.add_argument("--download", metavar="NAME", help="fetch a model from the Hugging Face hub into the cache")
    p.set_defaults(func=cmd_models)

    # A stand-in that takes everything after "eval" as is: the evaluation (a client of the runtime) is imported
    # only when `dod eval` runs, never for `dod decompose` or `dod ask`.
    p = sub.add_parser("eval", help=EVAL_HELP, add_help=False, prefix_chars="\0")
    p.add_argument("eval_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_eval)
    return parser


def _say_when_merging() -> None:
    """Print the one-time merge of an adapter (~8 CPU s on first use) to stderr, so a first run does not look hung."""
    import logging

    log = logging.getLogger("langchain_dod.merge")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("dod: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dod``."""
    args = build_parser().parse_args(argv)
    _say_when_merging()
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
