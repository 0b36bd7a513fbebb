//! The one error type of the client, with a stable kind taxonomy.

use crate::core::sanitize;
use crate::core::types::RequestErrorCategory;
use std::fmt;
use std::time::Duration;

/// What kind of failure an [`Error`] is. The set is stable: bindings map it to their own
/// exception classes and the C ABI to numbered statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request was invalid (bad argument, 4xx other than 408/409/429, a future failed
    /// with category `user`). Retrying the same request will not help.
    User,
    /// A failure that retries may cure (transport error, 5xx, 408, 409, 429). Surfaces only
    /// when the retry policy gave up (attempt cap).
    Transient,
    /// A failure that is neither the user's nor transient: malformed server responses,
    /// a future that failed with category `server`/`unknown`, an internal error.
    Fatal,
    /// The account's billing status blocks the request (HTTP 402 past the pause window).
    Billing,
    /// The server no longer knows the future or the session (HTTP 410).
    Expired,
    /// The operation was cancelled by the caller.
    Cancelled,
    /// The caller's wait timed out (the operation itself may still complete).
    Timeout,
    /// Nothing progressed on this client for the whole progress timeout.
    NoProgress,
    /// The session expired (heartbeat answered 410); later operations fail fast.
    SessionExpired,
    /// Authentication failed (missing or rejected API key).
    Auth,
    /// A panic inside the library was caught; the process is unaffected.
    Panic,
}

impl ErrorKind {
    /// A short lower-case name, e.g. `user`, `no_progress`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::User => "user",
            ErrorKind::Transient => "transient",
            ErrorKind::Fatal => "fatal",
            ErrorKind::Billing => "billing",
            ErrorKind::Expired => "expired",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NoProgress => "no_progress",
            ErrorKind::SessionExpired => "session_expired",
            ErrorKind::Auth => "auth",
            ErrorKind::Panic => "panic",
        }
    }
}

/// What failed when a request got no HTTP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportCause {
    /// The connection could not be established.
    Connect,
    /// The request timed out.
    Timeout,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The connection broke (reset, closed mid-response, …).
    Io,
}

/// An error of any client operation.
#[derive(Clone, Debug)]
pub struct Error {
    /// The kind.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
    /// HTTP status of the response that caused it, if any.
    pub http_status: Option<u16>,
    /// The request id (future id) involved, if any.
    pub request_id: Option<String>,
    /// The server's error category for a failed future.
    pub category: Option<RequestErrorCategory>,
    /// The raw response body (truncated), if any.
    pub body: Option<String>,
    /// Set when the error came from the transport (no HTTP response): what failed.
    pub transport: Option<TransportCause>,
}

impl Error {
    /// An error of `kind` with a message and nothing else.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            http_status: None,
            request_id: None,
            category: None,
            body: None,
            transport: None,
        }
    }

    /// A user error (invalid argument).
    pub fn user(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::User, message)
    }

    /// A fatal error (malformed response, internal failure).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    /// The caller cancelled.
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "the operation was cancelled")
    }

    /// The caller's wait timed out.
    pub fn timeout(waited: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!(
                "timed out after {:.3} s waiting for the result",
                waited.as_secs_f64()
            ),
        )
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// An error for an HTTP status answer, classified by status.
    pub fn from_status(status: u16, body: &str) -> Self {
        let kind = match status {
            401 | 403 => ErrorKind::Auth,
            402 => ErrorKind::Billing,
            410 => ErrorKind::Expired,
            408 | 409 | 429 | 500..=599 => ErrorKind::Transient,
            _ => ErrorKind::User,
        };
        let detail = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string));
        // Server text is bounded and escaped before it becomes a message (it reaches logs).
        let message = match detail {
            Some(d) => format!("HTTP {status}: {}", sanitize::server_text(&d)),
            None if body.is_empty() => format!("HTTP {status}"),
            None => format!("HTTP {status}: {}", sanitize::bounded(body, 500)),
        };
        Error {
            kind,
            message,
            http_status: Some(status),
            request_id: None,
            category: None,
            body: Some(truncate(body, sanitize::MAX_SERVER_TEXT)),
            transport: None,
        }
    }

    /// Whether the retry policy retries this error (transport errors, 408, 409, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// Whether the caller, not the system, is at fault (telemetry classification, 13.8).
    pub fn is_user_error(&self) -> bool {
        match self.category {
            Some(RequestErrorCategory::User) => true,
            _ => self
                .http_status
                .is_some_and(|s| (400..500).contains(&s) && s != 408),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Escaped again here: whatever built the error, its text cannot forge log lines.
        write!(
            f,
            "{} error: {}",
            self.kind.as_str(),
            sanitize::printable(&self.message)
        )?;
        if let Some(id) = &self.request_id {
            write!(f, " (request {})", sanitize::printable(id))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Result alias of the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify() {
        assert_eq!(Error::from_status(400, "{}").kind, ErrorKind::User);
        assert_eq!(Error::from_status(401, "").kind, ErrorKind::Auth);
        assert_eq!(Error::from_status(402, "").kind, ErrorKind::Billing);
        assert_eq!(Error::from_status(410, "").kind, ErrorKind::Expired);
        for s in [408, 409, 429, 500, 503] {
            assert!(Error::from_status(s, "").is_retryable(), "{s}");
        }
        let e = Error::from_status(422, r#"{"detail":"bad field"}"#);
        assert_eq!(e.message, "HTTP 422: bad field");
        assert!(e.is_user_error());
        assert!(!Error::from_status(408, "").is_user_error());
    }
}
