use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use serde::Deserialize;

use super::*;

/// A fixture's index list: in full, or for large parts a digest of it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Expected {
    Full(Vec<usize>),
    Digest {
        len: usize,
        head: Vec<usize>,
        tail: Vec<usize>,
        fnv1a64: String,
    },
}

/// FNV-1a 64 over each index as 8 little-endian bytes, as `split_fixtures.py` computes it.
fn fnv1a64(indices: &[usize]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &index in indices {
        for byte in (index as u64).to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

fn assert_part(what: &str, actual: &[usize], expected: &Expected) {
    match expected {
        Expected::Full(rows) => assert_eq!(actual, rows.as_slice(), "{what}"),
        Expected::Digest {
            len,
            head,
            tail,
            fnv1a64: hash,
        } => {
            assert_eq!(actual.len(), *len, "{what}: length");
            assert_eq!(&actual[..head.len()], head.as_slice(), "{what}: head");
            assert_eq!(
                &actual[actual.len() - tail.len()..],
                tail.as_slice(),
                "{what}: tail"
            );
            assert_eq!(&fnv1a64(actual), hash, "{what}: hash");
        }
    }
}

#[derive(Deserialize)]
struct Fixture<C> {
    cases: Vec<C>,
}

fn fixture<C: for<'de> Deserialize<'de>>(json: &str) -> Vec<C> {
    serde_json::from_str::<Fixture<C>>(json).unwrap().cases
}

#[derive(Deserialize)]
struct HfSplitCase {
    n_rows: usize,
    test_size: f64,
    valid_size: f64,
    seed: u64,
    /// Present when `datasets` raised: `first` or `second` names the failing call.
    error: Option<HfError>,
    train: Option<Expected>,
    valid: Option<Expected>,
    test: Option<Expected>,
}

#[derive(Deserialize)]
struct HfError {
    stage: String,
}

fn check(case: &HfSplitCase) {
    let what = format!(
        "hf_split(n_rows={}, test_size={}, valid_size={}, seed={})",
        case.n_rows, case.test_size, case.valid_size, case.seed
    );
    let got = hf_split(case.n_rows, case.test_size, case.valid_size, case.seed);
    match (&case.error, got) {
        (Some(error), Err(SplitError::EmptySplit { left, .. })) => {
            // `datasets` says "train set will be empty" for both calls; the second call's
            // train part is our valid part.
            let expected_left = match error.stage.as_str() {
                "first" => "train",
                "second" => "valid",
                other => panic!("unknown stage {other}"),
            };
            assert_eq!(left, expected_left, "{what}");
        }
        (Some(error), got) => panic!("{what}: datasets failed at {}, got {got:?}", error.stage),
        (None, Err(e)) => panic!("{what}: {e}"),
        (None, Ok(split)) => {
            assert_part(
                &format!("{what} train"),
                &split.train,
                case.train.as_ref().unwrap(),
            );
            assert_part(
                &format!("{what} valid"),
                &split.valid,
                case.valid.as_ref().unwrap(),
            );
            assert_part(
                &format!("{what} test"),
                &split.test,
                case.test.as_ref().unwrap(),
            );
        }
    }
}

// Expected values: tools/reference/split_fixtures.py (real datasets 5.2.0) -> hf_split.json.
#[test]
fn hf_split_matches_datasets() {
    let cases: Vec<HfSplitCase> = fixture(include_str!(
        "../../../../tests/fixtures/split/hf_split.json"
    ));
    assert_eq!(cases.len(), 44);
    for case in &cases {
        check(case);
    }
}

#[derive(Deserialize)]
struct TrainTestCase {
    n_rows: usize,
    test_size: f64,
    seed: u64,
    train: Expected,
    test: Expected,
}

// Expected values: tools/reference/split_fixtures.py (real datasets 5.2.0)
// -> train_test_split.json.
#[test]
fn train_test_split_matches_datasets() {
    let cases: Vec<TrainTestCase> = fixture(include_str!(
        "../../../../tests/fixtures/split/train_test_split.json"
    ));
    assert_eq!(cases.len(), 6);
    for case in &cases {
        let what = format!(
            "train_test_split(n_rows={}, test_size={}, seed={})",
            case.n_rows, case.test_size, case.seed
        );
        let got = train_test_split(case.n_rows, case.test_size, case.seed).unwrap();
        assert_part(&format!("{what} train"), &got.train, &case.train);
        assert_part(&format!("{what} test"), &got.test, &case.test);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum GroupsSpec {
    Explicit(Vec<u32>),
    Interleaved { n_rows: usize, n_groups: u32 },
}

impl GroupsSpec {
    fn build(&self) -> Vec<u32> {
        match self {
            GroupsSpec::Explicit(groups) => groups.clone(),
            // `interleaved_groups` in split_fixtures.py: a product's rows spread over the table.
            GroupsSpec::Interleaved { n_rows, n_groups } => (0..*n_rows)
                .map(|i| ((i as u64 * 7919) % u64::from(*n_groups)) as u32)
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct GroupedCase {
    groups: GroupsSpec,
    test_size: f64,
    valid_size: f64,
    seed: u64,
    train: Expected,
    valid: Expected,
    test: Expected,
}

// Expected values: tools/reference/split_fixtures.py (`grouped_split_reference`, the documented
// rule written with real NumPy) -> grouped_split.json.
#[test]
fn grouped_split_matches_its_documented_numpy_rule() {
    let cases: Vec<GroupedCase> = fixture(include_str!(
        "../../../../tests/fixtures/split/grouped_split.json"
    ));
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let groups = case.groups.build();
        let what = format!(
            "grouped_split({} rows, test_size={}, valid_size={}, seed={})",
            groups.len(),
            case.test_size,
            case.valid_size,
            case.seed
        );
        let got = grouped_split(&groups, case.test_size, case.valid_size, case.seed).unwrap();
        assert_part(&format!("{what} train"), &got.train, &case.train);
        assert_part(&format!("{what} valid"), &got.valid, &case.valid);
        assert_part(&format!("{what} test"), &got.test, &case.test);
        assert_eq!(leaked_groups(&got, &groups).leaked_groups, 0, "{what}");
    }
}

#[test]
fn recipe_sizes_on_the_reference_catalog() {
    let split = hf_split(42_537, 0.2, 0.5, 42).unwrap();
    assert_eq!(
        (split.train.len(), split.valid.len(), split.test.len()),
        (34_029, 4_254, 4_254)
    );
}

#[test]
fn random_split_leaks_products_and_grouped_split_does_not() {
    // The reference catalog's shape: 42,537 rows over 8,054 products.
    let groups = GroupsSpec::Interleaved {
        n_rows: 42_537,
        n_groups: 8_054,
    }
    .build();
    let random = leaked_groups(&hf_split(groups.len(), 0.2, 0.5, 42).unwrap(), &groups);
    assert!(random.leaked_groups > 4_000, "{random:?}");
    assert!(random.test_rows_seen_in_train > 3_000, "{random:?}");
    let grouped = leaked_groups(&grouped_split(&groups, 0.2, 0.5, 42).unwrap(), &groups);
    assert_eq!(grouped.groups, 8_054);
    assert_eq!(
        (
            grouped.leaked_groups,
            grouped.leaked_rows,
            grouped.test_rows_seen_in_train
        ),
        (0, 0, 0)
    );
}

#[test]
fn leak_report_counts_by_hand() {
    // Rows 0..8 in groups: a a b b c c d e (as 10 10 20 20 30 30 40 50).
    let groups = [10, 10, 20, 20, 30, 30, 40, 50];
    let split = SplitIndices {
        train: vec![0, 2, 4, 6],
        valid: vec![1, 5, 7],
        test: vec![3],
    };
    assert_eq!(
        leaked_groups(&split, &groups),
        LeakReport {
            groups: 5,
            leaked_groups: 3,
            leaked_rows: 6,
            train_valid_groups: 2,
            train_test_groups: 1,
            valid_test_groups: 0,
            valid_rows_seen_in_train: 2,
            test_rows_seen_in_train: 1,
        }
    );
}

#[test]
fn split_indices_json_shape() {
    let split = SplitIndices {
        train: vec![2, 0],
        valid: vec![3],
        test: vec![1],
    };
    let json = serde_json::to_string(&split).unwrap();
    assert_eq!(json, r#"{"train":[2,0],"valid":[3],"test":[1]}"#);
    assert_eq!(serde_json::from_str::<SplitIndices>(&json).unwrap(), split);
    assert!(serde_json::from_str::<SplitIndices>(r#"{"train":[],"valid":[]}"#).is_err());
}

#[test]
fn error_messages_name_the_numbers() {
    let cases: [(Result<SplitIndices, SplitError>, &str); 8] = [
        (
            hf_split(1, 0.2, 0.5, 42),
            "test_size=0.2 of 1 rows puts ceil(0.2 * 1) = 1 in valid and test and leaves train \
             empty",
        ),
        (
            hf_split(5, 0.2, 0.5, 42),
            "valid_size=0.5 of 1 held-out rows puts ceil(0.5 * 1) = 1 in test and leaves valid \
             empty",
        ),
        (hf_split(0, 0.2, 0.5, 42), "cannot split 0 rows"),
        (
            hf_split(10, 1.0, 0.5, 42),
            "test_size=1 must be a fraction in the open range (0, 1)",
        ),
        (
            hf_split(10, 0.2, f64::NAN, 42),
            "valid_size=NaN must be a fraction in the open range (0, 1)",
        ),
        (
            grouped_split(&[1, 1, 1, 1, 1, 2, 2, 2, 2, 2], 0.2, 0.5, 0),
            "2 groups over 10 rows are too few for three non-empty parts: train got no group",
        ),
        (
            grouped_split(&[7; 10], 0.2, 0.5, 0),
            "1 groups over 10 rows are too few for three non-empty parts: valid got no group",
        ),
        (grouped_split(&[], 0.2, 0.5, 0), "cannot split 0 rows"),
    ];
    for (got, message) in cases {
        assert_eq!(got.unwrap_err().to_string(), message);
    }
    assert_eq!(
        train_test_split(10, 0.95, 0).unwrap_err().to_string(),
        "test_size=0.95 of 10 rows puts ceil(0.95 * 10) = 10 in test and leaves train empty"
    );
    for bad in [0.0, -0.1, 1.5, f64::INFINITY, f64::NAN] {
        assert!(matches!(
            train_test_split(10, bad, 0),
            Err(SplitError::BadFraction {
                name: "test_size",
                ..
            })
        ));
    }
}

#[test]
fn grouped_split_with_one_group_per_row_keeps_the_row_targets() {
    // With singleton groups every part gets exactly the HF row counts.
    let groups: Vec<u32> = (0..1001).rev().collect();
    let split = grouped_split(&groups, 0.2, 0.5, 42).unwrap();
    let hf = hf_split(1001, 0.2, 0.5, 42).unwrap();
    assert_eq!(
        (split.train.len(), split.valid.len(), split.test.len()),
        (hf.train.len(), hf.valid.len(), hf.test.len())
    );
}

/// Panics unless the three parts together hold each of `0..n_rows` exactly once.
fn assert_partition(split: &SplitIndices, n_rows: usize) {
    let mut all: Vec<usize> = [&split.train, &split.valid, &split.test]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..n_rows).collect::<Vec<_>>());
}

fn groups_of(rows: &[usize], groups: &[u32]) -> HashSet<u32> {
    rows.iter().map(|&r| groups[r]).collect()
}

/// Any group ids, with rows of a group scattered: values drawn from a small range repeat.
fn any_groups() -> impl Strategy<Value = Vec<u32>> {
    (1u32..80).prop_flat_map(|range| prop::collection::vec(0..range, 1..600))
}

/// 250 to 400 groups of 1 to 5 rows each: enough that every split must succeed for the
/// fractions of `feasible_fractions`.
fn many_small_groups() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1usize..=5, 250..400).prop_map(|sizes| {
        sizes
            .iter()
            .enumerate()
            .flat_map(|(g, &size)| std::iter::repeat_n(g as u32 * 3 + 1, size))
            .collect()
    })
}

fn feasible_fractions() -> impl Strategy<Value = (f64, f64)> {
    (0.05f64..0.5, 0.1f64..0.9)
}

proptest! {
    #[test]
    fn hf_split_is_a_partition_of_the_rows(
        n_rows in 1usize..3000,
        test_size in 0.001f64..0.999,
        valid_size in 0.001f64..0.999,
        seed in any::<u64>(),
    ) {
        match hf_split(n_rows, test_size, valid_size, seed) {
            Ok(split) => {
                assert_partition(&split, n_rows);
                let n_held = (test_size * n_rows as f64).ceil() as usize;
                let n_test = (valid_size * n_held as f64).ceil() as usize;
                prop_assert_eq!(split.train.len(), n_rows - n_held);
                prop_assert_eq!(split.test.len(), n_test);
                prop_assert_eq!(split.valid.len(), n_held - n_test);
            }
            Err(SplitError::EmptySplit { n_rows: m, n_held, .. }) => prop_assert_eq!(n_held, m),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn grouped_split_keeps_groups_whole_and_sizes_near_targets(
        groups in any_groups(),
        test_size in 0.01f64..0.99,
        valid_size in 0.01f64..0.99,
        seed in any::<u64>(),
    ) {
        match grouped_split(&groups, test_size, valid_size, seed) {
            Ok(split) => {
                check_grouped(&split, &groups, test_size, valid_size);
                prop_assert_eq!(
                    grouped_split(&groups, test_size, valid_size, seed).unwrap(),
                    split
                );
            }
            Err(SplitError::EmptySplit { .. } | SplitError::TooFewGroups { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn grouped_split_succeeds_with_many_small_groups(
        groups in many_small_groups(),
        (test_size, valid_size) in feasible_fractions(),
        seed in any::<u64>(),
    ) {
        let split = grouped_split(&groups, test_size, valid_size, seed).unwrap();
        check_grouped(&split, &groups, test_size, valid_size);
    }
}

/// The documented guarantees of [`grouped_split`]: a partition, no group in two parts, and
/// test / valid within one group's size (minus one) above their row targets.
fn check_grouped(split: &SplitIndices, groups: &[u32], test_size: f64, valid_size: f64) {
    let n_rows = groups.len();
    assert_partition(split, n_rows);
    let train = groups_of(&split.train, groups);
    let valid = groups_of(&split.valid, groups);
    let test = groups_of(&split.test, groups);
    assert!(train.is_disjoint(&valid) && train.is_disjoint(&test) && valid.is_disjoint(&test));
    assert_eq!(leaked_groups(split, groups).leaked_groups, 0);

    let mut sizes: HashMap<u32, usize> = HashMap::new();
    for &g in groups {
        *sizes.entry(g).or_default() += 1;
    }
    let largest = *sizes.values().max().unwrap();
    let n_held = (test_size * n_rows as f64).ceil() as usize;
    let n_test = (valid_size * n_held as f64).ceil() as usize;
    let n_valid = n_held - n_test;
    assert!((n_test..n_test + largest).contains(&split.test.len()));
    assert!((n_valid..n_valid + largest).contains(&split.valid.len()));
    assert!(!split.train.is_empty());
}
