//! The request path's AI-aware stages, and where they plug in.
//!
//! Between admission and forwarding, each **inspector** reads an admitted
//! request: its head and grant and, on the requests it asks for, its body
//! up to a bound (read whole, then forwarded as it was or as the inspector
//! changed it). It may refuse the request with a [`Rejection`], and may
//! take part in the answer with a **responder**, which gets the response
//! as the upstream sent it: it may read or change its head, and watch its
//! frames as they stream to the client ([`watching`]) or rewrite them
//! (MCP list filtering). MCP calls (which tool, resource or prompt) and
//! model requests (which model; how many tokens) are inspected and answered
//! here. A request no inspector asks for is neither buffered nor wrapped: it
//! streams through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, LengthLimitError};

use crate::body::{Body, Watch, Watched, full};
use crate::call::Call;
use crate::policy::{Grant, PolicyOutcome};
use crate::rejection::Rejection;
use crate::telemetry::caused_by;

/// Reads admitted requests before they are forwarded.
pub trait Inspect: Send + Sync {
    /// How many bytes of this request's body the inspector must read, if
    /// any. A longer body is refused (413): what cannot be read whole
    /// cannot be inspected.
    fn body_limit(&self, grant: &Grant, head: &Parts) -> Option<usize>;

    /// Reads the request (the body when it asked for it), may change what
    /// is forwarded or refuse it, and may take part in the answer. Async:
    /// an inspector may ask a store (budgets in Redis).
    fn inspect<'a>(
        &'a self,
        grant: &'a Grant,
        head: &'a mut Parts,
        body: Option<&'a mut Bytes>,
    ) -> Inspecting<'a>;
}

/// An inspection under way.
pub type Inspecting<'a> = Pin<Box<dyn Future<Output = Inspection> + Send + 'a>>;

/// What one inspector made of a request.
pub struct Inspection {
    /// What the request asks, as the inspector read it (for the decision
    /// and the record), also when it is refused.
    pub call: Option<Call>,
    /// Refused, or let through with a responder to its answer (or none).
    pub verdict: Result<Option<Box<dyn Respond>>, Rejection>,
    /// Report-only policy results, for the decision's record.
    pub reports: Vec<PolicyOutcome>,
    /// What the request waits on before it is forwarded (bounded by the
    /// inspector), if anything.
    pub hold: Option<Hold>,
}

/// A wait a request owes before it is forwarded.
pub type Hold = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Inspection {
    /// Through, unread and unwatched.
    pub fn pass() -> Self {
        Self {
            call: None,
            verdict: Ok(None),
            reports: Vec::new(),
            hold: None,
        }
    }
}

/// Takes part in one answer: gets the response as the upstream sent it,
/// and returns what the client gets.
pub trait Respond: Send {
    fn respond(self: Box<Self>, response: Response<Body>) -> Response<Body>;
}

/// A responder that only watches: `watch` sees the body's frames as they
/// stream to the client, without holding them back, and how it ended.
pub fn watching<W>(watch: W) -> Box<dyn Respond>
where
    W: Watch + Send + Sync + Unpin + 'static,
{
    Box::new(Watching(watch))
}

struct Watching<W>(W);

impl<W: Watch + Send + Sync + Unpin + 'static> Respond for Watching<W> {
    fn respond(self: Box<Self>, response: Response<Body>) -> Response<Body> {
        response.map(|body| Watched::new(body, self.0).boxed())
    }
}

/// What the stages made of a request: what it asks, and the request to
/// forward with the responders to its answer, or the refusal.
pub struct Staged {
    pub call: Option<Call>,
    pub reports: Vec<PolicyOutcome>,
    pub result: Result<(Request<Body>, Responders), Rejection>,
}

/// The inspectors of one config generation.
#[derive(Clone, Default)]
pub struct Stages {
    inspectors: Vec<Arc<dyn Inspect>>,
}

impl Stages {
    pub fn new(inspectors: Vec<Arc<dyn Inspect>>) -> Self {
        Self { inspectors }
    }

    /// Whether no inspector is configured: then requests go straight to
    /// the upstream, and [`Self::inspect`] need not run.
    pub fn is_empty(&self) -> bool {
        self.inspectors.is_empty()
    }

    /// Runs every inspector on an admitted request: the request to
    /// forward, and the responders to its answer. Boxed: a request's future
    /// carries it only when inspectors are configured.
    pub fn inspect<'a>(
        &'a self,
        grant: &'a Grant,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Staged> + Send + 'a>> {
        Box::pin(self.run(grant, request))
    }

    async fn run(&self, grant: &Grant, request: Request<Body>) -> Staged {
        let (mut head, body) = request.into_parts();
        let limit = self
            .inspectors
            .iter()
            .filter_map(|i| i.body_limit(grant, &head))
            .max();
        let (mut read, body) = match limit {
            Some(max) => match read_whole(body, max).await {
                Ok(bytes) => (Some(bytes), None),
                Err(rejection) => {
                    return Staged {
                        call: None,
                        reports: Vec::new(),
                        result: Err(rejection),
                    };
                }
            },
            None => (None, Some(body)),
        };
        let mut call = None;
        let mut reports = Vec::new();
        let mut responders = Vec::new();
        let mut holds = Vec::new();
        for inspector in &self.inspectors {
            let inspection = inspector.inspect(grant, &mut head, read.as_mut()).await;
            call = call.or(inspection.call);
            reports.extend(inspection.reports);
            holds.extend(inspection.hold);
            match inspection.verdict {
                Ok(Some(r)) => responders.push(r),
                Ok(None) => {}
                Err(rejection) => {
                    return Staged {
                        call,
                        reports,
                        result: Err(rejection),
                    };
                }
            }
        }
        for hold in holds {
            hold.await;
        }
        let body = match (read, body) {
            (Some(bytes), _) => {
                // Whatever the inspectors made of it, the length is the body's.
                head.headers.remove(header::TRANSFER_ENCODING);
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                full(bytes)
            }
            (None, Some(body)) => body,
            (None, None) => full(Bytes::new()),
        };
        Staged {
            call,
            reports,
            result: Ok((Request::from_parts(head, body), Responders(responders))),
        }
    }
}

/// The body, read whole: refused past `max` or the route's own limit
/// (413), or if it breaks (400).
async fn read_whole(mut body: Body, max: usize) -> Result<Bytes, Rejection> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if caused_by::<LengthLimitError>(&*e) {
                Rejection::BodyTooLarge
            } else {
                Rejection::BadRequestBody
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > max {
                return Err(Rejection::BodyTooLarge);
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read.freeze())
}

/// The responders to one answer, in the order of their inspectors.
#[derive(Default)]
pub struct Responders(Vec<Box<dyn Respond>>);

impl Responders {
    /// What the client gets: the response through every responder; as it
    /// is when none takes part.
    pub fn answer(self, response: Response<Body>) -> Response<Body> {
        self.0
            .into_iter()
            .fold(response, |r, responder| responder.respond(r))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::body::Ended;
    use crate::body::testing::{Counter, Seen};
    use crate::call::McpCall;

    /// The grant of a public route: what every request here is admitted by.
    fn grant() -> Grant {
        let text = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nname = \"open\"\nprefix = \"/\"\npublic = true\n";
        let config = crate::config::parse(text, std::path::Path::new(".")).unwrap();
        let routes = crate::policy::RouteTable::compile(&config.routes).unwrap();
        let matched = routes.find(&http::Method::POST, None, "/x").unwrap();
        crate::policy::admit_public(matched.route).unwrap()
    }

    /// Reads up to 16 bytes, refuses a body that says "no", upper-cases
    /// the rest, and counts the answer.
    struct Shouting(Arc<Mutex<Seen>>);

    impl Inspect for Shouting {
        fn body_limit(&self, _: &Grant, _: &Parts) -> Option<usize> {
            Some(16)
        }
        fn inspect<'a>(
            &'a self,
            _: &'a Grant,
            _: &'a mut Parts,
            body: Option<&'a mut Bytes>,
        ) -> Inspecting<'a> {
            Box::pin(std::future::ready(self.shout(body.expect("asked for"))))
        }
    }

    impl Shouting {
        fn shout(&self, body: &mut Bytes) -> Inspection {
            let call = Some(Call::Mcp(McpCall {
                method: Some(String::from_utf8_lossy(body).into_owned()),
                ..McpCall::default()
            }));
            if body.as_ref() == b"no" {
                return Inspection {
                    call,
                    verdict: Err(Rejection::BadRequestBody),
                    reports: Vec::new(),
                    hold: None,
                };
            }
            *body = Bytes::from(body.to_ascii_uppercase());
            Inspection {
                call,
                verdict: Ok(Some(watching(Counter(self.0.clone())))),
                reports: Vec::new(),
                hold: None,
            }
        }
    }

    fn request(body: &'static str) -> Request<Body> {
        Request::post("/x")
            .header(header::CONTENT_LENGTH, body.len())
            .body(full(body))
            .unwrap()
    }

    #[tokio::test]
    async fn without_inspectors_a_request_passes_untouched() {
        let stages = Stages::default();
        assert!(stages.is_empty());
        let staged = stages.inspect(&grant(), request("hello")).await;
        assert_eq!(staged.call, None);
        let (req, responders) = staged.result.unwrap();
        assert!(responders.0.is_empty());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
    }

    #[tokio::test]
    async fn inspectors_read_the_body_refuse_rewrite_and_observe_the_answer() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stages = Stages::new(vec![Arc::new(Shouting(seen.clone()))]);

        let staged = stages.inspect(&grant(), request("hello")).await;
        let read = |method: &str| {
            Some(Call::Mcp(McpCall {
                method: Some(method.to_owned()),
                ..McpCall::default()
            }))
        };
        assert_eq!(staged.call, read("hello"));
        let (req, responders) = staged.result.unwrap();
        assert_eq!(req.headers()[header::CONTENT_LENGTH], "5");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HELLO");
        let answer = responders.answer(Response::new(full("twelve bytes")));
        let _ = answer.into_body().collect().await.unwrap();
        let (bytes, ended) = {
            let s = seen.lock().unwrap();
            (s.bytes, s.ended)
        };
        assert_eq!((bytes, ended), (12, Some(Ended::Complete)));

        // A refused request keeps what was read of it.
        let refused = stages.inspect(&grant(), request("no")).await;
        assert_eq!(refused.call, read("no"));
        assert_eq!(refused.result.err(), Some(Rejection::BadRequestBody));
        let too_long = stages.inspect(&grant(), request("seventeen bytes!!")).await;
        assert_eq!(too_long.result.err(), Some(Rejection::BodyTooLarge));
    }
}
