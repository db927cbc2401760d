//! The INI as read, before validation: sections of `key = value` strings
//! with their line numbers, read the way Python 2's `ConfigParser` read
//! loghogd.conf and facilities.conf (SPEC §6). A line pass handles what
//! rust-ini does differently (comments, `;` rules, stray lines); rust-ini
//! then splits sections and keys. Used only by `config` and `facility`.

use super::warning::ConfigWarning;
use std::collections::HashMap;
use std::path::Path;

use ini::{Ini, ParseOption};

use super::ConfigError;

/// The name of ConfigParser's section whose keys every section inherits.
const DEFAULT_SECTION: &str = "DEFAULT";

/// A whole INI file as read: sections in file order, `[DEFAULT]` merged in.
#[derive(Debug, Clone, Default)]
pub struct RawIni {
    /// Every section but `[DEFAULT]`, in file order.
    pub sections: Vec<RawSection>,
    /// `[DEFAULT]`, if the file has one (its keys are already merged into
    /// every section; kept for messages).
    pub defaults: Option<RawSection>,
}

/// One `[section]` as read.
#[derive(Debug, Clone)]
pub struct RawSection {
    /// The name between the brackets, trimmed; case is kept.
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// Keys in file order (inherited `[DEFAULT]` keys last).
    pub entries: Vec<RawEntry>,
}

/// One `key = value` as read.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// Lowercased key (ConfigParser's keys are case-insensitive).
    pub key: String,
    /// The value, trimmed, inline comment removed; `""` written as two
    /// double quotes reads as empty, as in ConfigParser.
    pub value: String,
    /// 1-based line the value was read from.
    pub line: usize,
    /// `true` when the key came from `[DEFAULT]` rather than this section.
    pub from_default: bool,
}

/// What the line pass learned about one line, for line numbers later.
enum LineKind {
    Header(String),
    Entry(String),
}

// === impl RawIni ===

impl RawIni {
    /// Reads INI `text`; `path` is only for messages.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `line N` for a line that is neither a
    /// section header, a `key = value`, a comment nor blank; a key before
    /// any section; a section given twice.
    pub fn parse(text: &str, path: &Path) -> Result<RawIni, ConfigError> {
        let err = |line: usize, problem: String| ConfigError {
            file: path.to_path_buf(),
            place: format!("line {line}"),
            problem,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);

        // Line pass: one cleaned line out per line in, so rust-ini's view
        // and ours share line numbers.
        let mut cleaned = String::with_capacity(text.len());
        let mut kinds: Vec<(usize, LineKind)> = Vec::new();
        let mut headers: HashMap<String, usize> = HashMap::new();
        let mut in_section = false;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
                cleaned.push('\n');
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                // ConfigParser takes up to the first `]` and ignores the rest
                // of the line (often a comment).
                let Some(end) = rest.find(']') else {
                    return Err(err(
                        number,
                        format!(
                            "\"{trimmed}\" has no closing ']'; write a section header as [name]"
                        ),
                    ));
                };
                let name = rest[..end].trim();
                if name.is_empty() {
                    return Err(err(
                        number,
                        "empty section name \"[]\"; name the section".to_owned(),
                    ));
                }
                if let Some(first) = headers.insert(name.to_owned(), number) {
                    return Err(err(
                        number,
                        format!(
                            "section [{name}] appears again (first on line {first}); \
                             merge the two into one section"
                        ),
                    ));
                }
                cleaned.push('[');
                cleaned.push_str(name);
                cleaned.push_str("]\n");
                kinds.push((number, LineKind::Header(name.to_owned())));
                in_section = true;
                continue;
            }
            // ConfigParser splits at the first `=` or `:`.
            let Some(split) = trimmed.find(['=', ':']) else {
                return Err(err(
                    number,
                    format!(
                        "\"{trimmed}\" is not a [section], a `key = value` line or a \
                         comment; fix the line or comment it out with ';'"
                    ),
                ));
            };
            let key = trimmed[..split].trim().to_lowercase();
            if key.is_empty() {
                return Err(err(
                    number,
                    format!(
                        "\"{trimmed}\" has no key before '{}'; write key = value",
                        &trimmed[split..=split]
                    ),
                ));
            }
            if !in_section {
                return Err(err(
                    number,
                    format!("\"{key}\" comes before any [section]; put it under a section header"),
                ));
            }
            let mut value = strip_inline_comment(&trimmed[split + 1..]).trim();
            if value == "\"\"" {
                value = "";
            }
            if value.ends_with('\\') {
                // rust-ini would join the next line on; ConfigParser never did.
                return Err(err(
                    number,
                    format!("the value of \"{key}\" ends with '\\'; remove the trailing backslash"),
                ));
            }
            cleaned.push_str(&key);
            cleaned.push('=');
            cleaned.push_str(value);
            cleaned.push('\n');
            kinds.push((number, LineKind::Entry(key)));
        }

        // Values are literal, as in ConfigParser: no quotes, no escapes.
        let opt = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..ParseOption::default()
        };
        let ini = Ini::load_from_str_opt(&cleaned, opt).map_err(|e| {
            err(
                e.line,
                format!("cannot read this line ({}); fix its syntax", e.msg),
            )
        })?;

        let mut raw = RawIni::default();
        for (name, props) in &ini {
            // rust-ini's general section (keys before any header) is empty:
            // the line pass refused such keys.
            let Some(name) = name else { continue };
            let header_line = headers.get(name).copied().unwrap_or(0);
            let mut section = RawSection {
                name: name.to_owned(),
                line: header_line,
                entries: Vec::new(),
            };
            for (key, value) in props.iter() {
                let line = key_line(&kinds, name, key).unwrap_or(header_line);
                match section.entries.iter_mut().find(|e| e.key == key) {
                    // A key given twice: the last one wins, as in ConfigParser.
                    Some(previous) => {
                        tracing::warn!(
                            file = %path.display(),
                            section = name,
                            key,
                            line,
                            first_line = previous.line,
                            "key given twice in one section; the last value wins"
                        );
                        previous.value = value.to_owned();
                        previous.line = line;
                    }
                    None => section.entries.push(RawEntry {
                        key: key.to_owned(),
                        value: value.to_owned(),
                        line,
                        from_default: false,
                    }),
                }
            }
            if name == DEFAULT_SECTION {
                raw.defaults = Some(section);
            } else {
                raw.sections.push(section);
            }
        }
        raw.sections.sort_by_key(|s| s.line);

        if let Some(defaults) = &raw.defaults {
            for section in &mut raw.sections {
                for entry in &defaults.entries {
                    if section.get(&entry.key).is_none() {
                        section.entries.push(RawEntry {
                            from_default: true,
                            ..entry.clone()
                        });
                    }
                }
            }
        }
        Ok(raw)
    }

    /// The section called `name` (case-sensitive, as in ConfigParser).
    pub fn section(&self, name: &str) -> Option<&RawSection> {
        self.sections.iter().find(|s| s.name == name)
    }
}

// === impl RawSection ===

impl RawSection {
    /// The entry for `key` (lowercase), own or inherited from `[DEFAULT]`.
    pub fn get(&self, key: &str) -> Option<&RawEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Where `key` is, for a [`ConfigError`]: `[section] key (line N)`, or
    /// `[section] key` when the key is absent.
    pub fn place(&self, key: &str) -> String {
        match self.get(key) {
            Some(e) if e.from_default => {
                format!("[{}] {key} (from [DEFAULT], line {})", self.name, e.line)
            }
            Some(e) => format!("[{}] {key} (line {})", self.name, e.line),
            None => format!("[{}] {key}", self.name),
        }
    }

    /// Where the section is: `[section] (line N)`.
    pub fn header_place(&self) -> String {
        format!("[{}] (line {})", self.name, self.line)
    }

    /// A warning for every key of this section that is not in `known`
    /// (keys inherited from `[DEFAULT]` are not this section's doing and are
    /// skipped). The old daemon ignored unknown keys silently; we say so.
    pub fn unknown_keys(&self, file: &Path, known: &[&str]) -> Vec<ConfigWarning> {
        self.entries
            .iter()
            .filter(|e| !e.from_default && !known.contains(&e.key.as_str()))
            .map(|e| ConfigWarning::unknown_key(file, &self.name, &e.key, e.line, known))
            .collect()
    }
}

/// The line of the last `key` inside section `section`, from the line pass.
fn key_line(kinds: &[(usize, LineKind)], section: &str, key: &str) -> Option<usize> {
    let mut current: Option<&str> = None;
    let mut found = None;
    for (line, kind) in kinds {
        match kind {
            LineKind::Header(name) => current = Some(name),
            LineKind::Entry(k) if current == Some(section) && k == key => found = Some(*line),
            LineKind::Entry(_) => {}
        }
    }
    found
}

/// Cuts an inline comment off a value: it starts at a `;` that follows
/// whitespace (ConfigParser's rule), so `my;secret` keeps its `;` and
/// `#` never starts one. Unlike ConfigParser, which only looked at the first
/// `;`, any such `;` counts: `a;b ; note` is `a;b`.
pub fn strip_inline_comment(value: &str) -> &str {
    let mut prev_space = false;
    for (i, c) in value.char_indices() {
        if c == ';' && prev_space {
            return &value[..i];
        }
        prev_space = c.is_whitespace();
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RawIni {
        RawIni::parse(text, Path::new("/etc/test.conf")).unwrap()
    }

    fn value<'a>(raw: &'a RawIni, section: &str, key: &str) -> Option<&'a str> {
        raw.section(section)?.get(key).map(|e| e.value.as_str())
    }

    #[test]
    fn inline_comment_rule() {
        let table = [
            ("daily ; at midnight", "daily"),
            ("daily\t; tab before", "daily"),
            ("my;secret", "my;secret"),
            ("my;secret ; note", "my;secret"),
            ("a #b", "a #b"),
            ("#notacomment", "#notacomment"),
            ("", ""),
            (" ; only a comment", ""),
            ("x;", "x;"),
        ];
        for (input, want) in table {
            assert_eq!(strip_inline_comment(input).trim(), want, "{input:?}");
        }
    }

    #[test]
    fn configparser_line_rules() {
        let text = "\
; a comment
# another
[Main]
Daemon = no ; inline
user: loghog
   indented = yes
secret = my;big#secret
quoted = \"not stripped\"
empty =
dq = \"\"
path = C:\\logs\\x
url = http://example.com:80/a=b

[other] ; trailing text ignored
KEY=v
";
        let raw = parse(text);
        let names: Vec<&str> = raw.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Main", "other"]);
        let table = [
            ("daemon", "no"),
            ("user", "loghog"),
            ("indented", "yes"),
            ("secret", "my;big#secret"),
            ("quoted", "\"not stripped\""),
            ("empty", ""),
            ("dq", ""),
            ("path", "C:\\logs\\x"),
            ("url", "http://example.com:80/a=b"),
        ];
        for (key, want) in table {
            assert_eq!(value(&raw, "Main", key), Some(want), "{key}");
        }
        assert_eq!(value(&raw, "other", "key"), Some("v"));
        assert!(
            raw.section("main").is_none(),
            "section names keep their case"
        );
        let main = raw.section("Main").unwrap();
        assert_eq!(main.line, 3);
        assert_eq!(main.get("user").unwrap().line, 5);
        assert_eq!(main.place("user"), "[Main] user (line 5)");
        assert_eq!(main.place("nope"), "[Main] nope");
        assert_eq!(raw.section("other").unwrap().get("key").unwrap().line, 15);
    }

    #[test]
    fn default_section_is_inherited() {
        let raw = parse("[a]\nx = 1\n[DEFAULT]\nx = 0\ny = 2\n[b]\n");
        assert_eq!(value(&raw, "a", "x"), Some("1"));
        assert_eq!(value(&raw, "a", "y"), Some("2"));
        assert_eq!(value(&raw, "b", "x"), Some("0"));
        let b = raw.section("b").unwrap();
        assert!(b.get("y").unwrap().from_default);
        assert_eq!(b.place("y"), "[b] y (from [DEFAULT], line 5)");
        assert!(raw.section("DEFAULT").is_none());
        assert!(raw.defaults.is_some());
    }

    #[test]
    fn duplicate_key_last_wins() {
        let raw = parse("[a]\nx = 1\nX = 2\n");
        let a = raw.section("a").unwrap();
        assert_eq!(a.entries.len(), 1);
        assert_eq!(a.get("x").unwrap().value, "2");
        assert_eq!(a.get("x").unwrap().line, 3);
    }

    #[test]
    fn crlf_and_bom() {
        let raw = parse("\u{feff}[a]\r\nx = 1 ; c\r\n");
        assert_eq!(value(&raw, "a", "x"), Some("1"));
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let table = [
            ("[a]\njust words\n", "line 2", "is not a [section]"),
            ("x = 1\n[a]\n", "line 1", "before any [section]"),
            ("[a\nx = 1\n", "line 1", "no closing ']'"),
            ("[]\n", "line 1", "empty section name"),
            ("[a]\n= 1\n", "line 2", "no key"),
            ("[a]\n\n[a]\n", "line 3", "first on line 1"),
            (
                "[a]\nx = c:\\\ny = 2\n",
                "line 2",
                "remove the trailing backslash",
            ),
        ];
        for (text, place, want) in table {
            let err = RawIni::parse(text, Path::new("/etc/x.conf")).unwrap_err();
            assert_eq!(err.place, place, "{text:?}");
            assert!(err.problem.contains(want), "{text:?}: {}", err.problem);
            assert_eq!(err.file, Path::new("/etc/x.conf"));
        }
    }
}
