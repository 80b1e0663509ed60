"""The Hugging Face side of tools/bench/catalog_rss.sh: one pass over a parquet catalog with
`datasets` (as the recipe loads it) reading every image's size and counting categories."""
import collections
import sys

from datasets import load_dataset

# The recipe loads split "data" (the shard prefix names the split, as on the hub).
ds = load_dataset(sys.argv[1], split="data")
cat2 = collections.Counter()
sizes = collections.Counter()
for row in ds:
    cat2[row["category2"]] += 1
    sizes[row["image"].size] += 1
print(len(ds), len(cat2), len(sizes))
