//! `tinkex_status`: the stable, numbered result of every fallible export.

use super::boundary;
use std::ffi::c_char;

/// The result of every fallible function. Values are stable: never renumbered, never
/// reused; retired values stay listed as reserved. `TINKEX_STATUS_OK == 0`.
///
/// Ranges: 1 not an error; 100s caller errors; 200s transport; 300s API (one per error kind
/// of the client); 400s lifecycle; 900s internal.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum tinkex_status {
    /// Success.
    Ok = 0,
    /// Not an error: the future has not finished yet (`tinkex_future_take_result`), or a
    /// wait timed out (`tinkex_future_wait`).
    Pending = 1,
    /// A required pointer argument was NULL (or a `(NULL, len > 0)` input).
    NullArg = 100,
    /// An argument is out of range: unknown enum value, bad dtype or shape, bad options.
    InvalidArg = 101,
    /// A text input is not valid UTF-8.
    InvalidUtf8 = 102,
    /// A JSON input does not parse, or does not match the call's schema.
    InvalidJson = 103,
    /// The future's result was already taken.
    AlreadyTaken = 104,
    /// The call is not allowed now: e.g. a blocking call on the dispatcher thread or a tokio
    /// worker, `set_loss_input` before any datum, a session id before the session exists.
    WrongState = 105,
    /// The future's result has another type: use the matching take function.
    WrongType = 106,
    /// Could not connect to the server.
    Connect = 200,
    /// A request or a wait timed out (error kind `timeout`, or a transport timeout).
    Timeout = 201,
    /// TLS failed.
    Tls = 202,
    /// Another transport failure (connection reset, broken body).
    Io = 203,
    /// The request was rejected as invalid (error kind `user`: HTTP 4xx other than
    /// 401/402/403/408/409/410/429, or a future that failed with category `user`).
    User = 300,
    /// A retryable failure outlived the retry policy (kind `transient`: HTTP 408, 409, 429,
    /// 5xx).
    Transient = 301,
    /// Neither the caller's fault nor transient (kind `fatal`): malformed server answers, a
    /// future that failed with category `server`.
    Fatal = 302,
    /// Billing blocks the account (kind `billing`, HTTP 402).
    Billing = 303,
    /// The server no longer knows the future or session (kind `expired`, HTTP 410).
    Expired = 304,
    /// Authentication failed (kind `auth`, HTTP 401/403, missing or malformed key).
    Auth = 305,
    /// Nothing progressed for the client's whole progress timeout (kind `no_progress`).
    NoProgress = 306,
    /// The session expired; later operations fail fast (kind `session_expired`).
    SessionExpired = 307,
    /// The operation was cancelled (`tinkex_future_cancel`).
    Cancelled = 400,
    /// The runtime is shut down, or shut down while the operation was pending.
    ShutDown = 401,
    /// A bug in the library.
    Internal = 900,
    /// A panic inside the library was caught; the process is unaffected.
    Panic = 901,
}

/// Every status, in numeric order.
const ALL: [tinkex_status; 25] = [
    tinkex_status::Ok,
    tinkex_status::Pending,
    tinkex_status::NullArg,
    tinkex_status::InvalidArg,
    tinkex_status::InvalidUtf8,
    tinkex_status::InvalidJson,
    tinkex_status::AlreadyTaken,
    tinkex_status::WrongState,
    tinkex_status::WrongType,
    tinkex_status::Connect,
    tinkex_status::Timeout,
    tinkex_status::Tls,
    tinkex_status::Io,
    tinkex_status::User,
    tinkex_status::Transient,
    tinkex_status::Fatal,
    tinkex_status::Billing,
    tinkex_status::Expired,
    tinkex_status::Auth,
    tinkex_status::NoProgress,
    tinkex_status::SessionExpired,
    tinkex_status::Cancelled,
    tinkex_status::ShutDown,
    tinkex_status::Internal,
    tinkex_status::Panic,
];

impl tinkex_status {
    /// Every status, in numeric order.
    pub fn all() -> &'static [tinkex_status] {
        &ALL
    }

    /// The C constant's name, NUL-terminated.
    pub fn name(self) -> &'static str {
        match self {
            tinkex_status::Ok => "TINKEX_STATUS_OK\0",
            tinkex_status::Pending => "TINKEX_STATUS_PENDING\0",
            tinkex_status::NullArg => "TINKEX_STATUS_NULL_ARG\0",
            tinkex_status::InvalidArg => "TINKEX_STATUS_INVALID_ARG\0",
            tinkex_status::InvalidUtf8 => "TINKEX_STATUS_INVALID_UTF8\0",
            tinkex_status::InvalidJson => "TINKEX_STATUS_INVALID_JSON\0",
            tinkex_status::AlreadyTaken => "TINKEX_STATUS_ALREADY_TAKEN\0",
            tinkex_status::WrongState => "TINKEX_STATUS_WRONG_STATE\0",
            tinkex_status::WrongType => "TINKEX_STATUS_WRONG_TYPE\0",
            tinkex_status::Connect => "TINKEX_STATUS_CONNECT\0",
            tinkex_status::Timeout => "TINKEX_STATUS_TIMEOUT\0",
            tinkex_status::Tls => "TINKEX_STATUS_TLS\0",
            tinkex_status::Io => "TINKEX_STATUS_IO\0",
            tinkex_status::User => "TINKEX_STATUS_USER\0",
            tinkex_status::Transient => "TINKEX_STATUS_TRANSIENT\0",
            tinkex_status::Fatal => "TINKEX_STATUS_FATAL\0",
            tinkex_status::Billing => "TINKEX_STATUS_BILLING\0",
            tinkex_status::Expired => "TINKEX_STATUS_EXPIRED\0",
            tinkex_status::Auth => "TINKEX_STATUS_AUTH\0",
            tinkex_status::NoProgress => "TINKEX_STATUS_NO_PROGRESS\0",
            tinkex_status::SessionExpired => "TINKEX_STATUS_SESSION_EXPIRED\0",
            tinkex_status::Cancelled => "TINKEX_STATUS_CANCELLED\0",
            tinkex_status::ShutDown => "TINKEX_STATUS_SHUT_DOWN\0",
            tinkex_status::Internal => "TINKEX_STATUS_INTERNAL\0",
            tinkex_status::Panic => "TINKEX_STATUS_PANIC\0",
        }
    }
}

impl TryFrom<i32> for tinkex_status {
    type Error = i32;
    fn try_from(v: i32) -> Result<Self, i32> {
        ALL.iter().copied().find(|s| *s as i32 == v).ok_or(v)
    }
}

/// The constant's name of a status, e.g. `"TINKEX_STATUS_NULL_ARG"`; unknown values give
/// `"TINKEX_STATUS_UNKNOWN"`.
///
/// Returns a static NUL-terminated string: never free it. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_status_name(status: i32) -> *const c_char {
    boundary!(value c"TINKEX_STATUS_UNKNOWN".as_ptr(), {
        match tinkex_status::try_from(status) {
            Ok(s) => s.name().as_ptr() as *const c_char,
            Err(_) => c"TINKEX_STATUS_UNKNOWN".as_ptr(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable() {
        // Never edit these: bindings hard-code them.
        let expected = [
            0, 1, 100, 101, 102, 103, 104, 105, 106, 200, 201, 202, 203, 300, 301, 302, 303, 304,
            305, 306, 307, 400, 401, 900, 901,
        ];
        let got: Vec<i32> = ALL.iter().map(|s| *s as i32).collect();
        assert_eq!(got, expected);
        for &s in tinkex_status::all() {
            assert_eq!(tinkex_status::try_from(s as i32), Ok(s));
            assert!(s.name().ends_with('\0'));
        }
        assert!(tinkex_status::try_from(2).is_err());
    }
}
