//! Reading hand-edited TOML (settings and model files) with errors that say where.
//!
//! The `toml` crate reports a byte span; people want a file, a line and a key. This module
//! turns one into the other so that every message about a TOML file reads
//! `FILE:LINE: key `section.key`: what is wrong`.

use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;

/// Something wrong at a place in a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted key path (`sqlite.busy_timeout_ms`) when the place is a `key = value` line.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for TomlError {}

/// A settings or model file that is wrong is the user's to fix: exit 2.
impl crate::exit::HasExitStatus for TomlError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Usage
    }
}

/// Parses `text` (read from `file`, named in errors) into `T`.
pub fn parse<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|err| {
        let message = err.message().trim().to_string();
        match err.span() {
            Some(span) => at(text, file, span, message),
            None => TomlError {
                file: file.to_string(),
                line: None,
                key: None,
                message,
            },
        }
    })
}

/// An error about the text at `span` of a file.
pub fn at(text: &str, file: &str, span: Range<usize>, message: impl Into<String>) -> TomlError {
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    TomlError {
        file: file.to_string(),
        line: Some(line),
        key: key_path_at(text, line),
        message: message.into(),
    }
}

/// The dotted path of the `key = value` on `line`, prefixed by the `[table]` header above it.
fn key_path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?.trim();
    let (key, _) = this.split_once('=')?;
    let key = key.trim().trim_matches('"');
    // `{ name = ... }` entries of an inline array are not keys of their own.
    if key.is_empty() || key.starts_with('{') || key.starts_with('[') {
        return None;
    }
    let header = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match header {
        Some(h) if !h.is_empty() => format!("{h}.{key}"),
        _ => key.to_string(),
    })
}

/// The 1-based line of byte offset `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        sqlite: Option<Sqlite>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sqlite {
        busy_timeout_ms: Option<u64>,
    }

    #[test]
    fn wrong_type_names_line_and_dotted_key() {
        let text = "# comment\n[sqlite]\nbusy_timeout_ms = \"soon\"\n";
        let err = parse::<Doc>(text, "s.toml").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key.as_deref(), Some("sqlite.busy_timeout_ms"));
        assert!(
            err.to_string()
                .starts_with("s.toml:3: key `sqlite.busy_timeout_ms`: ")
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "[sqlite]\nbusy_timeout = 5\n";
        let err = parse::<Doc>(text, "s.toml").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.key.as_deref(), Some("sqlite.busy_timeout"));
        assert!(err.message.contains("unknown field"), "{}", err.message);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse::<Doc>("[sqlite\n", "s.toml").unwrap_err();
        assert_eq!(err.line, Some(1));
    }
}
