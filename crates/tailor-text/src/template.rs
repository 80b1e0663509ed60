//! Chat messages and the Jinja chat template, rendered the way transformers renders it.
//!
//! transformers compiles chat templates in a Jinja2 sandbox with `trim_blocks`, `lstrip_blocks`
//! and the `loopcontrols` extension, overrides `tojson` with a plain `json.dumps`, and adds the
//! globals `raise_exception`, `strftime_now`, `dict` and `namespace`. minijinja gives the same
//! syntax; this module adds what differs: the `tojson` filter, `raise_exception`, Python method
//! calls on strings and dicts (`minijinja-contrib`'s pycompat) and Python's way of printing `None`,
//! booleans and containers. `strftime_now` is not provided (no Qwen template uses it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Result, TextError};
use crate::tokenizer::{read_json, read_text};

/// The name the template is registered under; it has no file extension so that minijinja never
/// turns on HTML auto-escaping (transformers' environment has none either).
const TEMPLATE_NAME: &str = "chat_template";

/// One chat message, as Hugging Face passes it to the template (`{"role": …, "content": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or any other role string (the template prints it verbatim).
    pub role: String,
    /// A plain string or a list of parts.
    pub content: Content,
}

/// The content of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// A plain string (`"content": "Hello"`).
    Text(String),
    /// A list of typed parts (`"content": [{"type": "image"}, {"type": "text", "text": …}]`).
    Parts(Vec<Part>),
}

/// One part of a list-valued message content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPart", into = "RawPart")]
pub enum Part {
    /// An image placeholder, passed to the template as `{"type": "image"}`.
    Image,
    /// Text, passed as `{"type": "text", "text": …}`.
    Text(String),
}

impl Message {
    /// A message with plain string content.
    pub fn text(role: &str, text: &str) -> Self {
        Self {
            role: role.to_owned(),
            content: Content::Text(text.to_owned()),
        }
    }

    /// A message with a list of parts.
    pub fn parts(role: &str, parts: Vec<Part>) -> Self {
        Self {
            role: role.to_owned(),
            content: Content::Parts(parts),
        }
    }

    /// Number of image parts in this message.
    pub fn image_count(&self) -> usize {
        match &self.content {
            Content::Text(_) => 0,
            Content::Parts(parts) => parts.iter().filter(|p| matches!(p, Part::Image)).count(),
        }
    }
}

/// Where a [`ChatTemplate`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSource {
    /// The `chat_template` key of `processor_config.json`.
    ProcessorConfig,
    /// `chat_template.json` (the processor template of Qwen2.5-VL checkpoints).
    ChatTemplateJson,
    /// `chat_template.jinja`.
    ChatTemplateJinja,
    /// The `chat_template` key of `tokenizer_config.json`. For Qwen2.5-VL this is the text-only
    /// template, which renders images differently; transformers' processor never falls back to
    /// it, tailor does only when nothing else exists.
    TokenizerConfig,
    /// Given as a string.
    Inline,
}

/// A compiled chat template plus the special-token variables transformers passes to it.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: TemplateSource,
    special_tokens: BTreeMap<String, String>,
}

impl ChatTemplate {
    /// Loads the processor chat template of a model directory, in the order transformers 5.24's
    /// `ProcessorMixin.from_pretrained` uses: `processor_config.json`'s `chat_template` key wins,
    /// then the legacy `chat_template.json` (which transformers prefers over
    /// `chat_template.jinja` when both exist), then `chat_template.jinja`. Only when none exists
    /// does tailor fall back to `tokenizer_config.json`'s template (what a bare tokenizer would use).
    ///
    /// The special-token variables (`eos_token`, `pad_token`, `bos_token`, `unk_token`) are read
    /// from `tokenizer_config.json` when it exists, as transformers passes
    /// `tokenizer.special_tokens_map` to every render.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer_config = read_json_if_exists(&dir.join("tokenizer_config.json"))?;
        let (text, source) = find_template(dir, tokenizer_config.as_ref())?;
        let mut template = Self::with_source(text, source)?;
        if let Some(config) = &tokenizer_config {
            for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                if let Some(token) = token_value(config, key) {
                    template.special_tokens.insert(key.to_owned(), token);
                }
            }
        }
        Ok(template)
    }

    /// Compiles a template given as text, with no special-token variables.
    pub fn new(text: &str) -> Result<Self> {
        Self::with_source(text.to_owned(), TemplateSource::Inline)
    }

    fn with_source(text: String, source: TemplateSource) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            // Jinja2 prints values with Python's `str()`: `None`, `True`, `['a']`.
            out.write_str(&python_str(value))
                .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "write failed"))
        });
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, text)?;
        Ok(Self {
            env,
            source,
            special_tokens: BTreeMap::new(),
        })
    }

    /// Where the template came from.
    pub fn source(&self) -> TemplateSource {
        self.source
    }

    /// Renders a conversation. With `add_generation_prompt` the template appends the header of
    /// an assistant turn (`<|im_start|>assistant\n` for Qwen).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME)?;
        let mut ctx: Vec<(Value, Value)> = vec![
            (
                "messages".into(),
                Value::from_iter(messages.iter().map(message_value)),
            ),
            ("tools".into(), Value::from(())),
            ("documents".into(), Value::from(())),
            ("add_generation_prompt".into(), add_generation_prompt.into()),
        ];
        for (key, token) in &self.special_tokens {
            ctx.push((key.as_str().into(), token.as_str().into()));
        }
        Ok(template.render(Value::from_object(PyDict(ctx)))?)
    }
}

/// Returns the template text and its source, or `NoChatTemplate`.
fn find_template(dir: &Path, tokenizer_config: Option<&Json>) -> Result<(String, TemplateSource)> {
    if let Some(processor) = read_json_if_exists(&dir.join("processor_config.json"))?
        && let Some(text) = template_value(&processor)
    {
        return Ok((text, TemplateSource::ProcessorConfig));
    }
    let json_path = dir.join("chat_template.json");
    if let Some(legacy) = read_json_if_exists(&json_path)? {
        let text = template_value(&legacy).ok_or_else(|| TextError::MissingKey {
            path: json_path.clone(),
            key: "chat_template".to_owned(),
        })?;
        return Ok((text, TemplateSource::ChatTemplateJson));
    }
    let jinja_path = dir.join("chat_template.jinja");
    if jinja_path.is_file() {
        return Ok((read_text(&jinja_path)?, TemplateSource::ChatTemplateJinja));
    }
    if let Some(text) = tokenizer_config.and_then(template_value) {
        return Ok((text, TemplateSource::TokenizerConfig));
    }
    Err(TextError::NoChatTemplate {
        dir: PathBuf::from(dir),
    })
}

fn read_json_if_exists(path: &Path) -> Result<Option<Json>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A `chat_template` value is a string, a `{name: template}` map, or (in tokenizer configs) a list
/// of `{"name", "template"}` objects; the `default` entry is the one rendered.
fn template_value(config: &Json) -> Option<String> {
    match config.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Object(map) => map.get("default")?.as_str().map(str::to_owned),
        Json::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_owned)),
        _ => None,
    }
}

fn token_value(config: &Json, key: &str) -> Option<String> {
    match config.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The dict a message becomes in the template.
fn message_value(message: &Message) -> Value {
    let content = match &message.content {
        Content::Text(text) => Value::from(text.as_str()),
        Content::Parts(parts) => Value::from_iter(parts.iter().map(|part| match part {
            Part::Image => Value::from_object(PyDict(vec![("type".into(), "image".into())])),
            Part::Text(text) => Value::from_object(PyDict(vec![
                ("type".into(), "text".into()),
                ("text".into(), text.as_str().into()),
            ])),
        })),
    };
    Value::from_object(PyDict(vec![
        ("role".into(), message.role.as_str().into()),
        ("content".into(), content),
    ]))
}

/// An insertion-ordered map, like a Python dict: templates that iterate over a message's keys or
/// serialise it with `tojson` see the keys in the order transformers would.
#[derive(Debug)]
struct PyDict(Vec<(Value, Value)>);

impl Object for PyDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.iter().map(|(k, _)| k.clone()).collect())
    }
}

/// The `raise_exception(message)` global of transformers' template environment.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, without Jinja's HTML escaping.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => Some(v.as_str().unwrap_or_default().to_owned()),
        },
    };
    // Python's defaults: ", " / ": " without indent, "," / ": " with it.
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair",
            ));
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let opts = JsonOptions {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(out)
}

struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn write_json(
    out: &mut String,
    value: &Value,
    opts: &JsonOptions,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&python_number(value)),
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), opts),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), opts, depth, |out, i| {
                write_json(out, &items[i], opts, depth + 1)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if opts.sort_keys {
                keys.sort();
            }
            write_container(out, '{', '}', keys.len(), opts, depth, |out, i| {
                let key = &keys[i];
                // json.dumps turns non-string keys into strings (`1` → `"1"`).
                match key.as_str() {
                    Some(s) => write_json_string(out, s, opts),
                    None => write_json_string(out, &python_str(key), opts),
                }
                out.push_str(&opts.key_sep);
                write_json(out, &value.get_item(key)?, opts, depth + 1)
            })?;
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a value of kind {}", value.kind()),
            ));
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    len: usize,
    opts: &JsonOptions,
    depth: usize,
    mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&opts.item_sep);
        }
        if let Some(indent) = &opts.indent {
            out.push('\n');
            out.push_str(&indent.repeat(depth + 1));
        }
        item(out, i)?;
    }
    if let Some(indent) = &opts.indent {
        out.push('\n');
        out.push_str(&indent.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A JSON string literal as Python's `json.dumps` writes it.
fn write_json_string(out: &mut String, s: &str, opts: &JsonOptions) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `str()` of a template value, as Jinja2 prints it.
fn python_str(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        _ => python_repr(value),
    }
}

/// Python's `repr()` of a template value (strings quoted, containers recursive).
fn python_repr(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".to_owned(),
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_owned(),
        ValueKind::Number => python_number(value),
        ValueKind::String => python_string_repr(value.as_str().unwrap_or_default()),
        ValueKind::Seq => {
            let items: Vec<String> = value
                .try_iter()
                .map(|it| it.map(|v| python_repr(&v)).collect())
                .unwrap_or_default();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Map => {
            let items: Vec<String> = value
                .try_iter()
                .map(|it| {
                    it.map(|k| {
                        let v = value.get_item(&k).unwrap_or_default();
                        format!("{}: {}", python_repr(&k), python_repr(&v))
                    })
                    .collect()
                })
                .unwrap_or_default();
            format!("{{{}}}", items.join(", "))
        }
        _ => value.to_string(),
    }
}

/// Python's string repr: single quotes unless the text holds a single quote and no double one.
fn python_string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A number as Python prints it: integers plainly, floats with `repr(float)`.
fn python_number(value: &Value) -> String {
    if value.is_integer() {
        return value.to_string();
    }
    match f64::try_from(value.clone()) {
        Ok(f) => python_float_repr(f),
        Err(_) => value.to_string(),
    }
}

/// `repr(float)`: the shortest round-tripping digits, in fixed notation for exponents -4..16 and
/// scientific notation (`1e-05`, `1.5e+16`) otherwise; `nan`/`inf` as `json.dumps` writes them.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the same shortest digits as Python's repr, e.g. `1.5e-5`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{f}");
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// The serde shape of a part: `{"type": "image"}` or `{"type": "text", "text": …}`.
#[derive(Serialize, Deserialize)]
struct RawPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

impl TryFrom<RawPart> for Part {
    type Error = String;

    fn try_from(raw: RawPart) -> std::result::Result<Self, Self::Error> {
        match (raw.kind.as_str(), raw.text) {
            ("image", _) => Ok(Part::Image),
            ("text", Some(text)) => Ok(Part::Text(text)),
            ("text", None) => Err("a text part needs a `text` field".to_owned()),
            (other, _) => Err(format!("unsupported part type {other:?}")),
        }
    }
}

impl From<Part> for RawPart {
    fn from(part: Part) -> Self {
        match part {
            Part::Image => RawPart {
                kind: "image".to_owned(),
                text: None,
            },
            Part::Text(text) => RawPart {
                kind: "text".to_owned(),
                text: Some(text),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_str(template: &str, ctx: Value) -> String {
        let t = ChatTemplate::new(template).unwrap();
        t.env
            .get_template(TEMPLATE_NAME)
            .unwrap()
            .render(ctx)
            .unwrap()
    }

    #[test]
    fn python_floats() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e-5, "1e-05"),
            (1.5e16, "1.5e+16"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (-2.0, "-2.0"),
            (1e22, "1e+22"),
        ] {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let ctx = Value::from_object(PyDict(vec![(
            "x".into(),
            Value::from_object(PyDict(vec![
                ("b".into(), Value::from(1)),
                ("a".into(), Value::from_iter(["é<&>\"\n", "y"])),
                ("c".into(), Value::from(())),
                ("d".into(), Value::from(true)),
                ("e".into(), Value::from(2.5)),
            ])),
        )]));
        // Expected strings from Python: json.dumps(x), json.dumps(x, indent=2, sort_keys=True).
        assert_eq!(
            render_str("{{ x|tojson }}", ctx.clone()),
            r#"{"b": 1, "a": ["é<&>\"\n", "y"], "c": null, "d": true, "e": 2.5}"#
        );
        assert_eq!(
            render_str("{{ x|tojson(indent=2, sort_keys=true) }}", ctx.clone()),
            "{\n  \"a\": [\n    \"é<&>\\\"\\n\",\n    \"y\"\n  ],\n  \"b\": 1,\n  \"c\": null,\n  \"d\": true,\n  \"e\": 2.5\n}"
        );
        assert_eq!(
            render_str("{{ x.a|tojson(ensure_ascii=true) }}", ctx),
            r#"["\u00e9<&>\"\n", "y"]"#
        );
    }

    #[test]
    fn prints_like_python() {
        let ctx = Value::from_object(PyDict(vec![
            ("n".into(), Value::from(())),
            ("t".into(), Value::from(true)),
            ("l".into(), Value::from_iter(["a", "it's"])),
        ]));
        assert_eq!(
            render_str("{{ n }} {{ t }} {{ l }} {{ missing }}.", ctx),
            "None True ['a', \"it's\"] ."
        );
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m.content.strip().upper() }}{% if m.role.startswith('sys') %}!{% endif %}{% endfor %}",
        )
        .unwrap();
        let out = t
            .render(
                &[Message::text("system", "  a "), Message::text("user", " b")],
                false,
            )
            .unwrap();
        assert_eq!(out, "A!B");

        let t = ChatTemplate::new("{{ raise_exception('bad role') }}").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("bad role"), "{err}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        // transformers' Jinja2 environment renders this as "  a\nb": the newline after each block
        // tag and the indentation before `endif` go, and so does the final newline.
        let t = ChatTemplate::new("{% if true %}\n  a\n    {% endif %}\nb\n").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "  a\nb");
    }

    #[test]
    fn parts_serialise_to_hugging_face_dicts() {
        let m = Message::parts(
            "user",
            vec![Part::Image, Part::Text("What is this?".to_owned())],
        );
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"role":"user","content":[{"type":"image"},{"type":"text","text":"What is this?"}]}"#
        );
        assert_eq!(serde_json::from_str::<Message>(&json).unwrap(), m);
        let plain: Message = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(plain, Message::text("user", "hi"));
    }
}
