//! `tinkex_rest_client` (Arc-owned): training runs, checkpoints and weights info.

use super::error::tinkex_error;
use super::future::{submit_json_on, tinkex_future};
use super::runtime::tinkex_runtime;
use super::service::tinkex_service_client;
use super::status::tinkex_status;
use super::{boundary, input_str, out_ptr, tinkex_done_fn};
use crate::core::RestClient;
use std::ffi::c_void;
use std::sync::Arc;

/// A REST client sharing its service client's transport and retry policy.
///
/// Arc-owned; holds its service client (and so the runtime). Any thread may use it
/// concurrently.
pub struct tinkex_rest_client {
    rt: Arc<tinkex_runtime>,
    _parent: Arc<tinkex_service_client>,
    client: RestClient,
}

impl super::future::ClientHandle for tinkex_rest_client {
    type Client = RestClient;
    const ARG: &'static str = "client";
    fn runtime(&self) -> &Arc<tinkex_runtime> {
        &self.rt
    }
    fn client(&self) -> &RestClient {
        &self.client
    }
}

impl tinkex_rest_client {
    pub(crate) fn new(
        rt: Arc<tinkex_runtime>,
        parent: Arc<tinkex_service_client>,
        client: RestClient,
    ) -> Self {
        tinkex_rest_client {
            rt,
            _parent: parent,
            client,
        }
    }
}

/// A new reference to the same client; NULL when `client` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_rest_client_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_clone(
    client: *const tinkex_rest_client,
) -> *mut tinkex_rest_client {
    // SAFETY: a non-NULL `client` is a live handle (caller contract).
    unsafe { super::clone_export(client) }
}

/// Drops one reference. NULL does nothing. Never cancels.
///
/// Consumes: `client`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_free(client: *mut tinkex_rest_client) {
    // SAFETY: a non-NULL `client` came from this library; the host gives up this reference.
    unsafe { super::free_export(client) }
}

/// The caller's training runs, newest first. Result: `{"training_runs": [...], "cursor":
/// {...}}`.
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. On a non-OK status nothing was submitted and
/// `on_done` never fires. Blocks: never. Callback-safe. Caller owns `*out_future`; release
/// with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_list_training_runs(
    client: *const tinkex_rest_client,
    limit: u32,
    offset: u32,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.list_training_runs(limit, offset)
        }) }
    })
}

/// One training run by id (UTF-8 `(training_run_id, len)`). Result: `TrainingRun` JSON.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_get_training_run(
    client: *const tinkex_rest_client,
    training_run_id: *const u8,
    training_run_id_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: a readable input (caller contract).
        let id = unsafe { input_str(training_run_id, training_run_id_len, "training_run_id") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.get_training_run(id)
        }) }
    })
}

/// The checkpoints of one training run. Result: `{"checkpoints": [...], "cursor": ...}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_list_checkpoints(
    client: *const tinkex_rest_client,
    training_run_id: *const u8,
    training_run_id_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: a readable input (caller contract).
        let id = unsafe { input_str(training_run_id, training_run_id_len, "training_run_id") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.list_checkpoints(id)
        }) }
    })
}

/// All the caller's checkpoints, newest first. Result: `{"checkpoints": [...], "cursor":
/// ...}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_list_user_checkpoints(
    client: *const tinkex_rest_client,
    limit: u32,
    offset: u32,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.list_user_checkpoints(limit, offset)
        }) }
    })
}

/// Deletes the checkpoint at a `tinker://` path (UTF-8 `(path, len)`). Result: `null`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_delete_checkpoint(
    client: *const tinkex_rest_client,
    path: *const u8,
    path_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: a readable input (caller contract).
        let path = unsafe { input_str(path, path_len, "path") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.delete_checkpoint(path)
        }) }
    })
}

/// Base model and LoRA settings of the checkpoint at a `tinker://` path. Result:
/// `WeightsInfoResponse` JSON.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_get_weights_info(
    client: *const tinkex_rest_client,
    path: *const u8,
    path_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: a readable input (caller contract).
        let path = unsafe { input_str(path, path_len, "path") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_json_on(client, on_done, user_data, out_future, |c| {
            c.get_weights_info(path)
        }) }
    })
}
