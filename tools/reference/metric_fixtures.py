#!/usr/bin/env python3
"""Parity fixtures for `tailor_eval` (crates/tailor-eval/): BLEU-4, ROUGE-L and macro-F1.

Pinned: Python 3.11, nltk==3.10.4, rouge-chinese==1.0.3, jieba==0.42.1, scikit-learn==1.9.1
(numpy==2.4.6 as pulled in). These are the metric packages LLaMA-Factory's `[metrics]` extra
installs. They live in their own small venv, apart from the torch stack of requirements.txt:
    python3 -m venv /work/venv-metrics
    /work/venv-metrics/bin/pip install nltk==3.10.4 rouge-chinese==1.0.3 jieba==0.42.1 \
        scikit-learn==1.9.1
Regenerate (from the repository root):
    /work/venv-metrics/bin/python tools/reference/metric_fixtures.py

Writes tests/fixtures/eval/metrics.json:
  similarity   ~30 (reference, prediction) description pairs with, per pair, the raw
               `sentence_bleu([list(ref)], list(pred), smoothing_function=method3)` and the raw
               rouge_chinese ROUGE-L F on jieba tokens (0 when LLaMA-Factory skips ROUGE), the
               jieba tokens of the prediction, and LLaMA-Factory's per-sample values
               `round(x * 100, 4)`; plus `mean_bleu4` / `mean_rouge_l` (np.mean of those)
  classification  reference / prediction answers, their category2 classes (`<invalid>` for an
               invalid prediction), and scikit-learn's macro F1 and per-class precision, recall,
               F1 and support with labels = sorted union of the classes minus `<invalid>`

`similarity_scores` below is LLaMA-Factory's `ComputeSimilarity.__call__`
(src/llamafactory/train/sft/metric.py) for one decoded (pred, label) pair.
"""

import importlib.metadata
import logging
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jieba  # noqa: E402
import numpy as np  # noqa: E402
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu  # noqa: E402
from rouge_chinese import Rouge  # noqa: E402
from sklearn.metrics import f1_score, precision_recall_fscore_support  # noqa: E402

from common import write_json  # noqa: E402

PINNED = {"nltk": "3.10.4", "rouge-chinese": "1.0.3", "jieba": "0.42.1", "scikit-learn": "1.9.1"}
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "eval" / "metrics.json"

SYNTH_A = (
    "This female wears a long-sleeve red dress with striped patterns. The dress is with chiffon "
    "fabric. It has a V-shape neckline. The dress this female wears is of three-quarter length. "
    "There is a belt on her waist."
)
SYNTH_B = (
    "This female wears a short-sleeve red dress with floral patterns. The dress is with cotton "
    "fabric. It has a round neckline. The dress this female wears is of long length."
)
REAL = (
    "The person is wearing a tank tank shirt with pure color patterns. The tank shirt is with "
    "cotton fabric. It has a round neckline. The pants this lady wears is of long length. The "
    "pants are with cotton fabric and pure color patterns. There is an accessory on her wrist. "
    "This female wears a ring."
)
REAL_2 = (
    "This female is wearing a long-sleeve shirt with solid color patterns. The shirt is with "
    "knitting fabric and its neckline is round. The trousers this female wears is of long length."
)

# (reference, prediction): identical, empty, whitespace, partial overlap, length differences,
# punctuation jieba treats specially, sentence ends rouge_chinese cuts on, non-ASCII text.
PAIRS = [
    (SYNTH_A, SYNTH_A),
    (SYNTH_A, SYNTH_B),
    (SYNTH_B, SYNTH_A),
    (REAL, REAL_2),
    (REAL, SYNTH_A),
    (SYNTH_A, ""),
    ("", SYNTH_A),
    ("", ""),
    (SYNTH_A, "   \t "),
    (SYNTH_A, "This"),
    (SYNTH_A, "T"),
    ("a", "a"),
    ("ab", "ab"),
    ("abc", "abd"),
    (SYNTH_A, SYNTH_A.split(". ")[0] + "."),
    (SYNTH_A.split(". ")[0] + ".", SYNTH_A),
    ("the the the the the the the.", "the the the."),
    ("red red red", "red red red red red red red red red red"),
    ("This male wears a T-shirt with V-shape neckline.", "This male wears a T - shirt with V shape neckline ."),
    ("Price: 3.5% off, C++ and AT&T; c# too.", "Price 3.5 % off C++ AT&T c#"),
    ("Is it red? Yes! It is red.", "Is it red?Yes. It is red?"),
    ("wait...... then more……done", "wait......then more…… done"),
    ("He said “is it?” and left.", "He said “is it?”and left."),
    ("line one\nline two\r\nline three", "line one line two\nline three"),
    ("tabs\tand  double  spaces", "tabs and double spaces"),
    ("info\x1cseparator\x1fhere", "info separator here"),
    ("Café crème, naïve façade.", "Cafe creme, naive facade."),
    ("emoji 👗 dress 👗", "emoji dress 👗👗"),
    ("x--y..z__w", "x - - y . . z _ _ w"),
    ("??!!", "?? !!"),
    ("The pants are with denim fabric.", "the pants are with denim fabric."),
    ("MEN wears 3 items: 1.5x 2.0 3.25%", "MEN wears 3 items 1.5 x 2.0 3.25 %"),
]


def versions() -> dict:
    return {name: importlib.metadata.version(name) for name in PINNED}


def similarity_scores(pred: str, label: str) -> dict:
    """LLaMA-Factory's ComputeSimilarity for one pair, with the raw scores kept too."""
    hypothesis = list(jieba.cut(pred))
    reference = list(jieba.cut(label))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
        rouge_l = 0.0
    else:
        scores = Rouge().get_scores(" ".join(hypothesis), " ".join(reference))
        rouge_l = scores[0]["rouge-l"]["f"]
    bleu = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
    return {
        "prediction_tokens": hypothesis,
        "bleu4": float(bleu),
        "rouge_l": float(rouge_l),
        "llamafactory_bleu4": round(bleu * 100, 4),
        "llamafactory_rouge_l": round(rouge_l * 100, 4),
    }


# (reference answer, prediction answer, predicted category2 or "<invalid>"); the label set for
# validity is {(WOMEN, dresses), (WOMEN, skirts), (WOMEN, tees), (MEN, tees), (MEN, pants)}.
CLASSIFICATION = [
    ("WOMEN/dresses: a", "WOMEN/dresses: a", "dresses"),
    ("WOMEN/dresses: a", "WOMEN/dresses: b", "dresses"),
    ("WOMEN/dresses: a", "WOMEN/skirts: a", "skirts"),
    ("WOMEN/dresses: a", "I think it is a dress", "<invalid>"),
    ("WOMEN/skirts: a", "WOMEN/skirts: a", "skirts"),
    ("WOMEN/skirts: a", "WOMEN/dresses: a", "dresses"),
    ("MEN/tees: a", "MEN/tees: a", "tees"),
    ("MEN/tees: a", "WOMEN/tees: a", "tees"),
    ("MEN/tees: a", "MEN/shorts: a", "<invalid>"),
    ("MEN/tees: a", "MEN/pants: a", "pants"),
    ("WOMEN/tees: a", "WOMEN/tees: a", "tees"),
    ("WOMEN/tees: a", "WOMEN/dresses: a", "dresses"),
]
LABEL_SET = [["WOMEN", "dresses"], ["WOMEN", "skirts"], ["WOMEN", "tees"], ["MEN", "tees"], ["MEN", "pants"]]


def classification() -> dict:
    y_true = [r.split(":")[0].split("/")[1] for r, _, _ in CLASSIFICATION]
    y_pred = [p for _, _, p in CLASSIFICATION]
    labels = sorted((set(y_true) | set(y_pred)) - {"<invalid>"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macro = f1_score(y_true, y_pred, labels=labels, average="macro")
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None)
    return {
        "label_set": LABEL_SET,
        "samples": [{"reference": a, "prediction": b, "predicted_class": c} for a, b, c in CLASSIFICATION],
        "labels": labels,
        "macro_f1": float(macro),
        "per_class": [
            {"label": l, "precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
            for l, pi, ri, fi, si in zip(labels, p, r, f, s)
        ],
    }


def main() -> None:
    found = versions()
    if found != PINNED:
        sys.exit(f"version mismatch: want {PINNED}, found {found}")
    jieba.setLogLevel(logging.CRITICAL)
    jieba.initialize()
    pairs = []
    for ref, pred in PAIRS:
        pairs.append({"reference": ref, "prediction": pred, **similarity_scores(pred, ref)})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        OUT,
        {
            "generator": "tools/reference/metric_fixtures.py",
            "versions": found,
            "similarity": pairs,
            "mean_bleu4": float(np.mean([p["llamafactory_bleu4"] for p in pairs])),
            "mean_rouge_l": float(np.mean([p["llamafactory_rouge_l"] for p in pairs])),
            "classification": classification(),
        },
    )
    print(f"wrote {OUT.relative_to(ROOT)}: {len(pairs)} pairs")


if __name__ == "__main__":
    main()
