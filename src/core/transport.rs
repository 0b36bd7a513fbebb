//! One HTTP attempt: URL joining, default headers, timeouts, connection pools per purpose
//! (PROTOCOL.md 1.2-1.6). Retrying is the caller's business ([`crate::core::retry`]).

use crate::core::config::{ApiKey, Timeouts};
use crate::core::error::{Error, ErrorKind, Result, TransportCause};
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
}

const POOLS: usize = 5;

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
    pub headers: Vec<(&'static str, String)>,
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
            idempotency_key: Some(format!("tinkex-retry-{}", crate::core::rand::uuid4())),
            accept_proto: false,
            headers: Vec::new(),
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
            headers: Vec::new(),
        }
    }
}

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
        self.headers.get(name).and_then(|v| v.to_str().ok())
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
    text.into_owned()
}

/// Sends single HTTP attempts with the client's headers and pools.
pub struct Transport {
    base_url: String,
    api_key: ApiKey,
    clients: Vec<reqwest::Client>,
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

impl Transport {
    /// Builds the pools. Performs no I/O.
    pub fn new(base_url: &str, api_key: ApiKey, timeouts: &Timeouts) -> Result<Self> {
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
        for (env, header) in [
            ("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-access-client-id"),
            ("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-access-client-secret"),
        ] {
            if let Ok(v) = std::env::var(env) {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    static_headers.insert(HeaderName::from_static(header), v);
                }
            }
        }
        let clients = (0..POOLS)
            .map(|_| {
                reqwest::Client::builder()
                    // Set once per client; reqwest merges them into each request.
                    .default_headers(static_headers.clone())
                    .connect_timeout(timeouts.connect)
                    .pool_max_idle_per_host(64)
                    .build()
                    .map_err(|e| Error::fatal(format!("cannot build the HTTP client: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transport {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            clients,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one attempt. Any HTTP status is `Ok`; only transport failures are `Err`
    /// (kind `Transient`, `transport` set to the cause).
    pub async fn send(&self, req: &Request, retry_count: u32) -> Result<Response> {
        // Path parameters are not URL-encoded (checkpoint ids contain '/', PROTOCOL.md 1.2).
        let url = format!("{}/{}", self.base_url, req.path.trim_start_matches('/'));
        let client = &self.clients[req.pool.index()];
        let mut builder = client
            .request(req.method.clone(), &url)
            .timeout(req.timeout)
            .header("x-api-key", self.api_key.expose())
            .header("x-stainless-retry-count", retry_count.to_string())
            .header("x-stainless-read-timeout", format_seconds(req.timeout))
            .header(
                "accept",
                if req.accept_proto {
                    "application/x-protobuf"
                } else {
                    "application/json"
                },
            );
        if let Some(key) = &req.idempotency_key {
            builder = builder.header("x-idempotency-key", key);
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        builder = match &req.body {
            Body::Empty if req.method == Method::GET => builder,
            Body::Empty => builder.header("content-type", "application/json"),
            Body::Json(b) => builder
                .header("content-type", "application/json")
                .body(b.clone()),
            Body::Proto(b) => builder
                .header("content-type", "application/x-protobuf")
                .body(b.clone()),
        };
        let started = Instant::now();
        let resp = builder
            .send()
            .await
            .map_err(|e| transport_error(&req.path, e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&req.path, e))?;
        Ok(Response {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }
}

fn format_seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

fn transport_error(path: &str, e: reqwest::Error) -> Error {
    let mut source = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = cur {
        source = s.to_string();
        cur = s.source();
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
    let mut err = Error::new(
        ErrorKind::Transient,
        if source.is_empty() {
            format!("{path}: {what}")
        } else {
            format!("{path}: {what}: {source}")
        },
    );
    err.transport = Some(cause);
    err
}
