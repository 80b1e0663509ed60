#!/usr/bin/env bash
# Image-processor throughput, side by side in one run: tailor-image (release, 1 thread) vs
# transformers 5.24's Qwen2VLImageProcessorPil and torchvision Qwen2VLImageProcessor (1 thread).
#
#   tools/bench/image_processor.sh [--images 200] [--repeats 5]
#
# Needs a Python with torch, torchvision, transformers 5.24 and pillow 13 (PYTHON, default
# /work/venv/bin/python). Results go into docs/benchmarks.md, "Image processor throughput".
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-/work/venv/bin/python}"
cargo build --release --quiet -p tailor-image --example image_processor_bench
target_dir="$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$PYTHON" tools/bench/image_processor.py "$target_dir/release/examples/image_processor_bench" "$@"
