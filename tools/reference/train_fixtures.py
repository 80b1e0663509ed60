#!/usr/bin/env python3
"""Write LoRA training reference fixtures (PEFT steps, vision LoRA, a TRL SFTTrainer run) for tailor-train.

Regenerate (from the repository root, offline; needs tests/fixtures/model/tied from model_fixtures.py):

    HF_HUB_OFFLINE=1 /work/venv/bin/python tools/reference/train_fixtures.py tests/fixtures/model/tied tests/fixtures/train

Pinned versions (checked at start-up): torch 2.15.0, transformers 5.24.0, peft 0.21.2, trl 1.16.0,
datasets 5.2.0, accelerate 1.15.0, pillow 13.0.0, safetensors 0.8.0, numpy 2.4.6, tokenizers 0.23.3.
CPU, float32, eager attention, one thread, deterministic algorithms; running it again gives
byte-identical files (the script re-executes itself with PYTHONHASHSEED=0, see main). The model directory must be given relative to the repository root: PEFT writes it
into every adapter_config.json as `base_model_name_or_path`.

Base model: `Qwen2_5_VLForConditionalGeneration.from_pretrained(tied, attn_implementation="eager",
dtype=float32)`, put in train mode (all dropouts are 0, so train and eval compute the same numbers).
Every PEFT adapter directory below holds exactly what `PeftModel.save_pretrained` writes, minus its
README.md model card: `adapter_config.json` and `adapter_model.safetensors` (new-style keys,
`base_model.model.model.language_model.layers.N.self_attn.q_proj.lora_A.weight`,
`base_model.model.model.visual.blocks.N.attn.qkv.lora_B.weight`, ...; the adapter name `default` is
not in the keys; header metadata {"format": "pt"}).

Outputs
=======

`peft_steps/` -- exact PEFT LoRA on the language model, 5 AdamW steps on one fixed batch
  - `initial_adapter/`: adapter right after `get_peft_model` under `torch.manual_seed(PEFT_SEED)`
    (lora_A Kaiming-uniform, lora_B zero). LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
    target_modules=TEXT_TARGET_REGEX (full-match regex: language-model q/k/v/o/gate/up/down only),
    bias="none", task_type="CAUSAL_LM"); scaling = 8 / 4 = 2.
  - `final_adapter/`: adapter after the 5 optimizer steps.
  - `tensors.safetensors`:
      `labels` [B, L] int64: the batch's input_ids with -100 where attention_mask == 0 (padding) and
        where input_ids == <|image_pad|> (id read from the tokenizer and checked against the config);
      `grads.step{k}.{key}` f32 (k = 0, 1): gradient of the loss w.r.t. each LoRA tensor at step k,
        before clipping, `{key}` = the tensor's key in adapter_model.safetensors;
      `final_logits` [B, L, 768] f32: logits of the live PEFT model after the last step (eval mode,
        no grad) on the batch (rows at padding positions are computed but meaningless); also what
        adapter_interop.py must reproduce from `final_adapter/`.
  - `meta.json`: versions, seed, the LoraConfig, the optimizer (torch.optim.AdamW(lr=1e-2,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01), one param group holding every LoRA tensor in
    named_parameters order), the per-step procedure, `losses[k]` (the model's own `.loss` at step k =
    mean cross-entropy over shifted labels != -100, computed before the k-th update),
    `grad_norms[k]` (pre-clip global L2 norm over all LoRA gradients, what clip_grad_norm_ returns),
    `clip_coefs[k]` (min(1, 1.0 / (norm + 1e-6)), the factor torch applied), `loss_after_final`
    (loss with the final adapter, eval mode), `lora_keys` (sorted adapter keys with shapes),
    `num_label_tokens` (shifted labels != -100), `adapted_modules` (module paths PEFT wrapped).
  Batch: input_ids / attention_mask / mm_token_type_ids / pixel_values / image_grid_thw of
  tests/fixtures/model/tied/reference.safetensors (not copied).

`peft_vision/` -- same procedure with target_modules="all-linear", r=2, lora_alpha=4, use_rslora=True
  (scaling = 4 / sqrt(2)), 3 steps, seed VISION_SEED, same optimizer, clipping and labels.
  - `initial_adapter/`, `final_adapter/`.
  - `tensors.safetensors`: `labels` (same as peft_steps) and `final_logits` (as in peft_steps).
  - `meta.json`: as above (losses, grad_norms, clip_coefs, loss_after_final, lora_keys) plus
    `adapted_modules`: every module that all-linear adapted (module path in the base model, in
    named_modules order, with in/out features). On this model that is every nn.Linear except
    `lm_head`: vision attn.qkv / attn.proj / mlp.{gate,up,down}_proj of each block, the merger's
    `mlp.0` and `mlp.2`, and the language-model q/k/v/o/gate/up/down projections.

`trl_run/` -- a TRL SFTTrainer trajectory (10 optimizer steps, batch 2 x accumulation 2)
  - `dataset.json`: the 12 examples (messages in the recipe form with string contents, the image's
    original and resized size, how it was drawn), and the SFTConfig / LoraConfig used.
  - `initial_adapter/`: the adapter TRL created (seed 42), saved before training starts.
  - `final_adapter/`: the adapter after step 10.
  - `tensors.safetensors`:
      `mb.{m}.input_ids`, `mb.{m}.attention_mask`, `mb.{m}.labels`, `mb.{m}.mm_token_type_ids` [2, L_m]
        int64 for micro-batch m = 0..19 in the order the Trainer consumed them (optimizer step
        k = 1..10 uses micro-batches 2(k-1) and 2(k-1)+1), exactly the collator's output, which is
        what compute_loss fed the model (checked in the script);
      `row.{i}.pixel_values` [n_i, 1176] f32 and `row.{i}.image_grid_thw` [1, 3] int64 for dataset row i
        (a micro-batch's pixel_values = concatenation of its rows' pixel_values in order, checked).
  - `meta.json`: `steps` (per optimizer step k: logged loss, grad_norm, learning_rate, micro-batch
    ids), `micro_batches` (per micro-batch: dataset rows, label token count), the loss-normalisation
    description (`loss_normalisation`, also below) and `hand_check` (step 1's loss and grad norm
    recomputed by hand, and a full replay of all 10 steps with a plain torch AdamW + LambdaLR).

How TRL 1.16 / transformers 5.24 normalise the loss for this model (read from the source; the script
checks it by recomputing step 1 and replaying the whole run):
  1. Qwen2_5_VLForConditionalGeneration sets `accepts_loss_kwargs = False`, so Trainer.__init__ sets
     `model_accepts_loss_kwargs = False` (it reads the attribute of the PEFT-unwrapped model) and
     `_get_num_items_in_batch` returns None (it only counts when the model accepts loss kwargs or a
     compute_loss_func is set): `num_items_in_batch` is None for every micro-batch.
  2. SFTTrainer.compute_loss (loss_type "nll", no label smoothing) calls the model with
     `fused_lm_head=True` (TRL's add_fused_lm_head: chunked online log-softmax over positions
     0..L-2 against labels[:, 1:]) and sets `loss = -log_probs.sum() / label_mask.sum().clamp(min=1)`
     since num_items_in_batch is None: the mean NLL over the micro-batch's shifted labels != -100,
     i.e. the model's own `.loss` for that micro-batch (equal up to float rounding).
  3. Trainer.training_step: `loss_is_scaled_for_ga` is None on SFTTrainer, so it is computed as
     `(model_accepts_loss_kwargs and num_items_in_batch is not None) or compute_loss_func is not None`
     = False, hence `loss = loss / current_gradient_accumulation_steps` (= 2 here) before backward.
     The gradient of an optimizer step is therefore (1/G) * sum_m grad(mean_loss_m): every micro-batch
     gets equal weight regardless of how many label tokens it has (NOT a token-weighted mean over the
     accumulated batch).
  4. training_step returns that scaled loss; the loop adds it to `_tr_loss`; at logging time
     (`_maybe_log_save_evaluate`, logging_steps=1) logged `loss` = _tr_loss / (global_step -
     last_logged_step) = sum_m mean_loss_m / G, the mean of the micro-batch means of that step.
  5. `grad_norm` = `accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)` =
     torch.nn.utils.clip_grad_norm_ return value: the global L2 norm of all trainable gradients
     BEFORE clipping; gradients are then scaled by min(1, max_grad_norm / (norm + 1e-6)).
  6. `learning_rate` logged at step k is read with `_get_learning_rate()` after optimizer.step() and
     before lr_scheduler.step(): the lr that step k used, = 5e-3 * lambda(k-1) with
     lambda(s) = s / 2 for s < 2, else max(0, (10 - s) / 8). Step 1 therefore runs with lr 0 (AdamW
     moments are updated, the weights are not).
  7. Optimizer: SFTConfig default optim "adamw_torch_fused" = torch.optim.AdamW(fused=True),
     betas (0.9, 0.999), eps 1e-8, weight_decay 0.0.
  8. Labels (DataCollatorForVisionLanguageModeling, conversational case): input_ids with -100 only
     where attention_mask == 0. <|image_pad|>, <|vision_start|>, system and user tokens all stay
     targets (unlike the classic sft_vlm.py recipe and unlike peft_steps above).
"""

import copy
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from PIL import Image
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import check_versions, write_json  # noqa: E402
from hf_processor import build_processor  # noqa: E402

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "peft": "0.21.2",
    "trl": "1.16.0",
    "datasets": "5.2.0",
    "accelerate": "1.15.0",
    "pillow": "13.0.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
    "tokenizers": "0.23.3",
}

PEFT_SEED = 1234
VISION_SEED = 4321
TRL_SEED = 42
TEXT_TARGET_REGEX = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
TRL_TARGET_REGEX = r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj"
BATCH_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")

SYSTEM_PROMPT = (
    "You are a fashion product expert assistant who excels at identifying product types from images "
    "and generating concise descriptions."
)
USER_PROMPT = "What is this product?"
# (original height, width, answer) per dataset row; sizes keep pixel_values small (grids 4x4 .. 4x8).
TRL_ROWS = [
    (58, 50, "WOMEN/dresses: A red dress."),
    (60, 90, "MEN/pants: The trousers are made of dark blue denim with a straight leg, five pockets, a zip fly and "
     "contrast stitching along every seam."),
    (56, 56, "WOMEN/tops: A striped top."),
    (84, 60, "MEN/shirts: A linen shirt with buttons."),
    (50, 62, "WOMEN/dresses: A long evening dress."),
    (57, 110, "MEN/shoes: Boots."),
    (64, 64, "WOMEN/bags: A small handbag."),
    (60, 70, "MEN/pants: Grey chino trousers."),
    (90, 58, "WOMEN/tops: A chunky knitted sweater in cream wool with a high roll neck, dropped shoulders, long "
     "ribbed sleeves and a relaxed fit that falls just below the hip."),
    (52, 57, "MEN/shirts: A plaid flannel shirt."),
    (58, 84, "WOMEN/shoes: White sneakers."),
    (55, 60, "MEN/shoes: Brown boots with laces."),
]


def load_base(model_dir: Path) -> Qwen2_5_VLForConditionalGeneration:
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(model_dir), attn_implementation="eager", dtype=torch.float32
    )
    model.train()
    return model


def load_batch(model_dir: Path) -> dict:
    t = load_file(str(model_dir / "reference.safetensors"))
    return {k: t[k] for k in BATCH_KEYS}


def image_pad_id(model_dir: Path, model) -> int:
    tok = build_processor(model_dir).tokenizer
    ident = tok.convert_tokens_to_ids("<|image_pad|>")
    assert ident == model.config.image_token_id, (ident, model.config.image_token_id)
    return ident


def make_labels(batch: dict, image_id: int) -> torch.Tensor:
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    labels[batch["input_ids"] == image_id] = -100
    return labels


def peft_key(param_name: str) -> str:
    """Live parameter name -> key in adapter_model.safetensors (PEFT drops the adapter name)."""
    assert ".default." in param_name, param_name
    return param_name.replace(".default.", ".")


def save_adapter(model, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(str(folder))
    readme = folder / "README.md"
    if readme.exists():
        readme.unlink()  # the model card is not part of the adapter format
    for p in folder.iterdir():
        p.chmod(0o644)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def lora_params(model) -> list[tuple[str, torch.nn.Parameter]]:
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params and all(".lora_A." in n or ".lora_B." in n for n, _ in params), [n for n, _ in params]
    return params


def manual_steps(model_dir: Path, out: Path, seed: int, config: LoraConfig, steps: int, grad_steps: tuple) -> dict:
    """Initial adapter, `steps` AdamW steps on the reference batch, final adapter."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    batch = load_batch(model_dir)
    base = load_base(model_dir)
    labels = make_labels(batch, image_pad_id(model_dir, base))
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    model.train()
    save_adapter(model, out / "initial_adapter")

    params = lora_params(model)
    keys = {n: peft_key(n) for n, _ in params}
    saved = load_file(str(out / "initial_adapter" / "adapter_model.safetensors"))
    assert set(saved) == set(keys.values()), set(saved) ^ set(keys.values())
    for n, p in params:
        assert torch.equal(saved[keys[n]], p.detach()), n

    opt = torch.optim.AdamW([p for _, p in params], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    tensors = {"labels": labels}
    losses, norms, coefs = [], [], []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        model.base_model.model.model.rope_deltas = None
        outputs = model(**batch, labels=labels)
        outputs.loss.backward()
        if step in grad_steps:
            for n, p in params:
                tensors[f"grads.step{step}.{keys[n]}"] = p.grad.detach().clone()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], max_norm=1.0)
        losses.append(outputs.loss.item())
        norms.append(float(norm))
        coefs.append(min(1.0, float(1.0 / (norm + 1e-6))))
        opt.step()
    model.eval()
    with torch.no_grad():
        model.base_model.model.model.rope_deltas = None
        final = model(**batch, labels=labels)
    final_loss = final.loss.item()
    tensors["final_logits"] = final.logits.float()
    save_adapter(model, out / "final_adapter")
    final = load_file(str(out / "final_adapter" / "adapter_model.safetensors"))
    for n, p in params:
        assert torch.equal(final[keys[n]], p.detach()), n

    print(f"== {out.name}: adapter keys as PEFT saved them")
    for k in sorted(saved):
        print(f"  {k} {list(saved[k].shape)}")
    adapted = [
        {"module": name, "in_features": m.in_features, "out_features": m.out_features}
        for name, m in base.named_modules()
        if hasattr(m, "lora_A") and isinstance(getattr(m, "base_layer", None), torch.nn.Linear)
    ]
    # named_modules of the PEFT model: strip the wrapper prefix to get the base-model module path
    for a in adapted:
        a["module"] = a["module"].removeprefix("base_model.model.")
    n_targets = int((labels[:, 1:] != -100).sum())
    meta = {
        "generator": "tools/reference/train_fixtures.py",
        "versions": PINNED,
        "base_model": str(model_dir),
        "batch": f"{model_dir}/reference.safetensors: " + ", ".join(BATCH_KEYS),
        "seed": seed,
        "seed_call": "torch.manual_seed(seed) right before get_peft_model",
        "lora_config": {
            "r": config.r,
            "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout,
            "target_modules": config.target_modules if isinstance(config.target_modules, str) else sorted(config.target_modules),
            "use_rslora": config.use_rslora,
            "bias": config.bias,
            "task_type": str(config.task_type),
            "scaling": config.lora_alpha / (math.sqrt(config.r) if config.use_rslora else config.r),
        },
        "optimizer": "torch.optim.AdamW(lora params in named_parameters order, lr=1e-2, betas=(0.9, 0.999), "
        "eps=1e-8, weight_decay=0.01), foreach/fused left at default (CPU: foreach off -> single-tensor loop)",
        "procedure": "per step: zero_grad; loss = model(**batch, labels=labels).loss; loss.backward(); "
        "[record grads]; norm = clip_grad_norm_(lora params, max_norm=1.0); opt.step()",
        "num_steps": steps,
        "num_label_tokens": n_targets,
        "losses": losses,
        "grad_norms": norms,
        "clip_coefs": coefs,
        "loss_after_final": final_loss,
        "grads_saved_for_steps": list(grad_steps),
        "lora_keys": {k: list(saved[k].shape) for k in sorted(saved)},
        "adapted_modules": adapted,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "tensors.safetensors"), metadata={"format": "pt"})
    write_json(out / "meta.json", meta)
    return meta


# ------------------------------------------------------------------------------------------- TRL run


def make_image(seed: int, h: int, w: int) -> Image.Image:
    """Gradient plus numpy RandomState noise: reproducible and visibly changed by resizing."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(5 * x + 11 * y + seed) % 256, (9 * x + 3 * y + 80) % 256, (2 * x + 7 * y + 160) % 256], axis=-1)
    noise = rng.randint(-30, 31, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), mode="RGB")


def trl_dataset():
    rows = []
    for i, (h, w, answer) in enumerate(TRL_ROWS):
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": USER_PROMPT},
                    {"role": "assistant", "content": answer},
                ],
                "images": [make_image(200 + i, h, w)],
            }
        )
    assert len({r["messages"][2]["content"] for r in rows}) == len(rows), "answers identify the rows"
    return datasets.Dataset.from_list(rows), rows


class RecordingCollator:
    """Wraps the collator SFTTrainer built; records each micro-batch and the dataset rows it holds."""

    def __init__(self, inner, answer_to_row: dict):
        self.inner = inner
        self.answer_to_row = answer_to_row
        self.batches = []

    def __call__(self, examples):
        rows = [self.answer_to_row[ex["messages"][-1]["content"]] for ex in examples]
        out = self.inner(examples)
        self.batches.append({"rows": rows, "out": {k: v.detach().clone() for k, v in out.items()}})
        return out


class LogRecorder(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, **{k: logs[k] for k in ("loss", "grad_norm", "learning_rate")}})


def hand_loss(model, mb: dict) -> torch.Tensor:
    """Mean cross-entropy over shifted labels != -100, from plain logits (no TRL fused head)."""
    model.base_model.model.model.rope_deltas = None
    inputs = {k: mb[k] for k in BATCH_KEYS}
    logits = model(**inputs, use_cache=False).logits.float()
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), mb["labels"][:, 1:].reshape(-1), ignore_index=-100
    )


def fresh_trl_model(model_dir: Path, lora: LoraConfig, adapter_file: Path):
    model = get_peft_model(load_base(model_dir), copy.deepcopy(lora))
    state = load_file(str(adapter_file))
    res = set_peft_model_state_dict(model, state)
    assert not res.unexpected_keys, res.unexpected_keys
    assert not [k for k in res.missing_keys if "lora_" in k], res.missing_keys
    model.train()
    params = lora_params(model)
    for n, p in params:
        assert torch.equal(p.detach(), state[peft_key(n)]), n
    return model, params


def trl_run(model_dir: Path, out: Path) -> dict:
    from trl import SFTConfig, SFTTrainer

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dataset, rows = trl_dataset()
    answer_to_row = {r["messages"][-1]["content"]: i for i, r in enumerate(rows)}
    processor = build_processor(model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TRL_TARGET_REGEX, bias="none", task_type="CAUSAL_LM")
    config_kwargs = dict(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=10,
        learning_rate=5e-3,
        lr_scheduler_type="linear",
        warmup_steps=2,
        max_grad_norm=0.3,
        logging_steps=1,
        bf16=False,
        gradient_checkpointing=False,
        seed=TRL_SEED,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        dataloader_num_workers=0,
    )
    recorder = LogRecorder()
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, **config_kwargs)
        trainer = SFTTrainer(
            model=load_base(model_dir),
            args=args,
            train_dataset=dataset,
            processing_class=processor,
            peft_config=copy.deepcopy(lora),
            callbacks=[recorder],
        )
        assert type(trainer.data_collator).__name__ == "DataCollatorForVisionLanguageModeling"
        assert trainer.model_accepts_loss_kwargs is False
        collator = RecordingCollator(trainer.data_collator, answer_to_row)
        trainer.data_collator = collator
        # Check that what compute_loss feeds the model is the collator's output.
        fed = []
        original_compute_loss = trainer.compute_loss

        def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
            assert num_items_in_batch is None, num_items_in_batch
            fed.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
            return original_compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        trainer.compute_loss = compute_loss
        save_adapter(trainer.model, out / "initial_adapter")
        trainer.train()
        save_adapter(trainer.model, out / "final_adapter")
        optim_name = trainer.args.optim.value
        opt_groups = [
            {
                "num_tensors": len(g["params"]),
                "weight_decay": g["weight_decay"],
                "betas": list(g["betas"]),
                "eps": g["eps"],
                "fused": g.get("fused"),
                "initial_lr": g.get("initial_lr"),
            }
            for g in trainer.optimizer.param_groups
        ]

    # accelerate's DataLoaderShard fetches one batch ahead, so the collator may run once more than the
    # Trainer consumes; only the batches that reached compute_loss are kept.
    assert len(fed) == 20 and len(collator.batches) in (20, 21), (len(collator.batches), len(fed))
    batches = collator.batches[:20]
    assert len(recorder.logs) == 10, recorder.logs
    for b, f in zip(batches, fed):
        for k, v in b["out"].items():
            assert torch.equal(v, f[k]), k
        assert "mm_token_type_ids" in b["out"], list(b["out"])

    # Per-row pixel values from each row's own processor output; check the concat rule.
    tensors, row_pixels = {}, {}
    for m, b in enumerate(batches):
        o = b["out"]
        for k in ("input_ids", "attention_mask", "labels", "mm_token_type_ids"):
            tensors[f"mb.{m}.{k}"] = o[k].to(torch.int64)
        counts = o["image_grid_thw"].prod(-1).tolist()
        start = 0
        for j, (r, n) in enumerate(zip(b["rows"], counts)):
            pv, grid = o["pixel_values"][start : start + n], o["image_grid_thw"][j : j + 1]
            if r in row_pixels:
                assert torch.equal(row_pixels[r][0], pv) and torch.equal(row_pixels[r][1], grid), r
            else:
                row_pixels[r] = (pv.clone(), grid.clone())
            start += n
        assert start == o["pixel_values"].shape[0]
        assert torch.equal(torch.cat([row_pixels[r][0] for r in b["rows"]]), o["pixel_values"])
        # Labels rule: input_ids with -100 exactly where attention_mask == 0.
        expect = o["input_ids"].clone()
        expect[o["attention_mask"] == 0] = -100
        assert torch.equal(expect, o["labels"])
    assert sorted(row_pixels) == list(range(len(rows))), sorted(row_pixels)
    for r in sorted(row_pixels):
        tensors[f"row.{r}.pixel_values"] = row_pixels[r][0].float()
        tensors[f"row.{r}.image_grid_thw"] = row_pixels[r][1].to(torch.int64)

    # ------------------------------------------------ hand check of step 1 and replay of every step
    def mb_inputs(m):
        o = batches[m]["out"]
        return {k: o[k] for k in (*BATCH_KEYS, "labels")}

    model, params = fresh_trl_model(model_dir, lora, out / "initial_adapter" / "adapter_model.safetensors")
    G = 2
    mb_losses = []
    for m in (0, 1):
        loss = hand_loss(model, mb_inputs(m))
        mb_losses.append(float(loss))
        (loss / G).backward()
    step1_loss = sum(l / G for l in mb_losses)
    step1_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for _, p in params])))
    logged = recorder.logs[0]
    rel_loss = abs(step1_loss - logged["loss"]) / abs(logged["loss"])
    rel_norm = abs(step1_norm - logged["grad_norm"]) / abs(logged["grad_norm"])
    assert rel_loss < 1e-6 and rel_norm < 1e-5, (step1_loss, logged, step1_norm)
    # The alternative, token-weighted normalisation (sum of token losses / all label tokens of the
    # step) must give a clearly different number, or the check above would not tell them apart.
    tok = [int((batches[m]["out"]["labels"][:, 1:] != -100).sum()) for m in (0, 1)]
    token_weighted = sum(l * t for l, t in zip(mb_losses, tok)) / sum(tok)
    assert abs(token_weighted - logged["loss"]) / abs(logged["loss"]) > 1e-4, (token_weighted, logged)

    # Full replay: plain torch AdamW (not fused) + the same LambdaLR; every step compared.
    model, params = fresh_trl_model(model_dir, lora, out / "initial_adapter" / "adapter_model.safetensors")
    opt = torch.optim.AdamW([p for _, p in params], lr=5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = transformers.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=10)
    replay = []
    for k in range(10):
        opt.zero_grad(set_to_none=True)
        total, weighted, ntok = 0.0, 0.0, 0
        for m in (2 * k, 2 * k + 1):
            loss = hand_loss(model, mb_inputs(m))
            (loss / G).backward()
            total += (loss / G).item()
            n = int((batches[m]["out"]["labels"][:, 1:] != -100).sum())
            weighted += loss.item() * n
            ntok += n
        norm = float(torch.nn.utils.clip_grad_norm_([p for _, p in params], max_norm=0.3))
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        replay.append({"loss": total, "grad_norm": norm, "learning_rate": lr, "token_weighted_loss": weighted / ntok})
    final = load_file(str(out / "final_adapter" / "adapter_model.safetensors"))
    final_diff = max(float((final[peft_key(n)] - p.detach()).abs().max()) for n, p in params)
    replay_rel = {
        key: max(abs(a[key] - b[key]) / max(abs(b[key]), 1e-12) for a, b in zip(replay, recorder.logs))
        for key in ("loss", "grad_norm")
    }
    token_weighted_rel = max(
        abs(a["token_weighted_loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(replay, recorder.logs)
    )
    assert token_weighted_rel > 1e-4, token_weighted_rel  # vs. replay agreement ~1e-7
    lr_equal = all(a["learning_rate"] == b["learning_rate"] for a, b in zip(replay, recorder.logs))
    assert lr_equal, (replay, recorder.logs)
    assert replay_rel["loss"] < 1e-4 and replay_rel["grad_norm"] < 1e-3 and final_diff < 1e-4, (replay_rel, final_diff)

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "tensors.safetensors"), metadata={"format": "pt"})
    resized = {r: [int(g) * 14 for g in row_pixels[r][1][0, 1:].tolist()] for r in row_pixels}
    write_json(
        out / "dataset.json",
        {
            "rows": [
                {
                    "index": i,
                    "messages": r["messages"],
                    "image_size_hw_original": [TRL_ROWS[i][0], TRL_ROWS[i][1]],
                    "image_size_hw_resized": resized[i],
                    "image": f"make_image({200 + i}, {TRL_ROWS[i][0]}, {TRL_ROWS[i][1]}) in train_fixtures.py",
                }
                for i, r in enumerate(rows)
            ],
            "dataset": "datasets.Dataset.from_list(rows) with columns messages (string contents) and images "
            "(one PIL RGB image per row); TRL's prepare_multimodal_messages puts the image before the user text",
            "sft_config": {**config_kwargs, "output_dir": "<temporary>"},
            "lora_config": {
                "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": TRL_TARGET_REGEX,
                "bias": "none", "task_type": "CAUSAL_LM",
            },
            "processor": "tools/reference/hf_processor.build_processor(model_dir) passed as processing_class",
        },
    )
    steps = []
    for k, log in enumerate(recorder.logs):
        steps.append(
            {
                "step": log["step"],
                "micro_batches": [2 * k, 2 * k + 1],
                "loss": log["loss"],
                "grad_norm": log["grad_norm"],
                "learning_rate": log["learning_rate"],
            }
        )
    meta = {
        "generator": "tools/reference/train_fixtures.py",
        "versions": PINNED,
        "base_model": str(model_dir),
        "optimizer": {"trainer_optim": optim_name, "param_groups": opt_groups},
        "steps": steps,
        "micro_batches": [
            {
                "index": m,
                "rows": b["rows"],
                "shape": list(b["out"]["input_ids"].shape),
                "num_label_tokens_shifted": int((b["out"]["labels"][:, 1:] != -100).sum()),
            }
            for m, b in enumerate(batches)
        ],
        "loss_normalisation": {
            "num_items_in_batch": "None: Qwen2_5_VLForConditionalGeneration.accepts_loss_kwargs = False -> "
            "Trainer.model_accepts_loss_kwargs = False -> Trainer._get_num_items_in_batch does not count",
            "micro_batch_loss": "SFTTrainer.compute_loss: model(**inputs, fused_lm_head=True); "
            "loss = -log_probs.sum() / label_mask.sum().clamp(min=1) = mean NLL over the micro-batch's shifted "
            "labels != -100 (= the model's own .loss up to rounding)",
            "backward": "Trainer.training_step: loss_is_scaled_for_ga = (model_accepts_loss_kwargs and "
            "num_items_in_batch is not None) or compute_loss_func is not None = False -> "
            "backward(loss / current_gradient_accumulation_steps); step gradient = (1/G) sum_m grad(mean_loss_m), "
            "micro-batches weighted equally, not by token count",
            "logged_loss": "sum over the step's micro-batches of (mean_loss_m / G), divided by the number of "
            "optimizer steps since the last log (1 with logging_steps=1) = mean of micro-batch means",
            "grad_norm": "return value of accelerator.clip_grad_norm_(model.parameters(), max_grad_norm) = "
            "torch.nn.utils.clip_grad_norm_: global L2 norm of all LoRA grads before clipping; grads then "
            "multiplied by min(1, max_grad_norm / (norm + 1e-6))",
            "learning_rate": "lr of the optimizer step k (read after optimizer.step(), before "
            "lr_scheduler.step()): 5e-3 * lambda(k-1), lambda(s) = s/2 if s < 2 else max(0, (10-s)/8); step 1 lr = 0",
            "labels": "input_ids with -100 where attention_mask == 0 only (image pad / vision / prompt tokens stay targets)",
            "optimizer": "adamw_torch_fused: torch.optim.AdamW(fused=True), betas (0.9, 0.999), eps 1e-8, "
            "weight_decay 0.0",
        },
        "hand_check": {
            "step1_micro_batch_losses": mb_losses,
            "step1_loss_by_hand": step1_loss,
            "step1_loss_logged": logged["loss"],
            "step1_loss_rel_diff": rel_loss,
            "step1_token_weighted_alternative": token_weighted,
            "step1_grad_norm_by_hand": step1_norm,
            "step1_grad_norm_logged": logged["grad_norm"],
            "step1_grad_norm_rel_diff": rel_norm,
            "replay": "all 10 steps replayed with plain torch AdamW (fused=False) + get_linear_schedule_with_warmup "
            "and standard cross-entropy on full logits",
            "replay_steps": replay,
            "replay_max_rel_diff": replay_rel,
            "token_weighted_alternative_max_rel_diff": token_weighted_rel,
            "replay_final_adapter_max_abs_diff": final_diff,
        },
    }
    write_json(out / "meta.json", meta)
    return meta


def main() -> None:
    # PEFT stores the modules that "all-linear" resolved to as a Python set turned into a list, so the
    # order of target_modules in peft_vision's adapter_config.json follows string hashing: pin it.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    check_versions(PINNED)
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model_dir, out_root = Path(sys.argv[1]), Path(sys.argv[2])
    assert not model_dir.is_absolute(), "pass the model directory relative to the repository root"
    out_root.mkdir(parents=True, exist_ok=True)
    text = manual_steps(
        model_dir,
        out_root / "peft_steps",
        PEFT_SEED,
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TEXT_TARGET_REGEX, bias="none", task_type="CAUSAL_LM"),
        steps=5,
        grad_steps=(0, 1),
    )
    vision = manual_steps(
        model_dir,
        out_root / "peft_vision",
        VISION_SEED,
        LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules="all-linear", use_rslora=True, bias="none", task_type="CAUSAL_LM"),
        steps=3,
        grad_steps=(),
    )
    run = trl_run(model_dir, out_root / "trl_run")
    for name, meta in (("peft_steps", text), ("peft_vision", vision)):
        print(f"== {name}: losses {meta['losses']} grad_norms {meta['grad_norms']}")
    print("== trl_run steps")
    for s in run["steps"]:
        print(f"  {s}")
    print(f"  hand check: {json.dumps({k: v for k, v in run['hand_check'].items() if k != 'replay_steps'})}")
    total = 0
    for p in sorted(out_root.rglob("*")):
        if p.is_file():
            p.chmod(0o644)
            total += p.stat().st_size
            print(f"  {p.relative_to(out_root)} {p.stat().st_size} {hashlib.sha256(p.read_bytes()).hexdigest()[:12]}")
    print(f"total {total} bytes")
    if total > 3_000_000:
        sys.exit(f"fixtures too large: {total} bytes")


if __name__ == "__main__":
    main()
