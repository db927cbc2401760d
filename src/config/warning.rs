//! Config warnings: what is accepted but probably wrong (an unknown key or
//! section, most often a typo). Collected as data while parsing, because
//! the daemon's log does not exist yet then: the binary logs them once
//! logging is up, `--check-config` prints them, and `--check-config
//! --strict` turns them into errors.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing in a config file that was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file it is in.
    pub file: PathBuf,
    /// `[section] key (line N)` or `[section] (line N)`.
    pub place: String,
    /// What was ignored, and the likely fix.
    pub problem: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.place,
            self.problem
        )
    }
}

impl ConfigWarning {
    /// An unknown key `key` of `[section]` at `line`, with the nearest of
    /// `known` as a suggestion.
    pub(crate) fn unknown_key(
        file: &Path,
        section: &str,
        key: &str,
        line: usize,
        known: &[&str],
    ) -> ConfigWarning {
        let hint = match nearest(key, known) {
            Some(k) => format!("; did you mean `{k}`?"),
            None => format!("; the keys of [{section}] are {}", known.join(", ")),
        };
        ConfigWarning {
            file: file.to_path_buf(),
            place: format!("[{section}] {key} (line {line})"),
            problem: format!("unknown key `{key}` ignored{hint}"),
        }
    }

    /// An unknown section `[section]` at `line`, with the nearest of `known`.
    pub(crate) fn unknown_section(
        file: &Path,
        section: &str,
        line: usize,
        known: &[&str],
    ) -> ConfigWarning {
        let hint = match nearest(section, known) {
            Some(k) => format!("; did you mean [{k}]?"),
            None => format!("; the sections are {}", known.join(", ")),
        };
        ConfigWarning {
            file: file.to_path_buf(),
            place: format!("[{section}] (line {line})"),
            problem: format!("unknown section [{section}] ignored{hint}"),
        }
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a typo of it (at most a third of its letters differ).
pub(crate) fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance with adjacent transpositions counted as one edit (optimal
/// string alignment): `mian` is one typo away from `main`, not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j]; config words are short.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key() {
        let keys = ["default_port", "max_msg_size", "listen_ipv4", "pemfile"];
        assert_eq!(nearest("default_prot", &keys), Some("default_port"));
        let facility_keys = ["rotate", "backup_count", "max_size", "flush_every"];
        assert_eq!(nearest("max_sise", &facility_keys), Some("max_size"));
        assert_eq!(nearest("rotat", &facility_keys), Some("rotate"));
        assert_eq!(nearest("mian", &["main", "log", "server"]), Some("main"));
        assert_eq!(nearest("frobnicate", &keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("mian", "main"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn messages_name_file_place_and_fix() {
        let w = ConfigWarning::unknown_key(
            Path::new("/etc/loghogd/loghogd.conf"),
            "server",
            "default_prot",
            7,
            &["default_port", "listen_ipv4"],
        );
        assert_eq!(
            w.to_string(),
            "/etc/loghogd/loghogd.conf: [server] default_prot (line 7): unknown key `default_prot` ignored; did you mean `default_port`?"
        );
        let w = ConfigWarning::unknown_section(Path::new("f"), "mian", 1, &["main", "log"]);
        assert!(w.to_string().ends_with("did you mean [main]?"), "{w}");
    }
}
