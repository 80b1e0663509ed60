#!/usr/bin/env python3
"""Build the weightless tiny Qwen2.5-VL model directory used by tailor's tests.

Regenerate (from the repository root, offline):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/make_tiny_model.py tests/fixtures/tiny-model

Pinned versions (checked at start-up): tokenizers 0.23.3, transformers 5.24.0, trl 1.16.0.

What it writes into the target directory:

- tokenizer.json: a byte-level BPE trained on synthetic DeepFashion-style captions, with the exact
  normalizer / pre-tokenizer / decoder / post-processor that transformers' `Qwen2Tokenizer` builds
  (transformers 5.x rebuilds the pipeline from its class and only takes vocab and merges from the
  file, so anything else would make Python and Rust disagree). The 22 Qwen2.5 added tokens come
  after the BPE vocabulary, at small ids that differ from the real 151643.. ids, so tests prove that
  no id is hard-coded.
- tokenizer_config.json: Qwen2 tokenizer settings (pad `<|endoftext|>`, eos `<|im_end|>`) and, as in
  the real checkpoint, a *text-only* chat template that the processor must not use.
- chat_template.json: the Qwen2.5-VL processor template (text taken from TRL's copy).
- preprocessor_config.json: `Qwen2VLImageProcessor` with the real mean/std but a small max_pixels.
- config.json: a tiny nested (transformers 5) Qwen2.5-VL config whose special ids and vocabulary
  size come from the tokenizer above. No weights: a later stage adds them.
"""

import json
import random
import sys
from pathlib import Path

import tokenizers
import transformers
import trl
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from common import check_versions, write_json

PINNED = {"tokenizers": "0.23.3", "transformers": "5.24.0", "trl": "1.16.0"}

# The pre-tokenizer regex of transformers' Qwen2Tokenizer (and of the real tokenizer.json).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Added tokens of Qwen2.5(-VL) in their real order; the flag says whether the real checkpoint marks
# the token special.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]

# Total vocabulary (BPE entries + added tokens).
VOCAB_SIZE = 768

SYSTEM_PROMPT = (
    "You are a fashion product expert assistant who excels at identifying product types from images "
    "and generating concise descriptions."
)
USER_PROMPT = "What is this product?"

# A text-only template standing in for the Qwen2.5 tool-calling template that the real checkpoint
# keeps in tokenizer_config.json. It renders list content as its Python repr, so a loader that picks
# it instead of chat_template.json is caught by the tests.
TEXT_ONLY_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] | string + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

GENDERS = ["female", "male", "lady", "gentleman", "person", "woman", "man"]
SLEEVES = ["short-sleeve", "long-sleeve", "sleeveless", "medium-sleeve"]
GARMENTS = ["shirt", "T-shirt", "tank top", "sweater", "blouse", "dress", "jacket", "coat", "cardigan", "hoodie"]
LOWERS = ["trousers", "shorts", "skirt", "pants", "leggings", "jeans"]
LENGTHS = ["long", "three-point", "medium", "short", "mini", "knee-length", "ankle-length"]
PATTERNS = ["pure color", "graphic", "striped", "floral", "lattice", "block", "solid color", "plaid", "denim"]
FABRICS = ["cotton", "denim", "knitting", "chiffon", "leather", "furry", "linen", "silk", "polyester"]
NECKS = ["round neckline", "V-shape neckline", "crew neckline", "lapel", "suspenders", "square neckline"]
ACCESSORIES = ["a hat", "glasses", "a belt", "a ring", "a necklace", "a bracelet", "a scarf", "socks", "a bag"]
CATEGORIES = {
    "WOMEN": ["Dresses", "Blouses_Shirts", "Tees_Tanks", "Skirts", "Shorts", "Pants", "Sweaters",
              "Jackets_Coats", "Cardigans", "Graphic_Tees", "Rompers_Jumpsuits", "Leggings", "Denim"],
    "MEN": ["Tees_Tanks", "Shirts_Polos", "Pants", "Shorts", "Sweaters", "Jackets_Vests", "Denim",
            "Sweatshirts_Hoodies", "Suiting"],
}
LOWER_CASE_CATEGORIES = ["dresses", "tees", "blouses", "skirts", "shorts", "pants", "sweaters", "jackets",
                         "cardigans", "hoodies", "jeans", "coats", "shirts", "polos", "rompers", "leggings"]


def caption(rng: random.Random) -> str:
    """One DeepFashion-MultiModal style description."""
    g = rng.choice(GENDERS)
    top = rng.choice(GARMENTS)
    low = rng.choice(LOWERS)
    parts = [
        f"This {g} wears a {rng.choice(SLEEVES)} {top} with {rng.choice(PATTERNS)} patterns.",
        f"The {top} is with {rng.choice(FABRICS)} fabric.",
        f"It has a {rng.choice(NECKS)}.",
        f"The {g} wears {rng.choice(LENGTHS)} {low}.",
        f"The {low} are with {rng.choice(FABRICS)} fabric and {rng.choice(PATTERNS)} patterns.",
        f"There is {rng.choice(ACCESSORIES)} in his or her hand.",
        f"This {g} is wearing {rng.choice(ACCESSORIES)}.",
        f"The outer clothing is {rng.choice(FABRICS)} with {rng.choice(PATTERNS)} patterns.",
    ]
    rng.shuffle(parts)
    return " ".join(parts[: rng.randint(2, len(parts))])


def corpus() -> list[str]:
    rng = random.Random(20240611)
    # The recipe's fixed prompts and the role names occur in every rendered sample, so they are
    # weighted like that: the tiny tokenizer then keeps sequences short, as the real one does.
    lines = [SYSTEM_PROMPT, USER_PROMPT, "You are a helpful assistant.", "Describe this product.",
             "system\nuser\nassistant\n"] * 300
    for _ in range(4000):
        group = rng.choice(sorted(CATEGORIES))
        cat = rng.choice(CATEGORIES[group])
        lines.append(f"{group}/{cat.lower()}: {caption(rng)}")
        lines.append(f"{group}/{rng.choice(LOWER_CASE_CATEGORIES)}: {caption(rng)}")
        lines.append(f"{group}-{cat} id_0000{rng.randint(0, 9999):04d} {rng.choice(LOWER_CASE_CATEGORIES)}")
    # A little general English and digits so that odd inputs still get reasonable merges.
    lines += [
        "Hello, world! What is this? Be brief. Compare the two images. They differ.",
        "The quick brown fox jumps over the lazy dog. 0123456789 , . ; : ! ? ( ) [ ] { } \" ' - _ / \\",
    ] * 20
    return lines


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(
        BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
            ignore_merges=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE - len(ADDED_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    bpe_size = tok.get_vocab_size(with_added_tokens=False)
    if bpe_size != VOCAB_SIZE - len(ADDED_TOKENS):
        sys.exit(f"BPE trained {bpe_size} entries, expected {VOCAB_SIZE - len(ADDED_TOKENS)}")
    for content, special in ADDED_TOKENS:
        tokenizers_added = tokenizers.AddedToken(
            content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special
        )
        tok.add_tokens([tokenizers_added])
    if tok.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        sys.exit("added tokens did not land after the BPE vocabulary")
    return tok


def processor_template() -> str:
    # TRL ships the Qwen2.5-VL processor template; the hub's chat_template.json holds the same text
    # without the trailing newline (which trim_blocks would remove anyway).
    path = Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja"
    return path.read_text(encoding="utf-8").rstrip("\n")


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    ids = {content: tok.token_to_id(content) for content, _ in ADDED_TOKENS}

    write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(ids[content]): {
                    "content": content,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": special,
                }
                for content, special in ADDED_TOKENS
            },
            "additional_special_tokens": [c for c, s in ADDED_TOKENS if s and c != "<|endoftext|>"],
            "bos_token": None,
            "chat_template": TEXT_ONLY_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>",
            "errors": "replace",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "processor_class": "Qwen2_5_VLProcessor",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2TokenizerFast",
            "unk_token": None,
        },
    )
    write_json(out / "chat_template.json", {"chat_template": processor_template()})
    write_json(
        out / "preprocessor_config.json",
        {
            # 56·56 … 112·112 pixels: 4 to 16 LLM tokens per image keeps fixtures small.
            "min_pixels": 56 * 56,
            "max_pixels": 112 * 112,
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
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "initializer_range": 0.1,
            # head_dim 16: the three M-RoPE sections must sum to head_dim / 2.
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "use_sliding_window": False,
            "attention_dropout": 0.0,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "hidden_act": "silu",
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
            "initializer_range": 0.1,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    config.vision_token_id = ids["<|vision_pad|>"]
    config.bos_token_id = ids["<|endoftext|>"]
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    config.initializer_range = 0.1
    config.dtype = "float32"
    config.save_pretrained(out)
    print(json.dumps({k: ids[k] for k, _ in ADDED_TOKENS[:14]}))


if __name__ == "__main__":
    main()
