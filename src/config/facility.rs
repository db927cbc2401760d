//! facilities.conf → [`FacilityDb`]: one [`Facility`] per section (SPEC §2,
//! §5, §6), sub-facilities completed from their app's root, and
//! [`FacilityDb::lookup`], which the router uses to route each message to
//! its most specific facility. Reloaded on SIGHUP as a whole new snapshot.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::raw::{RawIni, RawSection};
use super::{parse_bool, ConfigError, ConfigWarning};
use crate::output::file::format::LineFormat;
use crate::record::{facility_code, severity_code, FACILITY_NAMES, SEVERITY_NAMES};
use crate::rotation::schedule::Schedule;
use loghog_protocol::normalize_module;

/// The keys a facility section knows; anything else is warned about.
const KNOWN_KEYS: &[&str] = &[
    "rotate",
    "backup_count",
    "max_size",
    "flush_every",
    "file_per_host",
    "secret",
    "sync",
    "format",
    "min_severity",
    "syslog_tags",
    "syslog_facilities",
    "forward",
];

/// The catch-all application of syslog input: messages whose tag names no
/// configured app go to `[syslog]`, or to its sub-facility named after
/// their syslog facility (`[syslog:auth]`, `[syslog:kern]`...).
pub const SYSLOG_APP: &str = "syslog";

/// One facility: an app's root or a module of it (SPEC §2).
#[derive(Clone)]
pub struct Facility {
    /// The application, as clients send it in `app_id`.
    pub app_id: String,
    /// `""` for the root facility, else the dotted path without `root.`.
    pub module: String,
    /// When the file rotates.
    pub rotate: Schedule,
    /// Rotated files to keep (at least 1).
    pub backup_count: u32,
    /// Rotate at this size too (required with `rotate = size`).
    pub max_size: Option<u64>,
    /// Messages that may be buffered before they reach the OS (at least 1).
    pub flush_every: u32,
    /// One file per sending host.
    pub file_per_host: bool,
    /// When the live file is fsynced (what survives a power cut).
    pub sync: SyncPolicy,
    /// HMAC-MD5 key messages must be signed with. Never printed.
    pub secret: Option<loghog_protocol::Key>,
    /// How lines are written (`format =`, inherited from the root).
    pub format: LineFormat,
    /// Syslog messages less severe than this (a higher code) are dropped;
    /// 7 (debug) keeps everything. LogHog messages have no severity.
    pub min_severity: u8,
    /// Syslog tags (APP-NAME) routed here besides the app's own name
    /// (`syslog_tags =`, this section only).
    pub syslog_tags: Vec<String>,
    /// Syslog facility codes routed here (`syslog_facilities =`, this
    /// section only; a `[syslog:NAME]` section takes its own by default).
    pub syslog_facilities: Vec<u8>,
    /// Relay this facility's records to `[forward]`'s stream (issue 16)
    /// instead of writing them here; inherited from the root.
    pub forward: bool,
}

/// Every configured facility, looked up by app and module.
#[derive(Debug, Default)]
pub struct FacilityDb {
    /// app_id → module (`""` for root) → facility.
    apps: HashMap<String, HashMap<String, Arc<Facility>>>,
    /// The same facilities sorted by section name, for stable listings.
    ordered: Vec<Arc<Facility>>,
    /// Unknown keys that were ignored, for the caller to report.
    pub warnings: Vec<ConfigWarning>,
    /// Syslog routing: tag (APP-NAME) → facility.
    syslog_by_tag: HashMap<String, Arc<Facility>>,
    /// Syslog routing: facility code → facility (the `[syslog:NAME]` split).
    syslog_by_code: HashMap<u8, Arc<Facility>>,
}

// === impl Facility ===

impl Facility {
    /// The section this facility comes from, normalized: `app` for the
    /// root, `app:module` otherwise.
    pub fn section_name(&self) -> String {
        if self.is_root() {
            self.app_id.clone()
        } else {
            format!("{}:{}", self.app_id, self.module)
        }
    }

    /// The file name without `.log`: `root` or the module path (SPEC §4).
    pub fn file_stem(&self) -> &str {
        if self.is_root() {
            "root"
        } else {
            &self.module
        }
    }

    /// `true` for an app's root facility.
    pub fn is_root(&self) -> bool {
        self.module.is_empty()
    }
}

impl std::fmt::Debug for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hand-written so the secret can never reach a log line.
        f.debug_struct("Facility")
            .field("app_id", &self.app_id)
            .field("module", &self.module)
            .field("rotate", &self.rotate.describe())
            .field("backup_count", &self.backup_count)
            .field("max_size", &self.max_size)
            .field("flush_every", &self.flush_every)
            .field("file_per_host", &self.file_per_host)
            .field("sync", &self.sync)
            .field("format", &self.format)
            .field("min_severity", &self.min_severity)
            .field("syslog_tags", &self.syslog_tags)
            .field("syslog_facilities", &self.syslog_facilities)
            .field("forward", &self.forward)
            .field(
                "secret",
                &format_args!(
                    "{}",
                    if self.secret.is_some() {
                        "<redacted>"
                    } else {
                        "none"
                    }
                ),
            )
            .finish()
    }
}

// === impl FacilityDb ===

impl FacilityDb {
    /// Reads and validates facilities.conf.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, section and fix.
    pub fn load(path: &Path) -> Result<FacilityDb, ConfigError> {
        let text =
            super::read_config_file(path, "-F/--facilities-config or [main] facilities_config")?;
        FacilityDb::parse(&text, path)
    }

    /// Validates facilities.conf given as `text`; `path` names the file in
    /// errors. Pure: touches no disk.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, section and fix.
    pub fn parse(text: &str, path: &Path) -> Result<FacilityDb, ConfigError> {
        let raw = RawIni::parse(text, path)?;
        if raw.sections.is_empty() {
            // An empty file is an editor mid-save or a mistake: taking it
            // would silently drop every message (see issue 12).
            return Err(ConfigError::new(
                path,
                "file",
                "no facility is configured, so every message would be dropped; add at least one [app] section with rotate and backup_count",
            ));
        }
        let mut warnings = Vec::new();

        // Names first: every error about a name comes before any about keys.
        let mut named: Vec<(String, String, &RawSection)> = Vec::new();
        let mut seen: HashMap<(String, String), &RawSection> = HashMap::new();
        for section in &raw.sections {
            let (app_id, module) = split_section_name(&section.name)
                .map_err(|problem| ConfigError::new(path, section.header_place(), problem))?;
            if let Some(first) = seen.insert((app_id.clone(), module.clone()), section) {
                return Err(ConfigError::new(
                    path,
                    section.header_place(),
                    format!(
                        "this is the same facility as [{}] on line {}; keep one of the two sections",
                        first.name, first.line
                    ),
                ));
            }
            warnings.extend(section.unknown_keys(path, KNOWN_KEYS));
            named.push((app_id, module, section));
        }

        // Roots, then modules completed from their root.
        let mut db = FacilityDb::default();
        for (app_id, module, section) in named.iter().filter(|(_, m, _)| m.is_empty()) {
            let facility = read_facility(path, section, app_id, module, None)?;
            db.insert(facility);
        }
        for (app_id, module, section) in named.iter().filter(|(_, m, _)| !m.is_empty()) {
            let Some(root) = db.apps.get(app_id).and_then(|app| app.get("")).cloned() else {
                return Err(ConfigError::new(
                    path,
                    section.header_place(),
                    format!(
                        "sub-facility of \"{app_id}\", which has no root section; add \
                         [{app_id}] with rotate and backup_count"
                    ),
                ));
            };
            let facility = read_facility(path, section, app_id, module, Some(&root))?;
            db.insert(facility);
        }
        db.ordered.sort_by_key(|f| f.section_name());
        db.warnings = warnings;
        db.build_syslog_routes(path, &named)?;
        Ok(db)
    }

    /// Fills the syslog routing tables (issue 13). A tag goes to the app of
    /// that name (its root), or to the section that lists it in
    /// `syslog_tags`; a syslog facility goes to the section that lists it
    /// in `syslog_facilities`, or to `[syslog:NAME]`. A facility with a
    /// `secret` never takes syslog messages (they carry no signature).
    fn build_syslog_routes(
        &mut self,
        path: &Path,
        named: &[(String, String, &RawSection)],
    ) -> Result<(), ConfigError> {
        let section_of = |f: &Facility| {
            named
                .iter()
                .find(|(a, m, _)| *a == f.app_id && *m == f.module)
                .map(|(_, _, s)| *s)
        };
        let mut explicit_tags: HashMap<String, String> = HashMap::new();
        let mut explicit_codes: HashMap<u8, String> = HashMap::new();
        for f in &self.ordered {
            let place = |key: &str| {
                section_of(f).map_or_else(|| format!("[{}]", f.section_name()), |s| s.place(key))
            };
            if f.secret.is_some() && !f.syslog_tags.is_empty() {
                return Err(ConfigError::new(
                    path,
                    place("syslog_tags"),
                    "syslog_tags on a facility with a secret: syslog messages carry no signature, so they could never be written here; remove one of the two",
                ));
            }
            for tag in &f.syslog_tags {
                if let Some(other) = explicit_tags.insert(tag.clone(), f.section_name()) {
                    return Err(ConfigError::new(
                        path,
                        place("syslog_tags"),
                        format!("the syslog tag \"{tag}\" is also listed in [{other}]; list it in one section"),
                    ));
                }
                self.syslog_by_tag.insert(tag.clone(), f.clone());
            }
            for code in &f.syslog_facilities {
                if let Some(other) = explicit_codes.insert(*code, f.section_name()) {
                    return Err(ConfigError::new(
                        path,
                        place("syslog_facilities"),
                        format!(
                            "the syslog facility {} is also routed to [{other}]; route it to one section",
                            FACILITY_NAMES[usize::from(*code)]
                        ),
                    ));
                }
                self.syslog_by_code.insert(*code, f.clone());
            }
        }
        for f in &self.ordered {
            if f.secret.is_some() {
                continue;
            }
            if f.is_root() && !explicit_tags.contains_key(&f.app_id) {
                self.syslog_by_tag.insert(f.app_id.clone(), f.clone());
            }
            if f.app_id == SYSLOG_APP && f.syslog_facilities.is_empty() {
                if let Some(code) = facility_code(&f.module) {
                    self.syslog_by_code.entry(code).or_insert_with(|| f.clone());
                }
            }
        }
        Ok(())
    }

    /// The facility a syslog message goes to: by its tag (APP-NAME), else
    /// by its syslog facility, else the catch-all `[syslog]`; `None` when
    /// none applies (no `[syslog]` section).
    pub(crate) fn lookup_syslog(&self, tag: Option<&str>, facility: u8) -> Option<&Arc<Facility>> {
        if let Some(f) = tag.and_then(|t| self.syslog_by_tag.get(t)) {
            return Some(f);
        }
        if let Some(f) = self.syslog_by_code.get(&facility) {
            return Some(f);
        }
        self.apps
            .get(SYSLOG_APP)
            .and_then(|app| app.get(""))
            .filter(|f| f.secret.is_none())
    }

    fn insert(&mut self, facility: Facility) {
        let facility = Arc::new(facility);
        self.ordered.push(Arc::clone(&facility));
        self.apps
            .entry(facility.app_id.clone())
            .or_default()
            .insert(facility.module.clone(), facility);
    }

    /// The most specific facility for `module` (already normalized: no
    /// leading `root`), or `None` when the app is unknown.
    pub fn lookup(&self, app_id: &str, module: &str) -> Option<&Arc<Facility>> {
        let app = self.apps.get(app_id)?;
        let mut m = module;
        loop {
            if let Some(f) = app.get(m) {
                return Some(f);
            }
            match m.rfind('.') {
                Some(i) => m = &m[..i],
                None if !m.is_empty() => m = "",
                None => return None,
            }
        }
    }

    /// Every facility, sorted by section name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Facility>> {
        self.ordered.iter()
    }

    /// How many facilities there are.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// `true` when no facility is configured.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}

/// `app`, `app:`, `app:root` → (`app`, `""`); `app:web.x` and
/// `app:root.web.x` → (`app`, `web.x`). Names become path components, so
/// the app and every module segment are checked.
fn split_section_name(name: &str) -> Result<(String, String), String> {
    let (app_id, module) = match name.split_once(':') {
        Some((app, module)) => (app.trim(), normalize_module(module.trim())),
        None => (name.trim(), ""),
    };
    check_segment(app_id, "app id", name)?;
    if !module.is_empty() {
        for segment in module.split('.') {
            check_segment(segment, "module segment", name)?;
        }
    }
    Ok((app_id.to_owned(), module.to_owned()))
}

fn check_segment(segment: &str, what: &str, name: &str) -> Result<(), String> {
    let fix = "write [app] or [app:module.sub] with names made of letters, digits, '-' or '_'";
    if segment.is_empty() {
        return Err(format!("[{name}] has an empty {what}; {fix}"));
    }
    if segment == "." || segment == ".." {
        return Err(format!(
            "[{name}]: \"{segment}\" cannot be an {what}; {fix}"
        ));
    }
    if let Some(c) = segment
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "[{name}]: the {what} \"{segment}\" contains {c:?}, which cannot be part of a file name; {fix}"
        ));
    }
    Ok(())
}

/// One section's keys; a module section takes what it does not set from
/// `root` (its own `[DEFAULT]` copies do not count: the root already has them).
fn read_facility(
    path: &Path,
    section: &RawSection,
    app_id: &str,
    module: &str,
    root: Option<&Facility>,
) -> Result<Facility, ConfigError> {
    let error = |key: &str, problem: String| ConfigError::new(path, section.place(key), problem);
    // Own value, or `None` to inherit. A root also reads `[DEFAULT]` copies.
    let own = |key: &str| {
        section
            .get(key)
            .filter(|e| root.is_none() || !e.from_default)
            .map(|e| e.value.trim())
    };
    let positive = |key: &str, v: &str| {
        v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            error(
                key,
                format!("{key} = \"{v}\" is not valid; use a whole number of at least 1"),
            )
        })
    };
    let positive_u32 = |key: &str, v: &str| {
        positive(key, v).and_then(|n| {
            u32::try_from(n).map_err(|_| {
                error(
                    key,
                    format!("{key} = \"{v}\" is too large; use at most {}", u32::MAX),
                )
            })
        })
    };
    let required = |key: &str, example: &str| {
        error(
            key,
            format!("{key} is required on a root facility; add e.g. \"{key} = {example}\""),
        )
    };

    let rotate = match (own("rotate"), root) {
        (Some(v), _) => Schedule::parse(v).map_err(|e| error("rotate", format!("rotate = {e}")))?,
        (None, Some(root)) => root.rotate.clone(),
        (None, None) => return Err(required("rotate", "daily")),
    };
    let backup_count = match (own("backup_count"), root) {
        (Some(v), _) => positive_u32("backup_count", v)?,
        (None, Some(root)) => root.backup_count,
        (None, None) => return Err(required("backup_count", "14")),
    };
    // For the optional keys an empty value means "none here", which also
    // stops inheritance (e.g. `secret =` on a module of a signed app).
    let max_size = match own("max_size") {
        Some("") => None,
        Some(v) => Some(positive("max_size", v)?),
        None => root.and_then(|r| r.max_size),
    };
    let flush_every = match own("flush_every") {
        Some("") => 1,
        Some(v) => positive_u32("flush_every", v)?,
        None => root.map_or(1, |r| r.flush_every),
    };
    let file_per_host = match own("file_per_host") {
        Some("") => false,
        Some(v) => parse_bool(v).ok_or_else(|| {
            error(
                "file_per_host",
                format!("file_per_host = \"{v}\" is not a boolean; use yes or no"),
            )
        })?,
        None => root.is_some_and(|r| r.file_per_host),
    };
    let forward = match own("forward") {
        Some("") => false,
        Some(v) => parse_bool(v).ok_or_else(|| {
            error(
                "forward",
                format!("forward = \"{v}\" is not a boolean; use yes or no"),
            )
        })?,
        None => root.is_some_and(|r| r.forward),
    };
    let secret = match own("secret") {
        Some("") => None,
        Some(v) => Some(loghog_protocol::Key::new(v)),
        None => root.and_then(|r| r.secret.clone()),
    };
    let sync = match own("sync") {
        Some("") => SyncPolicy::Never,
        Some(v) => SyncPolicy::parse(v).ok_or_else(|| {
            error(
                "sync",
                format!(
                    "sync = \"{v}\" is not valid; use never, rotate, or a number of seconds \
                     from 1 to 86400 (e.g. \"sync = 5\")"
                ),
            )
        })?,
        None => root.map_or(SyncPolicy::Never, |r| r.sync),
    };
    let format = match own("format") {
        Some("") => LineFormat::default(),
        Some(v) => LineFormat::parse(v).ok_or_else(|| {
            error(
                "format",
                format!("format = \"{v}\" is not a line format; use loghog, rfc3164 or rfc5424"),
            )
        })?,
        None => root.map_or(LineFormat::default(), |r| r.format),
    };
    let min_severity = match own("min_severity") {
        Some("") => 7,
        Some(v) => severity_code(v).ok_or_else(|| {
            error(
                "min_severity",
                format!(
                    "min_severity = \"{v}\" is not a syslog severity; use one of {}",
                    SEVERITY_NAMES.join(", ")
                ),
            )
        })?,
        None => root.map_or(7, |r| r.min_severity),
    };
    // Routing keys belong to their section: a module does not inherit them.
    let list = |key: &str| -> Vec<&str> {
        section
            .get(key)
            .filter(|e| !e.from_default)
            .map(|e| {
                e.value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut syslog_tags: Vec<String> = Vec::new();
    for tag in list("syslog_tags") {
        if !syslog_tags.iter().any(|t| t == tag) {
            syslog_tags.push(tag.to_owned());
        }
    }
    let mut syslog_facilities = Vec::new();
    for name in list("syslog_facilities") {
        let code = facility_code(name).ok_or_else(|| {
            error(
                "syslog_facilities",
                format!("\"{name}\" is not a syslog facility; use names such as auth, authpriv, kern, mail, daemon, cron, user, local0-local7"),
            )
        })?;
        // `auth, security` name one facility twice: keep it once.
        if !syslog_facilities.contains(&code) {
            syslog_facilities.push(code);
        }
    }
    if rotate.is_size() && max_size.is_none() {
        return Err(error(
            "max_size",
            "rotate = size needs max_size; add e.g. \"max_size = 10485760\" (bytes)".to_owned(),
        ));
    }
    Ok(Facility {
        app_id: app_id.to_owned(),
        module: module.to_owned(),
        rotate,
        backup_count,
        max_size,
        flush_every,
        file_per_host,
        sync,
        secret,
        format,
        min_severity,
        syslog_tags,
        syslog_facilities,
        forward,
    })
}

/// `sync`: when a facility's live file is flushed to the disk with fsync.
/// Lines handed to the OS survive a crash of the daemon either way; only
/// a power cut or kernel crash loses what was not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Never by schedule (the OS writes back within ~30 s); the file is
    /// still synced when the daemon closes it. Today's behaviour.
    #[default]
    Never,
    /// Also before each rotation, so every backup is whole on disk.
    Rotate,
    /// At most this long after a line is written, and before rotation.
    Every(std::time::Duration),
}

impl SyncPolicy {
    fn parse(v: &str) -> Option<SyncPolicy> {
        match v.to_ascii_lowercase().as_str() {
            "never" | "no" => Some(SyncPolicy::Never),
            "rotate" => Some(SyncPolicy::Rotate),
            n => n
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .map(|n| SyncPolicy::Every(std::time::Duration::from_secs(n))),
        }
    }

    /// Whether a rotation fsyncs the file before renaming it.
    pub fn at_rotation(self) -> bool {
        self != SyncPolicy::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old daemon's example facilities.conf, comment markers removed.
    const OLD_EXAMPLE: &str = "\
[kitchen-sink-app:]
rotate = size ; available values are size, hourly, daily, weekly, monthly
backup_count = 4 ; How many backups to keep
max_size = 1024 ; (optional) max size of the file, if using rotate = size
flush_every = 1 ; (optional) defaults to 1. flush/fsync log files after this many writes
file_per_host = yes ; (optional) whether to combine hosts or use separate files
secret = my-big-secret ; (optional) if set, the client must sign messages with this secret

[kitchen-sink-app:web]
rotate = * * * * *
backup_count = 5
secret = my-big-secret
";

    fn parse(text: &str) -> FacilityDb {
        FacilityDb::parse(text, Path::new("/etc/loghogd/facilities.conf")).unwrap()
    }

    fn parse_err(text: &str) -> ConfigError {
        FacilityDb::parse(text, Path::new("/etc/loghogd/facilities.conf")).unwrap_err()
    }

    #[test]
    fn old_example_parses() {
        let db = parse(OLD_EXAMPLE);
        assert_eq!(db.len(), 2);
        let root = db.lookup("kitchen-sink-app", "").unwrap();
        assert_eq!(root.section_name(), "kitchen-sink-app");
        assert_eq!(root.file_stem(), "root");
        assert!(root.rotate.is_size());
        assert_eq!(root.backup_count, 4);
        assert_eq!(root.max_size, Some(1024));
        assert_eq!(root.flush_every, 1);
        assert!(root.file_per_host);
        assert_eq!(
            root.secret.as_ref().map(|k| k.secret()),
            Some("my-big-secret")
        );
        let web = db.lookup("kitchen-sink-app", "web").unwrap();
        assert_eq!(web.section_name(), "kitchen-sink-app:web");
        assert_eq!(web.file_stem(), "web");
        assert_eq!(web.rotate.describe(), "* * * * *");
        assert_eq!(web.backup_count, 5);
        // Inherited from the root.
        assert_eq!(web.max_size, Some(1024));
        assert!(web.file_per_host);
        assert_eq!(
            web.secret.as_ref().map(|k| k.secret()),
            Some("my-big-secret")
        );
    }

    #[test]
    fn the_shipped_examples_parse() {
        let db = parse(include_str!("../../etc/facilities.conf"));
        assert!(db.len() >= 5);
        let signed = db.lookup("signed-app", "x").unwrap();
        assert_eq!(
            signed.secret.as_ref().map(|k| k.secret()),
            Some("change-me;to-a-long-random-string")
        );
        // etc/dev/facilities.conf is for editing: `config::tests::the_dev_config_parses`
        // checks only that it parses.
    }

    #[test]
    fn section_names() {
        let table = [
            ("app", ("app", "")),
            ("app:", ("app", "")),
            ("app:root", ("app", "")),
            ("app:web", ("app", "web")),
            ("app:web.requests", ("app", "web.requests")),
            ("app:root.web.requests", ("app", "web.requests")),
            (" app : web ", ("app", "web")),
            ("my_app-2:a-b_c.d", ("my_app-2", "a-b_c.d")),
        ];
        for (name, (app, module)) in table {
            assert_eq!(
                split_section_name(name).unwrap(),
                (app.to_owned(), module.to_owned()),
                "{name}"
            );
        }
        for bad in [
            ":web",
            "a/b",
            "a\\b",
            "..",
            ".",
            "a b",
            "app:web..x",
            "app:.x",
            "app:x.",
            "app:x/y",
            "app:..",
            "a\u{1}b",
        ] {
            assert!(split_section_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookup_falls_back_towards_root() {
        let db = parse(
            "[app]\nrotate = daily\nbackup_count = 1\n\
             [app:web]\n[app:web.requests]\n",
        );
        let table = [
            ("web.requests.slow", "app:web.requests"),
            ("web.requests", "app:web.requests"),
            ("web.other", "app:web"),
            ("web", "app:web"),
            ("webx", "app"),
            ("db.query", "app"),
            ("", "app"),
        ];
        for (module, want) in table {
            assert_eq!(
                db.lookup("app", module).unwrap().section_name(),
                want,
                "{module}"
            );
        }
        assert_eq!(
            db.lookup("app", normalize_module("root.web"))
                .unwrap()
                .section_name(),
            "app:web"
        );
        assert_eq!(
            db.lookup("app", normalize_module("root"))
                .unwrap()
                .section_name(),
            "app"
        );
        assert!(db.lookup("other", "web").is_none());
    }

    #[test]
    fn modules_inherit_from_their_root() {
        let db = parse(
            "[app:web]\nflush_every = 3\n\
             [app]\nrotate = 0 3 * * *\nbackup_count = 9\nmax_size = 100\nflush_every = 2\n\
             file_per_host = yes\nsecret = s;1 ; comment\n\
             [app:api]\nrotate = hourly\nbackup_count = 2\nmax_size = 50\nfile_per_host = no\nsecret = other\n\
             [app:public]\nsecret =\nmax_size =\n",
        );
        let web = db.lookup("app", "web").unwrap();
        assert_eq!(web.rotate.describe(), "0 3 * * *");
        assert_eq!(web.backup_count, 9);
        assert_eq!(web.max_size, Some(100));
        assert_eq!(web.flush_every, 3);
        assert!(web.file_per_host);
        assert_eq!(web.secret.as_ref().map(|k| k.secret()), Some("s;1"));
        let api = db.lookup("app", "api").unwrap();
        assert_eq!(api.rotate.describe(), "hourly (0 * * * *)");
        assert_eq!(
            (api.backup_count, api.max_size, api.flush_every),
            (2, Some(50), 2)
        );
        assert!(!api.file_per_host);
        assert_eq!(api.secret.as_ref().map(|k| k.secret()), Some("other"));
        let public = db.lookup("app", "public").unwrap();
        assert!(public.secret.is_none());
        assert_eq!(public.max_size, None);
    }

    #[test]
    fn default_section_feeds_roots_not_over_them() {
        let db = parse(
            "[DEFAULT]\nbackup_count = 7\nrotate = daily\n\
             [a]\n[b]\nbackup_count = 3\n[b:web]\n",
        );
        assert_eq!(db.lookup("a", "").unwrap().backup_count, 7);
        assert_eq!(db.lookup("b", "").unwrap().backup_count, 3);
        // The module takes the root's 3, not [DEFAULT]'s 7.
        assert_eq!(db.lookup("b", "web").unwrap().backup_count, 3);
    }

    #[test]
    fn defaults_and_debug_hides_the_secret() {
        let db = parse("[app]\nrotate = daily\nbackup_count = 1\nsecret = hunter2\n");
        let f = db.lookup("app", "").unwrap();
        assert_eq!(
            (f.flush_every, f.file_per_host, f.max_size),
            (1, false, None)
        );
        let debug = format!("{f:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let db = parse("[app]\nrotate = daily\nbackup_count = 1\n");
        assert!(format!("{:?}", db.lookup("app", "").unwrap()).contains("secret: none"));
        assert!(!format!("{db:?}").contains("hunter2"));
    }

    #[test]
    fn empty_or_comment_only_file_is_refused() {
        // An editor mid-save, or a mistake: taking it would drop everything.
        for text in ["", "; nothing yet\n", "# a\n\n; b\n"] {
            let err = parse_err(text);
            assert_eq!(err.place, "file");
            assert!(
                err.problem.contains("add at least one [app] section"),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_warnings_with_the_nearest_key() {
        let db = parse("[app]\nrotate = daily\nbackup_count = 1\nmax_sise = 100\n");
        assert_eq!(db.warnings.len(), 1);
        let w = db.warnings[0].to_string();
        assert!(
            w.contains("[app] max_sise (line 4)") && w.contains("did you mean `max_size`?"),
            "{w}"
        );
    }

    #[test]
    fn iter_is_sorted_by_section_name() {
        let db = parse(
            "[zeta]\nrotate = daily\nbackup_count = 1\n[alpha:b]\n[alpha]\nrotate = daily\n\
             backup_count = 1\n[alpha:a.b]\n",
        );
        let names: Vec<String> = db.iter().map(|f| f.section_name()).collect();
        assert_eq!(names, ["alpha", "alpha:a.b", "alpha:b", "zeta"]);
    }

    #[test]
    fn every_error_names_file_place_and_fix() {
        let table = [
            ("[app]\nbackup_count = 1\n", "[app] rotate", "rotate is required on a root facility; add e.g."),
            ("[app]\nrotate = daily\n", "[app] backup_count", "backup_count is required"),
            (
                "[app]\nrotate = fortnightly\nbackup_count = 1\n",
                "[app] rotate (line 2)",
                "rotate = \"fortnightly\" is not a schedule; use hourly, daily, weekly, monthly, yearly, size or a five-field cron line like \"0 3 * * *\"",
            ),
            ("[app]\nrotate = 0 0 * * 9\nbackup_count = 1\n", "[app] rotate (line 2)", "day of week 9 is outside 0-7"),
            ("[app]\nrotate = daily\nbackup_count = 0\n", "[app] backup_count (line 3)", "at least 1"),
            ("[app]\nrotate = daily\nbackup_count = x\n", "[app] backup_count (line 3)", "at least 1"),
            ("[app]\nrotate = size\nbackup_count = 1\n", "[app] max_size", "rotate = size needs max_size"),
            ("[app]\nrotate = daily\nbackup_count = 1\nmax_size = 0\n", "[app] max_size (line 4)", "at least 1"),
            ("[app]\nrotate = daily\nbackup_count = 1\nflush_every = -2\n", "[app] flush_every (line 4)", "at least 1"),
            ("[app]\nrotate = daily\nbackup_count = 1\nfile_per_host = sometimes\n", "[app] file_per_host (line 4)", "use yes or no"),
            ("[app]\nrotate = daily\nbackup_count = 1\nforward = later\n", "[app] forward (line 4)", "forward = \"later\" is not a boolean; use yes or no"),
            ("[app:web]\nrotate = daily\nbackup_count = 1\n", "[app:web] (line 1)", "add [app] with rotate and backup_count"),
            ("[app]\nrotate = daily\nbackup_count = 1\n[app:]\n", "[app:] (line 4)", "same facility as [app] on line 1"),
            (
                "[app]\nrotate = daily\nbackup_count = 1\n[app:web]\n[app:root.web]\n",
                "[app:root.web] (line 5)",
                "same facility as [app:web] on line 4",
            ),
            ("[../etc]\nrotate = daily\nbackup_count = 1\n", "[../etc] (line 1)", "cannot be part of a file name"),
            ("[app:web..x]\n", "[app:web..x] (line 1)", "empty module segment"),
            (
                "[app]\nrotate = daily\nbackup_count = 1\n[app:web]\nrotate = size\n",
                "[app:web] max_size",
                "needs max_size",
            ),
            ("[app]\nrotate daily\n", "line 2", "is not a [section]"),
            ("[app]\nrotate = daily\nbackup_count = 1\nsync = always\n", "[app] sync (line 4)", "never, rotate, or a number of seconds"),
            ("[app]\nrotate = daily\nbackup_count = 1\nsync = 0\n", "[app] sync (line 4)", "from 1 to 86400"),
        ];
        for (text, place, fix) in table {
            let err = parse_err(text);
            assert_eq!(
                err.file,
                Path::new("/etc/loghogd/facilities.conf"),
                "{text}"
            );
            assert_eq!(err.place, place, "{text}");
            assert!(err.problem.contains(fix), "{text}: {}", err.problem);
        }
    }

    #[test]
    fn sync_policy_is_read_and_inherited() {
        let db = parse(
            "[app]\nrotate = daily\nbackup_count = 1\nsync = 5\n\
             [app:web]\n[app:api]\nsync = rotate\n[app:raw]\nsync = never\n\
             [plain]\nrotate = daily\nbackup_count = 1\n",
        );
        let sync = |app: &str, m: &str| db.lookup(app, m).unwrap().sync;
        assert_eq!(
            sync("app", ""),
            SyncPolicy::Every(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            sync("app", "web"),
            SyncPolicy::Every(std::time::Duration::from_secs(5))
        );
        assert_eq!(sync("app", "api"), SyncPolicy::Rotate);
        assert_eq!(sync("app", "raw"), SyncPolicy::Never);
        assert_eq!(sync("plain", ""), SyncPolicy::Never);
        assert!(SyncPolicy::Rotate.at_rotation() && !SyncPolicy::Never.at_rotation());
    }
}

/// The syslog keys of issue 13: parsing, inheritance and routing errors.
#[cfg(test)]
mod syslog_tests {
    use super::*;

    const BASE: &str = "[syslog]\nrotate = daily\nbackup_count = 3\n";

    fn parse(text: &str) -> Result<FacilityDb, ConfigError> {
        FacilityDb::parse(text, Path::new("/etc/loghogd/facilities.conf"))
    }

    #[test]
    fn format_and_severity_are_inherited_routing_keys_are_not() {
        let db = parse(&format!(
            "{BASE}format = rfc3164\nmin_severity = info\nsyslog_facilities = local0\n\
             [syslog:auth]\nsyslog_facilities = auth, security, authpriv\n"
        ))
        .unwrap();
        let auth = db.lookup("syslog", "auth").unwrap();
        assert_eq!(auth.format, LineFormat::Rfc3164);
        assert_eq!(auth.min_severity, 6);
        assert_eq!(auth.syslog_facilities, vec![4, 10]);
        let root = db.lookup("syslog", "").unwrap();
        assert_eq!(root.syslog_facilities, vec![16]);
        assert_eq!(
            db.lookup_syslog(None, 10).unwrap().section_name(),
            "syslog:auth"
        );
        assert_eq!(db.lookup_syslog(None, 16).unwrap().section_name(), "syslog");
        assert_eq!(
            db.lookup_syslog(Some("syslog"), 4).unwrap().section_name(),
            "syslog"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        for (text, place, fix) in [
            ("format = json\n", "format", "loghog, rfc3164 or rfc5424"),
            ("min_severity = loud\n", "min_severity", "warning"),
            ("syslog_facilities = kern, nope\n", "syslog_facilities", "local0-local7"),
            (
                "[a]\nrotate = daily\nbackup_count = 1\nsyslog_tags = x\n[b]\nrotate = daily\nbackup_count = 1\nsyslog_tags = x\n",
                "syslog_tags",
                "list it in one section",
            ),
            (
                "[syslog:kern]\nsyslog_facilities = kern\n[syslog:k2]\nsyslog_facilities = kern\n",
                "syslog_facilities",
                "route it to one section",
            ),
            (
                "[a]\nrotate = daily\nbackup_count = 1\nsecret = s\nsyslog_tags = a\n",
                "syslog_tags",
                "no signature",
            ),
        ] {
            let e = parse(&format!("{BASE}{text}")).unwrap_err().to_string();
            assert!(e.contains("/etc/loghogd/facilities.conf"), "{e}");
            assert!(e.contains(place), "{e}");
            assert!(e.contains(fix), "{e}");
        }
    }

    #[test]
    fn forward_is_inherited_like_the_other_keys() {
        let db = parse(
            "[app]\nrotate = daily\nbackup_count = 1\nforward = yes\n\
             [app:web]\n[app:api]\nforward = no\n[app:stop]\nforward =\n\
             [other]\nrotate = daily\nbackup_count = 1\n",
        )
        .unwrap();
        let forward = |app: &str, module: &str| db.lookup(app, module).unwrap().forward;
        assert!(forward("app", ""));
        assert!(forward("app", "web"));
        assert!(forward("app", "web.deeper"));
        assert!(!forward("app", "api"));
        assert!(!forward("app", "stop"));
        assert!(!forward("other", ""));
    }
}
