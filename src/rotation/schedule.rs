//! Rotation schedules (SPEC §5): the `rotate` values of facilities.conf and
//! `[log] when` of loghogd.conf, parsed into a [`Schedule`].
//!
//! Cron lines are checked field by field here (for clear messages and strict
//! Vixie semantics) and then evaluated by `croner`; [`Schedule::next_after`]
//! is a pure function of a time in any `chrono` time zone.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, TimeZone};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The hint every "not a schedule" message ends with.
const SCHEDULE_HINT: &str = "use hourly, daily, weekly, monthly, yearly, size \
     or a five-field cron line like \"0 3 * * *\"";

/// The named schedules and the cron line each stands for (SPEC §5).
const NAMED: &[(&str, &str, &str)] = &[
    // (name as written, canonical name, cron line)
    ("hourly", "hourly", "0 * * * *"),
    ("daily", "daily", "0 0 * * *"),
    ("midnight", "daily", "0 0 * * *"),
    ("weekly", "weekly", "0 0 * * 1"),
    ("monthly", "monthly", "0 0 1 * *"),
    ("yearly", "yearly", "0 0 1 1 *"),
    ("annually", "yearly", "0 0 1 1 *"),
];

/// Python's `TimedRotatingFileHandler` weekday codes: `W0` is Monday.
const PY_WEEKDAYS: [(&str, &str); 7] = [
    ("W0", "0 0 * * 1"),
    ("W1", "0 0 * * 2"),
    ("W2", "0 0 * * 3"),
    ("W3", "0 0 * * 4"),
    ("W4", "0 0 * * 5"),
    ("W5", "0 0 * * 6"),
    ("W6", "0 0 * * 0"),
];

/// When a file rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Only when `max_size` is reached.
    Size,
    /// A five-field cron schedule (named schedules are cron lines too).
    Cron(CronSchedule),
}

/// A parsed five-field cron line, with the text it came from.
///
/// Equality compares the cron line, so `daily` equals `midnight` equals
/// `0 0 * * *` (what a reload diff wants to know).
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// `daily`, `weekly`, `W3`, ... when the schedule was given by name.
    name: Option<&'static str>,
    /// The five fields as written (single-spaced); for a name, its expansion.
    line: String,
    /// What `croner` evaluates. Built from `line` after our own checks, with
    /// names turned into numbers and Vixie's day rule made explicit. Shared:
    /// it is large, and schedules are cloned into every facility.
    cron: Arc<Cron>,
}

/// Why a schedule could not be parsed. The message ends with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Neither a known name nor something shaped like a cron line.
    #[error("\"{text}\" is not a schedule; {SCHEDULE_HINT}")]
    Unknown {
        /// The value as written.
        text: String,
    },
    /// Not a value `[log] when` knows (it takes Python's codes too).
    #[error(
        "\"{text}\" is not a schedule; use midnight, H, D, W0-W6 (W0 = Monday), \
         hourly, daily, weekly, monthly, yearly or a five-field cron line like \"0 3 * * *\""
    )]
    UnknownLogWhen {
        /// The value as written.
        text: String,
    },
    /// Shaped like a cron line, but wrong.
    #[error(
        "\"{text}\" is not a valid cron line: {reason}; write five fields \
         (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\""
    )]
    Cron {
        /// The value as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

// === impl Schedule ===

impl Schedule {
    /// Parses a `rotate` value: `hourly`, `daily` (= `midnight`), `weekly`,
    /// `monthly`, `yearly` (= `annually`), `size` (names are
    /// case-insensitive), or a five-field cron line.
    ///
    /// # Errors
    /// A [`ScheduleError`] whose message says what is wrong and what to write.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("size") {
            return Ok(Schedule::Size);
        }
        if let Some(&(_, name, line)) = NAMED
            .iter()
            .find(|(alias, _, _)| trimmed.eq_ignore_ascii_case(alias))
        {
            return CronSchedule::build(Some(name), line, text).map(Schedule::Cron);
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if trimmed.starts_with('@') {
            return Err(ScheduleError::Cron {
                text: text.to_owned(),
                reason: format!(
                    "\"{trimmed}\" is not supported (there is no @reboot, and the \
                     other @names are written without @: hourly, daily, ...)"
                ),
            });
        }
        if fields.len() <= 1 {
            return Err(ScheduleError::Unknown {
                text: text.to_owned(),
            });
        }
        CronSchedule::build(None, &fields.join(" "), text).map(Schedule::Cron)
    }

    /// Parses `[log] when` of loghogd.conf: everything [`Schedule::parse`]
    /// takes plus Python `TimedRotatingFileHandler`'s `H`, `D`, `midnight`
    /// and `W0`-`W6` (`W0` is Monday), case-insensitive.
    ///
    /// Python's `D` meant "every 24 hours from start-up"; here it is daily
    /// at midnight, which is what the old daemon's users got in practice.
    ///
    /// # Errors
    /// A [`ScheduleError`] whose message says what is wrong and what to write.
    pub fn parse_log_when(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("h") {
            return Schedule::parse("hourly");
        }
        if trimmed.eq_ignore_ascii_case("d") {
            return Schedule::parse("daily");
        }
        if let Some(&(name, line)) = PY_WEEKDAYS
            .iter()
            .find(|(name, _)| trimmed.eq_ignore_ascii_case(name))
        {
            return CronSchedule::build(Some(name), line, text).map(Schedule::Cron);
        }
        Schedule::parse(text).map_err(|err| match err {
            ScheduleError::Unknown { text } => ScheduleError::UnknownLogWhen { text },
            other => other,
        })
    }

    /// The first scheduled time strictly after `after`, in `after`'s time
    /// zone; `None` for [`Schedule::Size`] (and for a cron line with no
    /// time left before the year 5000).
    ///
    /// DST: a wall clock time lost to spring-forward fires at the first real
    /// instant after the gap, and a fixed time in an hour repeated at
    /// fall-back fires once (at its first occurrence). Schedules with a
    /// wildcard or stepped hour/minute fire in each real hour, so `hourly`
    /// fires twice across a repeated hour, once per real hour.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Schedule::Size => None,
            Schedule::Cron(c) => c.next_after(after),
        }
    }

    /// A short human form: `daily (0 0 * * *)`, `size`, `*/5 * * * *`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Size => "size".to_owned(),
            Schedule::Cron(c) => match c.name {
                Some(name) => format!("{name} ({})", c.line),
                None => c.line.clone(),
            },
        }
    }

    /// `true` for [`Schedule::Size`]: rotation happens only at `max_size`.
    pub fn is_size(&self) -> bool {
        matches!(self, Schedule::Size)
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

// === impl CronSchedule ===

impl CronSchedule {
    /// Checks `line` (already split into single-spaced fields or a known
    /// expansion) and builds the `croner` evaluator. `original` is the text
    /// as the user wrote it, for messages.
    fn build(
        name: Option<&'static str>,
        line: &str,
        original: &str,
    ) -> Result<CronSchedule, ScheduleError> {
        let bad = |reason: String| ScheduleError::Cron {
            text: original.trim().to_owned(),
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(bad(format!(
                "it has {} fields, and a cron line has exactly five (no seconds \
                 or year field)",
                fields.len()
            )));
        }
        let mut numeric = Vec::with_capacity(5);
        for (spec, field) in FIELDS.iter().zip(&fields) {
            numeric.push(spec.normalize(field).map_err(&bad)?);
        }
        // Vixie cron ORs the two day fields only when neither starts with
        // `*` (its DOM_STAR/DOW_STAR flags test the first character, so
        // `*/2` counts as unrestricted and the fields are ANDed). croner
        // ORs unless a field is exactly `*`; its `+` prefix on the weekday
        // field asks for AND, which gives Vixie's answer in that case.
        let (dom, dow) = (&numeric[2], &numeric[4]);
        if dom != "*" && dow != "*" && (dom.starts_with('*') || dow.starts_with('*')) {
            numeric[4] = format!("+{dow}");
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(&numeric.join(" "))
            .map_err(|err| bad(err.to_string()))?;
        let schedule = CronSchedule {
            name,
            line: line.to_owned(),
            cron: Arc::new(cron),
        };
        // A line such as `0 0 30 2 *` passes every field check and never
        // fires; say so now rather than leave a file that never rotates.
        let probe = chrono::Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0);
        if let chrono::LocalResult::Single(probe) = probe {
            if schedule.next_after(&probe).is_none() {
                return Err(bad("that day never comes".to_owned()));
            }
        }
        Ok(schedule)
    }

    /// The cron line: five fields as written, or a name's expansion.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The name the schedule was given by (`daily`, `W3`, ...), if any.
    pub fn name(&self) -> Option<&'static str> {
        self.name
    }

    fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let next = self.cron.find_next_occurrence(after, false).ok()?;
        // croner works in whole seconds; guard the "strictly after" promise
        // in case a sub-second `after` ever lands on the answer itself.
        if next > *after {
            Some(next)
        } else {
            let later = after.clone() + chrono::TimeDelta::seconds(1);
            self.cron.find_next_occurrence(&later, false).ok()
        }
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.line == other.line
    }
}

impl Eq for CronSchedule {}

// === field checks ===

/// One cron field: its name for messages, its range, and the names it takes.
struct FieldSpec {
    what: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names; `names[i]` stands for `min_name + i`.
    names: &'static [&'static str],
    min_name: u32,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        what: "minute",
        min: 0,
        max: 59,
        names: &[],
        min_name: 0,
    },
    FieldSpec {
        what: "hour",
        min: 0,
        max: 23,
        names: &[],
        min_name: 0,
    },
    FieldSpec {
        what: "day of month",
        min: 1,
        max: 31,
        names: &[],
        min_name: 0,
    },
    FieldSpec {
        what: "month",
        min: 1,
        max: 12,
        names: MONTHS,
        min_name: 1,
    },
    FieldSpec {
        what: "day of week",
        min: 0,
        max: 7,
        names: WEEKDAYS,
        min_name: 0,
    },
];

impl FieldSpec {
    /// Checks one field and returns it with names replaced by numbers.
    /// Accepts Vixie's forms only: `*`, `*/n`, `a`, `a-b`, `a-b/n` and
    /// comma lists of them (none of croner's `L`, `W`, `#`, `?`, `+`).
    fn normalize(&self, field: &str) -> Result<String, String> {
        let mut out = String::with_capacity(field.len());
        for (i, item) in field.split(',').enumerate() {
            if i > 0 {
                out.push(',');
            }
            if item.is_empty() {
                return Err(format!(
                    "the {} field \"{field}\" has an empty list item",
                    self.what
                ));
            }
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            if range == "*" {
                out.push('*');
            } else if let Some((lo, hi)) = range.split_once('-') {
                let lo = self.value(lo, false)?;
                let hi = self.value(hi, true)?;
                if lo > hi {
                    return Err(format!(
                        "the {} range \"{range}\" runs backwards; write it low-high",
                        self.what
                    ));
                }
                let _ = write!(out, "{lo}-{hi}");
            } else {
                if step.is_some() {
                    return Err(format!(
                        "the {} item \"{item}\" steps from a single value; write \
                         a range like \"{range}-{}/{}\" or \"*/{}\"",
                        self.what,
                        self.max,
                        step.unwrap_or_default(),
                        step.unwrap_or_default()
                    ));
                }
                let _ = write!(out, "{}", self.value(range, false)?);
            }
            if let Some(step) = step {
                match step.parse::<u32>() {
                    Ok(n) if n >= 1 && n <= self.max.max(1) => {
                        let _ = write!(out, "/{n}");
                    }
                    _ => {
                        return Err(format!(
                            "the {} step \"/{step}\" must be a number from 1 to {}",
                            self.what,
                            self.max.max(1)
                        ))
                    }
                }
            }
        }
        Ok(out)
    }

    /// One value: a number in range, or (month, weekday) a three-letter
    /// name. `sun` at the end of a range is 7, so `sat-sun` works.
    fn value(&self, text: &str, range_end: bool) -> Result<u32, String> {
        if let Ok(n) = text.parse::<u32>() {
            if n < self.min || n > self.max {
                return Err(format!(
                    "{} {n} is outside {}-{}",
                    self.what, self.min, self.max
                ));
            }
            return Ok(n);
        }
        let lower = text.to_ascii_lowercase();
        if let Some(i) = self.names.iter().position(|name| *name == lower) {
            let n = self.min_name + i as u32;
            // Sunday closing a weekday range is 7, as in `fri-sun`.
            return Ok(if range_end && n == 0 && self.max == 7 {
                7
            } else {
                n
            });
        }
        if self.names.is_empty() {
            Err(format!(
                "\"{text}\" is not a {} (a number from {} to {})",
                self.what, self.min, self.max
            ))
        } else {
            Err(format!(
                "\"{text}\" is not a {} (a number from {} to {} or one of {})",
                self.what,
                self.min,
                self.max,
                self.names.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Utc, Weekday};
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::Tz;

    fn cron(s: &str) -> Schedule {
        Schedule::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// The local wall-clock time `y-mo-d h:mi` in `tz` (earliest if ambiguous).
    fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Tz> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap()
    }

    /// The first `n` firings strictly after `start`.
    fn firings<Tz: TimeZone>(s: &Schedule, start: DateTime<Tz>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::new();
        let mut t = start;
        for _ in 0..n {
            t = s.next_after(&t).unwrap();
            out.push(t.clone());
        }
        out
    }

    #[test]
    fn names_expand_to_spec_lines() {
        let table = [
            ("hourly", "hourly (0 * * * *)"),
            ("daily", "daily (0 0 * * *)"),
            ("midnight", "daily (0 0 * * *)"),
            ("DAILY", "daily (0 0 * * *)"),
            ("weekly", "weekly (0 0 * * 1)"),
            ("monthly", "monthly (0 0 1 * *)"),
            ("yearly", "yearly (0 0 1 1 *)"),
            ("annually", "yearly (0 0 1 1 *)"),
            ("size", "size"),
            ("Size", "size"),
            ("*/5 * * * *", "*/5 * * * *"),
            ("  0   3 * *   mon-fri ", "0 3 * * mon-fri"),
        ];
        for (input, want) in table {
            assert_eq!(cron(input).describe(), want, "{input}");
        }
        assert_eq!(cron("daily"), cron("midnight"));
        assert_eq!(cron("daily"), cron("0 0 * * *"));
        assert_ne!(cron("daily"), cron("hourly"));
        assert!(cron("size").next_after(&utc(2024, 1, 1, 0, 0)).is_none());
    }

    #[test]
    fn log_when_accepts_python_codes() {
        let table = [
            ("H", "hourly (0 * * * *)"),
            ("h", "hourly (0 * * * *)"),
            ("D", "daily (0 0 * * *)"),
            ("midnight", "daily (0 0 * * *)"),
            ("MIDNIGHT", "daily (0 0 * * *)"),
            ("W0", "W0 (0 0 * * 1)"),
            ("w4", "W4 (0 0 * * 5)"),
            ("W6", "W6 (0 0 * * 0)"),
            ("weekly", "weekly (0 0 * * 1)"),
            ("0 4 * * *", "0 4 * * *"),
        ];
        for (input, want) in table {
            assert_eq!(
                Schedule::parse_log_when(input).unwrap().describe(),
                want,
                "{input}"
            );
        }
        // W0 is Monday, W6 Sunday.
        let s = Schedule::parse_log_when("W0").unwrap();
        let t = s.next_after(&utc(2024, 5, 1, 12, 0)).unwrap(); // a Wednesday
        assert_eq!(t, utc(2024, 5, 6, 0, 0));
        assert_eq!(t.weekday(), Weekday::Mon);
        assert!(Schedule::parse_log_when("W7").is_err());
        assert!(Schedule::parse_log_when("S").is_err());
        assert!(Schedule::parse("H").is_err(), "H is only for [log] when");
    }

    #[test]
    fn weekday_numbering_is_vixie() {
        // 2024-05-05 is a Sunday.
        let sunday = utc(2024, 5, 4, 12, 0); // Saturday noon → next firing Sunday
        let table: [(&str, &[Weekday]); 8] = [
            ("0 0 * * 0", &[Weekday::Sun, Weekday::Sun]),
            ("0 0 * * 7", &[Weekday::Sun, Weekday::Sun]),
            ("0 0 * * sun", &[Weekday::Sun, Weekday::Sun]),
            (
                "0 0 * * 1-5",
                &[
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                    Weekday::Mon,
                ],
            ),
            (
                "0 0 * * mon-fri",
                &[
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                    Weekday::Mon,
                ],
            ),
            (
                "0 0 * * 5-7",
                &[Weekday::Sun, Weekday::Fri, Weekday::Sat, Weekday::Sun],
            ),
            (
                "0 0 * * fri-sun",
                &[Weekday::Sun, Weekday::Fri, Weekday::Sat, Weekday::Sun],
            ),
            ("weekly", &[Weekday::Mon, Weekday::Mon]),
        ];
        for (line, want) in table {
            let got: Vec<Weekday> = firings(&cron(line), sunday, want.len())
                .iter()
                .map(|t| t.weekday())
                .collect();
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn day_fields_or_when_both_restricted() {
        // 2024-09-13 is a Friday; 2024-12-13 too. "0 0 13 * 5" fires on every
        // 13th AND on every Friday.
        let s = cron("0 0 13 * 5");
        let days: Vec<u32> = firings(&s, utc(2024, 9, 1, 0, 0), 6)
            .iter()
            .map(|t| t.day())
            .collect();
        assert_eq!(days, [6, 13, 20, 27, 4, 11]); // Fridays in Sep/Oct, 13th is one
        let days: Vec<(u32, u32)> = firings(&s, utc(2024, 10, 1, 0, 0), 4)
            .iter()
            .map(|t| (t.month(), t.day()))
            .collect();
        assert_eq!(days, [(10, 4), (10, 11), (10, 13), (10, 18)]); // the 13th is a Sunday

        // One field `*`: only the other one counts.
        let s = cron("0 0 13 * *");
        assert_eq!(
            s.next_after(&utc(2024, 10, 1, 0, 0)).unwrap(),
            utc(2024, 10, 13, 0, 0)
        );
        let s = cron("0 0 * * 5");
        assert_eq!(
            s.next_after(&utc(2024, 10, 1, 0, 0)).unwrap(),
            utc(2024, 10, 4, 0, 0)
        );

        // Vixie: a field starting with `*` (like `*/2`) counts as unrestricted,
        // so the fields are ANDed: odd days that are Mondays.
        let s = cron("0 0 */2 * 1");
        let days: Vec<u32> = firings(&s, utc(2024, 7, 1, 0, 0), 3)
            .iter()
            .map(|t| t.day())
            .collect();
        assert_eq!(days, [15, 29, 5]); // 1 Jul is a Monday (excluded: strictly after)
    }

    #[test]
    fn names_steps_lists_ranges() {
        let table = [
            // (line, start, first three firings)
            (
                "*/15 * * * *",
                utc(2024, 1, 1, 10, 7),
                [(10, 15), (10, 30), (10, 45)],
            ),
            (
                "0 */6 * * *",
                utc(2024, 1, 1, 1, 0),
                [(6, 0), (12, 0), (18, 0)],
            ),
            (
                "5,35 9-10 * * *",
                utc(2024, 1, 1, 0, 0),
                [(9, 5), (9, 35), (10, 5)],
            ),
            (
                "0 8-18/5 * * *",
                utc(2024, 1, 1, 0, 0),
                [(8, 0), (13, 0), (18, 0)],
            ),
        ];
        for (line, start, want) in table {
            let got: Vec<(u32, u32)> = firings(&cron(line), start, 3)
                .iter()
                .map(|t| (chrono::Timelike::hour(t), chrono::Timelike::minute(t)))
                .collect();
            assert_eq!(got, want, "{line}");
        }
        let s = cron("0 0 1 jan,JUL *");
        let got: Vec<u32> = firings(&s, utc(2024, 2, 1, 0, 0), 3)
            .iter()
            .map(|t| t.month())
            .collect();
        assert_eq!(got, [7, 1, 7]);
        let s = cron("0 0 1 mar-may *");
        let got: Vec<u32> = firings(&s, utc(2024, 1, 1, 0, 0), 4)
            .iter()
            .map(|t| t.month())
            .collect();
        assert_eq!(got, [3, 4, 5, 3]);
        // Leap day: fires every four years.
        let s = cron("0 0 29 2 *");
        assert_eq!(
            s.next_after(&utc(2024, 3, 1, 0, 0)).unwrap(),
            utc(2028, 2, 29, 0, 0)
        );
    }

    #[test]
    fn next_after_is_strict() {
        let s = cron("daily");
        let midnight = utc(2024, 1, 2, 0, 0);
        assert_eq!(s.next_after(&midnight).unwrap(), utc(2024, 1, 3, 0, 0));
        let just_before = midnight - chrono::TimeDelta::milliseconds(1);
        assert_eq!(s.next_after(&just_before).unwrap(), midnight);
        let just_after = midnight + chrono::TimeDelta::milliseconds(1);
        assert_eq!(s.next_after(&just_after).unwrap(), utc(2024, 1, 3, 0, 0));
    }

    #[test]
    fn invalid_lines_are_rejected_with_the_fix() {
        let table = [
            ("fortnightly", "is not a schedule; use hourly, daily"),
            ("", "is not a schedule"),
            ("0 0 * *", "it has 4 fields"),
            ("0 0 0 * * *", "it has 6 fields"),
            ("0 0 0 * * * 2024", "it has 7 fields"),
            ("@reboot", "no @reboot"),
            ("@daily", "written without @"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("0 24 * * *", "hour 24 is outside 0-23"),
            ("0 0 0 * *", "day of month 0 is outside 1-31"),
            ("0 0 32 * *", "day of month 32 is outside 1-31"),
            ("0 0 * 13 *", "month 13 is outside 1-12"),
            ("0 0 * * 8", "day of week 8 is outside 0-7"),
            ("0 0 * * funday", "\"funday\" is not a day of week"),
            ("0 0 mon * *", "\"mon\" is not a day of month"),
            ("0 0 * * 5-1", "runs backwards"),
            ("*/0 * * * *", "step \"/0\" must be a number"),
            ("5/5 * * * *", "steps from a single value"),
            ("0 0 L * *", "\"L\" is not a day of month"),
            ("0 0 * * 5#2", "\"5#2\" is not a day of week"),
            ("0 0 1,,2 * *", "empty list item"),
            ("0 0 30 2 *", "that day never comes"),
        ];
        for (line, want) in table {
            let err = Schedule::parse(line).expect_err(line).to_string();
            assert!(err.contains(want), "{line}: {err}");
            assert!(
                err.contains("e.g. \"0 3 * * *\"") || err.contains("like \"0 3 * * *\""),
                "{err}"
            );
        }
    }

    /// Daily firings across DST in both directions: exactly one per local day,
    /// always at local midnight.
    #[test]
    fn daily_is_once_per_day_across_dst() {
        for tz in [New_York, Berlin] {
            for (mo, start_day) in [(3, 5), (10, 22), (11, 1)] {
                let start = local(tz, 2024, mo, start_day, 12, 0);
                let fired = firings(&cron("daily"), start, 14);
                for (i, t) in fired.iter().enumerate() {
                    let want = start.date_naive() + chrono::Days::new(i as u64 + 1);
                    assert_eq!(t.date_naive(), want, "{tz} {t}");
                    assert_eq!(t.naive_local().time(), chrono::NaiveTime::MIN, "{tz} {t}");
                }
            }
        }
    }

    /// A wall-clock time lost to spring-forward fires once, at the first
    /// instant after the gap; one repeated at fall-back fires once, at its
    /// first occurrence.
    #[test]
    fn fixed_times_inside_dst_changes() {
        // (tz, line, start (local), expected firings (local, with offset hours))
        struct Case {
            tz: Tz,
            line: &'static str,
            start: (u32, u32, u32, u32),
            want: &'static [&'static str],
        }
        let cases = [
            // New York springs forward 2024-03-10 02:00 → 03:00.
            Case {
                tz: New_York,
                line: "30 2 * * *",
                start: (3, 9, 12, 0),
                want: &["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"],
            },
            // ... and falls back 2024-11-03 02:00 → 01:00.
            Case {
                tz: New_York,
                line: "30 1 * * *",
                start: (11, 2, 12, 0),
                want: &["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"],
            },
            // Berlin springs forward 2024-03-31 02:00 → 03:00.
            Case {
                tz: Berlin,
                line: "15 2 * * *",
                start: (3, 30, 12, 0),
                want: &["2024-03-31T03:00:00+02:00", "2024-04-01T02:15:00+02:00"],
            },
            // ... and falls back 2024-10-27 03:00 → 02:00.
            Case {
                tz: Berlin,
                line: "15 2 * * *",
                start: (10, 26, 12, 0),
                want: &["2024-10-27T02:15:00+02:00", "2024-10-28T02:15:00+01:00"],
            },
            // Hourly: each real hour once; the repeated hour is two real hours.
            Case {
                tz: New_York,
                line: "hourly",
                start: (11, 3, 0, 30),
                want: &[
                    "2024-11-03T01:00:00-04:00",
                    "2024-11-03T01:00:00-05:00",
                    "2024-11-03T02:00:00-05:00",
                ],
            },
            Case {
                tz: New_York,
                line: "hourly",
                start: (3, 10, 0, 30),
                want: &["2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00"],
            },
            Case {
                tz: Berlin,
                line: "*/30 * * * *",
                start: (10, 27, 1, 45),
                want: &[
                    "2024-10-27T02:00:00+02:00",
                    "2024-10-27T02:30:00+02:00",
                    "2024-10-27T02:00:00+01:00",
                    "2024-10-27T02:30:00+01:00",
                    "2024-10-27T03:00:00+01:00",
                ],
            },
        ];
        for case in cases {
            let (mo, d, h, mi) = case.start;
            let start = local(case.tz, 2024, mo, d, h, mi);
            let got: Vec<String> = firings(&cron(case.line), start, case.want.len())
                .iter()
                .map(|t| t.to_rfc3339())
                .collect();
            assert_eq!(got, case.want, "{} {}", case.tz, case.line);
        }
    }

    /// Starting inside the repeated hour (on either half) never fires a fixed
    /// time twice and never goes backwards.
    #[test]
    fn fall_back_start_inside_the_repeated_hour() {
        let s = cron("30 1 * * *");
        // 01:10 EST (the second pass): 01:30 EDT has already happened.
        let later_half = New_York
            .with_ymd_and_hms(2024, 11, 3, 1, 10, 0)
            .latest()
            .unwrap();
        assert_eq!(
            s.next_after(&later_half).unwrap().to_rfc3339(),
            "2024-11-04T01:30:00-05:00"
        );
        // 01:10 EDT (the first pass): 01:30 EDT is ahead.
        let earlier_half = New_York
            .with_ymd_and_hms(2024, 11, 3, 1, 10, 0)
            .earliest()
            .unwrap();
        assert_eq!(
            s.next_after(&earlier_half).unwrap().to_rfc3339(),
            "2024-11-03T01:30:00-04:00"
        );
        // 01:45 EDT: 01:30 is behind; the repeat at 01:30 EST does not fire.
        let after = New_York
            .with_ymd_and_hms(2024, 11, 3, 1, 45, 0)
            .earliest()
            .unwrap();
        assert_eq!(
            s.next_after(&after).unwrap().to_rfc3339(),
            "2024-11-04T01:30:00-05:00"
        );
    }

    /// A zone where midnight itself is skipped (Havana springs forward at
    /// 00:00): the daily rotation happens at 01:00 that day, once.
    #[test]
    fn midnight_lost_to_spring_forward() {
        let tz: Tz = "America/Havana".parse().unwrap();
        let start = tz.with_ymd_and_hms(2024, 3, 9, 12, 0, 0).single().unwrap();
        let got: Vec<String> = firings(&cron("daily"), start, 2)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(
            got,
            ["2024-03-10T01:00:00-04:00", "2024-03-11T00:00:00-04:00"]
        );
        // Sanity: that midnight really does not exist.
        let naive = NaiveDate::from_ymd_opt(2024, 3, 10)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert!(tz.from_local_datetime(&naive).single().is_none());
    }
}
