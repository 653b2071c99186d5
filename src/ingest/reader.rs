//! Reading input files: glob expansion, gzip by magic bytes, streamed lines with a length cap,
//! and a hash of the decompressed content (to count identical inputs once, decision 11).
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

/// Expands paths, directories (their files, sorted) and globs into a sorted, de-duplicated list.
pub fn expand_inputs(patterns: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    for pattern in patterns {
        let text = pattern.to_string_lossy();
        let before = files.len();
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
    Ok(files)
}

/// A line, or the marker of a line that was too long to keep.
pub enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// Streams the lines of one input file, decompressing gzip (all members) when the file starts
/// with the gzip magic bytes, whatever its name.
pub struct LineReader {
    inner: BufReader<HashingReader<Box<dyn Read + Send>>>,
    buf: Vec<u8>,
    line_no: u64,
    pub compressed: bool,
}

impl LineReader {
    pub fn open(path: &Path) -> io::Result<LineReader> {
        let file = File::open(path)?;
        let mut peek = BufReader::with_capacity(64 * 1024, file);
        let compressed = peek.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let decoded: Box<dyn Read + Send> = if compressed {
            Box::new(MultiGzDecoder::new(peek))
        } else {
            Box::new(peek)
        };
        Ok(LineReader {
            inner: BufReader::with_capacity(
                64 * 1024,
                HashingReader {
                    inner: decoded,
                    hasher: blake3::Hasher::new(),
                    bytes: 0,
                },
            ),
            buf: Vec::with_capacity(1024),
            line_no: 0,
            compressed,
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
        (r.hasher.finalize(), r.bytes)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
