//! Allow-pattern matching with the semantics of huggingface_hub's `filter_repo_objects`.
//!
//! That function uses Python's `fnmatch.fnmatchcase`: case-sensitive, and `*` crosses `/`
//! (`"*.json"` matches `sub/a.json`), unlike shell globbing. A pattern ending in `/` matches
//! everything below that folder. We implement it here instead of pulling in a glob crate whose
//! defaults differ on exactly these points.

/// Whether `path` is selected by `allow`; an empty list selects everything (huggingface_hub's
/// `allow_patterns=None`).
pub(crate) fn allowed(path: &str, allow: &[&str]) -> bool {
    let path = path.replace('\\', "/");
    allow.is_empty()
        || allow.iter().any(|pattern| {
            let mut pattern = pattern.replace('\\', "/");
            if pattern.ends_with('/') {
                pattern.push('*');
            }
            fnmatch(&pattern, &path)
        })
}

enum Token {
    Star,
    AnyChar,
    Literal(char),
    /// A `[...]` class: inclusive ranges, negated for `[!...]`.
    Class(Vec<(char, char)>, bool),
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star | Token::AnyChar => true,
            Token::Literal(l) => *l == c,
            Token::Class(ranges, negated) => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                // Consecutive stars mean the same as one and would only slow backtracking.
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                tokens.push(Token::AnyChar);
                i += 1;
            }
            '[' => match parse_class(&chars, i + 1) {
                Some((class, next)) => {
                    tokens.push(class);
                    i = next;
                }
                // As in Python, an unclosed `[` is an ordinary character.
                None => {
                    tokens.push(Token::Literal('['));
                    i += 1;
                }
            },
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    tokens
}

/// Parses a class body starting after `[`; returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        // A `]` right after `[` or `[!` is a member, not the end (Python's rule).
        if c == ']' && !first {
            return Some((Token::Class(ranges, negated), i + 1));
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|n| *n != ']') {
            let hi = chars[i + 2];
            // Python drops reversed ranges such as `[z-a]`: they match nothing.
            if c <= hi {
                ranges.push((c, hi));
            }
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

fn fnmatch(pattern: &str, text: &str) -> bool {
    let tokens = tokenize(pattern);
    let text: Vec<char> = text.chars().collect();
    // Greedy matching that backtracks to the most recent `*`: enough because every other token
    // consumes exactly one character.
    let (mut t, mut s) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                backtrack = Some((t, s));
                t += 1;
            }
            Some(token) if token.matches(text[s]) => {
                t += 1;
                s += 1;
            }
            _ => match backtrack {
                Some((star_t, star_s)) => {
                    backtrack = Some((star_t, star_s + 1));
                    t = star_t + 1;
                    s = star_s + 1;
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| matches!(token, Token::Star))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, path: &str, expected: bool) {
        assert_eq!(
            allowed(path, &[pattern]),
            expected,
            "{pattern:?} vs {path:?}"
        );
    }

    #[test]
    fn fnmatch_cases() {
        check("*.json", "config.json", true);
        check("*.json", "sub/dir/config.json", true);
        check("*.json", "config.json.bak", false);
        check("*.safetensors", "model-00001-of-00002.safetensors", true);
        check(
            "model-?????-of-*.safetensors",
            "model-00001-of-00002.safetensors",
            true,
        );
        check("config.json", "Config.json", false);
        check("tokenizer*", "tokenizer_config.json", true);
        check("onnx/", "onnx/model.onnx", true);
        check("onnx/", "model.onnx", false);
        check("[ab]*.txt", "a.txt", true);
        check("[!ab]*.txt", "a.txt", false);
        check("[!ab]*.txt", "c.txt", true);
        check("[0-9].bin", "7.bin", true);
        check("[0-9].bin", "x.bin", false);
        check("[]].x", "].x", true);
        check("[.x", "[.x", true);
        check("*", "", true);
        check("a*b*c", "axxbyyc", true);
        check("a*b*c", "axxbyy", false);
    }

    #[test]
    fn empty_allow_list_selects_all() {
        assert!(allowed("anything/at/all.bin", &[]));
        assert!(allowed("x.json", &["*.bin", "*.json"]));
    }
}
