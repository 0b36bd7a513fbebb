//! Fault injection: rules that make matching requests fail, slow down, stall or break, so
//! clients can be tested against outages without touching the network.
//!
//! A rule matches by path (substring of the request path) and optionally method; it applies
//! for a count of requests, for a duration, with a probability, or any mix. Rules are
//! installed with `POST /_emulator/faults` (JSON [`FaultRule`]) or [`FaultSet::add`].
//!
//! Deterministic rules (the parity suite, `tests/parity/`) decide from the request alone, not
//! from a random draw or arrival order: `attempts` matches the client's attempt number (the
//! `x-stainless-retry-count` header, 0 when absent) and `seq_id_modulo` /
//! `seq_id_remainder` the `seq_id` of the JSON body. So "every even `seq_id` fails its first
//! attempt" is the same fault for every client, however its requests interleave.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One fault rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FaultRule {
    /// Applies to requests whose path contains this text (e.g. `/api/v1/retrieve_future`).
    pub path: String,
    /// Only this HTTP method, if set.
    #[serde(default)]
    pub method: Option<String>,
    /// Answer with this status instead of handling the request.
    #[serde(default)]
    pub status: Option<u16>,
    /// JSON body of the injected answer (default: none, i.e. an empty body).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Extra headers of the injected answer (e.g. `Retry-After`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Delay added before the request is handled (or answered).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Hold the request this long, then drop the connection without an answer.
    #[serde(default)]
    pub stall_ms: Option<u64>,
    /// Send the response headers and part of the body, then reset the connection.
    #[serde(default)]
    pub reset: bool,
    /// Apply `reset`/`stall_ms`/`status` AFTER the real handler ran (the request takes
    /// effect on the server but its answer is lost), instead of before.
    #[serde(default)]
    pub after_handler: bool,
    /// Apply to at most this many requests.
    #[serde(default)]
    pub count: Option<u64>,
    /// Active for this long after installation.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Apply to each matching request with this probability (default 1). A random draw:
    /// prefer `attempts` and `seq_id_modulo` where the outcome must be reproducible.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Only requests whose attempt number (`x-stainless-retry-count`, 0 when absent or not a
    /// number) is in this list, e.g. `[0]`: first attempts only, so the retry succeeds.
    #[serde(default)]
    pub attempts: Option<Vec<u64>>,
    /// Only requests whose JSON body has a `seq_id` with `seq_id % seq_id_modulo ==
    /// seq_id_remainder` (requests without a `seq_id` never match). Must be above 0.
    #[serde(default)]
    pub seq_id_modulo: Option<u64>,
    /// The remainder `seq_id_modulo` selects (default 0).
    #[serde(default)]
    pub seq_id_remainder: u64,
}

/// What a rule may match on beyond path and method: read from the request before any rule
/// runs, so matching never depends on timing.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts {
    /// The attempt number (`x-stainless-retry-count`; 0 when absent or malformed).
    pub attempt: u64,
    /// The body's top-level `seq_id`, when the body is JSON and has one.
    pub seq_id: Option<i64>,
}

impl FaultRule {
    /// Whether the deterministic conditions (`attempts`, `seq_id_modulo`) hold for `facts`.
    fn matches_facts(&self, facts: &RequestFacts) -> bool {
        if self
            .attempts
            .as_ref()
            .is_some_and(|a| !a.contains(&facts.attempt))
        {
            return false;
        }
        match self.seq_id_modulo {
            None => true,
            Some(0) => false,
            Some(m) => facts
                .seq_id
                .is_some_and(|s| s.rem_euclid(m as i64) as u64 == self.seq_id_remainder),
        }
    }
}

struct Installed {
    id: u64,
    rule: FaultRule,
    installed: Instant,
    hits: u64,
}

/// The active fault rules of one emulator.
#[derive(Default)]
pub struct FaultSet {
    rules: Mutex<Vec<Installed>>,
    next_id: Mutex<u64>,
    rng: Mutex<u64>,
}

/// A rule as listed by the control API.
#[derive(Serialize)]
pub struct FaultStatus {
    /// Rule id.
    pub id: u64,
    /// The rule.
    pub rule: FaultRule,
    /// Requests it applied to.
    pub hits: u64,
    /// Whether it can still apply.
    pub active: bool,
}

impl Installed {
    fn active(&self, now: Instant) -> bool {
        self.rule.count.is_none_or(|c| self.hits < c)
            && self
                .rule
                .duration_ms
                .is_none_or(|d| now.duration_since(self.installed) < Duration::from_millis(d))
    }
}

impl FaultSet {
    /// Installs a rule; returns its id.
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        let id = *next;
        self.rules.lock().unwrap().push(Installed {
            id,
            rule,
            installed: Instant::now(),
            hits: 0,
        });
        id
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// The rules with their hit counts.
    pub fn list(&self) -> Vec<FaultStatus> {
        let now = Instant::now();
        self.rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| FaultStatus {
                id: r.id,
                rule: r.rule.clone(),
                hits: r.hits,
                active: r.active(now),
            })
            .collect()
    }

    fn uniform(&self) -> f64 {
        let mut s = self.rng.lock().unwrap();
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = *s;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((x ^ (x >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The first active rule matching the request, counted as a hit.
    pub fn take(&self, method: &str, path: &str, facts: &RequestFacts) -> Option<FaultRule> {
        let now = Instant::now();
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut() {
            if !r.active(now) || !path.contains(&r.rule.path) || !r.rule.matches_facts(facts) {
                continue;
            }
            if r.rule
                .method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
            {
                continue;
            }
            if let Some(p) = r.rule.probability {
                if self.uniform() >= p {
                    continue;
                }
            }
            r.hits += 1;
            return Some(r.rule.clone());
        }
        None
    }
}

/// Middleware counting requests per path and applying the fault rules before the handler.
pub async fn apply(
    axum::extract::State(app): axum::extract::State<std::sync::Arc<crate::state::AppState>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
    *app.requests
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    let (req, seq_id) = match peek_seq_id(req).await {
        Ok(pair) => pair,
        Err(resp) => return resp,
    };
    let mut entry = journal_entry(&req, &path, seq_id);
    let facts = RequestFacts {
        attempt: entry
            .retry_count
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        seq_id,
    };
    let resp = apply_rules(&app, &path, &facts, req, next).await;
    entry.status = if resp.extensions().get::<Broken>().is_some() {
        0
    } else {
        resp.status().as_u16()
    };
    let mut journal = app.journal.lock().unwrap();
    if journal.len() >= crate::state::MAX_JOURNAL_ENTRIES {
        journal.pop_front();
    }
    journal.push_back(entry);
    drop(journal);
    resp
}

/// Largest body read to find its `seq_id` (1 MiB): bigger bodies (large forward_backward
/// chunks) pass through unread and have no `seq_id` for the fault rules and the journal.
pub const SEQ_ID_PEEK_LIMIT: u64 = 1 << 20;

/// Reads the body of an uncompressed JSON request (or protobuf `forward_backward` request)
/// with a `Content-Length` of at most [`SEQ_ID_PEEK_LIMIT`] and returns the request (with
/// the same body) and its `seq_id`. Other requests (zstd-compressed ones included) pass
/// through unread. A body that breaks while being read is answered 400.
async fn peek_seq_id(req: Request<Body>) -> Result<(Request<Body>, Option<i64>), Response> {
    let len = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = content_type.starts_with("application/json");
    // The protobuf body of forward_backward (PROTOCOL.md 14.1): `seq_id` is its field 2.
    let proto = content_type.starts_with("application/x-protobuf")
        && req.uri().path().ends_with("/forward_backward");
    if !(json || proto)
        || req.headers().contains_key("content-encoding")
        || len.is_none_or(|n| n > SEQ_ID_PEEK_LIMIT)
    {
        return Ok((req, None));
    }
    #[derive(Deserialize)]
    struct Probe {
        seq_id: Option<serde_json::Value>,
    }
    /// Field 2 of a `ForwardBackwardRequest` (prost skips the others).
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProtoProbe {
        #[prost(int32, tag = "2")]
        seq_id: i32,
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, SEQ_ID_PEEK_LIMIT as usize).await {
        Ok(b) => b,
        Err(_) => {
            return Err((StatusCode::BAD_REQUEST, "request body could not be read").into_response())
        }
    };
    let seq_id = if proto {
        <ProtoProbe as prost::Message>::decode(&bytes[..])
            .ok()
            .map(|p| i64::from(p.seq_id))
    } else {
        serde_json::from_slice::<Probe>(&bytes)
            .ok()
            .and_then(|p| p.seq_id)
            .and_then(|v| v.as_i64())
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), seq_id))
}

/// What the journal records of a request (no credential).
fn journal_entry(
    req: &Request<Body>,
    path: &str,
    seq_id: Option<i64>,
) -> crate::state::JournalEntry {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    crate::state::JournalEntry {
        method: req.method().to_string(),
        path: path.to_string(),
        idempotency_key: header("x-idempotency-key"),
        retry_count: header("x-stainless-retry-count"),
        content_encoding: header("content-encoding"),
        sdk_method: header("x-sdk-method"),
        seq_id,
        status: 0,
    }
}

/// Marks a response whose connection is broken on purpose (journal status 0).
#[derive(Clone, Copy)]
struct Broken;

async fn apply_rules(
    app: &std::sync::Arc<crate::state::AppState>,
    path: &str,
    facts: &RequestFacts,
    req: Request<Body>,
    next: Next,
) -> Response {
    if app.outage.active() {
        return broken_response(StatusCode::OK);
    }
    let Some(rule) = app.faults.take(req.method().as_str(), path, facts) else {
        return run_unless_outage(app, next, req).await;
    };
    let mut pending = Some((next, req));
    let mut handled = None;
    if rule.after_handler {
        let (next, req) = pending.take().expect("not yet run");
        handled = Some(run_unless_outage(app, next, req).await);
    }
    if let Some(ms) = rule.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = rule.stall_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return broken_response(StatusCode::OK);
    }
    if rule.reset {
        return broken_response(StatusCode::OK);
    }
    if let Some(status) = rule.status {
        return injected_response(&rule, status);
    }
    match (handled, pending) {
        (Some(resp), _) => resp,
        (None, Some((next, req))) => run_unless_outage(app, next, req).await,
        (None, None) => unreachable!("the handler either ran or is pending"),
    }
}

/// The answer a rule with `status` gives.
fn injected_response(rule: &FaultRule, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match &rule.body {
        Some(v) => {
            let mut r = (status, serde_json::to_vec(v).unwrap_or_default()).into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
        None => (status, Body::empty()).into_response(),
    };
    for (k, v) in &rule.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v))
        {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// Runs the handler, but breaks the connection if an outage starts meanwhile (a long poll
/// held open when the server "goes down" must not answer).
async fn run_unless_outage(
    app: &crate::state::AppState,
    next: Next,
    req: Request<Body>,
) -> Response {
    let mut begun = app.outage.subscribe();
    tokio::select! {
        resp = next.run(req) => resp,
        _ = begun.wait_for(|active| *active) => broken_response(StatusCode::OK),
    }
}

/// An outage: while active, new connections are closed on accept and every request on an
/// existing connection is broken.
pub struct Outage {
    until: Mutex<Option<Instant>>,
    active: tokio::sync::watch::Sender<bool>,
}

impl Default for Outage {
    fn default() -> Self {
        Outage {
            until: Mutex::new(None),
            active: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Outage {
    /// Starts (or extends) an outage lasting `duration`.
    pub fn start(&self, duration: Duration) {
        // A huge duration (e.g. u64::MAX ms) must not overflow the clock: cap at a year.
        let duration = duration.min(Duration::from_secs(365 * 24 * 3600));
        *self.until.lock().unwrap() = Some(Instant::now() + duration);
        self.active.send_replace(true);
    }

    /// Ends the outage now.
    pub fn end(&self) {
        *self.until.lock().unwrap() = None;
        self.active.send_replace(false);
    }

    /// Whether an outage is in progress.
    pub fn active(&self) -> bool {
        let mut until = self.until.lock().unwrap();
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                self.active.send_replace(false);
                false
            }
            None => false,
        }
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.active.subscribe()
    }
}

/// A TCP listener that closes every new connection at once during an outage.
pub struct OutageListener {
    /// The real listener.
    pub inner: tokio::net::TcpListener,
    /// The shared outage state.
    pub outage: std::sync::Arc<crate::state::AppState>,
}

impl axum::serve::Listener for OutageListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) if self.outage.outage.active() => drop(stream),
                Ok(pair) => return pair,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A response that promises a body and breaks the connection after a few bytes.
fn broken_response(status: StatusCode) -> Response {
    let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![
        Ok(b"{\"partial\": "),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        )),
    ];
    let stream = futures_lite_stream(chunks);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert("content-length", HeaderValue::from_static("1000"));
    resp.extensions_mut().insert(Broken);
    resp
}

/// A minimal stream over a vector (no extra crate).
fn futures_lite_stream(
    items: Vec<Result<&'static [u8], std::io::Error>>,
) -> impl tokio_stream_shim::Stream<Item = Result<&'static [u8], std::io::Error>> {
    tokio_stream_shim::iter(items)
}

mod tokio_stream_shim {
    //! Just enough of a `Stream` to feed `Body::from_stream`.
    pub use futures_core::Stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Iter<T> {
        items: std::vec::IntoIter<T>,
    }

    impl<T: Unpin> Stream for Iter<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.items.next())
        }
    }

    pub fn iter<T>(items: Vec<T>) -> Iter<T> {
        Iter {
            items: items.into_iter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: serde_json::Value) -> FaultRule {
        serde_json::from_value(json).expect("a valid rule")
    }

    fn facts(attempt: u64, seq_id: Option<i64>) -> RequestFacts {
        RequestFacts { attempt, seq_id }
    }

    #[test]
    fn attempts_select_by_retry_count() {
        let set = FaultSet::default();
        set.add(rule(
            serde_json::json!({"path": "/api/v1/asample", "status": 503, "attempts": [0, 2]}),
        ));
        let p = "/api/v1/asample";
        assert!(set.take("POST", p, &facts(0, None)).is_some());
        assert!(set.take("POST", p, &facts(1, None)).is_none());
        assert!(set.take("POST", p, &facts(2, Some(7))).is_some());
        assert!(set.take("POST", p, &facts(3, None)).is_none());
        assert_eq!(set.list()[0].hits, 2);
    }

    #[test]
    fn seq_id_modulo_selects_the_same_requests_every_time() {
        let set = FaultSet::default();
        set.add(rule(serde_json::json!({
            "path": "/api/v1/forward_backward", "status": 503,
            "seq_id_modulo": 2, "seq_id_remainder": 1
        })));
        let p = "/api/v1/forward_backward";
        let chosen: Vec<i64> = (0..8)
            .filter(|&s| set.take("POST", p, &facts(0, Some(s))).is_some())
            .collect();
        assert_eq!(chosen, vec![1, 3, 5, 7]);
        assert!(
            set.take("POST", p, &facts(0, None)).is_none(),
            "no seq_id: no match"
        );
        assert!(
            set.take("POST", p, &facts(0, Some(-1))).is_some(),
            "-1 % 2 == 1 (Euclidean)"
        );
    }

    #[test]
    fn zero_modulo_never_matches_and_both_conditions_combine() {
        let set = FaultSet::default();
        set.add(rule(
            serde_json::json!({"path": "/x", "status": 500, "seq_id_modulo": 0}),
        ));
        assert!(set.take("POST", "/x", &facts(0, Some(0))).is_none());
        set.clear();
        set.add(rule(serde_json::json!({
            "path": "/x", "status": 500, "seq_id_modulo": 3, "attempts": [0]
        })));
        assert!(set.take("POST", "/x", &facts(0, Some(3))).is_some());
        assert!(set.take("POST", "/x", &facts(1, Some(3))).is_none());
        assert!(set.take("POST", "/x", &facts(0, Some(4))).is_none());
    }

    fn json_request(body: &'static str, extra: Option<(&str, &str)>) -> Request<Body> {
        let mut b = Request::post("/api/v1/asample")
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string());
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        }
        b.body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn peek_reads_the_seq_id_and_keeps_the_body() {
        let body = r#"{"seq_id": 12, "num_samples": 1}"#;
        let (req, seq) = peek_seq_id(json_request(body, None)).await.ok().unwrap();
        assert_eq!(seq, Some(12));
        let kept = axum::body::to_bytes(req.into_body(), 1024).await.unwrap();
        assert_eq!(&kept[..], body.as_bytes());
        let (_, seq) = peek_seq_id(json_request(r#"{"seq_id": "x"}"#, None))
            .await
            .ok()
            .unwrap();
        assert_eq!(seq, None, "a non-integer seq_id is none");
        let (_, seq) = peek_seq_id(json_request(
            r#"{"seq_id": 3}"#,
            Some(("content-encoding", "zstd")),
        ))
        .await
        .ok()
        .unwrap();
        assert_eq!(seq, None, "compressed bodies are not read");
    }

    #[tokio::test]
    async fn peek_reads_the_seq_id_of_a_protobuf_forward_backward() {
        use prost::Message;
        let msg = tinkex::core::proto::ForwardBackwardRequest {
            model_id: "m".into(),
            seq_id: 5,
            ..Default::default()
        };
        let body = msg.encode_to_vec();
        let req = Request::post("/api/v1/forward_backward")
            .header("content-type", "application/x-protobuf")
            .header("content-length", body.len().to_string())
            .body(Body::from(body.clone()))
            .unwrap();
        let (req, seq) = peek_seq_id(req).await.ok().unwrap();
        assert_eq!(seq, Some(5));
        let kept = axum::body::to_bytes(req.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(&kept[..], &body[..]);
    }
}
