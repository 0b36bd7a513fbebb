//! `tinkex_custom_loss` (Arc-owned): the two phases of `forward_backward_custom`, ordered and
//! poisoned by the core ([`crate::core::training::custom_loss`]); the host only computes its
//! loss and gradients between them.

use super::datum::tinkex_datum_batch;
use super::error::{tinkex_error, Failure};
use super::future::{submit, tinkex_future, ClientHandle, Output};
use super::status::tinkex_status;
use super::training::tinkex_training_client;
use super::{boundary, input_json, input_str, out_ptr, tinkex_done_fn, write_out, ArcHandle};
use crate::core::training::{CustomLossOutput, CustomLossPass};
use crate::core::types::{Datum, TensorData};
use std::any::Any;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// One custom-loss pass between its forward and its backward.
///
/// Arc-owned; release it with `tinkex_custom_loss_free` (which aborts a pass that neither
/// sent its backward nor aborted). Holds its training client. Any thread may use it.
pub struct tinkex_custom_loss {
    client: Arc<tinkex_training_client>,
    pass: CustomLossPass,
    /// `tinkex_custom_loss_set_metrics`: the custom loss's sum and extra metrics.
    metrics: Mutex<(Option<f64>, BTreeMap<String, f64>)>,
}

/// Starts `forward_backward_custom` over `batch` (borrowed; its datums are copied): reserves
/// the client's next turn for both phases, so later submissions of the client queue behind
/// the backward, and sends a `cross_entropy` forward over each datum's `target_tokens` (and
/// `weights`, zeros when absent; the other loss inputs stay with the host's loss).
///
/// `*out_future` completes with the forward's `ForwardBackwardOutput` JSON: its
/// `loss_fn_outputs[i].logprobs` feed the host's loss. Then call
/// `tinkex_custom_loss_backward` with the gradients, or `tinkex_custom_loss_abort`.
/// A failed forward poisons the client: its later training requests fail with
/// `TINKEX_STATUS_USER` naming the cause (as the official SDK does).
///
/// Errors: `NULL_ARG`, `USER` (empty batch, a datum without `target_tokens`, a poisoned
/// client), `SHUT_DOWN`. On a non-OK status nothing was reserved or submitted and
/// `on_forward` never fires. Submit call. Blocks: never. Callback-safe. Caller owns
/// `*out_pass` (release with `tinkex_custom_loss_free`) and `*out_future` (release with
/// `tinkex_future_free`).
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_training_client_forward_backward_custom(
    client: *const tinkex_training_client,
    batch: *const tinkex_datum_batch,
    on_forward: tinkex_done_fn,
    user_data: *mut c_void,
    out_pass: *mut *mut tinkex_custom_loss,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: non-NULL `client` and `batch` are live handles (caller contract).
        let client = unsafe { ArcHandle::clone_from_ptr(client, "client") }?;
        // SAFETY: as above.
        let batch = unsafe { ArcHandle::from_ptr(batch, "batch") }?;
        out_ptr(out_pass, "out_pass")?;
        out_ptr(out_future, "out_future")?;
        let data: Vec<Datum> = batch.data();
        let mut pass = None;
        let owner: Arc<dyn Any + Send + Sync> = client.clone();
        let fut = submit(
            client.runtime(),
            owner,
            on_forward,
            user_data,
            || {
                let (p, fut) = client.client().forward_backward_custom_start(data)?;
                pass = Some(p);
                Ok(fut)
            },
            |out| Ok(Output::Forward(Box::new(out))),
        )?;
        let pass = pass.ok_or_else(|| Failure::internal("the pass was not started"))?;
        let handle = Arc::new(tinkex_custom_loss {
            client,
            pass,
            metrics: Mutex::new((None, BTreeMap::new())),
        });
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(out_pass, ArcHandle::into_ptr(handle));
            write_out(out_future, fut);
        }
        Ok(tinkex_status::Ok)
    })
}

/// Sets what the backward's result reports: `json` is an object of metrics, e.g.
/// `{"loss:sum": 1.25, "custom_metric": 0.5}`. `loss:sum` (when present) is the custom
/// loss's sum: it replaces the server's `loss:sum`, which moves to `surrogate_loss:sum`; the
/// other entries are merged into the metrics (as the official SDK does). Call it before
/// `tinkex_custom_loss_backward`; a later call replaces the earlier one.
///
/// Errors: `NULL_ARG`, `INVALID_UTF8`, `INVALID_JSON` (not an object of numbers).
/// Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_custom_loss_set_metrics(
    pass: *const tinkex_custom_loss,
    json: *const u8,
    json_len: usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `pass` is a live handle (caller contract).
        let pass = unsafe { ArcHandle::from_ptr(pass, "pass") }?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let mut metrics: crate::core::requests::CustomLossMetricsInput = unsafe { input_json(json, json_len, "json") }?;
        let loss_sum = metrics.remove("loss:sum");
        *pass.metrics.lock().unwrap_or_else(|e| e.into_inner()) = (loss_sum, metrics);
        Ok(tinkex_status::Ok)
    })
}

/// Sends the backward in the reserved turn, then releases the turn. `grads_batch` (borrowed)
/// holds one datum per forward datum, in order, whose loss input `grads` is `dLoss/dlogprobs`
/// for that datum (the shape of its `logprobs`; float32 or float64); its tokens are not read
/// (push an empty token array, or `{"model_input": {"chunks": []}, "loss_fn_inputs":
/// {"grads": {...}}}` as JSON). The core sends `weights = -grads` with the forward's tokens
/// and `target_tokens`, in the forward's chunk boundaries.
///
/// `*out_future` completes with the backward's `ForwardBackwardOutput` JSON (metrics as
/// set by `tinkex_custom_loss_set_metrics`). A failed backward poisons the client.
///
/// Errors: `NULL_ARG`, `USER` (gradients missing or not matching the datums: the client is
/// poisoned; the backward was already sent, or the pass was aborted), `SHUT_DOWN`. On a
/// non-OK status `on_done` never fires. Submit call. Blocks: never. Callback-safe. Caller
/// owns `*out_future`; release with `tinkex_future_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_custom_loss_backward(
    pass: *const tinkex_custom_loss,
    grads_batch: *const tinkex_datum_batch,
    on_done: tinkex_done_fn,
    user_data: *mut c_void,
    out_future: *mut *mut tinkex_future,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: non-NULL `pass` and `grads_batch` are live handles (caller contract).
        let pass = unsafe { ArcHandle::clone_from_ptr(pass, "pass") }?;
        // SAFETY: as above.
        let grads_batch = unsafe { ArcHandle::from_ptr(grads_batch, "grads_batch") }?;
        out_ptr(out_future, "out_future")?;
        let grads = grads_batch
            .data()
            .into_iter()
            .enumerate()
            .map(|(i, mut d)| {
                d.loss_fn_inputs.remove("grads").ok_or_else(|| {
                    Failure::invalid_arg(format!("grads_batch datum {i} has no `grads` input"))
                })
            })
            .collect::<Result<Vec<TensorData>, Failure>>();
        let grads = match grads {
            Ok(g) => g,
            Err(f) => {
                pass.pass.abort(&f.message);
                return Err(f);
            }
        };
        let (loss_sum, metrics) = pass
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let rt = pass.client.runtime().clone();
        let owner: Arc<dyn Any + Send + Sync> = pass.clone();
        let fut = submit(
            &rt,
            owner,
            on_done,
            user_data,
            || {
                Ok(pass.pass.backward(CustomLossOutput {
                    grads,
                    loss_sum,
                    metrics,
                }))
            },
            |out| Ok(Output::Forward(Box::new(out))),
        )?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_future, fut) };
        Ok(tinkex_status::Ok)
    })
}

/// The loss failed or was cancelled: releases the reserved turn and poisons the training
/// client (its queued and later training requests fail with `TINKEX_STATUS_USER` naming
/// `reason`, as the official SDK does). Idempotent; after a backward it does nothing.
///
/// Errors: `NULL_ARG`, `INVALID_UTF8`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_custom_loss_abort(
    pass: *const tinkex_custom_loss,
    reason: *const u8,
    reason_len: usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `pass` is a live handle (caller contract).
        let pass = unsafe { ArcHandle::from_ptr(pass, "pass") }?;
        // SAFETY: `(reason, reason_len)` is a readable input (caller contract).
        let reason = unsafe { input_str(reason, reason_len, "reason") }?;
        pass.pass.abort(if reason.is_empty() { "no reason given" } else { reason });
        Ok(tinkex_status::Ok)
    })
}

/// Drops the host's reference. NULL does nothing. Freeing a pass that neither sent its
/// backward nor aborted aborts it (the client is poisoned). A pending backward is not
/// cancelled.
///
/// Consumes: `pass`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_custom_loss_free(pass: *mut tinkex_custom_loss) {
    // SAFETY: a non-NULL `pass` came from this library; the host gives up this reference.
    unsafe { super::free_export(pass) }
}
