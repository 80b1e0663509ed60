#!/usr/bin/env python3
"""Write tiny random Qwen2.5-VL models and their forward / generation reference outputs for tailor-model.

Regenerate (from the repository root, offline; needs tests/fixtures/tiny-model from make_tiny_model.py):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/model_fixtures.py tests/fixtures/tiny-model tests/fixtures/model

Pinned versions (checked at start-up): torch 2.15.0, transformers 5.24.0, pillow 13.0.0,
safetensors 0.8.0, numpy 2.4.6, tokenizers 0.23.3. Runs on CPU in float32 with eager attention and
one thread; running it again gives byte-identical files.

Two model directories are written, each loadable with
`Qwen2_5_VLForConditionalGeneration.from_pretrained(dir)`:

- `tied/`: tied embeddings (no `lm_head.weight` on disk), text hidden 64, 2 layers, 4 heads / 2 KV
  heads, mrope_section [2, 3, 3]; vision depth 2 (block 1 full attention), small images that each
  fit in one 112-px window. Also holds `config.flat.json`, the same model described by a flat,
  hub-style config (text fields at the root, `rope_scaling {"type": "mrope", ...}`).
- `windows/`: untied `lm_head`, text hidden 24, 3 layers, 2 heads / 1 KV head (head_dim 12),
  mrope_section [2, 1, 3]; vision depth 4 with full attention in blocks 1 and 3, window_size 56
  (see WINDOWS_NOTE) and images that span several windows (partial windows in both directions,
  empty padding windows, two images).

Each directory holds config.json (nested, as `save_pretrained` writes it), model.safetensors (old
on-disk names `model.*`, `visual.*`, `lm_head.weight`), generation_config.json, the tokenizer files and
chat_template.json copied from the tiny-model directory, its own preprocessor_config.json, and:

- reference.safetensors: inputs and outputs of one right-padded batch of recipe chats (see
  reference.json["tensors"] for every name, shape and meaning);
- reference.json: the chats, image sizes, the meaning of each tensor, greedy generation results for
  three single-image prompts, and sensitivity numbers (how far logits move under common mistakes).

Tensor names in reference.safetensors (B = 2 chats, L = padded length, N = patch rows):
input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw, position_ids [3, B, L],
rope_deltas; vision.patch_embed, vision.window_index, vision.cu_window_seqlens, vision.cu_seqlens,
vision.blocks.{i} (window order), vision_embeds (merged tower output, raster order); hidden_states.0
(decoder input embeddings) .. hidden_states.{n-1} (outputs of decoder layers 0 .. n-2) and
hidden_states.{n} (final RMSNorm of the last layer's output: transformers replaces the last entry);
logits [B, L, 768]; gen.{k}.last_logits (last prompt position of generation prompt k run alone).

Generation (reference.json["generation"]): transformers 5.24 continues decode positions from the
prefill's position ids (last position + 1 per step) instead of reading rope_deltas; this equals
"cache length + rope_delta", which a hand-written cached loop here checks against generate().

Weights: `torch.manual_seed`, transformers' own init with initializer_range 0.1, then every bias,
every RMSNorm weight and the padding row of the embedding redrawn at random, so a loader that skips
any of them fails the comparison.
"""

import copy
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from common import check_versions, write_json
from hf_processor import build_processor
from transformers.vision_utils import get_vision_attention_seqlens, get_vision_window_index

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "pillow": "13.0.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
    "tokenizers": "0.23.3",
}

SYSTEM_PROMPT = (
    "You are a fashion product expert assistant who excels at identifying product types from images "
    "and generating concise descriptions."
)
USER_PROMPT = "What is this product?"
COPIED_FILES = ["tokenizer.json", "tokenizer_config.json", "chat_template.json"]
MAX_NEW_TOKENS = 12
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

# Why `windows` uses window_size 56 (2x2 merged tokens) instead of the real 112: pixel_values cost
# 4,704 bytes per 14-px patch, so an image spanning several 112-px windows (at least 112x140 px, 80
# patches) plus its logits pushes tests/fixtures/model/ past its 2.5 MB budget. The window algorithm
# is the same for any window_size (transformers reads it from the config), and 56 px gives partial
# windows in both directions and empty padding windows with 48 + 16 patches. The tied model keeps the
# real 112 (each of its images fits one window).
WINDOWS_NOTE = "window_size 56 keeps the fixture small; the algorithm is the one used with 112"

# Per model directory: architecture, processor limits, the images (original height, width) and the
# assistant answers of the batch (one recipe chat per image, in this order).
SPECS = {
    "tied": {
        "seed": 43,
        "tie_word_embeddings": True,
        "text": {
            "hidden_size": 64,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "mrope_section": [2, 3, 3],
        },
        "vision": {
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "fullatt_block_indexes": [1],
        },
        "window_size": 112,
        "min_pixels": 56 * 56,
        "max_pixels": 112 * 112,
        # (58, 50) -> 56x56 (grid 1x4x4); (60, 90) -> 56x84 (grid 1x4x6).
        "images": [(58, 50), (60, 90)],
        "answers": ["WOMEN/dresses: A dress.", "MEN/pants: The trousers are denim."],
        "flat_config": True,
    },
    "windows": {
        "seed": 28,
        "tie_word_embeddings": False,
        "text": {
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            # head_dim 12: the sections sum to 6; unequal height / width sections catch swapped rows.
            "mrope_section": [2, 1, 3],
        },
        "vision": {
            "depth": 4,
            "hidden_size": 16,
            "intermediate_size": 48,
            "num_heads": 2,
            "fullatt_block_indexes": [1, 3],
        },
        "window_size": 56,
        "min_pixels": 56 * 56,
        "max_pixels": 224 * 224,
        # window_size 56 = 2x2 merged tokens (see WINDOWS_NOTE).
        # (90, 110) -> 84x112 (grid 1x6x8: merged 3x4 -> windows 2x2, 2x2, empty, 1x2, 1x2, empty);
        # (50, 62) -> 56x56 (grid 1x4x4: merged 2x2 -> one 2x2 window, then empty padding windows).
        "images": [(90, 110), (50, 62)],
        "answers": ["WOMEN/dresses: A dress.", "MEN/pants: The trousers are with denim fabric."],
        "flat_config": False,
    },
}

# Three single-image generation prompts per directory: (image index into the batch images, system
# prompt or None, user text).
GEN_PROMPTS = [
    (0, SYSTEM_PROMPT, USER_PROMPT),
    (1, SYSTEM_PROMPT, USER_PROMPT),
    (1, None, "Describe this product."),
]


def make_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """A smooth colour gradient plus noise: resizing changes it visibly, and it is reproducible."""
    h, w = size
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(7 * x + 13 * y) % 256, (3 * x + 5 * y + 50) % 256, (11 * x + 2 * y + 100) % 256], axis=-1)
    noise = rng.randint(-40, 41, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def recipe_chat(answer: str | None, system: str | None = SYSTEM_PROMPT, user: str = USER_PROMPT) -> list:
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages




def build_config(spec: dict, ids: dict) -> Qwen2_5_VLConfig:
    t, v = spec["text"], spec["vision"]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 768,
            "hidden_size": t["hidden_size"],
            "intermediate_size": t["intermediate_size"],
            "num_hidden_layers": t["num_hidden_layers"],
            "num_attention_heads": t["num_attention_heads"],
            "num_key_value_heads": t["num_key_value_heads"],
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "initializer_range": 0.1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": t["mrope_section"]},
            "bos_token_id": ids["bos"],
            "eos_token_id": ids["eos"],
            "pad_token_id": ids["pad"],
            "use_sliding_window": False,
            "attention_dropout": 0.0,
        },
        vision_config={
            "depth": v["depth"],
            "hidden_size": v["hidden_size"],
            "intermediate_size": v["intermediate_size"],
            "num_heads": v["num_heads"],
            "hidden_act": "silu",
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": spec["window_size"],
            "out_hidden_size": t["hidden_size"],
            "fullatt_block_indexes": v["fullatt_block_indexes"],
            "initializer_range": 0.1,
        },
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=spec["tie_word_embeddings"],
    )
    head_dim = t["hidden_size"] // t["num_attention_heads"]
    assert sum(t["mrope_section"]) == head_dim // 2
    assert (v["hidden_size"] // v["num_heads"]) % 4 == 0
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.vision_token_id = ids["vision_pad"]
    config.bos_token_id = ids["bos"]
    config.eos_token_id = ids["eos"]
    config.pad_token_id = ids["pad"]
    config.initializer_range = 0.1
    config.dtype = "float32"
    return config


def flat_config(nested: dict) -> dict:
    """The hub's flat layout of the same model: text fields at the root, rope as rope_scaling."""
    text = dict(nested["text_config"])
    rope = text.pop("rope_parameters")
    vision = dict(nested["vision_config"])
    flat = {
        "architectures": nested["architectures"],
        "model_type": "qwen2_5_vl",
        "attention_dropout": text["attention_dropout"],
        "bos_token_id": nested["bos_token_id"],
        "eos_token_id": nested["eos_token_id"],
        "pad_token_id": nested["pad_token_id"],
        "vision_start_token_id": nested["vision_start_token_id"],
        "vision_end_token_id": nested["vision_end_token_id"],
        "vision_token_id": nested["vision_token_id"],
        "image_token_id": nested["image_token_id"],
        "video_token_id": nested["video_token_id"],
        "hidden_act": text["hidden_act"],
        "hidden_size": text["hidden_size"],
        "initializer_range": nested["initializer_range"],
        "intermediate_size": text["intermediate_size"],
        "max_position_embeddings": text["max_position_embeddings"],
        "max_window_layers": text["max_window_layers"],
        "num_attention_heads": text["num_attention_heads"],
        "num_hidden_layers": text["num_hidden_layers"],
        "num_key_value_heads": text["num_key_value_heads"],
        "rms_norm_eps": text["rms_norm_eps"],
        "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]},
        "rope_theta": rope["rope_theta"],
        "sliding_window": text["sliding_window"],
        "tie_word_embeddings": nested["tie_word_embeddings"],
        "torch_dtype": "float32",
        "transformers_version": nested["transformers_version"],
        "use_cache": text["use_cache"],
        "use_sliding_window": text["use_sliding_window"],
        "vision_config": {
            "depth": vision["depth"],
            "hidden_act": vision["hidden_act"],
            "hidden_size": vision["hidden_size"],
            "intermediate_size": vision["intermediate_size"],
            "num_heads": vision["num_heads"],
            "in_chans": vision["in_channels"],
            "out_hidden_size": vision["out_hidden_size"],
            "patch_size": vision["patch_size"],
            "spatial_merge_size": vision["spatial_merge_size"],
            "spatial_patch_size": vision["patch_size"],
            "window_size": vision["window_size"],
            "fullatt_block_indexes": vision["fullatt_block_indexes"],
            "tokens_per_second": vision["tokens_per_second"],
            "temporal_patch_size": vision["temporal_patch_size"],
            "initializer_range": vision["initializer_range"],
        },
        "vocab_size": text["vocab_size"],
    }
    return flat


def init_model(config: Qwen2_5_VLConfig, seed: int) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
            elif "norm" in name or "ln_q" in name:
                assert p.ndim == 1, name
                p.uniform_(0.5, 1.5)
        emb = model.model.language_model.embed_tokens.weight
        emb[config.text_config.pad_token_id].normal_(0.0, 0.1)
    model.eval()
    return model


def max_abs(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    d = (a.float() - b.float()).abs()
    if mask is not None:
        d = d[mask.bool()]
    return float(d.max()) if d.numel() else 0.0


class Recorder:
    """Forward hooks that capture the vision tower internals and the decoder's position ids."""

    def __init__(self, model):
        self.data = {}
        visual = model.model.visual
        self.handles = [
            visual.patch_embed.register_forward_hook(lambda m, a, o: self.data.__setitem__("patch_embed", o.detach().clone())),
            visual.register_forward_hook(self._visual_hook),
            model.model.language_model.rotary_emb.register_forward_pre_hook(self._rope_hook, with_kwargs=True),
        ]
        for i, blk in enumerate(visual.blocks):
            self.handles.append(
                blk.register_forward_hook(lambda m, a, o, i=i: self.data.__setitem__(f"block.{i}", o.detach().clone()))
            )
        for i, layer in enumerate(model.model.language_model.layers):
            self.handles.append(
                layer.register_forward_hook(
                    lambda m, a, o, i=i: self.data.__setitem__(
                        f"layer.{i}", (o[0] if isinstance(o, tuple) else o).detach().clone()
                    )
                )
            )

    def _visual_hook(self, module, args, output):
        self.data["vision_embeds"] = output.pooler_output.detach().clone()

    def _rope_hook(self, module, args, kwargs):
        pos = kwargs.get("position_ids") if "position_ids" in kwargs else args[1]
        self.data["position_ids"] = pos.detach().clone()

    def remove(self):
        for h in self.handles:
            h.remove()


def forward(model, batch, **extra):
    model.model.rope_deltas = None
    with torch.no_grad():
        return model(**batch, **extra)


def greedy(model, inputs, repetition_penalty: float) -> dict:
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            repetition_penalty=repetition_penalty,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
        )
    prompt_len = inputs["input_ids"].shape[1]
    new = out.sequences[0, prompt_len:].tolist()
    # Margin between the best and second-best processed score (after the repetition penalty), and the
    # raw logit of the chosen token, per step.
    margins, chosen = [], []
    for step, (scores, raw) in enumerate(zip(out.scores, out.logits)):
        top = torch.topk(scores[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
        chosen.append(float(raw[0, new[step]]))
    return {
        "generated_ids": new,
        "first_step_logits": out.logits[0][0].clone(),
        "top2_margins": margins,
        "raw_logit_of_generated": chosen,
    }


def manual_greedy(model, inputs, eos: int, pad: int, use_delta: bool) -> tuple[list[int], int, torch.Tensor]:
    """Greedy decoding with an explicit KV cache: step k (k >= 1) feeds the previous token at position
    prompt_len + (k - 1) + rope_delta on all three M-RoPE rows."""
    model.model.rope_deltas = None
    with torch.no_grad():
        _, delta = model.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        delta = int(delta.view(-1)[0])
        out = model(**inputs, use_cache=True)
        cache, n = out.cache, inputs["input_ids"].shape[1]
        token = int(out.logits[0, -1].argmax())
        generated = [token]
        second_step_logits = None
        for step in range(MAX_NEW_TOKENS - 1):
            if token in (eos, pad):
                break
            pos = n + step + (delta if use_delta else 0)
            out = model(
                input_ids=torch.tensor([[token]]),
                position_ids=torch.full((3, 1, 1), pos, dtype=torch.long),
                cache=cache,
                use_cache=True,
            )
            cache = out.cache
            if second_step_logits is None:
                second_step_logits = out.logits[0, -1].clone()
            token = int(out.logits[0, -1].argmax())
            generated.append(token)
    return generated, delta, second_step_logits


def run_spec(name: str, spec: dict, tiny_dir: Path, out_root: Path) -> dict:
    out = out_root / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in COPIED_FILES:
        shutil.copyfile(tiny_dir / f, out / f)
    write_json(
        out / "preprocessor_config.json",
        {
            "min_pixels": spec["min_pixels"],
            "max_pixels": spec["max_pixels"],
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": MEAN,
            "image_std": STD,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
        },
    )
    processor = build_processor(out)
    tok = processor.tokenizer
    ids = {
        "bos": tok.convert_tokens_to_ids("<|endoftext|>"),
        "pad": tok.convert_tokens_to_ids("<|endoftext|>"),
        "eos": tok.convert_tokens_to_ids("<|im_end|>"),
        "image": tok.convert_tokens_to_ids("<|image_pad|>"),
        "video": tok.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end": tok.convert_tokens_to_ids("<|vision_end|>"),
        "vision_pad": tok.convert_tokens_to_ids("<|vision_pad|>"),
    }
    assert tok.pad_token_id == ids["pad"] and tok.eos_token_id == ids["eos"]

    config = build_config(spec, ids)
    model = init_model(config, spec["seed"])
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=[ids["eos"], ids["pad"]], pad_token_id=ids["pad"], do_sample=False
    )
    model.save_pretrained(out)
    saved_cfg = json.loads((out / "config.json").read_text())
    if spec["flat_config"]:
        write_json(out / "config.flat.json", flat_config(saved_cfg))

    # Everything below runs on the model as loaded back from disk.
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    reloaded = model.state_dict()
    assert set(reloaded) == set(original), set(reloaded) ^ set(original)
    for k in original:
        assert torch.equal(original[k], reloaded[k]), k
    with safetensors.safe_open(out / "model.safetensors", "pt") as f:
        disk_names = sorted(f.keys())
    assert ("lm_head.weight" in disk_names) != spec["tie_word_embeddings"], "lm_head presence"
    assert all(n.startswith(("model.", "visual.", "lm_head.")) for n in disk_names)
    assert not any(n.startswith(("model.language_model", "model.visual")) for n in disk_names)

    # ---------------------------------------------------------------- batch forward
    images = [make_image(100 + i, size) for i, size in enumerate(spec["images"])]
    chats = [recipe_chat(a) for a in spec["answers"]]
    texts = [processor.apply_chat_template(c, tokenize=False) for c in chats]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    batch = dict(batch)
    lengths = batch["attention_mask"].sum(-1).tolist()
    assert len(set(lengths)) == len(lengths), "chats must differ in length so the batch is padded"
    grids = batch["image_grid_thw"]
    rows_per_image = grids.prod(-1).tolist()
    tokens_per_image = [r // 4 for r in rows_per_image]

    rec = Recorder(model)
    outputs = forward(model, batch, output_hidden_states=True)
    logits = outputs.logits.float()
    hidden = outputs.hidden_states
    n_layers = config.text_config.num_hidden_layers
    assert len(hidden) == n_layers + 1
    data = dict(rec.data)
    # HF hidden_states: [embeddings, layer 0 out, ..., layer n-2 out, final_norm(layer n-1 out)].
    for i in range(n_layers - 1):
        assert torch.equal(hidden[i + 1], data[f"layer.{i}"]), i
    assert torch.equal(hidden[n_layers], model.model.language_model.norm(data[f"layer.{n_layers - 1}"]))
    direct_pos, rope_deltas = model.model.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=batch["mm_token_type_ids"],
        image_grid_thw=grids,
        attention_mask=batch["attention_mask"],
    )
    assert torch.equal(direct_pos, data["position_ids"])
    vcfg = config.vision_config
    window_index, cu_window = get_vision_window_index(grids, vcfg.spatial_merge_size, vcfg.window_size, vcfg.patch_size)
    cu_seqlens, _ = get_vision_attention_seqlens(grids, vcfg)

    tensors = {
        "input_ids": batch["input_ids"].to(torch.int64),
        "attention_mask": batch["attention_mask"].to(torch.int64),
        "mm_token_type_ids": batch["mm_token_type_ids"].to(torch.int64),
        "pixel_values": batch["pixel_values"].float(),
        "image_grid_thw": grids.to(torch.int64),
        "position_ids": data["position_ids"].to(torch.int64),
        "rope_deltas": rope_deltas.to(torch.int64),
        "vision.window_index": window_index.to(torch.int64),
        "vision.cu_window_seqlens": cu_window.to(torch.int64),
        "vision.cu_seqlens": cu_seqlens.to(torch.int64),
        "vision.patch_embed": data["patch_embed"].float(),
        "vision_embeds": data["vision_embeds"].float(),
        "logits": logits,
    }
    for i in range(vcfg.depth):
        tensors[f"vision.blocks.{i}"] = data[f"block.{i}"].float()
    for i, h in enumerate(hidden):
        tensors[f"hidden_states.{i}"] = h.float()
    rec.remove()

    # ---------------------------------------------------------------- checks and sensitivities
    mask = batch["attention_mask"]
    sens = {}
    # Each chat alone (no padding) against its row of the padded batch.
    single_diff = []
    pixel_start = 0
    for i, (text, image) in enumerate(zip(texts, images)):
        one = dict(processor(text=[text], images=[image], return_tensors="pt"))
        rows = rows_per_image[i]
        assert torch.equal(one["pixel_values"], batch["pixel_values"][pixel_start : pixel_start + rows])
        pixel_start += rows
        n = lengths[i]
        assert torch.equal(one["input_ids"][0], batch["input_ids"][i, :n])
        lo = forward(model, one).logits.float()
        single_diff.append(max_abs(lo[0], logits[i, :n]))
    sens["single_vs_batch_logits"] = single_diff

    # M-RoPE replaced by 1-D positions (what transformers 5 silently does without mm_token_type_ids).
    no_mm = {k: v for k, v in batch.items() if k != "mm_token_type_ids"}
    sens["no_mrope_1d_positions_logits"] = max_abs(forward(model, no_mm).logits, logits, mask)
    # Window attention disabled (every vision block full attention).
    visual = model.model.visual
    saved_full = visual.fullatt_block_indexes
    visual.fullatt_block_indexes = list(range(vcfg.depth))
    sens["no_window_attention_logits"] = max_abs(forward(model, batch).logits, logits, mask)
    visual.fullatt_block_indexes = saved_full
    # Biases / norm weights left at their default init (what a loader that skips them computes).
    for label, pred, fill in [("zero_biases_logits", lambda n: n.endswith(".bias"), 0.0),
                              ("unit_norm_weights_logits", lambda n: "norm" in n or "ln_q" in n, 1.0)]:
        backup = {n: p.detach().clone() for n, p in model.named_parameters() if pred(n)}
        with torch.no_grad():
            for n, p in model.named_parameters():
                if pred(n):
                    p.fill_(fill)
        sens[label] = max_abs(forward(model, batch).logits, logits, mask)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in backup:
                    p.copy_(backup[n])
    assert torch.equal(forward(model, batch).logits, outputs.logits), "restore failed"
    # sdpa instead of eager.
    sdpa = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="sdpa", dtype=torch.float32)
    sdpa.eval()
    sens["sdpa_vs_eager_logits"] = max_abs(forward(sdpa, batch).logits, logits, mask)
    del sdpa
    # bfloat16 weights and activations.
    bf16 = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager", dtype=torch.bfloat16)
    bf16.eval()
    bf16_batch = dict(batch, pixel_values=batch["pixel_values"].to(torch.bfloat16))
    sens["bf16_vs_f32_logits"] = max_abs(forward(bf16, bf16_batch).logits, logits, mask)
    del bf16
    # Flat hub-style config: same model, same logits.
    if spec["flat_config"]:
        flat = json.loads((out / "config.flat.json").read_text())
        cfg_from_flat = Qwen2_5_VLConfig.from_dict(copy.deepcopy(flat))
        a, b = cfg_from_flat.to_dict(), Qwen2_5_VLConfig.from_pretrained(out).to_dict()
        for key in ("text_config", "vision_config"):
            # The flat file's vision aliases (in_chans, spatial_patch_size) are kept as unused extras.
            assert set(a[key]) - set(b[key]) <= {"in_chans", "spatial_patch_size"}, set(a[key]) ^ set(b[key])
            for k in b[key]:
                if k in ("transformers_version", "dtype"):
                    continue
                va, vb = a[key].get(k), b[key].get(k)
                if k == "rope_parameters":
                    # transformers keeps the legacy "type": "mrope" next to the rewritten rope_type.
                    va = {x: y for x, y in va.items() if x != "type"}
                assert va == vb, (key, k, va, vb)
        for k in ("tie_word_embeddings", "image_token_id", "video_token_id", "vision_start_token_id",
                  "vision_end_token_id"):
            assert a.get(k) == b.get(k), (k, a.get(k), b.get(k))
        # A flat file's root bos/eos/pad ids are moved into text_config (checked above), not kept at the root.
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(out / "config.flat.json", Path(tmp) / "config.json")
            shutil.copyfile(out / "model.safetensors", Path(tmp) / "model.safetensors")
            fm = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp, attn_implementation="eager", dtype=torch.float32)
            fm.eval()
            sens["flat_config_logits"] = max_abs(forward(fm, batch).logits, logits)
            assert sens["flat_config_logits"] == 0.0
            del fm

    # ---------------------------------------------------------------- generation
    generations = []
    for k, (img_idx, system, user) in enumerate(GEN_PROMPTS):
        msgs = recipe_chat(None, system=system, user=user)
        text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        inputs = dict(processor(text=[text], images=[images[img_idx]], return_tensors="pt"))
        start = sum(rows_per_image[:img_idx])
        assert torch.equal(inputs["pixel_values"], batch["pixel_values"][start : start + rows_per_image[img_idx]])
        plain = greedy(model, inputs, 1.0)
        penal = greedy(model, inputs, 1.05)
        # A hand-written cached decode loop with decode position = cache length + rope delta reproduces
        # generate(); the same loop without the delta shows the fixture catches a missing delta.
        manual, delta, step2 = manual_greedy(model, inputs, ids["eos"], ids["pad"], use_delta=True)
        assert manual == plain["generated_ids"], (manual, plain["generated_ids"])
        no_delta, _, step2_no_delta = manual_greedy(model, inputs, ids["eos"], ids["pad"], use_delta=False)
        sens.setdefault("generation_differs_without_rope_delta", []).append(no_delta != plain["generated_ids"])
        sens.setdefault("second_step_logits_without_rope_delta", []).append(max_abs(step2, step2_no_delta))
        # The first generated step equals the last prompt position of a plain forward.
        full = forward(model, inputs).logits[0, -1].float()
        assert max_abs(full, plain["first_step_logits"]) < 1e-5
        tensors[f"gen.{k}.last_logits"] = full
        generations.append(
            {
                "image_index": img_idx,
                "pixel_values_rows": [start, start + rows_per_image[img_idx]],
                "image_grid_thw": inputs["image_grid_thw"].tolist(),
                "messages": msgs,
                "text": text,
                "input_ids": inputs["input_ids"][0].tolist(),
                "mm_token_type_ids": inputs["mm_token_type_ids"][0].tolist(),
                "rope_delta": delta,
                "first_decode_position": len(inputs["input_ids"][0]) + delta,
                "greedy": {
                    "generated_ids": plain["generated_ids"],
                    "raw_logit_of_generated": plain["raw_logit_of_generated"],
                    "top2_margins": plain["top2_margins"],
                },
                "greedy_repetition_penalty_1_05": {
                    "generated_ids": penal["generated_ids"],
                    "raw_logit_of_generated": penal["raw_logit_of_generated"],
                    "top2_margins": penal["top2_margins"],
                },
            }
        )

    # ---------------------------------------------------------------- write
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / "reference.safetensors"), metadata={"format": "pt"})

    B, L = batch["input_ids"].shape
    meanings = {
        "input_ids": "[B, L] int64: processor output for the batch, right-padded with <|endoftext|>",
        "attention_mask": "[B, L] int64: 1 real token, 0 padding",
        "mm_token_type_ids": "[B, L] int64: 0 text, 1 image token (transformers 5 input)",
        "pixel_values": "[sum(t*h*w), 1176] f32: Qwen2VLImageProcessorPil output, images concatenated in batch order",
        "image_grid_thw": "[n_images, 3] int64: (t, h, w) patch grid per image",
        "position_ids": "[3, B, L] int64: M-RoPE positions (temporal, height, width) the decoder received "
        "(captured at the rotary embedding; transformers 5 puts 0 at padding positions)",
        "rope_deltas": "[B, 1] int64: get_rope_index deltas (max position + 1 - unpadded length)",
        "vision.window_index": "[N/4] int64: merged-token order of window attention (get_vision_window_index)",
        "vision.cu_window_seqlens": "[w+1] int64: window segment boundaries in patch rows (deduplicated)",
        "vision.cu_seqlens": "[n_images+1] int64: full-attention segment boundaries in patch rows",
        "vision.patch_embed": "[N, vision_hidden] f32: patch embedding output, pixel_values row order (before window reordering)",
        "vision.blocks.{i}": "[N, vision_hidden] f32: output of vision block i, in WINDOW order "
        "(rows permuted by window_index in groups of 4)",
        "vision_embeds": "[N/4, text_hidden] f32: merger output after undoing the window order, i.e. the image "
        "features scattered into the <|image_pad|> positions, images concatenated in order",
        "hidden_states.0": "[B, L, text_hidden] f32: decoder input (token embeddings with vision_embeds merged in)",
        "hidden_states.{i} (1 <= i < n_layers)": "[B, L, text_hidden] f32: output of decoder layer i-1 (before any norm)",
        f"hidden_states.{n_layers}": "[B, L, text_hidden] f32: final RMSNorm applied to the output of the last "
        "decoder layer (transformers overwrites the last entry with last_hidden_state)",
        "logits": f"[B, L, vocab] f32: lm_head output for the padded batch (rows at padding positions are "
        "computed but meaningless; compare where attention_mask == 1)",
        "gen.{k}.last_logits": "[vocab] f32: logits at the last prompt position of generation prompt k run alone "
        "(= the scores of the first generated token)",
    }
    reference = {
        "generator": "tools/reference/model_fixtures.py",
        "versions": PINNED,
        "dtype": "float32",
        "attn_implementation": "eager",
        "seed": spec["seed"],
        "special_ids": ids,
        "batch": {
            "size": B,
            "padded_length": L,
            "lengths": lengths,
            "padding_side": "right",
            "chats": chats,
            "texts": texts,
            "image_sizes_hw_original": [list(s) for s in spec["images"]],
            "image_sizes_hw_resized": [[g[1] * 14, g[2] * 14] for g in grids.tolist()],
            "image_generator": "make_image(100 + i, size) in model_fixtures.py (gradient + numpy RandomState noise)",
            "pixel_values_rows_per_image": rows_per_image,
            "image_tokens_per_image": tokens_per_image,
        },
        "tensors": {
            "shapes": {k: list(v.shape) for k, v in sorted(tensors.items())},
            "meaning": meanings,
            "hidden_states_count": n_layers + 1,
        },
        "generation": {
            "call": f"model.generate(**inputs, do_sample=False, max_new_tokens={MAX_NEW_TOKENS}) with the eos ids of "
            "generation_config.json; 'greedy' passes repetition_penalty=1.0, the other 1.05",
            "eos_token_id": [ids["eos"], ids["pad"]],
            "prompts": generations,
        },
        "sensitivity_max_abs_logit_change": sens,
        "max_abs_logit": float(logits[mask.bool()].abs().max()),
    }
    # One line per top-level entry keeps the file small and still diffable.
    body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}" for k, v in reference.items())
    (out / "reference.json").write_text("{\n" + body + "\n}\n", encoding="utf-8")
    return reference


def verify(folder: Path) -> dict:
    """Load the directory fresh, feed the stored inputs (not the processor) and compare everything."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    ref = json.loads((folder / "reference.json").read_text())
    with safetensors.safe_open(folder / "reference.safetensors", "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
    batch = {k: t[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")}
    out = forward(model, batch, output_hidden_states=True)
    mask = t["attention_mask"]
    result = {"logits": max_abs(out.logits, t["logits"], mask)}
    for i, h in enumerate(out.hidden_states):
        result[f"hidden_states.{i}"] = max_abs(h, t[f"hidden_states.{i}"], mask)
    with torch.no_grad():
        vis = model.model.get_image_features(t["pixel_values"], t["image_grid_thw"]).pooler_output
    result["vision_embeds"] = max_abs(torch.cat(vis, 0), t["vision_embeds"])
    # Generation from the stored prompt ids and pixel rows.
    same = True
    for g in ref["generation"]["prompts"]:
        a, b = g["pixel_values_rows"]
        inputs = {
            "input_ids": torch.tensor([g["input_ids"]]),
            "attention_mask": torch.ones(1, len(g["input_ids"]), dtype=torch.long),
            "mm_token_type_ids": torch.tensor([g["mm_token_type_ids"]]),
            "pixel_values": t["pixel_values"][a:b],
            "image_grid_thw": torch.tensor(g["image_grid_thw"]),
        }
        same &= greedy(model, inputs, 1.0)["generated_ids"] == g["greedy"]["generated_ids"]
        same &= greedy(model, inputs, 1.05)["generated_ids"] == g["greedy_repetition_penalty_1_05"]["generated_ids"]
    result["generation_reproduced"] = same
    assert same and all(v == 0.0 for k, v in result.items() if k != "generation_reproduced"), result
    return result


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tiny_dir, out_root = Path(sys.argv[1]), Path(sys.argv[2])
    out_root.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, spec in SPECS.items():
        ref = run_spec(name, spec, tiny_dir, out_root)
        folder = out_root / name
        for path in folder.iterdir():
            path.chmod(0o644)  # safetensors writes 0600
        checked = verify(folder)
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
        summary[name] = {
            "files": files,
            "total_bytes": sum(files.values()),
            "max_abs_logit": ref["max_abs_logit"],
            "sensitivity": ref["sensitivity_max_abs_logit_change"],
            "batch": {k: ref["batch"][k] for k in ("lengths", "image_sizes_hw_resized", "image_tokens_per_image")},
            "generated": [g["greedy"]["generated_ids"] for g in ref["generation"]["prompts"]],
            "generated_rep_1_05": [g["greedy_repetition_penalty_1_05"]["generated_ids"] for g in ref["generation"]["prompts"]],
            "min_top2_margin": min(
                m for g in ref["generation"]["prompts"]
                for m in g["greedy"]["top2_margins"] + g["greedy_repetition_penalty_1_05"]["top2_margins"]
            ),
            "reload_check_max_abs_diff": checked,
            "sha256_reference": hashlib.sha256((folder / "reference.safetensors").read_bytes()).hexdigest()[:16],
        }
    total = sum(s["total_bytes"] for s in summary.values())
    for name, item in summary.items():
        print(f"== {name}")
        for key, value in item.items():
            print(f"  {key}: {json.dumps(value, separators=(',', ':'))}")
    print(f"total {total} bytes in {out_root}")
    if total > 2_500_000:
        sys.exit(f"fixtures too large: {total} bytes")


if __name__ == "__main__":
    main()
