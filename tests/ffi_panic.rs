//! Injected panics become `TINKEX_STATUS_PANIC` and the process lives (issue 5, acceptance
//! 1). Needs the `testing` feature: `cargo test --features testing --test ffi_panic`.

#![cfg(feature = "testing")]

mod ffi_support;

use ffi_support::*;
use std::time::Duration;
use tinkex::ffi::runtime::DISPATCHER_THREAD_NAME;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::testing::*;

#[test]
fn a_panic_in_an_export_body_is_a_status() {
    let mut err = std::ptr::null_mut();
    let s = tinkex_testing_panic_in_export(&mut err);
    assert_eq!(s, tinkex_status::Panic);
    let msg = describe(err);
    assert!(msg.contains("injected export panic"), "{msg}");
    // And again, without an error object.
    assert_eq!(
        tinkex_testing_panic_in_export(std::ptr::null_mut()),
        tinkex_status::Panic
    );
}

#[test]
fn a_panic_in_the_core_or_the_conversion_completes_the_future_with_panic() {
    let emu = Emu::start("ffi-panic");
    let rt = Rt::new();
    for (where_, text) in [(0, "injected core panic"), (1, "injected conversion panic")] {
        let op =
            submit(|cb, ud, out, err| tinkex_testing_panic_in_task(rt.0, where_, cb, ud, out, err));
        op.wait();
        let (s, msg) = op.take().unwrap_err();
        assert_eq!(s, tinkex_status::Panic, "{msg}");
        assert!(msg.contains(text), "{msg}");
        std::thread::sleep(Duration::from_millis(50));
        let seen = op.done.seen();
        assert_eq!(seen.calls, 1);
        assert_eq!(seen.thread_name.as_deref(), Some(DISPATCHER_THREAD_NAME));
    }
    // The runtime and the process are fine afterwards.
    let svc = Svc::new(&rt, &emu.url);
    let caps = submit(|cb, ud, out, err| {
        tinkex_service_client_get_server_capabilities(svc.0, cb, ud, out, err)
    })
    .json();
    assert!(caps["supported_models"].is_array());
}
