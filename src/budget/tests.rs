use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;
use crate::call::UsageSource;

/// Thursday 2026-12-03 10:00:00 UTC.
const T0: u64 = 1_796_292_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn budgets(toml: &str) -> Budgets {
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[issuers]]\nname = \"e\"\nkind = \"oidc\"\nissuer = \"https://idp\"\njwks_uri = \"https://idp/keys\"\naudiences = [\"api://x\"]\n[[routes]]\nname = \"chat\"\nprefix = \"/openai/\"\n[routes.model]\n{toml}"
    );
    let config =
        crate::config::parse(&text, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Budgets::compile(
        &config.budgets,
        Arc::new(Store::Local(LocalCounters::default())),
    )
}

fn agent(id: &str) -> VerifiedClaims {
    VerifiedClaims::for_tests(
        "e",
        json!({"iss": "https://idp", "exp": 2_000_000_000u64, "tid": "t1", "oid": id, "appid": id,
            "idtyp": "app", "roles": ["Models.Invoke"], "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11"}),
    )
}

fn user() -> VerifiedClaims {
    VerifiedClaims::for_tests(
        "e",
        json!({"iss": "https://idp", "exp": 2_000_000_000u64, "tid": "t1", "oid": "u1", "azp": "app1",
            "idtyp": "user", "scp": "Models.Invoke"}),
    )
}

fn asking<'a>(claims: &'a VerifiedClaims, model: &'a str) -> Asking<'a> {
    Asking {
        claims: Some(claims),
        route: "chat",
        model: Some(model),
    }
}

fn estimate(input: u64, output: u64) -> Estimate {
    Estimate { input, output }
}

fn used(input: u64, output: u64) -> Usage {
    Usage {
        input,
        output,
        source: UsageSource::Reported,
        ..Usage::default()
    }
}

#[tokio::test]
async fn a_request_reserves_its_estimate_and_is_refused_when_it_would_not_fit() {
    let b = budgets("[[budgets]]\nname = \"tpm\"\nkey = [\"agent\"]\ntokens_per_minute = 1000\n");
    let a = agent("a1");
    let ok = b
        .admit(&asking(&a, "gpt-4o"), estimate(300, 300), at(T0))
        .await
        .ok()
        .unwrap();
    assert_eq!(ok.remaining, Some(400));
    assert_eq!(ok.outcomes[0].result, PolicyResult::Success);
    // 600 held: another 600 does not fit; 429 until the minute ends.
    let (refused, outcomes) = b
        .admit(&asking(&a, "gpt-4o"), estimate(300, 300), at(T0 + 15))
        .await
        .err()
        .unwrap();
    assert_eq!(
        refused,
        Rejection::BudgetExceeded {
            budget: "tpm".into(),
            quota: false,
            retry_after_secs: 45
        }
    );
    assert_eq!(refused.status(), 429);
    assert_eq!(outcomes[0].result, PolicyResult::Failure);
    // Another agent has its own counter.
    let other = agent("a2");
    assert!(
        b.admit(&asking(&other, "gpt-4o"), estimate(300, 300), at(T0))
            .await
            .is_ok()
    );
    // The answer used 100: settled, the first agent has room again.
    ok.reservation
        .unwrap()
        .settle(&used(60, 40), at(T0 + 20), |_| {});
    let again = b
        .admit(&asking(&a, "gpt-4o"), estimate(300, 300), at(T0 + 21))
        .await
        .ok()
        .unwrap();
    assert_eq!(again.remaining, Some(300));
    // The next minute starts from nothing.
    drop(again);
    let next = b
        .admit(&asking(&a, "gpt-4o"), estimate(500, 500), at(T0 + 60))
        .await
        .ok()
        .unwrap();
    assert_eq!(next.remaining, Some(0));
}

#[tokio::test]
async fn an_unanswered_request_gives_its_reservation_back_and_a_spent_quota_is_a_403() {
    let b = budgets(
        "[[budgets]]\nname = \"monthly\"\nkey = [\"tid\"]\ntokens = 1000\nperiod = \"month\"\n",
    );
    let a = agent("a1");
    let held = b
        .admit(&asking(&a, "m"), estimate(500, 500), at(T0))
        .await
        .ok()
        .unwrap();
    assert!(
        b.admit(&asking(&a, "m"), estimate(1, 0), at(T0))
            .await
            .is_err()
    );
    drop(held);
    let ok = b
        .admit(&asking(&a, "m"), estimate(500, 500), at(T0))
        .await
        .ok()
        .unwrap();
    ok.reservation
        .unwrap()
        .settle(&used(800, 200), at(T0), |_| {});
    let (refused, _) = b
        .admit(&asking(&a, "m"), estimate(1, 0), at(T0 + 3600))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.reason(), "budget_quota_exceeded");
    // December's quota renews on the first of January.
    let Rejection::BudgetExceeded {
        retry_after_secs, ..
    } = refused
    else {
        panic!()
    };
    assert_eq!(retry_after_secs, 2_469_600 - 3600);
}

#[tokio::test]
async fn report_only_budgets_count_and_record_but_never_refuse() {
    let b = budgets(
        "[[budgets]]\nname = \"watch\"\nkey = [\"oid\"]\ntokens_per_minute = 10\nmode = \"report\"\n",
    );
    let u = user();
    let first = b
        .admit(&asking(&u, "m"), estimate(5, 20), at(T0))
        .await
        .ok()
        .unwrap();
    assert_eq!(first.outcomes[0].result, PolicyResult::ReportOnlyFailure);
    assert_eq!(first.remaining, None, "only enforced budgets are told");
}

#[tokio::test]
async fn budgets_apply_by_route_model_and_kind_and_key_only_on_what_the_caller_has() {
    let b = budgets(
        "[[budgets]]\nname = \"agents\"\nkey = [\"agent\"]\ntokens_per_minute = 10\n[[budgets]]\nname = \"gpt\"\nkey = [\"oid\", \"model\"]\ntokens_per_minute = 10\nmodels = [\"GPT-4o*\"]\nkinds = [\"user\"]\n",
    );
    let u = user();
    let names = |c: &[(usize, Counter)]| {
        c.iter()
            .map(|(i, _)| &*b.budgets[*i].name)
            .collect::<Vec<_>>()
    };
    // A user has no agent: only the per-user model budget counts it.
    assert_eq!(
        names(&b.counters(&asking(&u, "gpt-4o-mini"), estimate(1, 1), at(T0))),
        ["gpt"]
    );
    assert!(
        b.counters(&asking(&u, "o3"), estimate(1, 1), at(T0))
            .is_empty()
    );
    let a = agent("a1");
    assert_eq!(
        names(&b.counters(&asking(&a, "gpt-4o"), estimate(1, 1), at(T0))),
        ["agents"]
    );
    // Key parts cannot run into each other.
    let (_, c) = &b.counters(&asking(&u, "gpt-4o:ft:org"), estimate(1, 1), at(T0))[0];
    assert_eq!(c.key, format!("gpt:u1:gpt-4o%3Aft%3Aorg:{}", T0 / 60));
}

#[tokio::test]
async fn a_weighted_budget_reserves_at_the_dearer_weights_and_charges_each_kind_of_token() {
    let b = budgets(
        "[[budgets]]\nname = \"w\"\nkey = [\"agent\"]\ntokens = 100000\nperiod = \"day\"\ncount = \"weighted\"\nweights = { input = 1.0, cached_input = 0.1, output = 4.0, reasoning = 2.0 }\n",
    );
    let a = agent("a1");
    let held = b
        .admit(&asking(&a, "m"), estimate(100, 50), at(T0))
        .await
        .ok()
        .unwrap();
    assert_eq!(held.remaining, Some(100_000 - 300));
    let usage = Usage {
        input: 100,
        cached_input: 50,
        output: 40,
        reasoning: 10,
        source: UsageSource::Reported,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    held.reservation
        .unwrap()
        .settle(&usage, at(T0), move |s| tx.send(s).unwrap());
    // 50 + 5 + 120 + 20
    assert_eq!(rx.recv().unwrap()[0].charged, 195);
}

#[tokio::test]
async fn an_answer_past_its_reservation_is_charged_and_its_overshoot_counted() {
    let b = budgets("[[budgets]]\nname = \"tpm\"\nkey = [\"agent\"]\ntokens_per_minute = 100\n");
    let a = agent("a1");
    let held = b
        .admit(&asking(&a, "m"), estimate(50, 40), at(T0))
        .await
        .ok()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    held.reservation
        .unwrap()
        .settle(&used(50, 70), at(T0 + 1), move |s| tx.send(s).unwrap());
    let settled = rx.recv().unwrap();
    assert_eq!((settled[0].charged, settled[0].overshoot), (120, 20));
    // An answer that ends after its minute: the excess goes to the current one.
    let held = b
        .admit(&asking(&agent("a2"), "m"), estimate(10, 10), at(T0))
        .await
        .ok()
        .unwrap();
    held.reservation
        .unwrap()
        .settle(&used(10, 40), at(T0 + 61), |_| {});
    let (_, c) = &b.counters(&asking(&agent("a2"), "m"), estimate(0, 0), at(T0 + 61))[0];
    let Store::Local(l) = &**b.store() else {
        panic!()
    };
    assert_eq!(l.used(&c.key), Some(30));
}
