//! The token-leak check: every token minted and every Authorization value
//! sent by a test is remembered, and each gateway's audit file and the
//! process's log lines (captured at debug level) must contain none of them.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Values shorter than this are too generic to search for ("x", "Bearer").
const MIN_SECRET: usize = 16;

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Logs written so far, and how far they were scanned.
fn logs() -> &'static Mutex<(Vec<u8>, usize)> {
    static LOGS: OnceLock<Mutex<(Vec<u8>, usize)>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new((Vec::new(), 0)))
}

/// Remembers a token or an Authorization value, and the parts of it that
/// would give it away on their own (the signature, the scheme's credential).
pub fn remember(value: &str) {
    let mut parts = vec![value.to_owned()];
    if let Some((_, credential)) = value.split_once(' ') {
        parts.push(credential.trim().to_owned());
    }
    if let Some(signature) = value.rsplit('.').next()
        && value.contains('.')
    {
        parts.push(signature.to_owned());
    }
    let mut s = secrets().lock().unwrap();
    for p in parts {
        if p.len() >= MIN_SECRET && !s.contains(&p) {
            s.push(p);
        }
    }
}

/// Fails if `text` contains a remembered secret.
pub fn assert_absent(what: &str, text: &str) {
    let found = secrets()
        .lock()
        .unwrap()
        .iter()
        .find_map(|secret| text.find(secret.as_str()));
    if let Some(at) = found {
        let line = text[..at].lines().count();
        panic!("a token or Authorization value appears in the {what} (line {line})");
    }
}

/// Scans the log lines written since the last scan.
pub fn assert_logs_clean() {
    let mut logs = logs().lock().unwrap();
    let (buffer, scanned) = &mut *logs;
    let text = String::from_utf8_lossy(&buffer[*scanned..]).into_owned();
    *scanned = buffer.len();
    drop(logs);
    assert_absent("gateway logs", &text);
}

/// Sends this process's `tracing` output, at debug level for the gateway,
/// to the scanned buffer. Once per process.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("portcullis=debug,info"))
            .with_writer(Capture)
            .with_ansi(false)
            .try_init();
    });
}

#[derive(Clone, Copy)]
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        Capture
    }
}
