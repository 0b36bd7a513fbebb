//! Regression tests of the hardening issue at the C ABI: lengths checked before any read or
//! allocation, huge bulk lengths are `INVALID_ARG` (not an abort), and error messages never
//! echo a value from the caller's JSON (which may be a secret).

mod ffi_support;

use ffi_support::*;
use std::ffi::c_void;
use tinkex::ffi::datum::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;

const INT64: i32 = 1;
const FLOAT32: i32 = 2;

fn status_and_message(
    f: impl FnOnce(*mut *mut tinkex::ffi::error::tinkex_error) -> tinkex_status,
) -> (tinkex_status, String) {
    let mut err = std::ptr::null_mut();
    let s = f(&mut err);
    (s, describe(err))
}

#[test]
fn a_length_above_isize_max_is_rejected_before_the_pointer_is_read() {
    let rt = Rt::new();
    let text = b"{}";
    let mut svc = std::ptr::null_mut();
    // `len` larger than any buffer: rejected without touching the (2-byte) input.
    let (s, msg) = status_and_message(|e| {
        tinkex_service_client_new(rt.0, text.as_ptr(), usize::MAX, &mut svc, e)
    });
    assert_eq!(s, tinkex_status::InvalidArg, "{msg}");
    assert!(msg.contains("exceeds the largest possible buffer"), "{msg}");
    assert!(svc.is_null());
}

#[test]
fn huge_bulk_lengths_are_invalid_arg_not_an_abort() {
    let mut batch = std::ptr::null_mut();
    let (s, msg) = status_and_message(|e| tinkex_datum_batch_new(&mut batch, e));
    assert_eq!(s, tinkex_status::Ok, "{msg}");
    let tokens = [1i64, 2, 3];
    // 2^40 int64 tokens (8 TiB): before the fix the copy reserved this much and aborted.
    let (s, msg) = status_and_message(|e| {
        tinkex_datum_batch_push(batch, tokens.as_ptr() as *const c_void, 1 << 40, INT64, e)
    });
    assert_eq!(s, tinkex_status::InvalidArg, "{msg}");
    assert!(msg.contains("above the limit"), "{msg}");
    // A float dtype for tokens is refused before anything is copied.
    let floats = [1.0f32; 3];
    let (s, msg) = status_and_message(|e| {
        tinkex_datum_batch_push(batch, floats.as_ptr() as *const c_void, 1 << 40, FLOAT32, e)
    });
    assert_eq!(s, tinkex_status::InvalidArg, "{msg}");
    // A sane push still works, and a loss input with a huge ndim or len is refused.
    let (s, msg) = status_and_message(|e| {
        tinkex_datum_batch_push(batch, tokens.as_ptr() as *const c_void, 3, INT64, e)
    });
    assert_eq!(s, tinkex_status::Ok, "{msg}");
    let name = b"weights";
    let shape = [3i64];
    let (s, msg) = status_and_message(|e| {
        tinkex_datum_batch_set_loss_input(
            batch,
            name.as_ptr(),
            name.len(),
            floats.as_ptr() as *const c_void,
            3,
            FLOAT32,
            shape.as_ptr(),
            1 << 50,
            e,
        )
    });
    assert_eq!(s, tinkex_status::InvalidArg, "{msg}");
    let (s, msg) = status_and_message(|e| {
        tinkex_datum_batch_set_loss_input(
            batch,
            name.as_ptr(),
            name.len(),
            floats.as_ptr() as *const c_void,
            1 << 40,
            FLOAT32,
            std::ptr::null(),
            0,
            e,
        )
    });
    assert_eq!(s, tinkex_status::InvalidArg, "{msg}");
    assert_eq!(tinkex_datum_batch_len(batch), 1);
    tinkex_datum_batch_free(batch);
}

#[test]
fn config_errors_never_echo_the_values_they_reject() {
    let rt = Rt::new();
    let secret = "tml-FFI-CANARY-SECRET-42";
    for cfg in [
        // A key in the wrong field (wrong type): serde would echo the string.
        serde_json::json!({"api_key": "tml-ok-key", "base_url": "http://127.0.0.1:9", "telemetry": secret}),
        serde_json::json!({"api_key": "tml-ok-key", "base_url": "http://127.0.0.1:9", "tags": secret}),
        // A URL with credentials.
        serde_json::json!({"api_key": "tml-ok-key", "base_url": format!("http://u:{secret}@127.0.0.1:9")}),
        // A key with a control character.
        serde_json::json!({"api_key": format!("{secret}\u{7}"), "base_url": "http://127.0.0.1:9"}),
    ] {
        let bytes = j(&cfg);
        let mut svc = std::ptr::null_mut();
        let (s, msg) = status_and_message(|e| {
            tinkex_service_client_new(rt.0, bytes.as_ptr(), bytes.len(), &mut svc, e)
        });
        assert_ne!(s, tinkex_status::Ok, "{cfg}");
        assert!(!msg.contains("CANARY"), "echoed: {msg}");
        assert!(svc.is_null());
    }
}
