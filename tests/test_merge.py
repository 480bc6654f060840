"""Merging a LoRA adapter into its base once (langchain_dod.merge), with the real SmolLM2 base.

The adapter here is a small one the test writes (rank 2 on two weights), so the merge is quick and its result
can be checked exactly against numpy; the merged file is then loaded and run by llama.cpp for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from langchain_dod.merge import MergeError, merge_lora, merged_gguf

ADAPTED = ("blk.0.attn_q.weight", "blk.3.ffn_up.weight")


def _write_adapter(
    path: Path, base: Path, *, rank: int = 2, alpha: float = 4.0, nan: bool = False, names: tuple[str, ...] = ADAPTED
) -> dict[str, np.ndarray]:
    """A GGUF LoRA adapter on ``names`` (llama.cpp's layout: lora_a (r, in), lora_b (out, r)); returns the deltas."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.quants import quant_shape_from_byte_shape

    shapes = {
        t.name: quant_shape_from_byte_shape(t.data.shape, t.tensor_type)
        if t.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
        else t.data.shape
        for t in GGUFReader(str(base)).tensors
    }
    rng = np.random.default_rng(0)
    writer = GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    deltas = {}
    for name in names:
        out_dim, in_dim = shapes.get(name, (8, 8))
        a = (rng.standard_normal((rank, in_dim)) * 0.05).astype(np.float16)
        b = (rng.standard_normal((out_dim, rank)) * 0.05).astype(np.float16)
        if nan:
            a[0, 0] = np.nan
        writer.add_tensor(name + ".lora_a", a)
        writer.add_tensor(name + ".lora_b", b)
        deltas[name] = (alpha / rank) * (b.astype(np.float32) @ a.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return deltas


@pytest.fixture(scope="module")
def merged(tmp_path_factory, smollm2_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """One adapter merged once through the cache: (adapter, merged file, deltas)."""
    folder = tmp_path_factory.mktemp("merge")
    deltas = _write_adapter(folder / "lora.gguf", smollm2_path)
    return folder / "lora.gguf", merged_gguf(smollm2_path, folder / "lora.gguf", cache=folder / "cache"), deltas


def test_merge_adds_the_lora_product_and_copies_the_rest(merged, smollm2_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    _, out, deltas = merged
    base = {t.name: t for t in GGUFReader(str(smollm2_path)).tensors}
    merged = {t.name: t for t in GGUFReader(str(out)).tensors}
    assert set(merged) == set(base)
    for name, tensor in merged.items():
        if name in deltas:
            expected = dequantize(base[name].data, base[name].tensor_type) + deltas[name]
            got = dequantize(tensor.data, tensor.tensor_type)
            assert tensor.tensor_type.name == "Q8_0"
            assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()  # Q8_0 rounding only
        else:
            assert tensor.tensor_type == base[name].tensor_type
            assert np.array_equal(np.asarray(tensor.data), np.asarray(base[name].data))  # byte for byte


def test_a_q4_0_merge_rounds_to_4_bits_and_runs_in_llama_cpp(tmp_path, smollm2_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from langchain_dod import ChatGGUF

    deltas = _write_adapter(tmp_path / "lora.gguf", smollm2_path)
    out = merge_lora(smollm2_path, tmp_path / "lora.gguf", tmp_path / "q4.gguf", qtype="Q4_0")
    base = {t.name: t for t in GGUFReader(str(smollm2_path)).tensors}
    reader = GGUFReader(str(out))
    assert int(reader.fields["general.file_type"].contents()) == 2  # LlamaFileType.MOSTLY_Q4_0
    for tensor in reader.tensors:
        if tensor.name in deltas:
            expected = dequantize(base[tensor.name].data, base[tensor.name].tensor_type) + deltas[tensor.name]
            assert tensor.tensor_type.name == "Q4_0"
            got = dequantize(tensor.data, tensor.tensor_type)
            # 4 bits per weight and a scale per 32: within a sixteenth of each block's largest weight
            assert np.abs(got - expected).max() <= np.abs(expected).max() / 16 + 1e-6
    reply = ChatGGUF(model=str(out), max_tokens=4, n_threads=1).invoke("Say hi.")
    assert isinstance(reply.content, str) and reply.usage_metadata["output_tokens"] >= 1


def test_merged_file_is_cached_reused_and_runs_in_llama_cpp(merged, smollm2_path):
    import hashlib

    from langchain_dod import ChatGGUF

    adapter, first, _ = merged
    stamp = first.stat().st_mtime_ns
    assert merged_gguf(smollm2_path, adapter, cache=first.parent) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not merged again
    assert hashlib.sha256(adapter.read_bytes()).hexdigest()[:16] in first.name  # another adapter: another file
    reply = ChatGGUF(model=str(first), max_tokens=4, n_threads=1).invoke("Say hi.")
    assert isinstance(reply.content, str) and reply.usage_metadata["output_tokens"] >= 1


def test_a_damaged_cache_file_is_rebuilt_with_a_warning(tmp_path, smollm2_path):
    _write_adapter(tmp_path / "lora.gguf", smollm2_path)
    path = merged_gguf(smollm2_path, tmp_path / "lora.gguf", cache=tmp_path / "cache")
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.warns(UserWarning, match="damaged"):
        again = merged_gguf(smollm2_path, tmp_path / "lora.gguf", cache=tmp_path / "cache")
    assert again == path and path.stat().st_size == size


def test_two_processes_merging_at_once_share_one_file(tmp_path, smollm2_path):
    _write_adapter(tmp_path / "lora.gguf", smollm2_path)
    code = (
        "import sys; from langchain_dod.merge import merged_gguf; "
        f"print(merged_gguf({str(smollm2_path)!r}, {str(tmp_path / 'lora.gguf')!r}, cache={str(tmp_path / 'c')!r}))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and Path(outs[0]).is_file()
    assert [p.name for p in (tmp_path / "c").iterdir() if p.suffix != ".lock"] == [Path(outs[0]).name]  # no tmp left


def test_adapters_that_do_not_fit_are_clear_errors(tmp_path, smollm2_path):
    _write_adapter(tmp_path / "wrong.gguf", smollm2_path, names=("blk.99.attn_q.weight",))
    with pytest.raises(MergeError, match="wrong base"):
        merge_lora(smollm2_path, tmp_path / "wrong.gguf", tmp_path / "m.gguf")
    _write_adapter(tmp_path / "nan.gguf", smollm2_path, nan=True)
    with pytest.raises(MergeError, match="not finite"):
        merge_lora(smollm2_path, tmp_path / "nan.gguf", tmp_path / "m.gguf")
    with pytest.raises(MergeError, match="not a GGUF LoRA|no adapter.lora.alpha"):
        merge_lora(smollm2_path, smollm2_path, tmp_path / "m.gguf")
    with pytest.raises(MergeError, match="qtype"):
        merge_lora(smollm2_path, tmp_path / "nan.gguf", tmp_path / "m.gguf", qtype="Q4_1")
    assert not (tmp_path / "m.gguf").exists()  # a refused merge writes nothing


def test_an_unwritable_cache_is_a_clear_error(tmp_path, smollm2_path, monkeypatch):
    from langchain_dod import ChatGGUF
    from langchain_dod.engine import ModelLoadError

    _write_adapter(tmp_path / "lora.gguf", smollm2_path)
    (tmp_path / "not-a-folder").write_text("a file where the cache folder should be")
    monkeypatch.setenv("DOD_CACHE_DIR", str(tmp_path / "not-a-folder"))
    llm = ChatGGUF(model=str(smollm2_path), lora_path=str(tmp_path / "lora.gguf"), merge_lora=True, n_threads=1)
    with pytest.raises(ModelLoadError, match="Could not write the merged model.*DOD_CACHE_DIR.*merge_lora=False"):
        llm.load()


def test_dod_says_when_it_merges_and_not_when_the_merge_is_cached(tmp_path, smollm2_path):
    _write_adapter(tmp_path / "lora.gguf", smollm2_path)
    argv = [sys.executable, "-m", "langchain_dod.cli", "decompose", "--json", "--threads", "1"]
    argv += ["--decomposer", str(smollm2_path), "--adapter", str(tmp_path / "lora.gguf"), "--merge-adapter", "2+2?"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DOD_CACHE_DIR": str(tmp_path / "cache")}
    first, again = (subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300) for _ in range(2))
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "dod: Merging lora.gguf into" in first.stderr and "once" in first.stderr
    assert "Merging" not in again.stderr  # the cached file is used
    assert len(list((tmp_path / "cache" / "merged").glob("*.gguf"))) == 1
