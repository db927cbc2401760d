//! The NATS JetStream relay (issue 16) shared by both ends: the wire
//! format of a forwarded block ([`codec`]); connection options and the
//! stream's setup join it when `[forward]` and `[consume]` are wired.

pub(crate) mod check;
pub(crate) mod codec;
pub(crate) mod nats;
