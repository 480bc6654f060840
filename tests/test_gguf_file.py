"""``inspect_gguf``: the Python-side check that turns a missing, foreign, truncated or damaged GGUF into a
clear ``GGUFError`` before llama.cpp (which may crash on such files) ever sees it."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from langchain_dod.gguf_file import GGUFError, inspect_gguf

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from fake_gguf import corrupt, truncated_copy, write_lora  # noqa: E402


def test_real_model(smollm2_path: Path) -> None:
    info = inspect_gguf(smollm2_path)
    assert info.architecture == "llama"
    assert info.file_type == "model"
    assert info.adapter_type is None
    assert info.context_length == 8192
    assert info.n_tensors == len(info.tensor_shapes) == 272
    assert dict(info.tensor_shapes)["blk.0.attn_k.weight"] == (576, 192)


def test_adapter_is_recognised(tmp_path: Path) -> None:
    info = inspect_gguf(write_lora(tmp_path / "a.gguf"))
    assert (info.architecture, info.file_type, info.adapter_type) == ("llama", "adapter", "lora")
    assert dict(info.tensor_shapes)["blk.0.attn_k.weight.lora_a"] == (576, 4)
    assert dict(info.tensor_shapes)["blk.0.attn_k.weight.lora_b"] == (4, 192)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="GGUF file not found: .*nothing.gguf"):
        inspect_gguf(tmp_path / "nothing.gguf")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="not found"):
        inspect_gguf(tmp_path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "too small to be a GGUF file \\(0 bytes\\)"),
        (b"GGUF\x03\x00", "too small"),
        (b'{"model": "not weights"}' * 4, "is not a GGUF file \\(starts with b'{\"mo'"),
        (b"PK\x03\x04" + b"\x00" * 60, "is not a GGUF file"),  # a zip (e.g. a torch .pt) renamed .gguf
    ],
)
def test_foreign_or_tiny_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFError, match=match):
        inspect_gguf(path)


def test_truncated_in_the_tensor_data(smollm2_path: Path, tmp_path: Path) -> None:
    size = smollm2_path.stat().st_size
    path = truncated_copy(smollm2_path, tmp_path / "half.gguf", size // 2)
    with pytest.raises(GGUFError, match=f"is truncated: its tensors need {size} bytes but the file has {size // 2}"):
        inspect_gguf(path)


def test_truncated_by_one_byte(smollm2_path: Path, tmp_path: Path) -> None:
    size = smollm2_path.stat().st_size
    path = truncated_copy(smollm2_path, tmp_path / "short.gguf", size - 1)
    with pytest.raises(GGUFError, match="truncated"):
        inspect_gguf(path)


@pytest.mark.parametrize("keep", [100, 4096, 200_000])
def test_truncated_in_the_header(smollm2_path: Path, tmp_path: Path, keep: int) -> None:
    path = truncated_copy(smollm2_path, tmp_path / "head.gguf", keep)
    with pytest.raises(GGUFError, match="damaged GGUF file \\((header ends early|.*runs past the end)"):
        inspect_gguf(path)


@pytest.mark.parametrize(
    ("offset", "data", "match"),
    [
        (4, struct.pack("<I", 7), "unsupported GGUF version 7"),
        (8, struct.pack("<Q", 1 << 40), "implausible counts"),
        (16, struct.pack("<Q", 1 << 40), "implausible counts"),
        # the first key's length (right after the 24-byte preamble) made enormous
        (24, struct.pack("<Q", 1 << 50), "string of \\d+ bytes runs past the end"),
    ],
)
def test_corrupted_header(smollm2_path: Path, tmp_path: Path, offset: int, data: bytes, match: str) -> None:
    path = corrupt(smollm2_path, tmp_path / "bad.gguf", offset, data)
    with pytest.raises(GGUFError, match=match):
        inspect_gguf(path)


def test_corrupted_value_type(smollm2_path: Path, tmp_path: Path) -> None:
    """The first key is ``general.architecture`` (8-byte length + 20 bytes); its value type follows."""
    type_offset = 24 + 8 + len(b"general.architecture")
    path = corrupt(smollm2_path, tmp_path / "bad.gguf", type_offset, struct.pack("<I", 99))
    with pytest.raises(GGUFError, match="unknown metadata value type 99"):
        inspect_gguf(path)


def test_corrupted_tensor_type(tmp_path: Path) -> None:
    """A tensor whose ggml type id is unknown (e.g. a file from a newer llama.cpp)."""
    path = write_lora(tmp_path / "a.gguf")
    blob = bytearray(path.read_bytes())
    name = b"blk.0.attn_q.weight.lora_a"
    at = blob.index(name) + len(name)
    n_dims = struct.unpack_from("<I", blob, at)[0]
    struct.pack_into("<I", blob, at + 4 + 8 * n_dims, 250)
    path.write_bytes(bytes(blob))
    with pytest.raises(GGUFError, match="tensor blk.0.attn_q.weight.lora_a has unknown type 250"):
        inspect_gguf(path)


def test_result_is_refreshed_when_the_file_changes(tmp_path: Path) -> None:
    """Memoised per (path, size, mtime): a file replaced in place is inspected again."""
    path = tmp_path / "m.gguf"
    write_lora(path, rank=4)
    assert dict(inspect_gguf(path).tensor_shapes)["blk.0.attn_q.weight.lora_a"] == (576, 4)
    write_lora(path, rank=8)
    assert dict(inspect_gguf(path).tensor_shapes)["blk.0.attn_q.weight.lora_a"] == (576, 8)


def test_layout_table_matches_gguf_py() -> None:
    """The module's own block layouts (it does not import gguf-py for the usual types) are gguf-py's."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    from langchain_dod.gguf_file import LAYOUTS

    for kind, (name, block, size) in LAYOUTS.items():
        assert GGMLQuantizationType(kind).name == name
        assert GGML_QUANT_SIZES[GGMLQuantizationType(kind)] == (block, size), name


def test_the_lean_path_does_not_import_gguf_py(tmp_path: Path) -> None:
    """gguf-py costs ~0.15 s of a cold ``dod decompose``; inspecting and checking the shipped files needs none of it.

    A fresh cache dir, so that the finite-weights scan really runs (no marker from an earlier run).
    """
    import os
    import subprocess

    code = (
        "import sys\nimport langchain_dod.cli, langchain_dod.decomposition, langchain_dod.engine\n"
        "from langchain_dod.gguf_file import check_finite, inspect_gguf\n"
        "from langchain_dod.decomposition import default_decomposer_model\nfrom langchain_dod.models import resolve\n"
        "model, adapter = default_decomposer_model()\n"
        "for path in (resolve(model), adapter):\n    inspect_gguf(path); check_finite(path)\n"
        "print(sorted(m for m in sys.modules if m == 'gguf' or m.startswith('gguf.')))"
    )
    env = {**os.environ, "DOD_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert len(list((tmp_path / "checked").iterdir())) == 2  # both files scanned and found finite


def test_a_string_in_a_token_list_that_runs_past_the_end(smollm2_path: Path, tmp_path: Path) -> None:
    """Token lists are skipped by a fast loop; it keeps the bounds check of every other string."""
    head = smollm2_path.read_bytes()[:200_000]
    key = b"tokenizer.ggml.tokens"
    first_length = head.index(key) + len(key) + 4 + 4 + 8  # value type, item type, count
    path = corrupt(smollm2_path, tmp_path / "bad.gguf", first_length, struct.pack("<Q", 1 << 50))
    with pytest.raises(GGUFError, match="string of \\d+ bytes runs past the end"):
        inspect_gguf(path)


def test_a_finite_file_is_remembered_on_disk_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process skips the finite-weights scan of a file already found finite; a rewritten file is scanned."""
    import numpy as np

    from langchain_dod import gguf_file

    monkeypatch.setenv("DOD_CACHE_DIR", str(tmp_path / "cache"))
    scans: list[str] = []
    real = gguf_file._check_finite.__wrapped__

    def scan(path: str, size: int, mtime_ns: int) -> None:
        scans.append(path)
        real(path, size, mtime_ns)

    monkeypatch.setattr(gguf_file, "_check_finite", scan)
    path = write_lora(tmp_path / "a.gguf")
    gguf_file.check_finite(path)
    gguf_file.check_finite(path)  # the marker: no second scan (the in-process memo is patched away here)
    assert len(scans) == 1 and len(list((tmp_path / "cache" / "checked").iterdir())) == 1

    blob = bytearray(path.read_bytes())  # the same file, same size, now with a NaN weight
    _, _, offset, _ = inspect_gguf(path).tensor_data[0]
    blob[offset : offset + 4] = np.array([np.nan], dtype=np.float32).tobytes()
    path.write_bytes(bytes(blob))
    with pytest.raises(GGUFError, match="holds NaN or Inf"):
        gguf_file.check_finite(path)
    assert len(scans) == 2
