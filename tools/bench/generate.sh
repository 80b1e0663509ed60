#!/usr/bin/env bash
# Generation throughput of the model stage, side by side in one run on this machine: tailor
# (candle, release build) vs Hugging Face transformers 5.24, both float32 on the CPU with the same
# thread count, the same prompt batch (same ids, same pixel_values) and greedy decoding.
#
#   tools/bench/generate.sh [VENV]
#
# VENV is a Python venv with the pinned reference stack (torch 2.15.0, transformers 5.24.0,
# torchvision, pillow; tools/reference/README.md), default /work/venv. Environment knobs:
# THREADS (2; RAYON_NUM_THREADS for candle, torch.set_num_threads for torch), NEW_TOKENS (32),
# REPEATS (5 timed runs per process after a warm-up), ROUNDS (2: tailor, HF, tailor, HF, ...; each
# phase reports its best time over all runs, the least disturbed by other work on the machine),
# BATCH (4), IMAGE_SIDE (224 px -> 64 image tokens per prompt), MAX_WAIT (300: before each timed
# process, wait up to this many seconds for the machine to be idle, i.e. under 25 % busy over 3 s;
# the busy figures seen are printed with the results).
#
# For the tiny fixture model (tests/fixtures/model/tied) and a random mid-size model written to a
# temporary folder by make_bench_model.py: build the prompt batch with transformers' processor
# (generate_hf.py inputs), run tailor's generate_bench example, then transformers
# (generate_hf.py bench), each in its own process under /usr/bin/time for its peak RSS, one after
# the other, ROUNDS times. Prints a Markdown table (tokens/s, tailor/HF ratio, peak RSS) and
# per-phase notes. Results go into docs/benchmarks.md, "Generation throughput (model stage)".
set -euo pipefail
venv=${1:-/work/venv}
py="$venv/bin/python"
threads=${THREADS:-2}
new_tokens=${NEW_TOKENS:-32}
repeats=${REPEATS:-5}
batch=${BATCH:-4}
side=${IMAGE_SIDE:-224}
rounds=${ROUNDS:-2}
max_wait=${MAX_WAIT:-300}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1

cd "$root"
cargo build --release --quiet --example generate_bench -p tailor-model
target_dir=$(cargo metadata --format-version 1 --no-deps | "$py" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bench="$target_dir/release/examples/generate_bench"
"$py" tools/bench/make_bench_model.py "$work/mid" >/dev/null 2>&1

# shellcheck source=tools/bench/idle.sh
source "$(dirname "$0")/idle.sh"

inputs() { # name, model dir
  "$py" tools/bench/generate_hf.py inputs "$2" "$work/$1.inputs.safetensors" \
    --batch "$batch" --image-side "$side" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
}

run() { # name, model dir, round
  local name=$1 dir=$2 r=$3
  wait_idle
  # Element-wise ops on the calling thread, as the `tailor` binary runs them (src/main.rs).
  RAYON_NUM_THREADS=$threads CANDLE_NUM_THREADS=${CANDLE_NUM_THREADS:-1} /usr/bin/time -f %M -o "$work/$name.tailor.$r.rss" \
    "$bench" "$dir" "$work/$name.inputs.safetensors" --new-tokens "$new_tokens" --repeats "$repeats" \
    >"$work/$name.tailor.$r.json" 2>"$work/err" || { cat "$work/err"; exit 1; }
  wait_idle
  /usr/bin/time -f %M -o "$work/$name.hf.$r.rss" \
    "$py" tools/bench/generate_hf.py bench "$dir" "$work/$name.inputs.safetensors" --new-tokens "$new_tokens" \
    --repeats "$repeats" --threads "$threads" --compare "$work/$name.tailor.$r.json" \
    >"$work/$name.hf.$r.json" 2>"$work/err" || { cat "$work/err"; exit 1; }
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
inputs tied tests/fixtures/model/tied
inputs mid "$work/mid"
for r in $(seq "$rounds"); do
  run tied tests/fixtures/model/tied "$r"
  run mid "$work/mid" "$r"
done
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), no GPU;" \
  "load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Batch of $batch recipe prompts, ${side}x${side} images ($(( (side / 28) * (side / 28) )) image tokens each)," \
  "greedy, $new_tokens new tokens per prompt, float32, $threads threads each side."
echo "CPU busy (all cores, %) in the 3 s before each timed process: $(tr '\n' ' ' <"$work/busy")"
echo
"$py" tools/bench/generate_hf.py table "$work" \
  "tied:tiny fixture (tied, hidden 64, 2 layers)" \
  "mid:mid-size random (hidden 512, 8 layers, vision 256 × 8)"
