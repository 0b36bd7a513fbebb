//! The C ABI driven from Rust against the in-process emulator (issue 5, acceptance 1):
//! training loop, sampling, 200 concurrent futures, callback thread and exactly-once,
//! cancel, free mid-flight, second take, events, shutdown.

mod ffi_support;

use ffi_support::*;
use serde_json::json;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinkex::ffi::bytes::*;
use tinkex::ffi::error::*;
use tinkex::ffi::event::*;
use tinkex::ffi::future::*;
use tinkex::ffi::rest::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::sampling::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::training::*;
use tinkex::ffi::TINKEX_WAIT_FOREVER;

fn capabilities(svc: &Svc) -> Op {
    submit(|cb, ud, out, err| {
        tinkex_service_client_get_server_capabilities(svc.0, cb, ud, out, err)
    })
}

/// Returns once every callback queued on the dispatcher of `svc`'s runtime before this call
/// has run: the dispatcher runs callbacks one at a time in the order they were posted, so
/// the callback of a marker operation submitted now proves the earlier ones ran (and a
/// wrong second callback queued before it would have been counted).
fn barrier(svc: &Svc) {
    capabilities(svc).json();
}

fn forward_backward(t: &Training, body: &[u8]) -> Op {
    submit(|cb, ud, out, err| {
        tinkex_training_client_forward_backward(t.0, body.as_ptr(), body.len(), cb, ud, out, err)
    })
}

fn optim_step(t: &Training, lr: f64) -> Op {
    let body = j(&json!({ "learning_rate": lr }));
    submit(|cb, ud, out, err| {
        tinkex_training_client_optim_step(t.0, body.as_ptr(), body.len(), cb, ud, out, err)
    })
}

#[test]
fn training_loop_loss_falls_then_save_sample_and_rest() {
    let emu = Emu::start("ffi-loop");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let caps = capabilities(&svc).json();
    assert!(caps["supported_models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model_name"] == BASE_MODEL));
    let training = training_client(&svc);
    let body = batch_json();
    let mut losses = Vec::new();
    for _ in 0..20 {
        let fb = forward_backward(&training, &body);
        let opt = optim_step(&training, 1e-3);
        let out = fb.json();
        losses.push(out["metrics"]["loss:sum"].as_f64().unwrap() / 96.0);
        opt.json();
    }
    assert!(losses[19] < 0.7 * losses[0], "{losses:?}");

    let save = j(&json!({"path": "ffi-20"}));
    let saved = submit(|cb, ud, out, err| {
        tinkex_training_client_save_state(training.0, save.as_ptr(), save.len(), cb, ud, out, err)
    })
    .json();
    let path = saved["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("/weights/ffi-20"), "{path}");

    // Resume from the checkpoint (weights and optimizer state).
    let resume = j(&json!({"path": path, "optimizer": true}));
    let resumed = submit(|cb, ud, out, err| {
        tinkex_service_client_create_training_client_from_state(
            svc.0,
            resume.as_ptr(),
            resume.len(),
            cb,
            ud,
            out,
            err,
        )
    })
    .training();
    drop(resumed);

    // Named sampler weights, and a sampling client on them.
    let named = j(&json!({"path": "ffi-s20"}));
    let sampler_path = submit(|cb, ud, out, err| {
        tinkex_training_client_save_weights_for_sampler(
            training.0,
            named.as_ptr(),
            named.len(),
            cb,
            ud,
            out,
            err,
        )
    })
    .json()["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        sampler_path.contains("/sampler_weights/ffi-s20"),
        "{sampler_path}"
    );
    let by_path = j(&json!({ "model_path": sampler_path }));
    let op = submit(|cb, ud, out, err| {
        tinkex_service_client_create_sampling_client(
            svc.0,
            by_path.as_ptr(),
            by_path.len(),
            cb,
            ud,
            out,
            err,
        )
    });
    op.wait();
    let mut named_sampler = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_sampling_client(op.fut, &mut named_sampler, &mut err),
        tinkex_status::Ok,
        "{}",
        describe(err)
    );
    let mut info = std::ptr::null_mut();
    assert_eq!(
        tinkex_sampling_client_get_info(named_sampler, &mut info, &mut err),
        tinkex_status::Ok
    );
    tinkex::ffi::bytes::tinkex_bytes_free(info);
    tinkex_sampling_client_free(named_sampler);

    // Sampling through a sampling client created from the training client.
    let op = submit(|cb, ud, out, err| {
        tinkex_training_client_save_weights_and_get_sampling_client(
            training.0,
            std::ptr::null(),
            0,
            cb,
            ud,
            out,
            err,
        )
    });
    op.wait();
    let mut sampler = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_sampling_client(op.fut, &mut sampler, &mut err),
        tinkex_status::Ok,
        "{}",
        describe(err)
    );
    let req = j(&json!({
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [100000, 100001]}]},
        "num_samples": 3,
        "sampling_params": {"max_tokens": 5}
    }));
    let out = submit(|cb, ud, out, err| {
        tinkex_sampling_client_sample(sampler, req.as_ptr(), req.len(), cb, ud, out, err)
    })
    .json();
    let seqs = out["sequences"].as_array().unwrap();
    assert_eq!(seqs.len(), 3);
    assert!(seqs
        .iter()
        .all(|s| s["tokens"].as_array().unwrap().len() == 5));
    let lp = j(&json!({"prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]}}));
    let logprobs = submit(|cb, ud, out, err| {
        tinkex_sampling_client_compute_logprobs(sampler, lp.as_ptr(), lp.len(), cb, ud, out, err)
    })
    .json();
    assert_eq!(logprobs.as_array().unwrap().len(), 3);
    assert!(logprobs[0].is_null());
    tinkex_sampling_client_free(sampler);

    // REST through the C ABI.
    let mut rest = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_service_client_create_rest_client(svc.0, &mut rest, &mut err),
        tinkex_status::Ok
    );
    let mut info = std::ptr::null_mut();
    assert_eq!(
        tinkex_training_client_get_info(training.0, &mut info, &mut err),
        tinkex_status::Ok
    );
    // SAFETY: `info` holds JSON bytes.
    let info_json: serde_json::Value = serde_json::from_slice(unsafe {
        std::slice::from_raw_parts(
            tinkex::ffi::bytes::tinkex_bytes_data(info),
            tinkex::ffi::bytes::tinkex_bytes_len(info),
        )
    })
    .unwrap();
    tinkex::ffi::bytes::tinkex_bytes_free(info);
    let model_id = info_json["model_id"].as_str().unwrap().as_bytes().to_vec();
    let call = |method: &str, args: serde_json::Value| {
        let args = args.to_string();
        submit(|cb, ud, out, err| {
            tinkex_rest_client_call(
                rest,
                method.as_ptr(),
                method.len(),
                args.as_ptr(),
                args.len(),
                cb,
                ud,
                out,
                err,
            )
        })
        .json()
    };
    let model_id = String::from_utf8(model_id).unwrap();
    let listed = call("list_checkpoints", json!({ "training_run_id": model_id }));
    assert_eq!(listed["checkpoints"].as_array().unwrap().len(), 2);
    let weights = call(
        "get_weights_info_by_tinker_path",
        json!({ "tinker_path": path }),
    );
    assert_eq!(weights["base_model"], BASE_MODEL, "{weights}");
    tinkex_rest_client_free(rest);

    let closed = submit(|cb, ud, out, err| {
        tinkex_service_client_close(svc.0, std::ptr::null(), 0, cb, ud, out, err)
    })
    .json();
    assert_eq!(closed, json!({}));
    let sessions = emu.control_get("sessions");
    assert_eq!(sessions["sessions"][0]["finished"]["type"], "success");
}

#[test]
fn callbacks_fire_once_on_the_dispatcher_never_the_caller_or_a_worker() {
    let emu = Emu::start("ffi-thread");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let done = Done::waiting_inside();
    let op = submit_with(done.clone(), |cb, ud, out, err| {
        tinkex_service_client_get_server_capabilities(svc.0, cb, ud, out, err)
    });
    op.json();
    barrier(&svc);
    let seen = done.seen();
    assert_eq!(seen.calls, 1, "exactly once");
    assert_eq!(seen.thread_name.as_deref(), Some(DISPATCHER_THREAD_NAME));
    assert_ne!(seen.thread_id, Some(std::thread::current().id()));
    assert!(!seen.in_tokio, "not on a tokio worker");
    assert_eq!(
        seen.wait_status,
        Some(tinkex_status::WrongState),
        "tinkex_future_wait refuses to block the dispatcher"
    );

    // An input error is a status: no future, no callback.
    let counted = Done::new();
    let mut fut = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let bad = b"{\"base_model\": 3}";
    let s = tinkex_service_client_create_lora_training_client(
        svc.0,
        bad.as_ptr(),
        bad.len(),
        ON_DONE,
        counted.user_data(),
        &mut fut,
        &mut err,
    );
    assert_eq!(s, tinkex_status::InvalidJson, "{}", describe(err));
    assert!(fut.is_null());
    barrier(&svc);
    assert_eq!(counted.seen().calls, 0);
}

#[test]
fn two_hundred_concurrent_futures_each_complete_once() {
    let emu = Emu::start("ffi-200");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    let sampler_op = submit(|cb, ud, out, err| {
        tinkex_training_client_save_weights_and_get_sampling_client(
            training.0,
            std::ptr::null(),
            0,
            cb,
            ud,
            out,
            err,
        )
    });
    sampler_op.wait();
    let mut sampler = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_sampling_client(sampler_op.fut, &mut sampler, &mut err),
        tinkex_status::Ok
    );
    let req = j(&json!({
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
        "sampling_params": {"max_tokens": 2}
    }));
    // Submit from 4 threads at once, 50 each.
    let sampler_addr = sampler as usize;
    let ops: Vec<Op> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let req = &req;
                s.spawn(move || {
                    (0..50)
                        .map(|_| {
                            submit(|cb, ud, out, err| {
                                tinkex_sampling_client_sample(
                                    sampler_addr as *mut tinkex_sampling_client,
                                    req.as_ptr(),
                                    req.len(),
                                    cb,
                                    ud,
                                    out,
                                    err,
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(ops.len(), 200);
    let mut submit_times: Vec<Duration> = ops.iter().map(|o| o.submitted_in).collect();
    submit_times.sort();
    for op in &ops {
        let out = op.json();
        assert_eq!(out["sequences"][0]["tokens"].as_array().unwrap().len(), 2);
    }
    barrier(&svc);
    for op in &ops {
        let seen = op.done.seen();
        assert_eq!(seen.calls, 1);
        assert_eq!(seen.thread_name.as_deref(), Some(DISPATCHER_THREAD_NAME));
    }
    let median = submit_times[100];
    eprintln!(
        "submit latency: median {:?}, max {:?}",
        median, submit_times[199]
    );
    assert!(median < Duration::from_millis(5), "submit returns at once");
    tinkex_sampling_client_free(sampler);
}

#[test]
fn cancel_before_and_after_completion_and_second_take() {
    let emu = Emu::start("ffi-cancel");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);

    // Completed first: cancel changes nothing; the second take is ALREADY_TAKEN.
    let op = capabilities(&svc);
    op.wait();
    assert!(tinkex_future_is_done(op.fut));
    assert_eq!(tinkex_future_cancel(op.fut), tinkex_status::Ok);
    assert!(
        op.take().is_ok(),
        "cancel after completion keeps the result"
    );
    let (s, _) = op.take().unwrap_err();
    assert_eq!(s, tinkex_status::AlreadyTaken);
    assert_eq!(op.done.seen().calls, 1);

    // Pending: PENDING from take, then cancel (twice) completes it with CANCELLED.
    emu.fault(json!({"path": "/api/v1/get_server_capabilities", "latency_ms": 3000}));
    let op = capabilities(&svc);
    assert_eq!(op.take().unwrap_err().0, tinkex_status::Pending);
    assert_eq!(tinkex_future_cancel(op.fut), tinkex_status::Ok);
    assert_eq!(tinkex_future_cancel(op.fut), tinkex_status::Ok);
    op.wait();
    let (s, msg) = op.take().unwrap_err();
    assert_eq!(s, tinkex_status::Cancelled, "{msg}");
    // The marker is held 3 s like the cancelled request was: had cancelling not stopped
    // that request, its completion would have been queued before the marker's.
    barrier(&svc);
    assert_eq!(op.done.seen().calls, 1, "cancel fires the callback once");
    assert_eq!(
        tinkex_future_cancel(std::ptr::null_mut()),
        tinkex_status::NullArg
    );

    // A blocking wait with a timeout on a pending future.
    let op = capabilities(&svc);
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_wait(op.fut, 20, &mut err),
        tinkex_status::Pending
    );
    assert_eq!(
        tinkex_future_wait(op.fut, 0, &mut err),
        tinkex_status::Pending,
        "0 = do not wait"
    );
    assert_eq!(
        tinkex_future_wait(op.fut, TINKEX_WAIT_FOREVER, &mut err),
        tinkex_status::Ok,
        "TINKEX_WAIT_FOREVER = no limit"
    );
    assert!(op.take().is_ok());
}

#[test]
fn freeing_client_and_runtime_mid_flight_does_not_cancel() {
    let emu = Emu::start("ffi-free");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    // A second, independent service client on the same runtime, kept only to submit the
    // barrier's marker operation; the future holds the runtime alive either way.
    let marker = Svc::new(&rt, &emu.url);
    let body = batch_json();
    emu.fault(json!({"path": "/api/v1/forward_backward", "latency_ms": 300}));
    let fb = forward_backward(&training, &body);
    // Free every handle the host holds except the future (and the marker's client); the
    // work goes on.
    drop(training);
    drop(svc);
    let raw_rt = rt.0;
    std::mem::forget(rt);
    tinkex_runtime_free(raw_rt);
    let out = fb.json();
    assert!(out["metrics"]["loss:sum"].as_f64().unwrap() > 0.0);
    barrier(&marker);
    assert_eq!(fb.done.seen().calls, 1);
    drop(marker);
    drop(fb); // The last reference: the runtime tears down in the background.
}

#[test]
fn results_of_the_wrong_type_and_user_errors_through_the_future() {
    let emu = Emu::start("ffi-types");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let req = j(&json!({"base_model": BASE_MODEL}));
    let op = submit(|cb, ud, out, err| {
        tinkex_service_client_create_lora_training_client(
            svc.0,
            req.as_ptr(),
            req.len(),
            cb,
            ud,
            out,
            err,
        )
    });
    op.wait();
    assert_eq!(op.take().unwrap_err().0, tinkex_status::WrongType);
    let training = op.training();

    let empty = j(&json!({"data": [], "loss_fn": "cross_entropy"}));
    let op = forward_backward(&training, &empty);
    op.wait();
    let (s, msg) = op.take().unwrap_err();
    assert_eq!(s, tinkex_status::User, "{msg}");
    assert!(msg.contains("No data"), "{msg}");

    let bad_path = j(&json!({"path": "not-a-tinker-path"}));
    let op = submit(|cb, ud, out, err| {
        tinkex_training_client_load_state(
            training.0,
            bad_path.as_ptr(),
            bad_path.len(),
            cb,
            ud,
            out,
            err,
        )
    });
    op.wait();
    assert_eq!(op.take().unwrap_err().0, tinkex_status::User);

    // A future the server failed: its request id, and the error's category and body.
    let unsupported = j(
        &json!({"data": [{"model_input": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
        "loss_fn_inputs": {"target_tokens": {"data": [2, 3], "dtype": "int64"}}}], "loss_fn": "dro"}),
    );
    let op = forward_backward(&training, &unsupported);
    op.wait();
    let mut id = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_request_id(op.fut, &mut id, std::ptr::null_mut()),
        tinkex_status::Ok
    );
    // SAFETY: `id` holds `len` bytes owned by it.
    let id_text =
        unsafe { std::slice::from_raw_parts(tinkex_bytes_data(id), tinkex_bytes_len(id)) }.to_vec();
    tinkex_bytes_free(id);
    assert!(!id_text.is_empty());
    let mut bytes = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_result(op.fut, &mut bytes, &mut err),
        tinkex_status::User
    );
    // SAFETY: the accessors return NUL-terminated text owned by `err`.
    let text = |p: *const std::ffi::c_char| {
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(text(tinkex_error_category(err)), "user");
    assert_eq!(
        text(tinkex_error_request_id(err)).as_bytes(),
        id_text.as_slice()
    );
    assert!(
        tinkex_error_body(err).is_null(),
        "a failed future is not an HTTP error response"
    );
    tinkex_error_free(err);

    // An HTTP error answer keeps its body.
    let bad_model = j(&json!({"base_model": "no/such-model"}));
    let op = submit(|cb, ud, out, err| {
        tinkex_service_client_create_lora_training_client(
            svc.0,
            bad_model.as_ptr(),
            bad_model.len(),
            cb,
            ud,
            out,
            err,
        )
    });
    op.wait();
    let mut client = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_training_client(op.fut, &mut client, &mut err),
        tinkex_status::User
    );
    assert!(text(tinkex_error_body(err)).contains("not supported"));
    assert!(tinkex_error_category(err).is_null());
    tinkex_error_free(err);
}

struct Events {
    seen: Mutex<Vec<(tinkex_event_kind, String, Option<String>)>>,
    freed: AtomicU32,
    after_free: AtomicU32,
    wrong_thread: AtomicU32,
}

impl Events {
    fn new() -> Arc<Events> {
        Arc::new(Events {
            seen: Mutex::new(Vec::new()),
            freed: AtomicU32::new(0),
            after_free: AtomicU32::new(0),
            wrong_thread: AtomicU32::new(0),
        })
    }
}

unsafe extern "C" fn on_event(user_data: *mut c_void, ev: *const tinkex_event) {
    // SAFETY: `user_data` is the `Events` of the test, alive until `user_data_free`.
    let events = unsafe { &*(user_data as *const Events) };
    if events.freed.load(Ordering::SeqCst) > 0 {
        events.after_free.fetch_add(1, Ordering::SeqCst);
    }
    let mut len = 0usize;
    let ptr = tinkex_event_json(ev, &mut len);
    // SAFETY: `ptr` holds `len` bytes for the duration of the callback.
    let text = String::from_utf8(unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()).unwrap();
    if std::thread::current().name() != Some(DISPATCHER_THREAD_NAME) {
        events.wrong_thread.fetch_add(1, Ordering::SeqCst);
    }
    let rid = tinkex_event_request_id(ev);
    let rid = (!rid.is_null())
        // SAFETY: a NUL-terminated string borrowed for the callback.
        .then(|| {
            unsafe { std::ffi::CStr::from_ptr(rid) }
                .to_string_lossy()
                .into_owned()
        });
    events
        .seen
        .lock()
        .unwrap()
        .push((tinkex_event_get_kind(ev), text, rid));
}

unsafe extern "C" fn free_events(user_data: *mut c_void) {
    // SAFETY: as in `on_event`.
    let events = unsafe { &*(user_data as *const Events) };
    if std::thread::current().name() != Some(DISPATCHER_THREAD_NAME) {
        events.wrong_thread.fetch_add(1, Ordering::SeqCst);
    }
    events.freed.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn events_arrive_in_order_and_user_data_free_runs_once_after_the_last() {
    let emu = Emu::start("ffi-events");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let events = Events::new();
    let mut sub = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let s = tinkex_service_client_subscribe(
        svc.0,
        Some(on_event),
        Arc::as_ptr(&events) as *mut c_void,
        Some(free_events),
        &mut sub,
        &mut err,
    );
    assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
    // Two failures then success: two retry events, in order.
    emu.fault(json!({"path": "/api/v1/get_server_capabilities", "status": 503, "count": 2}));
    // Retry events are posted to the dispatcher when emitted, before the completion.
    capabilities(&svc).json();
    barrier(&svc);
    {
        let seen = events.seen.lock().unwrap();
        let retries: Vec<_> = seen
            .iter()
            .filter(|(k, _, _)| *k == tinkex_event_kind::Retry)
            .collect();
        assert_eq!(retries.len(), 2, "{seen:?}");
        let attempts: Vec<u64> = retries
            .iter()
            .map(|(_, t, _)| {
                serde_json::from_str::<serde_json::Value>(t).unwrap()["attempt"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(attempts, vec![0, 1], "in emission order");
        assert!(retries[0].1.contains("\"type\":\"retry\""));
    }
    tinkex_subscription_free(sub);
    // `user_data_free` was queued by the free, behind the events already queued.
    barrier(&svc);
    assert_eq!(events.freed.load(Ordering::SeqCst), 1);
    // No event after the free: the retry of this operation emits one, which a wrongly
    // still-registered subscription would queue before the operation's own callback.
    emu.fault(json!({"path": "/api/v1/get_server_capabilities", "status": 503, "count": 1}));
    capabilities(&svc).json();
    barrier(&svc);
    assert_eq!(events.after_free.load(Ordering::SeqCst), 0);
    assert_eq!(events.freed.load(Ordering::SeqCst), 1, "exactly once");
    assert_eq!(
        events.wrong_thread.load(Ordering::SeqCst),
        0,
        "all on the dispatcher"
    );

    // NULL on_event is a status; nothing registered.
    let mut sub2 = std::ptr::null_mut();
    let s = tinkex_service_client_subscribe(
        svc.0,
        None,
        std::ptr::null_mut(),
        None,
        &mut sub2,
        &mut err,
    );
    assert_eq!(s, tinkex_status::NullArg, "{}", describe(err));
}

#[test]
fn shutdown_completes_pending_futures_and_closes_subscriptions() {
    let emu = Emu::start("ffi-shutdown");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let events = Events::new();
    let mut sub = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_service_client_subscribe(
            svc.0,
            Some(on_event),
            Arc::as_ptr(&events) as *mut c_void,
            Some(free_events),
            &mut sub,
            &mut err,
        ),
        tinkex_status::Ok
    );
    emu.fault(json!({"path": "/api/v1/get_server_capabilities", "latency_ms": 10000}));
    let pending = capabilities(&svc);
    let started = std::time::Instant::now();
    assert_eq!(
        tinkex_runtime_shutdown(rt.0, 100, &mut err),
        tinkex_status::Ok
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
    // Everything ran before shutdown returned.
    assert_eq!(pending.done.seen().calls, 1);
    assert_eq!(pending.take().unwrap_err().0, tinkex_status::ShutDown);
    assert_eq!(events.freed.load(Ordering::SeqCst), 1);
    // Later submissions fail with a status and no callback; shutdown is idempotent.
    let done = Done::new();
    let mut fut = std::ptr::null_mut();
    let s = tinkex_service_client_get_server_capabilities(
        svc.0,
        ON_DONE,
        done.user_data(),
        &mut fut,
        &mut err,
    );
    assert_eq!(s, tinkex_status::ShutDown, "{}", describe(err));
    assert!(fut.is_null());
    assert_eq!(
        tinkex_runtime_shutdown(rt.0, 0, std::ptr::null_mut()),
        tinkex_status::Ok
    );
    tinkex_subscription_free(sub);
    assert_eq!(events.freed.load(Ordering::SeqCst), 1, "still once");
}
