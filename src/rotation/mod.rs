//! Rotation: schedules ([`schedule`]), backup naming, retention and crash
//! recovery. STUB: the rotation helper fills in the file operations.

pub mod schedule;
