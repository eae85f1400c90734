//! What ships beside the code agrees with it: the container build, and the
//! configuration reference in `docs/configuration.md` (a key added to `src/config/file.rs`
//! without a row fails here). The manifests themselves are checked in CI:
//! Kubernetes schemas, kustomize rendering, `deploy/kubernetes/check.py`,
//! `systemd-analyze verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The container build compiles the dependencies against empty sources
/// first; Cargo refuses a manifest whose bench or example targets have no
/// file, so the Containerfile must stub every one.
#[test]
fn the_container_build_stubs_every_bench_target() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let mut benches: Vec<&str> = manifest["bench"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    benches.sort_unstable();
    let containerfile = read("deploy/container/Containerfile");
    let stub = containerfile
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("&& for b in "))
        .expect("the bench stub loop");
    let mut stubbed: Vec<&str> = stub.split(';').next().unwrap().split_whitespace().collect();
    stubbed.sort_unstable();
    assert_eq!(stubbed, benches);
    for example in manifest["example"].as_array().unwrap() {
        let path = example["path"].as_str().unwrap();
        assert!(
            containerfile.contains(&format!("echo 'fn main() {{}}' > {path}")),
            "the Containerfile does not stub {path}"
        );
    }
}

/// The build context is a whitelist: everything the Containerfile copies
/// must be in it.
#[test]
fn the_container_context_holds_what_the_build_copies() {
    let ignore = read(".dockerignore");
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let containerfile = read("deploy/container/Containerfile");
    let copied: Vec<&str> = containerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert!(!copied.is_empty());
    for path in copied {
        assert!(
            allowed.contains(&path.trim_end_matches('/')),
            "{path} is copied but .dockerignore leaves it out"
        );
    }
}

/// The configuration reference names every key the config file accepts.
#[test]
fn the_configuration_reference_names_every_key() {
    let reference = read("docs/configuration.md");
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
        "not in docs/configuration.md: {missing:?}"
    );
}
