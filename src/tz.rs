//! The `TZ` environment variable, checked before anything reads the local
//! time zone: rotation schedules are local time (SPEC §5), so a `TZ` that
//! names no zone must not silently become UTC, and one that points at a
//! device or a huge file must not be read at all (`TZ=:/dev/zero` made the
//! time-zone parser read forever).

use std::path::{Path, PathBuf};

/// Largest zone file we read: real TZif files are a few KiB.
const MAX_ZONE_FILE: u64 = 1 << 20;

/// What was wrong with `TZ`; the daemon then runs in UTC and says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TzProblem {
    /// The value as set.
    pub value: String,
    /// Why it cannot be used.
    pub why: String,
}

impl std::fmt::Display for TzProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TZ={:?} {}; using UTC (set TZ to a zone such as Europe/Berlin, or unset it to use /etc/localtime)",
            self.value, self.why
        )
    }
}

/// Checks `value` (the content of `TZ`) against the zone files under
/// `zoneinfo`, reading no file. `None` when it is usable.
pub fn check_value(value: &str, zoneinfo: &Path) -> Option<TzProblem> {
    let problem = |why: &str| {
        Some(TzProblem {
            value: value.to_owned(),
            why: why.to_owned(),
        })
    };
    // POSIX: empty TZ is UTC, and that is what the user asked for.
    if value.is_empty() || value == ":" {
        return None;
    }
    let name = value.strip_prefix(':').unwrap_or(value);
    if name.starts_with('/') {
        return zone_file_problem(Path::new(name)).and_then(|why| problem(&why));
    }
    if is_posix_rule(name) {
        return None;
    }
    if name.split('/').any(|part| part == ".." || part.is_empty()) {
        return problem("is not a time zone name");
    }
    match zone_file_problem(&zoneinfo.join(name)) {
        None => None,
        Some(_) => problem(&format!(
            "names no time zone (no file {})",
            zoneinfo.join(name).display()
        )),
    }
}

/// Checks the process's `TZ` and, when it is unusable, sets it to `UTC` so
/// that nothing later reads it. Call first thing in `main`, while the
/// process has one thread (changing the environment is not thread-safe).
pub fn check_and_fix() -> Option<TzProblem> {
    let value = std::env::var("TZ").ok()?;
    let zoneinfo = std::env::var_os("TZDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/zoneinfo"));
    let problem = check_value(&value, &zoneinfo)?;
    std::env::set_var("TZ", "UTC0");
    Some(problem)
}

/// Why `path` is not a zone file we would read, looking at its metadata only.
fn zone_file_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) => Some(format!(
            "points at {}, which cannot be used ({e})",
            path.display()
        )),
        Ok(m) if !m.is_file() => Some(format!(
            "points at {}, which is not a regular file",
            path.display()
        )),
        Ok(m) if m.len() > MAX_ZONE_FILE => Some(format!(
            "points at {}, which is too large to be a zone file ({} bytes)",
            path.display(),
            m.len()
        )),
        Ok(_) => None,
    }
}

/// A POSIX TZ rule such as `UTC0`, `EST5EDT` or `<+03>-3`: a name of at
/// least three letters (or `<...>`), then an offset.
fn is_posix_rule(s: &str) -> bool {
    let rest = if let Some(r) = s.strip_prefix('<') {
        match r.find('>') {
            Some(i) => &r[i + 1..],
            None => return false,
        }
    } else {
        let letters = s.chars().take_while(char::is_ascii_alphabetic).count();
        if letters < 3 {
            return false;
        }
        &s[letters..]
    };
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    rest.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_judged_without_reading_files() {
        let zi = Path::new("/usr/share/zoneinfo");
        for ok in ["", "UTC0", "EST5EDT", "EST5EDT,M3.2.0,M11.1.0", "<+03>-3"] {
            assert_eq!(check_value(ok, zi), None, "{ok}");
        }
        for bad in [
            ":/dev/zero",
            "/dev/zero",
            ":/nonexistent/zone",
            "../etc/passwd",
            "Foo//Bar",
        ] {
            assert!(check_value(bad, zi).is_some(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Europe")).unwrap();
        std::fs::write(dir.path().join("Europe/Berlin"), b"TZif2").unwrap();
        assert_eq!(check_value("Europe/Berlin", dir.path()), None);
        let p = check_value("Mars/Olympus", dir.path()).unwrap();
        assert!(p.to_string().contains("using UTC"), "{p}");
        assert!(p.to_string().contains("Mars/Olympus"), "{p}");
        let huge = dir.path().join("huge");
        let f = std::fs::File::create(&huge).unwrap();
        f.set_len(MAX_ZONE_FILE + 1).unwrap();
        let p = check_value(&format!(":{}", huge.display()), dir.path()).unwrap();
        assert!(p.why.contains("too large"), "{p}");
    }
}
