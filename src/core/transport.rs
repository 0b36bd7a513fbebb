//! One HTTP attempt: URL joining, default headers, timeouts, connection pools per purpose
//! (PROTOCOL.md 1.2-1.6). Retrying is the caller's business ([`crate::core::retry`]).

use crate::core::config::{Limits, Timeouts};
use crate::core::error::{Error, ErrorKind, Result, TransportCause};
use crate::core::sanitize::redact_url;
use crate::core::types::SDK_VERSION;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use std::time::{Duration, Instant};

/// Connection pool purposes: requests of one purpose never queue behind another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Session, heartbeat, dynamic config, sampling-session creation.
    Session,
    /// asample.
    Sample,
    /// Training requests and REST calls.
    Train,
    /// retrieve_future.
    Retrieve,
    /// Telemetry batches.
    Telemetry,
    /// Endpoints that may answer with a redirect to a signed storage URL (the audit log,
    /// PROTOCOL.md 9.12; the SDK's `REST_SUPPORT_REDIRECT`). Every redirect hop of a request
    /// of this pool is fetched with no credential and no SDK header, whatever its origin.
    Redirect,
}

const POOLS: usize = 6;

impl Pool {
    fn index(self) -> usize {
        self as usize
    }
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    /// No body (GET, DELETE).
    Empty,
    /// `application/json`.
    Json(Bytes),
    /// `application/x-protobuf`.
    Proto(Bytes),
}

/// Everything needed to send one logical request; reused unchanged by every retry.
#[derive(Clone, Debug)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path under the base URL, e.g. `/api/v1/create_session`.
    pub path: String,
    /// Body.
    pub body: Body,
    /// Which connection pool.
    pub pool: Pool,
    /// Read timeout.
    pub timeout: Duration,
    /// `X-Idempotency-Key` (non-GET requests); one per logical operation.
    pub idempotency_key: Option<String>,
    /// Ask for protobuf results.
    pub accept_proto: bool,
    /// Extra headers (per-endpoint ones such as `X-Tinker-Request-Type`).
    pub headers: ExtraHeaders,
    /// The size the server announced for this response (`response_payload_size`, 8.1.3),
    /// which raises the body limit up to [`Limits::max_announced_response_bytes`]; `None`
    /// reads at most [`Limits::max_response_bytes`].
    pub announced_response_bytes: Option<u64>,
}

impl Request {
    /// A JSON POST with a fresh idempotency key.
    pub fn post_json(
        path: impl Into<String>,
        body: &impl serde::Serialize,
        pool: Pool,
        timeout: Duration,
    ) -> Self {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        Request {
            method: Method::POST,
            path: path.into(),
            body: Body::Json(bytes.into()),
            pool,
            timeout,
            idempotency_key: Some(new_idempotency_key()),
            accept_proto: false,
            headers: ExtraHeaders::new(),
            announced_response_bytes: None,
        }
    }

    /// A GET (no body, no idempotency key).
    pub fn get(path: impl Into<String>, pool: Pool, timeout: Duration) -> Self {
        Request {
            method: Method::GET,
            path: path.into(),
            body: Body::Empty,
            pool,
            timeout,
            idempotency_key: None,
            accept_proto: false,
            headers: ExtraHeaders::new(),
            announced_response_bytes: None,
        }
    }
}

/// One extra header of a [`Request`].
#[derive(Clone, Debug)]
pub enum ExtraHeader {
    /// Built by the caller ([`HeaderName`] constants, static or integer values): no parsing
    /// or copying per attempt.
    Typed(HeaderName, HeaderValue),
    /// A name and a text value, parsed on each attempt.
    Text(&'static str, String),
}

impl From<(HeaderName, HeaderValue)> for ExtraHeader {
    fn from((name, value): (HeaderName, HeaderValue)) -> Self {
        ExtraHeader::Typed(name, value)
    }
}

impl From<(&'static str, String)> for ExtraHeader {
    fn from((name, value): (&'static str, String)) -> Self {
        ExtraHeader::Text(name, value)
    }
}

/// The extra headers of a [`Request`], in order.
#[derive(Clone, Debug, Default)]
pub struct ExtraHeaders(Vec<ExtraHeader>);

impl ExtraHeaders {
    /// No header.
    pub fn new() -> Self {
        ExtraHeaders(Vec::new())
    }

    /// Room for `n` headers.
    pub fn with_capacity(n: usize) -> Self {
        ExtraHeaders(Vec::with_capacity(n))
    }

    /// Appends a header: `(HeaderName, HeaderValue)` or `(&'static str, String)`.
    pub fn push(&mut self, header: impl Into<ExtraHeader>) {
        self.0.push(header.into());
    }

    /// The headers, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ExtraHeader> {
        self.0.iter()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A fresh `X-Idempotency-Key` value (one per logical call, PROTOCOL.md 1.6.1).
pub fn new_idempotency_key() -> String {
    format!("tinkex-retry-{}", crate::core::rand::uuid4())
}

/// The reconnect budget of a pool for empty 400 answers (PROTOCOL.md 1.5).
pub const RECONNECT_BUDGET: i64 = 16;

/// How many distinct deprecation notes are remembered for rate limiting.
const MAX_DEPRECATION_NOTES: usize = 64;

/// A distinct deprecation note is logged again after this long.
const DEPRECATION_LOG_INTERVAL: Duration = Duration::from_secs(600);

/// A received HTTP response (any status).
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Time from send to the full body.
    pub elapsed: Duration,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        // By comparison rather than `HeaderMap::get(&str)`: parsing a `&str` name goes through
        // an uninitialised scratch buffer in `http` that valgrind reports (a false positive
        // that would hide real reports of the C tests).
        self.headers
            .iter()
            .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses a JSON body into `T`, or a fatal error naming what was expected.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::fatal(format!(
                "malformed {what} response from the server: {e}; body: {}",
                snippet(&self.body)
            ))
        })
    }

    /// The error this response stands for (non-2xx).
    pub fn to_error(&self) -> Error {
        Error::from_status(self.status, &self.text())
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    crate::core::sanitize::server_text(&text)
}

/// Sends single HTTP attempts with the client's headers and pools.
///
/// Redirects are followed here, not by reqwest (whose default would forward the API key to
/// any host): same-origin redirects keep the credentials; a redirect to another origin is
/// fetched as a fresh GET with no credential header; https is never downgraded to http.
pub struct Transport {
    base_url: String,
    base: url::Url,
    /// Supplies the `X-API-Key` value of each request (raw credential or JWT, PROTOCOL.md 2).
    auth: std::sync::Arc<crate::core::auth::Auth>,
    /// Cloudflare access headers: credentials, sent to the base URL's origin only.
    access_headers: HeaderMap,
    /// The pools' clients and the one for another origin (no default credential headers),
    /// built on the first request ([`crate::core::tls`]).
    clients: std::sync::OnceLock<Clients>,
    static_headers: HeaderMap,
    connect_timeout: Duration,
    limits: Limits,
    /// Per pool: the reconnect budget of the empty-400 rule (1.5).
    reconnect_budget: [std::sync::Mutex<i64>; POOLS],
    /// Deprecation notes already logged, with when (rate limit per distinct note).
    deprecation_notes: std::sync::Mutex<Vec<(String, Instant)>>,
    /// Parsed URLs by request path (at most [`URL_CACHE_ENTRIES`]).
    urls: std::sync::RwLock<Vec<(String, url::Url)>>,
    /// Formatted `X-Stainless-Read-Timeout` values by timeout.
    read_timeouts: std::sync::Mutex<Vec<(Duration, HeaderValue)>>,
}

struct Clients {
    /// One HTTP client per pool; replaced (new connections) by the empty-400 rule.
    pools: Vec<std::sync::RwLock<reqwest::Client>>,
    foreign: reqwest::Client,
    /// No default header at all: the redirect hops of [`Pool::Redirect`].
    bare: reqwest::Client,
    tls: rustls::ClientConfig,
}

fn os_name() -> String {
    match std::env::consts::OS {
        "linux" => "Linux".into(),
        "macos" => "MacOS".into(),
        "windows" => "Windows".into(),
        "freebsd" => "FreeBSD".into(),
        "openbsd" => "OpenBSD".into(),
        "ios" => "iOS".into(),
        "android" => "Android".into(),
        other => format!("Other:{other}"),
    }
}

fn arch_name() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "x64".into(),
        "aarch64" => "arm64".into(),
        "arm" => "arm".into(),
        "x86" => "x32".into(),
        other => format!("other:{other}"),
    }
}

/// The most bytes of a non-2xx body kept: enough for any JSON error or try-again object;
/// the rest of a longer body is not read (the connection is dropped).
const MAX_ERROR_BODY_BYTES: u64 = 64 * 1024;

impl Transport {
    /// Builds the pools. Performs no I/O.
    pub fn new(
        base_url: &str,
        auth: std::sync::Arc<crate::core::auth::Auth>,
        timeouts: &Timeouts,
        limits: &Limits,
        overrides: &crate::core::config::HeaderOverrides,
    ) -> Result<Self> {
        let base = crate::core::config::parse_base_url(base_url, true)?;
        let mut static_headers = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            static_headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("static header values are ASCII"),
            );
        };
        put(
            "user-agent",
            format!(
                "libtinkex/{} (tinker-protocol {SDK_VERSION})",
                env!("CARGO_PKG_VERSION")
            ),
        );
        put("x-stainless-package-version", SDK_VERSION.into());
        put("x-stainless-os", os_name());
        put("x-stainless-arch", arch_name());
        put("x-stainless-runtime", "libtinkex".into());
        put(
            "x-stainless-runtime-version",
            env!("CARGO_PKG_VERSION").into(),
        );
        put("x-stainless-async", "async:tokio".into());
        put("x-sdk-version", SDK_VERSION.into());
        let mut access_headers = HeaderMap::new();
        for (env, header) in [
            ("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-access-client-id"),
            ("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-access-client-secret"),
        ] {
            if let Ok(v) = std::env::var(env) {
                let mut v = HeaderValue::from_str(v.trim()).map_err(|_| {
                    Error::user(format!(
                        "{env} contains characters that cannot be sent in a header"
                    ))
                })?;
                v.set_sensitive(true);
                access_headers.insert(HeaderName::from_static(header), v);
            }
        }
        // Caller overrides go over the Cloudflare headers, to the base URL's origin only
        // (validated by the config builder: names, values, no credential header).
        for (name, value) in overrides.iter() {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return Err(Error::user(
                    "default_headers_overrides: a header cannot be sent",
                ));
            };
            value.set_sensitive(true);
            static_headers.remove(&name);
            access_headers.insert(name, value);
        }
        Ok(Transport {
            base_url: base_url.trim_end_matches('/').to_string(),
            base,
            auth,
            access_headers,
            clients: std::sync::OnceLock::new(),
            static_headers,
            connect_timeout: timeouts.connect,
            limits: limits.clone(),
            reconnect_budget: std::array::from_fn(|_| std::sync::Mutex::new(RECONNECT_BUDGET)),
            deprecation_notes: std::sync::Mutex::new(Vec::new()),
            urls: std::sync::RwLock::new(Vec::new()),
            read_timeouts: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn build_client(
        &self,
        tls: &rustls::ClientConfig,
        headers: HeaderMap,
    ) -> Result<reqwest::Client> {
        reqwest::Client::builder()
            // Set once per client; reqwest merges them into each request.
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            // No retry inside reqwest (its default resends a request an HTTP/2 server
            // refused): every retry is the client's own, with a new idempotency key and an
            // `x-stainless-retry-count` that says so (PROTOCOL.md 13.1-13.4). It also spares
            // a copy of every request's headers, which reqwest's retry layer makes in case it
            // retries (`max_retries_per_request(0)`: it never asks for one).
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .use_preconfigured_tls(tls.clone())
            .build()
            .map_err(|e| {
                Error::fatal(format!(
                    "cannot build the HTTP client: {}",
                    crate::core::sanitize::server_text(&e.to_string())
                ))
            })
    }

    /// The reconnect budget left in `pool` (PROTOCOL.md 1.5).
    pub fn reconnect_budget(&self, pool: Pool) -> i64 {
        *self.reconnect_budget[pool.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The empty-400 rule (1.5): replaces `pool`'s HTTP client (new connections) and, while
    /// the pool's reconnect budget is positive, spends one unit and turns the 400 into a
    /// retryable connection error (`transport` set, `http_status` 400); otherwise the 400
    /// stays as it is.
    fn empty_400(&self, pool: Pool, path: &str, resp: Response) -> Result<Response> {
        if let Some(clients) = self.clients.get() {
            match self.build_client(&clients.tls, self.static_headers.clone()) {
                Ok(fresh) => {
                    *clients.pools[pool.index()]
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = fresh;
                }
                Err(e) => tracing::debug!("keeping the HTTP client of {pool:?}: {e}"),
            }
        }
        let mut budget = self.reconnect_budget[pool.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *budget <= 0 {
            return Ok(resp);
        }
        *budget -= 1;
        tracing::debug!(
            "{path}: empty HTTP 400 (a proxy's reconnect signal); reconnecting ({} left)",
            *budget
        );
        let mut err = Error::new(
            ErrorKind::Transient,
            format!("{path}: connection error (empty HTTP 400 answer; reconnected)"),
        );
        err.transport = Some(TransportCause::Connect);
        err.http_status = Some(400);
        Err(err)
    }

    /// A request completed: one unit back to the pool's reconnect budget (capped).
    fn reconnect_refill(&self, pool: Pool) {
        let mut budget = self.reconnect_budget[pool.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *budget = (*budget + 1).min(RECONNECT_BUDGET);
    }

    /// Logs `x-deprecation-note` (1.6.4): WARNING "Deprecation notice: …", ERROR when
    /// `x-deprecation-level: error`; the server text sanitized; each distinct note at most
    /// once per [`DEPRECATION_LOG_INTERVAL`].
    fn log_deprecation(&self, headers: &HeaderMap) {
        let Some(note) = headers
            .get("x-deprecation-note")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        else {
            return;
        };
        let note = crate::core::sanitize::server_text(&note);
        let error = headers
            .get("x-deprecation-level")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"error"));
        {
            let mut seen = self
                .deprecation_notes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if let Some(entry) = seen.iter_mut().find(|(n, _)| *n == note) {
                if now.duration_since(entry.1) < DEPRECATION_LOG_INTERVAL {
                    return;
                }
                entry.1 = now;
            } else {
                if seen.len() >= MAX_DEPRECATION_NOTES {
                    seen.remove(0);
                }
                seen.push((note.clone(), now));
            }
        }
        if error {
            tracing::error!("Deprecation notice: {note}");
        } else {
            tracing::warn!("Deprecation notice: {note}");
        }
    }

    /// The HTTP clients, built on first use (loading the trust store is not free).
    fn clients(&self) -> Result<&Clients> {
        if let Some(c) = self.clients.get() {
            return Ok(c);
        }
        let tls = crate::core::tls::client_config()?;
        let build = |headers: HeaderMap| self.build_client(&tls, headers);
        let pools = (0..POOLS)
            .map(|_| build(self.static_headers.clone()).map(std::sync::RwLock::new))
            .collect::<Result<Vec<_>>>()?;
        let mut foreign_headers = HeaderMap::new();
        if let Some(ua) = self.static_headers.get(reqwest::header::USER_AGENT) {
            foreign_headers.insert("user-agent", ua.clone());
        }
        let foreign = build(foreign_headers)?;
        let bare = build(HeaderMap::new())?;
        // Another thread may have won the race; either set of clients is equivalent.
        let _ = self.clients.set(Clients {
            pools,
            foreign,
            bare,
            tls,
        });
        Ok(self.clients.get().expect("set above"))
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn same_origin(&self, url: &url::Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// Sends one attempt (following redirects as described on [`Transport`]). Any HTTP
    /// status is `Ok`; failures without a response are `Err` with `transport` set: kind
    /// `Transient` when a retry may help, `Fatal` when it cannot (certificate rejected, bad
    /// redirect, body over the limit, a request that cannot be built).
    ///
    /// The credential comes from [`crate::core::auth::Auth`]; an error of the auth flow
    /// itself (exchange, command) is returned as it is, without `transport` set, so it is
    /// never retried as a connection error. A 401 with `WWW-Authenticate: …
    /// error="invalid_token"` to a request that carried a JWT is replayed once with another
    /// JWT (2.7), within this attempt.
    pub async fn send(&self, req: &Request, retry_count: u32) -> Result<Response> {
        let credential = self
            .auth
            .credential(self, &req.path)
            .await
            .map_err(|mut e| {
                e.transport = None;
                e
            })?;
        let resp = self.send_as(req, retry_count, credential.header()).await?;
        if !crate::core::auth::is_invalid_token(&resp) {
            return Ok(resp);
        }
        match self.auth.replacement(self, &credential).await {
            Ok(Some(fresh)) => self.send_as(req, retry_count, fresh.header()).await,
            Ok(None) => Ok(resp),
            Err(mut e) => {
                e.transport = None;
                Err(e)
            }
        }
    }

    async fn send_as(
        &self,
        req: &Request,
        retry_count: u32,
        key: &HeaderValue,
    ) -> Result<Response> {
        let mut url = self.url_of(&req.path)?;
        let mut method = req.method.clone();
        let mut with_body = true;
        let mut credentials = true;
        let started = Instant::now();
        let mut hops = 0u32;
        loop {
            let clients = self.clients()?;
            let resp = if credentials {
                let client = clients.pools[req.pool.index()]
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                self.credentialed(
                    &client,
                    req,
                    &method,
                    with_body,
                    url.clone(),
                    retry_count,
                    key,
                )
            } else if req.pool == Pool::Redirect {
                clients
                    .bare
                    .request(method.clone(), url.clone())
                    .timeout(req.timeout)
            } else {
                clients
                    .foreign
                    .request(method.clone(), url.clone())
                    .timeout(req.timeout)
            }
            .send()
            .await
            .map_err(|e| transport_error(&req.path, e))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                if let Some(location) = resp.headers().get(reqwest::header::LOCATION) {
                    let next = redirect_target(&url, location, &req.path)?;
                    if hops >= self.limits.max_redirects {
                        return Err(permanent(
                            TransportCause::Io,
                            format!(
                                "{}: more than {} redirects (last to {})",
                                req.path,
                                self.limits.max_redirects,
                                redact_url(next.as_str())
                            ),
                        ));
                    }
                    hops += 1;
                    // As browsers and httpx do: 303, and 301/302 after a POST, become a GET
                    // without a body; 307/308 repeat the method and body.
                    if status == 303 || (matches!(status, 301 | 302) && method == Method::POST) {
                        method = Method::GET;
                        with_body = false;
                    }
                    // The redirect pool never carries credentials past the first hop (9.12),
                    // the others only to the base URL's origin.
                    if credentials && (req.pool == Pool::Redirect || !self.same_origin(&next)) {
                        if method != Method::GET && method != Method::HEAD {
                            return Err(permanent(
                                TransportCause::Io,
                                format!(
                                    "{}: refusing to re-send a {method} request to another origin ({})",
                                    req.path,
                                    redact_url(next.as_str())
                                ),
                            ));
                        }
                        // A fresh request from here on: no key, no access headers, no body.
                        credentials = false;
                        with_body = false;
                    }
                    url = next;
                    continue;
                }
            }
            let headers = resp.headers().clone();
            self.log_deprecation(&headers);
            let empty_400 = status == 400
                && headers
                    .get(reqwest::header::CONTENT_LENGTH)
                    .is_none_or(|v| v.as_bytes().trim_ascii() == b"0");
            let body = read_body(resp, req, &self.limits, status).await?;
            let response = Response {
                status,
                headers,
                body,
                elapsed: started.elapsed(),
            };
            if empty_400 {
                return self.empty_400(req.pool, &req.path, response);
            }
            if response.is_success() {
                self.reconnect_refill(req.pool);
            }
            return Ok(response);
        }
    }

    /// The request to the base URL's origin, with every header of the protocol.
    #[allow(clippy::too_many_arguments)]
    fn credentialed(
        &self,
        client: &reqwest::Client,
        req: &Request,
        method: &Method,
        with_body: bool,
        url: url::Url,
        retry_count: u32,
        key: &HeaderValue,
    ) -> reqwest::RequestBuilder {
        let mut builder = client.request(method.clone(), url).timeout(req.timeout);
        if !self.access_headers.is_empty() {
            builder = builder.headers(self.access_headers.clone());
        }
        builder = builder
            .header(X_API_KEY, key.clone())
            .header(X_RETRY_COUNT, small_int_value(retry_count))
            .header(X_READ_TIMEOUT, self.read_timeout_value(req.timeout))
            .header(
                reqwest::header::ACCEPT,
                if req.accept_proto { PROTOBUF } else { JSON },
            );
        if let Some(key) = &req.idempotency_key {
            builder = builder.header(X_IDEMPOTENCY_KEY, key);
        }
        for h in req.headers.iter() {
            builder = match h {
                ExtraHeader::Typed(name, value) => builder.header(name.clone(), value.clone()),
                ExtraHeader::Text(name, value) => builder.header(*name, value.as_str()),
            };
        }
        if !with_body {
            return builder;
        }
        let content_type = reqwest::header::CONTENT_TYPE;
        match &req.body {
            Body::Empty if req.method == Method::GET => builder,
            Body::Empty => builder.header(content_type, JSON),
            Body::Json(b) => builder.header(content_type, JSON).body(b.clone()),
            Body::Proto(b) => builder.header(content_type, PROTOBUF).body(b.clone()),
        }
    }

    /// `X-Stainless-Read-Timeout` for `timeout`, formatted once per distinct timeout.
    fn read_timeout_value(&self, timeout: Duration) -> HeaderValue {
        let mut cache = self.read_timeouts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = cache.iter().find(|(d, _)| *d == timeout) {
            return v.clone();
        }
        let v = HeaderValue::from_str(&format_seconds(timeout))
            .unwrap_or_else(|_| HeaderValue::from_static("0"));
        if cache.len() >= 16 {
            cache.remove(0);
        }
        cache.push((timeout, v.clone()));
        v
    }

    /// The URL of `path` under the base URL: parsed once per distinct path (a handful of
    /// endpoints carry almost all requests); paths with ids are parsed each time once the
    /// cache is full.
    fn url_of(&self, path: &str) -> Result<url::Url> {
        {
            let cache = self.urls.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, u)) = cache.iter().find(|(p, _)| p == path) {
                return Ok(u.clone());
            }
        }
        // Path parameters are not URL-encoded (checkpoint ids contain '/', PROTOCOL.md 1.2);
        // ids are checked where paths are built (`sanitize::check_path_id`).
        let first = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let url = url::Url::parse(&first)
            .map_err(|e| Error::user(format!("{path}: invalid request URL: {e}")))?;
        let mut cache = self.urls.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() < URL_CACHE_ENTRIES && !cache.iter().any(|(p, _)| p == path) {
            cache.push((path.to_string(), url.clone()));
        }
        Ok(url)
    }
}

/// Paths whose parsed URL a transport keeps.
const URL_CACHE_ENTRIES: usize = 32;

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_RETRY_COUNT: HeaderName = HeaderName::from_static("x-stainless-retry-count");
const X_READ_TIMEOUT: HeaderName = HeaderName::from_static("x-stainless-read-timeout");
const X_IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROTOBUF: HeaderValue = HeaderValue::from_static("application/x-protobuf");

/// An integer header value without formatting or allocating for the small values of retry
/// counts and poll iterations.
pub fn small_int_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Resolves a `Location` against the current URL; only http(s), never https → http.
fn redirect_target(current: &url::Url, location: &HeaderValue, path: &str) -> Result<url::Url> {
    let bad = |why: String| permanent(TransportCause::Io, format!("{path}: {why}"));
    let text = location
        .to_str()
        .map_err(|_| bad("redirect with a Location that is not ASCII".into()))?;
    let next = current
        .join(text)
        .map_err(|_| bad("redirect to an invalid Location".into()))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad(format!(
            "redirect to an unsupported scheme ({})",
            crate::core::sanitize::bounded(next.scheme(), 32)
        )));
    }
    if current.scheme() == "https" && next.scheme() != "https" {
        return Err(bad(format!(
            "refusing a redirect from https to plain http ({})",
            redact_url(next.as_str())
        )));
    }
    Ok(next)
}

/// Reads a body with the limits of `docs/security.md`: a success body up to the announced
/// size (capped) or the default limit; an error body up to [`MAX_ERROR_BODY_BYTES`], the rest
/// left unread. Counted on the bytes as delivered, i.e. after any content decoding.
async fn read_body(
    mut resp: reqwest::Response,
    req: &Request,
    limits: &Limits,
    status: u16,
) -> Result<Bytes> {
    let success = (200..300).contains(&status);
    let limit = if success {
        match req.announced_response_bytes {
            Some(n) if n > limits.max_announced_response_bytes => {
                return Err(permanent(
                    TransportCause::Io,
                    format!(
                        "{}: the server announced a {n}-byte result, above the limit of {} bytes (limits.max_announced_response_bytes)",
                        req.path, limits.max_announced_response_bytes
                    ),
                ))
            }
            // Some slack over the announcement: it counts the payload, not its framing.
            Some(n) => n.saturating_add(64 * 1024).max(limits.max_response_bytes),
            None => limits.max_response_bytes,
        }
    } else {
        MAX_ERROR_BODY_BYTES
    };
    let over = |len: u64| {
        permanent(
            TransportCause::Io,
            format!(
                "{}: response body of {len} bytes or more is above the limit of {limit} bytes (limits.max_response_bytes)",
                req.path
            ),
        )
    };
    let announced = resp.content_length();
    if success && announced.is_some_and(|n| n > limit) {
        return Err(over(announced.unwrap_or(0)));
    }
    // Each chunk is copied out of the connection's buffers at once into blocks we own (a
    // small announced size: one exact block; otherwise blocks growing from 16 KiB to 1 MiB,
    // never reallocated), so an endless body holds at most `limit` bytes plus one block
    // before it is refused, however the server slices it (keeping hyper's chunks would also
    // keep the read buffers they share), and a Content-Length the server never delivers
    // reserves no more than one block.
    let first_block = match announced {
        Some(n) if n <= limit && n <= BODY_MAX_BLOCK as u64 => n as usize,
        _ => BODY_FIRST_BLOCK,
    };
    let mut body = BlockBuffer::new(first_block);
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(transport_error(&req.path, e)),
        };
        let room = limit - body.len();
        if chunk.len() as u64 > room {
            if success {
                return Err(over(body.len() + chunk.len() as u64));
            }
            // An error answer keeps its status; its body is cut.
            body.extend(&chunk[..room as usize]);
            break;
        }
        body.extend(&chunk);
    }
    Ok(body.freeze())
}

/// First block of a body of unannounced size.
const BODY_FIRST_BLOCK: usize = 16 << 10;
/// Largest block of a body of unannounced size.
const BODY_MAX_BLOCK: usize = 1 << 20;

/// A body under construction: blocks filled in order, each allocated once at its final
/// size, joined by [`freeze`](Self::freeze) (no copy when there is one block).
struct BlockBuffer {
    blocks: Vec<bytes::BytesMut>,
    next_block: usize,
    len: u64,
}

impl BlockBuffer {
    fn new(first_block: usize) -> BlockBuffer {
        BlockBuffer {
            blocks: Vec::new(),
            next_block: first_block.max(1),
            len: 0,
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn extend(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let full = self.blocks.last().is_none_or(|b| b.len() == b.capacity());
            if full {
                let size = self.next_block;
                self.next_block = (size * 2).clamp(BODY_FIRST_BLOCK, BODY_MAX_BLOCK);
                self.blocks.push(bytes::BytesMut::with_capacity(size));
            }
            let Some(block) = self.blocks.last_mut() else {
                return;
            };
            let n = (block.capacity() - block.len()).min(data.len());
            block.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    fn freeze(mut self) -> Bytes {
        match self.blocks.len() {
            0 => Bytes::new(),
            1 => self.blocks.pop().unwrap_or_default().freeze(),
            _ => {
                let mut buf = bytes::BytesMut::with_capacity(self.len as usize);
                for b in &self.blocks {
                    buf.extend_from_slice(b);
                }
                buf.freeze()
            }
        }
    }
}
/// A transport failure that retrying cannot cure.
fn permanent(cause: TransportCause, message: String) -> Error {
    let mut err = Error::fatal(message);
    err.transport = Some(cause);
    err
}

fn format_seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// Whether a TLS failure is a verdict on the certificate (permanent) rather than a broken
/// handshake (EOF, reset: transient).
fn certificate_rejected(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        // Some layers box their cause, which hides its type from `downcast_ref`: rustls's
        // own wording of the certificate verdicts is the fallback.
        let text = err.to_string();
        if text.starts_with("invalid peer certificate")
            || text.starts_with("peer sent no certificates")
            || text.starts_with("invalid certificate revocation list")
        {
            return true;
        }
        if let Some(tls) = tls {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::InvalidCertRevocationList(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType
                    | rustls::Error::PeerIncompatible(_)
                    | rustls::Error::NoApplicationProtocol
            );
        }
        cur = err.source();
    }
    false
}

fn transport_error(path: &str, e: reqwest::Error) -> Error {
    let mut source = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = cur {
        source = s.to_string();
        cur = s.source();
    }
    let source = crate::core::sanitize::server_text(&source);
    let detail = |what: &str| {
        if source.is_empty() {
            format!("{path}: {what}")
        } else {
            format!("{path}: {what}: {source}")
        }
    };
    if e.is_builder() {
        return permanent(TransportCause::Io, detail("the request could not be built"));
    }
    if certificate_rejected(&e) {
        return permanent(
            TransportCause::Tls,
            detail(
                "the server's TLS certificate was rejected (if a proxy intercepts TLS, add its \
                 CA to the system trust store or name it in SSL_CERT_FILE)",
            ),
        );
    }
    let lower = source.to_ascii_lowercase();
    let (cause, what) = if e.is_timeout() {
        (TransportCause::Timeout, "timed out")
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        (TransportCause::Tls, "TLS failed")
    } else if e.is_connect() {
        (TransportCause::Connect, "could not connect")
    } else {
        (TransportCause::Io, "connection failed")
    };
    let mut err = Error::new(ErrorKind::Transient, detail(what));
    err.transport = Some(cause);
    err
}

#[cfg(test)]
mod tests {

    #[test]
    fn block_buffer_keeps_the_bytes_and_reserves_at_most_one_spare_block() {
        for first in [1, 7, super::BODY_FIRST_BLOCK, 300_000] {
            let mut b = super::BlockBuffer::new(first);
            let mut want = Vec::new();
            let mut n = 0u32;
            while want.len() < 5_000_000 {
                let piece: Vec<u8> = (0..(n * 7919 % 70_001)).map(|i| (i ^ n) as u8).collect();
                b.extend(&piece);
                want.extend_from_slice(&piece);
                n += 1;
            }
            let reserved: usize = b.blocks.iter().map(|x| x.capacity()).sum();
            assert!(
                reserved <= want.len() + super::BODY_MAX_BLOCK.max(first),
                "{first}: {reserved} reserved for {} bytes",
                want.len()
            );
            assert_eq!(b.len(), want.len() as u64);
            assert_eq!(&b.freeze()[..], &want[..], "{first}");
        }
        assert!(super::BlockBuffer::new(0).freeze().is_empty());
    }
    use super::*;

    fn target(from: &str, location: &str) -> Result<url::Url> {
        redirect_target(
            &url::Url::parse(from).unwrap(),
            &HeaderValue::from_str(location).unwrap(),
            "/api/v1/x",
        )
    }

    #[test]
    fn redirects_never_downgrade_and_errors_drop_the_query() {
        let err = target(
            "https://tinker.example/api/v1/x",
            "http://storage.example/obj?X-Sig=secret-token",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Fatal);
        assert!(err.message.contains("from https to plain http"), "{err}");
        assert!(!err.message.contains("secret-token"), "{err}");
        assert!(target("https://a.example/x", "ftp://a.example/y").is_err());
        assert!(target("https://a.example/x", "file:///etc/passwd").is_err());
        // Relative locations resolve against the current URL; https stays https.
        assert_eq!(
            target("https://a.example/p/x", "/q?y=1").unwrap().as_str(),
            "https://a.example/q?y=1"
        );
        assert_eq!(
            target("http://127.0.0.1:8/x", "https://b.example/s")
                .unwrap()
                .as_str(),
            "https://b.example/s"
        );
    }
}
