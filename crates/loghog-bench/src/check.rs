//! `loghog-bench check`: proves a run was delivered exactly once by reading
//! the log files back (plain, .gz, .xz or .bz2), finding each line's
//! `seq=C:I` token and regenerating the body it must carry.
//!
//! Benchmarks and integration tests use its exit status: 0 only when nothing
//! is missing, duplicated, unexpected or corrupt.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::encode::{split, write_body, MAX_BODY_SIZE};

/// Flags of the `check` subcommand.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// A log file to read (repeatable); .gz, .xz and .bz2 are decompressed.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Read every file under this directory, recursively (repeatable).
    #[arg(long = "dir", value_name = "PATH")]
    pub dirs: Vec<PathBuf>,
    /// Connections of the run being checked.
    #[arg(short = 'c', long, default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Total messages of the run being checked.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Body size of the run: every body is regenerated and compared.
    #[arg(long, default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=MAX_BODY_SIZE as i64))]
    pub body_size: u32,
    /// Only look at the `seq=` tokens, not at the rest of each body.
    #[arg(long)]
    pub no_body_check: bool,
    /// Also fail when lines of one connection are out of order in a file.
    #[arg(long)]
    pub strict_order: bool,
    /// Print the result as one JSON object instead of key=value pairs.
    #[arg(long)]
    pub json: bool,
}

/// What the files held, compared with what the run sent.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Files read.
    pub files: u64,
    /// Lines read.
    pub lines: u64,
    /// Messages the run sent.
    pub expected: u64,
    /// Distinct expected messages seen at least once.
    pub found: u64,
    /// Expected messages never seen.
    pub missing: u64,
    /// Extra sightings of a message already seen.
    pub duplicates: u64,
    /// Lines whose index is lower than the previous one of the same
    /// connection in the same file.
    pub out_of_order: u64,
    /// Well-formed tokens outside the run (connection or index too high):
    /// usually a file left over from another run.
    pub unexpected: u64,
    /// Lines with a `seq=` token that is malformed or whose body differs
    /// from what was sent (truncated, interleaved, re-encoded).
    pub corrupt: u64,
    /// Lines with no `seq=` at all (other traffic); not an error.
    pub other_lines: u64,
}

// === impl Tally ===

impl Tally {
    /// Whether delivery was exactly once and intact.
    pub fn ok(&self, strict_order: bool) -> bool {
        self.missing == 0
            && self.duplicates == 0
            && self.unexpected == 0
            && self.corrupt == 0
            && (!strict_order || self.out_of_order == 0)
    }
}

/// Accumulates sightings across files.
pub struct Checker {
    /// Sightings per connection and index, saturating at 255.
    seen: Vec<Vec<u8>>,
    /// Body size to regenerate; `None` skips body comparison.
    body_size: Option<usize>,
    /// Running result.
    tally: Tally,
    /// Scratch for regenerated bodies.
    body: String,
}

// === impl Checker ===

impl Checker {
    /// A checker for `messages` spread over `connections`.
    pub fn new(connections: usize, messages: u64, body_size: Option<usize>) -> Checker {
        let seen = (0..connections)
            .map(|c| vec![0u8; split(messages, connections, c) as usize])
            .collect();
        Checker {
            seen,
            body_size,
            tally: Tally {
                expected: messages,
                ..Tally::default()
            },
            body: String::new(),
        }
    }

    /// Reads one file's lines (already decompressed).
    ///
    /// # Errors
    /// Read or decompression errors.
    pub fn read(&mut self, reader: impl BufRead) -> io::Result<()> {
        let mut reader = reader;
        let mut line = Vec::with_capacity(512);
        // Order is judged per file: rotation and file_per_host split one
        // connection over several files, each of which must stay ordered.
        let mut last: Vec<Option<u64>> = vec![None; self.seen.len()];
        self.tally.files += 1;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            self.tally.lines += 1;
            let text = trim_eol(&line);
            self.line(text, &mut last);
        }
    }

    fn line(&mut self, text: &[u8], last: &mut [Option<u64>]) {
        let Some(pos) = find_seq(text) else {
            self.tally.other_lines += 1;
            return;
        };
        let Some((conn, index)) = parse_seq(&text[pos..]) else {
            self.tally.corrupt += 1;
            return;
        };
        let Some(count) = usize::try_from(conn)
            .ok()
            .and_then(|c| self.seen.get_mut(c))
            .and_then(|v| v.get_mut(index as usize))
        else {
            self.tally.unexpected += 1;
            return;
        };
        if let Some(size) = self.body_size {
            write_body(conn, index, size, &mut self.body);
            if &text[pos..] != self.body.as_bytes() {
                self.tally.corrupt += 1;
                return;
            }
        }
        if *count == 0 {
            self.tally.found += 1;
        } else {
            self.tally.duplicates += 1;
        }
        *count = count.saturating_add(1);
        let prev = &mut last[conn as usize];
        if prev.is_some_and(|p| index < p) {
            self.tally.out_of_order += 1;
        }
        *prev = Some(index);
    }

    /// Up to `limit` missing messages as `C:I`, for the human report.
    pub fn missing_examples(&self, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (c, v) in self.seen.iter().enumerate() {
            for (i, &n) in v.iter().enumerate() {
                if n == 0 {
                    if out.len() == limit {
                        return out;
                    }
                    out.push(format!("{c}:{i}"));
                }
            }
        }
        out
    }

    /// The final result.
    pub fn finish(mut self) -> (Tally, Vec<String>) {
        self.tally.missing = self.tally.expected - self.tally.found;
        let examples = self.missing_examples(10);
        (self.tally, examples)
    }
}

/// Runs the subcommand; `Ok(false)` means the check failed.
///
/// # Errors
/// No files given, or a file that cannot be opened, read or decompressed.
pub fn run(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut paths = args.files.clone();
    for dir in &args.dirs {
        collect_files(dir, &mut paths).with_context(|| format!("listing {}", dir.display()))?;
    }
    if paths.is_empty() {
        bail!("nothing to check: give --file PATH or --dir PATH");
    }
    let connections = args.connections as usize;
    let per_conn_max = split(args.messages, connections, 0);
    if usize::try_from(per_conn_max).is_err() || args.messages > (1 << 36) {
        bail!("--messages {} is too large to track", args.messages);
    }
    let body_size = (!args.no_body_check).then_some(args.body_size as usize);
    let mut checker = Checker::new(connections, args.messages, body_size);
    for path in &paths {
        let reader = open(path).with_context(|| format!("opening {}", path.display()))?;
        checker
            .read(reader)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    let (tally, examples) = checker.finish();
    let ok = tally.ok(args.strict_order);
    eprintln!(
        "check {}: {} of {} messages found in {} files ({} lines); missing {}, duplicates {}, \
         out of order {}, unexpected {}, corrupt {}{}",
        if ok { "passed" } else { "FAILED" },
        tally.found,
        tally.expected,
        tally.files,
        tally.lines,
        tally.missing,
        tally.duplicates,
        tally.out_of_order,
        tally.unexpected,
        tally.corrupt,
        if examples.is_empty() {
            String::new()
        } else {
            format!("; first missing: {}", examples.join(" "))
        },
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&tally).context("encoding JSON")?
        );
    } else {
        let t = &tally;
        println!(
            "files={} lines={} expected={} found={} missing={} duplicates={} out_of_order={} \
             unexpected={} corrupt={} other_lines={} ok={}",
            t.files,
            t.lines,
            t.expected,
            t.found,
            t.missing,
            t.duplicates,
            t.out_of_order,
            t.unexpected,
            t.corrupt,
            t.other_lines,
            ok
        );
    }
    Ok(ok)
}

/// Opens `path`, decompressing by extension. The multi-stream decoders are
/// used because concatenated archives (`cat a.gz b.gz`) are valid input.
fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let file = File::open(path)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let inner: Box<dyn Read> = match ext {
        "gz" => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        "xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(BufReader::new(
            file,
        ))),
        "bz2" => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(file))),
        _ => Box::new(file),
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, inner)))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Offset of the first `seq=` in `line`.
pub fn find_seq(line: &[u8]) -> Option<usize> {
    line.windows(4).position(|w| w == b"seq=")
}

/// Parses `seq=C:I` at the start of `token`, which must end there or at a
/// space. Anything else (no digits, overflow, trailing junk) is `None`.
pub fn parse_seq(token: &[u8]) -> Option<(u64, u64)> {
    let rest = token.strip_prefix(b"seq=")?;
    let (conn, rest) = parse_u64(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (index, rest) = parse_u64(rest)?;
    match rest.first() {
        None | Some(b' ') => Some((conn, index)),
        Some(_) => None,
    }
}

fn parse_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &s[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((v, &s[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_token_parser() {
        assert_eq!(parse_seq(b"seq=0:0"), Some((0, 0)));
        assert_eq!(parse_seq(b"seq=3:123456 abc"), Some((3, 123456)));
        for bad in [
            &b"seq="[..],
            b"seq=1",
            b"seq=1:",
            b"seq=:1",
            b"seq=1:2x",
            b"seq=1:2:3",
            b"seq=-1:2",
            b"seq=1:99999999999999999999999",
            b"sq=1:2",
        ] {
            assert_eq!(parse_seq(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let line = b"2026-11-21 07:00:00.000001 - benchhost - seq=1:2 pad";
        let pos = find_seq(line).unwrap();
        assert_eq!(parse_seq(&line[pos..]), Some((1, 2)));
        assert_eq!(find_seq(b"no token here"), None);
    }

    fn log(lines: &[(u64, u64)], body_size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut body = String::new();
        for &(c, i) in lines {
            write_body(c, i, body_size, &mut body);
            out.extend_from_slice(b"2026-11-21 07:00:00.000001 - h - ");
            out.extend_from_slice(body.as_bytes());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn counts_missing_duplicates_order_and_corruption() {
        // 2 connections x 3 messages.
        let mut checker = Checker::new(2, 6, Some(50));
        let file1 = log(
            &[(0, 0), (1, 0), (0, 2), (0, 1), (1, 1), (1, 1), (7, 0)],
            50,
        );
        checker.read(&file1[..]).unwrap();
        // A second file restarts the order check; a truncated body is corrupt.
        let mut file2 = log(&[(0, 0)], 50);
        file2.extend_from_slice(b"x - seq=1:2 short\nunrelated line\r\n");
        checker.read(&file2[..]).unwrap();
        let (t, examples) = checker.finish();
        assert_eq!(
            (t.files, t.lines, t.expected, t.found, t.missing),
            (2, 10, 6, 5, 1)
        );
        assert_eq!((t.duplicates, t.out_of_order, t.unexpected), (2, 1, 1));
        assert_eq!((t.corrupt, t.other_lines), (1, 1));
        assert_eq!(examples, vec!["1:2".to_string()]);
        assert!(!t.ok(false));
    }

    #[test]
    fn clean_run_passes() {
        let mut checker = Checker::new(3, 7, Some(200));
        let lines: Vec<(u64, u64)> = (0..3u64)
            .flat_map(|c| (0..split(7, 3, c as usize)).map(move |i| (c, i)))
            .collect();
        checker.read(&log(&lines, 200)[..]).unwrap();
        let (t, _) = checker.finish();
        assert!(t.ok(true), "{t:?}");
        assert_eq!((t.found, t.missing), (7, 0));
    }
}
