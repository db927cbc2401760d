//! Rotation schedules (SPEC §5). STUB: the config helper replaces it.

/// When a file rotates.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Only when `max_size` is reached.
    Size,
    /// A five-field cron schedule (named schedules are cron lines too).
    Cron(String),
}

impl Schedule {
    /// STUB.
    pub fn next_after<Tz: chrono::TimeZone>(
        &self,
        _after: &chrono::DateTime<Tz>,
    ) -> Option<chrono::DateTime<Tz>> {
        None
    }
    /// STUB.
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}
