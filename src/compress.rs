//! Compression of rotated backups (SPEC §5): the [`Codec`] named by
//! `[compressor] format` and the blocking [`compress_file`] that the writer
//! runs on the blocking pool after `rotation::rename_live`. Also the reverse,
//! [`decompress_to_vec`], which tests and tools use to read a backup back.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

/// A backup compression format (`[compressor] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// xz (LZMA2), the old daemon's default; extension `.xz`.
    #[default]
    Xz,
    /// gzip; extension `.gz`. Also the live-file format of `compress_on_write`.
    Gzip,
    /// bzip2; extension `.bz2`.
    Bzip2,
}

// === impl Codec ===

impl Codec {
    /// Every codec, for code that has to recognise any of their extensions.
    pub const ALL: [Codec; 3] = [Codec::Xz, Codec::Gzip, Codec::Bzip2];

    /// The file extension without its dot: `xz`, `gz` or `bz2`.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Xz => "xz",
            Codec::Gzip => "gz",
            Codec::Bzip2 => "bz2",
        }
    }

    /// Parses a `[compressor] format` value: `xz`, `gzip`/`gz` or
    /// `bzip2`/`bz2`, case-insensitive, surrounding blanks ignored.
    pub fn parse(s: &str) -> Option<Codec> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("xz") {
            Some(Codec::Xz)
        } else if s.eq_ignore_ascii_case("gzip") || s.eq_ignore_ascii_case("gz") {
            Some(Codec::Gzip)
        } else if s.eq_ignore_ascii_case("bzip2") || s.eq_ignore_ascii_case("bz2") {
            Some(Codec::Bzip2)
        } else {
            None
        }
    }

    /// The codec whose [`extension`](Codec::extension) is exactly `ext`
    /// (case-sensitive: these are names we wrote ourselves).
    pub fn from_extension(ext: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.extension() == ext)
    }

    /// The codec named by the last extension of `path`, if any.
    pub fn from_path(path: &Path) -> Option<Codec> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Codec::from_extension)
    }
}

impl fmt::Display for Codec {
    /// The canonical config spelling (`xz`, `gzip`, `bzip2`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Xz => "xz",
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
        })
    }
}

/// `{src}.{ext}`: where [`compress_file`] leaves the compressed copy of `src`.
pub fn compressed_path(src: &Path, codec: Codec) -> PathBuf {
    append_ext(src, codec.extension())
}

/// `{src}.{ext}.tmp`: the partial file [`compress_file`] writes before the
/// rename. One left behind by a crash is removed by `rotation::recover`.
pub fn partial_path(src: &Path, codec: Codec) -> PathBuf {
    append_ext(&compressed_path(src, codec), "tmp")
}

/// Compresses `src` into `{src}.{ext}` and then removes `src`. Blocking and
/// CPU-heavy: call it from `spawn_blocking`.
///
/// The steps are ordered so that a crash at any point leaves either `src`
/// intact or a complete `{src}.{ext}`, never only a truncated copy: stream
/// into `{src}.{ext}.tmp`, `sync_all`, rename, fsync the directory, and only
/// then remove `src`. `level` is clamped to 0–9 (bzip2 has no level 0, so it
/// uses 1 there). The output keeps the permissions of `src`.
///
/// Returns the path of the compressed file.
///
/// # Errors
/// Any I/O or codec error, with the path in the message. On error the `.tmp`
/// (and a compressed file this call renamed into place but could not make
/// durable) is removed and `src` is left untouched. `src` must be a regular
/// file: a symlink is refused with `InvalidInput`, so a planted link cannot
/// make the daemon read or delete something outside the log dir. `src`
/// vanishing after the rename (a concurrent prune) is not an error.
pub fn compress_file(src: &Path, codec: Codec, level: u32) -> io::Result<PathBuf> {
    let meta = fs::symlink_metadata(src).map_err(|e| ctx(e, "stat", src))?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("compress {}: not a regular file", src.display()),
        ));
    }
    let tmp = partial_path(src, codec);
    let dst = compressed_path(src, codec);

    if let Err(err) = write_compressed(src, &tmp, &meta, codec, level) {
        remove_quietly(&tmp);
        return Err(err);
    }
    fs::rename(&tmp, &dst).map_err(|e| {
        remove_quietly(&tmp);
        ctx(e, "rename into", &dst)
    })?;
    // Until the rename is on disk, removing `src` could lose both copies.
    if let Err(err) = sync_dir(parent_dir(&dst)) {
        remove_quietly(&dst);
        return Err(ctx(err, "fsync directory of", &dst));
    }
    match fs::remove_file(src) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // The compressed copy is complete and durable; recovery will notice the
        // leftover source and remove or redo it, so report and keep both.
        Err(e) => return Err(ctx(e, "remove compressed source", src)),
    }
    Ok(dst)
}

/// Reads the whole decompressed content of `path`, choosing the codec by its
/// extension (`.xz`, `.gz`, `.bz2`); any other file is returned as it is.
/// Concatenated streams are read to the end, so a `compress_on_write` file
/// (one gzip member per append) reads back whole.
///
/// # Errors
/// I/O errors and corrupt or truncated streams.
pub fn decompress_to_vec(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| ctx(e, "open", path))?;
    let input = BufReader::new(file);
    let mut out = Vec::new();
    let read = match Codec::from_path(path) {
        Some(Codec::Xz) => xz2::read::XzDecoder::new_multi_decoder(input).read_to_end(&mut out),
        Some(Codec::Gzip) => flate2::read::MultiGzDecoder::new(input).read_to_end(&mut out),
        Some(Codec::Bzip2) => bzip2::read::MultiBzDecoder::new(input).read_to_end(&mut out),
        None => {
            let mut input = input;
            input.read_to_end(&mut out)
        }
    };
    read.map_err(|e| ctx(e, "decompress", path))?;
    Ok(out)
}

/// Streams `src` through the encoder into a fresh `tmp` and makes it durable.
fn write_compressed(
    src: &Path,
    tmp: &Path,
    src_meta: &fs::Metadata,
    codec: Codec,
    level: u32,
) -> io::Result<()> {
    let mut input = BufReader::new(File::open(src).map_err(|e| ctx(e, "open", src))?);
    // A stale partial (or something planted under its name) is removed first so
    // that `create_new` (O_EXCL, which never follows a symlink) can succeed.
    remove_quietly(tmp);
    let out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| ctx(e, "create", tmp))?;
    out.set_permissions(src_meta.permissions())
        .map_err(|e| ctx(e, "chmod", tmp))?;
    let out = BufWriter::with_capacity(64 * 1024, out);
    let level = level.min(9);

    let out = match codec {
        Codec::Xz => {
            let stream = xz_encoder(level, src_meta.len())
                .map_err(|e| ctx(io::Error::other(e), "start xz for", src))?;
            let mut enc = xz2::write::XzEncoder::new_stream(out, stream);
            io::copy(&mut input, &mut enc).map_err(|e| ctx(e, "compress", src))?;
            enc.finish()
        }
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            io::copy(&mut input, &mut enc).map_err(|e| ctx(e, "compress", src))?;
            enc.finish()
        }
        Codec::Bzip2 => {
            let mut enc = bzip2::write::BzEncoder::new(out, bzip2::Compression::new(level.max(1)));
            io::copy(&mut input, &mut enc).map_err(|e| ctx(e, "compress", src))?;
            enc.finish()
        }
    }
    .map_err(|e| ctx(e, "finish", tmp))?;
    let out = out
        .into_inner()
        .map_err(|e| ctx(e.into_error(), "write", tmp))?;
    out.sync_all().map_err(|e| ctx(e, "fsync", tmp))
}

/// An xz encoder for `level` whose dictionary is no larger than the input
/// (at least 64 KiB), as the `xz` tool does for a file of known size: a
/// dictionary past the input gains nothing, but its match finder is
/// allocated and cleared per backup: at level 6 (8 MiB) that was ~90 MiB
/// of RSS and ~12 ms for each of 3,000 small per-host backups (issue 12).
/// The stream is the same `.xz` format, with CRC64 like `xz -{level}`.
fn xz_encoder(level: u32, input_len: u64) -> Result<xz2::stream::Stream, xz2::stream::Error> {
    let mut opts = xz2::stream::LzmaOptions::new_preset(level)?;
    let preset_dict = XZ_PRESET_DICT[level.min(9) as usize];
    let wanted = u32::try_from(input_len.next_power_of_two()).unwrap_or(u32::MAX);
    opts.dict_size(wanted.clamp(64 << 10, preset_dict));
    let mut filters = xz2::stream::Filters::new();
    filters.lzma2(&opts);
    xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::Crc64)
}

/// liblzma's dictionary size per preset 0-9 (`xz --help`), which the xz2
/// options cannot read back.
const XZ_PRESET_DICT: [u32; 10] = [
    256 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
    4 << 20,
    8 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
];

/// fsyncs a directory so that renames, creations and removals in it survive a
/// crash (POSIX only promises that for the directory entry once the directory
/// itself is synced).
///
/// # Errors
/// Opening or syncing the directory failed.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path`: `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `path` with `.{ext}` appended to its file name (not replacing an extension).
pub(crate) fn append_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Wraps an I/O error with what was being done and to which path, keeping its
/// kind so callers can still branch on `NotFound`.
pub(crate) fn ctx(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{what} {}: {err}", path.display()))
}

/// Best-effort cleanup; a file that is already gone is the desired outcome.
fn remove_quietly(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), cause = %e, "cannot remove partial file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(codec: Codec, level: u32, content: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("root.log.2026-11-21-07-25-29-123456");
        fs::write(&src, content).unwrap();
        let dst = compress_file(&src, codec, level).unwrap();
        assert_eq!(dst, compressed_path(&src, codec));
        assert!(!src.exists(), "source must be removed");
        assert!(!partial_path(&src, codec).exists(), "no partial may remain");
        assert_eq!(decompress_to_vec(&dst).unwrap(), content);
    }

    /// Several MB of text that compresses, but not trivially.
    fn big_content() -> Vec<u8> {
        let mut v = Vec::with_capacity(3 << 20);
        let mut i: u64 = 0;
        while v.len() < 3 << 20 {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            writeln!(
                v,
                "2026-11-21 07:25:29.{:06} - host{} - line {i:x}",
                i % 1_000_000,
                i % 7
            )
            .unwrap();
        }
        v
    }

    #[test]
    fn extension_and_parse() {
        assert_eq!(Codec::Xz.extension(), "xz");
        assert_eq!(Codec::Gzip.extension(), "gz");
        assert_eq!(Codec::Bzip2.extension(), "bz2");
        assert_eq!(Codec::parse("XZ"), Some(Codec::Xz));
        assert_eq!(Codec::parse("gzip"), Some(Codec::Gzip));
        assert_eq!(Codec::parse("Gz"), Some(Codec::Gzip));
        assert_eq!(Codec::parse(" bzip2 "), Some(Codec::Bzip2));
        assert_eq!(Codec::parse("BZ2"), Some(Codec::Bzip2));
        assert_eq!(Codec::parse("zstd"), None);
        assert_eq!(Codec::parse(""), None);
        for c in Codec::ALL {
            assert_eq!(Codec::parse(&c.to_string()), Some(c));
            assert_eq!(Codec::from_extension(c.extension()), Some(c));
        }
        assert_eq!(
            Codec::from_path(Path::new("a/root.log.x.gz")),
            Some(Codec::Gzip)
        );
        assert_eq!(Codec::from_path(Path::new("a/root.log")), None);
    }

    #[test]
    fn roundtrip_every_codec_small_empty_big() {
        let big = big_content();
        for codec in Codec::ALL {
            roundtrip(codec, 6, b"2026-11-21 07:25:29.123456 - h - hello\n");
            roundtrip(codec, 6, b"");
            roundtrip(codec, 1, &big);
        }
    }

    #[test]
    fn levels_zero_and_out_of_range_are_accepted() {
        for codec in Codec::ALL {
            roundtrip(codec, 0, b"level zero\n");
            roundtrip(codec, 42, b"level clamped\n");
        }
    }

    #[test]
    fn stale_partial_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("root.log.2026-01-01-00-00-00-000000");
        fs::write(&src, b"real\n").unwrap();
        fs::write(partial_path(&src, Codec::Xz), b"garbage from a crash").unwrap();
        let dst = compress_file(&src, Codec::Xz, 6).unwrap();
        assert_eq!(decompress_to_vec(&dst).unwrap(), b"real\n");
        assert!(!partial_path(&src, Codec::Xz).exists());
    }

    #[test]
    fn missing_source_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("nope.log.2026-01-01-00-00-00-000000");
        let err = compress_file(&src, Codec::Gzip, 6).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failure_keeps_source_and_removes_partial() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("root.log.2026-01-01-00-00-00-000000");
        fs::write(&src, b"keep me\n").unwrap();
        // A directory squatting on the destination makes the rename fail.
        fs::create_dir(compressed_path(&src, Codec::Bzip2)).unwrap();
        compress_file(&src, Codec::Bzip2, 9).unwrap_err();
        assert_eq!(fs::read(&src).unwrap(), b"keep me\n");
        assert!(!partial_path(&src, Codec::Bzip2).exists());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("outside");
        fs::write(&target, b"secret").unwrap();
        let src = dir.path().join("root.log.2026-01-01-00-00-00-000000");
        std::os::unix::fs::symlink(&target, &src).unwrap();
        let err = compress_file(&src, Codec::Xz, 6).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(target.exists() && src.symlink_metadata().is_ok());
    }

    #[test]
    fn multi_member_gzip_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.log.gz");
        let mut file = File::create(&path).unwrap();
        for line in [&b"one\n"[..], b"two\n", b"three\n"] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            enc.write_all(line).unwrap();
            file.write_all(&enc.finish().unwrap()).unwrap();
        }
        drop(file);
        assert_eq!(decompress_to_vec(&path).unwrap(), b"one\ntwo\nthree\n");
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("root.log.2026-01-01-00-00-00-000000");
        fs::write(&src, big_content()).unwrap();
        let dst = compress_file(&src, Codec::Xz, 6).unwrap();
        let bytes = fs::read(&dst).unwrap();
        fs::write(&dst, &bytes[..bytes.len() / 2]).unwrap();
        decompress_to_vec(&dst).unwrap_err();
    }
}
