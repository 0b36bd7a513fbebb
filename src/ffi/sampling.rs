//! `tinkex_sampling_client` (Arc-owned): sampling and prompt logprobs on one sampling
//! session.

use super::bytes::tinkex_bytes;
use super::datum::{copy_values, tinkex_dtype};
use super::error::{tinkex_error, Failure};
use super::future::{submit_on, tinkex_future, Output};
use super::runtime::tinkex_runtime;
use super::status::tinkex_status;
use super::{boundary, input_json, input_str, out_ptr, tinkex_done_fn, write_out};
use super::{ArcHandle, BoxHandle};
use crate::core::requests::{ComputeLogprobsInput, SampleInput};
use crate::core::types::{ModelInput, SamplingParams, StopCondition, TensorValues};
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
            .map_err(|e| Failure::internal(e.to_string()))?;
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
            .map_err(Failure::invalid_arg)?;
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

/// Parameters of `tinkex_sampling_client_sample_tokens` (the typed sample submit): the
/// `sample` request's scalar fields. Start from `tinkex_sample_params_default()` (or
/// zero-initialise and set `struct_size = sizeof(tinkex_sample_params)`), then set what you
/// need.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct tinkex_sample_params {
    /// `sizeof(tinkex_sample_params)` as the caller knows it (for later extension).
    pub struct_size: u32,
    /// Independent samples to draw (at least 1; default 1).
    pub num_samples: u32,
    /// Maximum generated tokens; a negative value means "not set" (the server's default;
    /// default -1).
    pub max_tokens: i64,
    /// Seed for reproducible sampling, used when `has_seed` is true.
    pub seed: i64,
    /// Whether `seed` is set (default false).
    pub has_seed: bool,
    /// Whether to return the prompt's logprobs (default false).
    pub prompt_logprobs: bool,
    /// Softmax temperature (default 1.0).
    pub temperature: f64,
    /// Top-k cut-off; -1 = no limit (default -1).
    pub top_k: i64,
    /// Nucleus cut-off (default 1.0).
    pub top_p: f64,
    /// Top-k logprobs per prompt position (default 0).
    pub topk_prompt_logprobs: u32,
    /// Top-k logprobs per sampled position (default 0).
    pub topk_sample_logprobs: u32,
    /// Score only the last N prompt tokens (needs `prompt_logprobs`); 0 = all (default 0).
    pub prompt_logprobs_last_n: u32,
    /// Alternatives to draw at every prompt position after the first (default 0).
    pub prompt_alt_tokens_k: u32,
}

impl Default for tinkex_sample_params {
    fn default() -> Self {
        tinkex_sample_params {
            struct_size: std::mem::size_of::<tinkex_sample_params>() as u32,
            num_samples: 1,
            max_tokens: -1,
            seed: 0,
            has_seed: false,
            prompt_logprobs: false,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: 0,
            prompt_logprobs_last_n: 0,
            prompt_alt_tokens_k: 0,
        }
    }
}

/// The defaults of `tinkex_sample_params`: `struct_size` set, one sample, no `max_tokens`,
/// no seed, temperature 1, top-k -1, top-p 1, no logprobs.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_params_default() -> tinkex_sample_params {
    boundary!(value tinkex_sample_params::default(), { tinkex_sample_params::default() })
}

/// Draws continuations of a prompt given as token ids: the typed form of
/// `tinkex_sampling_client_sample` for a single `encoded_text` chunk (no JSON on the way
/// in; the request on the wire is the one the JSON path builds for the same values).
/// `tokens` are `len` ids of `dtype` (`TINKEX_DTYPE_INT64` or `TINKEX_DTYPE_INT32`);
/// `params` may be NULL (defaults); `(stop_json, stop_json_len)` is the optional stop
/// condition as JSON (`"\n"`, `["a", "b"]` or `[13, 42]`; `(NULL, 0)` = none). Multimodal
/// prompts and `target_prompt_logprobs` need the JSON call. The result is a `SampleResponse`
/// (typed: `tinkex_future_take_sample_result`; or JSON: `tinkex_future_take_result`).
///
/// Errors (nothing submitted): `NULL_ARG`, `INVALID_ARG` (a float or unknown dtype, a
/// `struct_size` smaller than this struct's first version, `num_samples` 0, a
/// `prompt_logprobs_last_n` without `prompt_logprobs`, an overlong array), `INVALID_JSON`
/// (stop). The arrays are copied; they are borrowed for the call only.
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. Blocks: never. Callback-safe. Caller owns
/// `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sampling_client_sample_tokens(
    client: *const tinkex_sampling_client,
    tokens: *const c_void,
    len: usize,
    dtype: i32,
    params: *const tinkex_sample_params,
    stop_json: *const u8,
    stop_json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        let p = if params.is_null() {
            tinkex_sample_params::default()
        } else {
            // SAFETY: a non-NULL `params` points to at least a `uint32_t struct_size` (caller
            // contract); the whole v1 struct is read only when it is declared that large.
            let size = unsafe { (params as *const u32).read_unaligned() } as usize;
            if size < std::mem::size_of::<tinkex_sample_params>() {
                return Err(Failure::invalid_arg(format!(
                    "params->struct_size is {size}, expected at least {}",
                    std::mem::size_of::<tinkex_sample_params>()
                )));
            }
            // SAFETY: the caller declared at least this many readable bytes.
            unsafe { params.read_unaligned() }
        };
        let dtype = tinkex_dtype::try_from(dtype)?;
        if !matches!(dtype, tinkex_dtype::Int64 | tinkex_dtype::Int32) {
            return Err(Failure::invalid_arg(
                "tokens must be TINKEX_DTYPE_INT64 or TINKEX_DTYPE_INT32",
            ));
        }
        // SAFETY: `(tokens, len)` is a readable array of `dtype` (caller contract).
        let ids = match unsafe { copy_values(tokens, len, dtype, "tokens") }? {
            TensorValues::Int64(v) => v,
            TensorValues::Float32(_) => unreachable!("integer dtype checked above"),
        };
        let stop: Option<StopCondition> = if stop_json.is_null() && stop_json_len == 0 {
            None
        } else {
            // SAFETY: `(stop_json, stop_json_len)` is a readable input (caller contract).
            unsafe { input_json(stop_json, stop_json_len, "stop_json") }?
        };
        let input = SampleInput {
            prompt: ModelInput::from_ints(ids),
            num_samples: p.num_samples,
            sampling_params: SamplingParams {
                max_tokens: (p.max_tokens >= 0).then_some(p.max_tokens),
                seed: p.has_seed.then_some(p.seed),
                stop,
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
            },
            prompt_logprobs: p.prompt_logprobs,
            topk_prompt_logprobs: p.topk_prompt_logprobs,
            topk_sample_logprobs: p.topk_sample_logprobs,
            prompt_logprobs_last_n: (p.prompt_logprobs_last_n > 0)
                .then_some(p.prompt_logprobs_last_n),
            target_prompt_logprobs: None,
            prompt_alt_tokens_k: p.prompt_alt_tokens_k,
        };
        input.validate().map_err(Failure::invalid_arg)?;
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
            .map_err(Failure::invalid_arg)?;
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
            .map_err(|e| Failure::internal(e.to_string()))?;
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
