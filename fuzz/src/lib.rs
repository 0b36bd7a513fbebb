//! Shared helpers of the fuzz targets: a process-wide C ABI setup (runtime, service,
//! training, sampling and REST clients) whose server is gone by the time inputs arrive.

#![allow(clippy::missing_safety_doc)]

use std::ffi::c_void;
use std::sync::OnceLock;
use std::time::Duration;
use tinkex::ffi::error::*;
use tinkex::ffi::future::*;
use tinkex::ffi::rest::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::sampling::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::training::*;

/// Splits `data` at the first `0xff` byte (never valid UTF-8): `(before, after)`.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Handles of the C ABI, created once per process.
pub struct Handles {
    pub rt: *mut tinkex_runtime,
    pub svc: *mut tinkex_service_client,
    pub training: *mut tinkex_training_client,
    pub sampling: *mut tinkex_sampling_client,
    pub rest: *mut tinkex_rest_client,
}

// SAFETY: every handle is documented as usable from any thread.
unsafe impl Send for Handles {}
unsafe impl Sync for Handles {}

pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// The client configuration: no telemetry, fast retries, and a dead server.
pub fn config_json(url: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "api_key": "tml-fuzz-not-a-secret",
        "base_url": url,
        "telemetry": false,
        "retry": {"base_delay_ms": 10, "max_delay_ms": 50, "progress_timeout_ms": 2000},
    }))
    .unwrap()
}

fn check(s: tinkex_status, err: *mut tinkex_error, what: &str) {
    if s != tinkex_status::Ok {
        let msg = if err.is_null() {
            String::new()
        } else {
            // SAFETY: NUL-terminated, owned by `err`.
            unsafe { std::ffi::CStr::from_ptr(tinkex_error_message(err)) }
                .to_string_lossy()
                .into_owned()
        };
        panic!("fuzz setup: {what} failed: {s:?} {msg}");
    }
}

fn wait(fut: *mut tinkex_future, what: &str) {
    let mut err = std::ptr::null_mut();
    let s = tinkex_future_wait(fut, 60_000, &mut err);
    check(s, err, what);
}

/// Creates the handles against an in-process emulator, then shuts the emulator down so that
/// no fuzz input ever reaches a server (submissions fail to connect and are cancelled).
pub fn handles() -> &'static Handles {
    static H: OnceLock<Handles> = OnceLock::new();
    H.get_or_init(|| {
        let emu_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("tinkex-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = tinkex_emulator::EmulatorConfig::new(&dir);
        cfg.poll_hold = Duration::from_millis(100);
        let emu = emu_rt
            .block_on(tinkex_emulator::Emulator::start(cfg))
            .unwrap();
        let url = emu.base_url().to_string();

        let mut err = std::ptr::null_mut();
        let mut opts = tinkex_runtime_options_default();
        opts.worker_threads = 1;
        let mut rt = std::ptr::null_mut();
        check(tinkex_runtime_new(&opts, &mut rt, &mut err), err, "runtime");
        let cfg = config_json(&url);
        let mut svc = std::ptr::null_mut();
        check(
            tinkex_service_client_new(rt, cfg.as_ptr(), cfg.len(), &mut svc, &mut err),
            err,
            "service client",
        );
        let body = format!(r#"{{"base_model": "{BASE_MODEL}", "lora_config": {{"rank": 4}}}}"#);
        let mut fut = std::ptr::null_mut();
        check(
            tinkex_service_client_create_lora_training_client(
                svc,
                body.as_ptr(),
                body.len(),
                None,
                std::ptr::null_mut(),
                &mut fut,
                &mut err,
            ),
            err,
            "create training client",
        );
        wait(fut, "training client");
        let mut training = std::ptr::null_mut();
        check(
            tinkex_future_take_training_client(fut, &mut training, &mut err),
            err,
            "take training client",
        );
        tinkex_future_free(fut);
        let body = format!(r#"{{"base_model": "{BASE_MODEL}"}}"#);
        check(
            tinkex_service_client_create_sampling_client(
                svc,
                body.as_ptr(),
                body.len(),
                None,
                std::ptr::null_mut(),
                &mut fut,
                &mut err,
            ),
            err,
            "create sampling client",
        );
        wait(fut, "sampling client");
        let mut sampling = std::ptr::null_mut();
        check(
            tinkex_future_take_sampling_client(fut, &mut sampling, &mut err),
            err,
            "take sampling client",
        );
        tinkex_future_free(fut);
        let mut rest = std::ptr::null_mut();
        check(
            tinkex_service_client_create_rest_client(svc, &mut rest, &mut err),
            err,
            "rest client",
        );
        emu_rt.block_on(emu.shutdown());
        emu_rt.shutdown_timeout(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
        Handles {
            rt,
            svc,
            training,
            sampling,
            rest,
        }
    })
}

/// The shape of every submit call: `(on_done, user_data, out_future, out_err)`.
pub type Submit<'a> = &'a dyn Fn(
    tinkex::ffi::tinkex_done_fn,
    *mut c_void,
    *mut *mut tinkex_future,
    *mut *mut tinkex_error,
) -> tinkex_status;

/// Runs a submit call; a submitted future is cancelled and released at once (the server is
/// gone anyway), a synchronous error is released. Returns the status.
pub fn submit(f: Submit<'_>) -> tinkex_status {
    let mut fut = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let s = f(None, std::ptr::null_mut(), &mut fut, &mut err);
    if !fut.is_null() {
        let _ = tinkex_future_cancel(fut);
        tinkex_future_free(fut);
    }
    tinkex_error_free(err);
    s
}
