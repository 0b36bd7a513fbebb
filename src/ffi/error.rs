//! `tinkex_error` (Box-owned): the details of a failed call or operation.

use super::boundary;
use super::status::tinkex_status;
use super::BoxHandle;
use crate::core::error::{Error, ErrorKind, TransportCause};
use std::ffi::{c_char, CString};

/// A failure inside the ffi layer, before it becomes a [`tinkex_error`].
#[derive(Clone, Debug)]
pub struct Failure {
    /// The status reported.
    pub status: tinkex_status,
    /// Error kind name (the core's `ErrorKind::as_str`, or an ffi kind such as `null_arg`).
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
    /// HTTP status, 0 if none.
    pub http_status: u16,
    /// The server request id, if any.
    pub request_id: Option<String>,
    /// Whether retrying the same call may succeed.
    pub retryable: bool,
    /// The server's category of a failed future (`user`, `server`, `unknown`), if any.
    pub category: Option<&'static str>,
    /// The raw HTTP response body (truncated), if any.
    pub body: Option<String>,
}

impl Failure {
    /// A failure of the ffi layer itself.
    pub fn new(status: tinkex_status, message: impl Into<String>) -> Self {
        let kind = match status {
            tinkex_status::NullArg => "null_arg",
            tinkex_status::InvalidArg => "invalid_arg",
            tinkex_status::InvalidUtf8 => "invalid_utf8",
            tinkex_status::InvalidJson => "invalid_json",
            tinkex_status::AlreadyTaken => "already_taken",
            tinkex_status::WrongState => "wrong_state",
            tinkex_status::WrongType => "wrong_type",
            tinkex_status::Cancelled => "cancelled",
            tinkex_status::ShutDown => "shut_down",
            tinkex_status::Panic => "panic",
            tinkex_status::Timeout => "timeout",
            _ => "internal",
        };
        Failure {
            status,
            kind,
            message: message.into(),
            http_status: 0,
            request_id: None,
            retryable: false,
            category: None,
            body: None,
        }
    }

    /// `NULL_ARG` for a named argument.
    pub fn null_arg(name: &str) -> Self {
        Self::new(tinkex_status::NullArg, format!("{name} is NULL"))
    }

    /// `INVALID_ARG` with a message.
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(tinkex_status::InvalidArg, message)
    }

    /// `WRONG_STATE` with a message.
    pub fn wrong_state(message: impl Into<String>) -> Self {
        Self::new(tinkex_status::WrongState, message)
    }

    /// `INTERNAL` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(tinkex_status::Internal, message)
    }

    /// `CANCELLED`.
    pub fn cancelled() -> Self {
        Self::new(tinkex_status::Cancelled, "the operation was cancelled")
    }

    /// `SHUT_DOWN`.
    pub fn shut_down() -> Self {
        Self::new(tinkex_status::ShutDown, "the runtime is shut down")
    }

    /// `PANIC` from a caught panic payload.
    pub fn panic(payload: &(dyn std::any::Any + Send)) -> Self {
        Self::new(
            tinkex_status::Panic,
            format!("internal panic: {}", super::panic_text(payload)),
        )
    }
}

/// Maps a core error kind (and, for transport errors, the cause) to a status.
fn status_of(e: &Error) -> tinkex_status {
    match e.kind {
        ErrorKind::Transient if e.transport.is_some() => match e.transport {
            Some(TransportCause::Timeout) => tinkex_status::Timeout,
            Some(TransportCause::Tls) => tinkex_status::Tls,
            Some(TransportCause::Connect) => tinkex_status::Connect,
            _ => tinkex_status::Io,
        },
        ErrorKind::User => tinkex_status::User,
        ErrorKind::Transient => tinkex_status::Transient,
        ErrorKind::Fatal => tinkex_status::Fatal,
        ErrorKind::Billing => tinkex_status::Billing,
        ErrorKind::Expired => tinkex_status::Expired,
        ErrorKind::Cancelled => tinkex_status::Cancelled,
        ErrorKind::Timeout => tinkex_status::Timeout,
        ErrorKind::NoProgress => tinkex_status::NoProgress,
        ErrorKind::SessionExpired => tinkex_status::SessionExpired,
        ErrorKind::Auth => tinkex_status::Auth,
        ErrorKind::Panic => tinkex_status::Panic,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            status: status_of(&e),
            kind: e.kind.as_str(),
            retryable: e.is_retryable(),
            http_status: e.http_status.unwrap_or(0),
            request_id: e.request_id,
            category: e.category.map(|c| match c {
                crate::core::types::RequestErrorCategory::User => "user",
                crate::core::types::RequestErrorCategory::Server => "server",
                crate::core::types::RequestErrorCategory::Unknown => "unknown",
            }),
            body: e.body,
            message: e.message,
        }
    }
}

/// Details of a failure: status, kind, message, HTTP status, request id, retryable flag.
///
/// Box-owned. Received through a `tinkex_error **out_err` parameter (each call writes a new
/// one on failure when `out_err` is non-NULL) or from a failed future; the caller owns it and
/// releases it with `tinkex_error_free`. Immutable, so any thread may read it.
pub struct tinkex_error {
    failure: Failure,
    message: CString,
    request_id: Option<CString>,
    kind: CString,
    category: Option<CString>,
    body: Option<CString>,
}

impl tinkex_error {
    /// The message text.
    pub fn message(&self) -> &str {
        &self.failure.message
    }
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

impl From<Failure> for tinkex_error {
    fn from(failure: Failure) -> Self {
        tinkex_error {
            message: c_text(&failure.message),
            request_id: failure.request_id.as_deref().map(c_text),
            kind: c_text(failure.kind),
            category: failure.category.map(c_text),
            body: failure.body.as_deref().map(c_text),
            failure,
        }
    }
}

/// The status this error stands for. Returns `TINKEX_STATUS_NULL_ARG` when `err` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_status(err: *const tinkex_error) -> tinkex_status {
    boundary!(value tinkex_status::Panic, {
        // SAFETY: a non-NULL `err` is a live error handle (caller contract).
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.failure.status,
            Err(_) => tinkex_status::NullArg,
        }
    })
}

/// The error's kind name: the client's kind (`user`, `transient`, `fatal`, `billing`,
/// `expired`, `cancelled`, `timeout`, `no_progress`, `session_expired`, `auth`, `panic`) or a
/// caller-error kind (`null_arg`, `invalid_arg`, `invalid_utf8`, `invalid_json`,
/// `already_taken`, `wrong_state`, `wrong_type`, `shut_down`, `internal`).
///
/// Borrowed NUL-terminated string, valid until `tinkex_error_free(err)`; NULL when `err` is
/// NULL. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_kind(err: *const tinkex_error) -> *const c_char {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.kind.as_ptr(),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The message: NUL-terminated UTF-8.
///
/// Borrowed; valid until `tinkex_error_free(err)`. NULL when `err` is NULL. Blocks: never.
/// Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_message(err: *const tinkex_error) -> *const c_char {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.message.as_ptr(),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The HTTP status of the answer that caused the error; 0 if none (or `err` is NULL).
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_http_status(err: *const tinkex_error) -> u16 {
    boundary!(value 0, {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.failure.http_status,
            Err(_) => 0,
        }
    })
}

/// Whether the same request may succeed if retried (the client already retried it under
/// its policy); false when `err` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_is_retryable(err: *const tinkex_error) -> bool {
    boundary!(value false, {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.failure.retryable,
            Err(_) => false,
        }
    })
}

/// The server request (future) id involved, NUL-terminated; NULL if none (or `err` is NULL).
///
/// Borrowed; valid until `tinkex_error_free(err)`. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_request_id(err: *const tinkex_error) -> *const c_char {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e
                .request_id
                .as_ref()
                .map_or(std::ptr::null(), |r| r.as_ptr()),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The server's category of a failed future — `user`, `server` or `unknown` — when the
/// operation failed because the server reported `{"error", "category"}` (the official SDK's
/// `RequestFailedError`), NUL-terminated; NULL otherwise (or when `err` is NULL).
///
/// Borrowed; valid until `tinkex_error_free(err)`. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_category(err: *const tinkex_error) -> *const c_char {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.category.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The raw body of the HTTP response that caused the error (truncated to 4 KiB),
/// NUL-terminated; NULL when there was none (or `err` is NULL).
///
/// Borrowed; valid until `tinkex_error_free(err)`. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_body(err: *const tinkex_error) -> *const c_char {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_error_status`.
        match unsafe { BoxHandle::from_ptr(err, "err") } {
            Ok(e) => e.body.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
            Err(_) => std::ptr::null(),
        }
    })
}

/// Releases an error. NULL does nothing.
///
/// Consumes: `err`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_error_free(err: *mut tinkex_error) {
    // SAFETY: a non-NULL `err` came from this library; the host gives up this reference.
    unsafe { super::free_box_export(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_kinds_map_to_statuses() {
        let f = Failure::from(Error::from_status(429, "{}"));
        assert_eq!(f.status, tinkex_status::Transient);
        assert!(f.retryable);
        assert_eq!(f.http_status, 429);
        assert_eq!(
            Failure::from(Error::from_status(401, "")).status,
            tinkex_status::Auth
        );
        let mut t = Error::new(ErrorKind::Transient, "/x: could not connect: refused");
        t.transport = Some(TransportCause::Connect);
        assert_eq!(Failure::from(t).status, tinkex_status::Connect);
        assert_eq!(
            Failure::from(Error::new(ErrorKind::Panic, "p")).status,
            tinkex_status::Panic
        );
    }
}
