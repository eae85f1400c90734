//! Tamper evidence for audit files: every JSON Lines record carries `seq`
//! (counting across rotations) and `prev`, the SHA-256 of the previous
//! record's line. Removing, reordering or editing a record breaks the chain
//! at that point; `portcullis audit verify` finds the first break.
//!
//! A rotated file starts with the last hash of the file before it, so a
//! chain of files verifies end to end, and a single file verifies from its
//! first record on.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::Value;

use crate::text::hex_pair;

/// Hash of "nothing before": the `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's state: the last `seq` and the hash of the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    seq: u64,
    /// Hex SHA-256 of the last line.
    prev: [u8; 64],
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            seq: 0,
            prev: [b'0'; 64],
        }
    }
}

impl Chain {
    /// Turns an encoded JSON object into the next line of the chain: the
    /// object with `seq` and `prev` appended, and a newline.
    pub fn link(&mut self, object: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        // Why: the object ends with `}`; the chain fields go inside it.
        let body = object.strip_suffix(b"}").unwrap_or(object);
        out.extend_from_slice(body);
        if body.len() > 1 {
            out.push(b',');
        }
        self.seq += 1;
        out.extend_from_slice(b"\"seq\":");
        let _ = serde_json::to_writer(&mut *out, &self.seq);
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(b"\"}");
        self.prev = hex_array(digest(&SHA256, &out[start..]).as_ref());
        out.push(b'\n');
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// An append-only audit file, rotated by size: `audit.log` →
/// `audit.log.1` → … → `audit.log.<keep>` (then dropped).
pub struct AuditFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
}

impl AuditFile {
    /// Opens `path` for appending, and reads where its chain ends (the
    /// last line's `seq` and hash) so that the chain continues.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<(Self, Chain)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        // Why: only a regular file has a chain to continue (not /dev/full,
        // a FIFO or a terminal).
        let chain = if meta.is_file() {
            last_link(path, meta.len())?
        } else {
            Chain::default()
        };
        let size = if meta.is_file() { meta.len() } else { 0 };
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                size,
                max_bytes,
                keep,
            },
            chain,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes this file takes before it rotates: a write that reaches them
    /// is the file's last (a full file rotates first, so then a whole
    /// file's worth).
    pub fn room(&self) -> usize {
        let room = match self.max_bytes {
            0 => u64::MAX,
            max if self.is_full() => max,
            max => max - self.size,
        };
        usize::try_from(room).unwrap_or(usize::MAX)
    }

    /// The next write goes to a fresh file.
    fn is_full(&self) -> bool {
        self.max_bytes > 0 && self.size >= self.max_bytes
    }

    /// Appends whole lines in one write. On failure the file is cut back
    /// to where it was, so a retry never leaves half a record behind.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.is_full() {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(lines) {
            if self.file.metadata().is_ok_and(|m| m.is_file()) {
                let _ = self.file.set_len(self.size);
            }
            return Err(e);
        }
        self.size += lines.len() as u64;
        Ok(())
    }

    /// Forces written records to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let rotated = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(rotated(self.keep));
            for n in (1..self.keep).rev() {
                match std::fs::rename(rotated(n), rotated(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Where the chain in a file ends: the last complete line's `seq` and
/// hash. Reads only the file's tail.
fn last_link(path: &Path, len: u64) -> io::Result<Chain> {
    const TAIL: u64 = 1 << 20;
    let mut file = File::open(path)?;
    let from = len.saturating_sub(TAIL);
    file.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = match tail.iter().rposition(|b| *b == b'\n') {
        // A torn last line (no newline) is not part of the chain.
        Some(end) => &tail[..end],
        None => return Ok(Chain::default()),
    };
    let last = text
        .rsplit(|b| *b == b'\n')
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if last.is_empty() || (from > 0 && last.len() == text.len()) {
        return Ok(Chain::default());
    }
    let seq = serde_json::from_slice::<Value>(last)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(0);
    Ok(Chain {
        seq,
        prev: hex_array(digest(&SHA256, last).as_ref()),
    })
}

/// What a verification found.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// `prev` of the first record: `GENESIS`, or the hash of a record in a
    /// file not given (an earlier rotation).
    pub starts_after: Option<String>,
}

/// Where and how a chain breaks.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct ChainBreak {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// Verifies files given oldest first (`audit.log.2 audit.log.1 audit.log`).
pub fn verify(paths: &[PathBuf]) -> Result<Verified, ChainBreak> {
    let mut report = Verified {
        records: 0,
        first_seq: None,
        last_seq: None,
        starts_after: None,
    };
    let mut prev: Option<[u8; 64]> = None;
    for path in paths {
        let file = path.display().to_string();
        let broken = |line: usize, problem: String| ChainBreak {
            file: file.clone(),
            line,
            problem,
        };
        let reader =
            BufReader::new(File::open(path).map_err(|e| broken(0, format!("cannot read: {e}")))?);
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| broken(n, format!("cannot read: {e}")))?;
            if line.is_empty() {
                continue;
            }
            let record: Value =
                serde_json::from_str(&line).map_err(|e| broken(n, format!("not JSON: {e}")))?;
            let seq = record
                .get("seq")
                .and_then(Value::as_u64)
                .ok_or_else(|| broken(n, "no seq".into()))?;
            let claimed = record
                .get("prev")
                .and_then(Value::as_str)
                .ok_or_else(|| broken(n, "no prev".into()))?;
            match (&prev, report.last_seq) {
                (None, _) => {
                    report.first_seq = Some(seq);
                    report.starts_after = Some(claimed.to_owned());
                }
                (Some(expected), Some(last)) => {
                    if seq != last + 1 {
                        return Err(broken(
                            n,
                            format!("record {} is missing (found seq {seq})", last + 1),
                        ));
                    }
                    if claimed.as_bytes() != expected {
                        return Err(broken(
                            n,
                            format!(
                                "record {} does not follow record {last}: the chain is broken",
                                seq
                            ),
                        ));
                    }
                }
                (Some(_), None) => {}
            }
            prev = Some(hex_array(digest(&SHA256, line.as_bytes()).as_ref()));
            report.last_seq = Some(seq);
            report.records += 1;
        }
    }
    Ok(report)
}

/// A SHA-256 digest in lower-case hex.
fn hex_array(digest: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(digest) {
        pair.copy_from_slice(&hex_pair(*b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(n: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({"schema": "portcullis.audit/v1", "decision": "allow", "n": n}))
            .unwrap()
    }

    /// Writes records `from..to` the way the audit writer does.
    fn write(path: &Path, max_bytes: u64, keep: usize, records: std::ops::Range<u64>) {
        let (mut file, mut chain) = AuditFile::open(path, max_bytes, keep).unwrap();
        for n in records {
            let mut line = Vec::new();
            chain.link(&record(n), &mut line);
            file.append(&line).unwrap();
        }
        file.sync().unwrap();
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_written_chain_verifies_across_reopen_and_rotation() {
        let d = dir();
        let log = d.path().join("audit.log");
        write(&log, 400, 5, 0..5);
        // Reopening continues the chain.
        write(&log, 400, 5, 5..12);
        let mut files: Vec<PathBuf> = (1..=5)
            .rev()
            .map(|i| d.path().join(format!("audit.log.{i}")))
            .filter(|p| p.exists())
            .collect();
        assert!(!files.is_empty(), "rotation happened");
        files.push(log.clone());
        let report = verify(&files).unwrap();
        assert_eq!(report.records, 12);
        assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(12)));
        assert_eq!(report.starts_after.as_deref(), Some(GENESIS));
        // The newest file alone verifies from its first record on.
        let alone = verify(std::slice::from_ref(&log)).unwrap();
        assert_ne!(alone.starts_after.as_deref(), Some(GENESIS));
    }

    #[test]
    fn removal_edits_and_reordering_are_found() {
        let d = dir();
        let log = d.path().join("audit.log");
        write(&log, 0, 0, 0..5);
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let check = |lines: &[String]| {
            let p = d.path().join(format!("t{:x}.log", fastrand::u64(..)));
            std::fs::write(&p, lines.join("\n") + "\n").unwrap();
            verify(&[p])
        };
        assert!(check(&lines).is_ok());

        let mut removed = lines.clone();
        removed.remove(2);
        let err = check(&removed).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.problem.contains("record 3 is missing"), "{err}");

        let mut edited = lines.clone();
        edited[1] = edited[1].replace("\"allow\"", "\"deny\"");
        let err = check(&edited).unwrap_err();
        assert_eq!(
            err.line, 3,
            "the record after the edited one no longer follows"
        );
        assert!(err.problem.contains("chain is broken"), "{err}");

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert!(check(&swapped).is_err());

        let mut truncated_head = lines.clone();
        truncated_head.remove(0);
        let ok = check(&truncated_head).unwrap();
        assert_eq!(
            ok.first_seq,
            Some(2),
            "a file may start mid-chain; verify says where"
        );
    }
}
