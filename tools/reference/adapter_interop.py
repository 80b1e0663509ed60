#!/usr/bin/env python3
"""Load a LoRA adapter written by tailor into Python PEFT and write the logits it gives.

Usage (from the repository root, offline):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/adapter_interop.py IN_DIR OUT_FILE [BASE_DIR]

IN_DIR/adapter/ must be a PEFT adapter directory (adapter_config.json + adapter_model.safetensors,
optionally with modules_to_save copies stored as `base_model.model.<module>.weight`) with
new-style key names (`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`,
`base_model.model.model.visual.blocks.N....`). BASE_DIR defaults to tests/fixtures/model/tied; its
reference.safetensors supplies the batch (input_ids, attention_mask, mm_token_type_ids, pixel_values,
image_grid_thw).

Steps: `Qwen2_5_VLForConditionalGeneration.from_pretrained(BASE_DIR, attn_implementation="eager",
dtype=float32)`, then `PeftModel.from_pretrained(base, IN_DIR/adapter)`. The script fails (exit code 1,
message on stderr) unless every tensor of adapter_model.safetensors became a live LoRA parameter with
exactly the stored value (for a modules_to_save tensor: its trainable copy; no unexpected key: a name PEFT did not map onto a module; no missing key:
a LoRA parameter the file does not set, e.g. a module in target_modules that the file lacks) and PEFT
emitted no missing/unexpected-key warning.

Output: OUT_FILE, safetensors (header metadata {"format": "pt"}) with one tensor:
  `logits` [B, L, V] float32: the PEFT model's logits on the batch in eval mode (rows at padding
  positions are computed but meaningless; compare where attention_mask == 1).
Also prints a one-line JSON summary (number of LoRA tensors, scaling per adapted module kind).

Pinned versions (checked at start-up): torch 2.15.0, transformers 5.24.0, peft 0.21.2,
safetensors 0.8.0. One thread, deterministic algorithms: the same adapter gives byte-identical output.
"""

import json
import sys
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

from common import check_versions

PINNED = {"torch": "2.15.0", "transformers": "5.24.0", "peft": "0.21.2", "safetensors": "0.8.0"}
REPO = Path(__file__).resolve().parents[2]
DEFAULT_BASE = REPO / "tests" / "fixtures" / "model" / "tied"
BATCH_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")


def fail(msg: str) -> None:
    print(f"{Path(sys.argv[0]).name}: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def load_base(base_dir: Path):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(base_dir), attn_implementation="eager", dtype=torch.float32
    )
    model.eval()
    return model


def load_checked_adapter(base_dir: Path, adapter_dir: Path) -> PeftModel:
    """PeftModel.from_pretrained, then a strict key-by-key and value-by-value check against the file."""
    if not (adapter_dir / "adapter_config.json").is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        fail(f"{adapter_dir} lacks adapter_config.json or adapter_model.safetensors")
    base = load_base(base_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    for w in caught:
        text = str(w.message).lower()
        if "missing" in text or "unexpected" in text or "not found" in text:
            fail(f"PEFT warned while loading: {w.message}")
    model.eval()
    stored = load_file(str(adapter_dir / "adapter_model.safetensors"))
    live = {}
    adapter = model.active_adapter
    for name, param in model.named_parameters():
        if ".lora_" in name:
            assert f".{adapter}." in name, name
            live[name.replace(f".{adapter}.", ".")] = param
        elif f".modules_to_save.{adapter}." in name:
            # modules_to_save copies: PEFT saves `X.modules_to_save.default.weight` as `X.weight`.
            live[name.replace(f".modules_to_save.{adapter}.", ".")] = param
    unexpected = sorted(set(stored) - set(live))
    missing = sorted(set(live) - set(stored))
    if unexpected:
        fail(f"{len(unexpected)} stored tensors match no LoRA parameter, e.g. {unexpected[:3]}")
    if missing:
        fail(f"{len(missing)} LoRA parameters are not in the file, e.g. {missing[:3]}")
    for key, value in stored.items():
        p = live[key]
        if tuple(value.shape) != tuple(p.shape):
            fail(f"{key}: stored shape {list(value.shape)} != live {list(p.shape)}")
        if not torch.equal(value.to(p.dtype), p.detach()):
            fail(f"{key}: live value differs from the stored one")
    return model


def reference_batch(base_dir: Path) -> dict:
    t = load_file(str(base_dir / "reference.safetensors"))
    return {k: t[k] for k in BATCH_KEYS}


def logits_of(model, batch: dict) -> torch.Tensor:
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    inner.model.rope_deltas = None
    with torch.no_grad():
        return model(**batch).logits.float().contiguous()


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    in_dir, out_file = Path(sys.argv[1]), Path(sys.argv[2])
    base_dir = Path(sys.argv[3]) if len(sys.argv) == 4 else DEFAULT_BASE
    model = load_checked_adapter(base_dir, in_dir / "adapter")
    logits = logits_of(model, reference_batch(base_dir))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file({"logits": logits}, str(out_file), metadata={"format": "pt"})
    cfg = model.peft_config[model.active_adapter]
    scalings = sorted(
        {
            (name.rsplit(".", 1)[-1], float(m.scaling[model.active_adapter]))
            for name, m in model.named_modules()
            if isinstance(getattr(m, "scaling", None), dict) and model.active_adapter in m.scaling
        }
    )
    n_tensors = sum(1 for n, _ in model.named_parameters() if ".lora_" in n)
    n_saved = sum(1 for n, _ in model.named_parameters() if ".modules_to_save." in n)
    print(json.dumps({"lora_tensors": n_tensors, "modules_to_save_tensors": n_saved, "r": cfg.r, "lora_alpha": cfg.lora_alpha, "use_rslora": cfg.use_rslora,
                      "scaling_by_module": scalings, "logits_shape": list(logits.shape), "out": str(out_file)}))


if __name__ == "__main__":
    main()
