//! The local log on disk: `<dir>/<utc-time>-<n>.ndjson` segment files, one record per
//! line, whose names sort in creation order.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The segment files of a stream directory (`events/`, `quarantine/`), oldest first.
///
/// # Errors
/// The directory cannot be read.
pub fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    files.sort();
    Ok(files)
}

// `#[inline]` on the generic readers: their instances then sit beside the caller's
// closure, which the hot loop calls once per record. (Without it the audit bench read
// 5-7 % slower than when the reader lived in the audit's own module; with it, level
// within this machine's noise.)

/// Calls `f` with every line of every segment in `dir`, in segment order; a missing
/// directory has no lines. Files are read in large chunks and split in place (no copy
/// per line); the text is checked as UTF-8 once per chunk, so a JSON parser need not
/// check each string again. Lines that are not UTF-8 are skipped.
///
/// # Errors
/// A segment cannot be read.
#[inline]
pub fn for_each_line(dir: &Path, f: impl FnMut(&str)) -> std::io::Result<()> {
    for_each_chunked(dir, 4 << 20, f)
}

#[inline]
fn for_each_chunked(dir: &Path, chunk: usize, mut f: impl FnMut(&str)) -> std::io::Result<()> {
    let mut blocks = Blocks::open(dir, chunk)?;
    let mut buffer = Vec::with_capacity(chunk);
    while blocks.next_into(&mut buffer)? {
        split_lines(&buffer, &mut f);
    }
    Ok(())
}

/// The segments of a stream directory as blocks of whole lines, about `size` bytes each
/// (longer when one line is), in order: what parallel readers hand out to workers.
pub struct Blocks {
    files: std::vec::IntoIter<PathBuf>,
    file: Option<std::fs::File>,
    size: usize,
    /// The start of a line read past the end of the last block.
    carry: Vec<u8>,
}

impl Blocks {
    /// The blocks of `dir`'s segments; a missing directory has none.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn open(dir: &Path, size: usize) -> std::io::Result<Blocks> {
        let files = match segments(dir) {
            Ok(files) => files,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Blocks::of(files, size))
    }

    /// As [`Blocks::open`], without the segments that ended before `from` (unix µs,
    /// when given): see [`segments_from`].
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn open_from(dir: &Path, size: usize, from: Option<i64>) -> std::io::Result<Blocks> {
        let mut blocks = Blocks::open(dir, size)?;
        if let Some(from) = from {
            let files: Vec<PathBuf> = blocks.files.collect();
            blocks.files = segments_from(&files, from).into_iter();
        }
        Ok(blocks)
    }

    /// The blocks of these files, in this order.
    fn of(files: Vec<PathBuf>, size: usize) -> Blocks {
        Blocks {
            files: files.into_iter(),
            file: None,
            size: size.max(1),
            carry: Vec::new(),
        }
    }

    /// Replaces `buffer`'s contents with the next block (its capacity is reused); false
    /// when every segment has been read. A block never ends inside a line: the end of
    /// a file ends its last line.
    ///
    /// # Errors
    /// A segment cannot be read.
    pub fn next_into(&mut self, buffer: &mut Vec<u8>) -> std::io::Result<bool> {
        buffer.clear();
        buffer.append(&mut self.carry);
        loop {
            let Some(file) = &mut self.file else {
                match self.files.next() {
                    Some(path) => {
                        self.file = Some(std::fs::File::open(path)?);
                        continue;
                    }
                    None => return Ok(!buffer.is_empty()),
                }
            };
            let want = self.size.max(buffer.len() + 1) - buffer.len();
            buffer.reserve(want);
            // Reads into the spare capacity without zeroing it first.
            let n = Read::take(&mut *file, want as u64).read_to_end(buffer)?;
            if n == 0 {
                // The end of a file ends its last line.
                self.file = None;
                if buffer.last().is_some_and(|b| *b != b'\n') {
                    buffer.push(b'\n');
                }
                if buffer.len() >= self.size {
                    return Ok(true);
                }
                continue;
            }
            if buffer.len() < self.size {
                continue;
            }
            match buffer.iter().rposition(|b| *b == b'\n') {
                Some(i) => {
                    self.carry.extend_from_slice(&buffer[i + 1..]);
                    buffer.truncate(i + 1);
                    return Ok(true);
                }
                // One line longer than the block: read on.
                None => continue,
            }
        }
    }
}

/// The segments that may hold records logged at or after `from` (unix µs). A segment is
/// written from its creation (the time in its name, `20261118T000000.123456Z-0000`) until
/// the next one is created, and a record's `timestamp_server` is stamped before it is
/// written: a segment whose successor was created at or before `from` holds nothing
/// that late. Names that are not times keep their segment.
pub fn segments_from(files: &[PathBuf], from: i64) -> Vec<PathBuf> {
    files
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            files
                .get(i + 1)
                .and_then(|next| created(next))
                .is_none_or(|next| next > from)
        })
        .map(|(_, f)| f.clone())
        .collect()
}

/// When a segment was created (unix µs), from its name.
fn created(path: &Path) -> Option<i64> {
    let name = path.file_name()?.to_str()?;
    let stamp = name.get(..name.find('Z')? + 1)?;
    if stamp.len() < 16 || stamp.as_bytes()[8] != b'T' || !stamp.is_ascii() {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..]
    );
    let t =
        time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1000) as i64)
}

/// Calls `f` with every non-empty line of a block; lines that are not UTF-8 are skipped.
#[inline]
pub fn split_lines(chunk: &[u8], f: &mut impl FnMut(&str)) {
    match std::str::from_utf8(chunk) {
        Ok(text) => text.split_terminator('\n').for_each(f),
        // Rare: find the bad line(s) and skip them.
        Err(_) => chunk
            .split(|b| *b == b'\n')
            .filter_map(|line| std::str::from_utf8(line).ok())
            .filter(|line| !line.is_empty())
            .for_each(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_survive_chunk_boundaries_long_lines_and_a_missing_last_newline() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(100);
        std::fs::write(dir.path().join("1.ndjson"), format!("a\nbb\n{long}\nccc\n")).unwrap();
        std::fs::write(dir.path().join("2.ndjson"), b"d\n\xff\xfe\ne").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a segment\n").unwrap();
        let mut seen = Vec::new();
        for_each_chunked(dir.path(), 16, |line| seen.push(line.to_owned())).unwrap();
        assert_eq!(seen, ["a", "bb", long.as_str(), "ccc", "d", "e"]);
    }

    #[test]
    fn blocks_hold_whole_lines_and_together_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let long = "y".repeat(50);
        std::fs::write(dir.path().join("1.ndjson"), format!("a\n{long}\nbb\nccc")).unwrap();
        std::fs::write(dir.path().join("2.ndjson"), "dd\ne\n").unwrap();
        let mut blocks = Blocks::open(dir.path(), 8).unwrap();
        let mut buffer = Vec::new();
        let mut all = Vec::new();
        while blocks.next_into(&mut buffer).unwrap() {
            assert_eq!(buffer.last(), Some(&b'\n'), "{buffer:?}");
            all.extend_from_slice(&buffer);
        }
        assert_eq!(
            String::from_utf8(all).unwrap(),
            format!("a\n{long}\nbb\nccc\ndd\ne\n")
        );
    }

    #[test]
    fn segments_that_ended_before_a_time_are_skipped() {
        let files: Vec<PathBuf> = [
            "20261101T000000.000001Z-0000.ndjson",
            "20261102T120000.5Z-0000.ndjson",
            "20261103T000000Z-0000.ndjson",
            "notes-0001.ndjson",
        ]
        .iter()
        .map(Into::into)
        .collect();
        // 2026-11-02T13:00:00Z: the first ended when the second began, before it; the
        // second runs on until the third, past it.
        assert_eq!(
            segments_from(&files, 1_793_624_400_000_000),
            files[1..].to_vec()
        );
        // 2026-11-02T12:00:00.4Z, before the second began: all of them.
        assert_eq!(segments_from(&files, 1_793_620_800_400_000), files);
    }

    #[test]
    fn a_missing_directory_has_no_lines() {
        let mut seen = 0;
        for_each_line(Path::new("/nonexistent/tollgate"), |_| seen += 1).unwrap();
        assert_eq!(seen, 0);
    }
}
