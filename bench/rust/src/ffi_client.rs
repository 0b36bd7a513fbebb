//! Sampling through the C ABI: the exported `extern "C"` functions of libtinkex, called
//! exactly as a C host calls them — completion on the library's dispatcher thread, the next
//! request submitted from the callback. `TINKEX_BENCH_FFI_PATH` picks the path:
//!
//! - `typed` (default): `tinkex_sampling_client_sample_tokens` (token ids as an `int64_t`
//!   array, parameters as a struct) and `tinkex_future_take_sample_result` with the typed
//!   accessors — no JSON either way;
//! - `typed_result`: the request as JSON bytes (`tinkex_sampling_client_sample`), the result
//!   typed;
//! - `json`: JSON both ways (`tinkex_future_take_result`), the only path before typed
//!   results existed.

use crate::util::mono;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use tinkex::ffi::bytes::{tinkex_bytes, tinkex_bytes_free, tinkex_bytes_len};
use tinkex::ffi::datum::tinkex_dtype;
use tinkex::ffi::error::{tinkex_error, tinkex_error_free, tinkex_error_message};
use tinkex::ffi::future::{
    tinkex_future, tinkex_future_free, tinkex_future_take_result,
    tinkex_future_take_sampling_client, tinkex_future_wait,
};
use tinkex::ffi::result::{
    tinkex_future_take_sample_result, tinkex_sample_result_free,
    tinkex_sample_result_num_sequences, tinkex_sample_result_tokens,
};
use tinkex::ffi::runtime::{tinkex_runtime, tinkex_runtime_new, tinkex_runtime_options_default};
use tinkex::ffi::sampling::{
    tinkex_sample_params, tinkex_sample_params_default, tinkex_sampling_client,
    tinkex_sampling_client_sample, tinkex_sampling_client_sample_tokens,
};
use tinkex::ffi::service::{
    tinkex_service_client, tinkex_service_client_create_sampling_client, tinkex_service_client_new,
};
use tinkex::ffi::status::tinkex_status;

fn check(what: &str, s: tinkex_status, err: *mut tinkex_error) {
    if s != tinkex_status::Ok {
        let msg = if err.is_null() {
            String::new()
        } else {
            // SAFETY: a live error's message is a NUL-terminated string.
            unsafe { std::ffi::CStr::from_ptr(tinkex_error_message(err)) }
                .to_string_lossy()
                .into_owned()
        };
        panic!("{what}: {s:?} {msg}");
    }
}

/// A C-ABI sampling client (runtime, service client, sampling client handles).
pub struct FfiSampler {
    _rt: *mut tinkex_runtime,
    _svc: *mut tinkex_service_client,
    sampler: *mut tinkex_sampling_client,
    body: Vec<u8>,
    /// The same request for the typed submit: prompt token ids and parameters.
    tokens: Vec<i64>,
    params: tinkex_sample_params,
}

// SAFETY: every libtinkex handle may be used from any thread (docs/c-api.md, Threads).
unsafe impl Send for FfiSampler {}
unsafe impl Sync for FfiSampler {}

impl FfiSampler {
    pub fn new(base_url: &str, telemetry: bool, base_model: &str, body: Vec<u8>) -> FfiSampler {
        let mut rt = std::ptr::null_mut();
        let mut svc = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let opts = tinkex_runtime_options_default();
        check(
            "runtime_new",
            tinkex_runtime_new(&opts, &mut rt, &mut err),
            err,
        );
        let cfg = serde_json::json!({
            "api_key": crate::raw::API_KEY, "base_url": base_url, "telemetry": telemetry,
        })
        .to_string();
        check(
            "service_client_new",
            tinkex_service_client_new(rt, cfg.as_ptr(), cfg.len(), &mut svc, &mut err),
            err,
        );
        let req = serde_json::json!({ "base_model": base_model }).to_string();
        let mut fut: *mut tinkex_future = std::ptr::null_mut();
        check(
            "create_sampling_client",
            tinkex_service_client_create_sampling_client(
                svc,
                req.as_ptr(),
                req.len(),
                None,
                std::ptr::null_mut(),
                &mut fut,
                &mut err,
            ),
            err,
        );
        check(
            "wait",
            tinkex_future_wait(fut, tinkex::ffi::TINKEX_WAIT_FOREVER, &mut err),
            err,
        );
        let mut sampler = std::ptr::null_mut();
        check(
            "take_sampling_client",
            tinkex_future_take_sampling_client(fut, &mut sampler, &mut err),
            err,
        );
        tinkex_future_free(fut);
        // The typed form of `body` (one encoded_text chunk, num_samples, max_tokens).
        let v: serde_json::Value = serde_json::from_slice(&body).expect("request JSON");
        let tokens = v["prompt"]["chunks"][0]["tokens"]
            .as_array()
            .expect("one token chunk")
            .iter()
            .map(|t| t.as_i64().expect("token id"))
            .collect();
        let mut params = tinkex_sample_params_default();
        params.num_samples = v["num_samples"].as_u64().unwrap_or(1) as u32;
        if let Some(m) = v["sampling_params"]["max_tokens"].as_i64() {
            params.max_tokens = m;
        }
        FfiSampler {
            _rt: rt,
            _svc: svc,
            sampler,
            body,
            tokens,
            params,
        }
    }
}

/// The state of one batch of operations, shared with the callback through a global (the
/// callback's `user_data` is the operation's index).
pub struct Batch {
    sampler: *mut tinkex_sampling_client,
    body: *const Vec<u8>,
    tokens: *const Vec<i64>,
    params: tinkex_sample_params,
    total: usize,
    /// Submit the next operation from each completion (closed loop) or not.
    chain: bool,
    next: AtomicUsize,
    done: AtomicUsize,
    errors: AtomicU64,
    starts: Vec<AtomicU64>,
    ends: Vec<AtomicU64>,
    finished: Mutex<bool>,
    cv: Condvar,
}

static BATCH: AtomicPtr<Batch> = AtomicPtr::new(std::ptr::null_mut());

/// The path of `TINKEX_BENCH_FFI_PATH`: (submit typed, take typed).
static PATH: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();

fn path() -> (bool, bool) {
    *PATH.get_or_init(|| match std::env::var("TINKEX_BENCH_FFI_PATH").as_deref() {
        Ok("json") => (false, false),
        Ok("typed_result") => (false, true),
        Ok("typed") | Err(_) => (true, true),
        Ok(other) => panic!("TINKEX_BENCH_FFI_PATH={other}: use typed, typed_result or json"),
    })
}

fn take_json() -> bool {
    !path().1
}

/// Takes a finished sample's result as a C host does; false on error.
fn take(fut: *const tinkex_future) -> bool {
    let mut err = std::ptr::null_mut();
    if take_json() {
        let mut bytes: *mut tinkex_bytes = std::ptr::null_mut();
        if tinkex_future_take_result(fut, &mut bytes, &mut err) != tinkex_status::Ok {
            tinkex_error_free(err);
            return false;
        }
        std::hint::black_box(tinkex_bytes_len(bytes));
        tinkex_bytes_free(bytes);
        return true;
    }
    let mut r = std::ptr::null_mut();
    if tinkex_future_take_sample_result(fut, &mut r, &mut err) != tinkex_status::Ok {
        tinkex_error_free(err);
        return false;
    }
    // Read every sequence's tokens (pointer + length into the result), as a host would.
    for i in 0..tinkex_sample_result_num_sequences(r) {
        let (mut p, mut n) = (std::ptr::null(), 0usize);
        if tinkex_sample_result_tokens(r, i, &mut p, &mut n, &mut err) != tinkex_status::Ok {
            tinkex_error_free(err);
            tinkex_sample_result_free(r);
            return false;
        }
        std::hint::black_box((p, n));
    }
    tinkex_sample_result_free(r);
    true
}

fn submit(b: &Batch, idx: usize) {
    b.starts[idx].store(mono().to_bits(), Ordering::Relaxed);
    let mut fut = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let s = if path().0 {
        // SAFETY: the tokens outlive the batch.
        let tokens = unsafe { &*b.tokens };
        tinkex_sampling_client_sample_tokens(
            b.sampler,
            tokens.as_ptr().cast(),
            tokens.len(),
            tinkex_dtype::Int64 as i32,
            &b.params,
            std::ptr::null(),
            0,
            Some(on_done),
            idx as *mut c_void,
            &mut fut,
            &mut err,
        )
    } else {
        // SAFETY: the body outlives the batch.
        let body = unsafe { &*b.body };
        tinkex_sampling_client_sample(
            b.sampler,
            body.as_ptr(),
            body.len(),
            Some(on_done),
            idx as *mut c_void,
            &mut fut,
            &mut err,
        )
    };
    if s != tinkex_status::Ok {
        // Nothing was submitted, no callback will come.
        b.errors.fetch_add(1, Ordering::Relaxed);
        tinkex_error_free(err);
        finish_one(b, idx);
    }
    // On success `fut` (our reference) is released in the callback: it is the pointer the
    // callback receives.
}

fn finish_one(b: &Batch, idx: usize) {
    b.ends[idx].store(mono().to_bits(), Ordering::Relaxed);
    if b.chain {
        let next = b.next.fetch_add(1, Ordering::Relaxed);
        if next < b.total {
            submit(b, next);
        }
    }
    if b.done.fetch_add(1, Ordering::AcqRel) + 1 == b.total {
        *b.finished.lock().unwrap() = true;
        b.cv.notify_all();
    }
}

unsafe extern "C" fn on_done(user_data: *mut c_void, fut: *const tinkex_future) {
    // SAFETY: the batch outlives its operations (run() waits for every completion).
    let b = unsafe { &*BATCH.load(Ordering::Acquire) };
    let idx = user_data as usize;
    if !take(fut) {
        b.errors.fetch_add(1, Ordering::Relaxed);
    }
    // The reference `out_future` gave this program, released once its result is taken.
    tinkex_future_free(fut.cast_mut());
    finish_one(b, idx);
}

/// Runs `total` sample operations with `inflight` outstanding at a time (closed loop: each
/// completion callback submits the next), or all at once when `inflight >= total`.
/// Returns (latencies in s, errors, completion times).
pub fn run(s: &FfiSampler, total: usize, inflight: usize) -> (Vec<f64>, u64, Vec<f64>) {
    let batch = Box::new(Batch {
        sampler: s.sampler,
        body: &s.body,
        tokens: &s.tokens,
        params: s.params,
        total,
        chain: inflight < total,
        next: AtomicUsize::new(inflight.min(total)),
        done: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        starts: (0..total).map(|_| AtomicU64::new(0)).collect(),
        ends: (0..total).map(|_| AtomicU64::new(0)).collect(),
        finished: Mutex::new(total == 0),
        cv: Condvar::new(),
    });
    let ptr = Box::into_raw(batch);
    BATCH.store(ptr, Ordering::Release);
    // SAFETY: freed below, after every callback ran.
    let b = unsafe { &*ptr };
    for i in 0..inflight.min(total) {
        submit(b, i);
    }
    let mut f = b.finished.lock().unwrap();
    while !*f {
        f = b.cv.wait(f).unwrap();
    }
    drop(f);
    let lat = (0..total)
        .map(|i| {
            f64::from_bits(b.ends[i].load(Ordering::Relaxed))
                - f64::from_bits(b.starts[i].load(Ordering::Relaxed))
        })
        .collect();
    let ends = (0..total)
        .map(|i| f64::from_bits(b.ends[i].load(Ordering::Relaxed)))
        .collect();
    let errors = b.errors.load(Ordering::Relaxed);
    // The last callback may still be returning (it notified before returning): give it a
    // moment before the batch is freed.
    std::thread::sleep(std::time::Duration::from_millis(50));
    BATCH.store(std::ptr::null_mut(), Ordering::Release);
    // SAFETY: no callback of this batch is left.
    drop(unsafe { Box::from_raw(ptr) });
    (lat, errors, ends)
}

/// Submits `n` operations at once and returns without waiting (memory workload); `wait`
/// collects them.
pub fn start_all(s: &FfiSampler, n: usize) -> *mut Batch {
    let batch = Box::new(Batch {
        sampler: s.sampler,
        body: &s.body,
        tokens: &s.tokens,
        params: s.params,
        total: n,
        chain: false,
        next: AtomicUsize::new(n),
        done: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        starts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        ends: (0..n).map(|_| AtomicU64::new(0)).collect(),
        finished: Mutex::new(n == 0),
        cv: Condvar::new(),
    });
    let ptr = Box::into_raw(batch);
    BATCH.store(ptr, Ordering::Release);
    // SAFETY: freed in `wait_all`.
    let b = unsafe { &*ptr };
    for i in 0..n {
        submit(b, i);
    }
    ptr
}

/// Waits for a batch from [`start_all`]; returns (errors, completion times).
pub fn wait_all(ptr: *mut Batch) -> (u64, Vec<f64>) {
    // SAFETY: from start_all, not yet freed.
    let b = unsafe { &*ptr };
    let mut f = b.finished.lock().unwrap();
    while !*f {
        f = b.cv.wait(f).unwrap();
    }
    drop(f);
    let ends = (0..b.total)
        .map(|i| f64::from_bits(b.ends[i].load(Ordering::Relaxed)))
        .collect();
    let errors = b.errors.load(Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(50));
    BATCH.store(std::ptr::null_mut(), Ordering::Release);
    // SAFETY: no callback of this batch is left.
    drop(unsafe { Box::from_raw(ptr) });
    (errors, ends)
}
