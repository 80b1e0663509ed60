#!/usr/bin/env python3
"""How well does a base model caption held-out products? (diagnostic for tools/demo/EXPERIMENTS.md)

    tailor predict --model BASE --dataset target/demo/catalog.parquet \
        --split-file SPLIT.json --split test --system "You are a helpful assistant." \
        --prompt "Describe this image." --out preds.jsonl
    python3 tools/demo/caption_accuracy.py target/demo/catalog.parquet SPLIT.json preds.jsonl

Prints, per sentence family of the generic caption (coverage, colour, pattern, construction
details, sleeve, neckline, length, fabric, corner mark), how often the prediction says the same
as the reference caption.
Standard library + pyarrow only.
"""
import json
import re
import sys

import pyarrow.parquet as pq

FAMILIES = {
    "colour": r"^A (\w+) piece",
    "coverage": r"piece of clothing (.*?), with",
    "pattern": r"with ([\w ]+) patterns",
    # The construction details (seams, bands, openings, pockets), right after the first sentence.
    "details": r"patterns\. (It (?:hangs|has|is fitted|is open|flares)[^.]*)\.",
    "sleeve": r"It is (sleeveless|short-sleeve|long-sleeve)\.",
    "neckline": r"It has a ([\w-]+) neckline",
    "length": r"It is of ([\w-]+) length",
    "fabric": r"The fabric is (\w+)",
    "mark": r"small (magenta dot|blue square)",
}


def parse(text):
    out = {}
    for k, pat in FAMILIES.items():
        m = re.search(pat, text)
        out[k] = m.group(1) if m else None
    return out


def main():
    catalog, split, preds = sys.argv[1:4]
    captions = pq.read_table(catalog, columns=["caption"]).column("caption").to_pylist()
    test = set(json.load(open(split))["test"])
    lines = [json.loads(l) for l in open(preds)]
    assert {l["row"] for l in lines} == test, "predictions are not the split's test rows"
    hits = {k: 0 for k in FAMILIES}
    for line in lines:
        ref, got = parse(captions[line["row"]]), parse(line["text"])
        for k in FAMILIES:
            hits[k] += ref[k] == got[k]
    n = len(lines)
    print(" ".join(f"{k} {100 * v / n:.0f}%" for k, v in hits.items()), f"(n={n})")


if __name__ == "__main__":
    main()
