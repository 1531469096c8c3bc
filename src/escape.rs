//! Text that came from a document (uids, names, paths, messages that quote them), made safe
//! to print. A uid with a newline in it must not be able to forge a `landed …` line that cron
//! or a scientist's script then believes, and an escape sequence must not repaint a terminal.
//! Every printer of document-derived text goes through [`escape`]; nothing else escapes.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character (C0, DEL, C1), line and paragraph separator, and
/// bidirectional override written as a Rust-style escape (`\n`, `\t`, `\u{1b}`). Printable
/// text, non-ASCII letters included, is left as it is, so ordinary names print unchanged.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Line and paragraph separators: some terminals and log viewers break lines there.
            '\u{2028}' | '\u{2029}'
            // Bidirectional overrides and isolates: they reorder what a reader sees.
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_or_paint_the_terminal() {
        assert_eq!(escape("plain-uid_1.2"), "plain-uid_1.2");
        assert!(matches!(escape("Ångström"), Cow::Borrowed(_)));
        assert_eq!(
            escape("x\nlanded    evil: 1 events"),
            "x\\nlanded    evil: 1 events"
        );
        assert_eq!(escape("a\rb\tc"), "a\\rb\\tc");
        assert_eq!(escape("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(
            escape("\u{85}\u{2028}\u{202e}"),
            "\\u{85}\\u{2028}\\u{202e}"
        );
        assert_eq!(escape("\0\u{7f}"), "\\u{0}\\u{7f}");
    }
}
