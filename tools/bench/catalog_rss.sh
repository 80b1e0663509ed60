#!/usr/bin/env bash
# Streaming over a DeepFashion-sized catalog: peak RSS and wall time of `tailor data stats`
# against the same pass with Hugging Face `datasets` + PIL, side by side on this machine.
#
#   tools/bench/catalog_rss.sh [ROWS] [VENV]
#
# ROWS defaults to 42537 (Marqo/deepfashion-multimodal); VENV is a Python venv with the pinned
# reference stack (tools/reference/README.md), default /work/venv. Prints a Markdown table.
set -euo pipefail
rows=${1:-42537}
venv=${2:-/work/venv}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
tailor="$root/target/release/tailor"
"$tailor" data synth --out "$work/data/data-00000-of-00001.parquet" --rows "$rows" 2>/dev/null
size=$(du -m "$work/data/data-00000-of-00001.parquet" | cut -f1)

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%M %e" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r kb secs <"$work/time"
  printf '| %s | %d | %.1f |\n' "$label" $((kb / 1024)) "$secs"
}

echo "Catalog: $rows rows, ${size} MB parquet (synthetic, HF layout), $(nproc) cores"
echo
echo "| pass | peak RSS (MiB) | wall (s) |"
echo "| --- | ---: | ---: |"
measure "tailor data stats (headers, categories, image + text tokens, split leak)" \
  "$tailor" data stats --dataset "$work" --json --group-by item_ID --group-pattern 'id_(\d+)'
measure "tailor data split --group-by" \
  "$tailor" data split --dataset "$work" --out "$work/split" --group-by item_ID --group-pattern 'id_(\d+)'
measure "HF datasets + PIL: load_dataset, iterate rows, image sizes, category counts" \
  env HF_HUB_OFFLINE=1 HF_DATASETS_CACHE="$work/hf-cache" "$venv/bin/python" "$root/tools/bench/catalog_rss_hf.py" "$work"
