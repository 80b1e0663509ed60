//! Chat samples: the recipe's system message, user turn (image + prompt) and assistant answer,
//! each a template over the catalog's column names.

use crate::catalog::Row;
use crate::error::{DataError, Result};

/// The recipe's system message.
pub const RECIPE_SYSTEM: &str = "You are a fashion product expert assistant who excels at identifying product types from images and generating concise descriptions.";
/// The recipe's user prompt (after the image).
pub const RECIPE_PROMPT: &str = "What is this product?";
/// The recipe's assistant answer.
pub const RECIPE_TARGET: &str = "{category1}/{category2}: {text}";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Col(String),
}

/// A text with `{column}` placeholders (`{{` and `}}` are literal braces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a template; an unclosed `{` or an empty `{}` is an error.
    pub fn parse(source: &str) -> Result<Template> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => {
                                return Err(DataError::Invalid(format!(
                                    "template {source:?}: unclosed `{{`"
                                )));
                            }
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(DataError::Invalid(format!(
                            "template {source:?}: empty `{{}}` (write `{{{{}}}}` for literal braces)"
                        )));
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Col(name));
                }
                '}' => {
                    return Err(DataError::Invalid(format!(
                        "template {source:?}: unmatched `}}` (write `}}}}` for a literal brace)"
                    )));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(Template {
            source: source.to_string(),
            pieces,
        })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Col(c) => Some(c.as_str()),
            Piece::Lit(_) => None,
        })
    }

    /// The template text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fills the template from a row; a missing or null column is an error naming the row.
    pub fn render(&self, row: &Row) -> Result<String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Col(c) => out.push_str(row.require(c)?),
            }
        }
        Ok(out)
    }
}

/// How rows become chat samples: the three templates of the recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatFormat {
    /// System message; `None` sends no system turn (the template may then add its default).
    pub system: Option<Template>,
    /// The user's text after the image.
    pub prompt: Template,
    /// The assistant's answer (the training target).
    pub target: Template,
}

impl ChatFormat {
    /// The recipe's exact texts.
    pub fn recipe() -> ChatFormat {
        ChatFormat::new(Some(RECIPE_SYSTEM), RECIPE_PROMPT, RECIPE_TARGET)
            .expect("the recipe templates are valid")
    }

    /// Parses the three templates.
    pub fn new(system: Option<&str>, prompt: &str, target: &str) -> Result<ChatFormat> {
        Ok(ChatFormat {
            system: system.map(Template::parse).transpose()?,
            prompt: Template::parse(prompt)?,
            target: Template::parse(target)?,
        })
    }

    /// Every column the templates read.
    pub fn columns(&self) -> Vec<&str> {
        let mut cols: Vec<&str> = self
            .system
            .iter()
            .flat_map(Template::columns)
            .chain(self.prompt.columns())
            .chain(self.target.columns())
            .collect();
        cols.sort_unstable();
        cols.dedup();
        cols
    }

    /// The texts of one row's prompt (system and user turn); the answer is left empty, so rows
    /// without target columns (new products to predict) work.
    pub fn sample_prompt(&self, row: &Row) -> Result<ChatTexts> {
        Ok(ChatTexts {
            system: self.system.as_ref().map(|t| t.render(row)).transpose()?,
            prompt: self.prompt.render(row)?,
            answer: String::new(),
        })
    }

    /// The texts of one row's chat.
    pub fn sample(&self, row: &Row) -> Result<ChatTexts> {
        Ok(ChatTexts {
            system: self.system.as_ref().map(|t| t.render(row)).transpose()?,
            prompt: self.prompt.render(row)?,
            answer: self.target.render(row)?,
        })
    }
}

/// The filled-in texts of one chat: `[system], user: [image, prompt], assistant: answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTexts {
    /// System message, if any.
    pub system: Option<String>,
    /// User text after the image.
    pub prompt: String,
    /// Assistant answer.
    pub answer: String,
}

/// An answer of the form `category1/category2: description`, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAnswer {
    /// First category level.
    pub category1: String,
    /// Second category level.
    pub category2: String,
    /// The description after `": "`.
    pub description: String,
}

impl ParsedAnswer {
    /// Parses `c1/c2: description`; `None` when the text has another form (no colon, no single
    /// slash before it, an empty part, or a line break inside the label).
    pub fn parse(text: &str) -> Option<ParsedAnswer> {
        let (label, description) = text.trim_start().split_once(':')?;
        let (c1, c2) = label.split_once('/')?;
        let clean = |s: &str| {
            let t = s.trim();
            (!t.is_empty() && !s.contains(['/', '\n'])).then(|| t.to_string())
        };
        Some(ParsedAnswer {
            category1: clean(c1)?,
            category2: clean(c2)?,
            description: description.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape() {
        let t = Template::parse("{category1}/{ category2 }: {text} {{literal}}").unwrap();
        assert_eq!(
            t.columns().collect::<Vec<_>>(),
            ["category1", "category2", "text"]
        );
        assert!(Template::parse("{open").is_err());
        assert!(Template::parse("{}").is_err());
        assert!(Template::parse("a } b").is_err());
        assert_eq!(Template::parse("").unwrap().columns().count(), 0);
    }

    #[test]
    fn answers_parse_into_categories_and_description() {
        let a = ParsedAnswer::parse("WOMEN/dresses: This female wears a dress.").unwrap();
        assert_eq!(
            (
                a.category1.as_str(),
                a.category2.as_str(),
                a.description.as_str()
            ),
            ("WOMEN", "dresses", "This female wears a dress.")
        );
        assert_eq!(ParsedAnswer::parse("MEN/tees:").unwrap().description, "");
        for bad in [
            "no label here",
            "WOMEN: dress",
            "/tees: x",
            "A/B/C: x",
            "WOMEN\n/tees: x",
            "",
        ] {
            assert_eq!(ParsedAnswer::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn recipe_columns() {
        assert_eq!(
            ChatFormat::recipe().columns(),
            ["category1", "category2", "text"]
        );
    }
}
