//! The C ABI of libtinkex (see `docs/c-api.md` and the generated `include/tinkex.h`).
//!
//! This layer only converts arguments and results: requests arrive as JSON (or as typed
//! arrays, [`datum`]) and become the core's types, core operations return
//! [`ApiFuture`](crate::core::ApiFuture)s that are wrapped in a [`tinkex_future`](future::tinkex_future),
//! and results leave as JSON, or typed through result handles ([`result`]) for the hot
//! operations. Everything with behaviour lives in [`crate::core`].
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

pub mod admin;
pub mod bytes;
pub mod custom_loss;
pub mod datum;
pub mod error;
pub mod event;
pub mod future;
pub mod introspect;
pub mod log;
pub mod path;
pub mod rest;
pub mod result;
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
    (status $out_err:expr, $body:block) => {{
        // The body is a closure defined outside the `unsafe` block, so its own unsafe
        // operations still need their own `unsafe` blocks.
        let body = || $body;
        // SAFETY: `$out_err` is the export's own `out_err` parameter: NULL or writable
        // (every export's caller contract).
        unsafe { $crate::ffi::run_status($out_err, body) }
    }};
    (value $fallback:expr, $body:block) => {
        $crate::ffi::run_value($fallback, || $body)
    };
}
pub(crate) use boundary;

/// The `status` arm of `boundary!`: runs `body` under `catch_unwind` and turns its
/// outcome into the status, writing the error object.
///
/// # Safety
/// `out_err` must be NULL or point to a writable `tinkex_error *`.
pub(crate) unsafe fn run_status(
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
        let err = BoxHandle::into_ptr(tinkex_error::from(failure));
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
    Option<unsafe extern "C" fn(user_data: *mut c_void, fut: *const future::tinkex_future)>;

/// `timeout_ms` value meaning "no limit" (every `timeout_ms` argument: 0 = do not wait,
/// check once; `TINKEX_WAIT_FOREVER` = wait without limit; other values = milliseconds).
pub const TINKEX_WAIT_FOREVER: u64 = u64::MAX;

/// A `timeout_ms` argument as a duration (`None` = no limit).
pub(crate) fn timeout(timeout_ms: u64) -> Option<std::time::Duration> {
    (timeout_ms != TINKEX_WAIT_FOREVER).then(|| std::time::Duration::from_millis(timeout_ms))
}

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
// The type decides how it crosses the ABI (rustls-ffi's `Castable` idea): each handle type
// declares its ownership once, in `handle_kinds!` below, and gets the cast functions of that
// kind only (`ArcHandle`, `BoxHandle` or `LentHandle`). A call site cannot pick the wrong
// kind: `tinkex_error::clone_from_ptr` does not exist.
// ---------------------------------------------------------------------------------------

/// Ownership markers of [`Castable`].
pub(crate) enum Arced {}
/// Box-owned (one owner, the host, until `_free`).
pub(crate) enum Boxed {}
/// Lent by the library to a callback, never owned by the host.
pub(crate) enum Lent {}

/// A handle type: `Ownership` is [`Arced`], [`Boxed`] or [`Lent`].
pub(crate) trait Castable {
    /// How the handle is owned across the ABI.
    type Ownership;
}

macro_rules! handle_kinds {
    ($kind:ty: $($t:ty),+ $(,)?) => {
        $(impl Castable for $t { type Ownership = $kind; })+
    };
}

// The one list of handle kinds (docs/c-api.md, "Handles").
handle_kinds!(Arced:
    runtime::tinkex_runtime,
    service::tinkex_service_client,
    training::tinkex_training_client,
    sampling::tinkex_sampling_client,
    rest::tinkex_rest_client,
    admin::tinkex_admin_client,
    future::tinkex_future,
    event::tinkex_subscription,
    datum::tinkex_datum_batch,
    custom_loss::tinkex_custom_loss,
);
handle_kinds!(Boxed:
    error::tinkex_error,
    bytes::tinkex_bytes,
    result::tinkex_sample_result,
    result::tinkex_logprobs_result,
    result::tinkex_forward_result,
);
handle_kinds!(Lent: event::tinkex_event);

/// Casts of reference-counted handles (`Arc<T>` behind the pointer).
pub(crate) trait ArcHandle: Castable<Ownership = Arced> + Sized {
    /// Hands one strong reference to the host.
    fn into_ptr(value: Arc<Self>) -> *mut Self {
        Arc::into_raw(value) as *mut Self
    }

    /// Borrows the handle (`NULL_ARG` naming `name` when NULL).
    ///
    /// # Safety
    /// A non-NULL `p` must come from [`ArcHandle::into_ptr`] and still hold a reference for `'a`.
    unsafe fn from_ptr<'a>(p: *const Self, name: &str) -> Result<&'a Self, Failure> {
        non_null(p, name)?;
        // SAFETY: guaranteed by the caller.
        Ok(unsafe { &*p })
    }

    /// A new strong reference (`NULL_ARG` when NULL).
    ///
    /// # Safety
    /// As [`ArcHandle::from_ptr`].
    unsafe fn clone_from_ptr(p: *const Self, name: &str) -> Result<Arc<Self>, Failure> {
        non_null(p, name)?;
        // SAFETY: `p` came from `Arc::into_raw` and its count is at least one (caller).
        unsafe {
            Arc::increment_strong_count(p);
            Ok(Arc::from_raw(p))
        }
    }

    /// Drops the host's reference; NULL does nothing.
    ///
    /// # Safety
    /// A non-NULL `p` must come from [`ArcHandle::into_ptr`] and not be used by the host
    /// afterwards.
    unsafe fn release_ptr(p: *const Self) {
        if !p.is_null() {
            // SAFETY: guaranteed by the caller.
            drop(unsafe { Arc::from_raw(p) });
        }
    }
}
impl<T: Castable<Ownership = Arced>> ArcHandle for T {}

/// Casts of Box-owned handles.
pub(crate) trait BoxHandle: Castable<Ownership = Boxed> + Sized {
    /// Hands the value to the host.
    fn into_ptr(value: Self) -> *mut Self {
        Box::into_raw(Box::new(value))
    }

    /// Borrows the handle (`NULL_ARG` when NULL).
    ///
    /// # Safety
    /// A non-NULL `p` must come from [`BoxHandle::into_ptr`] and not be freed during `'a`.
    unsafe fn from_ptr<'a>(p: *const Self, name: &str) -> Result<&'a Self, Failure> {
        non_null(p, name)?;
        // SAFETY: guaranteed by the caller.
        Ok(unsafe { &*p })
    }

    /// Takes back ownership (the host's `_free`); NULL gives `None`.
    ///
    /// # Safety
    /// A non-NULL `p` must come from [`BoxHandle::into_ptr`] and not be used afterwards.
    unsafe fn take_ptr(p: *mut Self) -> Option<Box<Self>> {
        if p.is_null() {
            None
        } else {
            // SAFETY: guaranteed by the caller.
            Some(unsafe { Box::from_raw(p) })
        }
    }
}
impl<T: Castable<Ownership = Boxed>> BoxHandle for T {}

/// Casts of values the library lends to a running callback.
pub(crate) trait LentHandle: Castable<Ownership = Lent> + Sized {
    /// Borrows the value (`NULL_ARG` when NULL).
    ///
    /// # Safety
    /// A non-NULL `p` must be the pointer the running callback received.
    unsafe fn from_ptr<'a>(p: *const Self, name: &str) -> Result<&'a Self, Failure> {
        non_null(p, name)?;
        // SAFETY: guaranteed by the caller.
        Ok(unsafe { &*p })
    }
}
impl<T: Castable<Ownership = Lent>> LentHandle for T {}

/// Lends a tensor owned by a result handle: the opaque `tinkex_tensor` is never
/// constructed, its pointer is the address of the result's `TensorData`.
pub(crate) fn lend_tensor(t: &crate::core::types::TensorData) -> *const result::tinkex_tensor {
    (t as *const crate::core::types::TensorData).cast()
}

/// Borrows a tensor lent by [`lend_tensor`] (`NULL_ARG` when NULL).
///
/// # Safety
/// A non-NULL `p` must come from [`lend_tensor`] on a result that is still alive for `'a`.
pub(crate) unsafe fn tensor_from_ptr<'a>(
    p: *const result::tinkex_tensor,
    name: &str,
) -> Result<&'a crate::core::types::TensorData, Failure> {
    if p.is_null() {
        return Err(Failure::null_arg(name));
    }
    // SAFETY: guaranteed by the caller: `p` is the address of a live `TensorData`.
    Ok(unsafe { &*p.cast::<crate::core::types::TensorData>() })
}

/// The one implementation of every Arc-owned `tinkex_<noun>_clone` export: a new reference,
/// NULL for NULL (and on a panic).
///
/// # Safety
/// A non-NULL `p` must be a live handle of type `T` (the export's caller contract).
pub(crate) unsafe fn clone_export<T: ArcHandle>(p: *const T) -> *mut T {
    boundary!(value std::ptr::null_mut(), {
        // SAFETY: forwarded from the caller.
        match unsafe { T::clone_from_ptr(p, "handle") } {
            Ok(a) => T::into_ptr(a),
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// The one implementation of every Arc-owned `tinkex_<noun>_free` export: drops the host's
/// reference (NULL does nothing; a panic is swallowed).
///
/// # Safety
/// A non-NULL `p` must be a live handle of type `T` that the host gives up.
pub(crate) unsafe fn free_export<T: ArcHandle>(p: *mut T) {
    boundary!(value(), {
        // SAFETY: forwarded from the caller.
        unsafe { T::release_ptr(p) }
    })
}

/// The one implementation of every Box-owned `tinkex_<noun>_free` export.
///
/// # Safety
/// A non-NULL `p` must be a live handle of type `T` that the host gives up.
pub(crate) unsafe fn free_box_export<T: BoxHandle>(p: *mut T) {
    boundary!(value(), {
        // SAFETY: forwarded from the caller.
        drop(unsafe { T::take_ptr(p) });
    })
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
        let e = unsafe { tinkex_error::take_ptr(err) }.unwrap();
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
