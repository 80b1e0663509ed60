#!/usr/bin/env bash
# LoRA training speed and memory, side by side in one run on this machine: `tailor train` (candle,
# release build) vs Hugging Face TRL SFTTrainer + PEFT (tools/bench/train_hf.py), the tutorial
# recipe's settings on both sides, the same training rows, the same thread count, f32 and bf16.
#
#   tools/bench/train.sh [VENV]
#
# VENV is a Python venv with the pinned reference stack (torch 2.15.0, transformers 5.24.0,
# peft 0.21.2, trl 1.16.0, datasets, pillow; tools/reference/README.md), default /work/venv.
# Environment knobs: TINY=1 (train the tiny fixture model tests/fixtures/model/tied instead of the
# random mid-size model of make_bench_model.py), MAX_STEPS (3 optimizer steps; the first is
# warm-up and left out of the mean), PRECISIONS ("f32 bf16"), THREADS (2; RAYON_NUM_THREADS for
# candle, torch.set_num_threads for torch), ROWS (96 synthetic catalog rows), TEST_SIZE (0.33: with
# 96 rows the train split holds 64 rows, two full optimizer steps of 4 x 8 samples, so that no step
# is a short end-of-epoch one), MAX_WAIT (300: before each timed process, wait up to this many
# seconds for the machine to be idle, i.e. under 25 % busy over 3 s; the figures are printed),
# TAILOR=PATH (use this tailor binary instead of building one), HF_ONLY=1 (skip `tailor train`:
# the Hugging Face side alone, tailor's columns show "—"), KEEP=DIR (copy the work folder's configs, logs and JSON lines there before it is removed).
#
# Steps: build tailor (cargo build --release --locked); write the bench model; write a synthetic
# catalog (`tailor data synth`) and its split (`tailor data split`, whose "train" rows the HF side
# reads; tailor splits the same way from [data] test_size / valid_size); then per precision write a
# tailor TOML config equivalent to the HF settings and run `tailor train` and train_hf.py, each in
# its own process under `/usr/bin/time -v` for its peak RSS. Prints a Markdown table (s/step both
# sides, HF/tailor ratio, peak RSS both sides, tokens per step). Everything lives in a temporary
# folder that is removed at the end; nothing is written into the repository.
#
# tailor's per-step time comes from output_dir/log.jsonl (logging_steps = 1): the difference of
# consecutive entries' wall clock when the entries carry one, else each entry's
# samples / samples_per_second, else train_runtime / steps.
set -euo pipefail
venv=${1:-/work/venv}
py="$venv/bin/python"
threads=${THREADS:-2}
steps=${MAX_STEPS:-3}
precisions=${PRECISIONS:-f32 bf16}
rows=${ROWS:-96}
test_size=${TEST_SIZE:-0.33}
max_wait=${MAX_WAIT:-300}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
keep=${KEEP:-}
cleanup() {
  if [ -n "$keep" ]; then
    mkdir -p "$keep"
    (cd "$work" && find . \( -name '*.json' -o -name '*.jsonl' -o -name '*.toml' -o -name '*.time' -o -name '*.out' \
      -o -name busy \) -not -path './mid/*' -not -path './split/*' -print0 | xargs -0 -r cp --parents -t "$keep")
  fi
  rm -rf "$work"
}
trap cleanup EXIT
export HF_HUB_OFFLINE=1

cd "$root"
if [ -n "${TAILOR:-}" ]; then
  tailor=$TAILOR
else
  cargo build --release --locked --quiet
  target_dir=$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  tailor="$target_dir/release/tailor"
fi
hf_only=${HF_ONLY:-0}
if [ "$hf_only" != 1 ] && ! "$tailor" train --help >/dev/null 2>&1; then
  echo "$tailor has no 'train' command (HF_ONLY=1 runs the Hugging Face side alone)" >&2
  exit 1
fi

if [ "${TINY:-0}" = 1 ]; then
  model="$root/tests/fixtures/model/tied"
  label="tiny fixture (tied, hidden 64, 2 layers, vocab 768)"
else
  model="$work/mid"
  label="mid-size random (hidden 512, 8 layers, vision 256 × 8, vocab 768)"
  "$py" tools/bench/make_bench_model.py "$model" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
fi

"$tailor" data synth --out "$work/catalog.parquet" --rows "$rows" >/dev/null 2>&1
"$tailor" data split --dataset "$work/catalog.parquet" --out "$work/split" --test-size "$test_size" \
  --valid-size 0.5 --seed 42 >/dev/null 2>&1
train_rows=$("$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["train"]))' "$work/split/split.json")
if [ $(( train_rows % 32 )) -ne 0 ]; then
  echo "note: $train_rows train rows is not a multiple of 32 (4 x 8): some steps are short" >&2
fi

# shellcheck source=tools/bench/idle.sh
source "$(dirname "$0")/idle.sh"

config() { # precision -> tailor TOML equivalent to train_hf.py's SFTConfig / LoraConfig
  local prec=$1 bf16=false
  [ "$prec" = bf16 ] && bf16=true
  cat <<EOF
[model]
name_or_path = "$model"
dtype = "$prec"

[data]
dataset = "$work/catalog.parquet"
label_mask = "recipe"
test_size = $test_size
valid_size = 0.5
seed = 42

[lora]
r = 8
lora_alpha = 16
lora_dropout = 0.05
target_modules = ["q_proj", "v_proj"]
bias = "none"
task_type = "CAUSAL_LM"

[training]
output_dir = "$work/out.$prec"
max_steps = $steps
per_device_train_batch_size = 4
gradient_accumulation_steps = 8
gradient_checkpointing = true
gradient_checkpointing_kwargs = { use_reentrant = false }
optim = "adamw_torch"
learning_rate = 2e-4
lr_scheduler_type = "constant"
max_grad_norm = 0.3
logging_steps = 1
eval_strategy = "no"
save_strategy = "no"
bf16 = $bf16
seed = 42
report_to = "none"
# TRL's normalisation (mean of the micro-batch means): the logged losses then compare with HF's.
loss_normalization = "micro_batch_mean"
EOF
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for prec in $precisions; do
  config "$prec" >"$work/tailor.$prec.toml"
  if [ "$hf_only" != 1 ]; then
    wait_idle
    RAYON_NUM_THREADS=$threads /usr/bin/time -v -o "$work/tailor.$prec.time" \
      "$tailor" train --config "$work/tailor.$prec.toml" >"$work/tailor.$prec.out" 2>&1 \
      || { tail -40 "$work/tailor.$prec.out"; exit 1; }
  fi
  wait_idle
  /usr/bin/time -v -o "$work/hf.$prec.time" \
    "$py" tools/bench/train_hf.py "$model" "$work/catalog.parquet" --split "$work/split/split.json" \
    --precision "$prec" --max-steps "$steps" --threads "$threads" \
    >"$work/hf.$prec.json" 2>"$work/err" || { tail -40 "$work/err"; exit 1; }
done

echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), no GPU;" \
  "load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Model: $label. Catalog: $rows synthetic rows (tailor data synth), train split $train_rows rows;" \
  "LoRA r 8 / alpha 16 / dropout 0.05 on q_proj, v_proj; batch 4 × accumulation 8, gradient checkpointing," \
  "AdamW, lr 2e-4 constant, clip 0.3; $steps optimizer steps (step 1 = warm-up, not in the mean);" \
  "$threads threads each side."
echo "CPU busy (all cores, %) in the 3 s before each timed process: $(tr '\n' ' ' <"$work/busy")"
echo
"$py" tools/bench/train_hf.py table "$work" $precisions
