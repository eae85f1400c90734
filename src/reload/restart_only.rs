//! What a reload refuses to change: the settings only a restart applies.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// What only a restart changes: listeners, timeouts of the listeners,
/// worker threads, logging, the audit sinks, the revocation file's path, the
/// connection-level limits (`max_uri_bytes` changes live). Each field by its
/// path in the file and its value as a refusal shows it: two configs agree
/// on a field when they show it alike.
#[derive(Debug)]
pub struct RestartOnly([(&'static str, String); 14]);

impl RestartOnly {
    pub fn of(config: &Config) -> Self {
        let server = &config.server;
        let limits = &config.limits;
        let audit = &config.audit;
        let path = |p: &Path| p.display().to_string();
        Self([
            ("server.listen", server.listen.to_string()),
            ("server.admin_listen", server.admin_listen.to_string()),
            (
                "server.tls",
                server.tls.as_ref().map_or("off".into(), |t| {
                    format!("cert {}, key {}", path(&t.cert), path(&t.key))
                }),
            ),
            (
                "server.worker_threads",
                server
                    .worker_threads
                    .map_or("one per CPU".into(), |n| n.to_string()),
            ),
            (
                "server.client_header_timeout",
                format!("{:?}", server.client_header_timeout),
            ),
            ("server.idle_timeout", format!("{:?}", server.idle_timeout)),
            (
                "server.drain_timeout",
                format!("{:?}", server.drain_timeout),
            ),
            (
                "logging",
                format!(
                    "level {:?}, {}",
                    config.logging.level,
                    if config.logging.json { "json" } else { "text" }
                ),
            ),
            (
                "audit.sink",
                match (audit.stdout, &audit.file) {
                    (false, None) => "off".to_owned(),
                    (true, None) => "stdout".to_owned(),
                    (stdout, Some(f)) => format!(
                        "{}{}, max_file_bytes {}, keep_files {}",
                        if stdout { "stdout and " } else { "" },
                        path(&f.path),
                        f.max_bytes,
                        f.keep
                    ),
                },
            ),
            (
                "limits.max_header_bytes",
                limits.max_header_bytes.to_string(),
            ),
            ("limits.max_headers", limits.max_headers.to_string()),
            ("limits.max_connections", limits.max_connections.to_string()),
            (
                "limits.max_concurrent_streams",
                limits.max_concurrent_streams.to_string(),
            ),
            (
                "revocation.file",
                config
                    .revocation_file
                    .as_deref()
                    .map_or("none".into(), path),
            ),
        ])
    }

    /// Each field `next` changes, by its path in the file.
    pub fn changes(&self, next: &Self) -> Vec<ConfigError> {
        self.0
            .iter()
            .zip(&next.0)
            .filter(|((_, running), (_, wanted))| running != wanted)
            .map(|((path, running), _)| ConfigError {
                path: (*path).into(),
                message: format!("cannot change without a restart (running: {running})"),
            })
            .collect()
    }
}
