//! The agent's state file (`--state PATH`): per followed path, the files
//! being read (device + inode), how far each was acknowledged, and a
//! fingerprint of its head, so a restart resumes where the last
//! acknowledged batch ended.
//!
//! Saved after every acknowledged batch as a whole new file: written to
//! `PATH.tmp`, fsynced, renamed over `PATH` (and the directory fsynced when
//! asked), so a crash leaves either the old or the new state, never half of
//! one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The version written into the file; a file of another version is refused
/// rather than guessed at.
const STATE_VERSION: u32 = 1;

/// Everything in the state file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// One entry per followed path.
    pub files: Vec<PathState>,
}

/// What is known about one followed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathState {
    /// The path as it was given to the agent.
    pub path: PathBuf,
    /// The files read for this path, oldest first: a rotated file still
    /// being drained, then the current one.
    pub sources: Vec<SourceState>,
}

/// Position in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// Device of the file (with `ino`, its identity across renames).
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Bytes acknowledged: everything before this offset was flushed to
    /// the daemon; reading resumes here.
    pub offset: u64,
    /// How many bytes of the file's head `head_hash` covers.
    pub head_len: u64,
    /// FNV-1a of the first `head_len` bytes: tells a truncated-and-rewritten
    /// file, or a new file that reuses the inode, from the one we read.
    pub head_hash: u64,
    /// The W3C `#Fields:` in force at `offset` (for `--parse w3c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w3c_fields: Option<Vec<String>>,
}

/// Why the state file could not be read or written.
#[derive(Debug)]
pub struct StateError {
    /// What was being done, naming the file.
    pub context: String,
    /// The underlying error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Wraps an error with what was done to which file.
fn ctx<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: &str,
    path: &Path,
) -> impl FnOnce(E) -> StateError {
    let context = format!("{what} {}", path.display());
    move |e| StateError {
        context,
        source: e.into(),
    }
}

// === impl State ===

impl State {
    /// Reads the state file; a missing file is the empty state (first run).
    ///
    /// # Errors
    /// An unreadable file, bad JSON or another version. The agent refuses to
    /// start then: starting over could send whole files a second time.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(ctx("cannot read state file", path)(e)),
        };
        let state: State =
            serde_json::from_slice(&text).map_err(ctx("bad JSON in state file", path))?;
        if state.version != STATE_VERSION {
            return Err(ctx("unsupported state file", path)(format!(
                "version {} (this agent writes {STATE_VERSION})",
                state.version
            )));
        }
        Ok(state)
    }

    /// Replaces the state file atomically; durably once `sync_dir` also
    /// syncs the directory that holds the rename.
    ///
    /// # Errors
    /// Any failure to create, write, sync or rename the file.
    pub fn save(&self, path: &Path, sync_dir: bool) -> Result<(), StateError> {
        let mut state = self.clone();
        state.version = STATE_VERSION;
        let mut text = serde_json::to_vec(&state).map_err(ctx("cannot encode state", path))?;
        text.push(b'\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(ctx("cannot create state file", &tmp))?;
        file.write_all(&text)
            .map_err(ctx("cannot write state file", &tmp))?;
        file.sync_all()
            .map_err(ctx("cannot sync state file", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(ctx("cannot rename state file into", path))?;
        // The rename is durable only once the directory is synced.
        if !sync_dir {
            return Ok(());
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            d.sync_all()
                .map_err(ctx("cannot sync the directory of", path))?;
        }
        Ok(())
    }

    /// The entry for `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&PathState> {
        self.files.iter().find(|p| p.path == path)
    }
}

/// FNV-1a, 64 bit: a fingerprint, not a defence against anyone.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::load(&dir.path().join("none")).unwrap();
        assert!(st.files.is_empty());
    }

    #[test]
    fn save_load_round_trip_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.state");
        let st = State {
            version: 0,
            files: vec![PathState {
                path: "/var/log/nginx/access.log".into(),
                sources: vec![SourceState {
                    dev: 1,
                    ino: 2,
                    offset: 3,
                    head_len: 4,
                    head_hash: 5,
                    w3c_fields: Some(vec!["date".into()]),
                }],
            }],
        };
        st.save(&path, true).unwrap();
        let back = State::load(&path).unwrap();
        assert_eq!(back.files, st.files);
        assert_eq!(back.version, STATE_VERSION);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_or_foreign_state_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.state");
        std::fs::write(&path, "{not json").unwrap();
        let err = State::load(&path).unwrap_err().to_string();
        assert!(err.contains("agent.state"), "{err}");
        std::fs::write(&path, r#"{"version":9,"files":[]}"#).unwrap();
        let err = State::load(&path).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
