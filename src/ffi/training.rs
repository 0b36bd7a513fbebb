//! `tinkex_training_client` (Arc-owned): ordered training operations on one model.

use super::bytes::tinkex_bytes;
use super::datum::tinkex_datum_batch;
use super::error::{tinkex_error, Failure};
use super::future::{json_output, submit_on, tinkex_future, Output};
use super::runtime::tinkex_runtime;
use super::sampling::tinkex_sampling_client;
use super::status::tinkex_status;
use super::{boundary, input_json, out_ptr, tinkex_done_fn, write_out};
use super::{ArcHandle, BoxHandle};
use crate::core::requests::{
    LoadStateInput, LossInput, OptimStepInput, SaveStateInput,
    SaveWeightsAndGetSamplingClientInput, SaveWeightsExternalInput, SaveWeightsForSamplerInput,
    SavedPath,
};
use crate::core::types::{ForwardBackwardInput, ForwardBackwardOutput};
use crate::core::TrainingClient;
use std::any::Any;
use std::ffi::c_void;
use std::sync::Arc;

/// A training client for one model. Operations are sent in submission order (per client,
/// across threads: the order of the submit calls).
///
/// Arc-owned; holds the client that created it (and so the runtime). Any thread may use it
/// concurrently.
pub struct tinkex_training_client {
    rt: Arc<tinkex_runtime>,
    _parent: Arc<dyn Any + Send + Sync>,
    client: TrainingClient,
}

impl super::future::ClientHandle for tinkex_training_client {
    type Client = TrainingClient;
    const ARG: &'static str = "client";
    fn runtime(&self) -> &Arc<tinkex_runtime> {
        &self.rt
    }
    fn client(&self) -> &TrainingClient {
        &self.client
    }
}

impl tinkex_training_client {
    pub(crate) fn new(
        rt: Arc<tinkex_runtime>,
        parent: Arc<dyn Any + Send + Sync>,
        client: TrainingClient,
    ) -> Self {
        tinkex_training_client {
            rt,
            _parent: parent,
            client,
        }
    }
}

fn as_json<T: serde::Serialize>(
    _: Arc<tinkex_training_client>,
) -> impl FnOnce(T) -> Result<Output, Failure> {
    |v| json_output(&v)
}

/// A forward / forward_backward result, kept typed (`tinkex_future_take_forward_result`;
/// `tinkex_future_take_result` serializes it).
pub(crate) fn as_forward(
    _: Arc<tinkex_training_client>,
) -> impl FnOnce(ForwardBackwardOutput) -> Result<Output, Failure> {
    |v| Ok(Output::Forward(Box::new(v)))
}

fn as_path(_: Arc<tinkex_training_client>) -> impl FnOnce(String) -> Result<Output, Failure> {
    |path| json_output(&SavedPath { path })
}

/// A new reference to the same client; NULL when `client` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_training_client_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_clone(
    client: *const tinkex_training_client,
) -> *mut tinkex_training_client {
    // SAFETY: a non-NULL `client` is a live handle (caller contract).
    unsafe { super::clone_export(client) }
}

/// Drops one reference. NULL does nothing. Never cancels: pending operations keep the
/// client alive and complete normally.
///
/// Consumes: `client`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_free(client: *mut tinkex_training_client) {
    // SAFETY: a non-NULL `client` came from this library; the host gives up this reference.
    unsafe { super::free_export(client) }
}

/// The model's information (fetched at creation, no I/O): `get_info` JSON, e.g.
/// `{"model_id": "...", "model_data": {"model_name": "Qwen/Qwen3-8B", ...}, "is_lora": true,
/// "lora_rank": 32, ...}`.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_get_info(
    client: *const tinkex_training_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let json = serde_json::to_vec(c.client.get_info())
            .map_err(|e| Failure::internal(e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
        Ok(tinkex_status::Ok)
    })
}

/// Loss and gradients of a batch, accumulated for the next `optim_step`. `json` is a
/// `ForwardBackwardInput`: `{"data": [Datum, ...], "loss_fn": "cross_entropy",
/// "loss_fn_config": {...}}` where a Datum is `{"model_input": {"chunks": [{"type":
/// "encoded_text", "tokens": [...]}]}, "loss_fn_inputs": {"target_tokens": {"data": [...],
/// "dtype": "int64", "shape": [n]}, "weights": {...}}}`. Result: `ForwardBackwardOutput`
/// JSON (`{"loss_fn_output_type", "loss_fn_outputs": [...], "metrics": {"loss:sum": ...}}`),
/// or typed through `tinkex_future_take_forward_result` (no JSON produced).
///
/// For large batches prefer `tinkex_training_client_forward_backward_batch` (typed arrays,
/// no JSON text): the wire request is the same.
///
/// Submit call: returns within microseconds; `on_done(user_data, fut)` (may be NULL) fires
/// exactly once on the dispatcher thread. On a non-OK status nothing was submitted and
/// `on_done` never fires. Blocks: never. Callback-safe. Caller owns `*out_future`; release
/// with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward_backward(
    client: *const tinkex_training_client,
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
        let input: ForwardBackwardInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.forward_backward_with(input)),
            as_forward,
        ) }
    })
}

/// Like `tinkex_training_client_forward_backward` but without accumulating gradients.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward(
    client: *const tinkex_training_client,
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
        let input: ForwardBackwardInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.forward_with(input)),
            as_forward,
        ) }
    })
}

/// The body of the two batch submit calls: borrows `batch` (its datums are copied).
///
/// # Safety
/// `client` and `batch` must be NULL or live handles of their types; `(json, json_len)` a
/// readable input; `out_future` NULL or writable.
unsafe fn batch_call(
    client: *const tinkex_training_client,
    batch: *const tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    forward_only: bool,
) -> Result<tinkex_status, Failure> {
    super::non_null(client, "client")?;
    // SAFETY: a non-NULL `batch` is a live handle (this function's contract).
    let batch = unsafe { ArcHandle::from_ptr(batch, "batch") }?;
    out_ptr(out_future, "out_future")?;
    // SAFETY: `(json, json_len)` is a readable input (this function's contract).
    let loss: LossInput = unsafe { input_json(json, json_len, "json") }?;
    let input = ForwardBackwardInput::from_parts(batch.data(), loss);
    // SAFETY: forwarded (this function's contract).
    unsafe {
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| {
                Ok(if forward_only {
                    c.forward_with(input)
                } else {
                    c.forward_backward_with(input)
                })
            },
            as_forward,
        )
    }
}

/// forward_backward over datums built with the typed-array bulk path
/// (`tinkex_datum_batch_*`): no JSON text for the numbers, one copy into the client. `json`
/// names the loss: `{"loss_fn": "cross_entropy", "loss_fn_config": {...}}`. The request on
/// the wire is byte-for-byte the one the JSON path builds for the same datums. Result:
/// `ForwardBackwardOutput` JSON.
///
/// Borrows `batch` (its datums are copied at submit; free it when you like). Submit call (see
/// `tinkex_training_client_forward_backward`). Blocks: never. Callback-safe. Caller owns
/// `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward_backward_batch(
    client: *const tinkex_training_client,
    batch: *const tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: the export's pointer contract is `batch_call`'s.
        unsafe {
            batch_call(
                client, batch, json, json_len, on_done, user_data, out_future, false,
            )
        }
    })
}

/// forward (no gradients) over a datum batch; as
/// `tinkex_training_client_forward_backward_batch`.
///
/// Borrows `batch` (its datums are copied at submit). Submit call. Blocks: never. Callback-safe. Caller
/// owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward_batch(
    client: *const tinkex_training_client,
    batch: *const tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: the export's pointer contract is `batch_call`'s.
        unsafe {
            batch_call(
                client, batch, json, json_len, on_done, user_data, out_future, true,
            )
        }
    })
}

/// Applies the accumulated gradients. `json` is an `OptimStepInput`: Adam parameters
/// `{"learning_rate": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12, "weight_decay": 0,
/// "grad_clip_norm": 0}` (every field optional; a misspelled one is `INVALID_JSON`), or
/// another optimizer family's parameters with their `type` (e.g. `{"type": "dimuon",
/// "learning_rate": 0.01}`), passed through as `optimizer_params`. Result: `{"metrics":
/// {...} | null}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_optim_step(
    client: *const tinkex_training_client,
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
        let params: OptimStepInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.optim_step_with(params)),
            as_json,
        ) }
    })
}

/// Saves a training checkpoint (weights and optimizer state). `json` is the `save_weights`
/// body without client-owned fields: `{"path": "name", "ttl_seconds": 3600, "overwrite":
/// false, "user_metadata": {"k": "v"}}` (only `path`, a name, is required). Result:
/// `{"path": "tinker://.../weights/name"}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_save_state(
    client: *const tinkex_training_client,
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
        let input: SaveStateInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_state_with(input)),
            as_path,
        ) }
    })
}

/// Saves named sampler weights. `json`: `{"path": "name", "ttl_seconds": 3600,
/// "user_metadata": {"k": "v"}}` (only `path` required). Result:
/// `{"path": "tinker://.../sampler_weights/name"}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_save_weights_for_sampler(
    client: *const tinkex_training_client,
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
        let input: SaveWeightsForSamplerInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_weights_for_sampler_with(&input)),
            as_path,
        ) }
    })
}

/// Saves the current weights for sampling (an ephemeral save, no name) and creates a
/// sampling client bound to them. `json` (NULL/empty = defaults): `{"kind": "snapshot" |
/// "inflight", "retry_config": {...RetryConfig}, "record_stability_info": false}`;
/// `snapshot` pins fixed weights, `inflight` publishes a mutable target that later inflight
/// saves of this model update. An unknown `kind` is `TINKEX_STATUS_USER` (through the
/// future). Result: a sampling client (take it with `tinkex_future_take_sampling_client`).
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_save_weights_and_get_sampling_client(
    client: *const tinkex_training_client,
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
        let input: SaveWeightsAndGetSamplingClientInput =
            unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_weights_and_get_sampling_client_with(&input)),
            |parent| {
                move |sampler| {
                    let rt = parent.rt.clone();
                    Ok(Output::Sampling(Arc::new(tinkex_sampling_client::new(
                        rt, parent, sampler,
                    ))))
                }
            },
        ) }
    })
}

/// Loads a training checkpoint into this model. `json`: `{"path":
/// "tinker://.../weights/name", "optimizer": false, "weights_access_token": "..."}`
/// (`optimizer: true` also restores the optimizer state; the token, for a checkpoint of
/// another account, is optional). Result: the server's answer, `{"path":
/// "tinker://.../weights/name" | null, "model_id": "..." | null, "type": "load_weights" | null}`
/// (PROTOCOL.md 6.8).
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_load_state(
    client: *const tinkex_training_client,
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
        let input: LoadStateInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client`/`svc` is NULL or a live handle of its type (caller contract);
        // the other pointers are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.load_state_with(&input)),
            as_json,
        ) }
    })
}

/// Saves the weights in an external format (e.g. HuggingFace) under
/// `tinker://<run>/external_weights/<name>` (PROTOCOL.md 6.7). `json`: `{"path": "name",
/// "ttl_seconds": 3600, "age_encryption_recipients": ["age1..."]}` (only `path` required;
/// more than 10 recipients is `TINKEX_STATUS_USER` through the future). Result:
/// `{"path": "tinker://.../external_weights/name", "size_bytes": 123 | null}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_save_weights_external(
    client: *const tinkex_training_client,
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
        let input: SaveWeightsExternalInput = unsafe { input_json(json, json_len, "json") }?;
        // SAFETY: `client` is NULL or a live handle (caller contract); the other pointers
        // are checked by `submit_on`.
        unsafe { submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_weights_external_with(&input)),
            as_json,
        ) }
    })
}

/// The Tinker console page of this training run as a JSON string (PROTOCOL.md 20.2), e.g.
/// `"https://tinker.thinkingmachines.ai/training_runs/<model_id>"`.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_get_console_url(
    client: *const tinkex_training_client,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        let c = unsafe { ArcHandle::from_ptr(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let json = serde_json::to_vec(&c.client.get_console_url())
            .map_err(|e| Failure::internal(e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
        Ok(tinkex_status::Ok)
    })
}
