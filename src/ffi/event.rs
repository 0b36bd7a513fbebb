//! Event subscriptions: `tinkex_subscription` (Arc-owned) and the borrowed `tinkex_event`
//! handed to `tinkex_event_fn` on the dispatcher thread.

use super::error::{tinkex_error, Failure};
use super::runtime::tinkex_runtime;
use super::service::tinkex_service_client;
use super::status::tinkex_status;
use super::{boundary, out_ptr, tinkex_free_fn, write_out, UserData};
use super::{ArcHandle, LentHandle};
use crate::core::{Event, SubscriptionId};
use std::ffi::{c_char, c_void, CString};
use std::sync::{Arc, Mutex, Weak};

/// Kinds of `tinkex_event` (the JSON's `type`). New kinds may be added (a minor ABI bump);
/// treat unknown values like `TINKEX_EVENT_KIND_OTHER`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tinkex_event_kind {
    /// A kind this header does not know yet (see the JSON's `type`).
    Other = 0,
    /// A pending request's queue state changed (`queue_state`).
    QueueState = 1,
    /// Periodic report of a pending operation (`progress`).
    Progress = 2,
    /// A request failed and will be retried (`retry`).
    Retry = 3,
    /// Heartbeats have been failing for a while (`heartbeat_warning`).
    HeartbeatWarning = 4,
    /// The server ended the session (`session_expired`).
    SessionExpired = 5,
    /// Telemetry events were dropped (`telemetry_overflow`).
    TelemetryOverflow = 6,
    /// Counts of the client's operations (`summary`).
    Summary = 7,
}

impl tinkex_event_kind {
    fn of(event: &Event) -> Self {
        match event.kind() {
            "queue_state" => tinkex_event_kind::QueueState,
            "progress" => tinkex_event_kind::Progress,
            "retry" => tinkex_event_kind::Retry,
            "heartbeat_warning" => tinkex_event_kind::HeartbeatWarning,
            "session_expired" => tinkex_event_kind::SessionExpired,
            "telemetry_overflow" => tinkex_event_kind::TelemetryOverflow,
            "summary" => tinkex_event_kind::Summary,
            _ => tinkex_event_kind::Other,
        }
    }
}

/// One event, borrowed by `tinkex_event_fn` for the duration of the call.
///
/// Read it with `tinkex_event_get_kind`, `tinkex_event_json`, `tinkex_event_request_id`; copy
/// what you keep. Never freed by the host.
pub struct tinkex_event {
    kind: tinkex_event_kind,
    /// JSON plus a trailing NUL.
    json: Vec<u8>,
    request_id: Option<CString>,
}

impl tinkex_event {
    fn new(event: &Event) -> Self {
        let value = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
        let request_id = value
            .get("request_id")
            .and_then(|v| v.as_str())
            .and_then(|s| CString::new(s).ok());
        let mut json = value.to_string().into_bytes();
        json.push(0);
        tinkex_event {
            kind: tinkex_event_kind::of(event),
            json,
            request_id,
        }
    }
}

/// Receives events: `ev` is borrowed until the callback returns. Runs on the dispatcher
/// thread, in emission order; must return quickly.
pub type tinkex_event_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, ev: *const tinkex_event)>;

struct Registration {
    /// False once closed; events are posted only while it is held and true.
    open: Mutex<bool>,
    on_event: unsafe extern "C" fn(*mut c_void, *const tinkex_event),
    user_data: UserData,
    user_data_free: tinkex_free_fn,
    rt: Weak<tinkex_runtime>,
}

impl Registration {
    fn deliver(self: &Arc<Self>, event: &Event) {
        let open = self.open.lock().unwrap();
        if !*open {
            return;
        }
        let Some(rt) = self.rt.upgrade() else { return };
        let ev = tinkex_event::new(event);
        let me = self.clone();
        rt.post(Box::new(move || {
            // SAFETY: the host registered `on_event` with this `user_data`; `ev` lives on
            // this stack frame for the call.
            unsafe { (me.on_event)(me.user_data.0, &ev) };
        }));
        drop(open);
    }
}

/// An event subscription of a service client (events of every client it created).
///
/// Arc-owned; holds its service client. Freeing it unsubscribes; `user_data_free` then runs
/// on the dispatcher thread after the last event callback.
pub struct tinkex_subscription {
    rt: Arc<tinkex_runtime>,
    service: Arc<tinkex_service_client>,
    reg_id: u64,
    core_id: SubscriptionId,
    registration: Arc<Registration>,
}

impl tinkex_subscription {
    /// Unsubscribes (idempotent) and posts `user_data_free` behind every queued event.
    pub(crate) fn close(&self) {
        let mut open = self.registration.open.lock().unwrap();
        if !*open {
            return;
        }
        *open = false;
        self.service.client.events().unsubscribe(self.core_id);
        let reg = self.registration.clone();
        self.rt.post(Box::new(move || {
            if let Some(free) = reg.user_data_free {
                // SAFETY: the host registered `free` for this `user_data`; it runs once.
                unsafe { free(reg.user_data.0) };
            }
        }));
        drop(open);
        self.rt.unregister_subscription(self.reg_id);
    }
}

impl Drop for tinkex_subscription {
    fn drop(&mut self) {
        self.close();
    }
}

/// Subscribes to the events of `svc` and of every client it created: queue-state changes,
/// progress reports, retries, heartbeat warnings, session expiry, telemetry overflow.
///
/// `on_event(user_data, ev)` runs on the dispatcher thread, in emission order, never on the
/// calling thread. `user_data_free(user_data)` (may be NULL) runs exactly once, on the
/// dispatcher, after the last `on_event`: when the subscription is freed or the runtime
/// shuts down. On a non-OK status nothing is registered and neither callback ever runs.
///
/// Blocks: never. Callback-safe. Caller owns `*out_subscription`; release with
/// `tinkex_subscription_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_subscribe(
    svc: *const tinkex_service_client,
    on_event: tinkex_event_fn,
    user_data: *mut c_void,
    user_data_free: tinkex_free_fn,
    out_subscription: *mut *mut tinkex_subscription,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let service = unsafe { ArcHandle::clone_from_ptr(svc, "svc") }?;
        let on_event = on_event.ok_or_else(|| Failure::null_arg("on_event"))?;
        out_ptr(out_subscription, "out_subscription")?;
        let rt = service.rt.clone();
        rt.check_open()?;
        let registration = Arc::new(Registration {
            open: Mutex::new(true),
            on_event,
            user_data: UserData(user_data),
            user_data_free,
            rt: Arc::downgrade(&rt),
        });
        let handler = registration.clone();
        let core_id = service
            .client
            .events()
            .subscribe(move |event| handler.deliver(event));
        let sub = Arc::new(tinkex_subscription {
            reg_id: rt.next_id(),
            rt: rt.clone(),
            service,
            core_id,
            registration,
        });
        if let Err(e) = rt.register_subscription(sub.reg_id, &sub) {
            // Shutdown began meanwhile: undo without running any callback.
            *sub.registration.open.lock().unwrap() = false;
            sub.service.client.events().unsubscribe(sub.core_id);
            return Err(e);
        }
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_subscription, ArcHandle::into_ptr(sub)) };
        Ok(tinkex_status::Ok)
    })
}

/// Unsubscribes and drops the handle. NULL does nothing. No `on_event` starts after this
/// returns except those already queued; `user_data_free` runs on the dispatcher after them.
///
/// Consumes: `sub`. Blocks: never. Callback-safe (also from inside `on_event`); any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_subscription_free(sub: *mut tinkex_subscription) {
    boundary!(value(), {
        if !sub.is_null() {
            // SAFETY: a non-NULL `sub` is a live handle (caller contract).
            if let Ok(s) = unsafe { ArcHandle::from_ptr(sub, "sub") } {
                s.close();
            }
        }
        // SAFETY: a non-NULL `sub` came from this library; the host gives up its reference.
        unsafe { ArcHandle::release_ptr(sub) }
    })
}

/// The event's kind; `TINKEX_EVENT_KIND_OTHER` when `ev` is NULL.
///
/// (Named `_get_kind` because C gives the type `tinkex_event_kind` and functions one
/// namespace.) Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_event_get_kind(ev: *const tinkex_event) -> tinkex_event_kind {
    boundary!(value tinkex_event_kind::Other, {
        // SAFETY: a non-NULL `ev` is the event passed to the running callback.
        match unsafe { LentHandle::from_ptr(ev, "ev") } {
            Ok(e) => e.kind,
            Err(_) => tinkex_event_kind::Other,
        }
    })
}

/// The event as UTF-8 JSON (NUL-terminated), e.g. `{"type": "retry", "request_id": null,
/// "operation": "POST /api/v1/...", "attempt": 0, "delay_secs": 0.5, "error": "..."}`; the
/// length (without the NUL) goes to `*out_len` when `out_len` is non-NULL.
///
/// Borrowed; valid until the callback returns. NULL (and length 0) when `ev` is NULL.
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_event_json(ev: *const tinkex_event, out_len: *mut usize) -> *const u8 {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_event_get_kind`.
        let (ptr, len) = match unsafe { LentHandle::from_ptr(ev, "ev") } {
            Ok(e) => (e.json.as_ptr(), e.json.len() - 1),
            Err(_) => (std::ptr::null(), 0),
        };
        if !out_len.is_null() {
            // SAFETY: a non-NULL `out_len` is writable (caller contract).
            unsafe { write_out(out_len, len) };
        }
        ptr
    })
}

/// The request id the event is about (NUL-terminated), or NULL if none (or `ev` is NULL).
///
/// Borrowed; valid until the callback returns. Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_event_request_id(ev: *const tinkex_event) -> *const c_char {
    boundary!(value std::ptr::null(), {
        // SAFETY: as in `tinkex_event_get_kind`.
        match unsafe { LentHandle::from_ptr(ev, "ev") } {
            Ok(e) => e.request_id.as_ref().map_or(std::ptr::null(), |r| r.as_ptr()),
            Err(_) => std::ptr::null(),
        }
    })
}
