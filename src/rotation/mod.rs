//! Rotation (SPEC §5): schedules ([`schedule`]), backup naming and retention
//! ([`backup`]), the per-file rotation times kept in `workdir` ([`state`]) and
//! start-up crash recovery ([`recover`]). The file operations are blocking:
//! the writer runs them on the blocking pool, off the async workers.

pub mod backup;
pub mod recover;
pub mod schedule;
pub mod state;

pub use backup::{
    backup_path, free_backup_path, list_backups, plan_prune, prune, rename_live, Backup,
};
pub use recover::{recover, RecoverReport};
pub use state::{FileState, StateDb};
