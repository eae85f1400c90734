//! The file watcher: a ConfigMap-style symlink swap, reads that change nothing,
//! a rename that reloads once.

use super::*;

/// A Kubernetes ConfigMap volume: `gateway.toml` → `..data/gateway.toml`,
/// `..data` → `..<timestamp>`; an update swaps `..data` atomically.
#[tokio::test]
async fn the_watcher_follows_a_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = oidc_issuer(&idp, "");
    let dir = temp_dir();
    let with_audit = |routes: &str| {
        format!(
            "{}\n[audit]\nsink = \"file\"\nfile = \"{}\"\n",
            config(upstream.addr, &issuer, routes),
            dir.path().join("audit.jsonl").display()
        )
    };
    std::fs::create_dir(dir.path().join("..2026_11_27_a")).unwrap();
    std::fs::write(
        dir.path().join("..2026_11_27_a/gateway.toml"),
        with_audit(&routes("Models.Invoke")),
    )
    .unwrap();
    symlink("..2026_11_27_a", dir.path().join("..data")).unwrap();
    symlink("..data/gateway.toml", dir.path().join("gateway.toml")).unwrap();
    let config = portcullis::config::load(&dir.path().join("gateway.toml")).unwrap();
    let running = portcullis::app::start(config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.wait_ready())
        .await
        .unwrap();
    let url = format!("http://{}/x", running.addr);
    let token = idp.token().sign();
    assert_eq!(get(&url, Some(&token)).await.status(), StatusCode::OK);

    let mut reloads = running.reloads();
    std::fs::create_dir(dir.path().join("..2026_11_27_b")).unwrap();
    std::fs::write(
        dir.path().join("..2026_11_27_b/gateway.toml"),
        with_audit(&routes("Models.Admin")),
    )
    .unwrap();
    symlink("..2026_11_27_b", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 1))
        .await
        .expect("the watcher reloaded")
        .unwrap();
    assert_eq!(
        get(&url, Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn reading_the_config_file_never_reloads_and_a_rename_reloads_once() {
    let (idp, _upstream, text) = stack().await;
    let gw = TestGateway::start_file(&text).await;
    let token = idp.token().scp("Models.Invoke").sign();
    let mut reloads = gw.running().reloads();
    let count = |result: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(&format!(
                "gateway_config_reloads_total{{result=\"{result}\"}}"
            ))
            .await
        }
    };

    // Read as `cat` does, then as `POST /reload` does (each reading it).
    for _ in 0..3 {
        std::fs::read_to_string(gw.dir().join("gateway.toml")).unwrap();
    }
    for _ in 0..2 {
        assert_eq!(gw.post_reload().await.1["result"], "unchanged");
    }
    // One rename: one reload, applied.
    gw.rewrite(&text.replace("Models.Invoke", "Models.Admin"));
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 3))
        .await
        .expect("the watcher reloaded")
        .unwrap();
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
    // The watcher's reload read the file too; a last synchronous reload
    // closes the count.
    assert_eq!(gw.post_reload().await.1["result"], "unchanged");
    assert_eq!(
        count("applied").await,
        1,
        "exactly one reload for the rename"
    );
    assert_eq!(
        count("unchanged").await,
        3,
        "only the two asked for, and the last"
    );
}
