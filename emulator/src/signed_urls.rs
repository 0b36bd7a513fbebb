//! Signed, expiring download URLs (PROTOCOL.md 9.8, 9.10 trace export, 9.12 audit log).
//!
//! A URL is `{base}/_signed/{relative path}?expires={unix s}&sig={hex HMAC-SHA256 of
//! "{relative path}\n{expires}"}` with a per-process key. `GET /_signed/…` needs no
//! credential: it serves the file under the state dir when the signature is ours and the
//! expiry (on the checkpoint store's clock, see [`crate::checkpoints::CheckpointStore::now`])
//! has not passed, and answers 403 otherwise. Every download is recorded with whether an
//! `Authorization` or `X-API-Key` header arrived (`GET /_emulator/signed_downloads`), so
//! client tests can assert that none was sent.
//!
//! Like a storage service, it answers with a strong `ETag` (the SHA-256 of the content) and
//! `Accept-Ranges: bytes`, and honours one `Range: bytes=<first>-[<last>]` (206 with
//! `Content-Range`; 416 past the end) and `If-Range` (a different tag gets the whole file),
//! so clients can resume a partial download. [`Signer::cut_downloads`] makes the next
//! matching downloads send a real prefix of their body and then reset the connection — the
//! interruption a resuming client must survive (the generic fault rules of
//! [`crate::faults`] send a made-up body instead).

use crate::state::AppState;
use crate::util::{json_response, ApiError};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Lifetime of a signed URL, seconds (the service's is about an hour).
pub const URL_LIFETIME_SECS: i64 = 3600;

/// Downloads kept in the log.
const MAX_LOG: usize = 10_000;

/// Top-level directories of the state dir that signed URLs may serve.
const SERVABLE: [&str; 2] = ["runs", "rest"];

/// One download attempt.
#[derive(Clone, Debug, Serialize)]
pub struct Download {
    /// Relative path asked for.
    pub path: String,
    /// Answer status.
    pub status: u16,
    /// Whether an `Authorization` header arrived.
    pub authorization_header: bool,
    /// Whether an `X-API-Key` header arrived.
    pub api_key_header: bool,
}

/// A pending cut: downloads whose path contains `path` send `after_bytes` of their body,
/// then the connection resets.
struct Cut {
    path: String,
    after_bytes: u64,
    remaining: u64,
}

/// The signing key and the download log.
pub struct Signer {
    key: ring::hmac::Key,
    log: Mutex<VecDeque<Download>>,
    cuts: Mutex<Vec<Cut>>,
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

impl Signer {
    /// A fresh random key.
    pub fn new() -> Self {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        if ring::rand::SystemRandom::new().fill(&mut secret).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            secret[..16].copy_from_slice(&nanos.to_le_bytes());
        }
        Signer {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            log: Mutex::new(VecDeque::new()),
            cuts: Mutex::new(Vec::new()),
        }
    }

    fn signature(&self, rel: &str, expires: i64) -> String {
        let tag = ring::hmac::sign(&self.key, format!("{rel}\n{expires}").as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The signed URL of `rel` (a path under the state dir) valid until `expires`.
    pub fn url(&self, base: &str, rel: &str, expires: i64) -> String {
        let encoded: Vec<String> = rel.split('/').map(percent_encode).collect();
        format!(
            "{base}/_signed/{}?expires={expires}&sig={}",
            encoded.join("/"),
            self.signature(rel, expires)
        )
    }

    /// Whether `sig` is ours for `rel` and `expires` (constant time).
    pub fn verify(&self, rel: &str, expires: i64, sig: &str) -> bool {
        let Some(bytes) = hex_decode(sig) else {
            return false;
        };
        ring::hmac::verify(&self.key, format!("{rel}\n{expires}").as_bytes(), &bytes).is_ok()
    }

    fn record(&self, d: Download) {
        let mut log = self.log.lock().unwrap();
        if log.len() >= MAX_LOG {
            log.pop_front();
        }
        log.push_back(d);
    }

    /// Every download attempt, oldest first.
    pub fn downloads(&self) -> Vec<Download> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// The next `count` successful downloads whose relative path contains `path` send only
    /// the first `after_bytes` bytes of their body (after the headers of the full answer),
    /// then reset the connection.
    pub fn cut_downloads(&self, path: &str, after_bytes: u64, count: u64) {
        self.cuts.lock().unwrap().push(Cut {
            path: path.to_string(),
            after_bytes,
            remaining: count,
        });
    }

    /// The cut that applies to a download of `rel`, counted.
    fn take_cut(&self, rel: &str) -> Option<u64> {
        let mut cuts = self.cuts.lock().unwrap();
        let cut = cuts
            .iter_mut()
            .find(|c| c.remaining > 0 && rel.contains(&c.path))?;
        cut.remaining -= 1;
        Some(cut.after_bytes)
    }
}

fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The base URL clients reached this request at (`http://{Host}`).
pub fn base_url(app: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}:{}", app.config.host, app.config.port));
    format!("http://{host}")
}

/// Signs `rel` for [`URL_LIFETIME_SECS`] from now; returns the URL and its expiry (Unix s).
pub fn sign(app: &AppState, headers: &HeaderMap, rel: &str) -> (String, i64) {
    let expires = app.checkpoints.now().floor() as i64 + URL_LIFETIME_SECS;
    (
        app.signer.url(&base_url(app, headers), rel, expires),
        expires,
    )
}

/// Query of a signed URL.
#[derive(Deserialize)]
pub struct SignedQuery {
    expires: Option<i64>,
    sig: Option<String>,
}

/// `GET /_signed/{*path}`: serves a file when the signature and expiry hold.
pub async fn serve(
    State(app): State<Arc<AppState>>,
    Path(rel): Path<String>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> Response {
    let resp = answer(&app, &rel, &q, &headers);
    app.signer.record(Download {
        path: rel.chars().take(1024).collect(),
        status: resp.status().as_u16(),
        authorization_header: headers.contains_key(header::AUTHORIZATION),
        api_key_header: headers.contains_key("x-api-key"),
    });
    resp
}

fn answer(app: &AppState, rel: &str, q: &SignedQuery, headers: &HeaderMap) -> Response {
    let (Some(expires), Some(sig)) = (q.expires, q.sig.as_deref()) else {
        return ApiError::new(StatusCode::FORBIDDEN, "missing expires or sig").into_response();
    };
    if !app.signer.verify(rel, expires, sig) {
        return ApiError::new(StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    if (expires as f64) <= app.checkpoints.now() {
        return ApiError::new(StatusCode::FORBIDDEN, "the signed URL has expired").into_response();
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if rel.len() > 4096
        || !SERVABLE.contains(&parts[0])
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\\'))
    {
        return ApiError::not_found("no such file").into_response();
    }
    let Ok(bytes) = std::fs::read(app.config.state_dir.join(rel)) else {
        return ApiError::not_found("the file is gone").into_response();
    };
    let etag = entity_tag(&bytes);
    let len = bytes.len() as u64;
    let header_text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    // If-Range with another tag: the client's bytes are of another file; send it whole.
    let range_applies = header_text(header::IF_RANGE).is_none_or(|t| t == etag);
    let range = match header_text(header::RANGE).filter(|_| range_applies) {
        None => None,
        Some(spec) => match parse_range(spec, len) {
            Ok(r) => r,
            Err(()) => {
                let mut resp = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "the range is past the end of the file",
                )
                .into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    let (status, body) = match range {
        Some((first, last)) => (
            StatusCode::PARTIAL_CONTENT,
            bytes[first as usize..=last as usize].to_vec(),
        ),
        None => (StatusCode::OK, bytes),
    };
    let ct = if rel.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let mut resp = match app.signer.take_cut(rel) {
        Some(after) => cut_body(status, body, after),
        None => (status, body).into_response(),
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Some((first, last)) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// A strong entity tag of a file: the quoted hex SHA-256 of its content.
fn entity_tag(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// One range `bytes=<first>-[<last>]` of a file of `len` bytes: `Ok(None)` when the header
/// is not a single byte range (served whole, as RFC 9110 allows), `Err` when it starts past
/// the end (416). Suffix ranges (`bytes=-N`) and multiple ranges are served whole.
fn parse_range(spec: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(r) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((first, last)) = r.split_once('-') else {
        return Ok(None);
    };
    if r.contains(',') {
        return Ok(None);
    }
    let Ok(first) = first.trim().parse::<u64>() else {
        return Ok(None);
    };
    let last = match last.trim() {
        "" => len.saturating_sub(1),
        l => match l.parse::<u64>() {
            Ok(l) if l >= first => l.min(len.saturating_sub(1)),
            _ => return Ok(None),
        },
    };
    if first >= len {
        return Err(());
    }
    Ok(Some((first, last)))
}

/// A response announcing all of `body` but sending only its first `after` bytes, then a
/// connection reset.
fn cut_body(status: StatusCode, mut body: Vec<u8>, after: u64) -> Response {
    let announced = body.len();
    body.truncate(after.min(announced as u64) as usize);
    let stream = CutStream {
        prefix: Some(body),
        yields_before_reset: FLUSH_YIELDS,
    };
    let mut resp = Response::new(axum::body::Body::from_stream(stream));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&announced.to_string()) {
        resp.headers_mut().insert(header::CONTENT_LENGTH, v);
    }
    resp
}

/// Times a cut body answers "not ready" between its prefix and the reset. The server
/// flushes what it buffered whenever the body is not ready, so the client really receives
/// the prefix (an immediate error would abort the connection with the prefix unsent).
const FLUSH_YIELDS: u32 = 4;

/// The body of a cut download: the prefix, a few "not ready" turns, then an error (which
/// makes the server reset the connection).
struct CutStream {
    prefix: Option<Vec<u8>>,
    yields_before_reset: u32,
}

impl futures_core::Stream for CutStream {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(prefix)));
        }
        if self.yields_before_reset > 0 {
            self.yields_before_reset -= 1;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset (cut download)",
        ))))
    }
}

/// `GET /_emulator/signed_downloads`.
pub async fn downloads(State(app): State<Arc<AppState>>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "downloads": app.signer.downloads() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_path_and_expiry() {
        let s = Signer::new();
        let url = s.url("http://h", "runs/a b/x", 100);
        assert!(url.starts_with("http://h/_signed/runs/a%20b/x?expires=100&sig="));
        let sig = url.rsplit_once("sig=").unwrap().1;
        assert!(s.verify("runs/a b/x", 100, sig));
        assert!(!s.verify("runs/a b/y", 100, sig));
        assert!(!s.verify("runs/a b/x", 101, sig));
        assert!(!Signer::new().verify("runs/a b/x", 100, sig));
        assert!(!s.verify("runs/a b/x", 100, "zz"));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=4-", 10), Ok(Some((4, 9))));
        assert_eq!(parse_range("bytes=4-6", 10), Ok(Some((4, 6))));
        assert_eq!(parse_range("bytes=4-60", 10), Ok(Some((4, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=-3", 10), Ok(None));
        assert_eq!(parse_range("bytes=1-2,4-5", 10), Ok(None));
        assert_eq!(parse_range("items=1-2", 10), Ok(None));
        assert_eq!(parse_range("bytes=6-4", 10), Ok(None));
    }
}
