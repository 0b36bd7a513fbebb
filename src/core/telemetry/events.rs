//! Building the event JSON (PROTOCOL.md 16.3): the common fields of every event, the event
//! of a failed operation (13.8), the [`Severity`] names, and the platform and process id
//! that every batch carries.

use super::redact_secrets;
use super::time::format_timestamp;
use crate::core::error::{Error, ErrorKind};
use crate::core::rand::uuid4;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::OnceLock;
use std::time::SystemTime;

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `WARNING`
    Warning,
    /// `ERROR`
    Error,
    /// `CRITICAL`
    Critical,
}

impl Severity {
    /// The wire name, e.g. `WARNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The common fields except `event_session_index` (assigned when queued).
pub(super) fn base_event(kind: &str, severity: Severity, at: SystemTime) -> Value {
    let mut m = Map::new();
    m.insert("event".into(), Value::String(kind.to_string()));
    m.insert("event_id".into(), Value::String(uuid4()));
    m.insert("severity".into(), Value::String(severity.as_str().into()));
    m.insert("timestamp".into(), Value::String(format_timestamp(at)));
    Value::Object(m)
}

/// The event for a failed operation (PROTOCOL.md 16.3, 13.8), or None for a cancellation.
pub(super) fn exception_event(err: &Error, method: &str, at: SystemTime) -> Option<Value> {
    if err.kind == ErrorKind::Cancelled {
        return None;
    }
    let error_type = error_type_name(err.kind);
    let message = redact_secrets(&err.message);
    if err.is_user_error() {
        let mut data = Map::new();
        data.insert("error_type".into(), Value::String(error_type.into()));
        data.insert("message".into(), Value::String(message));
        if let Some(s) = err.http_status {
            data.insert("status_code".into(), Value::from(s));
        }
        data.insert("method".into(), Value::String(redact_secrets(method)));
        let mut e = base_event("GENERIC_EVENT", Severity::Warning, at);
        e["event_name"] = Value::String("user_error".into());
        e["event_data"] = Value::Object(data);
        Some(e)
    } else {
        let mut e = base_event("UNHANDLED_EXCEPTION", Severity::Error, at);
        e["error_type"] = Value::String(error_type.into());
        e["error_message"] = Value::String(message);
        let mut trace = format!("in {}", redact_secrets(method));
        if let Some(id) = &err.request_id {
            trace.push_str(&format!(", request {}", redact_secrets(id)));
        }
        if let Some(s) = err.http_status {
            trace.push_str(&format!(", HTTP {s}"));
        }
        e["traceback"] = Value::String(trace);
        Some(e)
    }
}

/// The `ErrorKind` variant name, e.g. `Transient`, `NoProgress` (the `error_type` field).
pub(super) fn error_type_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::User => "User",
        ErrorKind::Transient => "Transient",
        ErrorKind::Fatal => "Fatal",
        ErrorKind::Billing => "Billing",
        ErrorKind::Expired => "Expired",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Timeout => "Timeout",
        ErrorKind::NoProgress => "NoProgress",
        ErrorKind::SessionExpired => "SessionExpired",
        ErrorKind::Auth => "Auth",
        ErrorKind::Panic => "Panic",
    }
}

/// OS name as Python's `platform.system()` reports it.
pub fn platform() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        "openbsd" => "OpenBSD",
        "netbsd" => "NetBSD",
        "android" => "Android",
        "ios" => "iOS",
        other => other,
    }
}

/// The uuid4 of this process, generated on first use.
pub fn process_uuid() -> &'static str {
    static PROCESS_UUID: OnceLock<String> = OnceLock::new();
    PROCESS_UUID.get_or_init(uuid4)
}
