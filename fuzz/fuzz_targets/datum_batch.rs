//! The bulk datum path (`tinkex_datum_batch_*`) with fuzzed operations (typed pushes, loss
//! inputs, JSON datums), lengths, dtypes, shapes and names, within the documented caller contract: every non-NULL buffer really
//! holds `len` elements of the largest element size (8 bytes); NULL is passed with any
//! `len` (the contract makes that `NULL_ARG`). The batch is then turned into the protobuf
//! request the client would send, and chunked.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tinkex::ffi::datum::*;
use tinkex::ffi::error::tinkex_error_free;
use tinkex::ffi::status::tinkex_status;

/// Most elements a buffer holds (keeps each run's memory small; lengths beyond it are
/// fuzzed with NULL buffers).
const MAX_ELEMS: usize = 4096;

fn len(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.arbitrary::<usize>()?, // any value, NULL buffer
        1 => usize::MAX - u.int_in_range(0..=16)?,
        2 => isize::MAX as usize + u.int_in_range(0..=16usize)?,
        _ => u.int_in_range(0..=64)?,
    })
}

/// A real buffer of `len` 8-byte elements from the input, or NULL when too long.
fn buffer(u: &mut Unstructured<'_>, len: usize) -> Result<Option<Vec<u8>>> {
    if len > MAX_ELEMS || u.ratio(1u8, 16)? {
        return Ok(None);
    }
    let mut b = vec![0u8; len * 8];
    u.fill_buffer(&mut b)?;
    Ok(Some(b))
}

/// Frees the batch however `run` ends (the input may run out mid-sequence).
struct Batch(*mut tinkex_datum_batch);

impl Drop for Batch {
    fn drop(&mut self) {
        tinkex_datum_batch_free(self.0);
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut batch = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_datum_batch_new(&mut batch, &mut err),
        tinkex_status::Ok
    );
    let guard = Batch(batch);
    let mut expect_len = 0usize;
    for _ in 0..u.int_in_range(0..=12)? {
        let mut err = std::ptr::null_mut();
        let dtype: i32 = if u.ratio(1u8, 8)? {
            u.arbitrary()?
        } else {
            u.int_in_range(0..=5)?
        };
        let status = if u.ratio(1u8, 6)? {
            let json_len = u.int_in_range(0..=256)?;
            let json = u.bytes(json_len)?.to_vec();
            let s = tinkex_datum_batch_push_json(batch, json.as_ptr(), json.len(), &mut err);
            if s == tinkex_status::Ok {
                expect_len += 1;
            }
            s
        } else if u.arbitrary::<bool>()? {
            let n = len(u)?;
            let buf = buffer(u, n)?;
            let ptr = buf.as_ref().map_or(std::ptr::null(), |b| b.as_ptr().cast());
            let s = tinkex_datum_batch_push(batch, ptr, n, dtype, &mut err);
            if s == tinkex_status::Ok {
                expect_len += 1;
            }
            s
        } else {
            let name_len = u.int_in_range(0..=24)?;
            let name = u.bytes(name_len)?.to_vec();
            let n = len(u)?;
            let buf = buffer(u, n)?;
            let ptr = buf.as_ref().map_or(std::ptr::null(), |b| b.as_ptr().cast());
            let ndim = if u.ratio(1u8, 16)? {
                len(u)?
            } else {
                u.int_in_range(0..=4)?
            };
            let shape: Option<Vec<i64>> = if u.ratio(1u8, 4)? || ndim > MAX_ELEMS {
                None
            } else {
                let mut dims = Vec::with_capacity(ndim);
                for _ in 0..ndim {
                    dims.push(if u.arbitrary()? {
                        u.arbitrary()?
                    } else {
                        u.int_in_range(0..=8)?
                    });
                }
                Some(dims)
            };
            let shape_ptr = shape.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
            tinkex_datum_batch_set_loss_input(
                batch,
                name.as_ptr(),
                name.len(),
                ptr,
                n,
                dtype,
                shape_ptr,
                ndim,
                &mut err,
            )
        };
        assert_ne!(status, tinkex_status::Panic);
        assert_eq!(status == tinkex_status::Ok, err.is_null());
        tinkex_error_free(err);
    }
    assert_eq!(tinkex_datum_batch_len(batch), expect_len);
    // SAFETY: `batch` is a live handle (freed by `guard` below).
    let data = unsafe { &*batch }.data();
    drop(guard);
    let _ = tinkex::core::chunking::chunk_ranges(&data, 64, 1 << 20);
    for d in &data {
        let _ = tinkex::core::codec::estimate_datum_bytes(d);
    }
    if let Ok(req) = tinkex::core::codec::forward_backward_request(
        "model",
        1,
        &data,
        0,
        "cross_entropy",
        &BTreeMap::new(),
        false,
    ) {
        let _ = prost::Message::encode_to_vec(&req);
    }
    let _ = serde_json::to_vec(&data);
    Ok(())
}

fuzz_target!(|bytes: &[u8]| {
    let mut u = Unstructured::new(bytes);
    let _ = run(&mut u);
});
