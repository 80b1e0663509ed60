#!/usr/bin/env python3
"""Generation benchmark, Hugging Face side (run through tools/bench/generate.sh).

Two commands:

    generate_hf.py inputs MODEL_DIR OUT.safetensors [--batch 4] [--image-side 224]
    generate_hf.py bench  MODEL_DIR INPUTS.safetensors [--new-tokens 32] [--repeats 3] [--threads 2]
                          [--compare TAILOR.json]
    generate_hf.py table  WORK_DIR NAME:LABEL...

`inputs` builds the prompt batch once with transformers 5.24's Qwen2_5_VLProcessor (the PIL image
processor, built by hand as tools/reference/model_fixtures.py does; left padding): BATCH recipe
chats (system prompt, one image, "What is this product?", generation prompt), each with its own
IMAGE_SIDE x IMAGE_SIDE photo-like image (224 px -> a 16x16 patch grid -> 64 image tokens). It
writes input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw and, for
cross-checking, transformers' M-RoPE position_ids [3, B, L] and rope_deltas [B, 1]. Both contenders
read this file, so they see the same pixels and ids.

`bench` runs transformers (float32, eager attention, CPU, torch.set_num_threads(THREADS)) on those
inputs and prints one JSON line:

- prefill: one forward over the whole prompt batch with a cache and logits at the last position
  only (`logits_to_keep=1`, as generate's own prefill does);
- generate: `model.generate(**inputs, do_sample=False, max_new_tokens=N)` with the eos ids removed
  (so every row yields exactly N tokens and tailor can run the same N argmax steps), end to end;
- decode: the N - 1 one-token steps alone (the first token comes from the prefill), timed inside
  generate() by a streamer that records when each chosen token arrives (last minus first);
- vision: the vision tower alone (`get_image_features`), for the where-the-time-goes notes.

Each timing is the best of REPEATS runs after one warm-up run (medians are reported too; the best
run is the least disturbed by other processes on a shared machine). With --compare, the JSON of
tailor's generate_bench is read and the line also reports the largest difference of the prefill
logits and how many generated ids agree.

`table` prints the Markdown comparison of the runs that generate.sh left in WORK_DIR
(NAME.tailor.ROUND.json, NAME.hf.ROUND.json and the `/usr/bin/time -f %M` peak RSS files
NAME.tailor.ROUND.rss, NAME.hf.ROUND.rss): per side the best time of every phase over all rounds,
the largest peak RSS.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path


# Thread pools must be sized before torch is imported (bench_threads does it on import).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_threads  # noqa: E402,F401

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from hf_processor import build_processor  # noqa: E402

SYSTEM = (
    "You are a fashion product expert assistant who excels at identifying product types from images "
    "and generating concise descriptions."
)
USER = "What is this product?"
# Peak resident memory of this process once torch and transformers are imported (before any model).
RSS_AFTER_IMPORT_MIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
INPUT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")


def photo(seed: int, side: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    fx, fy = rng.uniform(5, 40, 2)
    planes = [128 + 100 * np.sin(x / fx + c) * np.cos(y / fy - c) for c in range(3)]
    img = np.stack(planes, -1) + rng.normal(0, 8, (side, side, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def processor_for(model_dir: Path, side: int) -> Qwen2_5_VLProcessor:
    # Pin the resize so that every model gets the same grid whatever its own pixel limits.
    return build_processor(model_dir, padding_side="left", pixels=side * side)


def load_model(model_dir: Path):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model


def make_inputs(args) -> None:
    model_dir = Path(args.model)
    processor = processor_for(model_dir, args.image_side)
    chat = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": USER}]},
    ]
    text = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    images = [photo(100 + i, args.image_side) for i in range(args.batch)]
    batch = dict(processor(text=[text] * args.batch, images=images, return_tensors="pt", padding=True))
    model = load_model(model_dir)
    with torch.no_grad():
        positions, deltas = model.model.get_rope_index(
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"],
            attention_mask=batch["attention_mask"],
        )
    tensors = {k: batch[k].contiguous() for k in INPUT_KEYS}
    tensors["pixel_values"] = tensors["pixel_values"].float()
    for k in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
        tensors[k] = tensors[k].to(torch.int64)
    tensors["position_ids"] = positions.to(torch.int64).contiguous()
    tensors["rope_deltas"] = deltas.to(torch.int64).reshape(-1, 1).contiguous()
    save_file(tensors, args.out)
    grid = batch["image_grid_thw"][0].tolist()
    print(
        f"{args.out}: batch {args.batch} x {batch['input_ids'].shape[1]} tokens, "
        f"{grid[1] * grid[2] // 4} image tokens per prompt, pixel_values {list(tensors['pixel_values'].shape)}"
    )


def time_it(fn, repeats: int):
    """(best, median, last result) of `repeats` timed calls after one warm-up call."""
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def bench(args) -> None:
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    model = load_model(model_dir)
    t = load_file(args.inputs)
    inputs = {k: t[k] for k in INPUT_KEYS}
    b, l = inputs["input_ids"].shape
    n = args.new_tokens
    pad = model.generation_config.pad_token_id
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=n, pad_token_id=pad, eos_token_id=None)

    def prefill():
        model.model.rope_deltas = None
        with torch.no_grad():
            return model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1].float()

    class Clock:
        """A generate() streamer that only records when each put() arrives: first the prompt, then
        every chosen token (the first one right after the prefill)."""

        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def generate():
        model.model.rope_deltas = None
        with torch.no_grad():
            return model.generate(**inputs, generation_config=gen_cfg)

    def decode():
        """(seconds from the first chosen token to the last, sequences) of one generate() call."""
        model.model.rope_deltas = None
        clock = Clock()
        with torch.no_grad():
            seqs = model.generate(**inputs, generation_config=gen_cfg, streamer=clock)
        assert len(clock.times) == n + 1, len(clock.times)
        return clock.times[-1] - clock.times[1], seqs

    def vision():
        with torch.no_grad():
            return model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])

    prefill_s, prefill_med, logits = time_it(prefill, args.repeats)
    generate_s, generate_med, sequences = time_it(generate, args.repeats)
    vision_s, _, _ = time_it(vision, args.repeats)
    decode()  # warm-up
    decodes = [decode() for _ in range(args.repeats)]
    decode_s = min(d for d, _ in decodes)
    decode_med = statistics.median(d for d, _ in decodes)
    assert all(torch.equal(seqs, sequences) for _, seqs in decodes)
    generated = sequences[:, l:].tolist()
    assert all(len(row) == n for row in generated), [len(r) for r in generated]
    result = {
        "side": "transformers",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "threads": torch.get_num_threads(),
        "batch": b,
        "prompt_len": l,
        "prompt_tokens": int(inputs["attention_mask"].sum()),
        "new_tokens": n,
        "repeats": args.repeats,
        "rss_after_import_mib": RSS_AFTER_IMPORT_MIB,
        "prefill_s": prefill_s,
        "prefill_median_s": prefill_med,
        "generate_s": generate_s,
        "generate_median_s": generate_med,
        "decode_s": decode_s,
        "decode_median_s": decode_med,
        "vision_s": vision_s,
        "prefill_tok_s": int(inputs["attention_mask"].sum()) / prefill_s,
        "decode_tok_s": b * (n - 1) / decode_s,
        "generated": generated,
    }
    if args.compare:
        other = json.loads(Path(args.compare).read_text())
        theirs = torch.tensor(other["prefill_logits"], dtype=torch.float32)
        result["prefill_logits_max_abs_diff"] = float((theirs - logits).abs().max())
        result["prefill_logits_max_abs"] = float(logits.abs().max())
        same = sum(a == c for ra, rc in zip(other["generated"], generated) for a, c in zip(ra, rc))
        # Ids agree up to the first near-tie; after a divergence the continuations differ anyway.
        prefix = [next((i for i, (a, c) in enumerate(zip(ra, rc)) if a != c), n)
                  for ra, rc in zip(other["generated"], generated)]
        result["same_ids"] = f"{same}/{b * n}"
        result["agreeing_prefix_per_row"] = prefix
    print(json.dumps(result))


def merge_rounds(runs: list) -> dict:
    """One side's runs over several rounds: every timing ("*_s") is the best over the rounds
    (medians: the median of the rounds' medians is not kept; the first round's is), rates are
    recomputed from the best times."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if key.endswith("_s") and not key.endswith("median_s") and isinstance(value, float):
            out[key] = min(r[key] for r in runs)
    if "profile" in runs[0]:
        out["profile"] = {k: min(r["profile"][k] for r in runs) for k in runs[0]["profile"]}
    out["prefill_tok_s"] = out["prompt_tokens"] / out["prefill_s"]
    out["decode_tok_s"] = out["batch"] * (out["new_tokens"] - 1) / out["decode_s"]
    out["rounds"] = len(runs)
    return out


def table(args) -> None:
    """Markdown table of the runs in WORK: NAME.{tailor,hf}.ROUND.json and the peak RSS files
    NAME.{tailor,hf}.ROUND.rss (kB, as `/usr/bin/time -f %M` writes them)."""
    work = Path(args.work)
    rows, notes = [], []
    for item in args.models:
        name, label = item.split(":", 1)
        sides, rss = {}, {}
        for side in ("tailor", "hf"):
            files = sorted(work.glob(f"{name}.{side}.*.json"))
            sides[side] = merge_rounds([json.loads(f.read_text()) for f in files])
            rss[side] = max(int(f.read_text().split()[-1]) for f in work.glob(f"{name}.{side}.*.rss")) / 1024
        ours, hf = sides["tailor"], sides["hf"]
        shape = f"{ours['batch']} × {ours['prompt_len']}"
        rows.append(
            f"| {label} | {shape} | {ours['new_tokens']} "
            f"| {ours['prefill_tok_s']:,.0f} | {hf['prefill_tok_s']:,.0f} | {ours['prefill_tok_s'] / hf['prefill_tok_s']:.2f} "
            f"| {ours['decode_tok_s']:,.0f} | {hf['decode_tok_s']:,.0f} | {ours['decode_tok_s'] / hf['decode_tok_s']:.2f} "
            f"| {rss['tailor']:,.0f} | {rss['hf']:,.0f} (import alone {hf['rss_after_import_mib']:,.0f}) |"
        )
        ms = lambda x: f"{1000 * x:.1f} ms"  # noqa: E731
        steps = ours["new_tokens"] - 1
        notes.append(
            f"- {label}: parity: prefill logits max |Δ| {hf['prefill_logits_max_abs_diff']:.1e} "
            f"(max |logit| {hf['prefill_logits_max_abs']:.2f}), greedy ids equal {hf['same_ids']}; "
            f"threads tailor {ours['threads']}, torch {hf['threads']}; best of {ours['rounds']} rounds × "
            f"{ours['repeats']} runs. Prefill: tailor {ms(ours['prefill_s'])}, HF {ms(hf['prefill_s'])} "
            f"(round-1 medians {ms(ours['prefill_median_s'])}, {ms(hf['prefill_median_s'])}); "
            f"decode ({steps} steps): tailor {ms(ours['decode_s'])}, HF {ms(hf['decode_s'])} "
            f"(medians {ms(ours['decode_median_s'])}, {ms(hf['decode_median_s'])}); "
            f"generate() end to end: tailor {ms(ours['generate_s'])}, HF {ms(hf['generate_s'])}."
        )
        p = ours.get("profile")
        if p:
            notes.append(
                f"  tailor prefill {ms(p['prefill_s'])}: vision tower {ms(p['vision_tower_s'])}, embedding + merge "
                f"{ms(p['input_embeds_s'] - p['vision_tower_s'])}, decoder + KV cache + last-token lm_head "
                f"{ms(p['prefill_s'] - p['input_embeds_s'])} (HF vision tower alone {ms(hf['vision_s'])}). "
                f"tailor decode step (batch {ours['batch']}): {ms(p['decode_step_s'])}, of it lm_head "
                f"{ms(p['lm_head_step_s'])}; greedy choice (logits to host + argmax) "
                f"{1e6 * p['choose_step_s']:.0f} µs; HF decode step {ms(hf['decode_s'] / steps)}."
            )
    print("| model | prompts (B × L) | new tokens | tailor prefill tok/s | HF prefill tok/s | ratio "
          "| tailor decode tok/s | HF decode tok/s | ratio | tailor peak RSS (MiB) | HF peak RSS (MiB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print()
    print("\n".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inputs")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--image-side", type=int, default=224)
    p = sub.add_parser("bench")
    p.add_argument("model")
    p.add_argument("inputs")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare")
    p = sub.add_parser("table")
    p.add_argument("work")
    p.add_argument("models", nargs="+", help="NAME:LABEL")
    args = parser.parse_args()
    {"inputs": make_inputs, "bench": bench, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
