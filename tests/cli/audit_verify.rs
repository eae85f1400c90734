//! `portcullis audit verify`: intact and broken chains.

use super::*;

#[test]
fn audit_verify_reports_intact_and_broken_chains() {
    let dir = temp_dir();
    let log = dir.path().join("audit.log");
    let (mut file, mut chain) = portcullis::audit::AuditFile::open(&log, 0, 0).unwrap();
    for n in 0..3 {
        let record = serde_json::json!({"schema": "portcullis.audit/v1", "n": n});
        let mut line = Vec::new();
        chain.link(&serde_json::to_vec(&record).unwrap(), &mut line);
        file.append(&line).unwrap();
    }
    let out = portcullis()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ok: 3 records intact (records 1 to 3, from the start of the chain)")
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let without_second: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&log, without_second.join("\n") + "\n").unwrap();
    let out = portcullis()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(":2: record 2 is missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = portcullis()
        .args(["audit", "verify", "/nonexistent/audit.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
