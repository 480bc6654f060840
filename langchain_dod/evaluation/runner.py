"""Run pipelines over a data set: one results JSONL per run, resumable, with cost and latency per stage.

Layout of an output folder::

    OUT/manifest.json          data set (path, format, sha256), seed, limit and the exact item ids
    OUT/runs/NAME.jsonl        one record per item (appended as each item finishes, fsync'd)
    OUT/runs/NAME.meta.json    the run's configuration and its wall-time segments (one per session, rewritten
                               every item and every HEARTBEAT_SECONDS while it runs, so a kill loses little)

A rerun with the same folder continues: items already in ``NAME.jsonl`` are skipped, a torn last line (the
process was killed mid-write) is cut off and its item redone, and a later record for an id replaces an
earlier one. Items whose pipeline raised are recorded with ``error`` and scored wrong; ``retry_errors`` redoes
them. Errors that mean the configuration is wrong (model missing, package missing) stop the run instead of
being recorded a hundred times.

Several runs can be interleaved in chunks (``chunk``) so that, when a long evaluation is stopped, every run
has the same items done and the paired comparisons stay possible.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable

from langchain_dod.evaluation.datasets import Item, LoadedDataset, drop_excluded, read_ids, select_items
from langchain_dod.evaluation.metrics import score
from langchain_dod.jsonl_store import JsonlError, append_jsonl, read_records, repair_tail
from langchain_dod.solvers import is_local_model, load_chat_model, model_label, spec_label

__all__ = [
    "EvaluationError",
    "ResultsFile",
    "RunSpec",
    "StageRecorder",
    "arun_evaluation",
    "read_json",
    "run_evaluation",
]

Mode = Literal["decomposed", "direct", "cot"]


class EvaluationError(RuntimeError):
    """The evaluation cannot go on as configured (wrong folder, wrong model, changed data set)."""


# -- what a run is ------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


#: A run name (and a ``--label`` inside one) becomes a file name under ``OUT/runs``: no path separators, no leading dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def _default_adapter_id(profile: str) -> str | None:
    """``name:sha256[:16]`` of the adapter ``Decomposer()`` applies, ``None`` when it runs the untuned base.

    ``+merged`` follows when it loads the adapter merged into the base (another model to the decoder: its runs
    must not continue the run-time adapter's).
    """
    import hashlib

    from langchain_dod.decomposer import default_adapter_for
    from langchain_dod.decomposition import default_merge

    adapter = default_adapter_for(profile)
    if adapter is None:
        return None
    merged = "+merged" if default_merge(profile, adapter) else ""
    return f"{adapter.name}:{hashlib.sha256(adapter.read_bytes()).hexdigest()[:16]}{merged}"


@dataclass
class RunSpec:
    """One pipeline: a solver, and either a decomposer (two-stage) or a single-stage ``mode``.

    ``solver``: a SPEC (``llamacpp:qwen2.5-coder-1.5b-instruct``, ``openai:gpt-4o-mini``) or a LangChain model.
    ``decomposer``: ``None`` (single-stage, then ``mode`` is ``direct`` or ``cot``), ``"oracle"`` (the data's own
    Socratic sub-questions from ``socratic``), ``"default"`` (the shipped SmolLM2 decomposer), a SPEC or
    GGUF name/path (untuned, e.g. ``llamacpp:smollm2-135m-instruct``), or a ready runnable / model.
    """

    solver: str | BaseLanguageModel
    decomposer: str | Runnable | BaseLanguageModel | None = None
    mode: Mode = "decomposed"
    name: str | None = None
    max_tokens: int | None = 400
    max_subquestions: int = 3
    profile: str = "math"
    socratic: str | None = None
    answer_format: str = "text"
    """``text`` or ``program`` (the solver writes arithmetic assignments; ``DecomposeSolve.answer_format``)."""
    n_threads: int | None = None
    """llama.cpp threads for local stages (``None``: the model's default). On a busy shared CPU, 1 thread can be
    several times faster than 2, which spin-wait on each other; not part of the run's identity."""

    def __post_init__(self) -> None:
        """Check the combination now rather than after the first model call."""
        if self.decomposer is None and self.mode == "decomposed":
            raise ValueError("A single-stage run needs mode 'direct' or 'cot'; a two-stage run needs a decomposer.")
        if self.decomposer is not None and self.mode != "decomposed":
            raise ValueError(f"mode {self.mode!r} is single-stage; leave decomposer=None for it.")
        from langchain_dod.prompts import check_answer_format

        check_answer_format(self.mode, self.answer_format)
        if self.decomposer == "oracle" and not self.socratic:
            raise ValueError("The oracle decomposer needs socratic=PATH (e.g. test_socratic.jsonl).")
        if self.name is None:
            program = "-program" if self.answer_format == "program" else ""
            self.name = _slug(f"{self.stage_label}{program}__{self.solver_label}")
        if not SAFE_NAME.fullmatch(self.name):
            raise ValueError(
                f"Run name {self.name!r} is not a safe file name; use letters, digits and . _ + - only (it names "
                "the run's files in OUT/runs)."
            )

    @property
    def solver_label(self) -> str:
        """The solver's short name."""
        return spec_label(self.solver) if isinstance(self.solver, str) else model_label(self.solver)

    @property
    def stage_label(self) -> str:
        """``direct``/``cot`` for single-stage runs, else ``dec-<decomposer>``."""
        if self.decomposer is None:
            return self.mode
        if isinstance(self.decomposer, str):
            return "oracle" if self.decomposer == "oracle" else f"dec-{spec_label(self.decomposer)}"
        inner = getattr(self.decomposer, "model_name", None) or getattr(self.decomposer, "model", None)
        return f"dec-{inner or type(self.decomposer).__name__}"

    def describe(self) -> dict[str, Any]:
        """A JSON description; a rerun into the same folder must match it."""

        def show(v: Any) -> Any:
            return v if v is None or isinstance(v, str) else f"<{type(v).__name__}>"

        described = {
            "name": self.name,
            "solver": show(self.solver),
            "decomposer": show(self.decomposer),
            "mode": self.mode,
            "max_tokens": self.max_tokens,
            "max_subquestions": self.max_subquestions,
            "profile": self.profile,
            "socratic": self.socratic,
        }
        if self.answer_format != "text":  # only then: the descriptions of earlier text runs stay as they were
            described["answer_format"] = self.answer_format
        if self.decomposer == "default":  # which adapter "default" meant: results of two adapters must not mix
            described["adapter"] = _default_adapter_id(self.profile)
        if self.decomposer == "oracle":  # how the Socratic steps became sub-questions: two rules must not mix
            from langchain_dod.evaluation.oracle import ORACLE_RULE

            described["oracle_rule"] = ORACLE_RULE
        described["prompts"] = self.prompts_id()  # a changed wording must not mix into a run's earlier items
        return described

    def prompts_id(self) -> str:
        """sha256[:12] of the prompts this run sends (on a fixed probe question), from ``langchain_dod.prompts``."""
        import hashlib

        from langchain_dod.prompts import decomposer_messages, solver_messages

        fmt = self.answer_format
        if self.decomposer is None:
            sent = [solver_messages("Q?", mode=self.mode, answer_format=fmt)]
        else:
            sent = [
                decomposer_messages("Q?", profile=self.profile, max_subquestions=self.max_subquestions),
                solver_messages("Q?", subquestions=["S?"], answer_format=fmt),  # with a plan
                solver_messages("Q?", answer_format=fmt),  # the decomposer wrote none
            ]
        return hashlib.sha256(json.dumps(sent).encode()).hexdigest()[:12]

    def _solver(self) -> BaseLanguageModel:
        if not isinstance(self.solver, str):
            return self.solver
        kwargs: dict[str, Any] = {"max_tokens": self.max_tokens} if self.max_tokens else {}
        return load_chat_model(self.solver, local_kwargs=self._local_kwargs(), **kwargs)

    def _local_kwargs(self) -> dict[str, Any]:
        return {"n_threads": self.n_threads} if self.n_threads else {}

    def _decomposer(self) -> Runnable:
        from langchain_dod.decomposer import Decomposer, default_decomposer_llm

        dec = self.decomposer
        if isinstance(dec, str):
            if dec == "oracle":
                from langchain_dod.evaluation.oracle import SocraticOracle

                return SocraticOracle(path=str(self.socratic), max_subquestions=self.max_subquestions)
            if dec == "default":
                llm: Any = default_decomposer_llm(profile=self.profile, **self._local_kwargs())
            else:  # a SPEC or a bare GGUF name/path
                llm = load_chat_model(dec, allow_path=True, local_kwargs=self._local_kwargs())
            return Decomposer(llm=llm, profile=self.profile, max_subquestions=self.max_subquestions)
        if isinstance(dec, BaseLanguageModel):
            return Decomposer(llm=dec, profile=self.profile, max_subquestions=self.max_subquestions)
        assert dec is not None
        return dec

    def build(self) -> Runnable:
        """The chain this run evaluates (``DecomposeSolve`` or ``SingleStage``)."""
        from langchain_dod.chains import DecomposeSolve, SingleStage

        if self.decomposer is None:
            return SingleStage(solver=self._solver(), mode=self.mode, answer_format=self.answer_format)
        return DecomposeSolve(
            decomposer=self._decomposer(),
            solver=self._solver(),
            max_subquestions=self.max_subquestions,
            answer_format=self.answer_format,
        )


# -- per-item measurements ----------------------------------------------------------------------------------


@dataclass
class _StageLog:
    cpu_seconds: float = 0.0
    texts: list[str] = field(default_factory=list)


class StageRecorder(BaseCallbackHandler):
    """Callback that attributes each model call to its stage and measures the process CPU time it took.

    The chains tag the solver call ``solver`` and the decomposer runnable ``decomposer``; a model call
    under the decomposer runnable belongs to it. CPU time is process-wide, so it is only meaningful when one
    item runs at a time (``max_concurrency=1``); the runner drops it otherwise.
    """

    run_inline = True

    def __init__(self) -> None:
        self.stage_of: dict[UUID, str | None] = {}
        self.open: dict[UUID, tuple[str | None, float]] = {}
        self.stages: dict[str, _StageLog] = {}
        self.started: float | None = None
        self.ended: float | None = None

    def _stage(self, run_id: UUID, parent_run_id: UUID | None, tags: list[str] | None) -> str | None:
        tags = tags or []
        stage = next((t for t in ("solver", "decomposer") if t in tags), None) or self.stage_of.get(parent_run_id)  # type: ignore[arg-type]
        self.stage_of[run_id] = stage
        return stage

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the stage of a runnable, and the start of the whole item."""
        if parent_run_id is None and self.started is None:
            self.started = time.perf_counter()
        self._stage(run_id, parent_run_id, tags)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        """Note the end of the whole item."""
        if parent_run_id is None:
            self.ended = time.perf_counter()

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """A failed item ends too."""
        self.on_chain_end(None, run_id=run_id, parent_run_id=parent_run_id)

    def _model_start(self, run_id: UUID, parent_run_id: UUID | None, tags: list[str] | None) -> None:
        self.open[run_id] = (self._stage(run_id, parent_run_id, tags), time.process_time())

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start the CPU clock of a chat model call."""
        self._model_start(run_id, parent_run_id, tags)

    def on_llm_start(
        self,
        serialized: Any,
        prompts: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start the CPU clock of a completion model call."""
        self._model_start(run_id, parent_run_id, tags)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Stop the clock; keep the generated text (a token-count fallback needs it)."""
        stage, cpu0 = self.open.pop(run_id, (None, time.process_time()))
        log = self.stages.setdefault(stage or "other", _StageLog())
        log.cpu_seconds += time.process_time() - cpu0
        for gens in getattr(response, "generations", None) or []:
            for gen in gens:
                log.texts.append(getattr(gen, "text", "") or "")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """A failed call still used the CPU."""
        self.on_llm_end(None, run_id=run_id)


def _has_tokenizer(llm: Any) -> bool:
    if llm is None:
        return False
    cls = type(llm)
    return (
        getattr(llm, "custom_get_token_ids", None) is not None
        or cls.get_num_tokens is not BaseLanguageModel.get_num_tokens
        or cls.get_token_ids is not BaseLanguageModel.get_token_ids
    )


def _count_tokens(llm: Any, text: str) -> tuple[int, str]:
    """Tokens of ``text`` with the model's own tokenizer, else ≈ 4 characters per token.

    LangChain's generic fallback loads GPT-2's tokenizer through transformers (a torch import and a download);
    the runtime avoids both.
    """
    if _has_tokenizer(llm):
        try:
            return int(llm.get_num_tokens(text)), "tokenizer"
        except Exception:  # a tokenizer that needs the network or a missing extra: fall back
            pass
    return math.ceil(len(text) / 4), "estimate"


def _messages_text(messages: Sequence[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


_CONFIG_ERRORS = ("ModelNotFoundError", "ModelLoadError", "GGUFError", "ImportError", "ModuleNotFoundError")


def _config_error(err: BaseException) -> BaseException | None:
    seen = 0
    current: BaseException | None = err
    while current is not None and seen < 5:
        if type(current).__name__ in _CONFIG_ERRORS:
            return current
        current, seen = current.__cause__, seen + 1
    return None


def _stage_usage(
    head: dict[str, Any] | None, llm: Any, prompt: str | None, log: _StageLog | None, cpu_valid: bool, local: bool
) -> dict[str, Any] | None:
    """One stage's usage: the chain's numbers, counted tokens where it has none, CPU seconds, locality."""
    if head is None and log is None:
        return None
    usage = dict(head or {})
    if usage.get("model") is None and llm is not None:  # the call failed: still name who used the tokens
        usage["model"] = model_label(llm)
    source = "usage"
    if prompt is not None and usage.get("input_tokens") is None:
        usage["input_tokens"], source = _count_tokens(llm, prompt)
    if usage.get("output_tokens") is None:
        usage["output_tokens"], source = _count_tokens(llm, "".join(log.texts) if log else "")
    usage["token_source"] = source
    usage["local"] = local
    usage["cpu_seconds"] = round(log.cpu_seconds, 4) if (log and cpu_valid) else (0.0 if cpu_valid and local else None)
    return usage


def _make_record(
    item: Item, fmt: str, spec: RunSpec, chain: Any, output: Any, recorder: StageRecorder, cpu_valid: bool
) -> dict[str, Any]:
    from langchain_dod.decomposer import Decomposer
    from langchain_dod.prompts import solver_messages

    error = None
    if isinstance(output, BaseException):
        error = f"{type(output).__name__}: {output}"
        output = {}
    subquestions = list(output.get("subquestions") or [])
    usage_in = output.get("usage") or {}
    solver = getattr(chain, "solver", None)
    decomposer = getattr(chain, "decomposer", None)
    dec_llm = decomposer.llm if isinstance(decomposer, Decomposer) else None

    dec_prompt = (
        _messages_text(decomposer.messages(item.question, item.context)) if isinstance(decomposer, Decomposer) else None
    )
    solve_mode = spec.mode if spec.decomposer is None else "decomposed"
    solve_prompt = _messages_text(
        solver_messages(item.question, item.context, subquestions, mode=solve_mode, answer_format=spec.answer_format)
    )
    logs = recorder.stages
    usage = {
        "decomposer": None
        if spec.decomposer is None
        else _stage_usage(
            usage_in.get("decomposer"),
            dec_llm,
            dec_prompt,
            logs.get("decomposer"),
            cpu_valid,
            local=dec_llm is None or is_local_model(dec_llm),
        ),
        "solver": _stage_usage(
            usage_in.get("solver"),
            solver,
            solve_prompt if (usage_in.get("solver") or logs.get("solver")) else None,
            logs.get("solver"),
            cpu_valid,
            local=is_local_model(solver),
        ),
    }
    prediction = output.get("answer")
    scores = score(fmt, prediction, item.answers)
    seconds = (recorder.ended - recorder.started) if (recorder.started and recorder.ended) else None
    return {
        "id": item.id,
        "run": spec.name,
        "gold": item.answer,
        "golds": [list(a) for a in item.answers],
        "prediction": prediction,
        "parsed": scores.pop("parsed"),
        "scores": scores,
        "subquestions": subquestions,
        "mode": output.get("mode"),
        "solution": output.get("solution"),
        "error": error,
        "usage": usage,
        "seconds": round(seconds, 4) if seconds is not None else None,
    }


# -- files --------------------------------------------------------------------------------------------------


class ResultsFile:
    """One run's append-only JSONL of item records (:mod:`langchain_dod.jsonl_store`); a later record for an id wins.

    The last record wins because ``retry_errors`` appends a new record for an item that failed: it replaces the
    error.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repaired = False

    def load(self) -> dict[str, dict[str, Any]]:
        """Records by id; cuts off a torn last line (its item is redone), keeping the rest."""
        try:
            self.repaired = repair_tail(self.path)
            return read_records(self.path, keep="last")
        except JsonlError as err:
            raise EvaluationError(
                f"{self.path} has a corrupt line (not the last line, so not a torn write): {err} Its item will be "
                "redone."
            ) from None

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably."""
        append_jsonl(self.path, record)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A JSON file this runner wrote; an empty or damaged one is an error naming it (not "Expecting value")."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvaluationError(
            f"{path} is empty or not valid JSON ({err}). Restore it, or use another --out to start again."
        ) from None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _manifest(
    out: Path,
    dataset: LoadedDataset,
    items: list[Item],
    seed: int | None,
    limit: int | None,
    exclude: Sequence[str] = (),
) -> dict:
    path = out / "manifest.json"
    new: dict[str, Any] = {
        "dataset": {
            "path": str(dataset.path),
            "format": dataset.fmt,
            "sha256": dataset.sha256,
            "n_items_in_file": len(dataset.items),
            "skipped_rows": dataset.skipped,
        },
        "seed": seed,
        "limit": limit,
        "ids": [i.id for i in items],
        "created": _now(),
    }
    if exclude:  # the files whose ids were left out before shuffling (e.g. a decomposer's training questions)
        new["exclude"] = list(exclude)
    if path.exists():
        old = read_json(path)
        same_data = (old["dataset"]["sha256"], old["dataset"]["format"], old.get("seed"), old.get("exclude", [])) == (
            dataset.sha256,
            dataset.fmt,
            seed,
            list(exclude),
        )
        old_ids, new_ids = old["ids"], new["ids"]
        prefix = old_ids[: len(new_ids)] == new_ids or new_ids[: len(old_ids)] == old_ids
        if not same_data or not prefix:
            raise EvaluationError(
                f"{out} holds an evaluation of other items (data set, format, seed or excluded ids differ: was "
                f"{old['dataset']['path']} {old['dataset']['format']} seed={old.get('seed')} "
                f"exclude={old.get('exclude', [])}). Use another --out."
            )
        if len(new_ids) <= len(old_ids):
            return old
        new["created"] = old.get("created", new["created"])
    _write_json(path, new)
    return new


# -- running ------------------------------------------------------------------------------------------------


@dataclass
class _RunState:
    spec: RunSpec
    results: ResultsFile
    meta_path: Path
    meta: dict[str, Any]
    done: dict[str, dict[str, Any]]
    chain: Any = None
    segment: dict[str, Any] | None = None
    mark: float = 0.0  # perf_counter() when the segment's seconds were last brought up to date

    @property
    def name(self) -> str:
        """The run's name; ``RunSpec.__post_init__`` always sets it."""
        assert self.spec.name is not None
        return self.spec.name


def spec_changes(recorded: dict[str, Any], described: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What differs between a run's recorded configuration and this one, as ``{key: (recorded, now)}``.

    An adapter is its bytes (``name:sha256[:16]``): the same file under another name, as when a candidate ships under
    the package's file name, is the same adapter and its run continues.
    """
    changed = {k: (recorded.get(k), described.get(k)) for k in recorded.keys() | described.keys()}
    changed = {k: pair for k, pair in changed.items() if pair[0] != pair[1]}
    before, now = changed.get("adapter", (None, None))
    if isinstance(before, str) and isinstance(now, str) and before.rsplit(":", 1)[-1] == now.rsplit(":", 1)[-1]:
        del changed["adapter"]
    return changed


def _open_run(out: Path, spec: RunSpec, dataset: LoadedDataset, retry_errors: bool) -> _RunState:
    runs = out / "runs"
    results = ResultsFile(runs / f"{spec.name}.jsonl")
    meta_path = runs / f"{spec.name}.meta.json"
    described = spec.describe()
    if meta_path.exists():
        meta = read_json(meta_path)
        if "prompts" not in meta.get("spec", {}):  # made before prompts were recorded
            if spec.decomposer is not None:
                raise EvaluationError(
                    f"Run {spec.name!r} in {out} was made before the prompts were recorded, and the two-stage "
                    "solver wording has changed since (issue 12); name this run differently (dod eval run --label) "
                    "or use another --out."
                )
            meta["spec"]["prompts"] = described["prompts"]  # single-stage prompts have not changed since
        if changed := spec_changes(meta.get("spec", {}), described):
            raise EvaluationError(
                f"Run {spec.name!r} in {out} was made with another configuration ({changed}); name this run "
                "differently or use another --out."
            )
        meta["spec"] = described  # the same configuration, perhaps with its adapter file under a new name
    else:
        meta = {"spec": described, "dataset_sha256": dataset.sha256, "format": dataset.fmt, "segments": []}
    done = results.load()
    if retry_errors:
        done = {k: v for k, v in done.items() if not v.get("error")}
    return _RunState(spec, results, meta_path, meta, done)


HEARTBEAT_SECONDS = 2.0
"""How often a running session's open segment is written even when no item finishes (model loading, a slow item):
a SIGKILL then loses at most this much of the run's wall time."""


def _save_segment(state: _RunState, items: int) -> None:
    """Add the time since the last save (and ``items`` finished) to this session's segment; write the meta."""
    now = time.perf_counter()
    if state.segment is None:
        state.segment = {
            "started": _now(),
            "seconds": 0.0,
            "items": 0,
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "n_threads": state.spec.n_threads,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        }
        state.meta["segments"].append(state.segment)
    state.segment["seconds"] = round(state.segment["seconds"] + (now - state.mark), 3)
    state.mark = now
    state.segment["items"] += items
    state.segment["updated"] = _now()
    state.meta["wall_seconds"] = round(sum(s["seconds"] for s in state.meta["segments"]), 3)
    _write_json(state.meta_path, state.meta)


async def _run_chunk(state: _RunState, items: list[Item], fmt: str, max_concurrency: int, bar: Any) -> None:
    todo = [i for i in items if i.id not in state.done]
    if not todo:
        return
    state.mark = time.perf_counter()  # time between this run's chunks belongs to the other runs
    _save_segment(state, 0)  # the segment exists from the session's start: a kill while loading still counts
    heartbeat = asyncio.create_task(_heartbeat(state))
    try:
        await _run_items(state, todo, fmt, max_concurrency, bar)
    finally:
        heartbeat.cancel()
        _save_segment(state, 0)


async def _heartbeat(state: _RunState) -> None:
    """Keep the open segment current while items run (llama.cpp works in threads; the loop stays free)."""
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        _save_segment(state, 0)


async def _run_items(state: _RunState, todo: list[Item], fmt: str, max_concurrency: int, bar: Any) -> None:
    if state.chain is None:
        state.chain = state.spec.build()
    chain = state.chain
    recorders = [StageRecorder() for _ in todo]
    configs = [
        {
            "callbacks": [r],
            "max_concurrency": max_concurrency,
            "metadata": {"item_id": i.id, "run": state.name},
            "run_name": f"eval:{state.name}",
        }
        for i, r in zip(todo, recorders, strict=True)
    ]
    inputs = [{"question": i.question, "context": i.context} for i in todo]
    cpu_valid = max_concurrency == 1
    if bar is not None:
        bar.set_description(state.name[:40])
    async for index, output in chain.abatch_as_completed(inputs, configs, return_exceptions=True):
        if isinstance(output, BaseException) and (cause := _config_error(output)) is not None:
            raise EvaluationError(
                f"Run {state.name!r} cannot run: {type(cause).__name__}: {cause}. Nothing was recorded for "
                "this item; fix the configuration and rerun to continue."
            ) from output
        record = _make_record(todo[index], fmt, state.spec, chain, output, recorders[index], cpu_valid)
        state.results.append(record)
        state.done[record["id"]] = record
        _save_segment(state, 1)
        if bar is not None:
            bar.update(1)


async def arun_evaluation(
    dataset: LoadedDataset,
    specs: Sequence[RunSpec],
    out: str | Path,
    *,
    limit: int | None = None,
    seed: int | None = 0,
    exclude: Sequence[str | os.PathLike[str]] = (),
    max_concurrency: int = 1,
    chunk: int | None = None,
    retry_errors: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Async :func:`run_evaluation`."""
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Two runs share a name: {names}; give them distinct names.")
    out = Path(out)
    pool = drop_excluded(dataset.items, read_ids(exclude)) if exclude else dataset.items
    items = select_items(pool, limit, seed)
    _manifest(out, dataset, items, seed, limit, [str(p) for p in exclude])
    states = [_open_run(out, s, dataset, retry_errors) for s in specs]
    total = sum(1 for st in states for i in items if i.id not in st.done)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="item", dynamic_ncols=True)
    size = chunk or len(items)
    try:
        for start in range(0, len(items), size):
            for state in states:
                await _run_chunk(state, items[start : start + size], dataset.fmt, max_concurrency, bar)
    finally:
        if bar is not None:
            bar.close()
    ids = [i.id for i in items]
    return {
        st.name: {
            "done": sum(1 for i in ids if i in st.done),
            "errors": sum(1 for i in ids if st.done.get(i, {}).get("error")),
            "results": str(st.results.path),
            "wall_seconds": st.meta.get("wall_seconds", 0.0),
        }
        for st in states
    }


def run_evaluation(
    dataset: LoadedDataset,
    specs: Sequence[RunSpec],
    out: str | Path,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Evaluate every run in ``specs`` on the selected items of ``dataset``; write and return a summary.

    Keyword arguments: ``limit``, ``seed`` (the shuffle; ``None`` keeps file order), ``exclude`` (files whose ids
    are left out before the shuffle: manifests, JSONL records with ``id``), ``max_concurrency`` (items
    in flight per run; keep 1–2 for one in-process llama.cpp model, which serves one sequence at a time),
    ``chunk`` (interleave runs every ``chunk`` items), ``retry_errors``, ``progress``.
    """
    return asyncio.run(arun_evaluation(dataset, specs, out, **kwargs))
