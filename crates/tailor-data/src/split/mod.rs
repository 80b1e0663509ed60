//! Train / valid / test splits of a catalog's rows: the recipe's Hugging Face split
//! reproduced row for row ([`hf_split`]), a split that keeps each product's views together
//! ([`grouped_split`]), and a measure of how much a split leaks products across its parts
//! ([`leaked_groups`]).
//!
//! Splits are index lists into the original rows; this module never sees the rows
//! themselves, so it works the same for parquet, JSONL and CSV catalogs.
//!
//! The recipe's random split puts other views of a test product into train (about 5.3 views
//! per product in the reference catalog), which inflates eval scores; the grouped split is
//! the honest alternative, and [`LeakReport`] says how large the difference could be.

pub mod numpy_rng;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use numpy_rng::default_rng;

/// Row indices (0-based, into the original rows) of the three parts of a split.
///
/// Serializes as `{"train": [...], "valid": [...], "test": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitIndices {
    /// Rows to train on.
    pub train: Vec<usize>,
    /// Rows for evaluation during training (model selection).
    pub valid: Vec<usize>,
    /// Rows held back for the final evaluation.
    pub test: Vec<usize>,
}

/// The two parts of one `Dataset.train_test_split` call, as indices into `0..n_rows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainTest {
    /// `permutation[n_test..]`: the rows HF calls `train`.
    pub train: Vec<usize>,
    /// `permutation[..n_test]`: the rows HF calls `test`.
    pub test: Vec<usize>,
}

/// How much a split lets groups (products) cross between its parts.
///
/// "Seen in train" counts are the ones that matter for inflated scores: an eval row whose
/// product also has rows in train is partly a memorisation test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakReport {
    /// Distinct groups among all rows of the split.
    pub groups: usize,
    /// Groups with rows in more than one part.
    pub leaked_groups: usize,
    /// Rows, in any part, whose group is leaked.
    pub leaked_rows: usize,
    /// Groups with rows in both train and valid.
    pub train_valid_groups: usize,
    /// Groups with rows in both train and test.
    pub train_test_groups: usize,
    /// Groups with rows in both valid and test.
    pub valid_test_groups: usize,
    /// Valid rows whose group also has rows in train.
    pub valid_rows_seen_in_train: usize,
    /// Test rows whose group also has rows in train.
    pub test_rows_seen_in_train: usize,
}

/// Why a split could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    /// A size fraction is NaN or outside the open range (0, 1); `datasets` rejects the same
    /// values (NaN only later, when it rounds).
    #[error("{name}={value} must be a fraction in the open range (0, 1)")]
    BadFraction {
        /// The argument: `test_size` or `valid_size`.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// There are no rows. `datasets` returns empty splits here; we refuse, because an empty
    /// split is never what a fine-tuning run wants.
    #[error("cannot split 0 rows")]
    NoRows,
    /// Rounding the held-out count up (`ceil(fraction * n_rows)`, as `datasets` does) takes
    /// every row and leaves the other part empty, the case `datasets` reports as "the
    /// resulting train set will be empty".
    #[error(
        "{name}={fraction} of {n_rows} {rows} puts ceil({fraction} * {n_rows}) = {n_held} in \
         {held} and leaves {left} empty"
    )]
    EmptySplit {
        /// The fraction's argument name: `test_size` or `valid_size`.
        name: &'static str,
        /// The fraction's value.
        fraction: f64,
        /// How many rows were being split.
        n_rows: usize,
        /// What those rows are: `rows` or `held-out rows` (the second stage of the recipe).
        rows: &'static str,
        /// The rounded-up held-out count.
        n_held: usize,
        /// The part(s) the held-out rows go to.
        held: &'static str,
        /// The part left empty.
        left: &'static str,
    },
    /// Whole groups cannot fill all three parts: after test and valid took their groups,
    /// one part got none.
    #[error(
        "{n_groups} groups over {n_rows} rows are too few for three non-empty parts: {empty} \
         got no group"
    )]
    TooFewGroups {
        /// Distinct groups.
        n_groups: usize,
        /// Rows.
        n_rows: usize,
        /// The part left without a group: `valid` or `train`.
        empty: &'static str,
    },
}

/// HF `Dataset.train_test_split(test_size=test_size, seed=seed)` on `n_rows` rows, as
/// indices into `0..n_rows`.
///
/// `n_test = ceil(test_size * n_rows)`, `n_train = n_rows - n_test`; the permutation is
/// `np.random.default_rng(seed).permutation(n_rows)`; test is its first `n_test` entries and
/// train the rest, both in permutation order.
pub fn train_test_split(n_rows: usize, test_size: f64, seed: u64) -> Result<TrainTest, SplitError> {
    check_fraction("test_size", test_size)?;
    let n_test = held_out_count(n_rows, test_size, Stage::Single)?;
    Ok(permute_and_cut(n_rows, n_test, seed))
}

/// The recipe's split, row for row as `datasets` makes it:
///
/// ```python
/// first = ds.train_test_split(test_size=test_size, seed=seed)
/// second = first["test"].train_test_split(test_size=valid_size, seed=seed)
/// train, valid, test = first["train"], second["train"], second["test"]
/// ```
///
/// so `valid_size` is the fraction of the held-out rows that go to *test*. With 42,537 rows,
/// 0.2, 0.5 and seed 42 this gives 34,029 / 4,254 / 4,254 rows. Each part lists original row
/// indices in the order `datasets` yields them.
pub fn hf_split(
    n_rows: usize,
    test_size: f64,
    valid_size: f64,
    seed: u64,
) -> Result<SplitIndices, SplitError> {
    check_fraction("test_size", test_size)?;
    check_fraction("valid_size", valid_size)?;
    let n_held = held_out_count(n_rows, test_size, Stage::RecipeFirst)?;
    let first = permute_and_cut(n_rows, n_held, seed);
    let n_test = held_out_count(first.test.len(), valid_size, Stage::RecipeSecond)?;
    // The second split permutes positions within the held-out part, so map them back.
    let second = permute_and_cut(first.test.len(), n_test, seed);
    let original = |positions: Vec<usize>| positions.into_iter().map(|k| first.test[k]).collect();
    Ok(SplitIndices {
        valid: original(second.train),
        test: original(second.test),
        train: first.train,
    })
}

/// A split in which no group (product) has rows in two parts, with part sizes close to what
/// [`hf_split`] would give for the same fractions.
///
/// `groups[r]` is the group of row `r`. The exact rule, reproducible in ten lines of NumPy
/// (`grouped_split_reference` in `tools/reference/split_fixtures.py` is exactly that):
///
/// 1. Row targets as in [`hf_split`]: `n_held = ceil(test_size * n)`,
///    `n_test = ceil(valid_size * n_held)`, `n_valid = n_held - n_test`.
/// 2. Distinct group ids are sorted ascending (so the result does not depend on row order),
///    and visited in the order of `default_rng(seed).permutation(n_groups)`.
/// 3. Each visited group goes whole, with its rows in ascending order, to test while test has
///    fewer than `n_test` rows, else to valid while valid has fewer than `n_valid` rows, else
///    to train.
/// 4. The same generator then shuffles the rows of test, valid and train, in that order, so
///    each part is in random order like the HF parts (and "the first k test rows" is a fair
///    sample).
///
/// So test has between `n_test` and `n_test + g - 1` rows, valid between `n_valid` and
/// `n_valid + g - 1`, and train correspondingly fewer than `n - n_held`, where `g` is the
/// largest group's row count. It is an error if valid or train ends up with no group.
pub fn grouped_split(
    groups: &[u32],
    test_size: f64,
    valid_size: f64,
    seed: u64,
) -> Result<SplitIndices, SplitError> {
    check_fraction("test_size", test_size)?;
    check_fraction("valid_size", valid_size)?;
    let n_rows = groups.len();
    let n_held = held_out_count(n_rows, test_size, Stage::RecipeFirst)?;
    let n_test = held_out_count(n_held, valid_size, Stage::RecipeSecond)?;
    let n_valid = n_held - n_test;

    // A stable sort by group keeps each group's rows ascending and puts groups in id order.
    let mut by_group: Vec<usize> = (0..n_rows).collect();
    by_group.sort_by_key(|&row| groups[row]);
    let group_rows: Vec<&[usize]> = by_group.chunk_by(|&a, &b| groups[a] == groups[b]).collect();

    let mut rng = default_rng(seed);
    let mut split = SplitIndices {
        train: Vec::with_capacity(n_rows - n_held),
        valid: Vec::with_capacity(n_valid),
        test: Vec::with_capacity(n_test),
    };
    for k in rng.permutation(group_rows.len()) {
        let part = if split.test.len() < n_test {
            &mut split.test
        } else if split.valid.len() < n_valid {
            &mut split.valid
        } else {
            &mut split.train
        };
        part.extend_from_slice(group_rows[k]);
    }
    // Test always gets the first group (n_test >= 1 because n >= 1 and test_size > 0).
    for (name, part) in [("valid", &split.valid), ("train", &split.train)] {
        if part.is_empty() {
            return Err(SplitError::TooFewGroups {
                n_groups: group_rows.len(),
                n_rows,
                empty: name,
            });
        }
    }
    rng.shuffle(&mut split.test);
    rng.shuffle(&mut split.valid);
    rng.shuffle(&mut split.train);
    Ok(split)
}

/// Counts the groups of `split` that have rows in more than one part, and the rows they
/// cover; see [`LeakReport`]. `groups[r]` is the group of row `r`.
///
/// # Panics
///
/// If a row index in `split` is not below `groups.len()`: the split was made for other rows.
pub fn leaked_groups(split: &SplitIndices, groups: &[u32]) -> LeakReport {
    const TRAIN: u8 = 1;
    const VALID: u8 = 2;
    const TEST: u8 = 4;
    let parts = [
        (TRAIN, &split.train),
        (VALID, &split.valid),
        (TEST, &split.test),
    ];
    let group_of = |row: usize| {
        *groups.get(row).unwrap_or_else(|| {
            panic!(
                "split row {row} is out of range for {} group ids",
                groups.len()
            )
        })
    };

    // Which parts each group appears in, as a bit set.
    let mut seen_in: HashMap<u32, u8> = HashMap::new();
    for (bit, rows) in parts {
        for &row in rows.iter() {
            *seen_in.entry(group_of(row)).or_default() |= bit;
        }
    }
    let groups_in = |both: u8| seen_in.values().filter(|&&m| m & both == both).count();
    let rows_where = |rows: &[usize], pred: &dyn Fn(u8) -> bool| {
        rows.iter()
            .filter(|&&row| pred(seen_in[&group_of(row)]))
            .count()
    };
    let leaked = |mask: u8| mask.count_ones() > 1;
    let in_train = |mask: u8| mask & TRAIN != 0;

    LeakReport {
        groups: seen_in.len(),
        leaked_groups: seen_in.values().filter(|&&m| leaked(m)).count(),
        leaked_rows: parts
            .iter()
            .map(|(_, rows)| rows_where(rows, &leaked))
            .sum(),
        train_valid_groups: groups_in(TRAIN | VALID),
        train_test_groups: groups_in(TRAIN | TEST),
        valid_test_groups: groups_in(VALID | TEST),
        valid_rows_seen_in_train: rows_where(&split.valid, &in_train),
        test_rows_seen_in_train: rows_where(&split.test, &in_train),
    }
}

/// Which call of a split is rounding its held-out count; only changes the error's wording.
#[derive(Clone, Copy)]
enum Stage {
    /// A lone `train_test_split`.
    Single,
    /// The recipe's first call: train vs. everything held out.
    RecipeFirst,
    /// The recipe's second call, on the held-out rows: valid vs. test.
    RecipeSecond,
}

fn check_fraction(name: &'static str, value: f64) -> Result<(), SplitError> {
    // Written so that NaN fails too.
    if value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(SplitError::BadFraction { name, value })
    }
}

/// `ceil(fraction * n_rows)`, computed in f64 exactly as Python does for `float * int`, and
/// checked to leave the other part non-empty.
fn held_out_count(n_rows: usize, fraction: f64, stage: Stage) -> Result<usize, SplitError> {
    if n_rows == 0 {
        return Err(SplitError::NoRows);
    }
    // Exact for any row count below 2^53; the result is at most n_rows because fraction < 1.
    let n_held = (fraction * n_rows as f64).ceil() as usize;
    if n_held < n_rows {
        return Ok(n_held);
    }
    let (name, rows, held, left) = match stage {
        Stage::Single => ("test_size", "rows", "test", "train"),
        Stage::RecipeFirst => ("test_size", "rows", "valid and test", "train"),
        Stage::RecipeSecond => ("valid_size", "held-out rows", "test", "valid"),
    };
    Err(SplitError::EmptySplit {
        name,
        fraction,
        n_rows,
        rows,
        n_held,
        held,
        left,
    })
}

/// The random partition of `train_test_split` once the sizes are known.
fn permute_and_cut(n_rows: usize, n_test: usize, seed: u64) -> TrainTest {
    let mut permutation = default_rng(seed).permutation(n_rows);
    let train = permutation.split_off(n_test);
    TrainTest {
        train,
        test: permutation,
    }
}

#[cfg(test)]
mod tests;
