//! Tamper evidence for audit files: every JSON Lines record carries `seq`
//! (counting across rotations) and `prev`, the SHA-256 of the previous
//! record's line. Removing, reordering or editing a record breaks the chain
//! at that point; `portcullis audit verify` finds the first break.
//!
//! A rotated file starts with the last hash of the file before it, so a
//! chain of files verifies end to end, and a single file verifies from its
//! first record on.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::{Map, Value};

/// Hash of "nothing before": the `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Appends chained records to a file, rotating it by size.
pub struct ChainWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: usize,
    seq: u64,
    prev: String,
}

impl ChainWriter {
    /// Opens `path` for appending, continuing the chain of what it holds.
    /// `max_bytes` = 0 disables rotation; `keep` rotated files are kept.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        let (seq, prev) = match File::open(path) {
            Ok(f) => last_link(BufReader::new(f))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, GENESIS.to_owned()),
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
            seq,
            prev,
        })
    }

    /// Writes one record (an object) with `seq` and `prev` added, as one
    /// line. Returns the record's hash. The caller flushes.
    pub fn append(&mut self, mut record: Map<String, Value>) -> io::Result<String> {
        if self.max_bytes > 0 && self.size >= self.max_bytes {
            self.rotate()?;
        }
        self.seq += 1;
        record.insert("seq".into(), Value::from(self.seq));
        record.insert("prev".into(), Value::String(self.prev.clone()));
        let line = serde_json::to_string(&record).map_err(io::Error::other)?;
        let hash = hex(digest(&SHA256, line.as_bytes()).as_ref());
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
        self.prev.clone_from(&hash);
        Ok(hash)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_data()
    }

    /// `audit.log` → `audit.log.1` → … → `audit.log.<keep>` (dropped).
    fn rotate(&mut self) -> io::Result<()> {
        self.flush()?;
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

/// The `seq` and hash of the last record in a file.
fn last_link(reader: impl BufRead) -> io::Result<(u64, String)> {
    let mut last = (0, GENESIS.to_owned());
    for line in reader.lines() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let seq = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("seq").and_then(Value::as_u64))
            .unwrap_or(last.0);
        last = (seq, hex(digest(&SHA256, line.as_bytes()).as_ref()));
    }
    Ok(last)
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
    let mut prev: Option<String> = None;
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
                    if claimed != expected {
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
            prev = Some(hex(digest(&SHA256, line.as_bytes()).as_ref()));
            report.last_seq = Some(seq);
            report.records += 1;
        }
    }
    Ok(report)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(n: u64) -> Map<String, Value> {
        json!({"schema": "portcullis.audit/v1", "decision": "allow", "n": n})
            .as_object()
            .unwrap()
            .clone()
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("portcullis-chain-{:x}", fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_written_chain_verifies_across_reopen_and_rotation() {
        let d = dir();
        let log = d.join("audit.log");
        let mut w = ChainWriter::open(&log, 400, 5).unwrap();
        for n in 0..5 {
            w.append(record(n)).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        // Reopening continues the chain.
        let mut w = ChainWriter::open(&log, 400, 5).unwrap();
        for n in 5..12 {
            w.append(record(n)).unwrap();
        }
        w.flush().unwrap();
        let mut files: Vec<PathBuf> = (1..=5)
            .rev()
            .map(|i| d.join(format!("audit.log.{i}")))
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
        let log = d.join("audit.log");
        let mut w = ChainWriter::open(&log, 0, 0).unwrap();
        for n in 0..5 {
            w.append(record(n)).unwrap();
        }
        w.flush().unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        let check = |lines: &[String]| {
            let p = d.join(format!("t{:x}.log", fastrand::u64(..)));
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
