//! The README's configuration reference covers every key the config file
//! accepts: a key added to `src/config/file.rs` without a row fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_configuration_reference_names_every_key() {
    let readme = read("README.md");
    let start = readme.find("## Configuration reference").unwrap();
    let end = start + readme[start..].find("\n## ").unwrap();
    let reference = &readme[start..end];
    let source = read("src/config/file.rs");
    let keys: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(keys.len() > 50, "{keys:?}");
    let documented = |key: &str| {
        let shown = [
            format!("`{key}`"),
            format!(".{key}`"),
            format!("`{key} "),
            format!("[{key}]"),
            format!(" {key},"),
            format!(" {key} }}"),
        ];
        shown.iter().any(|s| reference.contains(s.as_str()))
            || key
                .strip_prefix("include_")
                .or_else(|| key.strip_prefix("exclude_"))
                .is_some_and(|kind| reference.contains(&format!("`{kind}`")))
    };
    let missing: Vec<&str> = keys.into_iter().filter(|k| !documented(k)).collect();
    assert!(
        missing.is_empty(),
        "not in the README's configuration reference: {missing:?}"
    );
}
