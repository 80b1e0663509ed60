#!/usr/bin/env python3
"""Training benchmark, Hugging Face side (run through tools/bench/train.sh): TRL SFTTrainer + PEFT
LoRA on a parquet catalog, the tutorial recipe's structure and settings, timed per optimizer step.

    train_hf.py MODEL_DIR CATALOG.parquet [--split SPLIT.json] [--precision f32|bf16]
                [--max-steps 3] [--threads 2] [--batch 4] [--accum 8] [--attn sdpa]

MODEL_DIR is a Qwen2.5-VL folder (weights, config, tokenizer, chat_template.json,
preprocessor_config.json); the processor is tools/reference/hf_processor.build_processor(MODEL_DIR)
(PIL image processor, right padding). CATALOG is a parquet file in the HF datasets layout (columns
image {bytes, path}, category1, category2, text), e.g. from `tailor data synth --out X.parquet`.
With --split, only the rows of the "train" list of that split.json (written by `tailor data split`)
are used, in that order, so that tailor trains on the same rows; without it, every row.

Each row becomes the recipe's chat (the strings of crates/tailor-data/src/chat.rs):
  system    RECIPE_SYSTEM
  user      [image, RECIPE_PROMPT]
  assistant RECIPE_TARGET = "{category1}/{category2}: {text}"
as a TRL conversational dataset (messages + images columns; TRL puts the image before the user
text). Labels are those of the tutorial's collator (tailor's `label_mask = "recipe"`): TRL's
DataCollatorForVisionLanguageModeling (every token but padding) with <|image_pad|> masked too.

Settings (the tutorial's, except where a benchmark needs otherwise): LoraConfig(r=8, lora_alpha=16,
lora_dropout=0.05, target_modules=["q_proj", "v_proj"], bias="none", task_type="CAUSAL_LM");
SFTConfig(per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUM,
gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
learning_rate=2e-4, lr_scheduler_type="constant", max_grad_norm=0.3, optim="adamw_torch",
logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", max_steps=MAX_STEPS,
bf16=(precision == "bf16")). With bf16 the model is also loaded in torch.bfloat16, as the tutorial
does (and as tailor's [model] dtype follows training.bf16); f32 loads and trains in float32.
CPU (use_cpu=True), torch.set_num_threads(THREADS) (OMP/MKL pools sized before torch is imported).

Prints one JSON line on stdout (everything else goes to stderr):
  step_s            wall seconds of every optimizer step (from the end of the previous step, or
                    the start of training for step 1, to the end of this one: data loading,
                    collation, forward/backward of every micro-batch, clipping, AdamW, logging);
  mean_step_s       mean over steps 2.. (step 1 is warm-up; with --max-steps 1 it is step 1);
  peak_rss_mib      ru_maxrss of this process at the end (also after import and after loading);
  tokens_per_step   non-padding tokens the model saw per step (and padded tokens, label tokens);
  losses / grad_norms as logged by the Trainer; versions, settings.

    train_hf.py table WORK_DIR PRECISION...

prints train.sh's Markdown table from the files it left in WORK_DIR: hf.PREC.json (this script's
line), out.PREC/log.jsonl of `tailor train` (per-step seconds: differences of a wall-clock key when
the entries carry one, else samples / samples_per_second per entry, else train_runtime / steps),
and the `/usr/bin/time -v` reports tailor.PREC.time / hf.PREC.time (tailor's peak RSS; for HF both
the script's own ru_maxrss and, in parentheses, what /usr/bin/time -v saw for the process).
"""

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path


# Thread pools must be sized before torch is imported (bench_threads does it on import).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_threads  # noqa: E402,F401
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import peft  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from peft import LoraConfig  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from hf_processor import build_processor  # noqa: E402

# crates/tailor-data/src/chat.rs: RECIPE_SYSTEM, RECIPE_PROMPT, RECIPE_TARGET.
RECIPE_SYSTEM = (
    "You are a fashion product expert assistant who excels at identifying product types from images "
    "and generating concise descriptions."
)
RECIPE_PROMPT = "What is this product?"
RECIPE_TARGET = "{category1}/{category2}: {text}"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


RSS_AFTER_IMPORT_MIB = rss_mib()


def load_rows(catalog: Path, split: Path | None) -> tuple[list, list]:
    """(rows as TRL conversational examples, their catalog indices)."""
    table = pq.read_table(catalog, columns=["image", "category1", "category2", "text"])
    n = table.num_rows
    indices = json.loads(split.read_text())["train"] if split else list(range(n))
    assert all(0 <= i < n for i in indices), "split indices outside the catalog"
    rows = []
    for i in indices:
        rec = table.slice(i, 1).to_pylist()[0]
        image = rec["image"]
        data = image["bytes"] if isinstance(image, dict) else image
        img = Image.open(io.BytesIO(data))
        img.load()
        answer = RECIPE_TARGET.format(category1=rec["category1"], category2=rec["category2"], text=rec["text"])
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": RECIPE_SYSTEM},
                    {"role": "user", "content": RECIPE_PROMPT},
                    {"role": "assistant", "content": answer},
                ],
                "images": [img],
            }
        )
    return rows, indices


class RecipeCollator:
    """TRL's collator with <|image_pad|> taken out of the labels too (the tutorial's collate_fn)."""

    def __init__(self, inner, image_token_id: int):
        self.inner = inner
        self.image_token_id = image_token_id

    def __call__(self, examples):
        out = self.inner(examples)
        out["labels"][out["input_ids"] == self.image_token_id] = -100
        return out


class StepClock(TrainerCallback):
    """Wall time of each optimizer step: on_step_end to on_step_end (step 1 from on_train_begin)."""

    def __init__(self):
        self.last = None
        self.steps = []
        self.logs = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.steps.append(now - self.last)
        self.last = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, "loss": logs["loss"], "grad_norm": logs.get("grad_norm")})
        # Logging runs after on_step_end: count it in the next step, as tailor's log window does.


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    bf16 = args.precision == "bf16"
    load_dtype = {"auto": torch.bfloat16 if bf16 else torch.float32, "f32": torch.float32, "bf16": torch.bfloat16}[
        args.load_dtype
    ]
    rows, indices = load_rows(Path(args.catalog), Path(args.split) if args.split else None)
    dataset = datasets.Dataset.from_list(rows)
    processor = build_processor(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_dir, dtype=load_dtype, attn_implementation=args.attn
    )
    rss_after_load = rss_mib()
    lora = LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], bias="none", task_type="CAUSAL_LM"
    )
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=args.accum,
            gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            learning_rate=2e-4,
            lr_scheduler_type="constant",
            max_grad_norm=0.3,
            optim="adamw_torch",
            logging_steps=1,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            bf16=bf16,
            dataloader_num_workers=0,
            seed=42,
            use_cpu=True,  # bf16 on the CPU needs it; the benchmark is CPU-only anyway
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=processor,
            peft_config=lora,
            callbacks=[clock],
        )
        image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert image_id == model.config.image_token_id, (image_id, model.config.image_token_id)
        trainer.data_collator = RecipeCollator(trainer.data_collator, image_id)
        # What each optimizer step fed the model (accelerate prefetches a batch ahead, so the
        # collator's calls do not line up with the steps; compute_loss's do).
        fed = {}
        original_compute_loss = trainer.compute_loss

        def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
            step = trainer.state.global_step + 1
            mask = inputs["attention_mask"]
            t = fed.setdefault(step, {"tokens": 0, "padded_tokens": 0, "label_tokens": 0, "samples": 0, "micro_batches": 0})
            t["tokens"] += int(mask.sum())
            t["padded_tokens"] += mask.numel()
            t["label_tokens"] += int((inputs["labels"][:, 1:] != -100).sum())
            t["samples"] += mask.shape[0]
            t["micro_batches"] += 1
            return original_compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

        trainer.compute_loss = compute_loss
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        settings = {
            "optim": trainer.args.optim.value,
            "lr_scheduler_type": str(getattr(trainer.args.lr_scheduler_type, "value", trainer.args.lr_scheduler_type)),
            "gradient_checkpointing": trainer.args.gradient_checkpointing,
            "gradient_checkpointing_kwargs": trainer.args.gradient_checkpointing_kwargs,
            "bf16": trainer.args.bf16,
            "max_grad_norm": trainer.args.max_grad_norm,
            "learning_rate": trainer.args.learning_rate,
            "lora": {"r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
                     "target_modules": sorted(lora.target_modules)},
        }
        start = time.perf_counter()
        result = trainer.train()
        total = time.perf_counter() - start
    steps = clock.steps
    assert len(steps) == args.max_steps, (len(steps), args.max_steps)
    timed = steps[1:] or steps
    per_step = [fed[k] for k in sorted(fed)]
    return {
        "side": "transformers",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
        },
        "model": str(model_dir),
        "precision": args.precision,
        "model_dtype": str(load_dtype).removeprefix("torch."),
        "attn_implementation": args.attn,
        "threads": torch.get_num_threads(),
        "train_rows": len(indices),
        "batch": args.batch,
        "accum": args.accum,
        "max_steps": args.max_steps,
        "trainable_params": trainable,
        "settings": settings,
        "step_s": steps,
        "mean_step_s": statistics.mean(timed),
        "median_step_s": statistics.median(timed),
        "warmup_excluded": len(steps) > 1,
        "train_runtime_s": total,
        "trainer_train_runtime_s": result.metrics.get("train_runtime"),
        "peak_rss_mib": rss_mib(),
        "rss_after_import_mib": RSS_AFTER_IMPORT_MIB,
        "rss_after_load_mib": rss_after_load,
        "tokens_per_step": [t["tokens"] for t in per_step],
        "mean_tokens_per_step": statistics.mean(t["tokens"] for t in per_step),
        "padded_tokens_per_step": [t["padded_tokens"] for t in per_step],
        "label_tokens_per_step": [t["label_tokens"] for t in per_step],
        "samples_per_step": [t["samples"] for t in per_step],
        "losses": [log["loss"] for log in clock.logs],
        "grad_norms": [log["grad_norm"] for log in clock.logs],
    }


def peak_rss_kib(time_file: Path) -> int | None:
    """Peak RSS from a `/usr/bin/time -v` report (kB)."""
    if not time_file.exists():
        return None
    for line in time_file.read_text().splitlines():
        if "Maximum resident set size" in line:
            return int(line.split()[-1])
    return None


# log.jsonl keys that would carry a wall clock (seconds); the first one present in every entry wins.
CLOCK_KEYS = ("wall_time", "wall_s", "time", "timestamp", "elapsed", "elapsed_s")


def tailor_steps(log: Path, samples_per_step: list) -> dict:
    """Per-step seconds of a `tailor train` run from output_dir/log.jsonl (logging_steps = 1)."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [e for e in entries if "loss" in e and "step" in e]
    runtime = next((e["train_runtime"] for e in entries if "train_runtime" in e), None)
    key = next((k for k in CLOCK_KEYS if train and all(k in e for e in train)), None)
    if key and len(train) > 1:
        t = [float(e[key]) for e in train]
        timed = [b - a for a, b in zip(t, t[1:])]  # steps 2..K: step 1 (warm-up) has no predecessor
        return {"step_s": timed, "mean_step_s": statistics.mean(timed), "method": f"differences of log.jsonl '{key}'",
                "losses": [e["loss"] for e in train], "train_runtime_s": runtime}
    if train and all("samples_per_second" in e for e in train):
        steps = []
        for i, e in enumerate(train):
            n = samples_per_step[i] if i < len(samples_per_step) else samples_per_step[-1]
            steps.append(n / e["samples_per_second"])
        timed = steps[1:] or steps
        return {"step_s": steps, "mean_step_s": statistics.mean(timed),
                "method": "samples per step / log.jsonl samples_per_second (step 1 left out)",
                "losses": [e["loss"] for e in train], "train_runtime_s": runtime}
    if runtime is None:
        raise SystemExit(f"{log}: neither per-step timings nor train_runtime")
    n = max((e["step"] for e in entries if "step" in e), default=1)
    return {"step_s": [], "mean_step_s": runtime / n, "method": "train_runtime / steps (warm-up included)",
            "losses": [e["loss"] for e in train], "train_runtime_s": runtime}


def table(work: Path, precisions: list) -> None:
    """Markdown table of the runs train.sh left in WORK: hf.PREC.json, hf.PREC.time,
    tailor.PREC.time (`/usr/bin/time -v` reports) and out.PREC/log.jsonl."""
    rows, notes = [], []
    mib = lambda kib: f"{kib / 1024:,.0f}" if kib else "—"  # noqa: E731
    for prec in precisions:
        hf = json.loads((work / f"hf.{prec}.json").read_text())
        log = work / f"out.{prec}" / "log.jsonl"
        ours = tailor_steps(log, hf["samples_per_step"]) if log.exists() else None
        hf_rss = hf["peak_rss_mib"] * 1024
        our_rss = peak_rss_kib(work / f"tailor.{prec}.time")
        our_s = f"{ours['mean_step_s']:.2f}" if ours else "—"
        ratio = f"{hf['mean_step_s'] / ours['mean_step_s']:.2f}" if ours else "—"
        hf_time_rss = peak_rss_kib(work / f"hf.{prec}.time")
        rows.append(
            f"| {prec} | {our_s} | {hf['mean_step_s']:.2f} | {ratio} | {mib(our_rss)} | {mib(hf_rss)} "
            f"({mib(hf_time_rss)}) | {hf['mean_tokens_per_step']:,.0f} |"
        )
        fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        # Same rows on both sides: tailor prints "train: N samples, T tokens, ..." at start; HF's
        # first epoch is its first train_rows / (batch * accum) steps.
        out = work / f"tailor.{prec}.out"
        ours_split = next((line.strip() for line in out.read_text().splitlines() if line.startswith("train:")), None) \
            if out.exists() else None
        per_epoch = max(1, hf["train_rows"] // (hf["batch"] * hf["accum"]))
        if ours_split and len(hf["tokens_per_step"]) >= per_epoch:
            notes.append(
                f"- {prec}: rows check: tailor \"{ours_split}\"; HF first epoch "
                f"{sum(hf['samples_per_step'][:per_epoch])} samples, {sum(hf['tokens_per_step'][:per_epoch])} tokens."
            )
        notes.append(
            f"- {prec}: HF steps {fmt(hf['step_s'])} s (model {hf['model_dtype']}, bf16={prec == 'bf16'}, "
            f"{hf['attn_implementation']} attention; peak RSS after import alone {hf['rss_after_import_mib']:,.0f} MiB, "
            f"after loading {hf['rss_after_load_mib']:,.0f} MiB); losses HF {fmt(hf['losses'])}"
            + (f", tailor {fmt(ours['losses'])}; tailor steps {fmt(ours['step_s'])} s ({ours['method']}), "
               f"train_runtime {ours['train_runtime_s']} s." if ours else "; tailor: not run.")
        )
    print("| precision | tailor s/step | HF s/step | HF/tailor | tailor peak RSS (MiB) "
          "| HF peak RSS (MiB): ru_maxrss (time -v) | tokens/step |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print()
    print("\n".join(notes))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        if len(sys.argv) < 4:
            sys.exit("usage: train_hf.py table WORK_DIR PRECISION...")
        table(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("catalog")
    parser.add_argument("--split", help="split.json of `tailor data split`; its train rows are used")
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32")
    parser.add_argument("--load-dtype", choices=("auto", "f32", "bf16"), default="auto",
                        help="dtype the model is loaded in (auto: bf16 with --precision bf16, else f32)")
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--accum", type=int, default=8)
    parser.add_argument("--attn", default="sdpa", help="attn_implementation (the tutorial leaves the default, sdpa)")
    args = parser.parse_args()
    # The Trainer prints to stdout; keep stdout for the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
