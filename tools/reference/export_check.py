#!/usr/bin/env python3
"""Check a merged model folder (from `tailor export`) against base model + LoRA adapter in Python.

Usage (from the repository root, offline):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/export_check.py MERGED_DIR BASE_DIR ADAPTER_DIR OUT_FILE

- MERGED_DIR: merged model folder (safetensors shards + model.safetensors.index.json, or a single
  model.safetensors; config.json; tokenizer / processor files). Loaded with
  `Qwen2_5_VLForConditionalGeneration.from_pretrained(MERGED_DIR, attn_implementation="eager",
  dtype=float32, output_loading_info=True)`. The script fails (exit code 1) if that raises, or reports
  missing, unexpected or mismatched weights, or error messages.
- BASE_DIR: the base model folder; its reference.safetensors supplies the batch (input_ids,
  attention_mask, mm_token_type_ids, pixel_values, image_grid_thw).
- ADAPTER_DIR: PEFT adapter folder (adapter_config.json + adapter_model.safetensors), loaded onto
  BASE_DIR with `PeftModel.from_pretrained` and checked strictly (every key loaded, values equal;
  adapter_interop.load_checked_adapter).
- OUT_FILE: path stem; the script writes
    `<OUT_FILE without suffix>.safetensors` (header metadata {"format": "pt"}):
      `merged_logits` [B, L, V] f32: logits of the merged model on the batch (eval mode);
      `adapter_logits` [B, L, V] f32: logits of base + adapter (PEFT, unmerged) on the same batch;
    `<OUT_FILE without suffix>.json`:
      `max_abs_diff` (all positions), `max_abs_diff_real_tokens` (attention_mask == 1),
      `max_abs_logit`, `tolerance`, `within_tolerance`, `logits_shape`, `merged_loading_info`
      (missing / unexpected / mismatched keys, error messages: all empty on success),
      `merged_files` (file names in MERGED_DIR), `merged_has_lora_keys` (must be false),
      `processor` (whether tools/reference/hf_processor.build_processor(MERGED_DIR) works and whether its
      tokenizer gives the same ids as the base folder's on the batch texts; recorded, not enforced).
  The script also fails if max_abs_diff_real_tokens > TOLERANCE (1e-4; merging W + s*B@A into one
  f32 weight moves logits by rounding only, about 1e-6 on the tiny models).

Pinned versions (checked at start-up): torch 2.15.0, transformers 5.24.0, peft 0.21.2,
safetensors 0.8.0. One thread, deterministic algorithms.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Qwen2_5_VLForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapter_interop import PINNED, fail, load_checked_adapter, logits_of, reference_batch  # noqa: E402
from common import check_versions  # noqa: E402

TOLERANCE = 1e-4


def load_merged(merged_dir: Path):
    try:
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(merged_dir), attn_implementation="eager", dtype=torch.float32, output_loading_info=True
        )
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        fail(f"merged model does not load: {type(e).__name__}: {e}")
    model.eval()
    info = {k: sorted(str(x) for x in v) for k, v in info.items()}
    if any(info.values()):
        fail(f"merged model loaded with problems: {info}")
    return model, info


def merged_lora_keys(merged_dir: Path) -> bool:
    names = []
    for f in sorted(merged_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as sf:
            names.extend(sf.keys())
    return any("lora_" in n for n in names)


def processor_check(merged_dir: Path, base_dir: Path) -> dict:
    from hf_processor import build_processor

    try:
        merged = build_processor(merged_dir)
        base = build_processor(base_dir)
    except Exception as e:  # noqa: BLE001
        return {"loads": False, "error": f"{type(e).__name__}: {e}"}
    batch = reference_batch(base_dir)
    same = True
    for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
        text = base.tokenizer.decode(row[mask.bool()].tolist())
        same &= merged.tokenizer(text)["input_ids"] == base.tokenizer(text)["input_ids"]
    return {
        "loads": True,
        "same_token_ids_as_base": bool(same),
        "same_chat_template": merged.chat_template == base.chat_template,
        "same_image_processor": merged.image_processor.to_dict() == base.image_processor.to_dict(),
    }


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    merged_dir, base_dir, adapter_dir, out = (Path(a) for a in sys.argv[1:])
    merged, info = load_merged(merged_dir)
    batch = reference_batch(base_dir)
    merged_logits = logits_of(merged, batch)
    del merged
    peft_model = load_checked_adapter(base_dir, adapter_dir)
    adapter_logits = logits_of(peft_model, batch)
    diff = (merged_logits - adapter_logits).abs()
    mask = batch["attention_mask"].bool()
    result = {
        "max_abs_diff": float(diff.max()),
        "max_abs_diff_real_tokens": float(diff[mask].max()),
        "max_abs_logit": float(adapter_logits[mask].abs().max()),
        "tolerance": TOLERANCE,
        "within_tolerance": float(diff[mask].max()) <= TOLERANCE,
        "logits_shape": list(adapter_logits.shape),
        "merged_loading_info": info,
        "merged_files": sorted(p.name for p in merged_dir.iterdir()),
        "merged_has_lora_keys": merged_lora_keys(merged_dir),
        "processor": processor_check(merged_dir, base_dir),
    }
    stem = out.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"merged_logits": merged_logits, "adapter_logits": adapter_logits},
        str(stem.with_suffix(".safetensors")),
        metadata={"format": "pt"},
    )
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))
    if result["merged_has_lora_keys"]:
        fail("merged model still holds LoRA tensors")
    if not result["within_tolerance"]:
        fail(f"merged logits differ from base + adapter by {result['max_abs_diff_real_tokens']} > {TOLERANCE}")


if __name__ == "__main__":
    main()
