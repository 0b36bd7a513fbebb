//! The ABI 2.0 additions and semantics: `tinkex_future_wait` returns after the completion
//! callback, the thread-safe datum batch (typed and JSON pushes, borrowed by submits), the
//! log sink (order, removal, `user_data_free`), `tinkex_tinker_path_parse`, and the two
//! phases of `forward_backward_custom` (ordering in the core, poisoning after an abort).

mod ffi_support;

use ffi_support::*;
use serde_json::{json, Value};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tinkex::ffi::bytes::*;
use tinkex::ffi::custom_loss::*;
use tinkex::ffi::datum::*;
use tinkex::ffi::error::*;
use tinkex::ffi::future::*;
use tinkex::ffi::log::*;
use tinkex::ffi::path::*;
use tinkex::ffi::runtime::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
#[cfg(feature = "testing")]
use tinkex::ffi::testing::*;
use tinkex::ffi::training::*;
use tinkex::ffi::TINKEX_WAIT_FOREVER;

fn bytes_json(b: *mut tinkex_bytes) -> Value {
    let data = tinkex_bytes_data(b);
    let len = tinkex_bytes_len(b);
    // SAFETY: `data` holds `len` bytes owned by `b`.
    let v = serde_json::from_slice(unsafe { std::slice::from_raw_parts(data, len) }).unwrap();
    tinkex_bytes_free(b);
    v
}

// ---------------------------------------------------------------------------------------
// wait after callback
// ---------------------------------------------------------------------------------------

struct Slow {
    entered: AtomicBool,
    returned: AtomicBool,
}

/// A deliberately slow callback: it holds the dispatcher for 300 ms (a window, not a
/// synchronisation), so a `wait` that returned at completion would see `returned == false`.
unsafe extern "C" fn slow_callback(user_data: *mut c_void, _fut: *const tinkex_future) {
    // SAFETY: `user_data` is the `Slow` below, alive until the runtime is shut down.
    let s = unsafe { &*(user_data as *const Slow) };
    s.entered.store(true, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    s.returned.store(true, Ordering::SeqCst);
}

#[test]
fn future_wait_returns_only_after_the_completion_callback_returned() {
    let rt = Rt::new();
    // Nothing listens on port 9: the operation stays pending (retrying) until cancelled.
    let svc = Svc::new(&rt, "http://127.0.0.1:9");
    for round in 0..5 {
        let slow = Box::new(Slow {
            entered: AtomicBool::new(false),
            returned: AtomicBool::new(false),
        });
        let mut fut = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        assert_eq!(
            tinkex_service_client_get_server_capabilities(
                svc.0,
                Some(slow_callback),
                &*slow as *const Slow as *mut c_void,
                &mut fut,
                &mut err,
            ),
            tinkex_status::Ok
        );
        // 0 = do not wait: still pending.
        assert_eq!(tinkex_future_wait(fut, 0, &mut err), tinkex_status::Pending);
        assert_eq!(tinkex_future_cancel(fut), tinkex_status::Ok);
        assert_eq!(
            tinkex_future_wait(fut, TINKEX_WAIT_FOREVER, &mut err),
            tinkex_status::Ok
        );
        assert!(
            slow.returned.load(Ordering::SeqCst),
            "round {round}: wait returned before the callback returned"
        );
        assert!(slow.entered.load(Ordering::SeqCst));
        // Settled: a zero timeout now answers OK at once.
        assert_eq!(tinkex_future_wait(fut, 0, &mut err), tinkex_status::Ok);
        tinkex_future_free(fut);
    }
}

// ---------------------------------------------------------------------------------------
// datum batch
// ---------------------------------------------------------------------------------------

#[test]
fn a_datum_batch_takes_pushes_from_many_threads_and_json_datums() {
    let mut b = std::ptr::null_mut();
    assert_eq!(
        tinkex_datum_batch_new(&mut b, std::ptr::null_mut()),
        tinkex_status::Ok
    );
    let addr = b as usize;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let b = addr as *const tinkex_datum_batch;
                for i in 0..250i64 {
                    let s = if i % 2 == 0 {
                        let toks = [t, i, 3];
                        tinkex_datum_batch_push(
                            b,
                            toks.as_ptr().cast(),
                            3,
                            tinkex_dtype::Int64 as i32,
                            std::ptr::null_mut(),
                        )
                    } else {
                        let d = j(&datum_json(&[t, i, 5, 6]));
                        tinkex_datum_batch_push_json(b, d.as_ptr(), d.len(), std::ptr::null_mut())
                    };
                    assert_eq!(s, tinkex_status::Ok);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(tinkex_datum_batch_len(b), 1000);
    // Clone = the same batch; both references must be freed.
    let c = tinkex_datum_batch_clone(b);
    assert_eq!(c, b);
    tinkex_datum_batch_free(c);
    assert_eq!(tinkex_datum_batch_len(b), 1000);
    // A JSON datum with a syntax error is INVALID_JSON and adds nothing.
    let mut err = std::ptr::null_mut();
    let bad = b"{\"model_input\": ";
    assert_eq!(
        tinkex_datum_batch_push_json(b, bad.as_ptr(), bad.len(), &mut err),
        tinkex_status::InvalidJson
    );
    tinkex_error_free(err);
    assert_eq!(tinkex_datum_batch_len(b), 1000);
    tinkex_datum_batch_free(b);
}

// ---------------------------------------------------------------------------------------
// log sink
// ---------------------------------------------------------------------------------------

/// One received line: level, target, message, the thread it arrived on.
type LogLine = (i32, String, String, Option<String>);

#[derive(Default)]
struct Sink {
    lines: Mutex<Vec<LogLine>>,
    freed: AtomicU32,
    cv: Condvar,
}

unsafe extern "C" fn on_log(
    user_data: *mut c_void,
    level: tinkex_log_level,
    target: *const u8,
    target_len: usize,
    message: *const u8,
    message_len: usize,
) {
    // SAFETY: `user_data` is an `Arc<Sink>` leaked for the registration; the strings are
    // valid for the call.
    let sink = unsafe { &*(user_data as *const Sink) };
    let (target, message) = unsafe {
        (
            String::from_utf8_lossy(std::slice::from_raw_parts(target, target_len)).into_owned(),
            String::from_utf8_lossy(std::slice::from_raw_parts(message, message_len)).into_owned(),
        )
    };
    let thread = std::thread::current().name().map(str::to_string);
    sink.lines
        .lock()
        .unwrap()
        .push((level as i32, target, message, thread));
    sink.cv.notify_all();
}

unsafe extern "C" fn free_sink(user_data: *mut c_void) {
    // SAFETY: the leaked `Arc<Sink>` of the registration, released once here.
    let sink = unsafe { Arc::from_raw(user_data as *const Sink) };
    sink.freed.fetch_add(1, Ordering::SeqCst);
    sink.cv.notify_all();
}

#[cfg(feature = "testing")]
fn log(level: tinkex_log_level, text: &str) {
    assert_eq!(
        tinkex_testing_log(
            level as i32,
            text.as_ptr(),
            text.len(),
            std::ptr::null_mut()
        ),
        tinkex_status::Ok
    );
}

#[cfg(feature = "testing")]
#[test]
fn the_log_sink_gets_the_library_lines_in_order_on_the_dispatcher() {
    let rt = Rt::new();
    let sink = Arc::new(Sink::default());
    let mut err = std::ptr::null_mut();
    let s = tinkex_runtime_set_log_sink(
        rt.0,
        Some(on_log),
        Arc::into_raw(sink.clone()) as *mut c_void,
        Some(free_sink),
        tinkex_log_level::Info as i32,
        &mut err,
    );
    assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
    // Two threads emit concurrently; each thread's lines must arrive in its order.
    let emitters: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..200 {
                    log(tinkex_log_level::Warn, &format!("t{t} line {i}"));
                }
                // Above the sink's level: filtered.
                log(tinkex_log_level::Debug, &format!("t{t} debug"));
            })
        })
        .collect();
    for e in emitters {
        e.join().unwrap();
    }
    log(tinkex_log_level::Error, "marker");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = sink.lines.lock().unwrap();
    while !lines.iter().any(|l| l.2 == "marker") {
        assert!(Instant::now() < deadline, "the marker line never arrived");
        lines = sink
            .cv
            .wait_timeout(lines, Duration::from_millis(100))
            .unwrap()
            .0;
    }
    let got = lines.clone();
    drop(lines);
    assert!(got
        .iter()
        .all(|l| l.3.as_deref() == Some(DISPATCHER_THREAD_NAME)));
    assert!(got.iter().all(|l| l.1 == "tinkex.testing"), "{:?}", got[0]);
    assert!(
        !got.iter().any(|l| l.2.contains("debug")),
        "filtered by max_level"
    );
    for t in 0..2 {
        let mine: Vec<usize> = got
            .iter()
            .filter_map(|l| l.2.strip_prefix(&format!("t{t} line ")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            mine,
            (0..200).collect::<Vec<_>>(),
            "thread {t} out of order"
        );
    }
    assert_eq!(
        got.iter().find(|l| l.2 == "marker").unwrap().0,
        tinkex_log_level::Error as i32
    );
    // Removing the sink runs user_data_free once, after the last line.
    assert_eq!(sink.freed.load(Ordering::SeqCst), 0);
    assert_eq!(
        tinkex_runtime_set_log_sink(rt.0, None, std::ptr::null_mut(), None, 0, &mut err),
        tinkex_status::Ok
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = sink.lines.lock().unwrap();
    while sink.freed.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "user_data_free never ran");
        lines = sink
            .cv
            .wait_timeout(lines, Duration::from_millis(100))
            .unwrap()
            .0;
    }
    let before = lines.len();
    drop(lines);
    log(tinkex_log_level::Error, "after removal");
    // A marker operation through the same dispatcher proves nothing more was delivered.
    let svc = Svc::new(&rt, "http://127.0.0.1:9");
    let op = submit(|cb, ud, out, err| {
        tinkex_service_client_get_server_capabilities(svc.0, cb, ud, out, err)
    });
    assert_eq!(tinkex_future_cancel(op.fut), tinkex_status::Ok);
    op.wait();
    assert_eq!(sink.lines.lock().unwrap().len(), before);
    assert_eq!(sink.freed.load(Ordering::SeqCst), 1);
    // Bad level.
    assert_eq!(
        tinkex_runtime_set_log_sink(rt.0, Some(on_log), std::ptr::null_mut(), None, 9, &mut err),
        tinkex_status::InvalidArg
    );
    tinkex_error_free(err);
}

// ---------------------------------------------------------------------------------------
// tinker paths
// ---------------------------------------------------------------------------------------

#[test]
fn tinker_paths_are_parsed_by_the_core() {
    let p = b"tinker://sess-1:train:0/sampler_weights/step-7";
    let mut out = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_tinker_path_parse(p.as_ptr(), p.len(), &mut out, &mut err),
        tinkex_status::Ok
    );
    assert_eq!(
        bytes_json(out),
        json!({"training_run_id": "sess-1:train:0", "kind": "sampler_weights",
               "name": "step-7", "checkpoint_id": "sampler_weights/step-7"})
    );
    for bad in [
        &b"http://x/weights/a"[..],
        b"tinker://r/other/a",
        b"tinker://r/weights/..",
    ] {
        let mut out = std::ptr::null_mut();
        assert_eq!(
            tinkex_tinker_path_parse(bad.as_ptr(), bad.len(), &mut out, &mut err),
            tinkex_status::InvalidArg
        );
        assert!(out.is_null());
        tinkex_error_free(err);
        err = std::ptr::null_mut();
    }
}

// ---------------------------------------------------------------------------------------
// forward_backward_custom
// ---------------------------------------------------------------------------------------

fn batch_of(datums: &[Value]) -> *mut tinkex_datum_batch {
    let mut b = std::ptr::null_mut();
    assert_eq!(
        tinkex_datum_batch_new(&mut b, std::ptr::null_mut()),
        tinkex_status::Ok
    );
    for d in datums {
        let d = j(d);
        assert_eq!(
            tinkex_datum_batch_push_json(b, d.as_ptr(), d.len(), std::ptr::null_mut()),
            tinkex_status::Ok
        );
    }
    b
}

fn start_custom(
    training: &Training,
    batch: *const tinkex_datum_batch,
) -> (*mut tinkex_custom_loss, Op) {
    let mut pass = std::ptr::null_mut();
    let op = submit(|cb, ud, out, err| {
        tinkex_training_client_forward_backward_custom(
            training.0, batch, cb, ud, &mut pass, out, err,
        )
    });
    assert!(!pass.is_null());
    (pass, op)
}

fn optim(training: &Training) -> Op {
    let body = j(&json!({"learning_rate": 1e-3}));
    submit(|cb, ud, out, err| {
        tinkex_training_client_optim_step(training.0, body.as_ptr(), body.len(), cb, ud, out, err)
    })
}

#[test]
fn custom_loss_runs_forward_then_backward_in_one_turn_and_reports_its_metrics() {
    let emu = Emu::start("ffi-custom-loss");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    let tokens = batch_tokens();
    let datums: Vec<Value> = tokens.iter().map(|t| datum_json(t)).collect();
    let batch = batch_of(&datums);
    let (pass, forward) = start_custom(&training, batch);
    tinkex_datum_batch_free(batch); // borrowed: the pass copied the datums
                                    // Submitted after the pass: queued behind its backward in the core.
    let opt = optim(&training);
    let fwd = forward.json();
    let outputs = fwd["loss_fn_outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), datums.len());
    // loss C = -sum(logprobs): dC/dlogprobs = -1, so the backward's weights are 1 and its
    // surrogate loss equals C.
    let mut custom_sum = 0.0;
    let mut grads = Vec::new();
    for o in outputs {
        let lp: Vec<f64> = o["logprobs"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        custom_sum -= lp.iter().sum::<f64>();
        grads.push(json!({"model_input": {"chunks": []}, "loss_fn_inputs": {
            "grads": {"data": vec![-1.0f32; lp.len()], "dtype": "float32", "shape": [lp.len()]}}}));
    }
    assert!(
        !tinkex_future_is_done(opt.fut),
        "the optim_step ran before the backward"
    );
    let metrics = j(&json!({"loss:sum": custom_sum, "custom_metric": 42.0}));
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_custom_loss_set_metrics(pass, metrics.as_ptr(), metrics.len(), &mut err),
        tinkex_status::Ok
    );
    let gb = batch_of(&grads);
    let backward =
        submit(|cb, ud, out, err| tinkex_custom_loss_backward(pass, gb, cb, ud, out, err));
    tinkex_datum_batch_free(gb);
    let out = backward.json();
    let m = &out["metrics"];
    assert_eq!(m["custom_metric"], 42.0, "{out}");
    assert!(
        (m["loss:sum"].as_f64().unwrap() - custom_sum).abs() < 1e-6 * custom_sum.abs().max(1.0)
    );
    let surrogate = m["surrogate_loss:sum"].as_f64().unwrap();
    assert!(
        (surrogate - custom_sum).abs() < 1e-3 * custom_sum.abs().max(1.0),
        "surrogate {surrogate} vs custom {custom_sum}"
    );
    opt.json();
    // A second backward is refused; freeing the finished pass poisons nothing.
    let gb = batch_of(&grads);
    let mut fut = std::ptr::null_mut();
    assert_eq!(
        tinkex_custom_loss_backward(pass, gb, None, std::ptr::null_mut(), &mut fut, &mut err),
        tinkex_status::Ok
    );
    tinkex_datum_batch_free(gb);
    assert_eq!(
        tinkex_future_wait(fut, TINKEX_WAIT_FOREVER, &mut err),
        tinkex_status::Ok
    );
    let mut b = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_result(fut, &mut b, &mut err),
        tinkex_status::User
    );
    tinkex_error_free(err);
    tinkex_future_free(fut);
    tinkex_custom_loss_free(pass);
    optim(&training).json();
}

#[test]
fn an_aborted_custom_loss_poisons_the_training_client() {
    let emu = Emu::start("ffi-custom-abort");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    let datums: Vec<Value> = batch_tokens().iter().map(|t| datum_json(t)).collect();
    let batch = batch_of(&datums);
    let (pass, forward) = start_custom(&training, batch);
    let queued = optim(&training);
    forward.json();
    let reason = b"loss exploded";
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_custom_loss_abort(pass, reason.as_ptr(), reason.len(), &mut err),
        tinkex_status::Ok
    );
    // The queued request and every later one fail with USER, naming the cause.
    for op in [queued, optim(&training)] {
        op.wait();
        let (s, msg) = op.take().unwrap_err();
        assert_eq!(s, tinkex_status::User, "{msg}");
        assert!(msg.contains("loss exploded"), "{msg}");
    }
    // A new pass on the poisoned client is refused at once.
    let mut p2 = std::ptr::null_mut();
    let mut fut = std::ptr::null_mut();
    assert_eq!(
        tinkex_training_client_forward_backward_custom(
            training.0,
            batch,
            None,
            std::ptr::null_mut(),
            &mut p2,
            &mut fut,
            &mut err
        ),
        tinkex_status::User
    );
    assert!(p2.is_null() && fut.is_null());
    tinkex_error_free(err);
    tinkex_custom_loss_free(pass);

    // Freeing an open pass aborts it too.
    let training = training_client(&svc);
    let (pass, forward) = start_custom(&training, batch);
    forward.json();
    tinkex_custom_loss_free(pass);
    let op = optim(&training);
    op.wait();
    let (s, msg) = op.take().unwrap_err();
    assert_eq!(s, tinkex_status::User, "{msg}");
    assert!(msg.contains("released without a backward"), "{msg}");
    tinkex_datum_batch_free(batch);
}

// ---------------------------------------------------------------------------------------
// The Rust API of the same operation (core): `forward_backward_custom(data, closure)`.
// (Here because this file owns the custom-loss tests; it uses the core test helpers.)
// ---------------------------------------------------------------------------------------

#[path = "support/mod.rs"]
mod support;

#[tokio::test]
async fn rust_forward_backward_custom_with_a_closure_orders_and_poisons() {
    use tinkex::core::training::CustomLossOutput;
    use tinkex::core::types::{AdamParams, TensorData, TensorDtype, TensorValues};
    use tinkex::core::{ErrorKind, LoraOptions};

    let emu = support::emulator("rust-custom-loss").await;
    let service = support::client(&emu);
    let training = service
        .create_lora_training_client(support::BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let data = support::batch();
    let n = data.len();
    // C = -sum(logprobs): grads -1, so the surrogate equals C.
    let step = training.forward_backward_custom(data, move |data, logprobs| {
        assert_eq!(data.len(), logprobs.len());
        let mut sum = 0.0;
        let grads = logprobs
            .iter()
            .map(|lp| {
                let TensorValues::Float32(v) = &lp.data else {
                    panic!("float logprobs")
                };
                sum -= v.iter().map(|x| *x as f64).sum::<f64>();
                TensorData {
                    data: TensorValues::Float32(vec![-1.0; v.len()]),
                    dtype: TensorDtype::Float32,
                    shape: lp.shape.clone(),
                    sparse_crow_indices: None,
                    sparse_col_indices: None,
                }
            })
            .collect();
        Ok(CustomLossOutput {
            grads,
            loss_sum: Some(sum),
            metrics: [("custom".to_string(), 1.0)].into(),
        })
    });
    // Submitted after the custom step: runs after its backward.
    let opt = training.optim_step(AdamParams {
        learning_rate: 1e-3,
        ..Default::default()
    });
    let out = step.await.unwrap();
    assert_eq!(out.loss_fn_outputs.len(), n);
    assert_eq!(out.metrics["custom"], 1.0);
    let (c, s) = (out.metrics["loss:sum"], out.metrics["surrogate_loss:sum"]);
    assert!((c - s).abs() < 1e-3 * c.abs().max(1.0), "{c} vs {s}");
    opt.await.unwrap();

    // A failing loss poisons the client.
    let failed = training.forward_backward_custom(support::batch(), |_, _| {
        Err(tinkex::core::Error::user("nan in the loss"))
    });
    let e = failed.await.unwrap_err();
    assert!(e.to_string().contains("nan in the loss"), "{e}");
    let later = training
        .optim_step(AdamParams::default())
        .await
        .unwrap_err();
    assert_eq!(later.kind, ErrorKind::User);
    assert!(later.to_string().contains("nan in the loss"), "{later}");
}
