//! `portcullis check` and `--help`: every error with its path, warnings, and
//! help for every subcommand.

use super::*;

#[test]
fn every_example_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deploy = root.join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(root.join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.push(deploy.join("base/portcullis.toml"));
    for overlay in std::fs::read_dir(deploy.join("overlays")).unwrap() {
        files.push(overlay.unwrap().path().join("portcullis.toml"));
    }
    let mut seen = 0;
    let beside_a_certificate = temp_dir();
    for mut path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed: toml::Table = toml::from_str(&text).unwrap();
            if let Some(tls) = parsed.get("server").and_then(|s| s.get("tls")) {
                // The certificate comes from a Secret at run time: check
                // the config beside a throwaway one at the same paths.
                let dir = &beside_a_certificate;
                let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
                for (part, pem) in [
                    ("cert", cert.cert.pem()),
                    ("key", cert.signing_key.serialize_pem()),
                ] {
                    let file = dir.path().join(tls[part].as_str().unwrap());
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(file, pem).unwrap();
                }
                path = dir.path().join("portcullis.toml");
                std::fs::write(&path, text).unwrap();
            }
            let out = portcullis()
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen >= 9, "the example configs are missing");
}

#[test]
fn check_reports_every_error_with_its_path_and_exits_64() {
    let out = check_text(
        r#"
[server]
drain_timeout = "5 parsecs"

[upstream]
url = "http://127.0.0.1:8000/with/path"

[[issuers]]
name = "a"
kind = "entra"
tenants = []
audiences = ["api://x"]

[[issuers]]
name = "b"
kind = "oidc"
issuer = "https://idp.example"
jwks_uri = "http://idp.example/keys"
audiences = []
algorithms = ["HS256", "none"]

[[routes]]
name = "r"
prefix = "/"
issuers = ["nobody"]
"#,
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "server.drain_timeout: invalid duration",
        "upstream.url: must be http(s)://host[:port] without a path",
        "issuers[0].tenants: must not be empty",
        "issuers[1].jwks_uri: plain http is allowed only for loopback hosts",
        "issuers[1].audiences: must not be empty",
        "issuers[1].algorithms[0]: \"HS256\" is refused",
        "issuers[1].algorithms[1]: \"none\" is refused",
        "routes[0].issuers[0]: no issuer named \"nobody\"",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn orphaned_agents_are_a_warning_not_an_error() {
    let out = check_text(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[agents]]\nid = \"a1\"\nname = \"Nobody's agent\"\n",
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: agents[0].owner: agent \"Nobody's agent\" has no owner (orphaned agent)"
        ),
        "{stderr}"
    );
}

#[test]
fn check_reports_unknown_keys_wrong_types_and_semantic_errors_in_one_run() {
    let out = check_text(
        r#"
[server]
listen = 8080

[upstream]
url = "http://127.0.0.1:1"
conect_timeout = "1s"

[[issuers]]
name = "idp"
kind = "oidc"
issuer = "https://idp.example"
audiences = "api://x"

[[routes]]
name = "chat"
prefix = "/chat"
scopes = ["Models.Invoke", 7]
max_body_bytes = "1MB"

[[routes]]
prefix = "/x"
scpoes = ["b"]
max_body_bytes = "lots"
issuers = ["nobody"]

[[policies]]
name = "p"
"#,
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().skip(1).map(str::trim).collect();
    for want in [
        "server.listen: invalid type: integer `8080`, expected a string",
        "upstream.conect_timeout: unknown key `conect_timeout`, expected one of `name`, `url`, `host_header`, `credential`, `connect_timeout`,",
        "issuers[0].audiences: invalid type: string \"api://x\", expected a sequence",
        "routes[0].scopes[1]: invalid type: integer `7`, expected a string",
        "routes[1].scpoes: unknown key `scpoes`, expected one of `name`, `path`, `prefix`, `methods`, `scopes`,",
        "routes[1].max_body_bytes: invalid value: string \"lots\", expected a size: a number of bytes or a string like \"64KiB\" or \"1MiB\"",
        "routes[1].name: must be non-empty letters, digits, '_', '-' or '.'",
        "routes[1].issuers[0]: no issuer named \"nobody\"",
        "policies[0].grant: required: \"block\" or \"require\"",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{stderr}"
        );
    }
    // A value left out for its type is not reported again as missing, and
    // "1MB" is a size.
    assert_eq!(lines.len(), 9, "{stderr}");
}

#[test]
fn sizes_are_bytes_or_human_strings_and_a_config_that_serves_nothing_is_a_warning() {
    let out = check_text(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[limits]\nmax_header_bytes = \"64KiB\"\nmax_uri_bytes = 4096\n[audit]\nsink = \"file\"\nfile = \"/tmp/a.log\"\nmax_file_bytes = \"10 MiB\"\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: routes: none configured: every request is refused (no_route)"),
        "{stderr}"
    );
}

#[test]
fn route_conflicts_are_reported_by_check() {
    let out = check_text(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nname = \"a\"\npath = \"/x/{a}\"\npublic = true\n[[routes]]\nname = \"b\"\npath = \"/x/{b}\"\npublic = true\n",
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[1].path"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["dev", "--help"],
        &["explain", "--help"],
        &["audit", "verify", "--help"],
    ] {
        let out = portcullis().args(sub).output().unwrap();
        assert!(out.status.success(), "{sub:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub:?}"
        );
    }
}
