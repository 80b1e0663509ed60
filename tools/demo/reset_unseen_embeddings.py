#!/usr/bin/env python3
"""Re-draw the embedding rows of tokens the pretraining never saw (last step of assets/demo-base/).

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/demo/reset_unseen_embeddings.py \
        target/demo/pretrain-2 assets/demo-base target/demo/pretrain-catalog.parquet

Why: the base is pretrained on generic captions only, so the ~630 vocabulary tokens that never
occur in them (among them every category and gender word of the catalog task) only ever received
"not this token" gradients. With tied embeddings their output rows end up tiny and nearly alike,
so a LoRA adapter, which cannot touch `embed_tokens`/`lm_head` (`modules_to_save` is not supported
by tailor yet), cannot tell them apart: every fine-tune then answers one category for all images
(tools/demo/EXPERIMENTS.md, runs r1–v3-d). Re-drawing those rows as random vectors with the mean
norm of the trained rows is what initialising new tokens usually means; it uses no label and no
catalog information (only which token ids the pretraining text contains).

What it does: copies the model files of SRC (configs, tokenizer, chat template) into DST; tokenizes every
`caption` of the given pretraining catalogs plus the pretraining's system message, prompt and the
chat template's role names; for every other non-special id, replaces the `embed_tokens` row by a
standard-normal vector (NumPy default_rng(0), in id order) scaled to the mean L2 norm of the
seen rows; writes DST/model.safetensors. Deterministic.

Pinned versions (checked at start-up): numpy 2.4.6, safetensors 0.8.0, tokenizers 0.23.3,
pyarrow 26.0.1.
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from common import check_versions  # noqa: E402

PINNED = {"numpy": "2.4.6", "safetensors": "0.8.0", "tokenizers": "0.23.3", "pyarrow": "26.0.1"}
# What configs/demo-pretrain.toml sends besides the captions.
# The model folder's files besides the weights (not the training run's split or state).
MODEL_FILES = ["chat_template.json", "config.json", "generation_config.json",
               "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]
FIXED_TEXTS = ["You are a helpful assistant.", "Describe this image.", "system\nuser\nassistant\n"]


def main() -> None:
    check_versions(PINNED)
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    src, dst, catalogs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    dst.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copyfile(src / name, dst / name)
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    special = set(tok.get_added_tokens_decoder())
    texts = set(FIXED_TEXTS)
    for c in catalogs:
        texts.update(pq.read_table(c, columns=["caption"]).column("caption").to_pylist())
    seen = set()
    for t in sorted(texts):
        seen.update(tok.encode(t).ids)
    weights = load_file(str(src / "model.safetensors"))
    key = next(k for k in sorted(weights) if k.endswith("embed_tokens.weight"))
    emb = weights[key].copy()
    unseen = [i for i in range(emb.shape[0]) if i not in seen and i not in special]
    trained = sorted(seen - special)
    mean_norm = float(np.linalg.norm(emb[trained], axis=1).mean())
    fresh = np.random.default_rng(0).standard_normal((len(unseen), emb.shape[1])).astype(np.float32)
    fresh *= (mean_norm / np.linalg.norm(fresh, axis=1))[:, None]
    emb[unseen] = fresh
    weights[key] = emb
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    print(f"{len(trained)} seen tokens; {len(unseen)} unseen rows re-drawn at mean norm {mean_norm:.4f}")


if __name__ == "__main__":
    main()
