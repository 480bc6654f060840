#!/usr/bin/env bash
# Issue 12, session 15: the SD-R decomposer for program answers (smollm2-sdr-program.toml) trained on the part of
# the program screen that was finished (training/recipes/smollm2-sdr-program-shards.sh), then validated.
# N0 / N1: how many screened lines of shard 0 / shard 1 it used (the screen is append-only and in order, so the
# first N lines are the same records for everyone who reruns this). With the whole screen done, use the recipe:
# `dod-train distill training/recipes/smollm2-sdr-program.toml`.
#   training/recipes/smollm2-sdr-program-steps.sh data|train|export|val|all     (each step resumable)
set -eu
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
echo -10 > /proc/$$/autogroup 2>/dev/null || true
N0=${N0:?set N0}; N1=${N1:?set N1}
S=runs/smollm2-sdr R=runs/smollm2-sdr-program-$((N0 + N1))
STEP=${1:-all}

data() {
  mkdir -p $R
  { head -n "$N0" $S/shard0/screened-program.jsonl; head -n "$N1" $S/shard1/screened-program.jsonl; } > $R/screened.jsonl
  dod-train build --screened $R/screened.jsonl --kinds SD-R --val-fraction 0.1 --out $R/data --no-progress
}

# the [sft] table of smollm2-sdr-program.toml
train() {
  [ -d $R/sft/final ] || dod-train sft --data $R/data/train.jsonl --validation $R/data/validation.jsonl \
    --base smollm2-135m-instruct --out $R/sft --method lora --lora-r 16 --lora-alpha 32 --lora-dropout 0.05 \
    --learning-rate 5e-4 --epochs 3 --batch-size 8 --max-length 768 --warmup 0.03 --logging-steps 10 \
    --eval-steps 20 --save-steps 20 --save-total-limit 2 --keep-best --early-stopping 2 --threads 2 --no-progress \
    --resume
}

export_() {
  [ -f $R/export/adapter.gguf ] || dod-train export --model $R/sft/final --out $R/export
}

# the 100 validation items of benchmarks/results/eval/gsm8k-train-validation (none of the 1,000 SD-R questions)
val() {
  DOD_DECOMPOSER_ADAPTER=$R/export/adapter.gguf dod eval run --data ../shared/data/gsm8k/train.jsonl \
    --out benchmarks/results/eval/gsm8k-train-validation --limit 100 --seed 1 \
    --exclude benchmarks/results/eval/gsm8k-train-distilled/manifest.json --exclude $S/decompositions.jsonl \
    --solver llamacpp:qwen2.5-coder-1.5b-instruct --max-tokens 400 --n-threads 2 --chunk 5 --answer-format program \
    --decomposer default --label "sdrp$((N0 + N1))" --no-progress
}

case $STEP in
  data) data ;; train) train ;; export) export_ ;; val) val ;;
  all) data; train; export_; val ;;
  *) echo "usage: N0=.. N1=.. $0 [data|train|export|val|all]" >&2; exit 2 ;;
esac
