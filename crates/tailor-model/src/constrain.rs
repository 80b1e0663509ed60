//! Constrained decoding of the answer's category prefix: while a row is still writing its
//! `category1/category2:` prefix, only tokens that continue one of the allowed prefixes (a trie
//! over token ids, built by the caller from the label pairs seen in training) may be chosen.
//! Once a full prefix is written the row decodes freely.

use std::collections::BTreeMap;

/// A trie over token-id sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixTrie {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    children: BTreeMap<u32, usize>,
    terminal: bool,
}

/// Where a row stands in the trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixState {
    /// Inside the trie at this node: the next token is restricted.
    At(usize),
    /// A full prefix was written: unconstrained.
    Done,
}

impl PrefixTrie {
    /// The trie of `sequences` (empty sequences are ignored).
    pub fn new(sequences: &[Vec<u32>]) -> Self {
        let mut nodes = vec![Node::default()];
        for seq in sequences.iter().filter(|s| !s.is_empty()) {
            let mut at = 0;
            for &token in seq {
                let next = match nodes[at].children.get(&token) {
                    Some(&n) => n,
                    None => {
                        nodes.push(Node::default());
                        let n = nodes.len() - 1;
                        nodes[at].children.insert(token, n);
                        n
                    }
                };
                at = next;
            }
            nodes[at].terminal = true;
        }
        Self { nodes }
    }

    /// Number of complete prefixes.
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.terminal).count()
    }

    /// Whether the trie holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state of a row that has not generated anything yet.
    pub fn start(&self) -> PrefixState {
        if self.is_empty() {
            PrefixState::Done
        } else {
            PrefixState::At(0)
        }
    }

    /// Sets every logit that would leave the trie to −∞ (nothing when `state` is `Done`).
    pub fn mask(&self, state: PrefixState, logits: &mut [f32]) {
        let PrefixState::At(node) = state else {
            return;
        };
        let children = &self.nodes[node].children;
        for (id, x) in logits.iter_mut().enumerate() {
            if !children.contains_key(&(id as u32)) {
                *x = f32::NEG_INFINITY;
            }
        }
    }

    /// The state after `token`. A node that ends a prefix and has no longer continuation frees
    /// the row; a token outside the trie (only possible when `mask` was not applied) also does.
    pub fn advance(&self, state: PrefixState, token: u32) -> PrefixState {
        let PrefixState::At(node) = state else {
            return PrefixState::Done;
        };
        match self.nodes[node].children.get(&token) {
            Some(&next) if self.nodes[next].children.is_empty() => PrefixState::Done,
            Some(&next) => PrefixState::At(next),
            None => PrefixState::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trie_continuations_survive_and_a_full_prefix_frees_the_row() {
        let trie = PrefixTrie::new(&[vec![5, 6, 7], vec![5, 8], vec![9]]);
        assert_eq!(trie.len(), 3);
        let mut logits = vec![0f32; 10];
        let s = trie.start();
        trie.mask(s, &mut logits);
        let open: Vec<usize> = (0..10).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(open, vec![5, 9]);
        let s = trie.advance(s, 5);
        let mut logits = vec![0f32; 10];
        trie.mask(s, &mut logits);
        let open: Vec<usize> = (0..10).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(open, vec![6, 8]);
        assert_eq!(trie.advance(s, 8), PrefixState::Done);
        let s = trie.advance(trie.advance(s, 6), 7);
        assert_eq!(s, PrefixState::Done);
        let mut logits = vec![1f32; 4];
        trie.mask(PrefixState::Done, &mut logits);
        assert!(logits.iter().all(|x| *x == 1.0));
        assert_eq!(PrefixTrie::new(&[]).start(), PrefixState::Done);
    }
}
