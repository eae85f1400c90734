//! Continuous access for what stays open: every forwarded exchange (a
//! request and its answer, a stream, a WebSocket) carries the moment its
//! access ends, and is decided again when what it was decided on changes.
//!
//! An exchange's [`Lifetime`] holds its deadline: the token's `exp` (plus
//! the issuer's clock skew and `[streams] exp_grace`), the agent's
//! registration expiry, the route's `max_stream_duration`, whichever comes
//! first. A timer, set when the exchange waits, ends it then: nothing
//! polls. [`Streams`] knows every open exchange; [`Streams::sweep`]
//! decides each again against a new revocation list or config (Teleport's
//! lock watcher, in a sidecar) and ends those whose access is gone. Whoever pumps the exchange (the
//! answer's body, the tunnel) ends it the way its protocol understands
//! (`body`, `websocket`).

mod body;
pub mod websocket;

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atomic_waker::AtomicWaker;
use http::Method;
use slab::Slab;
use tokio::time::Sleep;

use crate::metrics::Metrics;
use crate::policy::{self, Denial, RevocationList, Route};
use crate::rejection::Rejection;
use crate::snapshot::Snapshot;
use crate::token::{TokenError, VerifiedClaims};

pub use body::{Guarded, Style};

/// No deadline: an exchange on a public route without a maximum.
const NEVER: u64 = u64::MAX;

/// Every open exchange, and the clock their deadlines count on.
pub struct Streams {
    open: Mutex<Slab<Arc<Open>>>,
    /// Deadlines are milliseconds since this instant.
    epoch: Instant,
    metrics: Arc<Metrics>,
}

/// One open exchange, as the sweep sees it: what it was decided on, and
/// how it ends.
pub struct Open {
    facts: Facts,
    /// The bounds fixed at its start: its token's and its route's (ms
    /// since the epoch, [`NEVER`] for none); the agent's may change.
    token_until: u64,
    route_until: u64,
    /// Its deadline (ms since the epoch, [`NEVER`] for none) and which
    /// bound it is, packed so that both change at once.
    deadline: AtomicU64,
    /// Set once: by the sweep, or by the exchange's own deadline.
    ending: OnceLock<Ending>,
    /// The exchange's pump acted on its ending: what the audit record and
    /// the metric count (an exchange that completed first was not ended).
    acted: AtomicBool,
    /// The one task pumping the exchange (the request's, then its body's,
    /// or the tunnel's): woken when the ending or the deadline changes.
    waker: AtomicWaker,
}

/// What an exchange was decided on, kept to decide it again.
pub struct Facts {
    /// `None` on a public route.
    pub claims: Option<Arc<VerifiedClaims>>,
    pub route: Arc<Route>,
    pub method: Method,
    pub host: Option<Box<str>>,
    /// The normalized path the route was matched on.
    pub path: Box<str>,
    pub client_ip: IpAddr,
    /// The model a stage read from the request, once it has.
    pub model: OnceLock<Box<str>>,
}

/// Which bound an exchange's deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The token's `exp` (with clock skew and `exp_grace`).
    Token = 0,
    /// The agent's registration `expires`.
    Agent = 1,
    /// The route's `max_stream_duration`.
    Route = 2,
}

impl Bound {
    fn from_bits(bits: u64) -> Self {
        match bits & 3 {
            0 => Self::Token,
            1 => Self::Agent,
            _ => Self::Route,
        }
    }

    /// The reason an exchange ended at this bound.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Token => "token_expired",
            Self::Agent => "agent_expired",
            Self::Route => "max_duration",
        }
    }
}

/// Why an exchange's access ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It reached its deadline.
    Deadline(Bound),
    /// A change took its access away: the refusal a new request of it
    /// would get now (revoked token, agent disabled, a policy…).
    Refused(Rejection),
}

impl Ending {
    /// Stable machine-readable reason (metric label, audit record).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Deadline(b) => b.reason(),
            Self::Refused(r) => r.reason(),
        }
    }

    /// The refusal for a request whose answer had not come yet; `None` at
    /// the route's maximum duration (the upstream took too long).
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Self::Deadline(Bound::Token) => Some(Rejection::InvalidToken(TokenError::Expired)),
            Self::Deadline(Bound::Agent) => Some(Rejection::Denied(Denial::AgentExpired)),
            Self::Deadline(Bound::Route) => None,
            Self::Refused(r) => Some(r.clone()),
        }
    }
}

/// What a new exchange's deadline is computed from.
pub struct Admitted<'a> {
    pub snapshot: &'a Snapshot,
    pub facts: Facts,
    /// The registered agent's expiry, if it has one.
    pub agent_expires: Option<SystemTime>,
    /// When it was decided.
    pub now: SystemTime,
}

impl Streams {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(Slab::new()),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// Exchanges open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers an admitted exchange: it is swept from now on, and ends at
    /// its deadline.
    pub fn open(self: &Arc<Self>, admitted: Admitted<'_>) -> Lifetime {
        let bounds = Bounds::of(&admitted);
        let finish = admitted.facts.route.finish_bound();
        let ms = |at: Option<SystemTime>| at.map_or(NEVER, |at| self.millis(at));
        let (token_until, route_until) = (ms(bounds.token), ms(bounds.route));
        let deadline = first(token_until, ms(bounds.agent), route_until);
        let open = Arc::new(Open {
            facts: admitted.facts,
            token_until,
            route_until,
            deadline: AtomicU64::new(deadline),
            ending: OnceLock::new(),
            acted: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let key = self.lock().insert(open.clone());
        self.metrics.streams_open().inc();
        Lifetime {
            open,
            key,
            streams: self.clone(),
            sleep: None,
            armed: NEVER,
            finish,
            finishing: None,
        }
    }

    /// Decides every open exchange again: against `revoked` always, the
    /// agent registry of `snapshot` always, and (`whole`) the whole
    /// decision of `snapshot` (route, scopes, policies). Ends those whose
    /// access is gone, moves the deadlines of agents whose expiry changed;
    /// returns how many it ended.
    pub fn sweep(&self, snapshot: &Snapshot, revoked: &RevocationList, whole: bool) -> usize {
        let open: Vec<Arc<Open>> = self.lock().iter().map(|(_, o)| o.clone()).collect();
        let now = SystemTime::now();
        let mut ended = 0;
        for o in open {
            if o.ending.get().is_some() {
                continue;
            }
            match decide_again(&o.facts, snapshot, revoked, whole, now) {
                Again::Keep => {}
                Again::Agent(expires) => {
                    let agent = expires.map_or(NEVER, |at| self.millis(at));
                    let deadline = first(o.token_until, agent, o.route_until);
                    if o.deadline.swap(deadline, Ordering::AcqRel) != deadline {
                        o.waker.wake();
                    }
                }
                Again::End(rejection) => {
                    if o.ending.set(Ending::Refused(rejection)).is_ok() {
                        ended += 1;
                        o.waker.wake();
                    }
                }
            }
        }
        ended
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slab<Arc<Open>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `at` as milliseconds since the epoch (now, when it has passed).
    fn millis(&self, at: SystemTime) -> u64 {
        let now_sys = SystemTime::now();
        let now = Instant::now();
        let from_epoch = now.duration_since(self.epoch);
        let ahead = at.duration_since(now_sys).unwrap_or(Duration::ZERO);
        let ms = (from_epoch + ahead).as_millis();
        u64::try_from(ms)
            .unwrap_or(NEVER >> 2)
            .min((NEVER >> 2) - 1)
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

fn pack(ms: u64, bound: Bound) -> u64 {
    if ms == NEVER {
        return NEVER;
    }
    (ms << 2) | bound as u64
}

/// The first of three bounds (ms since the epoch, [`NEVER`] for none),
/// packed with which it is.
fn first(token: u64, agent: u64, route: u64) -> u64 {
    let (ms, bound) = [
        (token, Bound::Token),
        (agent, Bound::Agent),
        (route, Bound::Route),
    ]
    .into_iter()
    .min_by_key(|(ms, _)| *ms)
    .unwrap_or((NEVER, Bound::Route));
    pack(ms, bound)
}

/// An exchange's bounds, each when it has one.
struct Bounds {
    token: Option<SystemTime>,
    agent: Option<SystemTime>,
    route: Option<SystemTime>,
}

impl Bounds {
    fn of(a: &Admitted<'_>) -> Self {
        let token = a.facts.claims.as_ref().map(|claims| {
            let until = a.snapshot.verifier.accepted_until(claims);
            UNIX_EPOCH + Duration::from_secs(until) + a.snapshot.streams.exp_grace
        });
        Self {
            token,
            agent: a.agent_expires,
            route: a.facts.route.max_stream_duration().map(|max| a.now + max),
        }
    }

    /// The first, and which it is.
    fn first(&self) -> (Option<SystemTime>, Bound) {
        [
            (self.token, Bound::Token),
            (self.agent, Bound::Agent),
            (self.route, Bound::Route),
        ]
        .into_iter()
        .filter_map(|(at, bound)| Some((at?, bound)))
        .min_by_key(|(at, _)| *at)
        .map_or((None, Bound::Route), |(at, bound)| (Some(at), bound))
    }
}

/// The deadline a token would get on a route, and which bound it is: what
/// `portcullis explain` shows.
pub fn deadline_of(
    snapshot: &Snapshot,
    route: &Arc<Route>,
    claims: &Arc<VerifiedClaims>,
    now: SystemTime,
) -> (Option<SystemTime>, Bound) {
    let agent_expires = snapshot
        .policies
        .agents
        .find(claims)
        .and_then(|a| a.expires);
    Bounds::of(&Admitted {
        snapshot,
        facts: Facts {
            claims: Some(claims.clone()),
            route: route.clone(),
            method: Method::GET,
            host: None,
            path: Box::from(""),
            client_ip: IpAddr::from([0, 0, 0, 0]),
            model: OnceLock::new(),
        },
        agent_expires,
        now,
    })
    .first()
}

/// What deciding an open exchange again found.
enum Again {
    Keep,
    /// Its agent's registration expires then (or never): its deadline
    /// moves with it.
    Agent(Option<SystemTime>),
    End(Rejection),
}

fn decide_again(
    facts: &Facts,
    snapshot: &Snapshot,
    revoked: &RevocationList,
    whole: bool,
    now: SystemTime,
) -> Again {
    let Some(claims) = &facts.claims else {
        return Again::Keep;
    };
    if revoked.check(claims).is_some() {
        return Again::End(Rejection::InvalidToken(TokenError::Revoked));
    }
    let agents = &snapshot.policies.agents;
    let registered = agents.find(claims);
    if whole {
        let matched = snapshot
            .routes
            .find(&facts.method, facts.host.as_deref(), &facts.path)
            .ok_or(Rejection::Denied(Denial::NoRoute));
        let circumstances = crate::proxy::pipeline::Circumstances {
            client_ip: facts.client_ip,
            now,
            revoked,
        };
        let mut decision = crate::decision::Decision::pending();
        let decided = crate::proxy::pipeline::decide(
            snapshot,
            &facts.method,
            matched,
            claims.clone(),
            circumstances,
            &mut decision,
        );
        let grant = match decided {
            Ok(grant) => grant,
            Err(rejection) => return Again::End(rejection),
        };
        if let Some(model) = facts.model.get() {
            if !grant.route().serves_model(model) {
                return Again::End(Rejection::Denied(Denial::ModelNotAllowed));
            }
            let (verdict, _) =
                policy::authorize_model(&snapshot.policies, &grant, &facts.method, model);
            if let Err(denial) = verdict {
                return Again::End(Rejection::Denied(denial));
            }
        }
    } else if claims.agent_id().is_some() {
        match registered {
            None if !agents.allows_unregistered() => {
                return Again::End(Rejection::Denied(Denial::AgentUnregistered));
            }
            None => {}
            Some(a) if !a.enabled => return Again::End(Rejection::Denied(Denial::AgentDisabled)),
            Some(a) if a.expires.is_some_and(|e| e <= now) => {
                return Again::End(Rejection::Denied(Denial::AgentExpired));
            }
            Some(_) => {}
        }
    }
    match registered {
        Some(agent) => Again::Agent(agent.expires),
        None => Again::Keep,
    }
}

/// One exchange's hold on its access: whoever pumps the exchange polls
/// [`Lifetime::poll_end`], which is ready when the access ended. Dropping
/// it unregisters the exchange.
pub struct Lifetime {
    open: Arc<Open>,
    key: usize,
    streams: Arc<Streams>,
    /// The timer for the deadline in force, made when first needed.
    sleep: Option<Pin<Box<Sleep>>>,
    /// The packed deadline the timer is set to.
    armed: u64,
    /// How long a model answer may run on past its deadline.
    finish: Option<Duration>,
    /// The deadline passed and the answer is finishing: the bound it
    /// passed.
    finishing: Option<Bound>,
}

impl Lifetime {
    /// Ready with the reason once the exchange's access has ended (at
    /// once after a revocation; at the deadline, or that plus the finish
    /// bound for a model answer).
    pub fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        self.poll_watching(cx, Watch::Timer)
    }

    /// [`Self::poll_end`] for a pump that polls again soon anyway (a body
    /// whose next frame is ready): the deadline is read off the clock, and
    /// no timer is set until one is needed (most answers end before).
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        self.poll_watching(cx, Watch::Clock)
    }

    /// Resolves when the exchange's access ended, for a wait that ends by
    /// `horizon` in any case (the upstream's response timeout): a deadline
    /// after it needs no timer.
    pub async fn ended_before(&mut self, horizon: Instant) -> Ending {
        std::future::poll_fn(|cx| self.poll_watching(cx, Watch::TimerBefore(horizon))).await
    }

    fn poll_watching(&mut self, cx: &mut Context<'_>, watch: Watch) -> Poll<Ending> {
        self.open.waker.register(cx.waker());
        if let Some(ending) = self.open.ending.get() {
            return Poll::Ready(ending.clone());
        }
        let packed = match self.finishing {
            Some(_) => self.armed,
            None => self.open.deadline.load(Ordering::Acquire),
        };
        if packed == NEVER {
            return Poll::Pending;
        }
        let at = self.streams.instant(packed >> 2);
        if self.sleep.is_none() {
            let needed = match watch {
                Watch::Timer => true,
                Watch::Clock => Instant::now() >= at,
                Watch::TimerBefore(horizon) => at <= horizon,
            };
            if !needed {
                return Poll::Pending;
            }
        }
        let at = tokio::time::Instant::from_std(at);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if packed != self.armed {
            sleep.as_mut().reset(at);
            self.armed = packed;
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let bound = Bound::from_bits(packed);
        if let (Some(extra), None) = (self.finish, self.finishing) {
            // The answer may finish: once, for up to `extra`.
            self.finishing = Some(bound);
            let until = Instant::now() + extra;
            let ms = until.duration_since(self.streams.epoch).as_millis() as u64;
            self.armed = pack(ms, bound);
            let at = tokio::time::Instant::from_std(until);
            if let Some(sleep) = self.sleep.as_mut() {
                sleep.as_mut().reset(at);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        let bound = self.finishing.unwrap_or(bound);
        let _ = self.open.ending.set(Ending::Deadline(bound));
        Poll::Ready(
            self.open
                .ending
                .get()
                .cloned()
                .unwrap_or(Ending::Deadline(bound)),
        )
    }

    /// Resolves when the exchange's access ended.
    pub async fn ended(&mut self) -> Ending {
        std::future::poll_fn(|cx| self.poll_end(cx)).await
    }

    /// The exchange is a session (a tunnel), not an answer: it ends at its
    /// deadline, without a finish.
    pub fn never_finish(&mut self) {
        self.finish = None;
    }

    /// What a stage read: the model the request asks for.
    pub fn set_model(&self, model: &str) {
        let _ = self.open.facts.model.set(Box::from(model));
    }

    /// The exchange is being ended for `ending`: counted, and recorded as
    /// ended by the gateway.
    pub fn acted(&self, ending: &Ending) {
        if !self.open.acted.swap(true, Ordering::AcqRel) {
            self.streams
                .metrics
                .stream_terminated(self.open.facts.route.name(), ending.reason());
        }
    }

    /// A handle the audit record reads the ending through.
    pub fn watcher(&self) -> EndingOf {
        EndingOf(self.open.clone())
    }
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.streams.lock().try_remove(self.key);
        self.streams.metrics.streams_open().dec();
    }
}

/// How a poll of a [`Lifetime`] watches its deadline.
#[derive(Clone, Copy)]
enum Watch {
    /// With a timer, which wakes the polling task at the deadline.
    Timer,
    /// By the clock at each poll, until a timer is set.
    Clock,
    /// With a timer only for a deadline before this instant.
    TimerBefore(Instant),
}

/// Why an exchange was ended by the gateway, if it was: for its record.
#[derive(Clone)]
pub struct EndingOf(Arc<Open>);

impl EndingOf {
    pub fn reason(&self) -> Option<&'static str> {
        if !self.0.acted.load(Ordering::Acquire) {
            return None;
        }
        self.0.ending.get().map(Ending::reason)
    }
}

/// Sweeps every open exchange whenever the revocation list or the config
/// changes, until shutdown.
pub async fn watch(
    streams: Arc<Streams>,
    snapshot: Arc<arc_swap::ArcSwap<Snapshot>>,
    revocations: Arc<crate::revocation_file::Revocations>,
    mut reloads: tokio::sync::watch::Receiver<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut revoked = revocations.subscribe();
    let mut swept = snapshot.load_full();
    loop {
        let trigger = tokio::select! {
            r = revoked.changed() => match r {
                Ok(()) => "revocation",
                Err(_) => return,
            },
            r = reloads.changed() => match r {
                Ok(()) => "reload",
                Err(_) => return,
            },
            () = crate::shutdown::stopped(&mut stop) => return,
        };
        let current = snapshot.load_full();
        let changed = !Arc::ptr_eq(&current, &swept);
        if trigger == "reload" && !changed {
            continue;
        }
        let whole = changed && current.streams.reevaluate_on_reload;
        let started = Instant::now();
        let ended = streams.sweep(&current, &revocations.current(), whole);
        let took = started.elapsed();
        streams.metrics.stream_sweep(trigger, took.as_secs_f64());
        tracing::info!(
            trigger,
            open = streams.len(),
            ended,
            took_ms = took.as_secs_f64() * 1e3,
            "open exchanges decided again"
        );
        swept = current;
    }
}

#[cfg(test)]
mod tests;
