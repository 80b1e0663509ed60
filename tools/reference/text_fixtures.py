#!/usr/bin/env python3
"""Write the text-side parity fixtures for tailor-text from transformers 5.24 and TRL's recipe.

Regenerate (from the repository root, offline, after make_tiny_model.py):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/text_fixtures.py tests/fixtures/tiny-model tests/fixtures/text/parity.json

Pinned versions (checked at start-up): torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3,
trl 1.16.0, pillow 13.0.0.

The processor is built from its parts (transformers 5.24's `AutoProcessor(..., backend="pil")`
fails): the tiny tokenizer through `AutoTokenizer`, `Qwen2VLImageProcessorPil` from
preprocessor_config.json and the template from chat_template.json. Images are small generated
arrays: only their grids matter here.

For every chat the file holds the rendered text and the processor's output for that chat alone
(input_ids, attention_mask, mm_token_type_ids, image_grid_thw), plus an assistant-only label
reference computed here by scanning ids (independently of how tailor derives it). For every batch
it holds the padded processor output, the labels of TRL's `examples/scripts/sft_vlm.py` collator
(ids with -100 at the pad id and the image token id), and the position ids / rope deltas that the
decoder of a tiny random `Qwen2_5_VLForConditionalGeneration` actually receives in a forward pass
(captured at the rotary embedding). A few direct `get_rope_index` calls with video tokens complete
the file.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from common import check_versions
from hf_processor import build_processor

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "tokenizers": "0.23.3",
    "trl": "1.16.0",
    "pillow": "13.0.0",
}

SYSTEM_PROMPT = (
    "You are a fashion product expert assistant who excels at identifying product types from images "
    "and generating concise descriptions."
)
USER_PROMPT = "What is this product?"


def img():
    return {"type": "image"}


def txt(text):
    return {"type": "text", "text": text}


# name → (messages, add_generation_prompt, image sizes (height, width) in placeholder order)
CHATS = {
    "recipe": (
        [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [img(), txt(USER_PROMPT)]},
            {
                "role": "assistant",
                "content": "WOMEN/dresses: This female wears a short-sleeve dress with pure color patterns. "
                "The dress is with cotton fabric. It has a round neckline.",
            },
        ],
        False,
        [(80, 60)],
    ),
    "recipe_prompt": (
        [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [img(), txt(USER_PROMPT)]},
        ],
        True,
        [(80, 60)],
    ),
    "prompt_no_system": (
        [{"role": "user", "content": [img(), txt("What is this?")]}],
        True,
        [(40, 90)],
    ),
    "system_two_images": (
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [txt("Compare"), img(), img()]},
            {"role": "assistant", "content": [txt("They differ.")]},
        ],
        False,
        [(112, 56), (30, 100)],
    ),
    "text_multi_turn": (
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Describe a dress."},
            {"role": "assistant", "content": "MEN/tees: This male wears a short-sleeve T-shirt."},
        ],
        False,
        [],
    ),
    "hello": (
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
        False,
        [],
    ),
    "images_across_turns": (
        [
            {"role": "user", "content": [txt("What is this?"), img()]},
            {"role": "assistant", "content": "WOMEN/skirts: The lady wears a mini skirt with floral patterns."},
            {"role": "user", "content": [img(), txt("And this one?")]},
            {"role": "assistant", "content": "MEN/pants: The trousers are with denim fabric."},
        ],
        False,
        [(200, 150), (56, 56)],
    ),
    "system_parts_prompt": (
        [
            {"role": "system", "content": [txt("You are a fashion product expert assistant.")]},
            {"role": "user", "content": [img(), txt(USER_PROMPT)]},
        ],
        True,
        [(150, 300)],
    ),
}

BATCHES = {
    "train": ["recipe", "system_two_images", "text_multi_turn", "images_across_turns"],
    "prompts": ["prompt_no_system", "system_parts_prompt", "recipe_prompt"],
    "text_only": ["text_multi_turn", "hello"],
}


def make_image(seed: int, size: tuple[int, int]) -> Image.Image:
    h, w = size
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))




def assistant_labels(ids: list[int], tokenizer, image_id: int, pad_id: int) -> list[int]:
    """Reference assistant-only mask: after each `<|im_start|>assistant\\n` header, label every
    token up to and including the next `<|im_end|>`; never pad or image tokens."""
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    labels = [-100] * len(ids)
    k = 0
    while k < len(ids):
        if ids[k : k + len(header)] == header:
            k += len(header)
            while k < len(ids):
                if ids[k] not in (image_id, pad_id):
                    labels[k] = ids[k]
                if ids[k] == im_end:
                    break
                k += 1
        k += 1
    return labels


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    processor = build_processor(model_dir)
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id
    image_id = processor.image_token_id

    config = Qwen2_5_VLConfig.from_pretrained(model_dir)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    assert config.image_token_id == image_id

    images = {
        name: [make_image(100 * i + j, size) for j, size in enumerate(CHATS[name][2])]
        for i, name in enumerate(CHATS)
    }

    chats = []
    for name, (messages, gen_prompt, sizes) in CHATS.items():
        text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
        out = processor(text=[text], images=images[name] or None, return_tensors="pt", padding=True)
        ids = out["input_ids"][0].tolist()
        entry = {
            "name": name,
            "messages": messages,
            "add_generation_prompt": gen_prompt,
            "image_sizes": [list(s) for s in sizes],
            "text": text,
            "input_ids": ids,
            "attention_mask": out["attention_mask"][0].tolist(),
            "mm_token_type_ids": out["mm_token_type_ids"][0].tolist(),
            "image_grid_thw": out["image_grid_thw"].tolist() if "image_grid_thw" in out else [],
        }
        if not gen_prompt:
            entry["assistant_labels"] = assistant_labels(ids, tokenizer, image_id, pad_id)
        chats.append(entry)

    # Capture the position ids the decoder's rotary embedding receives.
    captured = {}

    def grab(_module, args, kwargs):
        captured["position_ids"] = (kwargs.get("position_ids") if "position_ids" in kwargs else args[1]).clone()

    model.model.language_model.rotary_emb.register_forward_pre_hook(grab, with_kwargs=True)

    batches = []
    for name, members in BATCHES.items():
        # As in TRL's sft_vlm.py: render without the generation prompt unless the chat is a prompt,
        # then one processor call over the whole batch with padding.
        texts = [chats[list(CHATS).index(m)]["text"] for m in members]
        flat_images = [im for m in members for im in images[m]]
        batch = processor(text=texts, images=flat_images or None, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        labels[labels == pad_id] = -100
        labels[labels == image_id] = -100

        model.model.rope_deltas = None
        captured.clear()
        with torch.no_grad():
            model(**batch)
        positions = captured["position_ids"]
        if "image_grid_thw" in batch:
            direct, deltas = model.model.get_rope_index(
                batch["input_ids"],
                mm_token_type_ids=batch["mm_token_type_ids"],
                image_grid_thw=batch["image_grid_thw"],
                attention_mask=batch["attention_mask"],
            )
            assert torch.equal(direct, positions), name
            deltas = deltas.view(-1).tolist()
        else:
            # No images: transformers skips get_rope_index and the decoder counts 0..L-1 on all
            # three rows; generation continues from the cache length, i.e. delta 0.
            assert model.model.rope_deltas is None
            deltas = [0] * len(members)
        batches.append(
            {
                "name": name,
                "chats": members,
                "input_ids": batch["input_ids"].tolist(),
                "attention_mask": batch["attention_mask"].tolist(),
                "image_grid_thw": batch["image_grid_thw"].tolist() if "image_grid_thw" in batch else [],
                "recipe_labels": labels.tolist(),
                "position_ids": positions.tolist(),
                "rope_deltas": deltas,
            }
        )

    # Video placeholders through get_rope_index directly (the processor path for videos is not
    # part of tailor): text, a video, text, an image, text, a second video.
    t, vs, ve = 5, config.vision_start_token_id, config.vision_end_token_id
    vid, im = config.video_token_id, config.image_token_id
    ids = [t, t, vs] + [vid] * 8 + [ve, t, vs] + [im] * 6 + [ve, t, vs] + [vid] * 4 + [ve, t]
    types = [1 if x == im else 2 if x == vid else 0 for x in ids]
    video_grids = [[2, 4, 4], [4, 2, 2]]
    second_per_grid = [1.5, 0.7]
    pos, deltas = model.model.get_rope_index(
        torch.tensor([ids]),
        mm_token_type_ids=torch.tensor([types]),
        image_grid_thw=torch.tensor([[1, 4, 6]]),
        video_grid_thw=torch.tensor(video_grids),
        second_per_grid_ts=torch.tensor(second_per_grid, dtype=torch.float32),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
    )
    rope_cases = [
        {
            "name": "video_image_video",
            "input_ids": ids,
            "image_grid_thw": [[1, 4, 6]],
            "video_grid_thw": video_grids,
            "second_per_grid_ts": second_per_grid,
            "position_ids": pos[:, 0, :].tolist(),
            "rope_delta": int(deltas.view(-1)[0]),
        }
    ]

    fixture = {
        "generator": "tools/reference/text_fixtures.py",
        "versions": PINNED,
        "model_dir": str(model_dir),
        "special_ids": {
            "pad": pad_id,
            "eos": tokenizer.eos_token_id,
            "image_pad": image_id,
            "video_pad": processor.video_token_id,
            "vision_start": config.vision_start_token_id,
            "vision_end": config.vision_end_token_id,
        },
        "merge_size": processor.image_processor.merge_size,
        "chats": chats,
        "batches": batches,
        "rope_cases": rope_cases,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # One array per line keeps the file diffable and small.
    out_path.write_text(json.dumps(fixture, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {out_path} ({out_path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
