"""Stage 3: SFT records in exactly the inference prompt format, deduplicated, split train/validation.

Decomposer data (the student we distil):

* ``SD-T`` — every teacher decomposition (from ``generate``);
* ``SD-R`` — only those that led the solver to the gold answer (from ``screen``). With ``skip_where_solved`` (a
  single-stage ``dod eval`` run of the same solver over the screened questions), a kept plan whose question that
  run answered right becomes a skip target (``[]``): the student learns to plan only where the solver's own chain
  of thought fails, since on the rest a plan can only cost accuracy (issue 12: skips score as CoT does).

Solver data (the paper's comparison, which distils badly): ``SE-T`` — the solver's own text for the
teacher's sub-questions; ``SE-A`` — the same with the final answer replaced by the gold one.

Each record is ``{"id", "kind", "messages": [system, user, assistant]}``: the prompt messages come from
``langchain_dod.prompts`` (``decomposer_messages`` / ``solver_messages``) and the assistant turn is
``decomposition_target`` (or the solver text), so training sees what inference sends. The split is by
question (seeded), so a question never lands in both train and validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.settings import setting, with_settings
from training.store import read_jsonl

__all__ = ["KINDS", "BuildConfig", "BuildReport", "build", "records_for", "with_gold_answer"]

KINDS = ("SD-T", "SD-R", "SE-T", "SE-A")


@dataclass
class BuildConfig:
    """Which SFT records ``build`` writes and how it splits them (the ``[build]`` table, and the CLI flags)."""

    kinds: list[str] = setting(["SD-T"], csv=True, help="comma-separated, default SD-T")
    val_fraction: float = setting(0.1)
    seed: int = setting(0)
    drop_empty: bool = setting(False, action="store_true", help="drop decompositions with no sub-questions")
    skip_where_solved: str | None = setting(
        None,
        help="a single-stage `dod eval run` JSONL of the screening solver: SD-R plans of questions it answered "
        "right (strict) become skip targets",
        metavar="RUN",
    )


@dataclass
class BuildReport:
    """Counts per split and kind, and what was dropped."""

    out_dir: str
    train: int
    validation: int
    per_kind: dict[str, int]
    duplicates: int
    dropped_empty: int
    plans_to_skips: int = 0

    def summary(self) -> str:
        """One line for the CLI."""
        kinds = ", ".join(f"{k} {n}" for k, n in self.per_kind.items())
        return (
            f"{self.train} train / {self.validation} validation records ({kinds}) in {self.out_dir}; "
            f"{self.duplicates} duplicates and {self.dropped_empty} empty decompositions dropped"
            + (f"; {self.plans_to_skips} plans made skips (solved single-stage)" if self.plans_to_skips else "")
        )


def with_gold_answer(solution: str, gold: str) -> str:
    """The solver text with its final answer replaced by ``gold`` (SE-A)."""
    from langchain_dod.prompts import ANSWER_MARKER

    pattern = re.compile(re.escape(ANSWER_MARKER) + r"[^\n]*")
    matches = list(pattern.finditer(solution))
    if matches:
        last = matches[-1]
        return solution[: last.start()] + f"{ANSWER_MARKER} {gold}" + solution[last.end() :]
    return f"{solution.rstrip()}\n{ANSWER_MARKER} {gold}"


def _need(record: dict[str, Any], keys: Iterable[str], source: str) -> None:
    for key in keys:
        if record.get(key) is None:
            raise TrainingError(
                f"{source}: record {record.get('id', '?')!r} has no {key!r}; is this a file written by the right "
                "stage (generate for SD-T, screen for SD-R/SE-T/SE-A)?"
            )


def records_for(kind: str, record: dict[str, Any], source: str = "input") -> dict[str, Any] | None:
    """The SFT record of one kind for one generate/screen record (``None`` when SD-R screens it out)."""
    from langchain_dod.prompts import decomposer_messages, decomposition_target, solver_messages

    if kind not in KINDS:
        raise TrainingError(f"Unknown kind {kind!r}; choose from {', '.join(KINDS)}.")
    _need(record, ("id", "question", "subquestions"), source)
    if not isinstance(record["subquestions"], list):
        raise TrainingError(f"{source}: record {record['id']!r} has 'subquestions' that is not a list.")
    question, context, subquestions = record["question"], record.get("context"), record["subquestions"]
    if kind in ("SD-T", "SD-R"):
        if kind == "SD-R":
            _need(record, ("correct",), source)
            if not record["correct"]:
                return None
        prompt = decomposer_messages(
            question,
            context,
            profile=record.get("profile") or "math",
            max_subquestions=record.get("max_subquestions") or 3,
        )
        reply = decomposition_target(subquestions)
    else:
        _need(record, ("solution",), source)
        prompt = solver_messages(question, context, subquestions, mode="decomposed")
        reply = record["solution"]
        if kind == "SE-A":
            _need(record, ("answer",), source)
            reply = with_gold_answer(reply, str(record["answer"]))
    return {
        "id": str(record["id"]),
        "kind": kind,
        "messages": [*prompt, {"role": "assistant", "content": reply}],
    }


def _row_id(value: Any) -> str:
    """One spelling for a row id: ``train-0025`` (an evaluation's padded id) and ``train-25`` (the screen's) match."""
    text = str(value)
    match = re.fullmatch(r"(.*?)(\d+)", text)
    return f"{match.group(1)}{int(match.group(2))}" if match else text


def solved_ids(run: str | Path) -> set[str]:
    """Ids a single-stage ``dod eval`` run answered right (strict score 1), for ``skip_where_solved``.

    Ids are returned in one spelling (:func:`_row_id`): evaluations pad row numbers, the screen does not.
    """
    solved = set()
    for row in read_jsonl(run):
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("scores"), dict):
            raise TrainingError(
                f"{run}: a row without 'id' and 'scores'; skip_where_solved needs a `dod eval run` JSONL "
                "(runs/*.jsonl of an evaluation folder)."
            )
        if not str(row.get("mode", "")).startswith("single-stage"):
            raise TrainingError(
                f"{run}: row {row['id']!r} is a {row.get('mode')!r} record; skip_where_solved needs a "
                "single-stage run (`dod eval run --single-stage cot`)."
            )
        if row["scores"].get("strict") == 1.0:
            solved.add(_row_id(row["id"]))
    return solved


def _group(record: dict[str, Any]) -> str:
    user = next(m["content"] for m in record["messages"] if m["role"] == "user")
    text = " ".join(user.lower().split())
    if record["kind"].startswith("SE"):  # solver prompts also list the sub-questions: split by question only
        text = text.split("\n\nsub-questions:")[0]
    return hashlib.sha1(text.encode()).hexdigest()


def _write(path: Path, records: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def build(
    out_dir: str | Path,
    config: BuildConfig | None = None,
    *,
    decompositions: str | Path | None = None,
    screened: str | Path | None = None,
    **settings: Any,
) -> BuildReport:
    """Write ``train.jsonl``, ``validation.jsonl`` and ``build.json`` into ``out_dir``.

    Settings (:class:`BuildConfig`) come as ``config`` and/or keywords (``kinds=["SD-R"]``, ...).
    """
    cfg = with_settings(BuildConfig, config, settings, "build")
    kinds, val_fraction, seed, drop_empty = list(dict.fromkeys(cfg.kinds)), cfg.val_fraction, cfg.seed, cfg.drop_empty
    for kind in kinds:
        if kind not in KINDS:
            raise TrainingError(f"Unknown kind {kind!r}; choose from {', '.join(KINDS)}.")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainingError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    sources: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for kind in kinds:
        path = decompositions if kind == "SD-T" else screened
        if path is None:
            need = "decompositions (from generate)" if kind == "SD-T" else "screened results (from screen)"
            raise TrainingError(f"Kind {kind} needs {need}; pass that file.")
        if str(path) not in sources:
            sources[str(path)] = (kind, read_jsonl(path))
    solved = solved_ids(cfg.skip_where_solved) if cfg.skip_where_solved else set()
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicates = dropped_empty = plans_to_skips = 0
    for kind in kinds:
        path = str(decompositions if kind == "SD-T" else screened)
        for raw in sources[path][1]:
            if drop_empty and kind.startswith("SD") and not raw.get("subquestions"):
                dropped_empty += 1
                continue
            if kind == "SD-R" and raw.get("subquestions") and raw.get("correct") and _row_id(raw.get("id")) in solved:
                raw = {**raw, "subquestions": []}
                plans_to_skips += 1
            record = records_for(kind, raw, path)
            if record is None:
                continue
            key = hashlib.sha1(json.dumps([kind, record["messages"][:-1]]).encode()).hexdigest()
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            records.append(record)
    if not records:
        raise TrainingError(
            f"No {'/'.join(kinds)} records could be built (empty input, or nothing passed screening); "
            "check the input files."
        )
    groups = sorted({_group(r) for r in records})
    random.Random(seed).shuffle(groups)
    n_val = round(val_fraction * len(groups))
    if val_fraction > 0 and len(groups) >= 2:
        n_val = max(1, min(n_val, len(groups) - 1))
    validation_groups = set(groups[:n_val])
    train = [r for r in records if _group(r) not in validation_groups]
    validation = [r for r in records if _group(r) in validation_groups]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "train.jsonl", train)
    _write(out_dir / "validation.jsonl", validation)
    report = BuildReport(
        out_dir=str(out_dir),
        train=len(train),
        validation=len(validation),
        per_kind=dict(Counter(r["kind"] for r in records)),
        duplicates=duplicates,
        dropped_empty=dropped_empty,
        plans_to_skips=plans_to_skips,
    )
    (out_dir / "build.json").write_text(
        json.dumps(
            {
                **asdict(report),
                "seed": seed,
                "val_fraction": val_fraction,
                "kinds": kinds,
                "skip_where_solved": cfg.skip_where_solved,
            },
            indent=2,
        )
        + "\n"
    )
    return report
