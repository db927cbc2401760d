//! Where a facility's lines go (SPEC §4), and the guard that keeps
//! client-supplied host names from steering a file outside
//! `{logdir}/{app_id}/`.
//!
//! App ids and module paths come from facilities.conf and are validated
//! there; the host name is the only client string that reaches a path.

use std::path::{Path, PathBuf};

use crate::config::Facility;
use crate::escape::is_invisible;

/// Longest host name used in a file name; longer ones are cut (at a char
/// boundary) so `{host}-{module}.log` stays under NAME_MAX (255).
const MAX_HOST_IN_NAME: usize = 128;

/// The live file for `facility` (and `host` when it has `file_per_host`).
/// `ext` is `log` or `log.gz` (compress_on_write).
pub fn file_path(logdir: &Path, facility: &Facility, host: Option<&str>, ext: &str) -> PathBuf {
    let stem = facility.file_stem();
    let name = match host {
        Some(h) => format!("{}-{}.{}", safe_host(h), stem, ext),
        None => format!("{stem}.{ext}"),
    };
    logdir.join(&facility.app_id).join(name)
}

/// Makes a client-supplied host name safe as part of one file name: no path
/// separators, NUL or control characters, never `.`/`..`/empty, bounded
/// length. Safe names pass through unchanged (the common case allocates
/// nothing beyond the result).
pub fn safe_host(host: &str) -> String {
    let mut out = String::with_capacity(host.len().min(MAX_HOST_IN_NAME));
    for c in host.chars() {
        if out.len() + c.len_utf8() > MAX_HOST_IN_NAME {
            break;
        }
        // Invisible and bidi characters would make two hosts' files look
        // alike (or a name read backwards) in a listing.
        let bad = c == '/' || c == '\\' || c.is_control() || is_invisible(c);
        out.push(if bad { '_' } else { c });
    }
    // A name made only of dots would be `.`/`..` or a hidden-file lookalike.
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = format!("_{out}");
    }
    out
}

/// Whether `host` can be used as-is (so the per-connection route cache can
/// compare the raw name).
#[cfg(test)]
pub fn is_safe_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_IN_NAME
        && !host.chars().all(|c| c == '.')
        && !host
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || is_invisible(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_hosts_stay_in_one_component() {
        for h in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "a\0b",
            "x\ny",
            "\\..\\",
            "....",
            "web\u{202E}gol.01",
            "a\u{200B}b",
        ] {
            let s = safe_host(h);
            assert!(
                !s.contains('/') && !s.contains('\0') && !s.contains('\\'),
                "{h:?} → {s:?}"
            );
            assert!(s != "." && s != ".." && !s.is_empty(), "{h:?} → {s:?}");
            assert!(!s.chars().any(char::is_control));
            assert!(is_safe_host(&s), "{s:?}");
        }
        assert_eq!(safe_host("web-01.example.com"), "web-01.example.com");
        let long = "é".repeat(200);
        assert!(safe_host(&long).len() <= MAX_HOST_IN_NAME);
    }
}
