#!/usr/bin/env bash
# The SD-R screen of training/recipes/smollm2-sdr-program.toml in two 1-thread shards, one per core (resumable:
# rerun it). It screens the teacher decompositions already made for smollm2-sdr (runs/smollm2-sdr/shard*/
# decompositions.jsonl, committed) with the solver writing programs (--answer-format program), learned skip included.
# Afterwards: mkdir -p runs/smollm2-sdr-program; cat runs/smollm2-sdr/shard*/decompositions.jsonl >
# runs/smollm2-sdr-program/decompositions.jsonl; cat runs/smollm2-sdr/shard*/screened-program.jsonl >
# runs/smollm2-sdr-program/screened.jsonl; then `dod-train distill training/recipes/smollm2-sdr-program.toml`.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
MODEL=llamacpp:qwen2.5-coder-1.5b-instruct
shard() {  # shard S on core S
  local D=runs/smollm2-sdr/shard$1
  taskset -c "$1" dod-train screen --decompositions "$D/decompositions.jsonl" --solver "$MODEL" --skip cot \
    --answer-format program --out "$D/screened-program.jsonl" --no-progress
}
shard 0 & shard 1 &
wait
