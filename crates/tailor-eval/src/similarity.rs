//! Text similarity exactly as LLaMA-Factory's `ComputeSimilarity` scores a generated answer.
//!
//! LLaMA-Factory (`src/llamafactory/train/sft/metric.py`, `ComputeSimilarity.__call__`, read at
//! commit 158f4cb; `scripts/eval_bleu_rouge.py` computes the same) does, per decoded sample:
//!
//! ```python
//! hypothesis = list(jieba.cut(pred))
//! reference = list(jieba.cut(label))
//! if len(" ".join(hypothesis).split()) == 0 or len(" ".join(reference).split()) == 0:
//!     result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
//! else:
//!     rouge = Rouge()                      # rouge_chinese
//!     scores = rouge.get_scores(" ".join(hypothesis), " ".join(reference))
//!     result = scores[0]
//! for k, v in result.items():
//!     self.score_dict[k].append(round(v["f"] * 100, 4))
//! bleu_score = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
//! self.score_dict["bleu-4"].append(round(bleu_score * 100, 4))
//! ```
//!
//! and reports `np.mean` of each list. So the two metrics tokenize differently:
//!
//! - **BLEU-4 works on characters** (`list(text)`: Unicode code points, spaces and punctuation
//!   included), with NLTK's default weights (0.25 each) and `method3` smoothing (NIST geometric
//!   sequence: the k-th zero n-gram precision becomes `1 / (2^k · denominator)`). See
//!   [`sentence_bleu4`].
//! - **ROUGE-L works on jieba words**: `jieba.cut` (accurate mode, HMM on), joined by spaces, then
//!   `rouge_chinese` 1.0.3 re-splits on whitespace and computes an LCS over the whole token list
//!   (its "summary level" ROUGE-L is a plain LCS over the concatenated sentences, not a union LCS).
//!   See [`rouge_l`] and [`jieba_cut`].
//!
//! For text without CJK ideographs jieba is fully determined by a few rules (and five dictionary
//! entries), which [`jieba_cut`] reproduces exactly; CJK ideographs are approximated as one token
//! each (jieba would consult its 350k-word dictionary and HMM there).

/// Python's `str.isspace` for one character (what `str.split()`, `str.rstrip()` and `\s` use):
/// Unicode `White_Space` plus the ASCII information separators U+001C–U+001F, which Python counts
/// as whitespace and Rust does not.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()` (no argument): runs of whitespace separate, no empty words.
fn py_split(s: &str) -> Vec<&str> {
    s.split(py_isspace).filter(|w| !w.is_empty()).collect()
}

// ---------------------------------------------------------------------------------------------
// BLEU-4 (NLTK 3.10.4 `sentence_bleu`, `SmoothingFunction().method3`).

/// Sentence-level BLEU-4 of `hypothesis` against the single `reference`, on characters, as
/// `nltk.translate.bleu_score.sentence_bleu([list(reference)], list(hypothesis),
/// smoothing_function=SmoothingFunction().method3)` computes it (NLTK 3.10.4): in `[0, 1]`.
///
/// Steps (all from `corpus_bleu` with one sentence):
/// - modified precision p_n for n = 1..4: clipped n-gram matches over hypothesis n-grams, with the
///   denominator `max(1, count)` kept unreduced (NLTK's `Fraction(..., _normalize=False)`);
/// - if no unigram matches (this includes an empty hypothesis) the score is exactly 0;
/// - method3 replaces the k-th zero precision (k = 1, 2, …) by `1 / (2^k · denominator)`;
/// - brevity penalty `exp(1 - r / c)` when the hypothesis is not longer than the reference;
/// - score = `bp · exp(fsum(0.25 · ln p_n))`.
pub fn sentence_bleu4(reference: &str, hypothesis: &str) -> f64 {
    let r: Vec<char> = reference.chars().collect();
    let h: Vec<char> = hypothesis.chars().collect();
    let mut precisions = [(0u64, 0u64); 4];
    for (i, p) in precisions.iter_mut().enumerate() {
        *p = modified_precision(&r, &h, i + 1);
    }
    if precisions[0].0 == 0 {
        return 0.0;
    }
    let bp = brevity_penalty(r.len() as u64, h.len() as u64);
    // method3: the k-th zero precision becomes 1 / (2^k * denominator); Python computes the
    // integer product first and then one correctly rounded division, as this does.
    let mut k = 1u32;
    let mut logs = [0.0f64; 4];
    for (log, &(num, den)) in logs.iter_mut().zip(&precisions) {
        let p = if num == 0 {
            let v = 1.0 / ((1u64 << k) * den) as f64;
            k += 1;
            v
        } else {
            num as f64 / den as f64
        };
        *log = 0.25 * p.ln();
    }
    bp * fsum(&logs).exp()
}

/// NLTK's `modified_precision` as (numerator, denominator): hypothesis n-grams clipped by their
/// count in the reference; the denominator is `max(1, number of hypothesis n-grams)`.
fn modified_precision(reference: &[char], hypothesis: &[char], n: usize) -> (u64, u64) {
    use std::collections::HashMap;
    fn count(s: &[char], n: usize) -> HashMap<&[char], u64> {
        let mut m: HashMap<&[char], u64> = HashMap::new();
        if s.len() >= n {
            for g in s.windows(n) {
                *m.entry(g).or_default() += 1;
            }
        }
        m
    }
    let hyp = count(hypothesis, n);
    let refc = count(reference, n);
    let numerator = hyp
        .iter()
        .map(|(g, &c)| c.min(refc.get(g).copied().unwrap_or(0)))
        .sum();
    let denominator = hyp.values().sum::<u64>().max(1);
    (numerator, denominator)
}

/// NLTK's `brevity_penalty(closest_ref_len, hyp_len)` (one reference, so it is the closest).
fn brevity_penalty(reference_len: u64, hypothesis_len: u64) -> f64 {
    if hypothesis_len > reference_len {
        1.0
    } else if hypothesis_len == 0 {
        0.0
    } else {
        (1.0 - reference_len as f64 / hypothesis_len as f64).exp()
    }
}

/// Python's `math.fsum`: the correctly rounded sum (Shewchuk's exact partials), so that the
/// BLEU exponent is the same double NLTK computes.
fn fsum(values: &[f64]) -> f64 {
    let mut partials: Vec<f64> = Vec::new();
    for &v in values {
        let mut x = v;
        let mut kept = 0;
        for i in 0..partials.len() {
            let mut y = partials[i];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        partials.truncate(kept);
        partials.push(x);
    }
    // Sum from the top, with the round-half-even correction CPython applies.
    let Some(mut hi) = partials.pop() else {
        return 0.0;
    };
    let mut lo = 0.0;
    while let Some(y) = partials.pop() {
        let x = hi;
        hi = x + y;
        let yr = hi - x;
        lo = y - yr;
        if lo != 0.0 {
            break;
        }
    }
    if let Some(&next) = partials.last()
        && ((lo < 0.0 && next < 0.0) || (lo > 0.0 && next > 0.0))
    {
        let y = lo * 2.0;
        let x = hi + y;
        if y == x - hi {
            hi = x;
        }
    }
    hi
}

// ---------------------------------------------------------------------------------------------
// jieba 0.42.1 `cut(text)` (accurate mode, HMM on), for text without CJK ideographs.

/// The dictionary entries of jieba 0.42.1's `dict.txt` made only of characters that can occur in
/// a non-CJK block (`[a-zA-Z0-9+#&._%-]`); each has frequency 3. Found with
/// `grep -E '^[A-Za-z0-9+#&._%-]+ ' jieba/dict.txt`.
const JIEBA_ASCII_WORDS: [&str; 5] = ["AT&T", "c#", "C#", "c++", "C++"];
/// Their frequency in `dict.txt`.
const JIEBA_ASCII_FREQ: f64 = 3.0;
/// The sum of all frequencies in jieba 0.42.1's `dict.txt` (`jieba.dt.total`).
const JIEBA_TOTAL: f64 = 60_101_967.0;

/// Whether `c` belongs to jieba's `re_han_default` class `[\u4E00-\u9FD5a-zA-Z0-9+#&._%-]`:
/// runs of these are segmented by the dictionary; everything else is emitted char by char.
fn is_han_default(c: char) -> bool {
    ('\u{4E00}'..='\u{9FD5}').contains(&c) || c.is_ascii_alphanumeric() || "+#&._%-".contains(c)
}

/// The tokens of `jieba.cut(text)` (jieba 0.42.1, default accurate mode with HMM), exact for
/// text without CJK ideographs U+4E00–U+9FD5 (those become one token each here).
///
/// jieba splits the text into runs of `[\u4E00-\u9FD5a-zA-Z0-9+#&._%-]` ("blocks") and the rest.
/// Outside blocks every character is its own token (`\r\n` stays one token). Inside a block the
/// dictionary route is computed; characters not covered by a dictionary word are gathered and
/// handed to `finalseg.cut`, which for non-CJK text splits them with
/// `([a-zA-Z0-9]+(?:\.\d+)?%?)` and keeps both the matches and the text between them. So
/// `"T-shirt."` becomes `T`, `-`, `shirt`, `.` and `"3.5%"` stays one token.
pub fn jieba_cut(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_han_default(chars[i]) {
            let start = i;
            while i < chars.len() && is_han_default(chars[i]) {
                i += 1;
            }
            cut_block(&chars[start..i], &mut out);
        } else {
            if chars[i] == '\r' && chars.get(i + 1) == Some(&'\n') {
                out.push("\r\n".to_string());
                i += 2;
                continue;
            }
            out.push(chars[i].to_string());
            i += 1;
        }
    }
    out
}

/// jieba's `__cut_DAG` over one block.
fn cut_block(block: &[char], out: &mut Vec<String>) {
    let n = block.len();
    let words: Vec<Vec<char>> = JIEBA_ASCII_WORDS
        .iter()
        .map(|w| w.chars().collect())
        .collect();
    // DAG: the end indices of dictionary words starting at k, or just k when there are none
    // (then the single character is the only step, with frequency 1).
    let dag: Vec<Vec<usize>> = (0..n)
        .map(|k| {
            let mut ends: Vec<usize> = words
                .iter()
                .filter(|w| block[k..].starts_with(w))
                .map(|w| k + w.len() - 1)
                .collect();
            ends.sort_unstable();
            if ends.is_empty() {
                ends.push(k);
            }
            ends
        })
        .collect();
    // Route: max over (log(freq or 1) - log(total) + route[x+1].0, x), ties to the larger x as
    // Python's tuple comparison does.
    let logtotal = JIEBA_TOTAL.ln();
    let mut route = vec![(0.0f64, 0usize); n + 1];
    for idx in (0..n).rev() {
        let mut best: Option<(f64, usize)> = None;
        for &x in &dag[idx] {
            let freq = if x > idx { JIEBA_ASCII_FREQ } else { 1.0 };
            let cand = (freq.ln() - logtotal + route[x + 1].0, x);
            let better = match best {
                None => true,
                Some(b) => cand.0 > b.0 || (cand.0 == b.0 && cand.1 > b.1),
            };
            if better {
                best = Some(cand);
            }
        }
        route[idx] = best.expect("every DAG entry has a step");
    }
    let mut buf: Vec<char> = Vec::new();
    let mut x = 0;
    while x < n {
        let y = route[x].1 + 1;
        if y - x == 1 {
            buf.push(block[x]);
        } else {
            flush(&mut buf, out);
            out.push(block[x..y].iter().collect());
        }
        x = y;
    }
    flush(&mut buf, out);
}

/// Emits the gathered single characters: one alone as itself, several through `finalseg.cut`
/// (never a dictionary word here: a block's dictionary words always win the route).
fn flush(buf: &mut Vec<char>, out: &mut Vec<String>) {
    match buf.len() {
        0 => {}
        1 => out.push(buf[0].to_string()),
        _ => finalseg_cut(buf, out),
    }
    buf.clear();
}

/// `jieba.finalseg.cut` for a run of block characters: CJK ideographs one per token (the
/// approximation), other text split by `([a-zA-Z0-9]+(?:\.\d+)?%?)` keeping every non-empty
/// piece, matched or not.
fn finalseg_cut(s: &[char], out: &mut Vec<String>) {
    let is_cjk = |c: char| ('\u{4E00}'..='\u{9FD5}').contains(&c);
    let mut gap = String::new();
    let mut i = 0;
    while i < s.len() {
        if is_cjk(s[i]) {
            if !gap.is_empty() {
                out.push(std::mem::take(&mut gap));
            }
            out.push(s[i].to_string());
            i += 1;
        } else if s[i].is_ascii_alphanumeric() {
            if !gap.is_empty() {
                out.push(std::mem::take(&mut gap));
            }
            let start = i;
            while i < s.len() && s[i].is_ascii_alphanumeric() {
                i += 1;
            }
            // `(?:\.\d+)?`: a dot followed by at least one digit (only ASCII digits occur in a
            // block), then an optional `%`.
            if i + 1 < s.len() && s[i] == '.' && s[i + 1].is_ascii_digit() {
                i += 1;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < s.len() && s[i] == '%' {
                i += 1;
            }
            out.push(s[start..i].iter().collect());
        } else {
            gap.push(s[i]);
            i += 1;
        }
    }
    if !gap.is_empty() {
        out.push(gap);
    }
}

// ---------------------------------------------------------------------------------------------
// ROUGE-L (rouge_chinese 1.0.3 on jieba tokens).

/// `rouge_chinese.Rouge.cut_sent`: four regex substitutions that put a line break after Chinese
/// sentence ends and `?` (English `.` does not end a sentence there), then `rstrip` and
/// `split("\n")`.
fn cut_sent(para: &str) -> Vec<String> {
    let quote = |c: char| c == '\u{201D}' || c == '\u{2019}';
    let ends = |c: char| "。！？?".contains(c);
    let mut s: Vec<char> = para.chars().collect();
    // `([。！？\?])([^”’])` -> `\1\n\2`
    s = substitute(&s, |s, i| {
        (ends(s[i]) && s.get(i + 1).is_some_and(|&c| !quote(c))).then_some(1)
    });
    // `(\.{6})([^”’])`
    s = substitute(&s, |s, i| {
        (i + 6 < s.len() && s[i..i + 6].iter().all(|&c| c == '.') && !quote(s[i + 6])).then_some(6)
    });
    // `(\…{2})([^”’])`
    s = substitute(&s, |s, i| {
        (i + 2 < s.len() && s[i] == '…' && s[i + 1] == '…' && !quote(s[i + 2])).then_some(2)
    });
    // `([。！？\?][”’])([^，。！？\?])`
    s = substitute(&s, |s, i| {
        (i + 2 < s.len() && ends(s[i]) && quote(s[i + 1]) && !"，。！？?".contains(s[i + 2]))
            .then_some(2)
    });
    let text: String = s.into_iter().collect();
    text.trim_end_matches(py_isspace)
        .split('\n')
        .map(str::to_string)
        .collect()
}

/// `re.sub(pattern, r"\1\n\2", text)` for a pattern `(group1)(one char)`: scanning left to
/// right, where `matches(s, i)` gives the length of group 1 starting at `i`, a line break goes
/// between the groups and scanning resumes after the second group (matches never overlap).
fn substitute(s: &[char], matches: impl Fn(&[char], usize) -> Option<usize>) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + 4);
    let mut i = 0;
    while i < s.len() {
        match matches(s, i) {
            Some(len) => {
                out.extend_from_slice(&s[i..i + len]);
                out.push('\n');
                out.push(s[i + len]);
                i += len + 1;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

/// The word list `rouge_chinese` scores for one text, or `None` when LLaMA-Factory would skip
/// ROUGE for it (no non-whitespace token): jieba tokens joined by spaces, cut into sentences, each
/// non-empty sentence whitespace-normalised and split on `" "` (a whitespace-only sentence
/// contributes one empty word, as `"".split(" ")` does).
pub fn rouge_words(text: &str) -> Option<Vec<String>> {
    let joined = jieba_cut(text).join(" ");
    if py_split(&joined).is_empty() {
        return None;
    }
    let mut words = Vec::new();
    for sentence in cut_sent(&joined) {
        if sentence.is_empty() {
            continue;
        }
        let ws = py_split(&sentence);
        if ws.is_empty() {
            words.push(String::new());
        } else {
            words.extend(ws.into_iter().map(str::to_string));
        }
    }
    Some(words)
}

/// ROUGE-L F of `hypothesis` against `reference` as LLaMA-Factory computes it with
/// `rouge_chinese` 1.0.3 on jieba tokens, in `[0, 1]`: `p = lcs / n_hyp`, `r = lcs / n_ref`,
/// `f = 2 · (p · r) / (p + r + 1e-8)`; 0 when either text has no token.
pub fn rouge_l(reference: &str, hypothesis: &str) -> f64 {
    let (Some(r), Some(h)) = (rouge_words(reference), rouge_words(hypothesis)) else {
        return 0.0;
    };
    let lcs = lcs_len(&r, &h) as f64;
    let r_lcs = lcs / r.len() as f64;
    let p_lcs = lcs / h.len() as f64;
    2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))
}

/// Length of the longest common subsequence (one rolling DP row).
fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// Python's `round(x, 4)`: half-to-even on the exact binary value, which is what Rust's `{:.4}`
/// formatting does too; LLaMA-Factory rounds each sample's score (×100) this way before averaging.
pub fn py_round4(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.4}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jieba_splits_english_into_words_spaces_and_punctuation() {
        assert_eq!(
            jieba_cut("This female wears a T-shirt."),
            [
                "This", " ", "female", " ", "wears", " ", "a", " ", "T", "-", "shirt", "."
            ]
        );
        assert_eq!(
            jieba_cut("3.5% off, C++!"),
            ["3.5%", " ", "off", ",", " ", "C++", "!"]
        );
        assert_eq!(jieba_cut("a\r\nb"), ["a", "\r\n", "b"]);
        assert_eq!(jieba_cut("x--y.."), ["x", "--", "y", ".."]);
        assert_eq!(jieba_cut(""), Vec::<String>::new());
        // Dictionary words win the route wherever they start (values from jieba 0.42.1).
        assert_eq!(
            jieba_cut("abc++ AT&Tx C#c#"),
            ["ab", "c++", " ", "AT&T", "x", " ", "C#", "c#"]
        );
    }

    #[test]
    fn bleu_edge_cases() {
        assert_eq!(sentence_bleu4("abc", ""), 0.0);
        assert_eq!(sentence_bleu4("abc", "xyz"), 0.0);
        assert!((sentence_bleu4("hello world", "hello world") - 1.0).abs() < 1e-15);
    }

    #[test]
    fn rouge_edge_cases() {
        assert_eq!(rouge_l("", "abc"), 0.0);
        assert_eq!(rouge_l("   ", "abc"), 0.0);
        let same = rouge_l("The dress is red.", "The dress is red.");
        assert!((same - (1.0 / (1.0 + 0.5e-8))).abs() < 1e-15, "{same}");
    }

    #[test]
    fn fsum_is_exact() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100, 1e-100]), 1.0);
        assert_eq!(fsum(&[0.1, 0.2, 0.3]), 0.6);
        assert_eq!(fsum(&[]), 0.0);
    }

    #[test]
    fn rounding_is_half_even_like_python() {
        assert_eq!(py_round4(0.03125), 0.0312);
        assert_eq!(py_round4(99.99995), 99.9999);
        assert_eq!(py_round4(50.0), 50.0);
    }
}
