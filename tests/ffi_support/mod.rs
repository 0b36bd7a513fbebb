//! Helpers of the C ABI tests: an in-process emulator on its own tokio runtime, RAII guards
//! for handles (so teardown happens even after a failed assertion), and a Mutex + Condvar
//! completion recorder used as `user_data` of `on_done`.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::ffi::{c_void, CStr};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tinkex::ffi::bytes::*;
use tinkex::ffi::error::*;
use tinkex::ffi::future::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::tinkex_done_fn;
use tinkex::ffi::training::*;
use tinkex_emulator::{Emulator, EmulatorConfig, RunningEmulator};

pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";
pub const WAIT: Duration = Duration::from_secs(60);

/// An emulator served by its own tokio runtime (separate from the library's).
pub struct Emu {
    emu: Option<RunningEmulator>,
    rt: Option<tokio::runtime::Runtime>,
    pub url: String,
    state_dir: PathBuf,
}

impl Emu {
    pub fn start(tag: &str) -> Emu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("test-emulator")
            .build()
            .unwrap();
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let state_dir =
            std::env::temp_dir().join(format!("tinkex-ffi-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&state_dir).unwrap();
        let mut cfg = EmulatorConfig::new(&state_dir);
        cfg.poll_hold = Duration::from_millis(200);
        let emu = rt.block_on(Emulator::start(cfg)).expect("emulator starts");
        Emu {
            url: emu.base_url().to_string(),
            emu: Some(emu),
            rt: Some(rt),
            state_dir,
        }
    }

    /// Installs a fault rule (see the emulator's `FaultRule`).
    pub fn fault(&self, rule: Value) {
        let rule = serde_json::from_value(rule).unwrap();
        self.emu.as_ref().unwrap().state().faults.add(rule);
    }

    /// GET a `/_emulator/...` control path, in-process (no socket a fault could break).
    pub fn control_get(&self, path: &str) -> Value {
        let emu = self.emu.as_ref().unwrap();
        let (status, body) = self
            .rt
            .as_ref()
            .unwrap()
            .block_on(emu.control("GET", path, None));
        assert_eq!(status, 200, "control {path}: {body}");
        body
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let (Some(emu), Some(rt)) = (self.emu.take(), self.rt.as_ref()) {
            rt.block_on(emu.shutdown());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// JSON bytes.
pub fn j(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A runtime handle, shut down and freed on drop.
pub struct Rt(pub *mut tinkex_runtime);

impl Rt {
    pub fn new() -> Rt {
        let mut opts = tinkex_runtime_options_default();
        opts.worker_threads = 2;
        let mut rt = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let s = tinkex_runtime_new(&opts, &mut rt, &mut err);
        assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
        Rt(rt)
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        let mut err = std::ptr::null_mut();
        let _ = tinkex_runtime_shutdown(self.0, 2000, &mut err);
        tinkex_error_free(err);
        tinkex_runtime_free(self.0);
    }
}

/// The client configuration of the tests: fast retries, no telemetry.
pub fn config(url: &str) -> Value {
    json!({
        "api_key": "tml-ffi-test",
        "base_url": url,
        "telemetry": false,
        "retry": {"base_delay_ms": 10, "max_delay_ms": 100, "billing_pause_step_ms": 20,
                  "min_poll_duration_ms": 50}
    })
}

/// A service client handle, freed on drop.
pub struct Svc(pub *mut tinkex_service_client);

impl Svc {
    pub fn new(rt: &Rt, url: &str) -> Svc {
        let cfg = j(&config(url));
        let mut svc = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let s = tinkex_service_client_new(rt.0, cfg.as_ptr(), cfg.len(), &mut svc, &mut err);
        assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
        Svc(svc)
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        tinkex_service_client_free(self.0);
    }
}

/// A training client handle, freed on drop.
pub struct Training(pub *mut tinkex_training_client);

impl Drop for Training {
    fn drop(&mut self) {
        tinkex_training_client_free(self.0);
    }
}

/// Text of an error (and frees it); "" for NULL.
pub fn describe(err: *mut tinkex_error) -> String {
    if err.is_null() {
        return String::new();
    }
    let status = tinkex_error_status(err);
    // SAFETY: the message is a NUL-terminated string owned by `err`.
    let msg = unsafe { CStr::from_ptr(tinkex_error_message(err)) }
        .to_string_lossy()
        .into_owned();
    tinkex_error_free(err);
    format!("{status:?}: {msg}")
}

/// What an `on_done` callback saw.
#[derive(Default, Debug, Clone)]
pub struct Seen {
    pub calls: u32,
    pub thread_name: Option<String>,
    pub thread_id: Option<ThreadId>,
    pub in_tokio: bool,
    pub wait_status: Option<tinkex_status>,
}

/// Completion recorder; `user_data` of [`on_done`]. One reference is leaked per submission
/// so that a (wrong) second callback would still find it alive and be counted.
#[derive(Default)]
pub struct Done {
    seen: Mutex<Seen>,
    cv: Condvar,
    /// Call `tinkex_future_wait` inside the callback (it must refuse).
    pub wait_inside: bool,
}

impl Done {
    pub fn new() -> Arc<Done> {
        Arc::new(Done::default())
    }

    /// A recorder whose callback also tries `tinkex_future_wait` (which must refuse).
    pub fn waiting_inside() -> Arc<Done> {
        Arc::new(Done {
            wait_inside: true,
            ..Default::default()
        })
    }

    /// `user_data` for a submission.
    pub fn user_data(self: &Arc<Self>) -> *mut c_void {
        Arc::into_raw(self.clone()) as *mut c_void
    }

    /// Waits for the first callback.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = self.seen.lock().unwrap();
        while seen.calls == 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            seen = self.cv.wait_timeout(seen, deadline - now).unwrap().0;
        }
        true
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

/// The `on_done` of the tests: records the call, its thread, and whether it is a tokio
/// thread.
pub unsafe extern "C" fn on_done(user_data: *mut c_void, fut: *const tinkex_future) {
    // SAFETY: `user_data` is a leaked `Arc<Done>` from `Done::user_data`.
    let done = unsafe { &*(user_data as *const Done) };
    let wait_status = done.wait_inside.then(|| {
        let mut err = std::ptr::null_mut();
        let s = tinkex_future_wait(fut, 1, &mut err);
        tinkex_error_free(err);
        s
    });
    let mut seen = done.seen.lock().unwrap();
    seen.calls += 1;
    let t = std::thread::current();
    seen.thread_name = t.name().map(str::to_string);
    seen.thread_id = Some(t.id());
    seen.in_tokio = tokio::runtime::Handle::try_current().is_ok();
    seen.wait_status = wait_status;
    done.cv.notify_all();
}

pub const ON_DONE: tinkex_done_fn = Some(on_done);

/// A submitted operation: its future (freed on drop) and its completion recorder.
pub struct Op {
    pub fut: *mut tinkex_future,
    pub done: Arc<Done>,
    pub submitted_in: Duration,
}

impl Op {
    /// Waits for the callback (panics after [`WAIT`]).
    pub fn wait(&self) -> &Self {
        assert!(self.done.wait(WAIT), "the completion callback did not fire");
        self
    }

    /// Takes the JSON result: `Ok(value)` or `Err((status, message))`.
    pub fn take(&self) -> Result<Value, (tinkex_status, String)> {
        let mut bytes = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let s = tinkex_future_take_result(self.fut, &mut bytes, &mut err);
        if s != tinkex_status::Ok {
            return Err((s, describe(err)));
        }
        let data = tinkex_bytes_data(bytes);
        let len = tinkex_bytes_len(bytes);
        // SAFETY: `data` holds `len` bytes owned by `bytes`.
        let v = serde_json::from_slice(unsafe { std::slice::from_raw_parts(data, len) }).unwrap();
        tinkex_bytes_free(bytes);
        Ok(v)
    }

    /// Waits and takes a JSON result that must be OK.
    pub fn json(&self) -> Value {
        self.wait();
        self.take()
            .unwrap_or_else(|e| panic!("operation failed: {e:?}"))
    }

    /// Waits and takes the training client.
    pub fn training(&self) -> Training {
        self.wait();
        let mut c = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let s = tinkex_future_take_training_client(self.fut, &mut c, &mut err);
        assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
        Training(c)
    }
}

// SAFETY: every tinkex handle may be used from any thread (tinkex.h, "Threads").
unsafe impl Send for Op {}

impl Drop for Op {
    fn drop(&mut self) {
        tinkex_future_free(self.fut);
    }
}

/// Submits with [`on_done`] and a fresh recorder; asserts the submit status is OK.
pub fn submit(
    f: impl FnOnce(
        tinkex_done_fn,
        *mut c_void,
        *mut *mut tinkex_future,
        *mut *mut tinkex_error,
    ) -> tinkex_status,
) -> Op {
    submit_with(Done::new(), f)
}

/// As [`submit`] with a given recorder.
pub fn submit_with(
    done: Arc<Done>,
    f: impl FnOnce(
        tinkex_done_fn,
        *mut c_void,
        *mut *mut tinkex_future,
        *mut *mut tinkex_error,
    ) -> tinkex_status,
) -> Op {
    let mut fut = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let started = Instant::now();
    let s = f(ON_DONE, done.user_data(), &mut fut, &mut err);
    let submitted_in = started.elapsed();
    assert_eq!(s, tinkex_status::Ok, "submit failed: {}", describe(err));
    assert!(!fut.is_null());
    Op {
        fut,
        done,
        submitted_in,
    }
}

/// Creates a LoRA training client of rank 8 and waits for it.
pub fn training_client(svc: &Svc) -> Training {
    let req = j(&json!({"base_model": BASE_MODEL, "lora_config": {"rank": 8}}));
    submit(|cb, ud, out, err| {
        tinkex_service_client_create_lora_training_client(
            svc.0,
            req.as_ptr(),
            req.len(),
            cb,
            ud,
            out,
            err,
        )
    })
    .training()
}

/// A next-token datum as spec JSON.
pub fn datum_json(tokens: &[i64]) -> Value {
    let n = tokens.len() - 1;
    json!({
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": tokens[..n]}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": tokens[1..], "dtype": "int64", "shape": [n]},
            "weights": {"data": vec![1.0f32; n], "dtype": "float32", "shape": [n]}
        }
    })
}

/// The fixed batch of the core tests: 4 sequences of 24 predicted tokens.
pub fn batch_tokens() -> Vec<Vec<i64>> {
    (0..4)
        .map(|d: i64| {
            (0..25)
                .map(|i: i64| 100_000 + (d * 7919 + i * 104_729) % 50_000)
                .collect()
        })
        .collect()
}

/// `ForwardBackwardInput` JSON of [`batch_tokens`].
pub fn batch_json() -> Vec<u8> {
    let data: Vec<Value> = batch_tokens().iter().map(|t| datum_json(t)).collect();
    j(&json!({"data": data, "loss_fn": "cross_entropy"}))
}
