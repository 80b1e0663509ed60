#!/usr/bin/env python3
"""Write a random mid-size Qwen2.5-VL for the generation benchmark (tools/bench/generate.sh).

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/bench/make_bench_model.py OUT_DIR

OUT_DIR is a scratch folder (the benchmark uses a temporary one); nothing here is committed. The
model is loadable by `Qwen2_5_VLForConditionalGeneration.from_pretrained(OUT_DIR)` and by
`tailor_model::Qwen25Vl::load(OUT_DIR, ..)`:

- text: hidden 512, 8 layers, 8 heads / 2 KV heads (head_dim 64, mrope_section [8, 12, 12]),
  intermediate 1408, untied lm_head, vocabulary 768 (the tiny tokenizer of
  tests/fixtures/tiny-model, whose files are copied next to the weights);
- vision: hidden 256, depth 8, 4 heads, intermediate 1024, full attention in blocks 3 and 7,
  window_size 112 (the real model's), patch 14, merge 2.

About 34 M parameters (135 MB in float32). Weights come from transformers' own init under a
fixed seed (initializer_range 0.02, the real default, so activations stay in a realistic range);
the timing does not depend on the values. Pinned: torch 2.15.0, transformers 5.24.0. Offline.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny-model"
COPIED = ["tokenizer.json", "tokenizer_config.json", "chat_template.json"]
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if (torch.__version__.split("+")[0], transformers.__version__) != ("2.15.0", "5.24.0"):
        sys.exit(f"want torch 2.15.0 / transformers 5.24.0, found {torch.__version__} / {transformers.__version__}")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(TINY / name, out / name)
    tiny = json.loads((TINY / "config.json").read_text())
    ids = {k: tiny[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 768,
            "hidden_size": 512,
            "intermediate_size": 1408,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "initializer_range": 0.02,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},
            "use_sliding_window": False,
            "attention_dropout": 0.0,
            **ids,
        },
        vision_config={
            "depth": 8,
            "hidden_size": 256,
            "intermediate_size": 1024,
            "num_heads": 4,
            "hidden_act": "silu",
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "out_hidden_size": 512,
            "fullatt_block_indexes": [3, 7],
            "initializer_range": 0.02,
        },
        image_token_id=tiny["image_token_id"],
        video_token_id=tiny["video_token_id"],
        vision_start_token_id=tiny["vision_start_token_id"],
        vision_end_token_id=tiny["vision_end_token_id"],
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.vision_token_id = tiny["vision_token_id"]
    for k, v in ids.items():
        setattr(config, k, v)
    config.dtype = "float32"
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"],
        eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]],
        pad_token_id=ids["pad_token_id"],
        do_sample=False,
    )
    model.save_pretrained(out)
    pre = {
        "min_pixels": 56 * 56,
        "max_pixels": 448 * 448,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": MEAN,
        "image_std": STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {params / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
