"""The README's quickstart example runs offline and returns the chain's output shape."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_quickstart_runs() -> None:
    path = Path(__file__).parents[1] / "examples" / "quickstart.py"
    spec = importlib.util.spec_from_file_location("quickstart", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main("llamacpp:smollm2-135m-instruct", max_tokens=64)
    assert result["subquestions"] and result["usage"]["solver"]["model"] == "smollm2-135m-instruct"
    assert isinstance(result["solution"], str) and result["solution"]
