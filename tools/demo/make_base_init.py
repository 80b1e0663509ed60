#!/usr/bin/env python3
"""Write the random-init tiny Qwen2.5-VL folder that `configs/demo-pretrain.toml` pretrains.

This is the starting point of the demo's base model (assets/demo-base/): transformers' own
initialisation of a small Qwen2.5-VL (seeded, float32), the tiny test tokenizer and chat template
of tests/fixtures/tiny-model (vocab 768), and a preprocessor config that keeps the synthetic
catalog's 64×96 images upscaled twofold (smart_resize gives 112×168: an 8×12 patch grid, 24 image
tokens). tailor then trains every weight of it on generic captions (`tailor train --config
configs/demo-pretrain.toml`), see assets/demo-base/README.md.

Regenerate (from the repository root, offline):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/demo/make_base_init.py runs/demo/base-init

Pinned versions (checked at start-up): torch 2.15.0, transformers 5.24.0, safetensors 0.8.0.
Deterministic: the same versions write byte-identical files (torch.manual_seed, CPU, float32).

Sizes (about 1.04 M parameters, 4.2 MB in float32):
- text: hidden 128, intermediate 256, 3 layers, 4 heads (head_dim 32, M-RoPE sections 4+6+6), 2 KV
  heads, tied embeddings over the 768-token vocabulary;
- vision: hidden 96, intermediate 192, depth 2 (block 1 full attention, block 0 windowed), 2 heads,
  patch 14, merge 2, out_hidden 128.
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))

import torch  # noqa: E402
import transformers  # noqa: E402
import safetensors  # noqa: E402

from common import check_versions, write_json  # noqa: E402

PINNED = {"torch": "2.15.0", "transformers": "5.24.0", "safetensors": "0.8.0"}

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny-model"
SEED = 20261125

TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    # head_dim 32: the three M-RoPE sections must sum to head_dim / 2.
    "mrope_section": [4, 6, 6],
}
VISION = {
    "depth": 2,
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_heads": 2,
    "out_hidden_size": TEXT["hidden_size"],
    "fullatt_block_indexes": [1],
}


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)

    # The tiny tokenizer and the processor chat template, unchanged.
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.json"]:
        shutil.copyfile(TINY / name, out / name)
    tiny = transformers.Qwen2_5_VLConfig.from_pretrained(TINY)
    t = tiny.text_config

    write_json(
        out / "preprocessor_config.json",
        {
            # 64×96 catalog images are upscaled to 112×168 (8×12 patches, 24 merged tokens):
            # at their native 56×84 (6 tokens) the tower sees too little of the silhouette.
            # Anything larger is capped at the same budget.
            "min_pixels": 112 * 168,
            "max_pixels": 112 * 168,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
        },
    )

    config = transformers.Qwen2_5_VLConfig(
        text_config={
            "vocab_size": t.vocab_size,
            "hidden_size": TEXT["hidden_size"],
            "intermediate_size": TEXT["intermediate_size"],
            "num_hidden_layers": TEXT["num_hidden_layers"],
            "num_attention_heads": TEXT["num_attention_heads"],
            "num_key_value_heads": TEXT["num_key_value_heads"],
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "initializer_range": 0.02,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1000000.0,
                "mrope_section": TEXT["mrope_section"],
            },
            "bos_token_id": t.bos_token_id,
            "eos_token_id": t.eos_token_id,
            "pad_token_id": t.pad_token_id,
            "use_sliding_window": False,
            "attention_dropout": 0.0,
        },
        vision_config={
            "depth": VISION["depth"],
            "hidden_size": VISION["hidden_size"],
            "intermediate_size": VISION["intermediate_size"],
            "num_heads": VISION["num_heads"],
            "hidden_act": "silu",
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "out_hidden_size": VISION["out_hidden_size"],
            "fullatt_block_indexes": VISION["fullatt_block_indexes"],
            "initializer_range": 0.02,
        },
        image_token_id=tiny.image_token_id,
        video_token_id=tiny.video_token_id,
        vision_start_token_id=tiny.vision_start_token_id,
        vision_end_token_id=tiny.vision_end_token_id,
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.vision_token_id = tiny.vision_token_id
    config.bos_token_id = tiny.bos_token_id
    config.eos_token_id = tiny.eos_token_id
    config.pad_token_id = tiny.pad_token_id
    config.initializer_range = 0.02
    config.dtype = "float32"

    torch.manual_seed(SEED)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    # Greedy decoding that stops at <|im_end|> (or <|endoftext|>), as the real checkpoint's file.
    write_json(
        out / "generation_config.json",
        {
            "bos_token_id": tiny.bos_token_id,
            "eos_token_id": [tiny.eos_token_id, tiny.pad_token_id],
            "pad_token_id": tiny.pad_token_id,
            "do_sample": False,
        },
    )
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n} parameters ({n * 4 / 1e6:.2f} MB in float32)")


if __name__ == "__main__":
    main()
