//! Test-only exports (cargo feature `testing`; header section `TINKEX_TESTING`): inject
//! panics to prove that they become `TINKEX_STATUS_PANIC` and the process lives.

use super::error::{tinkex_error, Failure};
use super::future::{submit, tinkex_future, Output};
use super::runtime::tinkex_runtime;
use super::status::tinkex_status;
use super::ArcHandle;
use super::{boundary, out_ptr, tinkex_done_fn, write_out};
use crate::core::{ApiFuture, Error};
use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

/// TESTING ONLY. Panics inside the export body; returns `TINKEX_STATUS_PANIC` with an error
/// whose message contains "injected export panic".
///
/// Blocks: never.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_testing_panic_in_export(out_err: *mut *mut tinkex_error) -> tinkex_status {
    boundary!(status out_err, {
        if std::hint::black_box(true) {
            panic!("injected export panic");
        }
        Ok(tinkex_status::Ok)
    })
}

/// TESTING ONLY. Submits an operation whose core task panics (`where_` 0) or whose result
/// conversion in the ffi layer panics (`where_` 1). The future completes with
/// `TINKEX_STATUS_PANIC` and `on_done` fires once, like any operation. Other `where_`
/// values give `TINKEX_STATUS_INVALID_ARG`.
///
/// Submit call. Blocks: never. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_testing_panic_in_task(
    rt: *const tinkex_runtime,
    where_: i32,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `rt` is a live runtime handle (caller contract).
        let rt = unsafe { ArcHandle::clone_from_ptr(rt, "rt") }?;
        out_ptr(out_future, "out_future")?;
        let owner: Arc<dyn Any + Send + Sync> = rt.clone();
        let handle = rt.handle().clone();
        let fut = match where_ {
            0 => submit(
                &rt,
                owner,
                on_done,
                user_data,
                || {
                    Ok(ApiFuture::spawn(&handle, |_| async {
                        if std::hint::black_box(true) {
                            panic!("injected core panic");
                        }
                        Ok::<u32, Error>(0)
                    }))
                },
                |_| -> Result<Output, Failure> { Err(Failure::internal("unreachable")) },
            ),
            1 => submit(
                &rt,
                owner,
                on_done,
                user_data,
                || Ok(ApiFuture::spawn(&handle, |_| async { Ok::<u32, Error>(0) })),
                |_| -> Result<Output, Failure> { panic!("injected conversion panic") },
            ),
            other => return Err(Failure::invalid_arg(format!("unknown where_ {other}"))),
        }?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_future, fut) };
        Ok(tinkex_status::Ok)
    })
}

/// TESTING ONLY. Emits one library log line (target `tinkex::testing`) at `level` (a
/// `tinkex_log_level` other than OFF) with the text `(message, message_len)`, as the core's
/// own lines are emitted: for tests of `tinkex_runtime_set_log_sink`.
///
/// Errors: `INVALID_ARG` (level), `NULL_ARG`, `INVALID_UTF8`. Blocks: never.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_testing_log(
    level: i32,
    message: *const u8,
    message_len: usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    use super::runtime::tinkex_log_level as L;
    boundary!(status out_err, {
        // SAFETY: `(message, message_len)` is a readable input (caller contract).
        let text = unsafe { super::input_str(message, message_len, "message") }?;
        match L::try_from(level)? {
            L::Off => return Err(Failure::invalid_arg("level OFF emits nothing")),
            L::Error => tracing::error!(target: "tinkex::testing", "{text}"),
            L::Warn => tracing::warn!(target: "tinkex::testing", "{text}"),
            L::Info => tracing::info!(target: "tinkex::testing", "{text}"),
            L::Debug => tracing::debug!(target: "tinkex::testing", "{text}"),
            L::Trace => tracing::trace!(target: "tinkex::testing", "{text}"),
        }
        Ok(tinkex_status::Ok)
    })
}
