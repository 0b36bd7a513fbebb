//! Small helpers: id generation, timestamps, JSON error responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// An HTTP error with a JSON `{"detail": …}` body (never an empty body: see PROTOCOL.md 17.15).
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub detail: String,
}

impl ApiError {
    /// Builds an error with a status and message.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
        }
    }

    /// 400 with a message.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404 with a message.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &serde_json::json!({ "detail": self.detail }))
    }
}

/// Serializes `body` as a JSON response with an explicit content length.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON serialization of a response");
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Parses a JSON request body, mapping failures to a 400 that names the problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: {e}"),
        )
    })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Formats Unix seconds as RFC 3339 UTC with a `Z` suffix, e.g. `2026-07-01T12:00:00.250000Z`.
pub fn rfc3339(unix_seconds: f64) -> String {
    // Clamped to years 1970..=9999 so any input (a huge TTL, NaN) formats without overflow.
    let unix_seconds = if unix_seconds.is_nan() {
        0.0
    } else {
        unix_seconds.clamp(0.0, 253_402_300_799.0)
    };
    let secs = unix_seconds.floor() as i64;
    let micros = ((unix_seconds - secs as f64) * 1e6).round().min(999_999.0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A process-unique id generator: a random-ish instance nonce plus a counter, so ids never
/// repeat across emulator restarts on the same state dir.
pub struct IdGen {
    nonce: String,
    counter: AtomicU64,
}

impl IdGen {
    /// A generator with a nonce derived from the clock and process id.
    pub fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mixed = splitmix(t ^ (u64::from(std::process::id()) << 32));
        IdGen {
            nonce: format!("{:08x}", mixed as u32),
            counter: AtomicU64::new(0),
        }
    }

    /// The next id with a prefix, e.g. `req-1a2b3c4d-7`.
    pub fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{n}", self.nonce)
    }

    /// A UUID-shaped id (for session ids).
    pub fn uuid(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let a = splitmix(n ^ u64::from_str_radix(&self.nonce, 16).unwrap_or(7));
        let b = splitmix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_782_907_200.25), "2026-07-01T12:00:00.250000Z");
        assert_eq!(rfc3339(1e300), "9999-12-31T23:59:59.000000Z");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn ids_are_unique() {
        let g = IdGen::new();
        assert_ne!(g.next("req"), g.next("req"));
        assert_ne!(g.uuid(), g.uuid());
    }
}
