//! `tinkex_training_client` (Arc-owned): ordered training operations on one model.

use super::bytes::tinkex_bytes;
use super::datum::tinkex_datum_batch;
use super::error::{tinkex_error, Failure};
use super::future::{json_output, submit_on, tinkex_future, Output};
use super::runtime::tinkex_runtime;
use super::sampling::tinkex_sampling_client;
use super::status::tinkex_status;
use super::{
    arc_clone, arc_into_raw, arc_ref, arc_release, boundary, box_into_raw, box_take, input_json,
    out_ptr, tinkex_done_fn, write_out,
};
use crate::core::requests::{
    Empty, LoadStateInput, LossInput, OptimStepInput, SaveStateInput, SaveWeightsForSamplerInput,
    SavedPath,
};
use crate::core::types::ForwardBackwardInput;
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
    boundary!(value std::ptr::null_mut(), {
        // SAFETY: a non-NULL `client` is a live handle (caller contract).
        match unsafe { arc_clone(client, "client") } {
            Ok(a) => arc_into_raw(a),
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Drops one reference. NULL does nothing. Never cancels: pending operations keep the
/// client alive and complete normally.
///
/// Consumes: `client`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_free(client: *mut tinkex_training_client) {
    boundary!(value(), {
        // SAFETY: a non-NULL `client` came from this library; the host gives up this
        // reference.
        unsafe { arc_release(client as *const tinkex_training_client) }
    })
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
        let c = unsafe { arc_ref(client, "client") }?;
        out_ptr(out_bytes, "out_bytes")?;
        let json = serde_json::to_vec(c.client.get_info())
            .map_err(|e| Failure::internal(e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_bytes, box_into_raw(tinkex_bytes::new(json))) };
        Ok(tinkex_status::Ok)
    })
}

/// Loss and gradients of a batch, accumulated for the next `optim_step`. `json` is a
/// `ForwardBackwardInput`: `{"data": [Datum, ...], "loss_fn": "cross_entropy",
/// "loss_fn_config": {...}}` where a Datum is `{"model_input": {"chunks": [{"type":
/// "encoded_text", "tokens": [...]}]}, "loss_fn_inputs": {"target_tokens": {"data": [...],
/// "dtype": "int64", "shape": [n]}, "weights": {...}}}`. Result: `ForwardBackwardOutput`
/// JSON (`{"loss_fn_output_type", "loss_fn_outputs": [...], "metrics": {"loss:sum": ...}}`).
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
    client: *mut tinkex_training_client,
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
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.forward_backward_with(input)),
            as_json,
        )
    })
}

/// Like `tinkex_training_client_forward_backward` but without accumulating gradients.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward(
    client: *mut tinkex_training_client,
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
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.forward_with(input)),
            as_json,
        )
    })
}

fn batch_call(
    client: *mut tinkex_training_client,
    batch: *mut tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    forward_only: bool,
) -> Result<tinkex_status, Failure> {
    // Consumed first, so it is released whatever happens next.
    // SAFETY: a non-NULL `batch` came from `tinkex_datum_batch_new` and is handed over.
    let batch = unsafe { box_take(batch) }.ok_or_else(|| Failure::null_arg("batch"))?;
    super::non_null(client, "client")?;
    out_ptr(out_future, "out_future")?;
    // SAFETY: `(json, json_len)` is a readable input (caller contract).
    let loss: LossInput = unsafe { input_json(json, json_len, "json") }?;
    let input = ForwardBackwardInput::from_parts(batch.into_data(), loss);
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
        as_json,
    )
}

/// forward_backward over datums built with the typed-array bulk path
/// (`tinkex_datum_batch_*`): no JSON text for the numbers, one copy into the client. `json`
/// names the loss: `{"loss_fn": "cross_entropy", "loss_fn_config": {...}}`. The request on
/// the wire is byte-for-byte the one the JSON path builds for the same datums. Result:
/// `ForwardBackwardOutput` JSON.
///
/// Consumes: `batch` (also on failure). Submit call (see
/// `tinkex_training_client_forward_backward`). Blocks: never. Callback-safe. Caller owns
/// `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward_backward_batch(
    client: *mut tinkex_training_client,
    batch: *mut tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        batch_call(
            client, batch, json, json_len, on_done, user_data, out_future, false,
        )
    })
}

/// forward (no gradients) over a datum batch; as
/// `tinkex_training_client_forward_backward_batch`.
///
/// Consumes: `batch` (also on failure). Submit call. Blocks: never. Callback-safe. Caller
/// owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward_batch(
    client: *mut tinkex_training_client,
    batch: *mut tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        batch_call(
            client, batch, json, json_len, on_done, user_data, out_future, true,
        )
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
    client: *mut tinkex_training_client,
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
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.optim_step_with(params)),
            as_json,
        )
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
    client: *mut tinkex_training_client,
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
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_state_with(input)),
            as_path,
        )
    })
}

/// Saves named sampler weights. `json`: `{"path": "name"}`. Result:
/// `{"path": "tinker://.../sampler_weights/name"}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_save_weights_for_sampler(
    client: *mut tinkex_training_client,
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
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_weights_for_sampler_with(&input)),
            as_path,
        )
    })
}

/// Saves the current weights for sampling and creates a sampling client bound to them.
/// Result: a sampling client (take it with `tinkex_future_take_sampling_client`).
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_save_weights_and_get_sampling_client(
    client: *mut tinkex_training_client,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        super::non_null(client, "client")?;
        out_ptr(out_future, "out_future")?;
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.save_weights_and_get_sampling_client()),
            |parent| {
                move |sampler| {
                    let rt = parent.rt.clone();
                    Ok(Output::Sampling(Arc::new(tinkex_sampling_client::new(
                        rt, parent, sampler,
                    ))))
                }
            },
        )
    })
}

/// Loads a training checkpoint into this model. `json`: `{"path":
/// "tinker://.../weights/name", "optimizer": false}` (`optimizer: true` also restores the
/// optimizer state). Result: `{}`.
///
/// Submit call. Blocks: never. Callback-safe. Caller owns `*out_future`; release with
/// `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_load_state(
    client: *mut tinkex_training_client,
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
        submit_on(
            client,
            on_done,
            user_data,
            out_future,
            |c| Ok(c.load_state_with(&input)),
            |_| |()| json_output(&Empty {}),
        )
    })
}
