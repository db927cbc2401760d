//! Compression of rotated files. STUB: the rotation helper replaces it.

/// A backup compression format (`[compressor] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Xz,
    Gzip,
    Bzip2,
}
