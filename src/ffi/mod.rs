//! The C ABI of libtinkex (see `docs/c-api.md` and the generated `include/tinkex.h`).
//!
//! This layer only converts arguments and results: requests arrive as JSON (or as typed
//! arrays, [`datum`]) and become the core's types, core operations return
//! [`ApiFuture`](crate::core::ApiFuture)s that are wrapped in a [`tinkex_future`](future::tinkex_future),
//! and results leave as JSON. Everything with behaviour lives in [`crate::core`].
//!
//! Rules kept here, once:
//! - every exported body runs inside `boundary!` (`catch_unwind`, panic → `PANIC`);
//! - every pointer argument goes through the NULL helpers below;
//! - every `into_raw`/`from_raw` and reference-count change is in this file (section
//!   "Handle casts"); each handle type says whether it is Arc- or Box-owned;
//! - callbacks run only on the runtime's dispatcher thread ([`runtime`]).

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_camel_case_types)]
#![allow(clippy::too_many_arguments)]
// The exports are `pub extern "C" fn` (STYLE.md 7) called from C, where the pointer
// contract is documented per function; every pointer is NULL-checked by the helpers below.
// Rust callers (the tests) take that contract on as C callers do.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod bytes;
pub mod datum;
pub mod error;
pub mod event;
pub mod future;
mod log;
pub mod rest;
pub mod runtime;
pub mod sampling;
pub mod service;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod training;
pub mod version;

use error::{tinkex_error, Failure};
use status::tinkex_status;
use std::ffi::c_void;
use std::sync::Arc;

/// Wraps the body of every export: runs it under `catch_unwind`.
///
/// - `boundary!(status out_err, { ... })`: the body returns
///   `Result<tinkex_status, Failure>`; `Ok(s)` is returned as is (`OK`, `PENDING`), `Err(f)`
///   is written to `*out_err` (when non-NULL) and its status returned; a panic becomes
///   `TINKEX_STATUS_PANIC` with an error object.
/// - `boundary!(value fallback, { ... })`: for infallible getters and `_free`; a panic
///   returns `fallback`.
macro_rules! boundary {
    (status $out_err:expr, $body:block) => {
        $crate::ffi::run_status($out_err, || $body)
    };
    (value $fallback:expr, $body:block) => {
        $crate::ffi::run_value($fallback, || $body)
    };
}
pub(crate) use boundary;

/// The `status` arm of `boundary!`: runs `body` under `catch_unwind` and turns its
/// outcome into the status, writing the error object.
pub(crate) fn run_status(
    out_err: *mut *mut tinkex_error,
    body: impl FnOnce() -> Result<tinkex_status, Failure>,
) -> tinkex_status {
    let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(status)) => return status,
        Ok(Err(f)) => f,
        Err(payload) => Failure::panic(&*payload),
    };
    let status = failure.status;
    if !out_err.is_null() {
        let err = box_into_raw(tinkex_error::from(failure));
        // SAFETY: the caller passes either NULL (checked) or a writable `tinkex_error **`.
        unsafe { out_err.write(err) };
    }
    status
}

/// The `value` arm of `boundary!`: runs `body` under `catch_unwind`; a panic gives
/// `fallback`.
pub(crate) fn run_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The host's `void *user_data`, carried to the dispatcher thread and handed back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UserData(pub(crate) *mut c_void);

impl UserData {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    pub(crate) fn get(self) -> *mut c_void {
        self.0
    }
}

// SAFETY: the library never dereferences `user_data`; it only passes it back to the host's
// own callbacks (`on_done`, `on_event`, `user_data_free`), always on the dispatcher thread.
// The C contract (`include/tinkex.h`, "Threads") requires that `user_data` may be used from
// that thread, which is how every binding uses it (BEAM `enif_send` with a NULL env, Python
// `call_soon_threadsafe`, C++ promises).
unsafe impl Send for UserData {}
// SAFETY: as above; shared references only copy the pointer value.
unsafe impl Sync for UserData {}

/// A host completion callback of an operation.
///
/// `fut` is borrowed for the duration of the call; call `tinkex_future_take_result` (or a
/// typed take) on it, and release `user_data` here if you like: the callback fires exactly
/// once per submitted operation. Runs on the runtime's dispatcher thread (`tinkex-callback`).
pub type tinkex_done_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, fut: *mut future::tinkex_future)>;

/// Releases a registration's `user_data`; runs exactly once, after its last callback.
pub type tinkex_free_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

// ---------------------------------------------------------------------------------------
// NULL and input helpers
// ---------------------------------------------------------------------------------------

/// Fails with `NULL_ARG` when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::null_arg(name));
    }
    debug_assert!(p.is_aligned(), "{name} is misaligned");
    Ok(())
}

/// A borrowed `(ptr, len)` byte input: `(NULL, 0)` is empty, NULL with `len > 0` is
/// `NULL_ARG`.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable bytes that stay valid for `'a`.
pub(crate) unsafe fn input_bytes<'a>(
    ptr: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Failure> {
    // Checked before the pointer is touched: no Rust slice may be longer than isize::MAX,
    // so a larger length is a caller bug that must not reach `from_raw_parts`.
    if len > isize::MAX as usize {
        return Err(Failure::invalid_arg(format!(
            "{name}: length {len} exceeds the largest possible buffer"
        )));
    }
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::null_arg(name))
        };
    }
    // SAFETY: guaranteed by the caller; `len <= isize::MAX` checked above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A borrowed UTF-8 text input (`INVALID_UTF8` otherwise).
///
/// # Safety
/// As [`input_bytes`].
pub(crate) unsafe fn input_str<'a>(
    ptr: *const u8,
    len: usize,
    name: &str,
) -> Result<&'a str, Failure> {
    // SAFETY: forwarded.
    let bytes = unsafe { input_bytes(ptr, len, name) }?;
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::new(
            tinkex_status::InvalidUtf8,
            format!("{name} is not valid UTF-8: {e}"),
        )
    })
}

/// A JSON input parsed into `T` (`INVALID_UTF8`, then `INVALID_JSON` for syntax or schema
/// errors). Empty input parses as `{}`.
///
/// # Safety
/// As [`input_bytes`].
pub(crate) unsafe fn input_json<T: serde::de::DeserializeOwned>(
    ptr: *const u8,
    len: usize,
    name: &str,
) -> Result<T, Failure> {
    // SAFETY: forwarded.
    let text = unsafe { input_str(ptr, len, name) }?;
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| {
        // The parser's message names the field and position but not the rejected value:
        // a value in the wrong place (a key in `tags`, say) must not be echoed.
        Failure::new(
            tinkex_status::InvalidJson,
            format!(
                "{name} is not valid JSON for this call: {}",
                crate::core::sanitize::serde_message(&e)
            ),
        )
    })
}

/// Checks that an output pointer is non-NULL (before any work is done).
pub(crate) fn out_ptr<T>(out: *mut T, name: &str) -> Result<(), Failure> {
    non_null(out as *const T, name)
}

/// Writes an output (after [`out_ptr`] checked it).
///
/// # Safety
/// `out` must be non-NULL and writable.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: guaranteed by the caller.
    unsafe { out.write(value) }
}

// ---------------------------------------------------------------------------------------
// Handle casts: the only place that converts between handles and raw pointers.
//
// Arc-owned: tinkex_runtime, tinkex_service_client, tinkex_training_client,
//            tinkex_sampling_client, tinkex_rest_client, tinkex_future, tinkex_subscription.
// Box-owned: tinkex_error, tinkex_bytes, tinkex_datum_batch.
// Borrowed only: tinkex_event (lives on the dispatcher's stack during a callback).
// ---------------------------------------------------------------------------------------

/// Hands one strong reference to the host.
pub(crate) fn arc_into_raw<T>(value: Arc<T>) -> *mut T {
    Arc::into_raw(value) as *mut T
}

/// Borrows an Arc-owned handle (`NULL_ARG` when NULL).
///
/// # Safety
/// A non-NULL `p` must come from [`arc_into_raw`] and still hold a reference.
pub(crate) unsafe fn arc_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    non_null(p, name)?;
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &*p })
}

/// A new strong reference to an Arc-owned handle (`NULL_ARG` when NULL).
///
/// # Safety
/// As [`arc_ref`].
pub(crate) unsafe fn arc_clone<T>(p: *const T, name: &str) -> Result<Arc<T>, Failure> {
    non_null(p, name)?;
    // SAFETY: `p` came from `Arc::into_raw` and its count is at least one.
    unsafe {
        Arc::increment_strong_count(p);
        Ok(Arc::from_raw(p))
    }
}

/// Drops the host's reference; NULL does nothing.
///
/// # Safety
/// A non-NULL `p` must come from [`arc_into_raw`] and not be used by the host afterwards.
pub(crate) unsafe fn arc_release<T>(p: *const T) {
    if !p.is_null() {
        // SAFETY: guaranteed by the caller.
        drop(unsafe { Arc::from_raw(p) });
    }
}

/// Borrows a value the library lent to a callback (`NULL_ARG` when NULL).
///
/// # Safety
/// A non-NULL `p` must be the pointer the running callback received.
pub(crate) unsafe fn lent_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    non_null(p, name)?;
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &*p })
}

/// Hands a Box-owned value to the host.
pub(crate) fn box_into_raw<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Borrows a Box-owned handle (`NULL_ARG` when NULL).
///
/// # Safety
/// A non-NULL `p` must come from [`box_into_raw`] and not be freed.
pub(crate) unsafe fn box_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    non_null(p, name)?;
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &*p })
}

/// Mutably borrows a Box-owned handle (`NULL_ARG` when NULL).
///
/// # Safety
/// As [`box_ref`], and no other reference may be in use (the host must not share the handle
/// across threads during the call).
pub(crate) unsafe fn box_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    non_null(p, name)?;
    // SAFETY: guaranteed by the caller.
    Ok(unsafe { &mut *p })
}

/// Takes back ownership of a Box-owned handle (consumes it); NULL gives `None`.
///
/// # Safety
/// A non-NULL `p` must come from [`box_into_raw`] and not be used by the host afterwards.
pub(crate) unsafe fn box_take<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { Box::from_raw(p) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boundary_turns_a_panic_into_panic_status_with_an_error() {
        let mut err: *mut tinkex_error = std::ptr::null_mut();
        let status = boundary!(status &mut err, {
            if true {
                panic!("boom in an export body");
            }
            Ok(tinkex_status::Ok)
        });
        assert_eq!(status, tinkex_status::Panic);
        assert!(!err.is_null());
        // SAFETY: `err` was just produced by the boundary.
        let e = unsafe { box_take(err) }.unwrap();
        assert!(e.message().contains("boom in an export body"));
        let v = boundary!(value 7u32, {
            if true {
                panic!("boom in a getter");
            }
            1u32
        });
        assert_eq!(v, 7);
    }

    #[test]
    fn inputs_follow_the_null_rules() {
        // SAFETY: (NULL, 0) and (NULL, 3) never dereference.
        unsafe {
            assert_eq!(input_bytes(std::ptr::null(), 0, "x").unwrap(), b"");
            assert_eq!(
                input_bytes(std::ptr::null(), 3, "x").unwrap_err().status,
                tinkex_status::NullArg
            );
        }
        let bad = [0xffu8, 0xfe];
        // SAFETY: `bad` is a live local.
        let e = unsafe { input_str(bad.as_ptr(), 2, "name") }.unwrap_err();
        assert_eq!(e.status, tinkex_status::InvalidUtf8);
        let j = b"{not json";
        // SAFETY: `j` is a live local.
        let e =
            unsafe { input_json::<serde_json::Value>(j.as_ptr(), j.len(), "json") }.unwrap_err();
        assert_eq!(e.status, tinkex_status::InvalidJson);
    }
}
