//! Introspection getters: the status of a service, training or sampling client as JSON
//! (`crate::core::introspect::StatusReport`).

use super::bytes::tinkex_bytes;
use super::error::{tinkex_error, Failure};
use super::future::ClientHandle;
use super::sampling::tinkex_sampling_client;
use super::service::tinkex_service_client;
use super::status::tinkex_status;
use super::training::tinkex_training_client;
use super::{boundary, out_ptr, write_out};
use super::{ArcHandle, BoxHandle};
use crate::core::introspect::StatusReport;

/// Writes `report` as JSON to `out_bytes` (checked non-NULL by the caller).
///
/// # Safety
/// `out_bytes` is non-NULL and writable.
unsafe fn write_report(
    out_bytes: *mut *mut tinkex_bytes,
    report: &StatusReport,
) -> Result<tinkex_status, Failure> {
    let json = serde_json::to_vec(report).map_err(|e| Failure::internal(e.to_string()))?;
    // SAFETY: guaranteed by the caller.
    unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
    Ok(tinkex_status::Ok)
}

/// The service client's status: `{"session_id": str|null, "queue_state": "active" |
/// "paused_capacity" | "paused_rate_limit" | "unknown", "queue_state_reason": str|null,
/// "billing_paused_ms": int, "backoff_remaining_ms": int, "last_progress_ms_ago": int|null,
/// "operations_waiting": int, "operations_in_flight": int, "telemetry": {"queued": int,
/// "dropped": int, "sent": int}|null}` — the last queue state any of its requests reported,
/// and the operations of every client it created. `last_progress_ms_ago` is null before the
/// session started; `telemetry` is null then and with telemetry off.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_status(
    svc: *const tinkex_service_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let svc = unsafe { ArcHandle::from_ptr(svc, "svc") }?;
        out_ptr(out_bytes, "out_bytes")?;
        // SAFETY: checked non-NULL above.
        unsafe { write_report(out_bytes, &svc.client().status_report()) }
    })
}

/// The training client's status: the keys of `tinkex_service_client_status`, with the queue
/// state of this model's requests.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_status(
    client: *const tinkex_training_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        // SAFETY: checked non-NULL above.
        unsafe { write_report(out_bytes, &c.client().status_report()) }
    })
}

/// The sampling client's status: the keys of `tinkex_service_client_status`, with the
/// queue state of this sampler's requests, `operations_waiting` / `operations_in_flight`
/// counting this client's own samples (waiting = not yet accepted by the server), plus
/// `"dispatch": {"in_flight", "max_in_flight", "backoffs", "throttled_dispatches"}` (the
/// holder-wide dispatch counters, PROTOCOL.md 12.4).
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_status(
    client: *const tinkex_sampling_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        // SAFETY: checked non-NULL above.
        unsafe { write_report(out_bytes, &c.client().status_report()) }
    })
}
