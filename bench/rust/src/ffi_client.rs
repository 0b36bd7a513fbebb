//! Sampling through the C ABI: the exported `extern "C"` functions of libtinkex
//! (`tinkex_sampling_client_sample` with an `on_done` callback,
//! `tinkex_future_take_sample_result` and the typed accessors, `tinkex_future_free`, …),
//! called exactly as a C host calls them — request as JSON bytes, completion on the
//! library's dispatcher thread, the result read through the typed result handle (no JSON;
//! `TINKEX_BENCH_FFI_JSON=1` takes it as JSON with `tinkex_future_take_result` instead, the
//! path measured before typed results existed), the next request submitted from the callback.

use crate::util::mono;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use tinkex::ffi::bytes::{tinkex_bytes, tinkex_bytes_free, tinkex_bytes_len};
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
use tinkex::ffi::sampling::{tinkex_sampling_client, tinkex_sampling_client_sample};
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
        FfiSampler {
            _rt: rt,
            _svc: svc,
            sampler,
            body,
        }
    }
}

/// The state of one batch of operations, shared with the callback through a global (the
/// callback's `user_data` is the operation's index).
pub struct Batch {
    sampler: *mut tinkex_sampling_client,
    body: *const Vec<u8>,
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

/// Take results as JSON (`TINKEX_BENCH_FFI_JSON=1`) instead of the typed result handle.
static TAKE_JSON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn take_json() -> bool {
    *TAKE_JSON.get_or_init(|| std::env::var("TINKEX_BENCH_FFI_JSON").is_ok_and(|v| v == "1"))
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
    // SAFETY: the body outlives the batch.
    let body = unsafe { &*b.body };
    let s = tinkex_sampling_client_sample(
        b.sampler,
        body.as_ptr(),
        body.len(),
        Some(on_done),
        idx as *mut c_void,
        &mut fut,
        &mut err,
    );
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
