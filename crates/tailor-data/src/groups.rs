//! Product groups: which rows show the same product, read from a column and optionally narrowed by
//! a regex (DeepFashion's `item_ID` holds the product id inside `…-id_00005873-02_3_back`).

use std::collections::HashMap;

use regex::Regex;

use crate::catalog::Row;
use crate::error::{DataError, Result};

/// How a row's group key is read.
#[derive(Debug, Clone)]
pub struct GroupKey {
    /// The column holding the key.
    pub column: String,
    /// When set, the key is the regex's first capture group (or the whole match if it has none).
    pub pattern: Option<Regex>,
}

impl GroupKey {
    /// A key from a column and an optional regex; the regex must compile.
    pub fn new(column: &str, pattern: Option<&str>) -> Result<GroupKey> {
        let pattern = pattern
            .map(|p| {
                Regex::new(p).map_err(|e| DataError::Invalid(format!("--group-pattern {p:?}: {e}")))
            })
            .transpose()?;
        Ok(GroupKey {
            column: column.to_string(),
            pattern,
        })
    }

    /// The key of one row; an error names the row when the column is null or the regex misses.
    pub fn key<'r>(&self, row: &'r Row) -> Result<&'r str> {
        let value = row.require(&self.column)?;
        match &self.pattern {
            None => Ok(value),
            Some(re) => {
                let caps = re.captures(value).ok_or_else(|| {
                    row.error(
                        &self.column,
                        format!("{value:?} does not match --group-pattern {:?}", re.as_str()),
                    )
                })?;
                Ok(caps
                    .get(1)
                    .or_else(|| caps.get(0))
                    .map_or("", |m| m.as_str()))
            }
        }
    }
}

/// Dense group ids (0, 1, … in order of first appearance), one per row.
#[derive(Debug, Clone, Default)]
pub struct GroupIds {
    ids: HashMap<String, u32>,
    /// The group id of each row, in row order.
    pub rows: Vec<u32>,
}

impl GroupIds {
    /// Records the next row's key and returns its group id.
    pub fn push(&mut self, key: &str) -> u32 {
        let next = self.ids.len() as u32;
        let id = *self.ids.entry(key.to_string()).or_insert(next);
        self.rows.push(id);
        id
    }

    /// Number of distinct groups.
    pub fn groups(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    fn row(v: &str) -> Row {
        Row::new(
            3,
            Arc::from(Path::new("f.jsonl")),
            None,
            vec![("item_ID".into(), Some(v.into()))],
        )
    }

    #[test]
    fn deepfashion_product_ids() {
        let k = GroupKey::new("item_ID", Some(r"id_(\d+)")).unwrap();
        assert_eq!(
            k.key(&row("WOMEN-Blouses_Shirts-id_00005873-02_3_back"))
                .unwrap(),
            "00005873"
        );
        let err = k.key(&row("no id here")).unwrap_err().to_string();
        assert!(err.contains("row 3") && err.contains("item_ID"), "{err}");
        let whole = GroupKey::new("item_ID", None).unwrap();
        assert_eq!(whole.key(&row("x")).unwrap(), "x");
        assert!(GroupKey::new("item_ID", Some("(")).is_err());
    }

    #[test]
    fn dense_ids_in_first_seen_order() {
        let mut g = GroupIds::default();
        for k in ["b", "a", "b", "c", "a"] {
            g.push(k);
        }
        assert_eq!(g.rows, [0, 1, 0, 2, 1]);
        assert_eq!(g.groups(), 3);
    }
}
