"""The cached system-prompt state of a cold ``dod decompose`` (``langchain_dod.engine.warm_prefix``), real model.

Each run is a fresh process (a loaded model lives per process): the first fills the cache, later ones read it, and
the sub-questions are the same as without the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Tom has 3 boxes of 12 pens and gives away 5 pens. How many pens does he have left?"
SCRIPT = f"""
import json, sys, warnings
from langchain_dod import engine
from langchain_dod.decomposition import _shared_prefix, decompose_gguf, default_decomposer_model

model, lora = default_decomposer_model()
params = engine.llama_params(n_threads=1)
how = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if sys.argv[1] == "warm":
        loaded, _ = engine.load(model, lora, params)
        how = engine.warm_prefix(loaded, _shared_prefix(loaded, "math", 3))
    result = decompose_gguf({QUESTION!r}, model=model, lora_path=lora, params=params)
print(json.dumps({{"how": how, "warnings": [str(w.message) for w in caught], "result": result.raw}}))
"""


def _start(cache: Path, mode: str = "warm", **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "DOD_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _states(cache: Path) -> list[Path]:
    return sorted((cache / "prompt-states").glob("*"))


def test_first_process_fills_the_cache_later_ones_read_it_and_the_answer_is_unchanged(tmp_path: Path) -> None:
    plain = _finish(_start(tmp_path / "off", "plain", DOD_PROMPT_CACHE="0"))
    assert _states(tmp_path / "off") == []  # turned off: nothing written
    first = _finish(_start(tmp_path))
    second = _finish(_start(tmp_path))
    assert (first["how"], second["how"]) == ("computed", "disk")
    assert first["result"] == second["result"] == plain["result"]
    assert not first["warnings"] and not second["warnings"]
    (state,) = _states(tmp_path)
    assert state.suffix == ".kv" and 0 < state.stat().st_size < 20_000_000


def test_damaged_state_file_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    first = _finish(_start(tmp_path))
    (state,) = _states(tmp_path)
    state.write_bytes(state.read_bytes()[:1000])  # cut short, as by a full disk
    again = _finish(_start(tmp_path))
    assert again["how"] == "computed" and any("does not load" in w for w in again["warnings"])
    assert again["result"] == first["result"]
    state.write_bytes(b"not a state file at all")
    assert _finish(_start(tmp_path))["how"] == "computed"
    assert _finish(_start(tmp_path))["how"] == "disk"  # rebuilt file reads back


def test_two_processes_filling_the_cache_at_once_both_succeed(tmp_path: Path) -> None:
    runs = [_start(tmp_path), _start(tmp_path)]
    results = [_finish(p) for p in runs]
    assert results[0]["result"] == results[1]["result"]
    assert {r["how"] for r in results} <= {"computed", "disk"}
    (state,) = _states(tmp_path)  # one file, no temporary left behind
    assert not state.name.startswith(".")
    assert _finish(_start(tmp_path))["how"] == "disk"
