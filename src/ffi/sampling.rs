//! `tinkex_sampling_client` (Arc-owned): sampling and prompt logprobs on one sampling
//! session.

use super::bytes::tinkex_bytes;
use super::error::tinkex_error;
use super::future::{submit_on, tinkex_future, Output};
use super::runtime::tinkex_runtime;
use super::status::tinkex_status;
use super::{boundary, input_json, input_str, out_ptr, tinkex_done_fn, write_out};
use super::{ArcHandle, BoxHandle};
use crate::core::requests::{ComputeLogprobsInput, SampleInput};
use crate::core::{ConfigInput, SamplingClient};
use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

/// A sampling client bound to one sampling session.
///
/// Arc-owned; holds the client that created it (and so the runtime). Any thread may use it
/// concurrently.
pub struct tinkex_sampling_client {
    rt: Arc<tinkex_runtime>,
    _parent: Arc<dyn Any + Send + Sync>,
    client: SamplingClient,
}

impl super::future::ClientHandle for tinkex_sampling_client {
    type Client = SamplingClient;
    const ARG: &'static str = "client";
    fn runtime(&self) -> &Arc<tinkex_runtime> {
        &self.rt
    }
    fn client(&self) -> &SamplingClient {
        &self.client
    }
}

impl tinkex_sampling_client {
    pub(crate) fn new(
        rt: Arc<tinkex_runtime>,
        parent: Arc<dyn Any + Send + Sync>,
        client: SamplingClient,
    ) -> Self {
        tinkex_sampling_client {
            rt,
            _parent: parent,
            client,
        }
    }
}

/// A new reference to the same client; NULL when `client` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_sampling_client_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_clone(
    client: *const tinkex_sampling_client,
) -> *mut tinkex_sampling_client {
    // SAFETY: a non-NULL `client` is a live handle (caller contract).
    unsafe { super::clone_export(client) }
}

/// Drops one reference. NULL does nothing. Never cancels.
///
/// Consumes: `client`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_free(client: *mut tinkex_sampling_client) {
    // SAFETY: a non-NULL `client` came from this library; the host gives up this reference.
    unsafe { super::free_export(client) }
}

/// The client's session and model: `{"sampling_session_id": "...", "base_model": "..."}`.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_get_info(
    client: *const tinkex_sampling_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let json = serde_json::to_vec(&c.client.info())
            .map_err(|e| super::error::Failure::internal(e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
        Ok(tinkex_status::Ok)
    })
}

/// Draws continuations of a prompt. `json` is the `asample` body without client-owned
/// fields: `{"prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
/// "num_samples": 1, "sampling_params": {"max_tokens": 16, "temperature": 1.0, "top_k": -1,
/// "top_p": 1.0, "seed": null, "stop": null}, "prompt_logprobs": false,
/// "topk_prompt_logprobs": 0, "topk_sample_logprobs": 0, "prompt_logprobs_last_n": null,
/// "target_prompt_logprobs": TensorData, "prompt_alt_tokens_k": 0}` (only `prompt` is
/// required; `target_prompt_logprobs` is int64 `[len(prompt) - 1, K]`, dense or sparse CSR,
/// `-1` cells request nothing). `num_samples` 0, a `prompt_logprobs_last_n` of 0 or without
/// `prompt_logprobs`, or a `target_prompt_logprobs` that is not a 2-D int64 tensor, is
/// `TINKEX_STATUS_INVALID_ARG`. Result: `SampleResponse` JSON (`{"sequences": [{"tokens",
/// "logprobs", "stop_reason", "sequence_id"}], "prompt_logprobs", "target_prompt_logprobs":
/// TensorData (float32, the request's layout), "prompt_alt_tokens": {"tokens", "logprobs"},
/// ...}`), or typed through `tinkex_future_take_sample_result` (no JSON produced).
/// `record_stability_info` is the client's setting (see
/// `tinkex_service_client_create_sampling_client`).
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. On a non-OK status nothing was submitted and
/// `on_done` never fires. Blocks: never. Callback-safe. Caller owns `*out_future`; release
/// with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_sample(
    client: *const tinkex_sampling_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: SampleInput = unsafe { input_json(json, json_len, "json") }?;
        input
            .validate()
            .map_err(super::error::Failure::invalid_arg)?;
        // SAFETY: `client` is NULL or a live handle of its type (caller contract); the
        // other pointers are checked by `submit_on`.
        unsafe {
            submit_on(
                client,
                on_done,
                user_data,
                out_future,
                |c| Ok(c.sample_with(input)),
                |_| |v| Ok(Output::Sample(Box::new(v))),
            )
        }
    })
}

/// Log-probabilities of every prompt token. `json`: `{"prompt": ModelInput,
/// "prompt_logprobs_last_n": N}` (N optional: score only the last N tokens). Result: a JSON
/// array with one entry per prompt token (`null` at position 0 and before the last N), or a
/// float array through `tinkex_future_take_logprobs_result` (NaN for `null`). Always
/// retried by the sampling retry handler (PROTOCOL.md 7.3).
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_compute_logprobs(
    client: *const tinkex_sampling_client,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let input: ComputeLogprobsInput = unsafe { input_json(json, json_len, "json") }?;
        input
            .validate()
            .map_err(super::error::Failure::invalid_arg)?;
        // SAFETY: `client` is NULL or a live handle of its type (caller contract); the
        // other pointers are checked by `submit_on`.
        unsafe {
            submit_on(
                client,
                on_done,
                user_data,
                out_future,
                |c| Ok(c.compute_logprobs_with(input)),
                |_| |v| Ok(Output::Logprobs(v)),
            )
        }
    })
}

/// This client's sampler handle (PROTOCOL.md 20.4) as a JSON string: base64url of the
/// official SDK's compact JSON, carrying no credentials; interchangeable with the SDK's
/// `SamplingClient.get_sampler_handle()`. Pass it to another process (any language) and
/// rebuild a clone there with `tinkex_sampling_client_from_sampler_handle`.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_get_sampler_handle(
    client: *const tinkex_sampling_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let handle = c.client.get_sampler_handle()?;
        let json = serde_json::to_vec(&handle)
            .map_err(|e| super::error::Failure::internal(e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
        Ok(tinkex_status::Ok)
    })
}

/// A clone of the sampling client behind `handle` (the UTF-8 handle string, not JSON;
/// PROTOCOL.md 20.4, 3.4, 12.2), on `rt`. `config_json` is a `ConfigInput` as for
/// `tinkex_service_client_new`, giving this process's credentials (the handle carries none);
/// the handle's base URL is used (a different `base_url` in `config_json` is
/// `TINKEX_STATUS_USER`). Performs no I/O: the clone reuses the original's session (it sends
/// its own heartbeats and telemetry for it) and cannot create sessions. Its clone id comes
/// from `join_sampling_session` before its first sample when the handle's
/// `sample_join_sampling_session` flag is on, else it is random; its `seq_id`s start at
/// `clone_id × 10^9`, so it never reuses the original's. A handle that is too long (64 KiB),
/// not base64url, not the handle's JSON, or names a non-http(s) URL is `TINKEX_STATUS_USER`.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with
/// `tinkex_sampling_client_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_from_sampler_handle(
    rt: *const tinkex_runtime,
    handle: *const u8,
    handle_len: usize,
    config_json: *const u8,
    config_json_len: usize,
    out: *mut *mut tinkex_sampling_client,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `rt` is a live runtime handle (caller contract).
        let rt = unsafe { ArcHandle::clone_from_ptr(rt, "rt") }?;
        out_ptr(out, "out")?;
        // SAFETY: `(handle, handle_len)` is a readable input (caller contract).
        let handle = unsafe { input_str(handle, handle_len, "handle") }?;
        // SAFETY: `(config_json, config_json_len)` is a readable input (caller contract).
        let cfg: ConfigInput = unsafe { input_json(config_json, config_json_len, "config_json") }?;
        rt.check_open()?;
        let client = SamplingClient::from_sampler_handle(handle, cfg, rt.handle().clone())?;
        let parent: Arc<dyn Any + Send + Sync> = rt.clone();
        let c = Arc::new(tinkex_sampling_client::new(rt, parent, client));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(c)) };
        Ok(tinkex_status::Ok)
    })
}
