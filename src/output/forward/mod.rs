//! The forward output (issue 16): relays routed records to NATS JetStream,
//! one partition per destination-file hash, through an on-disk [`spool`]
//! per partition so nothing accepted is lost while the broker is away.

pub(crate) mod spool;
