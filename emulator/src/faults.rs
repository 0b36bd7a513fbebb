//! Fault injection: rules that make matching requests fail, slow down, stall or break, so
//! clients can be tested against outages without touching the network.
//!
//! A rule matches by path (substring of the request path) and optionally method; it applies
//! for a count of requests, for a duration, with a probability, or any mix. Rules are
//! installed with `POST /_emulator/faults` (JSON [`FaultRule`]) or [`FaultSet::add`].

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
    /// Apply to each matching request with this probability (default 1).
    #[serde(default)]
    pub probability: Option<f64>,
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
    fn take(&self, method: &str, path: &str) -> Option<FaultRule> {
        let now = Instant::now();
        let mut rules = self.rules.lock().unwrap();
        for r in rules.iter_mut() {
            if !r.active(now) || !path.contains(&r.rule.path) {
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
    let mut entry = journal_entry(&req, &path);
    let resp = apply_rules(&app, &path, req, next).await;
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

/// What the journal records of a request (no credential).
fn journal_entry(req: &Request<Body>, path: &str) -> crate::state::JournalEntry {
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
        status: 0,
    }
}

/// Marks a response whose connection is broken on purpose (journal status 0).
#[derive(Clone, Copy)]
struct Broken;

async fn apply_rules(
    app: &std::sync::Arc<crate::state::AppState>,
    path: &str,
    req: Request<Body>,
    next: Next,
) -> Response {
    if app.outage.active() {
        return broken_response(StatusCode::OK);
    }
    let Some(rule) = app.faults.take(req.method().as_str(), path) else {
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
