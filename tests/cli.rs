//! The `portcullis` binary: `check`, `--help`, and a full `run` lifecycle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// Writes `text` to a fresh config file and runs `portcullis check` on it.
fn check_text(text: &str) -> std::process::Output {
    let path = temp_dir().join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    portcullis()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

/// Spawns the binary with stdout or stderr piped, and streams its lines.
fn spawn_lines(
    command: &mut Command,
    stderr: bool,
) -> (KillOnDrop, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = if stderr {
        command.stderr(Stdio::piped()).spawn().unwrap()
    } else {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stream: Box<dyn std::io::Read + Send> = if stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (KillOnDrop(child), rx)
}

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
    for mut path in files {
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let parsed: toml::Table = toml::from_str(&text).unwrap();
            if let Some(tls) = parsed.get("server").and_then(|s| s.get("tls")) {
                // The certificate comes from a Secret at run time: check
                // the config beside a throwaway one at the same paths.
                let dir = temp_dir();
                let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
                for (part, pem) in [
                    ("cert", cert.cert.pem()),
                    ("key", cert.signing_key.serialize_pem()),
                ] {
                    let file = dir.join(tls[part].as_str().unwrap());
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    std::fs::write(file, pem).unwrap();
                }
                path = dir.join("portcullis.toml");
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
        "upstream.conect_timeout: unknown key `conect_timeout`, expected one of `url`, `connect_timeout`,",
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

/// The real binary: start from a file, serve an allowed and a refused
/// request, then drain and exit 0 on SIGTERM. Logs are JSON lines, the
/// per-request ones in a span that names the request id; the audit file it
/// leaves verifies with `portcullis audit verify`.
#[tokio::test]
async fn run_serves_then_exits_cleanly_on_sigterm() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = temp_dir();
    let path = dir.join("gateway.toml");
    let audit = dir.join("audit.jsonl");
    std::fs::write(
        &path,
        format!(
            "{}\n[logging]\nformat = \"json\"\n\n[audit]\nsink = \"file\"\nfile = \"audit.jsonl\"\n",
            config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)
                .replace("[server]\n", "[server]\nworker_threads = 3\n")
        ),
    )
    .unwrap();
    let (mut child, mut rx) = spawn_lines(
        portcullis()
            .args(["run", "--config"])
            .arg(&path)
            .env("PORTCULLIS_LOG", "info,portcullis::proxy=debug"),
        true,
    );
    // Wait for two events the binary logs: the bound address (port 0 in the
    // config) with the runtime's workers, and the first key set loaded.
    let mut addr = None;
    let mut keys_loaded = false;
    let mut logs = Vec::new();
    while addr.is_none() || !keys_loaded {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("startup log lines in time")
            .expect("the binary is running");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let Some(a) = v["fields"]["addr"].as_str() {
            addr = Some(a.to_owned());
            assert_eq!(v["fields"]["workers"], 3, "{line}");
        }
        keys_loaded |= v["fields"]["message"] == "key set loaded";
        logs.push(line);
    }
    let addr = addr.unwrap();
    let token = idp.token().sign();
    let url = format!("http://{addr}/x");
    let req = Request::get(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "cli-request-1")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(req).await.status(), StatusCode::OK);
    assert_eq!(get(&url, None).await.status(), StatusCode::UNAUTHORIZED);
    // A refused token: its decisive claims are logged at debug, not it.
    let elsewhere = idp.token().aud("api://another-api").sign();
    assert_eq!(
        get(&url, Some(&elsewhere)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // SIGHUP reloads the file: the route now wants a scope the token lacks.
    let pid = child.0.id().to_string();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "scopes = [\"Models.Invoke\"]",
            "scopes = [\"Models.Admin\"]",
        ),
    )
    .unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("reload logged in time")
            .expect("the binary is running");
        let done = line.contains("configuration reloaded");
        logs.push(line);
        if done {
            break;
        }
    }
    assert_eq!(
        get(&url, Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit: {exit:?}");
    while let Ok(line) = rx.try_recv() {
        logs.push(line);
    }
    // Nothing the binary logged may contain a token.
    assert!(
        logs.iter()
            .all(|l| !l.contains(&token) && !l.contains(&elsewhere))
    );
    let fields = |message: &str| {
        logs.iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["fields"]["message"] == message)
            .map(|v| v["fields"].clone())
            .collect::<Vec<_>>()
    };
    let refused = fields("token refused");
    assert_eq!(refused.len(), 1, "{}", logs.join("\n"));
    assert_eq!(refused[0]["reason"], "wrong_audience");
    assert_eq!(refused[0]["aud"], "api://another-api");
    assert_eq!(refused[0]["iss"], idp.issuer());
    assert_eq!(refused[0]["scopes"], "Models.Invoke");
    assert!(refused[0]["exp"].is_i64());
    // A denial names what the verified token holds.
    assert!(
        fields("request decided").iter().any(|f| f["status"] == 403
            && f["reason"] == "scope_missing"
            && f["scopes"] == "Models.Invoke"
            && f["route"] == "api"
            && f["kind"] == "user"),
        "{}",
        logs.join("\n")
    );
    let in_span = logs.iter().any(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["span"]["request_id"] == "cli-request-1" && v["fields"]["message"] == "request decided"
    });
    assert!(
        in_span,
        "a request's log lines carry its id:\n{}",
        logs.join("\n")
    );

    // Every record was written before exit, and the chain verifies.
    let records = read_records(&audit);
    assert_eq!(records.len(), 4);
    assert_ne!(records[0]["config_version"], records[3]["config_version"]);
    assert!(
        std::fs::read_to_string(&audit)
            .unwrap()
            .find(&token)
            .is_none()
    );
    let out = portcullis()
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: 4 records intact"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

const EXPLAIN_POLICY: &str = r#"
[[locations]]
name = "corp"
ranges = ["10.0.0.0/8"]

[[agents]]
id = "a9e1c0de-0000-4a11-8a9e-000000000011"
name = "Research agent"
owner = "ada@contoso.example"
params = { deployment = ["gpt-4o-mini"] }

[[policies]]
name = "corp-network-only"
grant = "block"
exclude_locations = ["corp"]

[[policies]]
name = "weekend-watch"
state = "report_only"
grant = "block"
days = ["sat", "sun"]

[[routes]]
name = "chat"
path = "/openai/deployments/{deployment}/chat/completions"
methods = ["POST"]
roles = ["Models.Invoke"]
"#;

fn explain_config(issuer: &str) -> std::path::PathBuf {
    let dir = temp_dir();
    let path = dir.join("explain.toml");
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[issuers]]\nname = \"idp\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\n{EXPLAIN_POLICY}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn agent_claims(dir: &Path) -> std::path::PathBuf {
    let claims = serde_json::json!({
        "iss": "https://idp.example", "aud": AUDIENCE, "exp": 2_000_000_000u64, "tid": TENANT,
        "oid": "a9e1c0de-0000-4a11-8a9e-000000000011", "appid": "a9e1c0de-0000-4a11-8a9e-000000000011",
        "idtyp": "app", "roles": ["Models.Invoke"], "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11",
        "xms_par_app_azp": "b1e9c1a7-0000-4b00-8000-0000000000bb",
    });
    let path = dir.join("claims.json");
    std::fs::write(&path, claims.to_string()).unwrap();
    path
}

#[test]
fn explain_with_claims_allow_and_deny() {
    let config = explain_config("https://idp.example");
    let claims = agent_claims(config.parent().unwrap());
    let run = |path: &str, ip: &str, extra: &[&str]| {
        portcullis()
            .args(["explain", "--config"])
            .arg(&config)
            .arg("--claims")
            .arg(&claims)
            .args([
                "--method",
                "POST",
                "--path",
                path,
                "--client-ip",
                ip,
                "--at",
                "2026-11-28T12:00:00Z",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(
        "/openai/deployments/gpt-4o-mini/chat/completions",
        "10.1.2.3",
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "NOT checked (--claims)",
        "identity:  agent, issuer idp",
        "agent a9e1c0de-0000-4a11-8a9e-000000000011, blueprint b1e9c1a7-0000-4b00-8000-0000000000bb",
        "route:     chat (deployment=gpt-4o-mini)",
        "corp-network-only                notApplied",
        "weekend-watch                    reportOnlyFailure",
        "decision:  allow",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    let out = run(
        "/openai/deployments/gpt-4o-mini/chat/completions",
        "203.0.113.7",
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision"]["reason"], "policy_block:corp-network-only");
    assert_eq!(json["decision"]["policy"], "corp-network-only");
    assert_eq!(json["decision"]["status"], 403);
    assert_eq!(json["identity"]["kind"], "agent");
    assert_eq!(json["signature_checked"], false);

    let out = run(
        "/openai/deployments/gpt-4o/chat/completions",
        "10.1.2.3",
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision"]["reason"], "agent_not_allowed");
}

#[tokio::test]
async fn explain_verifies_a_token_and_never_prints_it() {
    let idp = TestIdp::start().await;
    let config = explain_config(&idp.issuer());
    let token = idp.token().roles(&["Models.Invoke"]).sign();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = portcullis()
            .args(["explain", "--config"])
            .arg(&config)
            .args([
                "--token",
                "-",
                "--method",
                "POST",
                "--path",
                "/openai/deployments/x/chat/completions",
            ])
            .args(["--client-ip", "10.0.0.9"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(token.as_bytes())
            .unwrap();
        (child.wait_with_output().unwrap(), token)
    })
    .await
    .unwrap();
    let (out, token) = out;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("checked against the issuer's keys") && text.contains("identity:  app"),
        "{text}"
    );
    assert!(!text.contains(&token));
}

/// What `explain --token` prints for a token that does not fit: its
/// decisive claims beside what the config accepts, the misfit marked.
#[tokio::test]
async fn explain_shows_the_decisive_claims_beside_what_is_accepted() {
    let idp = TestIdp::start().await;
    let stranger = TestIdp::start().await;
    let dir = temp_dir();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        support::config(
            "127.0.0.1:1".parse().unwrap(),
            &oidc_issuer(&idp, ""),
            DEFAULT_ROUTES,
        ),
    )
    .unwrap();
    let explain = |token: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let out = portcullis()
                .args(["explain", "--config"])
                .arg(&config)
                .args(["--path", "/v1/models", "--token", &token])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out.status.code(), Some(1), "{text}");
            assert!(!text.contains(&token));
            text
        })
    };
    let line = |text: &str, claim: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("  {claim} ")))
            .unwrap_or_else(|| panic!("no {claim} line in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };

    let text = explain(idp.token().aud("api://another-api").sign())
        .await
        .unwrap();
    assert_eq!(
        line(&text, "aud"),
        format!("aud api://another-api MISMATCH {AUDIENCE}")
    );
    assert_eq!(
        line(&text, "iss"),
        format!("iss {} ok issuer \"idp\"", idp.issuer())
    );
    assert!(
        text.contains("decision:  deny, wrong_audience, HTTP 401"),
        "{text}"
    );

    let text = explain(stranger.token().sign()).await.unwrap();
    assert_eq!(
        line(&text, "iss"),
        format!("iss {} MISMATCH {}", stranger.issuer(), idp.issuer())
    );
    assert!(text.contains("deny, wrong_issuer"), "{text}");

    let text = explain(idp.token().expires_in(-600).sign()).await.unwrap();
    assert!(
        line(&text, "exp").ends_with("ago) MISMATCH later than now, give or take 60s"),
        "{text}"
    );

    let text = explain(idp.token().scp("Files.Read").sign()).await.unwrap();
    assert_eq!(
        line(&text, "scopes"),
        "scopes Files.Read MISMATCH any of Models.Invoke (route api)"
    );
    assert!(line(&text, "aud").contains(" ok "), "{text}");
    assert!(text.contains("deny, scope_missing, HTTP 403"), "{text}");
}

/// The README's `explain` example runs as written, from the repository.
#[test]
fn the_readme_explain_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("portcullis explain "));
    let mut command = String::new();
    for line in lines.by_ref() {
        let line = line.split(" #").next().unwrap().trim();
        match line.strip_suffix('\\') {
            Some(part) => command.push_str(part),
            None => {
                command.push_str(line);
                break;
            }
        }
    }
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[..2], ["portcullis", "explain"], "{command}");
    let out = portcullis()
        .current_dir(root)
        .args(&args[1..])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{command}\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("identity:  agent, issuer contoso"), "{text}");
    assert!(text.contains("decision:  allow"), "{text}");
}

#[test]
fn explain_errors_exit_2() {
    let out = portcullis()
        .args([
            "explain",
            "--config",
            "/nonexistent.toml",
            "--claims",
            "/x.json",
            "--path",
            "/",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = portcullis()
        .args(["explain", "--config", "/nonexistent.toml", "--path", "/"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --token/--claims is a usage error"
    );
}

#[test]
fn audit_verify_reports_intact_and_broken_chains() {
    let dir = temp_dir();
    let log = dir.join("audit.log");
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

/// README command 1: `portcullis dev` prints working curl commands. Run
/// them (with our client) and check the promised allow and deny.
#[tokio::test]
async fn dev_mode_prints_commands_that_allow_and_deny() {
    let (_child, mut rx) = spawn_lines(
        portcullis().args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]),
        false,
    );
    let (mut commands, mut explains, mut issuer) = (Vec::new(), Vec::new(), String::new());
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("dev output")
            .expect("running");
        let line = line.trim();
        if let Some(url) = line.strip_prefix("export PORTCULLIS_DEV_ISSUER=") {
            issuer = url.to_owned();
        }
        if line.starts_with("curl ") {
            commands.push(line.to_owned());
        }
        if line.starts_with("portcullis explain ") {
            explains.push(line.to_owned());
        }
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    // `$(portcullis dev token …)` as a shell would run it, with the
    // printed issuer exported.
    let substitute = |cmd: &str| -> String {
        let Some((before, rest)) = cmd.split_once("$(portcullis ") else {
            return cmd.to_owned();
        };
        let (args, after) = rest.split_once(')').unwrap();
        let out = portcullis()
            .args(args.split_whitespace())
            .env("PORTCULLIS_DEV_ISSUER", &issuer)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args}");
        let token = String::from_utf8(out.stdout).unwrap();
        format!("{before}{}{after}", token.trim())
    };
    let commands: Vec<String> = commands.iter().map(|c| substitute(c)).collect();
    assert_eq!(explains.len(), 1, "{explains:?}");
    let explain = substitute(&explains[0]).replace('"', "");
    let args: Vec<&str> = explain.split_whitespace().skip(1).collect();
    let out = portcullis().args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{explain}\n{text}");
    assert!(
        text.contains("MISMATCH  api://portcullis-dev") && text.contains("deny, wrong_audience"),
        "{text}"
    );
    // Each command: curl -i|-N [-X METHOD] URL [-H "Accept: …"]
    // [-H "Authorization: Bearer T"]
    let mut statuses = Vec::new();
    for cmd in &commands {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let method = words
            .iter()
            .position(|w| *w == "-X")
            .map_or("GET", |i| words[i + 1]);
        let url = words
            .iter()
            .map(|w| w.trim_matches('\''))
            .find(|w| w.starts_with("http://"))
            .unwrap();
        let token = cmd.split("Bearer ").nth(1).map(|t| t.trim_end_matches('"'));
        let mut req = http::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let streams = cmd.contains("Accept: text/event-stream");
        if streams {
            req = req.header("accept", "text/event-stream");
        }
        let sent = std::time::Instant::now();
        let resp = send(
            req.body(http_body_util::Full::<bytes::Bytes>::default())
                .unwrap(),
        )
        .await;
        statuses.push(resp.status().as_u16());
        if streams {
            // Three events 200 ms apart, then [DONE]; the first reaches the
            // client before the upstream has even sent the second (a
            // buffering proxy would deliver it after 600 ms).
            let mut body = resp.into_body();
            let mut text = String::new();
            let mut first = None;
            while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
                if let Ok(data) = frame.unwrap().into_data() {
                    first.get_or_insert(sent.elapsed());
                    text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert_eq!(events.len(), 4, "{text}");
            assert_eq!(events[3], "data: [DONE]");
            let first = first.unwrap();
            assert!(
                first < Duration::from_millis(190),
                "first event after {first:?}"
            );
            assert!(sent.elapsed() >= Duration::from_millis(400));
        }
    }
    // As printed: user allowed, app allowed, a stream, expired refused, no
    // token refused, public allowed, a minted (registered) agent allowed.
    assert_eq!(
        statuses,
        vec![200, 200, 200, 401, 401, 200, 200],
        "{commands:#?}"
    );
}

/// `dev --fixtures-only` on a fixed issuer port, and `dev token` minting
/// every kind of caller from it: a config written against the fixtures
/// sees each token as the kind it was minted as, and the echo upstream
/// reads what is sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_fixtures_and_dev_token_shape_tokens_a_config_accepts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_fixtures, mut rx) = spawn_lines(
        portcullis().args([
            "dev",
            "--fixtures-only",
            "--issuer-listen",
            &format!("127.0.0.1:{port}"),
        ]),
        false,
    );
    let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let fixtures: serde_json::Value = serde_json::from_str(&line).unwrap();
    let issuer = fixtures["issuer"].as_str().unwrap().to_owned();
    assert_eq!(issuer, format!("http://127.0.0.1:{port}"));
    // It mints any token for whoever asks: never off loopback.
    let out = portcullis()
        .args(["dev", "--fixtures-only", "--issuer-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listens on loopback only"));
    let upstream = fixtures["upstream"].as_str().unwrap();
    assert!(upstream.starts_with("http://127.0.0.1:"), "{upstream}");
    assert_eq!(fixtures["claims"]["scp"], "Models.Invoke Models.Read");

    let routes = r#"
[[routes]]
name = "users"
prefix = "/users"
kinds = ["user"]
scopes = ["Models.Invoke"]

[[routes]]
name = "apps"
prefix = "/apps"
kinds = ["app"]
roles = ["Models.Invoke"]

[[routes]]
name = "agents"
prefix = "/agents"
kinds = ["agent", "agent_user"]
scopes = ["Tools.Call"]
roles = ["Tools.Call"]

[identity]
unregistered_agents = "allow"
"#;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"{upstream}\"\n\
         [[issuers]]\nname = \"dev\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"{}\"]\nalgorithms = [\"RS256\", \"ES256\"]\n{routes}",
        fixtures["audience"].as_str().unwrap()
    );
    let gw = TestGateway::start(&text).await;
    let mint = |args: &[&str]| {
        let out = tokio::task::block_in_place(|| {
            portcullis()
                .args(["dev", "token", "--issuer", &issuer])
                .args(args)
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    for (args, path, status) in [
        (&[][..], "/users", 200),
        (&["--kind", "app"][..], "/apps", 200),
        (&["--kind", "app"][..], "/users", 403),
        (
            &["--kind", "agent", "--role", "Tools.Call", "--es256"][..],
            "/agents",
            200,
        ),
        (
            &["--kind", "agent-obo", "--scope", "Tools.Call"][..],
            "/agents",
            200,
        ),
        (
            &["--kind", "agent-user", "--scope", "Tools.Call"][..],
            "/agents",
            200,
        ),
        (
            &["--kind", "agent", "--role", "Models.Invoke"][..],
            "/agents",
            403,
        ),
        (&["--lifetime", "-5m"][..], "/users", 401),
        (&["--audience", "api://elsewhere"][..], "/users", 401),
        (
            &["--claim", "scp=null", "--claim", "idtyp=null"][..],
            "/users",
            403,
        ),
    ] {
        let token = mint(args);
        let resp = get(&gw.url(path), Some(&token)).await;
        assert_eq!(resp.status().as_u16(), status, "{args:?} on {path}");
    }
    let json = String::from_utf8(
        portcullis()
            .args([
                "dev",
                "token",
                "--issuer",
                &issuer,
                "--kind",
                "agent-obo",
                "--json",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["claims"]["azp"], portcullis::dev::DEV_AGENT);
    assert_eq!(answer["claims"]["oid"], portcullis::dev::DEV_USER);

    // The echo upstream reads the body it is sent.
    let token = mint(&[]);
    let req = Request::post(gw.url("/users/chat"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::from(r#"{"model":"gpt-4o-mini","messages":[]}"#))
        .unwrap();
    let echoed = echoed(send(req).await).await;
    assert_eq!(echoed["body"]["bytes"], 37);
    assert_eq!(echoed["body"]["json"]["model"], "gpt-4o-mini");
    assert_eq!(echoed["body"]["sha256"].as_str().unwrap().len(), 64);
}
