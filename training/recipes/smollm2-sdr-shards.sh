#!/usr/bin/env bash
# The SD-R screening of training/recipes/smollm2-sdr.toml in two 1-thread shards, one per core (resumable: rerun it).
# Each shard decomposes its 500 questions (generate), then screens them as they come (screen --skip cot).
# Afterwards: cat runs/smollm2-sdr/shard*/decompositions.jsonl > runs/smollm2-sdr/decompositions.jsonl (same for
# screened.jsonl) and run `dod-train distill training/recipes/smollm2-sdr.toml`, which finds both stages done.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
MODEL=llamacpp:qwen2.5-coder-1.5b-instruct
EVAL=benchmarks/results/eval/gsm8k-train-distilled/manifest.json
shard() {  # shard S on core S
  local S=$1 D=runs/smollm2-sdr/shard$1
  mkdir -p "$D"
  taskset -c "$S" dod-train generate --data ../shared/data/gsm8k/train.jsonl --format gsm8k --exclude "$EVAL" \
    --offset $((S * 500)) --limit 500 --teacher "$MODEL" --max-subquestions 3 --out "$D/decompositions.jsonl" \
    --no-progress
  taskset -c "$S" dod-train screen --decompositions "$D/decompositions.jsonl" --solver "$MODEL" --skip cot \
    --out "$D/screened.jsonl" --no-progress
}
shard 0 & shard 1 &
wait
