//! Bearer tokens → verified claims or a refusal with a reason; never a
//! panic. Three shapes of input: any text as the token; a header and a
//! payload of the input's choosing, signed with the issuer's key (so that
//! claim extraction sees hostile JSON behind a valid signature); and a
//! payload alone under the key's own header.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use portcullis::dev::{DevIssuer, SigningKey};
use portcullis::keys::{KeyFetchError, KeyObserver, RefreshChange};
use portcullis::snapshot::{KeyEnv, Snapshot};

struct Fixture {
    rt: tokio::runtime::Runtime,
    _issuer: DevIssuer,
    snapshot: Snapshot,
    key: SigningKey,
    header: String,
}

struct Quiet;

impl KeyObserver for Quiet {
    fn refreshed(&self, _: &str, _: Result<RefreshChange, &KeyFetchError>) {}
    fn refresh_suppressed(&self, _: &str) {}
}

impl portcullis::model::ModelObserver for Quiet {}

impl portcullis::credentials::CredentialObserver for Quiet {}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let key = SigningKey::ec_p256("fuzz-1").expect("key");
        let issuer = rt
            .block_on(DevIssuer::start(vec![key.clone()]))
            .expect("issuer");
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[token_cache]\nenabled = false\n\
             [[issuers]]\nname = \"fuzz\"\nkind = \"oidc\"\nissuer = \"{}\"\n\
             audiences = [\"api://fuzz\"]\nalgorithms = [\"ES256\"]\n",
            issuer.url()
        );
        let config = portcullis::config::parse(&text, Path::new(".")).expect("config");
        let env = KeyEnv {
            observer: Arc::new(Quiet),
        };
        let snapshot = Snapshot::compile(&config, &env).expect("snapshot");
        for source in &snapshot.key_sources {
            rt.block_on(source.refresh()).expect("keys");
        }
        let header = serde_json::to_string(&key.header()).expect("header");
        Fixture {
            rt,
            _issuer: issuer,
            snapshot,
            key,
            header,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let text = String::from_utf8_lossy(rest);
    let token = match mode % 3 {
        0 => text.into_owned(),
        1 => {
            let (header, payload) = text.split_once('\n').unwrap_or((&text, ""));
            f.key.sign_raw(header, payload)
        }
        _ => f.key.sign_raw(&f.header, &*text),
    };
    let _ = f.rt.block_on(f.snapshot.verifier.verify(&token));
});
