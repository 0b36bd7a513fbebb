//! `tinkex_admin_client` (Arc-owned): the admin methods of the method table (those whose
//! `clients` include `admin`: audit log and billing, PROTOCOL.md 9.12) through one generic
//! call.

use super::error::tinkex_error;
use super::future::{submit_json_on, tinkex_future};
use super::rest::{arg_failure, call_inputs};
use super::runtime::tinkex_runtime;
use super::status::tinkex_status;
use super::{boundary, input_json, out_ptr, tinkex_done_fn, write_out, ArcHandle};
use crate::core::{AdminClient, Config, ConfigInput};
use std::ffi::c_void;
use std::sync::Arc;

/// An admin client on a session-less holder (PROTOCOL.md 3.3).
///
/// Arc-owned; holds its runtime. Any thread may use it concurrently.
pub struct tinkex_admin_client {
    rt: Arc<tinkex_runtime>,
    client: AdminClient,
}

impl super::future::ClientHandle for tinkex_admin_client {
    type Client = AdminClient;
    const ARG: &'static str = "client";
    fn runtime(&self) -> &Arc<tinkex_runtime> {
        &self.rt
    }
    fn client(&self) -> &AdminClient {
        &self.client
    }
}

/// Creates an admin client on `rt`. Performs no I/O; no session, ever. `config_json` is a
/// `ConfigInput`, as for `tinkex_service_client_new`.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with `tinkex_admin_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_admin_client_new(
    rt: *const tinkex_runtime,
    config_json: *const u8,
    config_json_len: usize,
    out: *mut *mut tinkex_admin_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `rt` is a live runtime handle (caller contract).
        let rt = unsafe { ArcHandle::clone_from_ptr(rt, "rt") }?;
        out_ptr(out, "out")?;
        // SAFETY: `(config_json, config_json_len)` is a readable input (caller contract).
        let cfg: ConfigInput = unsafe { input_json(config_json, config_json_len, "config_json") }?;
        let config = Config::try_from(cfg)?;
        rt.check_open()?;
        let client = AdminClient::with_runtime(config, rt.handle().clone())?;
        let admin = Arc::new(tinkex_admin_client { rt, client });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(admin)) };
        Ok(tinkex_status::Ok)
    })
}

/// Calls the admin method named `(method, method_len)` with `args_json`; same contract as
/// `tinkex_rest_client_call`, restricted to `get_audit_log`, `get_billing_usage` and
/// `get_current_checkpoint_storage_usage` (any other name → `TINKEX_STATUS_INVALID_ARG`).
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_admin_client_call(
    client: *const tinkex_admin_client,
    method: *const u8,
    method_len: usize,
    args_json: *const u8,
    args_json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: readable inputs (caller contract).
        let (name, args) = unsafe { call_inputs(method, method_len, args_json, args_json_len) }?;
        let call = c.client.prepare(&name, args).map_err(arg_failure)?;
        // SAFETY: `client` is a live handle (checked above); the other pointers are checked
        // by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.call_prepared(call)
        }) }
    })
}

/// A new reference to the same client; NULL when `client` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_admin_client_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_admin_client_clone(
    client: *const tinkex_admin_client,
) -> *mut tinkex_admin_client {
    // SAFETY: a non-NULL `client` is a live handle (caller contract).
    unsafe { super::clone_export(client) }
}

/// Drops one reference. NULL does nothing. Never cancels.
///
/// Consumes: `client`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_admin_client_free(client: *mut tinkex_admin_client) {
    // SAFETY: a non-NULL `client` came from this library; the host gives up this reference.
    unsafe { super::free_export(client) }
}
