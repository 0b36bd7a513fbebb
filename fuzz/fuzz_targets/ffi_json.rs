//! Every C ABI function that takes JSON (or an id/path string): the first byte picks the
//! function, the rest is the input. Clients are created once per process against an
//! in-process emulator that is shut down before the first input, so a submitted operation
//! only ever fails to connect; it is cancelled and released at once. Every call must return
//! a status (never a panic status: `PANIC` means an export body panicked).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinkex::ffi::datum::*;
use tinkex::ffi::error::tinkex_error_free;
use tinkex::ffi::rest::*;
use tinkex::ffi::sampling::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::training::*;
use tinkex_fuzz::{handles, submit};

fn datum_batch() -> *mut tinkex_datum_batch {
    let mut b = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(tinkex_datum_batch_new(&mut b, &mut err), tinkex_status::Ok);
    let tokens = [1i64, 2, 3];
    let s = tinkex_datum_batch_push(b, tokens.as_ptr().cast(), 3, 1, &mut err);
    assert_eq!(s, tinkex_status::Ok);
    let name = b"target_tokens";
    let s = tinkex_datum_batch_set_loss_input(
        b,
        name.as_ptr(),
        name.len(),
        tokens.as_ptr().cast(),
        3,
        1,
        std::ptr::null(),
        0,
        &mut err,
    );
    assert_eq!(s, tinkex_status::Ok);
    b
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let h = handles();
    let (p, n) = (input.as_ptr(), input.len());
    let status = match which % 19 {
        0 => {
            let mut svc = std::ptr::null_mut();
            let mut err = std::ptr::null_mut();
            let s = tinkex_service_client_new(h.rt, p, n, &mut svc, &mut err);
            tinkex_service_client_free(svc);
            tinkex_error_free(err);
            s
        }
        1 => submit(&|cb, ud, o, e| {
            tinkex_service_client_create_lora_training_client(h.svc, p, n, cb, ud, o, e)
        }),
        2 => submit(&|cb, ud, o, e| {
            tinkex_service_client_create_training_client_from_state(h.svc, p, n, cb, ud, o, e)
        }),
        3 => submit(&|cb, ud, o, e| {
            tinkex_service_client_create_sampling_client(h.svc, p, n, cb, ud, o, e)
        }),
        4 => submit(&|cb, ud, o, e| {
            tinkex_training_client_forward_backward(h.training, p, n, cb, ud, o, e)
        }),
        5 => submit(&|cb, ud, o, e| tinkex_training_client_forward(h.training, p, n, cb, ud, o, e)),
        6 => {
            let b = datum_batch();
            let s = submit(&|cb, ud, o, e| {
                tinkex_training_client_forward_backward_batch(h.training, b, p, n, cb, ud, o, e)
            });
            tinkex_datum_batch_free(b); // borrowed by the submit
            s
        }
        7 => {
            let b = datum_batch();
            let s = submit(&|cb, ud, o, e| {
                tinkex_training_client_forward_batch(h.training, b, p, n, cb, ud, o, e)
            });
            tinkex_datum_batch_free(b);
            s
        }
        8 => submit(&|cb, ud, o, e| {
            tinkex_training_client_optim_step(h.training, p, n, cb, ud, o, e)
        }),
        9 => submit(&|cb, ud, o, e| {
            tinkex_training_client_save_state(h.training, p, n, cb, ud, o, e)
        }),
        10 => submit(&|cb, ud, o, e| {
            tinkex_training_client_save_weights_for_sampler(h.training, p, n, cb, ud, o, e)
        }),
        11 => submit(&|cb, ud, o, e| {
            tinkex_training_client_save_weights_and_get_sampling_client(
                h.training, p, n, cb, ud, o, e,
            )
        }),
        12 => submit(&|cb, ud, o, e| {
            tinkex_training_client_load_state(h.training, p, n, cb, ud, o, e)
        }),
        13 => submit(&|cb, ud, o, e| tinkex_sampling_client_sample(h.sampling, p, n, cb, ud, o, e)),
        14 => submit(&|cb, ud, o, e| {
            tinkex_sampling_client_compute_logprobs(h.sampling, p, n, cb, ud, o, e)
        }),
        // The generic REST call: the fuzz input as the arguments of a few table methods,
        // then as the method name itself.
        15 => submit(&|cb, ud, o, e| {
            let m = b"get_training_run";
            tinkex_rest_client_call(h.rest, m.as_ptr(), m.len(), p, n, cb, ud, o, e)
        }),
        16 => submit(&|cb, ud, o, e| {
            let m = b"search_sessions";
            tinkex_rest_client_call(h.rest, m.as_ptr(), m.len(), p, n, cb, ud, o, e)
        }),
        17 => submit(&|cb, ud, o, e| {
            let m = b"set_checkpoint_ttl_from_tinker_path";
            tinkex_rest_client_call(h.rest, m.as_ptr(), m.len(), p, n, cb, ud, o, e)
        }),
        _ => submit(&|cb, ud, o, e| {
            tinkex_rest_client_call(h.rest, p, n, std::ptr::null(), 0, cb, ud, o, e)
        }),
    };
    assert_ne!(
        status,
        tinkex_status::Panic,
        "an export panicked on {which} {input:?}"
    );
});
