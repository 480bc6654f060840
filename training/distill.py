"""``dod-train distill CONFIG``: every stage, in order, from one config (see :mod:`training.config`).

Outputs go under ``out_dir``: ``decompositions.jsonl`` (generate), ``screened.jsonl`` (screen, when the config
has a ``[screen]`` table), ``data/`` (build), ``sft/`` (checkpoints and ``final/``), ``export/`` (GGUF files and
``verify.json``) and ``distill.json`` (what every stage reported). Rerunning the same command resumes: generate
and screen skip finished examples, sft continues from its last checkpoint (or is skipped when ``final/`` is
complete), export is skipped when its files and check are there.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training.config import load_config, validate_config
from training.errors import TrainingError
from training.runs import read_training_info, training_info_path

__all__ = ["distill"]


def distill(config: str | Path | dict[str, Any], *, progress: bool = True) -> dict[str, Any]:
    """Run generate → (screen) → build → sft → export as the config says; returns every stage's report."""
    from training.build import build
    from training.data import DataConfig
    from training.export import export_and_verify, probe_messages
    from training.generate import generate
    from training.screen import screen
    from training.sft import SFTConfig, sft
    from training.store import read_jsonl

    config = load_config(config) if isinstance(config, (str, Path)) else validate_config(config)
    out = Path(config["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seed = config.get("seed", 0)
    reports: dict[str, Any] = {}

    examples = DataConfig(**config["data"]).load()
    gen = {"seed": seed, **config["generate"]}
    teacher = gen.pop("teacher")
    decompositions = out / "decompositions.jsonl"
    reports["generate"] = asdict(generate(examples, teacher, decompositions, progress=progress, **gen))
    reports["generate"].pop("failures", None)
    if reports["generate"]["failed"]:
        raise TrainingError(
            f"{reports['generate']['failed']} examples failed in generate (see "
            f"{decompositions.with_name('decompositions.failed.jsonl')}); rerun to retry them."
        )

    screened = None
    if "screen" in config:
        settings = dict(config["screen"])
        if "solver" not in settings:
            raise TrainingError("[screen] needs a solver SPEC.")
        screened = out / "screened.jsonl"
        reports["screen"] = asdict(
            screen(decompositions, settings.pop("solver"), screened, progress=progress, **settings)
        )

    build_settings = {"seed": seed, **config.get("build", {})}
    build_settings.setdefault("kinds", ["SD-R"] if screened else ["SD-T"])
    if screened is None and any(k != "SD-T" for k in build_settings["kinds"]):
        raise TrainingError(f"Kinds {build_settings['kinds']} need screened data: add a [screen] table.")
    reports["build"] = asdict(build(out / "data", decompositions=decompositions, screened=screened, **build_settings))

    sft_settings = {"seed": seed, **config["sft"]}
    base = sft_settings.pop("base")
    sft_settings.pop("resume", None)
    final = out / "sft" / "final"
    if training_info_path(final).is_file():
        reports["sft"] = read_training_info(final)["report"]
        reports["sft"]["skipped"] = "final/ already complete"
    else:
        reports["sft"] = asdict(
            sft(
                out / "data",
                base,
                out / "sft",
                config=SFTConfig(**sft_settings),
                resume=True,
                progress=progress,
            )
        )
    reports["sft"].pop("log", None)

    export = config.get("export")
    if export is not None:
        verify_file = out / "export" / "verify.json"
        if verify_file.is_file() and verify_file.stat().st_mtime >= training_info_path(final).stat().st_mtime:
            reports["export"] = json.loads(verify_file.read_text())
        else:
            info = read_training_info(final)
            validation = out / "data" / "validation.jsonl"
            probe = probe_messages(read_jsonl(validation) or read_jsonl(out / "data" / "train.jsonl"))
            reports["export"] = export_and_verify(final, out / "export", export, probe, info.get("base_gguf"))
    (out / "distill.json").write_text(json.dumps(reports, indent=2, default=str) + "\n")
    return reports
