//! Rotation schedules (SPEC §5). STUB: the config helper replaces it.

/// When a file rotates.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Only when `max_size` is reached.
    Size,
    /// A five-field cron schedule (named schedules are cron lines too).
    Cron(String),
}
