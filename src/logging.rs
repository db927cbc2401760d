//! The daemon's own log: tracing events to `[log] filename` and, in the
//! foreground, to stderr, at `[log] level`.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};

/// Installs the global subscriber.
///
/// # Errors
/// The log file cannot be created or opened.
pub fn init(level: tracing::Level, file: Option<&Path>, to_stderr: bool) -> std::io::Result<()> {
    let file_writer = match file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .open(path)?;
            Some(Mutex::new(f))
        }
        None => None,
    };
    let writer = match (file_writer, to_stderr) {
        (Some(f), true) => BoxMakeWriter::new(std::io::stderr.and(f)),
        (Some(f), false) => BoxMakeWriter::new(f),
        (None, _) => BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = to_stderr && file.is_none() && std::io::stderr().is_terminal();
    // A second init (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
    Ok(())
}
