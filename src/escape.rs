//! Client-supplied text on its way into the daemon's own log: every string
//! a peer chose (app id, module, host name, a parser's error quoting input)
//! is escaped and truncated when it is formatted, so a client can neither
//! forge a log line (newline, carriage return), nor drive a terminal (ESC),
//! nor hide or reorder text (bidirectional overrides, zero-width marks).

use std::fmt::{self, Write as _};

/// Characters of a client string shown in a log line; the rest is counted.
const MAX_CHARS: usize = 128;

/// Formats its string escaped and truncated (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

/// `Escaped(s)`, for `warn!(app_id = %esc(app), ...)`.
pub(crate) fn esc(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// Characters that change how text around them is shown without being
/// visible themselves: bidi embeddings, overrides and isolates, zero-width
/// marks and joiners, the BOM, the word joiner and invisible operators.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{061C}'
        | '\u{FEFF}'
        | '\u{00AD}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, (i, c)) in self.0.char_indices().enumerate() {
            if shown == MAX_CHARS {
                return write!(f, "…(+{} bytes)", self.0.len() - i);
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() || is_invisible(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        let forged = "app\n2026-12-02T10:00:00Z  INFO stopping signal=15\x1b[2J";
        let shown = esc(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\x1b'), "{shown}");
        assert_eq!(
            shown,
            "app\\n2026-12-02T10:00:00Z  INFO stopping signal=15\\u{1b}[2J"
        );
        assert_eq!(
            esc("a\u{202E}b\u{200B}c\\d").to_string(),
            "a\\u{202e}b\\u{200b}c\\\\d"
        );
        assert_eq!(esc("plain web.requests").to_string(), "plain web.requests");
    }

    #[test]
    fn long_strings_are_truncated_with_a_count() {
        let long = "é".repeat(200);
        let shown = esc(&long).to_string();
        assert!(shown.starts_with(&"é".repeat(MAX_CHARS)));
        assert!(shown.ends_with("…(+144 bytes)"), "{shown}");
    }
}
