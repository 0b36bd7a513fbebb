//! Typed results of the hot operations (Box-owned): `tinkex_sample_result` (sample),
//! `tinkex_logprobs_result` (compute_logprobs) and `tinkex_forward_result` (forward,
//! forward_backward, custom loss), plus the borrowed `tinkex_tensor` views inside them.
//!
//! A finished future keeps the core value as it is; a typed take moves it into a result
//! handle without producing JSON, and the accessors return pointers into memory owned by
//! the handle (valid until its `_free`). `tinkex_future_take_result` still works on the same
//! futures and serializes the value to JSON at that point; each result handle can also
//! give its JSON (`_to_json`), for the fields that have no typed accessor (top-k lists).
//!
//! Conventions of every accessor here: an index out of range is `TINKEX_STATUS_INVALID_ARG`
//! (nothing written); an absent optional field gives `TINKEX_STATUS_OK` with a NULL data
//! pointer and length 0, while a present empty array gives a non-NULL pointer and length 0.
//! `null` entries of float arrays (prompt logprobs, compute_logprobs) are NaN, which is
//! what the JSON path writes for a NaN (`null`). Borrowed strings are UTF-8 and not
//! NUL-terminated.

use super::bytes::tinkex_bytes;
use super::error::{tinkex_error, Failure};
use super::future::{tinkex_future, to_json, Output};
use super::status::tinkex_status;
use super::{boundary, input_str, out_ptr, write_out};
use super::{tensor_from_ptr, ArcHandle, BoxHandle};
use crate::core::types::{
    ForwardBackwardOutput, SampleResponse, SampledSequence, StopReason, TensorData, TensorValues,
};
use std::ffi::c_void;

/// Why a sampled sequence stopped (`tinkex_sample_result_stop_reason`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tinkex_stop_reason {
    /// Hit `max_tokens` (`"length"`).
    Length = 1,
    /// A stop sequence, stop token or EOS (`"stop"`).
    Stop = 2,
}

impl From<StopReason> for tinkex_stop_reason {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::Length => tinkex_stop_reason::Length,
            StopReason::Stop => tinkex_stop_reason::Stop,
        }
    }
}

/// A tensor inside a result (a loss output, target prompt logprobs, prompt alternatives).
///
/// Borrowed: never freed by the host; valid until the result that lent it is freed.
/// Immutable, so any thread may read it.
///
/// Opaque and never constructed: a `tinkex_tensor *` is the address of a `TensorData`
/// owned by a result handle (see `super::lend_tensor`).
pub struct tinkex_tensor {
    _opaque: [u8; 0],
}

impl tinkex_tensor {
    /// The view of a tensor owned by a result.
    fn lend(t: &TensorData) -> *const tinkex_tensor {
        super::lend_tensor(t)
    }
}

/// Writes a borrowed slice as `(pointer, length)`; `None` writes `(NULL, 0)`.
///
/// # Safety
/// Both pointers must be non-NULL and writable.
unsafe fn write_slice<T>(value: Option<&[T]>, out_data: *mut *const T, out_len: *mut usize) {
    let (p, n) = match value {
        Some(v) => (v.as_ptr(), v.len()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: guaranteed by the caller.
    unsafe {
        write_out(out_data, p);
        write_out(out_len, n);
    }
}

/// `index` checked against `len` (`INVALID_ARG` naming `what`).
fn check_index(index: usize, len: usize, what: &str) -> Result<usize, Failure> {
    if index >= len {
        return Err(Failure::invalid_arg(format!(
            "{what} index {index} is out of range (the result has {len})"
        )));
    }
    Ok(index)
}

/// `Option<f32>` values as floats, NaN for `None` (one pass; the JSON path writes both as
/// `null`).
fn nan_for_none(values: &[Option<f32>]) -> Vec<f32> {
    values.iter().map(|v| v.unwrap_or(f32::NAN)).collect()
}

/// Writes a result's JSON to `out_bytes`.
///
/// # Safety
/// `out_bytes` must be NULL or writable.
unsafe fn json_out<T: serde::Serialize + ?Sized>(
    value: &T,
    out_bytes: *mut *mut tinkex_bytes,
) -> Result<tinkex_status, Failure> {
    out_ptr(out_bytes, "out_bytes")?;
    let json = to_json(value)?;
    // SAFETY: checked non-NULL above.
    unsafe { write_out(out_bytes, BoxHandle::into_ptr(tinkex_bytes::new(json))) };
    Ok(tinkex_status::Ok)
}

// ---------------------------------------------------------------------------------------
// tinkex_sample_result
// ---------------------------------------------------------------------------------------

/// The result of a sample operation, typed: sequences (tokens, logprobs, stop reason, id)
/// and prompt logprobs, read through accessors without JSON.
///
/// Box-owned: release with `tinkex_sample_result_free`. It owns all its data (no reference
/// to the future, client or runtime), so it may be freed before or after them. Immutable:
/// any thread may read it concurrently.
pub struct tinkex_sample_result {
    value: SampleResponse,
    /// `prompt_logprobs` with NaN for `null` (built at take time, when present).
    prompt_logprobs: Option<Vec<f32>>,
}

impl tinkex_sample_result {
    fn new(value: SampleResponse) -> Self {
        let prompt_logprobs = value.prompt_logprobs.as_deref().map(nan_for_none);
        tinkex_sample_result {
            value,
            prompt_logprobs,
        }
    }

    fn sequence(&self, index: usize) -> Result<&SampledSequence, Failure> {
        let n = self.value.sequences.len();
        Ok(&self.value.sequences[check_index(index, n, "sequence")?])
    }
}

/// Takes the result of a finished `tinkex_sampling_client_sample` future as a typed result
/// handle (no JSON is produced). Statuses as `tinkex_future_take_result`: `PENDING` while
/// it runs, then once `OK` or the operation's failure, then `ALREADY_TAKEN` (whichever take
/// function took it first); a future of another operation gives `TINKEX_STATUS_WRONG_TYPE`
/// (nothing is taken).
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with
/// `tinkex_sample_result_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_take_sample_result(
    fut: *const tinkex_future,
    out: *mut *mut tinkex_sample_result,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `fut` is a live future handle (caller contract).
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out, "out")?;
        match fut.take(|o| matches!(o, Output::Sample(_)))? {
            None => Ok(tinkex_status::Pending),
            Some(Output::Sample(v)) => {
                let r = tinkex_sample_result::new(*v);
                // SAFETY: checked non-NULL above.
                unsafe { write_out(out, BoxHandle::into_ptr(r)) };
                Ok(tinkex_status::Ok)
            }
            Some(_) => Err(Failure::internal("take accepted another type")),
        }
    })
}

/// The number of sequences; 0 when `result` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_num_sequences(result: *const tinkex_sample_result) -> usize {
    boundary!(value 0, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.value.sequences.len(),
            Err(_) => 0,
        }
    })
}

/// The generated token ids of sequence `index`: `*out_data` points to `*out_len` int64
/// values. `INVALID_ARG` when `index` is out of range.
///
/// Borrowed; valid until `tinkex_sample_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_tokens(
    result: *const tinkex_sample_result,
    index: usize,
    out_data: *mut *const i64,
    out_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_data, "out_data")?;
        out_ptr(out_len, "out_len")?;
        let s = r.sequence(index)?;
        // SAFETY: both checked non-NULL above.
        unsafe { write_slice(Some(s.tokens.as_slice()), out_data, out_len) };
        Ok(tinkex_status::Ok)
    })
}

/// The per-token logprobs of sequence `index` (float32, one per token), or `(NULL, 0)`
/// when the server sent none. `INVALID_ARG` when `index` is out of range.
///
/// Borrowed; valid until `tinkex_sample_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_logprobs(
    result: *const tinkex_sample_result,
    index: usize,
    out_data: *mut *const f32,
    out_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_data, "out_data")?;
        out_ptr(out_len, "out_len")?;
        let s = r.sequence(index)?;
        // SAFETY: both checked non-NULL above.
        unsafe { write_slice(s.logprobs.as_deref(), out_data, out_len) };
        Ok(tinkex_status::Ok)
    })
}

/// Why sequence `index` stopped: a `tinkex_stop_reason` value in `*out`. `INVALID_ARG`
/// when `index` is out of range.
///
/// Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_stop_reason(
    result: *const tinkex_sample_result,
    index: usize,
    out: *mut i32,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out, "out")?;
        let s = r.sequence(index)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, tinkex_stop_reason::from(s.stop_reason) as i32) };
        Ok(tinkex_status::Ok)
    })
}

/// The session-scoped id of sequence `index` (UTF-8, not NUL-terminated), or `(NULL, 0)`
/// when the server gave none. `INVALID_ARG` when `index` is out of range.
///
/// Borrowed; valid until `tinkex_sample_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_sequence_id(
    result: *const tinkex_sample_result,
    index: usize,
    out_data: *mut *const u8,
    out_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_data, "out_data")?;
        out_ptr(out_len, "out_len")?;
        let s = r.sequence(index)?;
        // SAFETY: both checked non-NULL above.
        unsafe { write_slice(s.sequence_id.as_deref().map(str::as_bytes), out_data, out_len) };
        Ok(tinkex_status::Ok)
    })
}

/// Whether sequence `index` carries top-k logprob lists (read them from
/// `tinkex_sample_result_to_json`); false when `result` is NULL or `index` is out of range.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_has_topk(
    result: *const tinkex_sample_result,
    index: usize,
) -> bool {
    boundary!(value false, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r
                .value
                .sequences
                .get(index)
                .is_some_and(|s| s.topk_logprobs.is_some()),
            Err(_) => false,
        }
    })
}

/// The prompt's logprobs (float32, one per prompt token, NaN where the JSON has `null`:
/// position 0 and positions not scored), or `(NULL, 0)` when the request did not ask for
/// them.
///
/// Borrowed; valid until `tinkex_sample_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_prompt_logprobs(
    result: *const tinkex_sample_result,
    out_data: *mut *const f32,
    out_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_data, "out_data")?;
        out_ptr(out_len, "out_len")?;
        // SAFETY: both checked non-NULL above.
        unsafe { write_slice(r.prompt_logprobs.as_deref(), out_data, out_len) };
        Ok(tinkex_status::Ok)
    })
}

/// Whether the result carries top-k prompt logprob lists (read them from
/// `tinkex_sample_result_to_json`); false when `result` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_has_topk_prompt_logprobs(
    result: *const tinkex_sample_result,
) -> bool {
    boundary!(value false, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.value.topk_prompt_logprobs.is_some(),
            Err(_) => false,
        }
    })
}

/// Prompt tokens billed as cache hits; 0 when `result` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_prompt_cache_hit_tokens(
    result: *const tinkex_sample_result,
) -> i64 {
    boundary!(value 0, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.value.prompt_cache_hit_tokens,
            Err(_) => 0,
        }
    })
}

/// The logprobs of the request's `target_prompt_logprobs` ids (a float32 tensor of the
/// request's shape and layout), or NULL in `*out` when the request had none.
///
/// Borrowed; valid until `tinkex_sample_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_target_prompt_logprobs(
    result: *const tinkex_sample_result,
    out: *mut *const tinkex_tensor,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out, "out")?;
        let t = r
            .value
            .target_prompt_logprobs
            .as_ref()
            .map_or(std::ptr::null(), tinkex_tensor::lend);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, t) };
        Ok(tinkex_status::Ok)
    })
}

/// The draws of the request's `prompt_alt_tokens_k`: int64 token ids and float32 logprobs,
/// both `[len(prompt) - 1, k]`, or NULL in both when the request had none.
///
/// Borrowed; valid until `tinkex_sample_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_prompt_alt_tokens(
    result: *const tinkex_sample_result,
    out_tokens: *mut *const tinkex_tensor,
    out_logprobs: *mut *const tinkex_tensor,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_tokens, "out_tokens")?;
        out_ptr(out_logprobs, "out_logprobs")?;
        let (t, l) = match &r.value.prompt_alt_tokens {
            Some(a) => (
                tinkex_tensor::lend(&a.tokens),
                tinkex_tensor::lend(&a.logprobs),
            ),
            None => (std::ptr::null(), std::ptr::null()),
        };
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(out_tokens, t);
            write_out(out_logprobs, l);
        }
        Ok(tinkex_status::Ok)
    })
}

/// The whole result as `SampleResponse` JSON (what `tinkex_future_take_result` gives),
/// including the top-k lists that have no typed accessor.
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_to_json(
    result: *const tinkex_sample_result,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        // SAFETY: `out_bytes` is NULL or writable (caller contract).
        unsafe { json_out(&r.value, out_bytes) }
    })
}

/// Releases a sample result (and every pointer borrowed from it). NULL does nothing.
///
/// Consumes: `result`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_sample_result_free(result: *mut tinkex_sample_result) {
    // SAFETY: a non-NULL `result` came from this library; the host gives it up.
    unsafe { super::free_box_export(result) }
}

// ---------------------------------------------------------------------------------------
// tinkex_logprobs_result
// ---------------------------------------------------------------------------------------

/// The result of `compute_logprobs`: one float32 per prompt token, NaN where the JSON has
/// `null` (position 0, and positions before the last N when N was given).
///
/// Box-owned: release with `tinkex_logprobs_result_free`; owns its data (free it in any
/// order with the future, client and runtime). Immutable: any thread may read it.
pub struct tinkex_logprobs_result {
    values: Vec<f32>,
    /// The core value, for `_to_json` (NaN and `null` differ only there).
    raw: Vec<Option<f32>>,
}

/// Takes the result of a finished `tinkex_sampling_client_compute_logprobs` future as a
/// typed result (no JSON). Statuses as `tinkex_future_take_sample_result`.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with
/// `tinkex_logprobs_result_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_take_logprobs_result(
    fut: *const tinkex_future,
    out: *mut *mut tinkex_logprobs_result,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `fut` is a live future handle (caller contract).
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out, "out")?;
        match fut.take(|o| matches!(o, Output::Logprobs(_)))? {
            None => Ok(tinkex_status::Pending),
            Some(Output::Logprobs(raw)) => {
                let r = tinkex_logprobs_result {
                    values: nan_for_none(&raw),
                    raw,
                };
                // SAFETY: checked non-NULL above.
                unsafe { write_out(out, BoxHandle::into_ptr(r)) };
                Ok(tinkex_status::Ok)
            }
            Some(_) => Err(Failure::internal("take accepted another type")),
        }
    })
}

/// The first logprob (float32; `tinkex_logprobs_result_len` of them). NULL when `result`
/// is NULL.
///
/// Borrowed; valid until `tinkex_logprobs_result_free(result)`. Blocks: never.
/// Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_logprobs_result_data(result: *const tinkex_logprobs_result) -> *const f32 {
    boundary!(value std::ptr::null(), {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.values.as_ptr(),
            Err(_) => std::ptr::null(),
        }
    })
}

/// The number of logprobs (prompt tokens); 0 when `result` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_logprobs_result_len(result: *const tinkex_logprobs_result) -> usize {
    boundary!(value 0, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.values.len(),
            Err(_) => 0,
        }
    })
}

/// The result as JSON (what `tinkex_future_take_result` gives: an array with `null`s).
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_logprobs_result_to_json(
    result: *const tinkex_logprobs_result,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        // SAFETY: `out_bytes` is NULL or writable (caller contract).
        unsafe { json_out(&r.raw, out_bytes) }
    })
}

/// Releases a logprobs result. NULL does nothing.
///
/// Consumes: `result`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_logprobs_result_free(result: *mut tinkex_logprobs_result) {
    // SAFETY: a non-NULL `result` came from this library; the host gives it up.
    unsafe { super::free_box_export(result) }
}

// ---------------------------------------------------------------------------------------
// tinkex_forward_result
// ---------------------------------------------------------------------------------------

/// The result of forward / forward_backward (also the custom-loss calls): per datum, named
/// loss outputs as typed tensors (`logprobs`, `elementwise_loss`, ...), and metrics.
///
/// Box-owned: release with `tinkex_forward_result_free`; owns its data (free it in any
/// order with the future, client and runtime). Immutable: any thread may read it.
pub struct tinkex_forward_result {
    value: ForwardBackwardOutput,
}

impl tinkex_forward_result {
    fn outputs(
        &self,
        datum: usize,
    ) -> Result<&std::collections::BTreeMap<String, TensorData>, Failure> {
        let n = self.value.loss_fn_outputs.len();
        Ok(&self.value.loss_fn_outputs[check_index(datum, n, "datum")?])
    }
}

/// Takes the result of a finished forward / forward_backward future (JSON or batch
/// submit, or a custom-loss future) as a typed result (no JSON). Statuses as
/// `tinkex_future_take_sample_result`.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with
/// `tinkex_forward_result_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_future_take_forward_result(
    fut: *const tinkex_future,
    out: *mut *mut tinkex_forward_result,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `fut` is a live future handle (caller contract).
        let fut = unsafe { ArcHandle::from_ptr(fut, "fut") }?;
        out_ptr(out, "out")?;
        match fut.take(|o| matches!(o, Output::Forward(_)))? {
            None => Ok(tinkex_status::Pending),
            Some(Output::Forward(v)) => {
                let r = tinkex_forward_result { value: *v };
                // SAFETY: checked non-NULL above.
                unsafe { write_out(out, BoxHandle::into_ptr(r)) };
                Ok(tinkex_status::Ok)
            }
            Some(_) => Err(Failure::internal("take accepted another type")),
        }
    })
}

/// The output record class name (e.g. `ArrayRecord`; UTF-8, not NUL-terminated).
///
/// Borrowed; valid until `tinkex_forward_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_output_type(
    result: *const tinkex_forward_result,
    out_data: *mut *const u8,
    out_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_data, "out_data")?;
        out_ptr(out_len, "out_len")?;
        let t = r.value.loss_fn_output_type.as_bytes();
        // SAFETY: both checked non-NULL above.
        unsafe { write_slice(Some(t), out_data, out_len) };
        Ok(tinkex_status::Ok)
    })
}

/// The number of per-datum output maps (one per datum of the request); 0 when `result` is
/// NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_num_datums(result: *const tinkex_forward_result) -> usize {
    boundary!(value 0, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.value.loss_fn_outputs.len(),
            Err(_) => 0,
        }
    })
}

/// The number of named outputs of datum `datum` in `*out`. `INVALID_ARG` when `datum` is
/// out of range.
///
/// Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_num_outputs(
    result: *const tinkex_forward_result,
    datum: usize,
    out: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out, "out")?;
        let n = r.outputs(datum)?.len();
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, n) };
        Ok(tinkex_status::Ok)
    })
}

/// Output `index` of datum `datum` (outputs are ordered by name): its name (UTF-8, not
/// NUL-terminated) and its tensor. `INVALID_ARG` when `datum` or `index` is out of range.
///
/// Borrowed; valid until `tinkex_forward_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_output_at(
    result: *const tinkex_forward_result,
    datum: usize,
    index: usize,
    out_name: *mut *const u8,
    out_name_len: *mut usize,
    out_tensor: *mut *const tinkex_tensor,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_name, "out_name")?;
        out_ptr(out_name_len, "out_name_len")?;
        out_ptr(out_tensor, "out_tensor")?;
        let outputs = r.outputs(datum)?;
        let index = check_index(index, outputs.len(), "output")?;
        let (name, tensor) = outputs.iter().nth(index).expect("index checked");
        // SAFETY: all checked non-NULL above.
        unsafe {
            write_slice(Some(name.as_bytes()), out_name, out_name_len);
            write_out(out_tensor, tinkex_tensor::lend(tensor));
        }
        Ok(tinkex_status::Ok)
    })
}

/// The output named `(name, name_len)` of datum `datum`, or NULL in `*out` when the datum
/// has no such output. `INVALID_ARG` when `datum` is out of range; `INVALID_UTF8` for a bad
/// name.
///
/// Borrowed; valid until `tinkex_forward_result_free(result)`. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_output(
    result: *const tinkex_forward_result,
    datum: usize,
    name: *const u8,
    name_len: usize,
    out: *mut *const tinkex_tensor,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        // SAFETY: `(name, name_len)` is a readable input (caller contract).
        let name = unsafe { input_str(name, name_len, "name") }?;
        out_ptr(out, "out")?;
        let t = r
            .outputs(datum)?
            .get(name)
            .map_or(std::ptr::null(), tinkex_tensor::lend);
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, t) };
        Ok(tinkex_status::Ok)
    })
}

/// The number of metrics; 0 when `result` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_num_metrics(result: *const tinkex_forward_result) -> usize {
    boundary!(value 0, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        match unsafe { BoxHandle::from_ptr(result, "result") } {
            Ok(r) => r.value.metrics.len(),
            Err(_) => 0,
        }
    })
}

/// Metric `index` (metrics are ordered by name): its name (`name:reduction`, e.g.
/// `loss:sum`; UTF-8, not NUL-terminated) and value. `INVALID_ARG` when `index` is out of
/// range.
///
/// Borrowed name; valid until `tinkex_forward_result_free(result)`. Blocks: never.
/// Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_metric_at(
    result: *const tinkex_forward_result,
    index: usize,
    out_name: *mut *const u8,
    out_name_len: *mut usize,
    out_value: *mut f64,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        out_ptr(out_name, "out_name")?;
        out_ptr(out_name_len, "out_name_len")?;
        out_ptr(out_value, "out_value")?;
        let index = check_index(index, r.value.metrics.len(), "metric")?;
        let (name, value) = r.value.metrics.iter().nth(index).expect("index checked");
        // SAFETY: all checked non-NULL above.
        unsafe {
            write_slice(Some(name.as_bytes()), out_name, out_name_len);
            write_out(out_value, *value);
        }
        Ok(tinkex_status::Ok)
    })
}

/// The whole result as `ForwardBackwardOutput` JSON (what `tinkex_future_take_result`
/// gives).
///
/// Blocks: never. Callback-safe. Caller owns `*out_bytes`; release with `tinkex_bytes_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_to_json(
    result: *const tinkex_forward_result,
    out_bytes: *mut *mut tinkex_bytes,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `result` is a live handle (caller contract).
        let r = unsafe { BoxHandle::from_ptr(result, "result") }?;
        // SAFETY: `out_bytes` is NULL or writable (caller contract).
        unsafe { json_out(&r.value, out_bytes) }
    })
}

/// Releases a forward result (and every tensor and name borrowed from it). NULL does
/// nothing.
///
/// Consumes: `result`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_forward_result_free(result: *mut tinkex_forward_result) {
    // SAFETY: a non-NULL `result` came from this library; the host gives it up.
    unsafe { super::free_box_export(result) }
}

// ---------------------------------------------------------------------------------------
// tinkex_tensor (borrowed)
// ---------------------------------------------------------------------------------------

/// The element type of a tensor: `TINKEX_DTYPE_INT64` (`int64_t` elements) or
/// `TINKEX_DTYPE_FLOAT32` (`float`); 0 when `tensor` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_tensor_dtype(tensor: *const tinkex_tensor) -> i32 {
    boundary!(value 0, {
        // SAFETY: a non-NULL `tensor` was lent by a live result (caller contract).
        match unsafe { tensor_from_ptr(tensor, "tensor") } {
            Ok(t) => match t.data {
                TensorValues::Int64(_) => super::datum::tinkex_dtype::Int64 as i32,
                TensorValues::Float32(_) => super::datum::tinkex_dtype::Float32 as i32,
            },
            Err(_) => 0,
        }
    })
}

/// The stored values, row-major: `*out_data` points to `*out_len` elements of the
/// tensor's dtype (`tinkex_tensor_dtype`); for a sparse tensor only the stored values.
///
/// Borrowed; valid until the result that lent `tensor` is freed. Blocks: never.
/// Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_tensor_data(
    tensor: *const tinkex_tensor,
    out_data: *mut *const c_void,
    out_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `tensor` was lent by a live result (caller contract).
        let t = unsafe { tensor_from_ptr(tensor, "tensor") }?;
        out_ptr(out_data, "out_data")?;
        out_ptr(out_len, "out_len")?;
        let (p, n) = match &t.data {
            TensorValues::Int64(v) => (v.as_ptr() as *const c_void, v.len()),
            TensorValues::Float32(v) => (v.as_ptr() as *const c_void, v.len()),
        };
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(out_data, p);
            write_out(out_len, n);
        }
        Ok(tinkex_status::Ok)
    })
}

/// The shape as the server sent it: `*out_ndim` dimensions at `*out_shape`, or `(NULL, 0)`
/// when it sent none (then the tensor is 1-D with `len` elements).
///
/// Borrowed; valid until the result that lent `tensor` is freed. Blocks: never.
/// Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_tensor_shape(
    tensor: *const tinkex_tensor,
    out_shape: *mut *const i64,
    out_ndim: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `tensor` was lent by a live result (caller contract).
        let t = unsafe { tensor_from_ptr(tensor, "tensor") }?;
        out_ptr(out_shape, "out_shape")?;
        out_ptr(out_ndim, "out_ndim")?;
        // SAFETY: both checked non-NULL above.
        unsafe { write_slice(t.shape.as_deref(), out_shape, out_ndim) };
        Ok(tinkex_status::Ok)
    })
}

/// The CSR indices of a sparse tensor: `nrows + 1` row pointers and `nnz` column indices
/// (int64), or `(NULL, 0)` in both pairs for a dense tensor.
///
/// Borrowed; valid until the result that lent `tensor` is freed. Blocks: never.
/// Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_tensor_sparse_indices(
    tensor: *const tinkex_tensor,
    out_crow: *mut *const i64,
    out_crow_len: *mut usize,
    out_col: *mut *const i64,
    out_col_len: *mut usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `tensor` was lent by a live result (caller contract).
        let t = unsafe { tensor_from_ptr(tensor, "tensor") }?;
        out_ptr(out_crow, "out_crow")?;
        out_ptr(out_crow_len, "out_crow_len")?;
        out_ptr(out_col, "out_col")?;
        out_ptr(out_col_len, "out_col_len")?;
        // SAFETY: all checked non-NULL above.
        unsafe {
            write_slice(t.sparse_crow_indices.as_deref(), out_crow, out_crow_len);
            write_slice(t.sparse_col_indices.as_deref(), out_col, out_col_len);
        }
        Ok(tinkex_status::Ok)
    })
}
