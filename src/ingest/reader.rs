//! Reading input files: glob expansion, standard input (`-`), compression by magic bytes (gzip
//! with every member, zstd with every frame, bzip2 with every stream; never by file name),
//! streamed lines with a length cap, and a hash of the decompressed content (to count
//! identical inputs once, decision 11).
//!
//! Memory does not grow with file size: one 64 KiB read buffer and one line buffer of at most
//! [`MAX_LINE`] bytes. A longer line is skipped to its end and reported, never kept.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Lines longer than this are rejected as `line_too_long`. Real access-log lines are far
/// shorter (nginx's default large buffer is 8 KiB per header); 64 KiB leaves ample room.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("no input file matches {pattern:?}; check `inputs` in the pipeline or --input")]
    NoMatch { pattern: String },
    #[error("bad input pattern {pattern:?}: {message}")]
    BadPattern { pattern: String, message: String },
    #[error("cannot read input {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
}

/// The input name that means standard input.
pub const STDIN: &str = "-";

/// Expands paths, directories (their files, sorted) and globs into a sorted, de-duplicated list.
/// `-` stands for standard input (read once, after the files).
pub fn expand_inputs(patterns: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    let mut stdin = false;
    for pattern in patterns {
        let text = pattern.to_string_lossy();
        let before = files.len();
        if text == STDIN {
            stdin = true;
            continue;
        }
        if text.starts_with("s3://") {
            let (location, glob, bucket) =
                crate::store::split_pattern(&text).ok_or_else(|| InputError::NoMatch {
                    pattern: text.to_string(),
                })?;
            let remote = crate::store::remote(Path::new(&location))
                .expect("an s3:// location")
                .map_err(|e| InputError::Unreadable {
                    path: pattern.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            let keys =
                remote
                    .list_matching(&bucket, &glob)
                    .map_err(|e| InputError::Unreadable {
                        path: pattern.clone(),
                        source: io::Error::other(e.to_string()),
                    })?;
            if keys.is_empty() {
                return Err(InputError::NoMatch {
                    pattern: text.to_string(),
                });
            }
            files.extend(keys.into_iter().map(PathBuf::from));
            continue;
        }
        if text.contains(['*', '?', '[']) {
            let paths = glob::glob(&text).map_err(|e| InputError::BadPattern {
                pattern: text.to_string(),
                message: e.msg.to_string(),
            })?;
            for p in paths {
                let p = p.map_err(|e| InputError::Unreadable {
                    path: e.path().to_path_buf(),
                    source: io::Error::other(e.error().to_string()),
                })?;
                if p.is_file() {
                    files.push(p);
                }
            }
        } else if pattern.is_dir() {
            let entries = std::fs::read_dir(pattern).map_err(|source| InputError::Unreadable {
                path: pattern.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| InputError::Unreadable {
                    path: pattern.clone(),
                    source,
                })?;
                let p = entry.path();
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if p.is_file() && !hidden {
                    files.push(p);
                }
            }
        } else if pattern.exists() {
            files.push(pattern.clone());
        }
        if files.len() == before {
            return Err(InputError::NoMatch {
                pattern: text.to_string(),
            });
        }
    }
    files.sort();
    files.dedup();
    if stdin {
        files.push(PathBuf::from(STDIN));
    }
    Ok(files)
}

/// How an input is compressed, by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Bzip2,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }
}

/// The raw bytes of one input: a local file, standard input or a streamed object.
fn open_source(path: &Path, remotes: &mut Remotes) -> io::Result<Box<dyn Read + Send>> {
    let text = path.to_string_lossy();
    Ok(if path.as_os_str() == STDIN {
        Box::new(io::stdin())
    } else if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        Box::new(
            remotes
                .get(bucket)?
                .open_read(key)
                .map_err(|e| io::Error::other(e.to_string()))?,
        )
    } else {
        Box::new(File::open(path)?)
    })
}

/// One store client per bucket, shared by its objects.
#[derive(Default)]
pub struct Remotes(std::collections::HashMap<String, crate::store::Remote>);

impl Remotes {
    fn get(&mut self, bucket: &str) -> io::Result<&crate::store::Remote> {
        if !self.0.contains_key(bucket) {
            let remote = crate::store::remote(Path::new(&format!("s3://{bucket}")))
                .expect("an s3:// location")
                .map_err(|e| io::Error::other(e.to_string()))?;
            self.0.insert(bucket.to_string(), remote);
        }
        Ok(&self.0[bucket])
    }
}

/// Objects in a store whose downloads run ahead of the one being parsed. Few: a download
/// that waits unread must not outlast the store client's retry window (3 min).
pub const S3_READ_AHEAD: usize = 2;

/// Opens a run's inputs in order. While one object of a store is parsed, the downloads of
/// the next [`S3_READ_AHEAD`] are already under way on the I/O runtime, each holding at most
/// [`crate::store::READ_AHEAD_PARTS`] parts: objects are read concurrently, memory stays
/// bounded, and lines still reach the parser in input order.
pub struct Inputs<'a> {
    files: &'a [PathBuf],
    digests: bool,
    started: std::collections::HashMap<usize, crate::store::ObjectReader>,
    remotes: Remotes,
}

impl<'a> Inputs<'a> {
    /// `digests`: whether each input's content is hashed as it is read, which finds inputs
    /// with the same content (decision 11). A run of one input has none to find, and skips
    /// the hash: BLAKE3 of every byte was 4 % of a run's CPU (docs/PERFORMANCE.md,
    /// fourteenth session).
    pub fn new(files: &'a [PathBuf], digests: bool) -> Inputs<'a> {
        Inputs {
            files,
            digests,
            started: Default::default(),
            remotes: Remotes::default(),
        }
    }

    /// The input at `index`, cut into blocks; starts the next objects' downloads.
    pub fn open(&mut self, index: usize) -> io::Result<ChunkReader> {
        let ahead = index + 1..(index + 1 + S3_READ_AHEAD).min(self.files.len());
        for i in ahead {
            let text = self.files[i].to_string_lossy();
            if self.started.contains_key(&i) {
                continue;
            }
            if let Some(rest) = text.strip_prefix("s3://") {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                // An error here is met again, and reported, when that input's turn comes.
                if let Ok(reader) = self.remotes.get(bucket).and_then(|r| {
                    r.open_read(key)
                        .map_err(|e| io::Error::other(e.to_string()))
                }) {
                    self.started.insert(i, reader);
                }
            }
        }
        let source: Box<dyn Read + Send> = match self.started.remove(&index) {
            Some(reader) => Box::new(reader),
            None => open_source(&self.files[index], &mut self.remotes)?,
        };
        let mut reader = ChunkReader::from_source(source)?;
        if !self.digests {
            reader.inner.hasher = None;
        }
        Ok(reader)
    }
}

/// A file's (or standard input's) content, decompressed by its magic bytes whatever its name:
/// every member of a concatenated gzip file, every zstd frame, every bzip2 stream.
fn open_decoded(path: &Path) -> io::Result<(Box<dyn Read + Send>, Compression)> {
    decode(open_source(path, &mut Remotes::default())?)
}

fn decode(source: Box<dyn Read + Send>) -> io::Result<(Box<dyn Read + Send>, Compression)> {
    let mut peek = BufReader::with_capacity(64 * 1024, source);
    // Fill until the magic bytes are known (a pipe may deliver fewer at first).
    let mut head = peek.fill_buf()?.to_vec();
    while head.len() < 4 {
        let more = {
            let mut b = [0u8; 4];
            let n = peek.get_mut().read(&mut b[..4 - head.len()])?;
            b[..n].to_vec()
        };
        if more.is_empty() {
            break;
        }
        head.extend_from_slice(&more);
    }
    let compression = Compression::detect(&head);
    let rest = std::io::Cursor::new(head).chain(peek_rest(peek));
    let decoded: Box<dyn Read + Send> = match compression {
        Compression::Gzip => Box::new(MultiGzDecoder::new(rest)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(rest)?),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(rest)),
        Compression::None => Box::new(rest),
    };
    Ok((decoded, compression))
}

/// The bytes of a `BufReader` after those already peeked at (consumed into `head`).
fn peek_rest(mut peek: BufReader<Box<dyn Read + Send>>) -> BufReader<Box<dyn Read + Send>> {
    let n = peek.buffer().len();
    peek.consume(n);
    peek
}

/// A line, or the marker of a line that was too long to keep.
pub enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// The reference line reader (the pipeline reads through [`ChunkReader`], which tests check
/// against this one). Streams the lines of one input file, decompressing gzip (all members) when the file starts
/// with the gzip magic bytes, whatever its name.
pub struct LineReader {
    inner: BufReader<HashingReader<Box<dyn Read + Send>>>,
    buf: Vec<u8>,
    line_no: u64,
    pub compressed: bool,
    pub compression: Compression,
}

impl LineReader {
    pub fn open(path: &Path) -> io::Result<LineReader> {
        let (decoded, compression) = open_decoded(path)?;
        let compressed = compression != Compression::None;
        Ok(LineReader {
            inner: BufReader::with_capacity(
                64 * 1024,
                HashingReader {
                    inner: decoded,
                    hasher: Some(blake3::Hasher::new()),
                    bytes: 0,
                },
            ),
            buf: Vec::with_capacity(1024),
            line_no: 0,
            compressed,
            compression,
        })
    }

    /// The next line (1-based line number) without its `\n` or `\r\n`.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if !saw_any {
                    return Ok(None);
                }
                break;
            }
            saw_any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > MAX_LINE {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            self.inner.consume(used);
            if done {
                break;
            }
        }
        self.line_no += 1;
        if too_long {
            return Ok(Some((self.line_no, Line::TooLong)));
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some((self.line_no, Line::Text(&self.buf))))
    }

    /// BLAKE3 of the decompressed content read so far, and its length.
    pub fn content_digest(&self) -> (blake3::Hash, u64) {
        let r = self.inner.get_ref();
        let hasher = r.hasher.as_ref().expect("a line reader always hashes");
        (hasher.finalize(), r.bytes)
    }
}

/// A block of whole lines for a parsing worker. Lines longer than [`MAX_LINE`] are replaced by
/// an empty line and listed in `too_long`, so line numbers stay right.
pub struct Chunk {
    /// Line number of the first line in `data` (1-based).
    pub first_line: u64,
    pub data: Vec<u8>,
    /// Line numbers (sorted) of the lines that were too long to keep.
    pub too_long: Vec<u64>,
    /// W3C logs: the `#Fields:` layout in force at the block's first line.
    pub w3c_layout: Option<super::w3c::Layout>,
}

/// The lines of `data`, each with its newline (the last one may lack it), as
/// `data.split_inclusive(|&b| b == b'\n')` gives them but found with `memchr`: the
/// byte-at-a-time search of `split_inclusive` was a sixth of the shard stage's time.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut ends = memchr::memchr_iter(b'\n', data);
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = ends.next().map_or(data.len(), |newline| newline + 1);
        let line = &data[start..end];
        start = end;
        Some(line)
    })
}

/// Whether a line of `block` (whole lines, each ending in `\n`) holds more than [`MAX_LINE`]
/// bytes before its newline. Jumps from a line's start to the last newline within
/// `MAX_LINE + 1` bytes (every line starting in between ends there or before, so is short
/// enough): a block of short lines costs a search per 64 KiB, not one per line.
fn has_long_line(block: &[u8]) -> bool {
    let mut start = 0;
    while start < block.len() {
        let window = &block[start..(start + MAX_LINE + 1).min(block.len())];
        match memchr::memrchr(b'\n', window) {
            Some(i) => start += i + 1,
            None => return true,
        }
    }
    false
}

/// Replaces the lines of `chunk.data[range]` (whole lines, the first numbered `first_line`)
/// longer than the cap by empty lines, moving the rest up; where the kept lines now end.
fn blank_long_lines(chunk: &mut Chunk, range: std::ops::Range<usize>, first_line: u64) -> usize {
    let mut kept = range.start;
    let mut start = range.start;
    let mut line = first_line;
    while start < range.end {
        let end =
            start + memchr::memchr(b'\n', &chunk.data[start..range.end]).expect("whole lines") + 1;
        if end - start > MAX_LINE + 1 {
            chunk.too_long.push(line);
            chunk.data[kept] = b'\n';
            kept += 1;
        } else {
            chunk.data.copy_within(start..end, kept);
            kept += end - start;
        }
        start = end;
        line += 1;
    }
    chunk.too_long.sort_unstable();
    kept
}

/// Cuts a file's decompressed content into blocks of whole lines, for parallel parsing. The
/// content is hashed as it is read, like [`LineReader`].
pub struct ChunkReader {
    inner: HashingReader<Box<dyn Read + Send>>,
    carry: Vec<u8>,
    next_line: u64,
    /// Dropping the rest of a too-long line, which started at this line number.
    skipping: Option<u64>,
    eof: bool,
    pub compressed: bool,
    pub compression: Compression,
}

/// Target size of a chunk.
pub const CHUNK_BYTES: usize = 2 << 20;

/// Bytes asked of the input per read.
const READ_BYTES: usize = 256 * 1024;

impl ChunkReader {
    pub fn open(path: &Path) -> io::Result<ChunkReader> {
        Self::from_source(open_source(path, &mut Remotes::default())?)
    }

    fn from_source(source: Box<dyn Read + Send>) -> io::Result<ChunkReader> {
        let (decoded, compression) = decode(source)?;
        let compressed = compression != Compression::None;
        Ok(ChunkReader {
            inner: HashingReader {
                inner: decoded,
                hasher: Some(blake3::Hasher::new()),
                bytes: 0,
            },
            carry: Vec::new(),
            next_line: 1,
            skipping: None,
            eof: false,
            compressed,
            compression,
        })
    }

    /// The next block of whole lines, or `None` at the end of the file, in `data` (a buffer
    /// handed back by a worker, or a new one): a fresh 2 MiB block per chunk costs the
    /// kernel a page fault and a zeroed page for every 4 KiB of it.
    ///
    /// The input is read straight into the block, not into a read buffer and copied from
    /// there (a copy of every byte, about 5 % of the shard stage). The bytes after the block's
    /// last newline, a line begun, wait in the carry and open the next block. A handed-back
    /// buffer keeps its length, so only the part the last block did not fill is zeroed again.
    pub fn next_chunk_in(&mut self, mut data: Vec<u8>) -> io::Result<Option<Chunk>> {
        // Room for a block, a line begun beyond it (at most MAX_LINE) and one more read.
        const ROOM: usize = CHUNK_BYTES + MAX_LINE + 1 + READ_BYTES;
        if data.len() < ROOM {
            data.resize(ROOM, 0);
        }
        let mut chunk = Chunk {
            first_line: self.next_line,
            data,
            too_long: Vec::new(),
            w3c_layout: None,
        };
        // `chunk.data[..end]`: whole lines; `[end..filled]`: the line begun.
        let mut end = 0;
        let mut filled = self.carry.len();
        chunk.data[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        while end < CHUNK_BYTES && !self.eof {
            // `end < CHUNK_BYTES` and a line begun never holds more than MAX_LINE bytes (the
            // check at the bottom), so one more read always fits in ROOM.
            debug_assert!(filled + READ_BYTES <= chunk.data.len());
            let n = self
                .inner
                .read(&mut chunk.data[filled..filled + READ_BYTES])?;
            if n == 0 {
                self.eof = true;
                break;
            }
            let mut fresh = filled;
            filled += n;
            if let Some(start) = self.skipping {
                // Dropping a too-long line (`filled` was `end`): up to its newline.
                match memchr::memchr(b'\n', &chunk.data[fresh..filled]) {
                    Some(i) => {
                        chunk.too_long.push(start);
                        self.next_line += 1;
                        self.skipping = None;
                        chunk.data.copy_within(fresh + i + 1..filled, end + 1);
                        chunk.data[end] = b'\n';
                        end += 1;
                        filled = end + (filled - (fresh + i + 1));
                        fresh = end;
                    }
                    None => {
                        filled = end;
                        continue;
                    }
                }
            }
            if let Some(last) = memchr::memrchr(b'\n', &chunk.data[fresh..filled]) {
                let whole = fresh + last + 1;
                let first_of_added = self.next_line;
                let added = &chunk.data[end..whole];
                // Count the lines (a vectorised count, not a stop per line), and see whether
                // one is over the cap.
                self.next_line += memchr::memchr_iter(b'\n', added).count() as u64;
                if has_long_line(added) {
                    let kept = blank_long_lines(&mut chunk, end..whole, first_of_added);
                    chunk.data.copy_within(whole..filled, kept);
                    filled -= whole - kept;
                    end = kept;
                } else {
                    end = whole;
                }
            }
            if filled - end > MAX_LINE {
                self.skipping = Some(self.next_line);
                filled = end;
            }
        }
        if self.eof {
            // The last line may lack its newline.
            if let Some(start) = self.skipping.take() {
                chunk.too_long.push(start);
                chunk.data[end] = b'\n';
                end += 1;
                self.next_line += 1;
            } else if filled > end {
                chunk.data[filled] = b'\n';
                end = filled + 1;
                self.next_line += 1;
            }
        } else {
            self.carry.extend_from_slice(&chunk.data[end..filled]);
        }
        chunk.data.truncate(end);
        if chunk.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(chunk))
    }

    /// BLAKE3 of the decompressed content read so far (`None` for a reader opened without
    /// it), and its length.
    pub fn content_digest(&self) -> (Option<blake3::Hash>, u64) {
        (
            self.inner.hasher.as_ref().map(blake3::Hasher::finalize),
            self.inner.bytes,
        )
    }

    /// Decompressed bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes
    }

    /// Lines handed out so far.
    pub fn lines(&self) -> u64 {
        self.next_line - 1
    }
}

struct HashingReader<R> {
    inner: R,
    /// `None` when no one needs the digest (see [`Inputs::new`]).
    hasher: Option<blake3::Hasher>,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&out[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The jumping check against the per-line rule, on blocks of lines of every length
    /// around the cap.
    #[test]
    fn long_lines_found_as_by_the_per_line_rule() {
        let per_line = |block: &[u8]| {
            let mut start = 0;
            memchr::memchr_iter(b'\n', block).any(|end| {
                let long = end - start > MAX_LINE;
                start = end + 1;
                long
            })
        };
        // The block's first line count reads the number before the first step.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = crate::test_numbers(x);
        for _ in 0..300 {
            let mut block = Vec::new();
            for _ in 0..(x % 7 + 1) {
                x = next();
                let len = match x % 4 {
                    0 => MAX_LINE - 1 + (x >> 8) as usize % 3, // around the cap
                    1 => (x >> 8) as usize % (3 * MAX_LINE),
                    _ => (x >> 8) as usize % 300,
                };
                block.extend(std::iter::repeat_n(b'a', len));
                block.push(b'\n');
            }
            assert_eq!(has_long_line(&block), per_line(&block));
        }
        let mut exact = vec![b'a'; MAX_LINE];
        exact.push(b'\n');
        assert!(!has_long_line(&exact));
        exact.insert(0, b'a');
        assert!(has_long_line(&exact));
    }
    use std::io::Write;

    /// The lines are those of `split_inclusive`, a second method, on the edges: nothing,
    /// no final newline, empty lines, only newlines, CRLF, a long line.
    #[test]
    fn lines_are_split_inclusive_lines() {
        let long = [b"x".repeat(100_000), b"\ny".to_vec()].concat();
        let cases: [&[u8]; 8] = [
            b"",
            b"\n",
            b"\n\n\n",
            b"a",
            b"a\nb",
            b"a\n\nb\n",
            "GET /каталог\r\n\r\nx\r\n".as_bytes(),
            &long,
        ];
        for data in cases {
            let want: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
            assert_eq!(lines(data).collect::<Vec<_>>(), want, "{data:?}");
        }
        assert_eq!(lines(b"a\n\nb").count(), 3);
    }

    fn lines_of(path: &Path) -> Vec<Option<Vec<u8>>> {
        let mut r = LineReader::open(path).unwrap();
        let mut out = Vec::new();
        while let Some((_, line)) = r.next_line().unwrap() {
            out.push(match line {
                Line::Text(t) => Some(t.to_vec()),
                Line::TooLong => None,
            });
        }
        out
    }

    #[test]
    fn reader_plain_crlf_and_no_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        std::fs::write(&p, b"one\r\ntwo\n\nthree").unwrap();
        let got = lines_of(&p);
        let want: Vec<Option<Vec<u8>>> = vec![
            Some(b"one".to_vec()),
            Some(b"two".to_vec()),
            Some(vec![]),
            Some(b"three".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn reader_gzip_all_members_whatever_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.log"); // no .gz suffix on purpose
        let mut bytes = Vec::new();
        for part in [&b"a\nb\n"[..], b"c\n"] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(part).unwrap();
            bytes.extend(enc.finish().unwrap());
        }
        std::fs::write(&p, bytes).unwrap();
        let got = lines_of(&p);
        assert_eq!(got.len(), 3, "the second gzip member must be read too");
        let mut r = LineReader::open(&p).unwrap();
        assert!(r.compressed);
        while r.next_line().unwrap().is_some() {}
        assert_eq!(r.content_digest(), (blake3::hash(b"a\nb\nc\n"), 6));
    }

    #[test]
    fn reader_huge_line_is_skipped_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let mut content = b"first\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        content.extend_from_slice(b"\nlast\n");
        std::fs::write(&p, content).unwrap();
        assert_eq!(
            lines_of(&p),
            vec![Some(b"first".to_vec()), None, Some(b"last".to_vec())]
        );
    }

    /// Every line of a chunk reader's blocks (`None`: too long), checking that the blocks'
    /// first line numbers follow on.
    fn chunk_lines(r: &mut ChunkReader) -> Vec<Option<Vec<u8>>> {
        let mut got = Vec::new();
        let mut expected_first = 1;
        let mut recycled = Vec::new();
        while let Some(chunk) = r.next_chunk_in(recycled).unwrap() {
            assert_eq!(chunk.first_line, expected_first);
            let mut too_long = chunk.too_long.iter().peekable();
            for (i, line) in chunk.data.split_inclusive(|&b| b == b'\n').enumerate() {
                let n = chunk.first_line + i as u64;
                if too_long.peek() == Some(&&n) {
                    too_long.next();
                    got.push(None);
                } else {
                    got.push(Some(line.strip_suffix(b"\n").unwrap_or(line).to_vec()));
                }
                expected_first = n + 1;
            }
            assert_eq!(too_long.next(), None, "a too-long line outside its block");
            recycled = chunk.data;
        }
        got
    }

    /// The chunk reader gives the same lines, numbers and too-long lines as the line reader.
    #[test]
    fn chunk_reader_agrees_with_line_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mixed.log");
        let mut content = Vec::new();
        for i in 0..200_000u32 {
            match i % 50_000 {
                7 => content.extend(std::iter::repeat_n(b'x', MAX_LINE + 10)),
                9 => {}
                _ => content.extend_from_slice(
                    format!("line {i} {}", "y".repeat((i % 97) as usize)).as_bytes(),
                ),
            }
            content.push(b'\n');
        }
        content.extend(std::iter::repeat_n(b'z', MAX_LINE * 2)); // a too-long last line, no newline
        std::fs::write(&p, &content).unwrap();
        let want = lines_of(&p);
        let mut r = ChunkReader::open(&p).unwrap();
        let got = chunk_lines(&mut r);
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);
        assert_eq!(
            r.content_digest(),
            (Some(blake3::hash(&content)), content.len() as u64)
        );
    }

    /// Inputs hash their content only when asked (a run of several inputs): the digest is
    /// BLAKE3 of the decompressed bytes, gzip or not, and the length is counted either way.
    #[test]
    fn inputs_hash_their_content_only_when_asked() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let content = b"one\ntwo\nthree\n".repeat(1000);
        let plain = dir.path().join("plain.log");
        std::fs::write(&plain, &content).unwrap();
        let gz = dir.path().join("packed.log.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&content).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let files = [plain, gz];
        for digests in [false, true] {
            let mut inputs = Inputs::new(&files, digests);
            for index in 0..files.len() {
                let mut r = inputs.open(index).unwrap();
                while r.next_chunk_in(Vec::new()).unwrap().is_some() {}
                let want = digests.then(|| blake3::hash(&content));
                assert_eq!(r.content_digest(), (want, content.len() as u64));
            }
        }
    }

    /// An input that gives its bytes in reads of the sizes `sizes` says (at most), as a
    /// decompressor does.
    struct ShortReads {
        data: std::io::Cursor<Vec<u8>>,
        sizes: Box<dyn FnMut() -> usize + Send>,
    }

    impl Read for ShortReads {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min((self.sizes)().max(1));
            self.data.read(&mut out[..n])
        }
    }

    /// Reads of random sizes: a few bytes, a few KiB, or up to twice a full read.
    fn random_sizes(seed: u64) -> Box<dyn FnMut() -> usize + Send> {
        let mut next = crate::test_numbers(seed);
        Box::new(move || {
            1 + match next() % 4 {
                0 => next() % 16,
                1 => next() % 4096,
                _ => next() % (2 * READ_BYTES as u64),
            } as usize
        })
    }

    /// A line of exactly the cap whose newline comes in the next read is kept; one byte more
    /// is too long, whether its newline comes with it or later.
    #[test]
    fn chunk_reader_keeps_a_line_of_the_cap_split_across_reads() {
        for (len, kept) in [(MAX_LINE, true), (MAX_LINE + 1, false)] {
            for split in [len, len - 1, len + 1] {
                let mut content = vec![b'a'; len];
                content.extend_from_slice(b"\nb\n");
                let mut sizes = [split, usize::MAX].into_iter().cycle();
                let source = ShortReads {
                    data: std::io::Cursor::new(content),
                    sizes: Box::new(move || sizes.next().expect("cycles")),
                };
                let mut r = ChunkReader::from_source(Box::new(source)).unwrap();
                let first = kept.then(|| vec![b'a'; len]);
                assert_eq!(
                    chunk_lines(&mut r),
                    vec![first, Some(b"b".to_vec())],
                    "{len} {split}"
                );
            }
        }
    }

    /// Lines of every length around the cap (one under, at, one over), far over it, empty,
    /// and a last line with or without its newline, read in short reads of random sizes:
    /// the chunk reader gives what the line reader gives.
    #[test]
    fn chunk_reader_agrees_with_line_reader_on_short_reads() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 1..=6u64 {
            let mut next = crate::test_numbers(seed * 7919);
            let mut content = Vec::new();
            for i in 0..30_000u32 {
                let len = match next() % 1000 {
                    0 => MAX_LINE - 1 + (next() % 3) as usize,
                    1 => MAX_LINE * (2 + (next() % 3) as usize),
                    2 => 0,
                    _ => (next() % 200) as usize,
                };
                let fill = b'a' + (i % 26) as u8;
                content.extend(std::iter::repeat_n(fill, len));
                content.push(b'\n');
            }
            match seed % 3 {
                0 => content.extend(std::iter::repeat_n(b'z', MAX_LINE + 1)),
                1 => content.extend_from_slice(b"last without newline"),
                _ => {}
            }
            let p = dir.path().join(format!("short-{seed}.log"));
            std::fs::write(&p, &content).unwrap();
            let want = lines_of(&p);
            let source = ShortReads {
                data: std::io::Cursor::new(content.clone()),
                sizes: random_sizes(seed),
            };
            let mut r = ChunkReader::from_source(Box::new(source)).unwrap();
            let got = chunk_lines(&mut r);
            assert_eq!(got.len(), want.len(), "seed {seed}");
            assert!(got == want, "seed {seed}: the lines differ");
            assert_eq!(r.lines(), want.len() as u64);
            assert_eq!(
                r.content_digest(),
                (Some(blake3::hash(&content)), content.len() as u64)
            );
        }
    }

    #[test]
    fn reader_truncated_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.log.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..2000 {
            writeln!(enc, "line number {i} with some text").unwrap();
        }
        let bytes = enc.finish().unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let mut r = LineReader::open(&p).unwrap();
        let err = loop {
            match r.next_line() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a truncated gzip stream must not end quietly"),
                Err(e) => break e,
            }
        };
        assert!(!err.to_string().contains("line number"));
    }

    #[test]
    fn expand_inputs_globs_dirs_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.log", "a.log", "c.txt", ".hidden"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        let got = expand_inputs(&[dir.path().join("*.log"), dir.path().join("a.log")]).unwrap();
        assert_eq!(
            got,
            vec![dir.path().join("a.log"), dir.path().join("b.log")]
        );
        let got = expand_inputs(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(got.len(), 3);
        assert!(matches!(
            expand_inputs(&[dir.path().join("*.gz")]),
            Err(InputError::NoMatch { .. })
        ));
    }
}
