//! Hub settings and how they are read from the environment, with huggingface_hub's variable names.

use std::fmt;
use std::path::{Path, PathBuf};

/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to talk to the hub, and where its cache lives.
///
/// Build it with [`HubConfig::from_env`] in binaries; tests and embedders can fill the fields
/// directly. `Debug` never shows the token, so a config can be logged as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL of the hub, e.g. `https://huggingface.co` (a trailing `/` is ignored).
    pub endpoint: String,
    /// The hub cache folder (`$HF_HUB_CACHE`), holding one `models--{org}--{name}` folder per repo.
    pub cache_dir: PathBuf,
    /// Access token sent as `Authorization: Bearer …` to the hub (never to a CDN on another host).
    pub token: Option<String>,
    /// When set, nothing goes to the network: repos resolve from the cache or fail.
    pub offline: bool,
}

impl HubConfig {
    /// Reads the configuration from the process environment, as huggingface_hub does.
    ///
    /// See [`HubConfig::from_lookup`] for the variables and their precedence.
    pub fn from_env() -> HubConfig {
        HubConfig::from_lookup(&|key| std::env::var(key).ok())
    }

    /// Resolves the configuration from `lookup` (a stand-in for `std::env::var`), so the rules can
    /// be tested without touching the process environment.
    ///
    /// - endpoint: `HF_ENDPOINT`, else `https://huggingface.co`;
    /// - home: `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - cache: `HF_HUB_CACHE`, else the legacy `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`;
    /// - token: `HF_TOKEN`, else the legacy `HUGGING_FACE_HUB_TOKEN`, else the file at
    ///   `HF_TOKEN_PATH` (default `$HF_HOME/token`), with whitespace and newlines removed;
    /// - offline: `HF_HUB_OFFLINE`, else `TRANSFORMERS_OFFLINE`, true for `1`/`true`/`yes`/`on`
    ///   in any case.
    ///
    /// A leading `~` in paths is expanded with `HOME`. Empty values count as unset, because an
    /// empty cache path or endpoint is never what a user meant (Python would take them literally).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> HubConfig {
        let get = |key: &str| lookup(key).filter(|v| !v.is_empty());
        let home = get("HOME");
        let expand = |raw: String| expand_user(&raw, home.as_deref());

        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());

        let hf_home = match get("HF_HOME") {
            Some(dir) => expand(dir),
            None => {
                let cache_root = match get("XDG_CACHE_HOME") {
                    Some(dir) => expand(dir),
                    None => expand("~/.cache".to_owned()),
                };
                cache_root.join("huggingface")
            }
        };
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));

        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .and_then(|t| clean_token(&t))
            .or_else(|| {
                let path = get("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                read_token_file(&path)
            });

        // Python evaluates `HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE`: a set, non-empty first
        // variable wins even when it says "0".
        let offline = get("HF_HUB_OFFLINE")
            .or_else(|| get("TRANSFORMERS_OFFLINE"))
            .is_some_and(|v| is_true(&v));

        HubConfig {
            endpoint,
            cache_dir,
            token,
            offline,
        }
    }

    /// The endpoint without a trailing `/`, ready to have paths appended.
    pub(crate) fn base_url(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: show only whether one is set.
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

/// huggingface_hub's `_is_true`: `1`, `ON`, `YES`, `TRUE` in any case.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// huggingface_hub's `_clean_token`: drop CR/LF anywhere and surrounding spaces; empty is none.
fn clean_token(raw: &str) -> Option<String> {
    let cleaned: String = raw.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let cleaned = cleaned.trim();
    (!cleaned.is_empty()).then(|| cleaned.to_owned())
}

fn read_token_file(path: &Path) -> Option<String> {
    // A missing or unreadable token file just means "not logged in", as in huggingface_hub.
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| clean_token(&t))
}

fn expand_user(raw: &str, home: Option<&str>) -> PathBuf {
    match (raw.strip_prefix('~'), home) {
        (Some(""), Some(home)) => PathBuf::from(home),
        (Some(rest), Some(home)) if rest.starts_with('/') => PathBuf::from(format!("{home}{rest}")),
        _ => PathBuf::from(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_lookup(&|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_home() {
        let cfg = check(&[("HOME", "/home/u")]);
        assert_eq!(cfg.endpoint, "https://huggingface.co");
        assert_eq!(
            cfg.cache_dir,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert!(!cfg.offline);
    }

    #[test]
    fn xdg_then_hf_home_then_hub_cache() {
        let cfg = check(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(cfg.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        let cfg = check(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HF_HOME", "~/hf"),
        ]);
        assert_eq!(cfg.cache_dir, PathBuf::from("/h/hf/hub"));
        let cfg = check(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]);
        assert_eq!(cfg.cache_dir, PathBuf::from("/legacy"));
        let cfg = check(&[
            ("HF_HUB_CACHE", "/new"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ]);
        assert_eq!(cfg.cache_dir, PathBuf::from("/new"));
    }

    #[test]
    fn endpoint_loses_trailing_slash() {
        let cfg = check(&[("HF_ENDPOINT", "https://mirror.example/")]);
        assert_eq!(cfg.endpoint, "https://mirror.example");
    }

    #[test]
    fn offline_values() {
        for (value, expected) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("On", true),
            ("0", false),
            ("no", false),
        ] {
            assert_eq!(
                check(&[("HF_HUB_OFFLINE", value)]).offline,
                expected,
                "{value}"
            );
        }
        assert!(check(&[("TRANSFORMERS_OFFLINE", "1")]).offline);
        // The first variable wins when set, as with Python's `or`.
        assert!(!check(&[("HF_HUB_OFFLINE", "0"), ("TRANSFORMERS_OFFLINE", "1")]).offline);
    }

    #[test]
    fn token_from_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let cfg = check(&[("HF_HOME", home), ("HF_TOKEN", " hf_env \r\n")]);
        assert_eq!(cfg.token.as_deref(), Some("hf_env"));
        let cfg = check(&[("HF_HOME", home)]);
        assert_eq!(cfg.token.as_deref(), Some("hf_file"));
        let cfg = check(&[("HF_HOME", home), ("HF_TOKEN", "\n")]);
        assert_eq!(
            cfg.token.as_deref(),
            Some("hf_file"),
            "a blank HF_TOKEN falls through"
        );
        std::fs::write(dir.path().join("other"), "hf_other").unwrap();
        let other = dir.path().join("other");
        let cfg = check(&[
            ("HF_HOME", home),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ]);
        assert_eq!(cfg.token.as_deref(), Some("hf_other"));
        let cfg = check(&[("HF_HOME", "/nonexistent/hf")]);
        assert_eq!(cfg.token, None);
    }

    #[test]
    fn debug_redacts_token() {
        let cfg = HubConfig {
            endpoint: DEFAULT_ENDPOINT.into(),
            cache_dir: "/c".into(),
            token: Some("hf_secret".into()),
            offline: false,
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hf_secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
