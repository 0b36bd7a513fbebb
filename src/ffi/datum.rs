//! `tinkex_datum_batch` (Arc-owned, thread-safe): the datums of a training call. Token ids
//! and loss inputs arrive as typed arrays (pointer, length, dtype, shape) and are copied once
//! into the client's `Datum`s, with no JSON text in between; a whole datum may also arrive
//! as JSON (`tinkex_datum_batch_push_json`), so a binding always builds a batch.
//!
//! Conversion rules are those of the JSON path, so both build the same request: integer
//! arrays become `int64` tensors, float arrays `float32` tensors (float64 values are
//! rounded to float32 exactly as JSON numbers are), and a missing shape means 1-D.

use super::error::{tinkex_error, Failure};
use super::status::tinkex_status;
use super::ArcHandle;
use super::{boundary, input_json, input_str, out_ptr, write_out};
use crate::core::types::{Datum, ModelInput, TensorData, TensorDtype, TensorValues};
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

/// Element types of typed-array inputs (native byte order; any alignment).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tinkex_dtype {
    /// `int64_t` elements; stored as int64.
    Int64 = 1,
    /// `float` elements; stored as float32.
    Float32 = 2,
    /// `int32_t` elements; widened to int64.
    Int32 = 3,
    /// `double` elements; rounded to float32.
    Float64 = 4,
}

impl TryFrom<i32> for tinkex_dtype {
    type Error = Failure;
    fn try_from(v: i32) -> Result<Self, Failure> {
        Ok(match v {
            1 => tinkex_dtype::Int64,
            2 => tinkex_dtype::Float32,
            3 => tinkex_dtype::Int32,
            4 => tinkex_dtype::Float64,
            other => return Err(Failure::invalid_arg(format!("unknown dtype {other}"))),
        })
    }
}

impl tinkex_dtype {
    fn size(self) -> usize {
        match self {
            tinkex_dtype::Int64 | tinkex_dtype::Float64 => 8,
            tinkex_dtype::Float32 | tinkex_dtype::Int32 => 4,
        }
    }
}

/// The most elements one array of the bulk path may hold (2^31 - 1: the wire carries token
/// ids and offsets as 32-bit values; larger arrays are a caller bug, not a batch).
pub(crate) const MAX_ARRAY_ELEMENTS: usize = i32::MAX as usize;

/// The most dimensions of a loss-input shape.
pub(crate) const MAX_NDIM: usize = 32;

/// Copies `len` elements of `dtype` from `data` (one pass, unaligned reads allowed).
///
/// `len` is checked against [`MAX_ARRAY_ELEMENTS`] and the output buffer is reserved
/// fallibly before anything is read, so a huge `len` is `INVALID_ARG`, never an abort.
///
/// # Safety
/// A non-NULL `data` must point to `len` readable elements of `dtype`.
pub(crate) unsafe fn copy_values(
    data: *const c_void,
    len: usize,
    dtype: tinkex_dtype,
    name: &str,
) -> Result<TensorValues, Failure> {
    if len > MAX_ARRAY_ELEMENTS {
        return Err(Failure::invalid_arg(format!(
            "{name}: length {len} is above the limit of {MAX_ARRAY_ELEMENTS} elements"
        )));
    }
    let bytes_len = len
        .checked_mul(dtype.size())
        .filter(|n| *n <= isize::MAX as usize)
        .ok_or_else(|| Failure::invalid_arg(format!("{name}: length {len} is too large")))?;
    // SAFETY: forwarded; `(NULL, 0)` is empty.
    let bytes = unsafe { super::input_bytes(data as *const u8, bytes_len, name) }?;
    fn read<const N: usize>(chunk: &[u8]) -> [u8; N] {
        chunk.try_into().expect("chunks_exact yields N bytes")
    }
    fn reserve<T>(len: usize, name: &str) -> Result<Vec<T>, Failure> {
        let mut v = Vec::new();
        v.try_reserve_exact(len)
            .map_err(|_| Failure::invalid_arg(format!("{name}: cannot allocate {len} elements")))?;
        Ok(v)
    }
    Ok(match dtype {
        tinkex_dtype::Int64 => {
            let mut v = reserve(len, name)?;
            v.extend(bytes.chunks_exact(8).map(|c| i64::from_ne_bytes(read(c))));
            TensorValues::Int64(v)
        }
        tinkex_dtype::Int32 => {
            let mut v = reserve(len, name)?;
            v.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| i64::from(i32::from_ne_bytes(read(c)))),
            );
            TensorValues::Int64(v)
        }
        tinkex_dtype::Float32 => {
            let mut v = reserve(len, name)?;
            v.extend(bytes.chunks_exact(4).map(|c| f32::from_ne_bytes(read(c))));
            TensorValues::Float32(v)
        }
        tinkex_dtype::Float64 => {
            let mut v = reserve(len, name)?;
            v.extend(
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_ne_bytes(read(c)) as f32),
            );
            TensorValues::Float32(v)
        }
    })
}

/// A batch of datums for `tinkex_training_client_forward_backward_batch` / `_forward_batch`
/// and the custom-loss calls, built from typed arrays or JSON datums.
///
/// Arc-owned (`tinkex_datum_batch_clone` / `_free`); any thread may use it concurrently
/// (each call locks it). Submit calls borrow it: they copy its datums, so the host may
/// reuse, extend or free it afterwards.
pub struct tinkex_datum_batch {
    data: Mutex<Vec<Datum>>,
}

impl tinkex_datum_batch {
    /// An empty batch.
    pub(crate) fn new() -> Self {
        tinkex_datum_batch {
            data: Mutex::new(Vec::new()),
        }
    }

    /// Locks the datums (a panic while locked cannot leave a half-pushed datum: every
    /// push builds its datum first, so a poisoned lock is taken over).
    fn lock(&self) -> MutexGuard<'_, Vec<Datum>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the datums built so far.
    pub fn data(&self) -> Vec<Datum> {
        self.lock().clone()
    }

    /// The number of datums.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no datum was pushed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Creates an empty batch.
///
/// Blocks: never. Callback-safe. Caller owns `*out`; release with `tinkex_datum_batch_free`.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_new(
    out: *mut *mut tinkex_datum_batch,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        out_ptr(out, "out")?;
        let batch = Arc::new(tinkex_datum_batch::new());
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, ArcHandle::into_ptr(batch)) };
        Ok(tinkex_status::Ok)
    })
}

/// A new reference to the same batch; NULL when `batch` is NULL.
///
/// Blocks: never. Callback-safe. Caller owns the result; release with
/// `tinkex_datum_batch_free`.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_clone(
    batch: *const tinkex_datum_batch,
) -> *mut tinkex_datum_batch {
    // SAFETY: a non-NULL `batch` is a live handle (caller contract).
    unsafe { super::clone_export(batch) }
}

/// Appends one datum given as JSON: `{"model_input": {"chunks": [...]}, "loss_fn_inputs":
/// {"target_tokens": {"data": [...], "dtype": "int64", "shape": [n]}, ...}}` (any chunk
/// types; the JSON rules of `tinkex_training_client_forward_backward`'s datums). Later
/// `tinkex_datum_batch_set_loss_input` calls apply to this datum.
///
/// Errors: `NULL_ARG`, `INVALID_UTF8`, `INVALID_JSON` (naming the field). The JSON is
/// borrowed for the call only. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_push_json(
    batch: *const tinkex_datum_batch,
    json: *const u8,
    json_len: usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `batch` is a live handle (caller contract).
        let batch = unsafe { ArcHandle::from_ptr(batch, "batch") }?;
        // SAFETY: `(json, json_len)` is a readable input (caller contract).
        let datum: Datum = unsafe { input_json(json, json_len, "json") }?;
        batch.lock().push(datum);
        Ok(tinkex_status::Ok)
    })
}

/// Starts a new datum whose model input is one `encoded_text` chunk of `len` token ids
/// (`dtype` `TINKEX_DTYPE_INT64` or `TINKEX_DTYPE_INT32`; `(NULL, 0)` is an empty input).
/// Later `tinkex_datum_batch_set_loss_input` calls apply to this datum.
///
/// Errors: `NULL_ARG` (`batch`, or `tokens` NULL with `len > 0`), `INVALID_ARG` (unknown or
/// float dtype, overflowing length). The arrays are copied; they are borrowed for the call
/// only. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_push(
    batch: *const tinkex_datum_batch,
    tokens: *const c_void,
    len: usize,
    dtype: i32,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `batch` is a live handle (caller contract).
        let batch = unsafe { ArcHandle::from_ptr(batch, "batch") }?;
        let dtype = tinkex_dtype::try_from(dtype)?;
        if !matches!(dtype, tinkex_dtype::Int64 | tinkex_dtype::Int32) {
            return Err(Failure::invalid_arg(
                "tokens must be TINKEX_DTYPE_INT64 or TINKEX_DTYPE_INT32",
            ));
        }
        // SAFETY: `(tokens, len)` is a readable array of `dtype` (caller contract).
        let tokens = match unsafe { copy_values(tokens, len, dtype, "tokens") }? {
            TensorValues::Int64(v) => v,
            TensorValues::Float32(_) => {
                return Err(Failure::invalid_arg(
                    "tokens must be TINKEX_DTYPE_INT64 or TINKEX_DTYPE_INT32",
                ))
            }
        };
        batch.lock().push(Datum {
            model_input: ModelInput::from_ints(tokens),
            ..Default::default()
        });
        Ok(tinkex_status::Ok)
    })
}

/// Sets a named loss input (`target_tokens`, `weights`, `advantages`, `logprobs`, ...) of
/// the datum last pushed: `len` elements of `dtype` at `data`, with an optional row-major
/// `shape` of `ndim` dimensions (`shape` NULL means 1-D `[len]`; otherwise the product must
/// equal `len`). Setting a name twice replaces it.
///
/// Errors: `NULL_ARG`, `INVALID_UTF8` (name), `INVALID_ARG` (unknown dtype, bad shape, empty
/// name), `WRONG_STATE` (no datum pushed yet). The arrays are copied; they are borrowed for
/// the call only. Blocks: never. Callback-safe.
#[must_use]
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_set_loss_input(
    batch: *const tinkex_datum_batch,
    name: *const u8,
    name_len: usize,
    data: *const c_void,
    len: usize,
    dtype: i32,
    shape: *const i64,
    ndim: usize,
    out_err: *mut *mut tinkex_error,
) -> tinkex_status {
    boundary!(status out_err, {
        // SAFETY: a non-NULL `batch` is a live handle (caller contract).
        let batch = unsafe { ArcHandle::from_ptr(batch, "batch") }?;
        // SAFETY: `(name, name_len)` is a readable input (caller contract).
        let name = unsafe { input_str(name, name_len, "name") }?;
        if name.is_empty() {
            return Err(Failure::invalid_arg("name is empty"));
        }
        let dtype = tinkex_dtype::try_from(dtype)?;
        let shape = if shape.is_null() {
            if ndim > 0 {
                return Err(Failure::null_arg("shape"));
            }
            None
        } else {
            if ndim > MAX_NDIM {
                return Err(Failure::invalid_arg(format!(
                    "shape has {ndim} dimensions; at most {MAX_NDIM} are allowed"
                )));
            }
            // SAFETY: `(shape, ndim)` is a readable array of int64 (caller contract).
            let dims = unsafe { copy_values(shape as *const c_void, ndim, tinkex_dtype::Int64, "shape") }?;
            let TensorValues::Int64(dims) = dims else {
                unreachable!("int64 copy")
            };
            if dims.iter().any(|d| *d < 0) {
                return Err(Failure::invalid_arg(format!("shape {dims:?} has a negative dimension")));
            }
            let product = dims
                .iter()
                .try_fold(1i64, |acc, d| acc.checked_mul(*d))
                .ok_or_else(|| Failure::invalid_arg("shape product overflows"))?;
            if product as u128 != len as u128 {
                return Err(Failure::invalid_arg(format!(
                    "shape {dims:?} holds {product} elements but len is {len}"
                )));
            }
            Some(dims)
        };
        // SAFETY: `(data, len)` is a readable array of `dtype` (caller contract).
        let values = unsafe { copy_values(data, len, dtype, "data") }?;
        let mut datums = batch.lock();
        let datum = datums.last_mut().ok_or_else(|| {
            Failure::wrong_state("call tinkex_datum_batch_push before setting loss inputs")
        })?;
        let dtype = match values {
            TensorValues::Int64(_) => TensorDtype::Int64,
            TensorValues::Float32(_) => TensorDtype::Float32,
        };
        let shape = shape.or_else(|| Some(vec![values.len() as i64]));
        datum.loss_fn_inputs.insert(
            name.to_string(),
            TensorData {
                data: values,
                dtype,
                shape,
                sparse_crow_indices: None,
                sparse_col_indices: None,
            },
        );
        Ok(tinkex_status::Ok)
    })
}

/// The number of datums pushed; 0 when `batch` is NULL.
///
/// Blocks: never. Callback-safe.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_len(batch: *const tinkex_datum_batch) -> usize {
    boundary!(value 0, {
        // SAFETY: a non-NULL `batch` is a live handle (caller contract).
        match unsafe { ArcHandle::from_ptr(batch, "batch") } {
            Ok(b) => b.len(),
            Err(_) => 0,
        }
    })
}

/// Drops one reference. NULL does nothing. Submit calls copy what they need, so a batch
/// may be freed right after a submit.
///
/// Consumes: `batch`. Blocks: never. Callback-safe; any thread.
#[unsafe(no_mangle)]
pub extern "C" fn tinkex_datum_batch_free(batch: *mut tinkex_datum_batch) {
    // SAFETY: a non-NULL `batch` came from this library; the host gives up this reference.
    unsafe { super::free_export(batch) }
}
