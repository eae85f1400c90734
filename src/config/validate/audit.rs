//! `[audit]`.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Sink {
    Off,
    Stdout,
    File,
    Both,
}

pub(super) fn audit(errs: &mut Errors, f: AuditFile, base: &Path) -> AuditConfig {
    let sink = errs.choice(
        "audit.sink",
        f.sink.as_deref(),
        &[
            ("stdout", Sink::Stdout),
            ("file", Sink::File),
            ("both", Sink::Both),
            ("off", Sink::Off),
        ],
        Sink::Stdout,
    );
    let wants_file = matches!(sink, Sink::File | Sink::Both);
    let file = match (wants_file, f.file) {
        (true, Some(path)) => {
            let path = base.join(path);
            match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => errs.push(
                    "audit.file",
                    format!("directory {} does not exist", dir.display()),
                ),
                _ => {}
            }
            Some(AuditFileConfig {
                path,
                max_bytes: f.max_file_bytes.map_or(100 * 1024 * 1024, |b| b.0),
                keep: f.keep_files.unwrap_or(10),
            })
        }
        (true, None) => {
            errs.push("audit.file", "required when sink is \"file\" or \"both\"");
            None
        }
        (false, Some(_)) => {
            errs.push(
                "audit.file",
                "set sink = \"file\" or \"both\" to write records to a file",
            );
            None
        }
        (false, None) => None,
    };
    if !wants_file && (f.max_file_bytes.is_some() || f.keep_files.is_some()) {
        errs.push(
            "audit",
            "max_file_bytes and keep_files apply to a file sink only",
        );
    }
    let queue_capacity = f.queue_capacity.unwrap_or(8192);
    if !(1..=1_000_000).contains(&queue_capacity) {
        errs.push("audit.queue_capacity", "must be between 1 and 1000000");
    }
    let block = errs.choice(
        "audit.overflow",
        f.overflow.as_deref(),
        &[("block", true), ("drop", false)],
        true,
    );
    let overflow = if block {
        AuditOverflow::Block(errs.duration(
            "audit.block_timeout",
            f.block_timeout.as_deref(),
            secs(1),
        ))
    } else {
        if f.block_timeout.is_some() {
            errs.push(
                "audit.block_timeout",
                "applies to overflow = \"block\" only",
            );
        }
        AuditOverflow::Drop
    };
    let on_failure = errs.choice(
        "audit.on_failure",
        f.on_failure.as_deref(),
        &[("deny", AuditFailure::Deny), ("allow", AuditFailure::Allow)],
        AuditFailure::Deny,
    );
    AuditConfig {
        stdout: matches!(sink, Sink::Stdout | Sink::Both),
        file,
        policy: AuditPolicy {
            queue_capacity,
            overflow,
            on_failure,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

    #[test]
    fn audit_settings_are_checked_together() {
        let audit = |body: &str| errors(&format!("{UPSTREAM}[audit]\n{body}"));
        assert_eq!(
            audit("sink = \"file\""),
            ["audit.file: required when sink is \"file\" or \"both\""]
        );
        assert_eq!(
            audit("file = \"/tmp/a.jsonl\""),
            ["audit.file: set sink = \"file\" or \"both\" to write records to a file"]
        );
        assert_eq!(
            audit("sink = \"file\"\nfile = \"/nonexistent-dir/a.jsonl\""),
            ["audit.file: directory /nonexistent-dir does not exist"]
        );
        assert_eq!(
            audit(
                "sink = \"syslog\"\nqueue_capacity = 0\noverflow = \"drop\"\nblock_timeout = \"1s\"\nkeep_files = 3"
            ),
            [
                "audit.sink: \"syslog\" is not one of \"stdout\", \"file\", \"both\", \"off\"",
                "audit: max_file_bytes and keep_files apply to a file sink only",
                "audit.queue_capacity: must be between 1 and 1000000",
                "audit.block_timeout: applies to overflow = \"block\" only",
            ]
        );
        let c = parse(&format!(
            "{UPSTREAM}[audit]\nsink = \"both\"\nfile = \"a.jsonl\"\noverflow = \"drop\"\non_failure = \"allow\"\n"
        ))
        .unwrap();
        assert!(c.audit.stdout && c.audit.is_enabled());
        assert_eq!(c.audit.file.unwrap().path, Path::new("./a.jsonl"));
        assert!(
            !parse(&format!("{UPSTREAM}[audit]\nsink = \"off\"\n"))
                .unwrap()
                .audit
                .is_enabled()
        );
    }
}
