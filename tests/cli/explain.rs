//! `portcullis explain`: the decision for given claims or a real token, never
//! printing the token.

use super::*;

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

fn explain_config(dir: &Path, issuer: &str) -> std::path::PathBuf {
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
    let dir = temp_dir();
    let config = explain_config(dir.path(), "https://idp.example");
    let claims = agent_claims(dir.path());
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

#[test]
fn explain_shows_when_an_open_stream_would_end() {
    let dir = temp_dir();
    let config = explain_config(dir.path(), "https://idp.example");
    let claims = agent_claims(dir.path());
    let run = |config: &Path, json: bool| {
        let out = portcullis()
            .args(["explain", "--config"])
            .arg(config)
            .arg("--claims")
            .arg(&claims)
            .args(["--method", "POST", "--path"])
            .arg("/openai/deployments/gpt-4o-mini/chat/completions")
            .args(["--client-ip", "10.1.2.3", "--at", "2026-11-28T12:00:00Z"])
            .args(json.then_some("--json"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    // The token's exp (2033-05-18T03:33:20Z) and the issuer's 60 s of skew.
    let text = run(&config, false);
    assert!(
        text.contains("stream:    open until 2033-05-18T03:34:20Z (token_expired)"),
        "{text}"
    );
    // A route's maximum comes first.
    let bounded = std::fs::read_to_string(&config).unwrap().replace(
        "methods = [\"POST\"]",
        "methods = [\"POST\"]\nmax_stream_duration = \"1h\"",
    );
    std::fs::write(&config, bounded).unwrap();
    let json: serde_json::Value = serde_json::from_str(&run(&config, true)).unwrap();
    assert_eq!(
        json["stream"],
        serde_json::json!({"deadline": "2026-11-28T13:00:00Z", "ends_as": "max_duration", "finish_secs": null})
    );
}

#[tokio::test]
async fn explain_verifies_a_token_and_never_prints_it() {
    let idp = TestIdp::start().await;
    let dir = temp_dir();
    let config = explain_config(dir.path(), &idp.issuer());
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
    let config = dir.path().join("gateway.toml");
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

/// `explain` takes an MCP message: the decision the MCP stage makes on it,
/// with the shipped MCP example config.
#[test]
fn explain_decides_an_mcp_call_as_the_gateway_does() {
    let dir = temp_dir();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mcp-server.toml");
    let claims = |extra: serde_json::Value| {
        let mut c = serde_json::json!({
            "iss": "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0",
            "tid": "aaaabbbb-0000-cccc-1111-dddd2222eeee", "aud": "11112222-bbbb-3333-cccc-4444dddd5555",
            "ver": "2.0", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
            "azp": "00001111-aaaa-2222-bbbb-3333cccc4444", "idtyp": "user", "scp": "Tools.Call",
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let path = dir
            .path()
            .join(format!("claims-{}.json", fastrand::u32(..)));
        std::fs::write(&path, c.to_string()).unwrap();
        path
    };
    let run = |claims: &Path, tool: &str| {
        let out = portcullis()
            .args(["explain", "--config"])
            .arg(&config)
            .arg("--claims")
            .arg(claims)
            .args(["--method", "POST", "--path", "/mcp", "--json"])
            .args(["--mcp-method", "tools/call", "--mcp-name", tool])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), json)
    };
    let user = claims(serde_json::json!({}));
    let (code, json) = run(&user, "search_tickets");
    assert_eq!(
        (code, &json["decision"]["result"]),
        (Some(0), &"allow".into()),
        "{json}"
    );
    assert_eq!(json["mcp"]["target"]["gen_ai.tool.name"], "search_tickets");
    let (code, json) = run(&user, "delete_ticket");
    assert_eq!(code, Some(1));
    assert_eq!(json["decision"]["reason"], "mcp_scope_missing", "{json}");
    let app = claims(serde_json::json!({"idtyp": "app", "scp": null, "roles": ["Tools.Call"]}));
    let (_, json) = run(&app, "delete_ticket");
    assert_eq!(json["decision"]["reason"], "mcp_not_allowed", "{json}");
    assert_eq!(json["decision"]["status"], 200);
}
