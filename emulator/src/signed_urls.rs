//! Signed, expiring download URLs (PROTOCOL.md 9.8, 9.10 trace export, 9.12 audit log).
//!
//! A URL is `{base}/_signed/{relative path}?expires={unix s}&sig={hex HMAC-SHA256 of
//! "{relative path}\n{expires}"}` with a per-process key. `GET /_signed/…` needs no
//! credential: it serves the file under the state dir when the signature is ours and the
//! expiry (on the checkpoint store's clock, see [`crate::checkpoints::CheckpointStore::now`])
//! has not passed, and answers 403 otherwise. Every download is recorded with whether an
//! `Authorization` or `X-API-Key` header arrived (`GET /_emulator/signed_downloads`), so
//! client tests can assert that none was sent.

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

/// The signing key and the download log.
pub struct Signer {
    key: ring::hmac::Key,
    log: Mutex<VecDeque<Download>>,
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
    let resp = answer(&app, &rel, &q);
    app.signer.record(Download {
        path: rel.chars().take(1024).collect(),
        status: resp.status().as_u16(),
        authorization_header: headers.contains_key(header::AUTHORIZATION),
        api_key_header: headers.contains_key("x-api-key"),
    });
    resp
}

fn answer(app: &AppState, rel: &str, q: &SignedQuery) -> Response {
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
    match std::fs::read(app.config.state_dir.join(rel)) {
        Ok(bytes) => {
            let ct = if rel.ends_with(".json") {
                "application/json"
            } else {
                "application/octet-stream"
            };
            let mut resp = (StatusCode::OK, bytes).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            resp
        }
        Err(_) => ApiError::not_found("the file is gone").into_response(),
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
}
