//! `portcullis dev`: the self-contained mode and the tokens it mints.

use super::*;

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
        if url.contains("/as-gateway/") {
            // The upstream got the gateway's own token, not the caller's.
            let echo: serde_json::Value = serde_json::from_str(&support::text(resp).await).unwrap();
            let got = echo["headers"]["authorization"][0].as_str().unwrap();
            assert!(got.starts_with("Bearer "), "{echo}");
            assert_ne!(
                Some(&got[7..]),
                token,
                "the caller's token reached the upstream"
            );
            continue;
        }
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
    // As printed: user allowed, app allowed, the gateway's own token, a
    // stream, expired refused, no token refused, public allowed, a minted
    // (registered) agent allowed.
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 401, 401, 200, 200],
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
    let text = config_to(
        &format!("url = \"{upstream}\""),
        &format!(
            "[[issuers]]\nname = \"dev\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"{}\"]\nalgorithms = [\"RS256\", \"ES256\"]",
            fixtures["audience"].as_str().unwrap()
        ),
        routes,
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
    const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[]}"#;
    let token = mint(&[]);
    let req = Request::post(gw.url("/users/chat"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::from(CHAT))
        .unwrap();
    let echoed = echoed(send(req).await).await;
    assert_eq!(echoed["body"]["bytes"], CHAT.len());
    assert_eq!(echoed["body"]["json"]["model"], "gpt-4o-mini");
    let hex_sha256 = 64;
    assert_eq!(echoed["body"]["sha256"].as_str().unwrap().len(), hex_sha256);
}
