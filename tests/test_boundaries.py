"""Package boundaries: the runtime never loads the evaluation, the training package, or torch/transformers.

The evaluation (``langchain_dod.evaluation``) and the distillation (``training``) are clients of the runtime; a user
who only decomposes must not pay for importing them (nor for their optional dependencies). Each check runs in a
fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPORT = (
    "import json, sys\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'training', 'torch', 'transformers', "
    "'matplotlib'} or m.startswith('langchain_dod.evaluation'))))\n"
)


def _loaded(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + REPORT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_langchain_dod_loads_no_client_package() -> None:
    assert _loaded("import langchain_dod\n") == []


@pytest.mark.parametrize(
    "argv",
    [
        ["decompose", "Tom has 3 boxes of 12 pens and gives away 5. How many are left?", "--json"],
        ["models"],
        ["--help"],
    ],
)
def test_dod_commands_other_than_eval_load_no_client_package(argv: list[str]) -> None:
    code = (
        "import contextlib, io\n"
        "from langchain_dod.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    assert main({argv!r}) == 0\n"
    )
    assert _loaded(code) == []


def test_dod_eval_loads_the_evaluation_when_it_runs() -> None:
    code = (
        "import contextlib, io\n"
        "from langchain_dod.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert main(['eval', 'report', '/nonexistent']) == 1\n"
    )
    loaded = _loaded(code)
    assert "langchain_dod.evaluation.cli" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("training", "torch", "transformers")]


def test_the_suite_cannot_reach_the_network():
    """pytest-socket (pyproject's addopts) refuses every host but loopback, so no test depends on the internet."""
    import socket

    from pytest_socket import SocketConnectBlockedError

    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("203.0.113.1", 80), timeout=1)  # TEST-NET-3: never routable anyway
