//! `portcullis run`: serving, then exiting cleanly on SIGTERM.

use super::*;

/// The real binary: start from a file, serve an allowed and a refused
/// request, then drain and exit 0 on SIGTERM. Logs are JSON lines, the
/// per-request ones in a span that names the request id; the audit file it
/// leaves verifies with `portcullis audit verify`.
#[tokio::test]
async fn run_serves_then_exits_cleanly_on_sigterm() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = temp_dir();
    let path = dir.path().join("gateway.toml");
    let audit = dir.path().join("audit.jsonl");
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
