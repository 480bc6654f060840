"""llama.cpp's own converters (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``), fetched at run time.

They are not on PyPI as a package, and their code must not be copied into this repository. They do ship in
the llama-cpp-python sdist (``vendor/llama.cpp/``), so we download the sdist that matches the installed
llama-cpp-python with pip, extract only the converter scripts, their ``conversion/`` package and their own
``gguf-py`` (the ``gguf`` on PyPI is too old for them) into ``~/.cache/langchain-dod/llama-cpp-sdist/<version>/``
once, and run them in a subprocess with ``PYTHONPATH`` pointing at that ``gguf-py``.

``DOD_LLAMA_CPP_DIR`` may point at an existing llama.cpp checkout instead (e.g. on a machine without network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from langchain_dod.models import file_lock
from training.errors import TrainingError

__all__ = ["converter_dir", "llama_cpp_version", "run_converter"]

_MARKER = ".complete"


def llama_cpp_version() -> str:
    """The installed llama-cpp-python version (the converters must match its llama.cpp)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise TrainingError("llama-cpp-python is not installed; it is a dependency of langchain-dod.") from None


def _wanted(name: str) -> str | None:
    """The path under ``llama.cpp/`` for a tarball member we keep, else ``None``."""
    _, sep, rest = name.partition("/vendor/llama.cpp/")
    if not sep:
        return None
    if "/" not in rest and rest.startswith("convert_") and rest.endswith(".py"):
        return rest
    if rest.startswith(("conversion/", "gguf-py/gguf/")) or rest in ("gguf-py/LICENSE", "LICENSE"):
        return rest
    return None


def _extract(sdist: Path, target: Path) -> None:
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            rel = _wanted(member.name)
            if rel is None or not member.isfile() or ".." in Path(rel).parts:
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, open(dest, "wb") as handle:
                shutil.copyfileobj(source, handle)


def converter_dir(version: str | None = None, cache: Path | None = None) -> Path:
    """A folder holding ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, ``conversion/`` and ``gguf-py/``."""
    if env := os.environ.get("DOD_LLAMA_CPP_DIR"):
        folder = Path(env).expanduser()
        if not (folder / "convert_lora_to_gguf.py").is_file():
            raise TrainingError(f"DOD_LLAMA_CPP_DIR={folder} does not hold convert_lora_to_gguf.py.")
        return folder
    from langchain_dod.models import cache_dir

    version = version or llama_cpp_version()
    root = (cache or cache_dir() / "llama-cpp-sdist") / version
    target = root / "llama.cpp"
    if (target / _MARKER).is_file():
        return target
    with file_lock(root / ".lock"):
        if (target / _MARKER).is_file():
            return target
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                tmp,
                "-q",
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            sdists = list(Path(tmp).glob("*.tar.gz"))
            if done.returncode != 0 or not sdists:
                raise TrainingError(
                    f"Could not download the llama-cpp-python {version} sdist for llama.cpp's converters "
                    f"({done.stderr.strip()[-500:]}). Connect to PyPI once, or set DOD_LLAMA_CPP_DIR to a llama.cpp "
                    "checkout of the same version."
                )
            staging = Path(tmp) / "llama.cpp"
            _extract(sdists[0], staging)
            if not (staging / "convert_lora_to_gguf.py").is_file():
                raise TrainingError(f"The llama-cpp-python {version} sdist has no vendor/llama.cpp converters.")
            (staging / _MARKER).write_text(version + "\n")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target


def run_converter(script: str, args: list[str]) -> str:
    """Run one converter script; returns its output, raises :class:`TrainingError` with its tail on failure."""
    folder = converter_dir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder / "gguf-py"), str(folder), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    done = subprocess.run([sys.executable, str(folder / script), *args], capture_output=True, text=True, env=env)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise TrainingError(f"llama.cpp's {script} failed (exit {done.returncode}):\n{output.strip()[-2000:]}")
    return output
