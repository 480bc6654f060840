#!/usr/bin/env bash
# Issue 12, step 3: train the SD-R candidates and choose one on validation (loss and accuracy), after the screening
# of training/recipes/smollm2-sdr-shards.sh. Every step is resumable: rerun the script and finished steps are skipped.
#
#   A  sdr-lora   SD-R targets (kept teacher plans + learned skips), LoRA r16 (the recipe smollm2-sdr.toml)
#   B  sdr-full   the same data, full fine-tune
#   C  sdr-mix    SD-R + the 782 GSM8K *test* Socratic plans that are complete in <= 3 steps (all steps, the last one
#                 kept), LoRA r16. The test split is safe here: the evaluation items are GSM8K *train* items.
#   D  sdr-cotskip (session 7, step `cotskip`) SD-R where a kept plan becomes a skip when the solver's own CoT also
#                 solves the question (`dod-train build --skip-where-solved`): plan only where planning is what
#                 worked. Needs a CoT run over the 298 kept questions (runs/cot-kept, resumable), LoRA r16 as A.
#
# All three share one validation split (10 % of the screened questions, split by question), so their validation
# losses compare. Validation accuracy: each exported candidate decomposes 100 GSM8K-train items that no candidate
# trained on (seed 1, the 400 evaluation items and the 1,000 SD-R questions excluded) for the Qwen 1.5B solver.
set -eu
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
# This kernel groups processes by session (sched_autogroup): `nice` does not act between sessions, the group's weight
# does. Give this job's group priority over interactive work (root only; harmless elsewhere).
echo -10 > /proc/$$/autogroup 2>/dev/null || true
R=runs/smollm2-sdr
STEP=${1:-all}   # data | train | export | val | eval400 | cotskip | full | all

# The SD-R records every candidate trains on (one validation split for all).
sdr_data() {
  cat $R/shard*/decompositions.jsonl > $R/decompositions.jsonl  # the questions the validation items exclude
  cat $R/shard*/screened.jsonl > $R/screened.jsonl
  dod-train build --screened $R/screened.jsonl --kinds SD-R --val-fraction 0.1 --out $R/data --no-progress
}

data() {
  sdr_data
  dod-train generate --data ../shared/data/gsm8k/test_socratic.jsonl --format socratic --teacher given --cap 3 \
    --overflow skip --keep-restatement --max-subquestions 3 --out runs/socratic-complete/decompositions.jsonl \
    --no-progress
  dod-train build --decompositions runs/socratic-complete/decompositions.jsonl --kinds SD-T --val-fraction 0 \
    --out runs/socratic-complete/data --no-progress
  mkdir -p runs/sdr-mix
  cat $R/data/train.jsonl runs/socratic-complete/data/train.jsonl > runs/sdr-mix/train.jsonl
}

# Measured for the multihop recipe (batch 8, ~200 tokens): 14 s/step at 2 threads with the cores otherwise idle.
# Two 1-thread trainings, one per core, get more done than one 2-thread training after the other.
SFT="--base smollm2-135m-instruct --validation $R/data/validation.jsonl --batch-size 8 --max-length 768
  --warmup 0.03 --logging-steps 10 --eval-steps 20 --save-steps 20 --save-total-limit 2 --keep-best --early-stopping 2 --threads 1
  --no-progress --resume"
# The validation run of a candidate: 100 GSM8K-train items that no candidate trained on (see val below).
V="dod eval run --data ../shared/data/gsm8k/train.jsonl --out benchmarks/results/eval/gsm8k-train-validation
  --limit 100 --seed 1 --exclude benchmarks/results/eval/gsm8k-train-distilled/manifest.json
  --exclude $R/decompositions.jsonl --solver llamacpp:qwen2.5-coder-1.5b-instruct --max-tokens 400 --n-threads 1
  --chunk 5 --no-progress"
train() {
  [ -d runs/sdr-lora/final ] || taskset -c 0 dod-train sft --data $R/data/train.jsonl --out runs/sdr-lora \
    --learning-rate 5e-4 --epochs 3 $SFT > runs/sdr-lora.log 2>&1 &
  [ -d runs/sdr-mix/final ] || taskset -c 1 dod-train sft --data runs/sdr-mix/train.jsonl --out runs/sdr-mix \
    --learning-rate 5e-4 --epochs 2 $SFT > runs/sdr-mix.log 2>&1 &
  wait
  full_train
}

# Candidate B alone (session 16; A and C were trained in session 3): `smollm2-sdr-candidates.sh full` builds the SD-R
# data if missing, fine-tunes every weight at 2 threads, exports the merged Q8_0 GGUF and runs its validation row.
full_train() {
  [ -d runs/sdr-full/final ] || dod-train sft --data $R/data/train.jsonl --out runs/sdr-full --method full \
    --learning-rate 5e-5 --epochs 3 ${SFT/--threads 1/--threads 2} > runs/sdr-full.log 2>&1
}
full_export() {
  ls runs/sdr-full/export/*.gguf >/dev/null 2>&1 || dod-train export --model runs/sdr-full/final \
    --out runs/sdr-full/export --kind merged --outtype q8_0
}
full() {
  [ -f $R/data/train.jsonl ] || sdr_data
  full_train; full_export
  ${V/--n-threads 1/--n-threads 2} --decomposer "$(full_gguf)" --label sdr-full-eqp
}
full_gguf() { ls runs/sdr-full/export/*.gguf | head -1; }  # the Q8_0 file (sorts before model-f16)

export_() {
  [ -f runs/sdr-lora/export/adapter.gguf ] || dod-train export --model runs/sdr-lora/final --out runs/sdr-lora/export
  [ -f runs/sdr-mix/export/adapter.gguf ] || dod-train export --model runs/sdr-mix/final --out runs/sdr-mix/export
  full_export
}

# Two-stage runs carry the solver wording's id: since session 4 the wording is `equations+` (see
# benchmarks/results/solver_wording/DECISIONS.md), hence the -eqp labels (the session-3 runs stay beside them).
val() {
  (DOD_DECOMPOSER_ADAPTER=runs/sdr-lora/export/adapter.gguf taskset -c 0 $V --decomposer default --label sdr-lora-eqp
   taskset -c 0 $V --decomposer "$(full_gguf)" --label sdr-full-eqp) &
  (DOD_DECOMPOSER_ADAPTER=runs/sdr-mix/export/adapter.gguf taskset -c 1 $V --decomposer default --label sdr-mix-eqp
   taskset -c 1 $V --single-stage cot --decomposer llamacpp:smollm2-135m-instruct --label eqp) &
  wait
}

# Issue 12, step 4: the 400 evaluation items (GSM8K train, seed 0; benchmarks/results/eval/gsm8k-train-distilled),
# every two-stage run with today's wording. WINNER is the adapter chosen on validation (default: candidate A).
# One process per core; each rerun continues where it stopped.
# Since session 5 candidate A ships as the default (langchain_dod/data); the v2 adapter it replaced is taken from the
# git history under its own file name, so its run continues (a run is tied to its adapter's bytes, not its path).
V2_COMMIT=416eda292f9ca41d7b1251846e89311b68349d4b
eval400() {
  WINNER=${WINNER:-langchain_dod/data/smollm2-135m-decomposer-lora.gguf}
  V2=runs/v2/smollm2-135m-decomposer-lora.gguf
  [ -f $V2 ] || { mkdir -p runs/v2; git show $V2_COMMIT:langchain_dod/data/smollm2-135m-decomposer-lora.gguf > $V2; }
  E="dod eval run --data ../shared/data/gsm8k/train.jsonl --out benchmarks/results/eval/gsm8k-train-distilled
    --limit 400 --seed 0 --solver llamacpp:qwen2.5-coder-1.5b-instruct --max-tokens 400 --n-threads 1 --chunk 5
    --no-progress"
  # The shipped adapter (A) with the single-stage baselines (one command interleaves them, so they grow to the same
  # n), and the teacher, first: the targets compare them. Then the replaced v2 and the untuned base.
  # ONE_CORE=1 runs all of it in that order on core 0, leaving core 1 to another job (e.g. a training).
  # DOD_DECOMPOSER_MERGE=0: these runs measured the adapter applied at run time (since session 8 the default merges
  # it; benchmarks/merged_accuracy.py scores the merged one against this run).
  a() { DOD_DECOMPOSER_MERGE=0 DOD_DECOMPOSER_ADAPTER=$WINNER taskset -c ${1:-0} $E --decomposer default --label sdr-eqp \
          --single-stage cot --single-stage direct; }
  teacher() { taskset -c ${1:-1} $E --decomposer llamacpp:qwen2.5-coder-1.5b-instruct --label eqp; }
  v2() { DOD_DECOMPOSER_ADAPTER=$V2 taskset -c ${1:-0} $E --decomposer default --label v2-eqp; }
  untuned() { taskset -c ${1:-1} $E --decomposer llamacpp:smollm2-135m-instruct --label eqp; }
  if [ "${ONE_CORE:-0}" = 1 ]; then
    a 0; teacher 0; v2 0; untuned 0
  else
    (a; v2) & (teacher; untuned) &
    wait
  fi
}

# Candidate D. The CoT run goes over exactly the questions whose plan was kept (all other train ids excluded), with
# the evaluation's solver, settings and correctness rule; then D's data, its LoRA, its export and its validation run.
cotskip() {
  KEPT_COT=benchmarks/results/eval/gsm8k-train-sdr-kept-cot  # committed: CoT on the 298 kept questions (~1 h)
  SOLVER="--solver llamacpp:qwen2.5-coder-1.5b-instruct --max-tokens 400 --n-threads 1 --chunk 5 --no-progress"
  mkdir -p runs/cot-kept
  python - <<'PY'
import json
kept = {r["id"] for r in map(json.loads, open("runs/smollm2-sdr/screened.jsonl"))
        if r["correct"] and r["subquestions"] and "first" not in r and "cot" not in r}
n = sum(1 for _ in open("../shared/data/gsm8k/train.jsonl"))
with open("runs/cot-kept/exclude.jsonl", "w") as f:
    f.writelines(json.dumps({"id": f"train-{i}"}) + "\n" for i in range(n) if f"train-{i}" not in kept)
PY
  taskset -c ${CORE:-1} dod eval run --data ../shared/data/gsm8k/train.jsonl --out $KEPT_COT --seed -1 \
    --exclude runs/cot-kept/exclude.jsonl --single-stage cot $SOLVER
  dod-train build --screened $R/screened.jsonl --kinds SD-R --val-fraction 0.1 --no-progress \
    --skip-where-solved $KEPT_COT/runs/cot__qwen2.5-coder-1.5b-instruct.jsonl --out runs/sdr-cotskip/data
  [ -d runs/sdr-cotskip/final ] || taskset -c ${CORE:-1} dod-train sft --data runs/sdr-cotskip/data/train.jsonl \
    --out runs/sdr-cotskip --learning-rate 5e-4 --epochs 3 \
    ${SFT/$R\/data\/validation.jsonl/runs\/sdr-cotskip\/data\/validation.jsonl} > runs/sdr-cotskip.log 2>&1
  [ -f runs/sdr-cotskip/export/adapter.gguf ] || dod-train export --model runs/sdr-cotskip/final \
    --out runs/sdr-cotskip/export
  DOD_DECOMPOSER_ADAPTER=runs/sdr-cotskip/export/adapter.gguf taskset -c ${CORE:-1} dod eval run \
    --data ../shared/data/gsm8k/train.jsonl --out benchmarks/results/eval/gsm8k-train-validation --limit 100 --seed 1 \
    --exclude benchmarks/results/eval/gsm8k-train-distilled/manifest.json --exclude $R/decompositions.jsonl \
    --decomposer default --label sdr-cotskip-eqp $SOLVER
}

case $STEP in
  data) data ;; train) train ;; export) export_ ;; val) val ;; eval400) eval400 ;; cotskip) cotskip ;; full) full ;;
  all) data; train; export_; val ;;
  *) echo "usage: $0 [data|train|export|val|eval400|cotskip|full|all]" >&2; exit 2 ;;
esac
