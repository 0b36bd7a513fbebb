//! `tinkex_rest_client` (Arc-owned): the REST methods of the method table
//! (`src/core/rest/methods.json`) through one generic call, and
//! `tinkex_service_client_copy_weights`.

use super::error::{tinkex_error, Failure};
use super::future::{submit_json_on, tinkex_future};
use super::runtime::tinkex_runtime;
use super::service::tinkex_service_client;
use super::status::tinkex_status;
use super::{boundary, input_json, input_str, out_ptr, tinkex_done_fn, write_out, ArcHandle};
use crate::core::rest::{ArgError, ArgErrorKind};
use crate::core::{Config, ConfigInput, RestClient};
use std::ffi::c_void;
use std::sync::Arc;

/// A REST client: its own session-less holder (`tinkex_rest_client_new`) or its service
/// client's (`tinkex_service_client_create_rest_client`). Neither creates a session.
///
/// Arc-owned; holds its runtime (and its service client, if any). Any thread may use it
/// concurrently.
pub struct tinkex_rest_client {
    rt: Arc<tinkex_runtime>,
    _parent: Option<Arc<tinkex_service_client>>,
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
        parent: Option<Arc<tinkex_service_client>>,
        client: RestClient,
    ) -> Self {
        tinkex_rest_client {
            rt,
            _parent: parent,
            client,
        }
    }
}

/// The status of a rejected generic call.
pub(crate) fn arg_failure(e: ArgError) -> Failure {
    match e.kind {
        ArgErrorKind::InvalidJson => Failure::new(tinkex_status::InvalidJson, e.message),
        ArgErrorKind::InvalidArg => Failure::invalid_arg(e.message),
    }
}

/// Reads `(method, args_json)` of a generic call: the method name as UTF-8, the arguments
/// as a JSON value (`(NULL, 0)` or blank = `{}`).
///
/// # Safety
/// Both inputs as `input_bytes`.
pub(crate) unsafe fn call_inputs(
    method: *const u8,
    method_len: usize,
    args_json: *const u8,
    args_json_len: usize,
) -> Result<(String, serde_json::Value), Failure> {
    // SAFETY: forwarded (caller contract).
    let name = unsafe { input_str(method, method_len, "method") }?.to_string();
    // SAFETY: forwarded (caller contract).
    let text = unsafe { input_str(args_json, args_json_len, "args_json") }?;
    let args = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(text).map_err(|e| {
            Failure::new(
                tinkex_status::InvalidJson,
                format!(
                    "args_json is not valid JSON: {}",
                    crate::core::sanitize::serde_message(&e)
                ),
            )
        })?
    };
    Ok((name, args))
}

/// Creates a session-less REST client on `rt` (PROTOCOL.md 3.3). Performs no I/O;
/// client/config and dynamic_config are fetched before the first call; no session, no
/// heartbeat, ever. `config_json` is a `ConfigInput`, as for `tinkex_service_client_new`.
/// Clients with the same runtime, base URL, API key and configuration share one holder.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with `tinkex_rest_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_new(
    rt: *const tinkex_runtime,
    config_json: *const u8,
    config_json_len: usize,
    out: *mut *mut tinkex_rest_client,
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
        let client = RestClient::with_runtime(config, rt.handle().clone())?;
        let rest = Arc::new(tinkex_rest_client::new(rt, None, client));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(rest)) };
        Ok(tinkex_status::Ok)
    })
}

/// Calls the REST method named `(method, method_len)` (UTF-8; a `name` of
/// `src/core/rest/methods.json`) with `args_json`, a JSON object keyed by the table's param
/// names (`(NULL, 0)` = `{}`; a missing param takes the table's default). Result: the
/// response model as JSON; `null` for methods returning nothing; a JSON string for
/// `copy_weights` and `export_session_trace`.
///
/// Rejected before anything is sent: an unknown method, a missing required param or a
/// wrong type/value → `TINKEX_STATUS_INVALID_ARG`; args that are not a JSON object or an
/// unknown key → `TINKEX_STATUS_INVALID_JSON`.
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. On a non-OK status nothing was submitted and
/// `on_done` never fires. Blocks: never. Callback-safe. Caller owns `*out_future`; release
/// with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_rest_client_call(
    client: *const tinkex_rest_client,
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

/// `tinkex_service_client_copy_weights` input.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CopyWeightsInput {
    /// Tinker path of the checkpoint to copy.
    pub path: String,
    /// Seconds until the copy expires (3600 … 10 years, checked by the server).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Token for weights readable under another account (sent as a header).
    #[serde(default)]
    pub weights_access_token: Option<String>,
}

/// Copies a checkpoint into the service client's project (PROTOCOL.md 6.9): `json` is
/// `{"path": "tinker://…", "ttl_seconds"?: int, "weights_access_token"?: str}`. The
/// destination is the configuration's `project_id` (else `TINKER_PROJECT_ID`); without one
/// the future fails with a user error. Result: the copy's tinker path as a JSON string.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_copy_weights(
    svc: *const tinkex_service_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: a readable input (caller contract).
        let input: CopyWeightsInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `svc` is NULL or a live handle (caller contract); the other pointers are
        // checked by `submit_on`.
        unsafe { submit_json_on(svc, on_done, user_data, out_future, |c| {
            c.copy_weights(
                &input.path,
                input.ttl_seconds,
                input.weights_access_token.as_deref(),
            )
        }) }
    })
}
