//! `tinkex_service_client` (Arc-owned): the entry point; creates training, sampling and REST
//! clients.

use super::bytes::tinkex_bytes;
use super::error::{tinkex_error, Failure};
use super::future::{json_output, submit_on, tinkex_future, Output};
use super::rest::tinkex_rest_client;
use super::runtime::tinkex_runtime;
use super::sampling::tinkex_sampling_client;
use super::status::tinkex_status;
use super::training::tinkex_training_client;
use super::{boundary, input_json, out_ptr, tinkex_done_fn, write_out};
use super::{ArcHandle, BoxHandle};
use crate::core::requests::{
    CloseInput, CreateCustomLossInput, CreateLoraTrainingClientInput, CreateSamplingClientInput,
    CreateTrainingClientFromStateInput, Empty, ResumeTrainingRunInput,
};
use crate::core::{Config, ConfigInput, ServiceClient};
use std::ffi::c_void;
use std::sync::Arc;

/// A service client: owns the session, its heartbeat and the progress watchdog shared by
/// the clients it creates.
///
/// Arc-owned; holds its runtime. Clients it creates hold it in turn. Any thread may use it
/// concurrently.
pub struct tinkex_service_client {
    pub(crate) rt: Arc<tinkex_runtime>,
    pub(crate) client: ServiceClient,
}

impl super::future::ClientHandle for tinkex_service_client {
    type Client = ServiceClient;
    const ARG: &'static str = "svc";
    fn runtime(&self) -> &Arc<tinkex_runtime> {
        &self.rt
    }
    fn client(&self) -> &ServiceClient {
        &self.client
    }
}

/// Creates a service client on `rt`. Performs no I/O (the session starts with the first
/// operation).
///
/// `config_json` (UTF-8 JSON object, a `ConfigInput` (`docs/schema/ConfigInput.json`);
/// every field optional, unknown fields at any level are `INVALID_JSON`; unset fields fall
/// back to the `TINKER_*` environment variables, then to defaults):
/// ```json
/// {"api_key": "tml-...", "base_url": "https://...", "tags": ["a"], "project_id": "p",
///  "display_name": "run 1", "telemetry": false, "allow_insecure_http": false,
///  "telemetry_settings": {"max_batch": 100, "flush_interval_ms": 10000, "max_queue": 10000,
///                         "http_timeout_ms": 5000, "drain_timeout_ms": 30000},
///  "timeouts": {"connect_ms": 5000, "request_ms": 60000, "retrieve_future_ms": 45000,
///               "heartbeat_ms": 10000, "dynamic_config_ms": 10000, "telemetry_ms": 5000},
///  "retry": {"progress_timeout_ms": 7200000, "base_delay_ms": 500, "max_delay_ms": 10000,
///            "jitter": 0.25, "max_attempts": null, "max_retry_after_ms": 60000,
///            "billing_pause_step_ms": 5000, "billing_max_pause_ms": 3600000,
///            "min_poll_duration_ms": 1000},
///  "heartbeat": {"interval_ms": 10000, "warn_after_ms": 120000},
///  "progress_event_interval_ms": 10000,
///  "limits": {"max_response_bytes": 67108864, "max_announced_response_bytes": 2147483648,
///             "max_redirects": 10}}
/// ```
/// Every interval and timeout must be above zero and `retry.jitter` in [0, 1] (else
/// `TINKEX_STATUS_USER`: zero never means "off"). Error messages never repeat a rejected value.
/// A missing or malformed key gives `TINKEX_STATUS_AUTH` / `TINKEX_STATUS_USER`; a bad URL
/// `TINKEX_STATUS_USER`; a shut-down runtime `TINKEX_STATUS_SHUT_DOWN`.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with
/// `tinkex_service_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_new(
    rt: *const tinkex_runtime,
    config_json: *const u8,
    config_json_len: usize,
    out: *mut *mut tinkex_service_client,
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
        let client = ServiceClient::with_runtime(config, rt.handle().clone())?;
        let svc = Arc::new(tinkex_service_client { rt, client });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(svc)) };
        Ok(tinkex_status::Ok)
    })
}

/// A new reference to the same client; NULL when `svc` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_service_client_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_clone(
    svc: *const tinkex_service_client,
) -> *mut tinkex_service_client {
    // SAFETY: a non-NULL `svc` is a live handle (caller contract).
    unsafe { super::clone_export(svc) }
}

/// Drops one reference. NULL does nothing. Never cancels: pending operations, created
/// clients and subscriptions keep the client alive. Does not finish the session (use
/// `tinkex_service_client_close`).
///
/// Consumes: `svc`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_free(svc: *mut tinkex_service_client) {
    // SAFETY: a non-NULL `svc` came from this library; the host gives up this reference.
    unsafe { super::free_export(svc) }
}

/// The session id as UTF-8 bytes, once the session exists (after the first operation);
/// `TINKEX_STATUS_WRONG_STATE` before.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_session_id(
    svc: *const tinkex_service_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let svc = unsafe { ArcHandle::from_ptr(svc, "svc") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let id = svc
            .client
            .session_id()
            .ok_or_else(|| Failure::wrong_state("the session has not started yet"))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(id.into_bytes()))) };
        Ok(tinkex_status::Ok)
    })
}

/// The models the server supports. Result: `ServerCapabilities` JSON
/// (`{"supported_models": [{"model_name": ...}, ...]}`).
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. On a non-OK status nothing was submitted and
/// `on_done` never fires. Blocks: never. Callback-safe. Caller owns `*out_future`; release
/// with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_get_server_capabilities(
    svc: *const tinkex_service_client,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(svc, "svc")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.get_server_capabilities()),
            |_| |v| json_output(&v),
        ) }
    })
}

fn training_output(
    parent: Arc<tinkex_service_client>,
) -> impl FnOnce(crate::core::TrainingClient) -> Result<Output, Failure> + Send + 'static {
    move |client| {
        let rt = parent.rt.clone();
        Ok(Output::Training(Arc::new(tinkex_training_client::new(
            rt, parent, client,
        ))))
    }
}

/// Creates a LoRA training client. `json` is the `create_model` body without the
/// client-owned fields: `{"base_model": "Qwen/Qwen3-8B", "lora_config": {"rank": 32,
/// "seed": null, "train_unembed": true, "train_mlp": true, "train_attn": true},
/// "user_metadata": {"k": "v"}, "optimizer": {"type": "adamw"}}` (all but `base_model`
/// optional; `optimizer` is `{"type": "adamw"}` (default), `{"type": "dimuon", "version":
/// 1}`, or another family passed through; an invalid known family is `TINKEX_STATUS_USER`
/// through the future). Result: a training client (take it with
/// `tinkex_future_take_training_client`).
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_lora_training_client(
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
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CreateLoraTrainingClientInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.create_lora_training_client_with(&input)),
            training_output,
        ) }
    })
}

/// Creates a training client from a training checkpoint (create-via-load, PROTOCOL.md 6.8).
/// `json`: `{"path": "tinker://.../weights/name", "optimizer": false, "base_model": "...",
/// "user_metadata": {"k": "v"}, "weights_access_token": "...", "optimizer_config": {"type":
/// "adamw"}}` (only `path` required; `optimizer: true` also restores the optimizer state;
/// `optimizer_config` only with `optimizer: false`). Result: a training client.
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_training_client_from_state(
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
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CreateTrainingClientFromStateInput =
            unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.create_training_client_from_state_with(&input)),
            training_output,
        ) }
    })
}

/// Creates a sampling client. `json`: `{"model_path"?: "tinker://...", "base_model"?:
/// "Qwen/Qwen3-8B", "sampling_session_id"?: "...", "retry_config"?: RetryConfig,
/// "record_stability_info"?: false}` naming exactly one of `model_path` (sampler weights),
/// `base_model` and `sampling_session_id` (an existing sampling session of this session:
/// no new one is created; `base_model` may come with it to skip the lookup); otherwise
/// `TINKEX_STATUS_INVALID_ARG`. `record_stability_info: true` makes every sample of the
/// client send it (PROTOCOL.md 12.1). Result: a sampling client (take it with
/// `tinkex_future_take_sampling_client`).
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_sampling_client(
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
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CreateSamplingClientInput = unsafe { input_json(json, json_len, "json") }?;
        input.validate().map_err(Failure::invalid_arg)?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.create_sampling_client_with(&input)),
            |parent| {
                move |client| {
                    let rt = parent.rt.clone();
                    Ok(Output::Sampling(Arc::new(tinkex_sampling_client::new(
                        rt, parent, client,
                    ))))
                }
            },
        ) }
    })
}

/// Creates a REST client sharing this client's holder (transport, auth, retry policy). Its
/// calls never start a session.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with `tinkex_rest_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_rest_client(
    svc: *const tinkex_service_client,
    out: *mut *mut tinkex_rest_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let svc = unsafe { ArcHandle::clone_from_ptr(svc, "svc") }?;
        out_ptr(out, "out")?;
        let client = svc.client.create_rest_client();
        let rest = Arc::new(tinkex_rest_client::new(svc.rt.clone(), Some(svc), client));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(rest)) };
        Ok(tinkex_status::Ok)
    })
}

/// Finishes the session and stops background work (heartbeats). Idempotent. `json` is the
/// `sessions/{id}/finish` body: `{"reason": {"type": "success" | "errored" |
/// "interrupted"}, "detail": "..."}`; empty input means success. Result: `{}`.
///
/// Submit call (see `tinkex_service_client_get_server_capabilities`). Blocks: never.
/// Callback-safe. Caller owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_close(
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
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CloseInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.close_with(input)),
            |_| |()| json_output(&Empty {}),
        ) }
    })
}

/// Creates a server-side custom loss (PROTOCOL.md 5.10). `json`: `{"name": "neg_ll",
/// "inputs": [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}], "graph":
/// {"format": 1, "nodes": [...]}}`. Result: `{"loss_id": "..."}`; pass it as
/// `forward_backward(..., "loss_fn": "custom", "loss_fn_config": {"loss_id": ...})`.
/// `TINKEX_STATUS_USER` (through the future) when the server's `custom_loss_server_side`
/// flag is off, when the inputs or graph break the client-side rules, or when this session
/// already created the same loss.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_create_custom_loss(
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
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: CreateCustomLossInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `svc` is NULL or a live handle (caller contract); the other pointers are
        // checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.create_custom_loss_with(input)),
            |_| |v| json_output(&v),
        ) }
    })
}

/// Resumes a training run from its latest training checkpoint (create-via-load). `json`:
/// `{"training_run_id": "...", "optimizer": true}` (`optimizer` default true). A run with
/// no training checkpoint is `TINKEX_STATUS_USER` through the future. Result: a training
/// client (take it with `tinkex_future_take_training_client`).
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_resume_training_run(
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
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: ResumeTrainingRunInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `svc` is NULL or a live handle (caller contract); the other pointers are
        // checked by `submit_on`.
        unsafe { submit_on(
            svc,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.resume_training_run_with(&input)),
            training_output,
        ) }
    })
}

/// The Tinker console page of this session as a JSON string (PROTOCOL.md 20.2):
/// `".../sessions/<session_id>"`, or `".../sessions"` before the session exists.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_service_client_get_console_url(
    svc: *const tinkex_service_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `svc` is a live handle (caller contract).
        let svc = unsafe { ArcHandle::from_ptr(svc, "svc") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let json = serde_json::to_vec(&svc.client.get_console_url())
            .map_err(|e| Failure::internal(e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
        Ok(tinkex_status::Ok)
    })
}
