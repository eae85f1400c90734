use std::path::Path;

use serde_json::json;

use super::*;
use crate::snapshot::KeyEnv;

const AGENT: &str = "d0000000-0000-4000-8000-0000000000a1";

fn snapshot(extra: &str) -> Snapshot {
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
         [[issuers]]\nname = \"idp\"\nkind = \"oidc\"\nissuer = \"https://idp.example\"\n\
         audiences = [\"api://x\"]\nclock_skew = \"30s\"\n\
         [[routes]]\nname = \"r\"\nprefix = \"/\"\nscopes = [\"Read\"]\nroles = [\"Read\"]\n{extra}"
    );
    let config = crate::config::parse(&text, Path::new(".")).unwrap();
    let env = KeyEnv {
        observer: Arc::new(Metrics::new().unwrap()),
    };
    Snapshot::compile(&config, &env).unwrap()
}

fn claims(snapshot: &Snapshot, exp: u64, agent: bool) -> Arc<VerifiedClaims> {
    let mut c = json!({
        "iss": "https://idp.example", "aud": "api://x", "exp": exp, "tid": "t1",
        "oid": "o1", "azp": "app1", "idtyp": "user", "scp": "Read", "uti": "token-1",
    });
    if agent {
        c = json!({
            "iss": "https://idp.example", "aud": "api://x", "exp": exp, "tid": "t1",
            "oid": AGENT, "appid": AGENT, "idtyp": "app", "roles": ["Read"],
            "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11", "uti": "token-2",
        });
    }
    Arc::new(snapshot.verifier.claims_taken_on_trust(c).unwrap())
}

fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn in_secs(secs: u64) -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs
}

fn open(streams: &Arc<Streams>, snapshot: &Snapshot, claims: Arc<VerifiedClaims>) -> Lifetime {
    let route = snapshot.routes.routes()[0].clone();
    let agent = snapshot.policies.agents.find(&claims).cloned();
    streams.open(Admitted {
        snapshot,
        facts: Facts {
            claims: Some(claims),
            route,
            method: Method::GET,
            host: None,
            path: Box::from("/stream"),
            client_ip: IpAddr::from([127, 0, 0, 1]),
            model: OnceLock::new(),
        },
        agent_expires: agent.and_then(|a| a.expires),
        now: SystemTime::now(),
    })
}

fn streams() -> Arc<Streams> {
    Streams::new(Arc::new(Metrics::new().unwrap()))
}

fn ending(lifetime: &mut Lifetime) -> Option<Ending> {
    match lifetime.poll_end(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(e) => Some(e),
        Poll::Pending => None,
    }
}

#[test]
fn the_deadline_is_the_first_of_token_agent_and_route() {
    let s = snapshot(&format!(
        "max_stream_duration = \"2h\"\n[streams]\nexp_grace = \"10s\"\n\
         [[agents]]\nid = \"{AGENT}\"\nname = \"a\"\nexpires = \"2099-01-01T00:00:00Z\"\n"
    ));
    let route = s.routes.routes()[0].clone();
    let now = SystemTime::now();
    let exp = in_secs(600);
    // exp + the issuer's 30 s of clock skew + 10 s of grace.
    let (at, bound) = deadline_of(&s, &route, &claims(&s, exp, false), now);
    assert_eq!((at, bound), (Some(unix(exp + 40)), Bound::Token));
    // A token that outlives the route's maximum.
    let (at, bound) = deadline_of(&s, &route, &claims(&s, in_secs(10_000), false), now);
    assert_eq!(
        (at, bound),
        (Some(now + Duration::from_secs(7200)), Bound::Route)
    );

    let s = snapshot(&format!(
        "[[agents]]\nid = \"{AGENT}\"\nname = \"a\"\nexpires = \"2020-01-01T00:00:00Z\"\n"
    ));
    let route = s.routes.routes()[0].clone();
    let (at, bound) = deadline_of(&s, &route, &claims(&s, exp, true), now);
    assert_eq!(bound, Bound::Agent);
    assert!(at.unwrap() < now);
}

#[test]
fn ending_reasons_and_the_refusals_they_stand_for() {
    let token = Ending::Deadline(Bound::Token);
    assert_eq!(token.reason(), "token_expired");
    assert_eq!(
        token.rejection(),
        Some(Rejection::InvalidToken(TokenError::Expired))
    );
    assert_eq!(Ending::Deadline(Bound::Route).rejection(), None);
    let revoked = Ending::Refused(Rejection::InvalidToken(TokenError::Revoked));
    assert_eq!(revoked.reason(), "revoked");
}

#[tokio::test]
async fn a_revocation_sweep_ends_the_revoked_exchanges_only() {
    let s = snapshot(&format!("[[agents]]\nid = \"{AGENT}\"\nname = \"a\"\n"));
    let streams = streams();
    let mut revoked = open(&streams, &s, claims(&s, in_secs(600), false));
    let mut kept = open(&streams, &s, claims(&s, in_secs(600), true));
    assert_eq!(streams.len(), 2);
    assert_eq!(ending(&mut revoked), None);

    let list = RevocationList::parse("token_ids = [\"token-1\"]\n").unwrap();
    assert_eq!(streams.sweep(&s, &list, false), 1);
    assert_eq!(
        ending(&mut revoked),
        Some(Ending::Refused(Rejection::InvalidToken(
            TokenError::Revoked
        )))
    );
    assert_eq!(ending(&mut kept), None);
    assert_eq!(streams.sweep(&s, &list, false), 0, "ended once");
    drop(revoked);
    assert_eq!(streams.len(), 1, "an exchange leaves when it ends");
}

#[tokio::test]
async fn a_reload_that_refuses_unregistered_agents_ends_their_exchanges() {
    let allowed = snapshot("[identity]\nunregistered_agents = \"allow\"\n");
    let streams = streams();
    let mut agent = open(&streams, &allowed, claims(&allowed, in_secs(600), true));
    let none = RevocationList::default();
    assert_eq!(streams.sweep(&allowed, &none, false), 0);
    assert_eq!(streams.sweep(&snapshot(""), &none, false), 1);
    assert_eq!(
        ending(&mut agent).map(|e| e.reason()),
        Some("agent_unregistered")
    );
}

#[tokio::test]
async fn a_reload_checks_agents_always_and_everything_when_asked() {
    let registered =
        format!("[[agents]]\nid = \"{AGENT}\"\nname = \"a\"\nexpires = \"2099-01-01T00:00:00Z\"\n");
    let s = snapshot(&registered);
    let streams = streams();
    let none = RevocationList::default();
    let mut agent = open(&streams, &s, claims(&s, in_secs(600), true));
    let mut user = open(&streams, &s, claims(&s, in_secs(600), false));

    // A change elsewhere ends nothing.
    let unrelated = snapshot(&format!("{registered}[streams]\nsse_retry = \"2s\"\n"));
    assert_eq!(streams.sweep(&unrelated, &none, true), 0);

    // Disabled: ended on any reload.
    let disabled = snapshot(&registered.replace("name = \"a\"", "name = \"a\"\nenabled = false"));
    assert_eq!(streams.sweep(&disabled, &none, false), 1);
    assert_eq!(
        ending(&mut agent).map(|e| e.reason()),
        Some("agent_disabled")
    );
    assert_eq!(ending(&mut user), None);

    // Whole: the user's token lacks the scope a new route asks for.
    let text = "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
         [[issuers]]\nname = \"idp\"\nkind = \"oidc\"\nissuer = \"https://idp.example\"\n\
         audiences = [\"api://x\"]\n\
         [[routes]]\nname = \"r\"\nprefix = \"/\"\nscopes = [\"Write\"]\n";
    let config = crate::config::parse(text, Path::new(".")).unwrap();
    let env = KeyEnv {
        observer: Arc::new(Metrics::new().unwrap()),
    };
    let write_only = Snapshot::compile(&config, &env).unwrap();
    assert_eq!(streams.sweep(&write_only, &none, false), 0, "agents only");
    assert_eq!(streams.sweep(&write_only, &none, true), 1);
    assert_eq!(ending(&mut user).map(|e| e.reason()), Some("scope_missing"));
}

#[tokio::test]
async fn a_reload_moves_an_agents_deadline_either_way() {
    let expiring = |in_ms: i64| {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(in_ms);
        snapshot(&format!(
            "[[agents]]\nid = \"{AGENT}\"\nname = \"a\"\nexpires = \"{at}\"\n"
        ))
    };
    let none = RevocationList::default();
    let s = expiring(150);
    let streams = streams();
    let mut agent = open(&streams, &s, claims(&s, in_secs(600), true));
    assert_eq!(ending(&mut agent), None);
    // Renewed: it runs past its first expiry.
    assert_eq!(streams.sweep(&expiring(3_600_000), &none, false), 0);
    let renewed = tokio::time::timeout(Duration::from_millis(400), agent.ended()).await;
    assert!(renewed.is_err(), "still open after its old expiry");
    // Brought forward: it ends then.
    assert_eq!(streams.sweep(&expiring(50), &none, false), 0);
    let ended = tokio::time::timeout(Duration::from_secs(5), agent.ended())
        .await
        .unwrap();
    assert_eq!(ended, Ending::Deadline(Bound::Agent));
}

#[tokio::test]
async fn a_model_answer_finishes_for_its_bound_past_the_deadline() {
    let s = snapshot(
        "max_stream_duration = \"50ms\"\n[routes.model]\non_expiry = \"finish\"\nmax_finish = \"100ms\"\n",
    );
    let streams = streams();
    let mut answer = open(&streams, &s, claims(&s, in_secs(600), false));
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), answer.ended())
        .await
        .unwrap();
    assert_eq!(ended, Ending::Deadline(Bound::Route));
    assert!(started.elapsed() >= Duration::from_millis(150));

    // A revocation while it finishes cuts it at once.
    let mut answer = open(&streams, &s, claims(&s, in_secs(600), false));
    let finishing = tokio::time::timeout(Duration::from_millis(120), answer.ended()).await;
    assert!(finishing.is_err(), "still finishing");
    let list = RevocationList::parse("token_ids = [\"token-1\"]\n").unwrap();
    assert_eq!(streams.sweep(&s, &list, false), 1);
    assert_eq!(ending(&mut answer).map(|e| e.reason()), Some("revoked"));
}
