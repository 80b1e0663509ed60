#!/usr/bin/env python3
"""Parity fixtures for `tailor_data::split` (crates/tailor-data/src/split/).

Pinned: Python 3.11, datasets==5.2.0, numpy==2.4.6 (the numpy that datasets 5.2.0 pulled in).
Regenerate (from the repository root, in a venv with those pins):
    HF_HUB_OFFLINE=1 python tools/reference/split_fixtures.py

Writes tests/fixtures/split/:
  rng.json              SeedSequence / PCG64 / Generator.permutation values from real NumPy
  train_test_split.json `Dataset.train_test_split(test_size, seed)` from real `datasets`
  hf_split.json         the recipe's two-stage split (train / valid / test) from real `datasets`,
                        including the sizes for which `datasets` raises
  grouped_split.json    the product-grouped split, computed by `grouped_split_reference` below,
                        a NumPy transliteration of the rule documented in split/mod.rs; it
                        proves the Rust code does what the documentation says

Every index list is 0-based into the original rows: the data sets are built from
`{"i": range(n)}`, so a split's `i` column is exactly the original row indices. Lists longer
than LARGE rows are stored as length, first and last 50 entries and an FNV-1a-64 hash (over
each index as 8 little-endian bytes) to keep the fixtures small.
"""

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "split"
LARGE = 10_000
EDGE = 50

RNG_SEEDS = [0, 1, 42, 1234, 2**32, 2**40 + 7, 2**64 - 1]
SIZES = [1, 2, 5, 6, 7, 10, 11, 100, 1001, 4321, 42537]
SPLIT_SEEDS = [42, 1234]
FRACTION_PAIRS = [(0.2, 0.5), (0.1, 0.3)]


def fnv1a64(indices):
    h = 0xCBF29CE484222325
    for i in indices:
        for b in int(i).to_bytes(8, "little"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def encode(indices):
    """A full list for small splits, a digest for large ones."""
    indices = [int(i) for i in indices]
    if len(indices) <= LARGE:
        return indices
    return {
        "len": len(indices),
        "head": indices[:EDGE],
        "tail": indices[-EDGE:],
        "fnv1a64": fnv1a64(indices),
    }


def rng_fixture():
    cases = []
    for seed in RNG_SEEDS:
        ss = np.random.SeedSequence(seed)
        bg = np.random.PCG64(seed)
        state = bg.state
        raw = np.random.default_rng(seed).bit_generator.random_raw(5)
        cases.append(
            {
                "seed": seed,
                "pool": [int(w) for w in ss.pool],
                "generate_state_u32_8": [int(w) for w in ss.generate_state(8, np.uint32)],
                "generate_state_u64_4": [int(w) for w in ss.generate_state(4, np.uint64)],
                "pcg_state": f"{state['state']['state']:032x}",
                "pcg_inc": f"{state['state']['inc']:032x}",
                "random_raw_5": [int(w) for w in raw],
                "permutation_10": [int(i) for i in np.random.default_rng(seed).permutation(10)],
                "permutation_1000": [int(i) for i in np.random.default_rng(seed).permutation(1000)],
            }
        )
    return {"numpy": np.__version__, "cases": cases}


def hf_train_test(n, test_size, seed):
    ds = datasets.Dataset.from_dict({"i": list(range(n))})
    dd = ds.train_test_split(test_size=test_size, seed=seed)
    return dd["train"]["i"], dd["test"]["i"]


def train_test_fixture():
    cases = []
    for n, test_size, seed in [
        (2, 0.5, 42),
        (10, 0.2, 42),
        (10, 0.25, 0),
        (1001, 0.25, 0),
        (100, 0.5, 2**40 + 7),
        (4321, 0.2, 1234),
    ]:
        train, test = hf_train_test(n, test_size, seed)
        cases.append(
            {
                "n_rows": n,
                "test_size": test_size,
                "seed": seed,
                "train": encode(train),
                "test": encode(test),
            }
        )
    return {"datasets": datasets.__version__, "numpy": np.__version__, "cases": cases}


def hf_split_reference(n, test_size, valid_size, seed):
    """The recipe: split off test_size, then split that part valid_size, both with `seed`.

    Returns (split, error): error names the stage whose train part came out empty.
    """
    ds = datasets.Dataset.from_dict({"i": list(range(n))})
    try:
        first = ds.train_test_split(test_size=test_size, seed=seed)
    except ValueError as e:
        return None, {"stage": "first", "message": str(e)}
    try:
        second = first["test"].train_test_split(test_size=valid_size, seed=seed)
    except ValueError as e:
        return None, {"stage": "second", "message": str(e)}
    return {
        "train": first["train"]["i"],
        "valid": second["train"]["i"],
        "test": second["test"]["i"],
    }, None


def hf_split_fixture():
    cases = []
    for test_size, valid_size in FRACTION_PAIRS:
        for seed in SPLIT_SEEDS:
            for n in SIZES:
                split, error = hf_split_reference(n, test_size, valid_size, seed)
                case = {"n_rows": n, "test_size": test_size, "valid_size": valid_size, "seed": seed}
                if error is not None:
                    case["error"] = error
                else:
                    case.update({k: encode(v) for k, v in split.items()})
                cases.append(case)
    return {"datasets": datasets.__version__, "numpy": np.__version__, "cases": cases}


def grouped_split_reference(groups, test_size, valid_size, seed):
    """The rule documented on `grouped_split`, written with NumPy's own generator."""
    n = len(groups)
    n_held_out = math.ceil(test_size * n)
    n_test = math.ceil(valid_size * n_held_out)
    n_valid = n_held_out - n_test
    distinct = sorted(set(groups))
    rows_of = {g: [] for g in distinct}
    for row, g in enumerate(groups):
        rows_of[g].append(row)
    rng = np.random.default_rng(seed)
    test, valid, train = [], [], []
    for k in rng.permutation(len(distinct)):
        rows = rows_of[distinct[k]]
        if len(test) < n_test:
            test += rows
        elif len(valid) < n_valid:
            valid += rows
        else:
            train += rows
    out = {}
    for name, rows in [("test", test), ("valid", valid), ("train", train)]:
        arr = np.array(rows, dtype=np.int64)
        rng.shuffle(arr)
        out[name] = arr.tolist()
    return out


def interleaved_groups(n, n_groups):
    """Rows of a group scattered over the table; the Rust test rebuilds the same vector."""
    return [(i * 7919) % n_groups for i in range(n)]


def grouped_fixture():
    # Small tables with uneven group sizes, stored in full.
    rs = np.random.RandomState(7)
    cases = []
    for n, max_views, seed, fractions in [
        (40, 3, 42, (0.2, 0.5)),
        (300, 9, 42, (0.2, 0.5)),
        (1000, 6, 1234, (0.1, 0.3)),
    ]:
        groups = []
        g = 0
        while len(groups) < n:
            groups += [int(g * 37 % 1_000_003)] * int(rs.randint(1, max_views + 1))
            g += 1
        groups = groups[:n]
        split = grouped_split_reference(groups, fractions[0], fractions[1], seed)
        cases.append(
            {
                "groups": {"explicit": groups},
                "test_size": fractions[0],
                "valid_size": fractions[1],
                "seed": seed,
                **{k: encode(v) for k, v in split.items()},
            }
        )
    # The real table's shape: 42,537 rows, about 8,054 products.
    for seed in SPLIT_SEEDS:
        groups = interleaved_groups(42537, 8054)
        split = grouped_split_reference(groups, 0.2, 0.5, seed)
        cases.append(
            {
                "groups": {"interleaved": {"n_rows": 42537, "n_groups": 8054}},
                "test_size": 0.2,
                "valid_size": 0.5,
                "seed": seed,
                **{k: encode(v) for k, v in split.items()},
            }
        )
    return {"numpy": np.__version__, "cases": cases}


def main():
    if datasets.__version__ != "5.2.0":
        sys.exit(f"expected datasets 5.2.0, found {datasets.__version__}")
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in [
        ("rng.json", rng_fixture),
        ("train_test_split.json", train_test_fixture),
        ("hf_split.json", hf_split_fixture),
        ("grouped_split.json", grouped_fixture),
    ]:
        path = OUT / name
        path.write_text(json.dumps(make(), separators=(",", ":")) + "\n")
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
