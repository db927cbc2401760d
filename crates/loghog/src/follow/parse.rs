//! `--parse clf|w3c|json`: turns one access-log line into the message body
//! as `key=value` pairs; the agent's only transformation of what it reads.
//!
//! A line that does not parse is sent raw, never dropped: a parser is a
//! convenience for the reader of the log, not a filter. W3C extended logs
//! describe their columns in `#Fields:` directives, so that parser keeps the
//! current field names per followed file ([`W3cFields`]).

use std::fmt::Write as _;

/// How a line becomes a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The line as it is (the default).
    #[default]
    Raw,
    /// Common Log Format, and the "combined" format that appends the
    /// quoted referer and user agent (Apache, nginx's default `combined`).
    Clf,
    /// W3C extended log format (IIS and others): `#Fields:` names the columns.
    W3c,
    /// One JSON object per line; nested objects become dotted keys.
    Json,
}

/// Why a `--parse` value is not a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl std::fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown log format {:?} (expected raw, clf, w3c or json)",
            self.0
        )
    }
}

impl std::error::Error for UnknownFormat {}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Ok(Format::Raw),
            "clf" | "combined" => Ok(Format::Clf),
            "w3c" => Ok(Format::W3c),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// The column names of a W3C log, from its latest `#Fields:` directive.
/// `None` until the file has named its columns (lines before that go raw).
pub type W3cFields = Option<Vec<String>>;

/// What a line turned into.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Send this body.
    Body(std::borrow::Cow<'a, str>),
    /// A W3C directive (`#Version:`, `#Fields:`...): metadata of the file,
    /// not a record, so nothing is sent.
    Directive,
}

// === impl Format ===

impl Format {
    /// Turns `line` (without its newline) into a body. `fields` is the
    /// followed file's W3C column state, updated by `#Fields:` lines.
    pub fn parse<'a>(&self, line: &'a str, fields: &mut W3cFields) -> Parsed<'a> {
        let parsed = match self {
            Format::Raw => None,
            Format::Clf => parse_clf(line),
            Format::Json => parse_json(line),
            Format::W3c => {
                if let Some(directive) = line.strip_prefix('#') {
                    if let Some(names) = directive.strip_prefix("Fields:") {
                        *fields = Some(names.split_whitespace().map(str::to_string).collect());
                    }
                    return Parsed::Directive;
                }
                fields.as_deref().and_then(|names| parse_w3c(line, names))
            }
        };
        match parsed {
            Some(body) => Parsed::Body(body.into()),
            None => Parsed::Body(line.into()),
        }
    }
}

/// Appends ` key=value` (no leading space for the first pair), quoting the
/// value when it is empty or holds a space, `"`, `=` or `\`, so the pairs
/// split back unambiguously.
fn push_pair(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(key);
    out.push('=');
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\' || c.is_control());
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Splits the next token off `rest`: a `"quoted string"` (with `\"` escapes,
/// as nginx and Apache write them), a `[bracketed date]`, or a run of
/// non-spaces. Returns the token's content and what follows.
fn next_token(rest: &str) -> Option<(String, &str)> {
    let rest = rest.trim_start_matches(' ');
    let mut chars = rest.char_indices();
    match chars.next()? {
        (_, '"') => {
            let mut out = String::new();
            let mut escaped = false;
            for (i, c) in chars {
                match c {
                    _ if escaped => {
                        // `\"` and `\\` lose their backslash; other escapes
                        // (nginx's `\x22`) stay as written.
                        if c != '"' && c != '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                        escaped = false;
                    }
                    '\\' => escaped = true,
                    '"' => return Some((out, &rest[i + 1..])),
                    c => out.push(c),
                }
            }
            None
        }
        (_, '[') => {
            let end = rest.find(']')?;
            Some((rest[1..end].to_string(), &rest[end + 1..]))
        }
        _ => {
            let end = rest.find(' ').unwrap_or(rest.len());
            Some((rest[..end].to_string(), &rest[end..]))
        }
    }
}

/// `host ident user [time] "request" status bytes` plus, in the combined
/// format, `"referer" "agent"`. The request is split into method, path and
/// protocol when it has those three parts (a garbage request stays whole).
fn parse_clf(line: &str) -> Option<String> {
    let mut rest = line;
    let mut tokens = Vec::with_capacity(9);
    while !rest.trim_start_matches(' ').is_empty() {
        let (token, after) = next_token(rest)?;
        tokens.push(token);
        rest = after;
    }
    if !(tokens.len() == 7 || tokens.len() == 9) {
        return None;
    }
    // The date must have been bracketed and the status must be a number:
    // that tells a CLF line from any seven words.
    if !line.contains('[') || tokens[5].parse::<u16>().is_err() {
        return None;
    }
    let mut out = String::with_capacity(line.len() + 64);
    push_pair(&mut out, "host", &tokens[0]);
    push_pair(&mut out, "ident", &tokens[1]);
    push_pair(&mut out, "user", &tokens[2]);
    push_pair(&mut out, "time", &tokens[3]);
    let parts: Vec<&str> = tokens[4].split(' ').collect();
    if parts.len() == 3 {
        push_pair(&mut out, "method", parts[0]);
        push_pair(&mut out, "path", parts[1]);
        push_pair(&mut out, "protocol", parts[2]);
    } else {
        push_pair(&mut out, "request", &tokens[4]);
    }
    push_pair(&mut out, "status", &tokens[5]);
    push_pair(&mut out, "bytes", &tokens[6]);
    if tokens.len() == 9 {
        push_pair(&mut out, "referer", &tokens[7]);
        push_pair(&mut out, "agent", &tokens[8]);
    }
    Some(out)
}

/// A W3C record: space-separated values in `names` order; a value may be a
/// quoted string with `""` for a quote. A line with another column count
/// than `#Fields:` announced is not a record of this header.
fn parse_w3c(line: &str, names: &[String]) -> Option<String> {
    let mut values = Vec::with_capacity(names.len());
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut it = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = it.next() {
                if c == '"' {
                    if matches!(it.peek(), Some((_, '"'))) {
                        value.push('"');
                        it.next();
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            values.push(value);
            rest = quoted[end?..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            values.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    if values.len() != names.len() {
        return None;
    }
    let mut out = String::with_capacity(line.len() * 2);
    for (name, value) in names.iter().zip(&values) {
        push_pair(&mut out, name, value);
    }
    Some(out)
}

/// A JSON object: each member becomes `key=value` in the order the line
/// has them; nested objects flatten to `outer.inner=value`; strings go
/// unquoted unless they need quotes; arrays, numbers, booleans and null are
/// written as JSON.
fn parse_json(line: &str) -> Option<String> {
    let Ordered::Object(members) = serde_json::from_str::<Ordered>(line).ok()? else {
        return None;
    };
    let mut out = String::with_capacity(line.len());
    flatten_json(&mut out, "", &members);
    Some(out)
}

fn flatten_json(out: &mut String, prefix: &str, members: &[(String, Ordered)]) {
    for (key, value) in members {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Ordered::Object(inner) if !inner.is_empty() => flatten_json(out, &key, inner),
            Ordered::Object(_) => push_pair(out, &key, "{}"),
            Ordered::Other(serde_json::Value::String(s)) => push_pair(out, &key, s),
            Ordered::Other(other) => push_pair(out, &key, &other.to_string()),
        }
    }
}

/// A JSON value whose objects keep their members' order (serde_json's own
/// map sorts them unless a workspace-wide feature is turned on).
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Other(serde_json::Value),
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Ordered>()? {
            members.push((k, v));
        }
        Ok(Ordered::Object(members))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        // Arrays are written back as JSON text through serde_json, whose
        // objects sort their keys: only top-level and nested-object order
        // is kept, which is where the keys of a log line are.
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Ordered>()? {
            items.push(v.into_value());
        }
        Ok(Ordered::Other(serde_json::Value::Array(items)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Other(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Other(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Other(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
        Ok(Ordered::Other(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::Other(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Ordered, E> {
        Ok(Ordered::Other(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Other(serde_json::Value::Null))
    }
}

impl Ordered {
    /// Back to a plain value (inside arrays, which are written as JSON).
    fn into_value(self) -> serde_json::Value {
        match self {
            Ordered::Other(v) => v,
            Ordered::Object(members) => serde_json::Value::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k, v.into_value()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(format: Format, line: &str) -> String {
        let mut fields = None;
        match format.parse(line, &mut fields) {
            Parsed::Body(b) => b.into_owned(),
            Parsed::Directive => panic!("{line:?} taken as a directive"),
        }
    }

    #[test]
    fn format_names() {
        assert_eq!("clf".parse(), Ok(Format::Clf));
        assert_eq!("W3C".parse(), Ok(Format::W3c));
        assert_eq!("json".parse(), Ok(Format::Json));
        assert_eq!("raw".parse(), Ok(Format::Raw));
        let err = "xml".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("\"xml\""), "{err}");
    }

    #[test]
    fn raw_keeps_the_line() {
        assert_eq!(body(Format::Raw, "a b=c \"d\""), "a b=c \"d\"");
    }

    #[test]
    fn clf_common_format() {
        let line = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
        assert_eq!(
            body(Format::Clf, line),
            r#"host=127.0.0.1 ident=- user=frank time="10/Oct/2000:13:55:36 -0700" method=GET path=/apache_pb.gif protocol=HTTP/1.0 status=200 bytes=2326"#
        );
    }

    #[test]
    fn clf_nginx_combined_with_escapes() {
        let line = r#"10.1.2.3 - - [02/Dec/2026:10:00:00 +0000] "GET /a?q=\"x\" HTTP/1.1" 404 0 "-" "curl/8.5.0 (x86_64)""#;
        assert_eq!(
            body(Format::Clf, line),
            r#"host=10.1.2.3 ident=- user=- time="02/Dec/2026:10:00:00 +0000" method=GET path="/a?q=\"x\"" protocol=HTTP/1.1 status=404 bytes=0 referer=- agent="curl/8.5.0 (x86_64)""#
        );
    }

    #[test]
    fn clf_garbage_request_stays_whole() {
        let line = r#"1.2.3.4 - - [02/Dec/2026:10:00:00 +0000] "\x16\x03\x01" 400 157"#;
        assert_eq!(
            body(Format::Clf, line),
            r#"host=1.2.3.4 ident=- user=- time="02/Dec/2026:10:00:00 +0000" request="\\x16\\x03\\x01" status=400 bytes=157"#
        );
    }

    #[test]
    fn clf_not_clf_goes_raw() {
        for line in [
            "just some words",
            "a b c [d] \"e\" notanumber 5",
            "1.2.3.4 - - [date] \"GET / HTTP/1.1\" 200",
            "1.2.3.4 - - [date \"unterminated",
            "",
        ] {
            assert_eq!(body(Format::Clf, line), line);
        }
    }

    #[test]
    fn w3c_follows_fields_directive() {
        let mut fields = None;
        let f = Format::W3c;
        assert_eq!(
            f.parse("#Software: Microsoft IIS 10.0", &mut fields),
            Parsed::Directive
        );
        assert_eq!(
            f.parse("before any header", &mut fields),
            Parsed::Body("before any header".into())
        );
        assert_eq!(
            f.parse(
                "#Fields: date time c-ip cs-method cs-uri-stem sc-status cs(User-Agent)",
                &mut fields
            ),
            Parsed::Directive
        );
        assert_eq!(
            f.parse(
                "2026-12-02 10:00:00 10.0.0.1 GET /index.html 200 Mozilla/5.0+(X11)",
                &mut fields
            ),
            Parsed::Body(
                "date=2026-12-02 time=10:00:00 c-ip=10.0.0.1 cs-method=GET cs-uri-stem=/index.html sc-status=200 cs(User-Agent)=Mozilla/5.0+(X11)".into()
            )
        );
        // A quoted value with a doubled quote; a wrong column count is raw.
        f.parse("#Fields: x-a x-b", &mut fields);
        assert_eq!(
            f.parse(r#""say ""hi""" 2"#, &mut fields),
            Parsed::Body(r#"x-a="say \"hi\"" x-b=2"#.into())
        );
        assert_eq!(f.parse("1 2 3", &mut fields), Parsed::Body("1 2 3".into()));
    }

    #[test]
    fn json_flattens_objects() {
        let line = r#"{"level":"info","msg":"user logged in","user":{"id":7,"name":"ann"},"tags":["a","b"],"ok":true,"none":null,"empty":""}"#;
        assert_eq!(
            body(Format::Json, line),
            r#"level=info msg="user logged in" user.id=7 user.name=ann tags="[\"a\",\"b\"]" ok=true none=null empty="""#
        );
    }

    #[test]
    fn json_not_an_object_goes_raw() {
        for line in ["[1,2]", "\"str\"", "{broken", "42"] {
            assert_eq!(body(Format::Json, line), line);
        }
    }
}
