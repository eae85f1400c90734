//! The policy engine: a method, a path and a set of claims (taken on trust,
//! as `portcullis explain --claims` does) against the agent example config,
//! with its routes, agents and conditional-access policies. Any input gets
//! a decision; never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;
use portcullis::explain::{Credential, ExplainRequest, explain};

fn config() -> &'static (tokio::runtime::Runtime, Config) {
    static CONFIG: OnceLock<(tokio::runtime::Runtime, Config)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/model-api-agents.toml");
        let config = portcullis::config::load(&path).expect("example config");
        (rt, config)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let (Some(method), Some(path), Some(hour), Some(claims)) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(claims) = serde_json::from_str(claims) else {
        return;
    };
    let (rt, config) = config();
    let at = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_790_000_000 + u64::from(hour.len() as u32 % 48) * 3600);
    let request = ExplainRequest {
        method,
        path: path.to_owned(),
        host: None,
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        at,
        credential: Credential::Claims(claims),
        mcp: None,
        model: None,
    };
    let _ = rt.block_on(explain(config, request));
});
