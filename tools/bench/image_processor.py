#!/usr/bin/env python3
"""Image-processor throughput: tailor-image vs transformers 5.24's PIL and torchvision processors.

Run through `tools/bench/image_processor.sh`, which builds the Rust side and passes its binary:

    python tools/bench/image_processor.py <image_processor_bench binary> [--images 200] [--repeats 5]

Writes catalog-sized photo-like PNGs (half 256x376, half 750x1101, width x height) into a
temporary directory, one folder per size; every contender gets the same decoded pixels (Python opens them with Pillow,
Rust with tailor-image's PNG decoder, identical for 8-bit RGB PNGs). All three run on one thread
(torch.set_num_threads(1), OMP/MKL threads 1) with the Qwen2.5-VL-3B config, in batches of 8, as a
collator would call them. Decoding is not timed. The Rust run also proves bit-identity: its
per-image checksums of the pixel_values bits must equal the ones computed here from
Qwen2VLImageProcessorPil's output.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Qwen2VLImageProcessor, Qwen2VLImageProcessorPil  # noqa: E402

CONFIG = {"min_pixels": 3136, "max_pixels": 12845056}  # Qwen2.5-VL-3B-Instruct
SIZES = [(256, 376), (750, 1101)]  # (width, height)
BATCH = 8


def photo(h, w, rng):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = rng.uniform(5, 40, 2)
    planes = [128 + 100 * np.sin(x / fx + c) * np.cos(y / fy - c) for c in range(3)]
    img = np.stack(planes, -1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def checksum(values):
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).ravel().astype(np.uint64)
    weights = (np.arange(bits.size, dtype=np.uint64) % np.uint64(65521)) + np.uint64(1)
    return int(np.sum(bits * weights, dtype=np.uint64))


def time_python(processor, images, repeats):
    processor(images=images[:BATCH])  # warm-up
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), BATCH):
            processor(images=images[i:i + BATCH])
        passes.append(time.perf_counter() - start)
    return statistics.median(passes)


def run_rust(binary, directory, repeats):
    out = subprocess.run(
        [binary, str(directory), str(repeats), str(BATCH)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    rng = np.random.default_rng(0)
    per_size = args.images // len(SIZES)
    results = {}  # (w, h) -> {name: seconds per pass}
    identical = True
    pil = Qwen2VLImageProcessorPil(**CONFIG)
    tv = Qwen2VLImageProcessor(**CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in SIZES:
            directory = Path(tmp) / f"{w}x{h}"
            directory.mkdir()
            for i in range(per_size):
                Image.fromarray(photo(h, w, rng)).save(directory / f"{i:04d}.png")
            images = []
            for p in sorted(directory.glob("*.png")):
                with Image.open(p) as im:
                    im.load()
                    images.append(im.copy())
            want = [checksum(pil(images=[im])["pixel_values"]) for im in images]
            rust = run_rust(args.binary, directory, args.repeats)
            identical &= [int(c) for c in rust["checksums"]] == want
            results[(w, h)] = {
                "rust": rust["median_s"],
                "pil": time_python(pil, images, args.repeats),
                "tv": time_python(tv, images, args.repeats),
            }

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    names = [
        ("rust", "tailor-image (Rust, 1 thread)"),
        ("pil", "transformers Qwen2VLImageProcessorPil"),
        ("tv", "transformers Qwen2VLImageProcessor (torchvision, 1 thread)"),
    ]
    total = {key: sum(r[key] for r in results.values()) for key, _ in names}
    print(f"{per_size * len(SIZES)} images ({per_size} of each size, width x height), batches of {BATCH}, "
          f"median of {args.repeats} passes, Qwen2.5-VL-3B config")
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
          f"transformers {transformers.__version__}, pillow {PIL.__version__}, torch {torch.__version__}, "
          f"numpy {np.__version__}")
    print(f"pixel_values bit-identical to Qwen2VLImageProcessorPil on all {per_size * len(SIZES)} images: "
          f"{'yes' if identical else 'NO'}")
    print()
    print("| processor | images | images/s | ms/image | tailor-image speed-up |")
    print("| --- | --- | ---: | ---: | ---: |")
    for key, name in names:
        for (w, h), r in results.items():
            print(f"| {name} | {w}x{h} | {per_size / r[key]:.1f} | {1000 * r[key] / per_size:.2f} | "
                  f"{r[key] / r['rust']:.1f}x |")
        n = per_size * len(SIZES)
        print(f"| {name} | all | {n / total[key]:.1f} | {1000 * total[key] / n:.2f} | "
              f"{total[key] / total['rust']:.1f}x |")
    if not identical:
        raise SystemExit("checksums differ: tailor-image is not bit-identical on this set")


if __name__ == "__main__":
    main()
