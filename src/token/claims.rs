//! The claims we use, decoded once and shared as `Arc<VerifiedClaims>`.
//! Unknown claims are ignored; display claims (`upn`, `email`, `name`,
//! `preferred_username`) are never read, so nothing can authorize on them.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use serde_json::Value;

use super::identity::{ClassifyInput, IdentityKind, classify};
use super::intern::Interner;
use super::raw::RawClaims;
use super::reading::ClaimReading;
use crate::config::IssuerKind;

/// The values shared among the claims of cached tokens.
pub(super) type Shared = Interner<Profile>;

/// Group membership as the token states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Groups {
    Listed(Arc<[String]>),
    /// Too many groups for the token (overage): membership is unknown, never
    /// "no groups".
    Overage,
}

/// The identity header values a profile determines, ready to send: tenant,
/// client app, and the scopes and roles space-separated. `None` where the
/// claim is absent or empty, or is not a valid header value (then the
/// header is not sent).
#[derive(Debug)]
pub struct ProfileHeaders {
    pub tenant: Option<HeaderValue>,
    pub client_app: Option<HeaderValue>,
    pub scopes: Option<HeaderValue>,
    pub roles: Option<HeaderValue>,
}

impl ProfileHeaders {
    fn of(p: &Profile) -> Self {
        let value = |text: &str| {
            Some(text)
                .filter(|t| !t.is_empty())
                .and_then(|t| HeaderValue::from_str(t).ok())
        };
        Self {
            tenant: p.tid.as_deref().and_then(value),
            client_app: p.client_app.as_deref().and_then(value),
            scopes: value(&p.scopes.join(" ")),
            roles: value(&p.roles.join(" ")),
        }
    }
}

/// A value computed from a profile's other fields, and so no part of its
/// identity: every two are equal and hash alike.
#[derive(Debug)]
struct Derived<T>(OnceLock<T>);

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Self(OnceLock::new())
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

impl<T> Hash for Derived<T> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

/// Claims of a token that passed every check, with the caller's identity.
/// Only `token::verify` makes one; the fields are private so no other code
/// can forge it.
///
/// Kept compact: up to `token_cache.capacity` of them stay in memory. A
/// token's own values (lifetime, subject, object id, token id, groups) are
/// here; everything that tokens of one client, tenant and permission set
/// have in common is one shared [`Profile`], kept once through the
/// [`Interner`] (112 bytes a token instead of 336).
#[derive(Debug)]
pub struct VerifiedClaims {
    exp: u64,
    iat: Option<u64>,
    auth_time: Option<u64>,
    sub: Option<Box<str>>,
    oid: Option<Box<str>>,
    token_id: Option<Box<str>>,
    /// Per token, not in the profile: group lists differ from user to user.
    groups: Groups,
    profile: Arc<Profile>,
}

/// What a token's claims say of its issuer, tenant, client, permissions
/// and authentication, apart from who the caller is: the same for every
/// token one app obtains for the same permissions.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct Profile {
    issuer_name: Arc<str>,
    iss: Arc<str>,
    tid: Option<Arc<str>>,
    client_app: Option<Arc<str>>,
    client_authenticated: bool,
    scopes: Arc<[String]>,
    roles: Arc<[String]>,
    /// Built on first use, once per profile: a cached token is forwarded
    /// many times.
    headers: Derived<ProfileHeaders>,
    wids: Arc<[String]>,
    acr: Option<Arc<str>>,
    amr: Arc<[String]>,
    acrs: Arc<[String]>,
    idtyp: Option<Arc<str>>,
    handles_claims_challenge: bool,
    kind: IdentityKind,
    is_on_behalf_of: bool,
    blueprint: Option<Arc<str>>,
}

impl VerifiedClaims {
    /// `iss` is the accepting trust's (the token's `iss` equals it);
    /// `payload` is the token's payload JSON, read again only when a
    /// configured source is not one of the claims `raw` keeps.
    pub(super) fn from_raw(
        issuer_name: Arc<str>,
        iss: Arc<str>,
        reading: &ClaimReading,
        raw: RawClaims,
        payload: &[u8],
        shared: &Shared,
    ) -> Self {
        let document = reading
            .needs_document()
            .then(|| serde_json::from_slice::<Value>(payload).ok())
            .flatten();
        let (scopes, roles) = reading.names(&raw, document.as_ref());
        let entra = reading.kind == IssuerKind::Entra;
        let client_app = if entra {
            raw.azp.or(raw.appid)
        } else {
            raw.azp.or(raw.appid).or(raw.client_id).or(raw.cid)
        };
        let classified = classify(&ClassifyInput {
            idtyp: raw.idtyp.as_deref(),
            has_scp: !scopes.is_empty(),
            subject_is_client: !entra && raw.sub.is_some() && raw.sub == client_app,
            act_facets: raw.xms_act_fct.as_deref(),
            sub_facets: raw.xms_sub_fct.as_deref(),
            parent_app: raw.xms_par_app_azp.as_deref(),
        });
        let overage = raw
            ._claim_names
            .as_ref()
            .is_some_and(|n| n.contains_key("groups"));
        let client_auth = raw.azpacr.as_deref().or(raw.appidacr.as_deref());
        let boxed = |s: Option<String>| s.map(String::into_boxed_str);
        let str = |s: Option<String>| s.map(|s| shared.str(&s));
        let profile = Profile {
            issuer_name,
            iss,
            tid: raw.tid.map(|t| shared.str(&t.to_ascii_lowercase())),
            client_app: str(client_app),
            // "0" = public client: the client id is not proven.
            client_authenticated: matches!(client_auth, Some("1" | "2")),
            headers: Derived::default(),
            scopes: shared.list(scopes),
            roles: shared.list(roles),
            wids: shared.list(raw.wids),
            acr: str(raw.acr),
            amr: shared.list(raw.amr),
            acrs: shared.list(raw.acrs),
            idtyp: str(raw.idtyp),
            handles_claims_challenge: raw.xms_cc.iter().any(|c| c.eq_ignore_ascii_case("cp1")),
            kind: classified.kind,
            is_on_behalf_of: classified.is_on_behalf_of,
            blueprint: str(raw.xms_par_app_azp),
        };
        Self {
            exp: raw.exp.unwrap_or(0),
            iat: raw.iat,
            auth_time: raw.auth_time,
            sub: boxed(raw.sub),
            oid: boxed(raw.oid),
            token_id: boxed(raw.uti.or(raw.jti)),
            groups: if overage {
                Groups::Overage
            } else {
                Groups::Listed(shared.list(raw.groups))
            },
            profile: shared.profile(profile),
        }
    }

    /// The configured name of the issuer entry that accepted the token.
    pub fn issuer_name(&self) -> &str {
        &self.profile.issuer_name
    }
    pub fn iss(&self) -> &str {
        &self.profile.iss
    }
    /// Expiry, seconds since the epoch.
    pub fn exp(&self) -> u64 {
        self.exp
    }
    pub fn iat(&self) -> Option<u64> {
        self.iat
    }
    /// When the user authenticated (optional claim).
    pub fn auth_time(&self) -> Option<u64> {
        self.auth_time
    }
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }
    /// Entra object id; with the tenant, the stable principal key.
    pub fn oid(&self) -> Option<&str> {
        self.oid.as_deref()
    }
    /// Tenant id, lower case.
    pub fn tid(&self) -> Option<&str> {
        self.profile.tid.as_deref()
    }
    /// The calling client: `azp` (v2) or `appid` (v1). For agents, the agent
    /// identity.
    pub fn client_app(&self) -> Option<&str> {
        self.profile.client_app.as_deref()
    }
    /// Whether the client proved its id (`azpacr`/`appidacr` 1 or 2).
    pub fn is_client_authenticated(&self) -> bool {
        self.profile.client_authenticated
    }
    /// Delegated scopes (Entra: `scp`; see `scope_claims`).
    pub fn scopes(&self) -> &[String] {
        &self.profile.scopes
    }
    /// App roles (`roles`; see `role_claims`).
    pub fn roles(&self) -> &[String] {
        &self.profile.roles
    }
    /// The identity header values shared by every token of this profile.
    pub fn profile_headers(&self) -> &ProfileHeaders {
        let profile = &*self.profile;
        profile
            .headers
            .0
            .get_or_init(|| ProfileHeaders::of(profile))
    }
    pub fn groups(&self) -> &Groups {
        &self.groups
    }
    /// Directory role template ids.
    pub fn wids(&self) -> &[String] {
        &self.profile.wids
    }
    pub fn acr(&self) -> Option<&str> {
        self.profile.acr.as_deref()
    }
    pub fn amr(&self) -> &[String] {
        &self.profile.amr
    }
    /// Conditional Access authentication contexts satisfied (`c1`…).
    pub fn acrs(&self) -> &[String] {
        &self.profile.acrs
    }
    pub fn idtyp(&self) -> Option<&str> {
        self.profile.idtyp.as_deref()
    }
    /// `uti` (Entra) or `jti`.
    pub fn token_id(&self) -> Option<&str> {
        self.token_id.as_deref()
    }
    /// Whether the client declared `xms_cc` = `cp1` (handles claims challenges).
    pub fn handles_claims_challenge(&self) -> bool {
        self.profile.handles_claims_challenge
    }
    pub fn kind(&self) -> IdentityKind {
        self.profile.kind
    }
    /// An agent acting for a human: `oid` is the human, `client_app` the agent.
    pub fn is_on_behalf_of(&self) -> bool {
        self.profile.is_on_behalf_of
    }
    /// For agents: the agent identity (its app id); `None` for users and apps.
    pub fn agent_id(&self) -> Option<&str> {
        match self.profile.kind {
            IdentityKind::Agent | IdentityKind::AgentUser => self.client_app(),
            IdentityKind::User | IdentityKind::App => None,
        }
    }
    /// The agent's blueprint (parent app, `xms_par_app_azp`): for audit only.
    pub fn blueprint(&self) -> Option<&str> {
        self.profile.blueprint.as_deref()
    }
    /// The subject to report upstream: `oid` when present (stable across
    /// apps), else `sub`.
    pub fn principal(&self) -> Option<&str> {
        self.oid().or(self.sub())
    }
    /// Whether the token carries any permission at all.
    pub fn has_permissions(&self) -> bool {
        !self.scopes().is_empty() || !self.roles().is_empty()
    }

    /// Claims taken on trust, without any verification. The one way to
    /// make `VerifiedClaims` that `verify` did not check, reached only
    /// through [`Verifier::claims_taken_on_trust`](super::Verifier::claims_taken_on_trust)
    /// (for `portcullis explain --claims`, which says so).
    pub(super) fn taken_on_trust(
        issuer_name: &str,
        reading: &ClaimReading,
        claims: serde_json::Value,
    ) -> Result<Self, String> {
        let payload = claims.to_string();
        let raw: RawClaims = serde_json::from_str(&payload).map_err(|e| e.to_string())?;
        let iss = Arc::from(raw.iss.as_str());
        Ok(Self::from_raw(
            Arc::from(issuer_name),
            iss,
            reading,
            raw,
            payload.as_bytes(),
            &Shared::off(),
        ))
    }

    /// Claims for unit tests, read as an Entra issuer's.
    #[cfg(test)]
    pub(crate) fn for_tests(issuer_name: &str, claims: serde_json::Value) -> Self {
        Self::taken_on_trust(issuer_name, &ClaimReading::default(), claims)
            .unwrap_or_else(|e| panic!("test claims: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(shared: &Shared, extra: serde_json::Value) -> VerifiedClaims {
        let mut claims = json!({
            "iss": "https://login.example/t/v2.0", "exp": 2_000, "tid": "T",
            "azp": "app", "azpacr": "1", "scp": "Models.Read", "idtyp": "user",
            "amr": ["pwd", "mfa"],
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let payload = claims.to_string();
        let raw: RawClaims = serde_json::from_str(&payload).unwrap();
        let iss = Arc::from(raw.iss.as_str());
        VerifiedClaims::from_raw(
            Arc::from("entra"),
            iss,
            &ClaimReading::default(),
            raw,
            payload.as_bytes(),
            shared,
        )
    }

    #[test]
    fn tokens_that_differ_only_in_their_own_values_share_one_profile() {
        let shared = Shared::default();
        let a = claims(
            &shared,
            json!({"sub": "a", "oid": "1", "uti": "x", "groups": ["g1"]}),
        );
        let b = claims(
            &shared,
            json!({"sub": "b", "oid": "2", "uti": "y", "exp": 3_000}),
        );
        assert!(Arc::ptr_eq(&a.profile, &b.profile));
        // Each keeps its own ids and groups.
        assert_eq!((a.principal(), b.principal()), (Some("1"), Some("2")));
        assert_eq!(
            a.groups(),
            &Groups::Listed(Arc::from(vec!["g1".to_owned()]))
        );
        assert_eq!(b.groups(), &Groups::Listed(Arc::from(Vec::new())));
        assert_eq!((a.exp(), b.exp()), (2_000, 3_000));
        assert_eq!(a.tid(), Some("t"), "lower-cased");

        // Any shared value that differs is another profile.
        for extra in [
            json!({"scp": "Models.Invoke"}),
            json!({"azpacr": "0"}),
            json!({"amr": ["pwd"]}),
            json!({"xms_cc": ["cp1"]}),
            json!({"tid": "U"}),
        ] {
            let c = claims(&shared, extra.clone());
            assert!(!Arc::ptr_eq(&a.profile, &c.profile), "{extra}");
        }
        let other_issuer = {
            let raw: RawClaims =
                serde_json::from_value(json!({"iss": "https://other", "exp": 1})).unwrap();
            VerifiedClaims::from_raw(
                Arc::from("entra"),
                Arc::from("https://other"),
                &ClaimReading::default(),
                raw,
                b"{}",
                &shared,
            )
        };
        assert!(!Arc::ptr_eq(&a.profile, &other_issuer.profile));

        // Without a token cache, nothing is shared.
        let off = Shared::off();
        assert!(!Arc::ptr_eq(
            &claims(&off, json!({})).profile,
            &claims(&off, json!({})).profile
        ));
    }

    #[test]
    fn profile_headers_are_the_shared_claims_as_header_values() {
        let shared = Shared::default();
        let user = claims(&shared, json!({"scp": "Models.Read Models.Invoke"}));
        let h = user.profile_headers();
        assert_eq!(h.tenant.as_ref().unwrap(), "t", "lower-cased");
        assert_eq!(h.client_app.as_ref().unwrap(), "app");
        assert_eq!(h.scopes.as_ref().unwrap(), "Models.Read Models.Invoke");
        assert!(h.roles.is_none(), "no roles: no header");
        // Built once and shared by every token of the profile.
        let same = claims(
            &shared,
            json!({"scp": "Models.Read Models.Invoke", "oid": "2"}),
        );
        assert!(std::ptr::eq(h, same.profile_headers()));

        let app = claims(
            &shared,
            json!({"scp": null, "idtyp": "app", "roles": ["A", "B"], "azp": "app\u{1}"}),
        );
        let h = app.profile_headers();
        assert_eq!(h.roles.as_ref().unwrap(), "A B");
        assert!(h.scopes.is_none());
        assert!(h.client_app.is_none(), "not a valid header value: not sent");
    }

    #[test]
    fn a_cached_token_stays_small() {
        // What each of up to `token_cache.capacity` entries holds beside its
        // ids: a field added here costs that many times its size.
        assert!(
            size_of::<VerifiedClaims>() <= 112,
            "{}",
            size_of::<VerifiedClaims>()
        );
    }

    #[test]
    fn profiles_no_token_uses_are_swept() {
        let shared = Shared::default();
        let kept = claims(&shared, json!({}));
        for i in 0..5_000 {
            let _dropped = claims(&shared, json!({ "scp": format!("scope{i}") }));
        }
        let count = shared.profile_count();
        assert!(count <= 2 * 64 + 1, "{count}");
        assert!(Arc::ptr_eq(
            &kept.profile,
            &claims(&shared, json!({})).profile
        ));
    }
}
