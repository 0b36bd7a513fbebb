//! Typed result handles (issue 15, W4): every typed accessor against the JSON path on real
//! emulator results — sample (logprobs, prompt logprobs, target prompt logprobs, prompt
//! alternatives, top-k via `_to_json`), compute_logprobs, forward and forward_backward with
//! several loss functions — plus index checks, wrong types, double takes and free orders.
//!
//! A future's result is taken once, so "equal to the JSON path" is checked two ways: the
//! same deterministic request (seeded sampling; forward without an optimizer step) is sent
//! twice and taken once as JSON and once typed; and every typed handle's own `_to_json` is
//! compared with its accessors (this covers the per-call fields, such as sequence ids).

mod ffi_support;

use ffi_support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tinkex::core::types::{ForwardBackwardOutput, SampleResponse, TensorData, TensorValues};
use tinkex::ffi::bytes::*;
use tinkex::ffi::datum::tinkex_dtype;
use tinkex::ffi::error::*;
use tinkex::ffi::future::*;
use tinkex::ffi::result::*;
use tinkex::ffi::runtime::tinkex_runtime_free;
use tinkex::ffi::sampling::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::training::*;

fn ok(s: tinkex_status, err: *mut tinkex_error) {
    assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
}

fn bytes_value(b: *mut tinkex_bytes) -> Vec<u8> {
    // SAFETY: `b` is a live buffer of `len` bytes.
    let v =
        unsafe { std::slice::from_raw_parts(tinkex_bytes_data(b), tinkex_bytes_len(b)) }.to_vec();
    tinkex_bytes_free(b);
    v
}

/// A borrowed `(ptr, len)` as a slice; `None` for a NULL pointer (absent).
fn slice<'a, T>(p: *const T, n: usize) -> Option<&'a [T]> {
    if p.is_null() {
        assert_eq!(n, 0, "NULL data with a length");
        None
    } else {
        // SAFETY: the accessor lent `n` elements, alive while the result is.
        Some(unsafe { std::slice::from_raw_parts(p, n) })
    }
}

fn nan_eq(a: &[f32], b: &[Option<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match y {
            None => x.is_nan(),
            Some(y) => x.to_bits() == y.to_bits(),
        })
}

/// A lent tensor read back into a core `TensorData`.
fn tensor(t: *const tinkex_tensor) -> Option<TensorData> {
    if t.is_null() {
        return None;
    }
    let mut err = std::ptr::null_mut();
    let (mut data, mut len) = (std::ptr::null(), 0usize);
    ok(tinkex_tensor_data(t, &mut data, &mut len, &mut err), err);
    let values = match tinkex_tensor_dtype(t) {
        d if d == tinkex_dtype::Int64 as i32 => {
            TensorValues::Int64(slice(data as *const i64, len).unwrap().to_vec())
        }
        d if d == tinkex_dtype::Float32 as i32 => {
            TensorValues::Float32(slice(data as *const f32, len).unwrap().to_vec())
        }
        d => panic!("unexpected dtype {d}"),
    };
    let (mut shape, mut ndim) = (std::ptr::null(), 0usize);
    ok(tinkex_tensor_shape(t, &mut shape, &mut ndim, &mut err), err);
    let (mut crow, mut ncrow, mut col, mut ncol) = (std::ptr::null(), 0, std::ptr::null(), 0);
    ok(
        tinkex_tensor_sparse_indices(t, &mut crow, &mut ncrow, &mut col, &mut ncol, &mut err),
        err,
    );
    Some(TensorData {
        dtype: values.dtype(),
        data: values,
        shape: slice(shape, ndim).map(<[i64]>::to_vec),
        sparse_crow_indices: slice(crow, ncrow).map(<[i64]>::to_vec),
        sparse_col_indices: slice(col, ncol).map(<[i64]>::to_vec),
    })
}

/// Asserts every typed accessor of `r` equals `expected` (from JSON); `with_ids` also
/// compares the sequence ids (same result only).
fn assert_sample_eq(r: *const tinkex_sample_result, expected: &SampleResponse, with_ids: bool) {
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_sample_result_num_sequences(r),
        expected.sequences.len()
    );
    for (i, s) in expected.sequences.iter().enumerate() {
        let (mut p, mut n) = (std::ptr::null(), 0usize);
        ok(
            tinkex_sample_result_tokens(r, i, &mut p, &mut n, &mut err),
            err,
        );
        assert_eq!(slice(p, n).unwrap(), &s.tokens[..], "tokens of {i}");
        let (mut p, mut n) = (std::ptr::null(), 0usize);
        ok(
            tinkex_sample_result_logprobs(r, i, &mut p, &mut n, &mut err),
            err,
        );
        match (&s.logprobs, slice(p, n)) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len(),
                "logprobs of {i}"
            ),
            (a, b) => panic!("logprobs of {i}: {a:?} vs {b:?}"),
        }
        let mut reason = 0i32;
        ok(
            tinkex_sample_result_stop_reason(r, i, &mut reason, &mut err),
            err,
        );
        let want = tinkex_stop_reason::from(s.stop_reason) as i32;
        assert_eq!(reason, want);
        assert_eq!(
            tinkex_sample_result_has_topk(r, i),
            s.topk_logprobs.is_some()
        );
        if with_ids {
            let (mut p, mut n) = (std::ptr::null(), 0usize);
            ok(
                tinkex_sample_result_sequence_id(r, i, &mut p, &mut n, &mut err),
                err,
            );
            assert_eq!(
                slice(p, n).map(|b| std::str::from_utf8(b).unwrap()),
                s.sequence_id.as_deref()
            );
        }
    }
    let (mut p, mut n) = (std::ptr::null(), 0usize);
    ok(
        tinkex_sample_result_prompt_logprobs(r, &mut p, &mut n, &mut err),
        err,
    );
    match (&expected.prompt_logprobs, slice(p, n)) {
        (None, None) => {}
        (Some(e), Some(t)) => assert!(nan_eq(t, e), "prompt logprobs {t:?} vs {e:?}"),
        (e, t) => panic!("prompt logprobs: {e:?} vs {t:?}"),
    }
    assert_eq!(
        tinkex_sample_result_has_topk_prompt_logprobs(r),
        expected.topk_prompt_logprobs.is_some()
    );
    assert_eq!(
        tinkex_sample_result_prompt_cache_hit_tokens(r),
        expected.prompt_cache_hit_tokens
    );
    let mut t = std::ptr::null();
    ok(
        tinkex_sample_result_target_prompt_logprobs(r, &mut t, &mut err),
        err,
    );
    assert_eq!(tensor(t), expected.target_prompt_logprobs);
    let (mut at, mut al) = (std::ptr::null(), std::ptr::null());
    ok(
        tinkex_sample_result_prompt_alt_tokens(r, &mut at, &mut al, &mut err),
        err,
    );
    match &expected.prompt_alt_tokens {
        None => assert!(at.is_null() && al.is_null()),
        Some(a) => {
            assert_eq!(tensor(at).as_ref(), Some(&a.tokens));
            assert_eq!(tensor(al).as_ref(), Some(&a.logprobs));
        }
    }
}

fn sample_to_json(r: *const tinkex_sample_result) -> SampleResponse {
    let mut b = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    ok(tinkex_sample_result_to_json(r, &mut b, &mut err), err);
    serde_json::from_slice(&bytes_value(b)).unwrap()
}

fn take_sample(op: &Op) -> *mut tinkex_sample_result {
    op.wait();
    let mut r = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    ok(
        tinkex_future_take_sample_result(op.fut, &mut r, &mut err),
        err,
    );
    assert!(!r.is_null());
    r
}

fn take_forward(op: &Op) -> *mut tinkex_forward_result {
    op.wait();
    let mut r = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    ok(
        tinkex_future_take_forward_result(op.fut, &mut r, &mut err),
        err,
    );
    r
}

/// A sampling client on the base model (freed by the caller).
fn sampler(svc: &Svc) -> *mut tinkex_sampling_client {
    let req = j(&json!({"base_model": BASE_MODEL}));
    let op = submit(|cb, ud, out, err| {
        tinkex_service_client_create_sampling_client(
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
    let mut s = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    ok(
        tinkex_future_take_sampling_client(op.fut, &mut s, &mut err),
        err,
    );
    s
}

fn sample_op(s: *mut tinkex_sampling_client, req: &[u8]) -> Op {
    submit(|cb, ud, out, err| {
        tinkex_sampling_client_sample(s, req.as_ptr(), req.len(), cb, ud, out, err)
    })
}

const PROMPT: [i64; 9] = [
    100_000, 100_007, 100_311, 101_000, 100_042, 100_999, 100_500, 100_123, 100_777,
];

fn prompt() -> Value {
    json!({"chunks": [{"type": "encoded_text", "tokens": PROMPT}]})
}

#[test]
fn sample_results_typed_equal_json() {
    let emu = Emu::start("typed-sample");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let s = sampler(&svc);
    let n = PROMPT.len() - 1;
    let target: Vec<i64> = (0..n as i64 * 2)
        .map(|i| if i % 3 == 0 { -1 } else { 100_000 + i })
        .collect();
    let requests = [
        // Plain: tokens, logprobs, stop reasons; no prompt logprobs.
        json!({"prompt": prompt(), "num_samples": 3,
               "sampling_params": {"max_tokens": 6, "seed": 11, "temperature": 1.0}}),
        // Prompt logprobs, scored only for the last 4 tokens (nulls elsewhere).
        json!({"prompt": prompt(), "num_samples": 2, "prompt_logprobs": true,
               "prompt_logprobs_last_n": 4,
               "sampling_params": {"max_tokens": 4, "seed": 12}}),
        // Target prompt logprobs (dense [n, 2] int64 with -1 cells) and prompt alternatives.
        json!({"prompt": prompt(), "num_samples": 1, "prompt_logprobs": true,
               "target_prompt_logprobs": {"data": target, "dtype": "int64", "shape": [n, 2]},
               "prompt_alt_tokens_k": 3,
               "sampling_params": {"max_tokens": 3, "seed": 13}}),
        // Top-k lists (JSON only: has_topk and _to_json).
        json!({"prompt": prompt(), "num_samples": 2, "prompt_logprobs": true,
               "topk_prompt_logprobs": 3, "topk_sample_logprobs": 2,
               "sampling_params": {"max_tokens": 3, "seed": 14}}),
    ];
    for (k, req) in requests.iter().enumerate() {
        let body = j(req);
        let from_json: SampleResponse = serde_json::from_value(sample_op(s, &body).json()).unwrap();
        let op = sample_op(s, &body);
        let r = take_sample(&op);
        // The same request through the JSON path (seeded: the same draws), all but ids.
        assert_sample_eq(r, &from_json, false);
        // The handle's own JSON: every field, ids and top-k lists included.
        let own = sample_to_json(r);
        assert_sample_eq(r, &own, true);
        let strip = |mut v: SampleResponse| {
            v.sequences.iter_mut().for_each(|s| s.sequence_id = None);
            v
        };
        assert_eq!(strip(own), strip(from_json.clone()), "request {k}");
        if k == 2 {
            assert!(
                from_json.target_prompt_logprobs.is_some() && from_json.prompt_alt_tokens.is_some()
            );
        }
        if k == 3 {
            assert!(tinkex_sample_result_has_topk_prompt_logprobs(r));
            assert!(tinkex_sample_result_has_topk(r, 0));
        }
        // A second take of any kind: ALREADY_TAKEN.
        let mut again = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        assert_eq!(
            tinkex_future_take_sample_result(op.fut, &mut again, &mut err),
            tinkex_status::AlreadyTaken
        );
        tinkex_error_free(err);
        assert!(again.is_null());
        let mut b = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        assert_eq!(
            tinkex_future_take_result(op.fut, &mut b, &mut err),
            tinkex_status::AlreadyTaken
        );
        tinkex_error_free(err);
        tinkex_sample_result_free(r);
    }

    // compute_logprobs: NaN where the JSON has null.
    for last_n in [None, Some(3)] {
        let body = j(&json!({"prompt": prompt(), "prompt_logprobs_last_n": last_n}));
        let lp = |cb, ud, out, err| {
            tinkex_sampling_client_compute_logprobs(s, body.as_ptr(), body.len(), cb, ud, out, err)
        };
        let from_json: Vec<Option<f32>> = serde_json::from_value(submit(lp).json()).unwrap();
        let op = submit(lp);
        op.wait();
        let mut r = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        // The wrong typed take leaves the result in place.
        assert_eq!(
            tinkex_future_take_sample_result(op.fut, &mut std::ptr::null_mut(), &mut err),
            tinkex_status::WrongType
        );
        tinkex_error_free(err);
        let mut err = std::ptr::null_mut();
        ok(
            tinkex_future_take_logprobs_result(op.fut, &mut r, &mut err),
            err,
        );
        let typed = slice(
            tinkex_logprobs_result_data(r),
            tinkex_logprobs_result_len(r),
        )
        .unwrap();
        assert!(nan_eq(typed, &from_json), "{typed:?} vs {from_json:?}");
        assert!(typed[0].is_nan());
        let mut b = std::ptr::null_mut();
        ok(tinkex_logprobs_result_to_json(r, &mut b, &mut err), err);
        let own: Vec<Option<f32>> = serde_json::from_slice(&bytes_value(b)).unwrap();
        assert_eq!(own, from_json);
        tinkex_logprobs_result_free(r);
    }
    tinkex_sampling_client_free(s);
}

#[test]
fn sample_result_checks_indices_and_nulls() {
    let emu = Emu::start("typed-index");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let s = sampler(&svc);
    let body =
        j(&json!({"prompt": prompt(), "num_samples": 2, "sampling_params": {"max_tokens": 2}}));
    let op = sample_op(s, &body);
    let r = take_sample(&op);
    let mut err = std::ptr::null_mut();
    let (mut p, mut n) = (std::ptr::null(), 7usize);
    let st = tinkex_sample_result_tokens(r, 2, &mut p, &mut n, &mut err);
    assert_eq!(st, tinkex_status::InvalidArg);
    assert!(describe(err).contains("out of range"));
    assert!(p.is_null() && n == 7, "nothing written on failure");
    for i in [2usize, usize::MAX] {
        let mut err = std::ptr::null_mut();
        let (mut f, mut n) = (std::ptr::null(), 0usize);
        assert_eq!(
            tinkex_sample_result_logprobs(r, i, &mut f, &mut n, &mut err),
            tinkex_status::InvalidArg
        );
        tinkex_error_free(err);
        let mut reason = 0;
        let mut err = std::ptr::null_mut();
        assert_eq!(
            tinkex_sample_result_stop_reason(r, i, &mut reason, &mut err),
            tinkex_status::InvalidArg
        );
        tinkex_error_free(err);
        assert!(!tinkex_sample_result_has_topk(r, i));
    }
    // NULL handles and outputs.
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_sample_result_tokens(std::ptr::null(), 0, &mut p, &mut n, &mut err),
        tinkex_status::NullArg
    );
    tinkex_error_free(err);
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_sample_result_tokens(r, 0, std::ptr::null_mut(), &mut n, &mut err),
        tinkex_status::NullArg
    );
    tinkex_error_free(err);
    assert_eq!(tinkex_sample_result_num_sequences(std::ptr::null()), 0);
    assert_eq!(tinkex_logprobs_result_len(std::ptr::null()), 0);
    assert!(tinkex_logprobs_result_data(std::ptr::null()).is_null());
    assert_eq!(tinkex_forward_result_num_datums(std::ptr::null()), 0);
    assert_eq!(tinkex_tensor_dtype(std::ptr::null()), 0);
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_future_take_sample_result(std::ptr::null(), &mut std::ptr::null_mut(), &mut err),
        tinkex_status::NullArg
    );
    tinkex_error_free(err);
    // Absent fields: NULL pointers, OK status.
    let mut err = std::ptr::null_mut();
    ok(
        tinkex_sample_result_prompt_logprobs(r, &mut std::ptr::null(), &mut 0, &mut err),
        err,
    );
    let mut f: *const f32 = 1 as *const f32;
    let mut n = 5;
    ok(
        tinkex_sample_result_prompt_logprobs(r, &mut f, &mut n, &mut err),
        err,
    );
    assert!(f.is_null() && n == 0);
    tinkex_sample_result_free(std::ptr::null_mut());
    tinkex_logprobs_result_free(std::ptr::null_mut());
    tinkex_forward_result_free(std::ptr::null_mut());
    tinkex_sample_result_free(r);
    tinkex_sampling_client_free(s);
}

/// One datum per token list with the inputs every loss function here needs.
fn loss_datums(loss_fn: &str) -> Vec<Value> {
    batch_tokens()
        .iter()
        .take(3)
        .enumerate()
        .map(|(d, t)| {
            let n = t.len() - 1;
            let mut v = datum_json(&t[..]);
            if loss_fn != "cross_entropy" {
                let inputs = v["loss_fn_inputs"].as_object_mut().unwrap();
                inputs.remove("weights");
                let lp: Vec<f32> = (0..n).map(|i| -1.0 - (i + d) as f32 * 0.125).collect();
                let adv: Vec<f32> = (0..n).map(|i| ((i + d) % 3) as f32 - 1.0).collect();
                inputs.insert(
                    "logprobs".into(),
                    json!({"data": lp, "dtype": "float32", "shape": [n]}),
                );
                inputs.insert(
                    "advantages".into(),
                    json!({"data": adv, "dtype": "float32", "shape": [n]}),
                );
            }
            v
        })
        .collect()
}

/// Metrics equal up to JSON's float parsing: serde_json's default f64 parser may be one
/// unit in the last place off (it is not `float_roundtrip`), so the JSON path's value can
/// differ from the exact f64 the typed accessor returns in the last bit.
fn assert_metrics_eq(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, x) in a {
        let y = b[k];
        assert!(
            (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(1.0),
            "{k}: {x} vs {y}"
        );
    }
}

fn assert_forward_eq(r: *const tinkex_forward_result, expected: &ForwardBackwardOutput) {
    let mut err = std::ptr::null_mut();
    let (mut p, mut n) = (std::ptr::null(), 0usize);
    ok(
        tinkex_forward_result_output_type(r, &mut p, &mut n, &mut err),
        err,
    );
    assert_eq!(
        slice(p, n).unwrap(),
        expected.loss_fn_output_type.as_bytes()
    );
    assert_eq!(
        tinkex_forward_result_num_datums(r),
        expected.loss_fn_outputs.len()
    );
    for (d, outputs) in expected.loss_fn_outputs.iter().enumerate() {
        let mut count = 0usize;
        ok(
            tinkex_forward_result_num_outputs(r, d, &mut count, &mut err),
            err,
        );
        assert_eq!(count, outputs.len());
        let mut typed = BTreeMap::new();
        for i in 0..count {
            let (mut name, mut len, mut t) = (std::ptr::null(), 0usize, std::ptr::null());
            ok(
                tinkex_forward_result_output_at(r, d, i, &mut name, &mut len, &mut t, &mut err),
                err,
            );
            let name = std::str::from_utf8(slice(name, len).unwrap())
                .unwrap()
                .to_string();
            let mut by_name = std::ptr::null();
            ok(
                tinkex_forward_result_output(
                    r,
                    d,
                    name.as_ptr(),
                    name.len(),
                    &mut by_name,
                    &mut err,
                ),
                err,
            );
            assert_eq!(by_name, t, "lookup by name gives the same tensor");
            typed.insert(name, tensor(t).unwrap());
        }
        assert_eq!(&typed, outputs, "datum {d}");
        let mut none = 1 as *const tinkex_tensor;
        ok(
            tinkex_forward_result_output(r, d, b"nope".as_ptr(), 4, &mut none, &mut err),
            err,
        );
        assert!(none.is_null());
        let (mut name, mut len, mut t) = (std::ptr::null(), 0usize, std::ptr::null());
        assert_eq!(
            tinkex_forward_result_output_at(r, d, count, &mut name, &mut len, &mut t, &mut err),
            tinkex_status::InvalidArg
        );
        tinkex_error_free(std::mem::replace(&mut err, std::ptr::null_mut()));
    }
    let mut count = 0usize;
    let nd = expected.loss_fn_outputs.len();
    assert_eq!(
        tinkex_forward_result_num_outputs(r, nd, &mut count, &mut err),
        tinkex_status::InvalidArg
    );
    tinkex_error_free(std::mem::replace(&mut err, std::ptr::null_mut()));
    assert_eq!(tinkex_forward_result_num_metrics(r), expected.metrics.len());
    let mut metrics = BTreeMap::new();
    for i in 0..expected.metrics.len() {
        let (mut name, mut len, mut value) = (std::ptr::null(), 0usize, 0f64);
        ok(
            tinkex_forward_result_metric_at(r, i, &mut name, &mut len, &mut value, &mut err),
            err,
        );
        let name = std::str::from_utf8(slice(name, len).unwrap())
            .unwrap()
            .to_string();
        metrics.insert(name, value);
    }
    assert_metrics_eq(&metrics, &expected.metrics);
    let (mut name, mut len, mut value) = (std::ptr::null(), 0usize, 0f64);
    assert_eq!(
        tinkex_forward_result_metric_at(
            r,
            expected.metrics.len(),
            &mut name,
            &mut len,
            &mut value,
            &mut err
        ),
        tinkex_status::InvalidArg
    );
    tinkex_error_free(err);
}

#[test]
fn forward_results_typed_equal_json_for_several_losses() {
    let emu = Emu::start("typed-forward");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    for loss_fn in ["cross_entropy", "importance_sampling", "ppo"] {
        let body = j(&json!({"data": loss_datums(loss_fn), "loss_fn": loss_fn}));
        for backward in [false, true] {
            let call = |cb, ud, out, err| {
                if backward {
                    tinkex_training_client_forward_backward(
                        training.0,
                        body.as_ptr(),
                        body.len(),
                        cb,
                        ud,
                        out,
                        err,
                    )
                } else {
                    tinkex_training_client_forward(
                        training.0,
                        body.as_ptr(),
                        body.len(),
                        cb,
                        ud,
                        out,
                        err,
                    )
                }
            };
            // No optimizer step in between: the same weights, the same outputs.
            let from_json: ForwardBackwardOutput =
                serde_json::from_value(submit(call).json()).unwrap();
            assert!(!from_json.loss_fn_outputs.is_empty(), "{loss_fn}");
            let op = submit(call);
            let r = take_forward(&op);
            assert_forward_eq(r, &from_json);
            let mut b = std::ptr::null_mut();
            let mut err = std::ptr::null_mut();
            ok(tinkex_forward_result_to_json(r, &mut b, &mut err), err);
            let own: ForwardBackwardOutput = serde_json::from_slice(&bytes_value(b)).unwrap();
            assert_eq!(
                own.loss_fn_outputs, from_json.loss_fn_outputs,
                "{loss_fn} {backward}"
            );
            assert_eq!(own.loss_fn_output_type, from_json.loss_fn_output_type);
            assert_metrics_eq(&own.metrics, &from_json.metrics);
            let mut again = std::ptr::null_mut();
            assert_eq!(
                tinkex_future_take_forward_result(op.fut, &mut again, &mut err),
                tinkex_status::AlreadyTaken
            );
            tinkex_error_free(err);
            tinkex_forward_result_free(r);
        }
    }
}

#[test]
fn results_outlive_their_future_client_and_runtime() {
    let emu = Emu::start("typed-lifetime");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    let body = batch_json();
    let op = submit(|cb, ud, out, err| {
        tinkex_training_client_forward(training.0, body.as_ptr(), body.len(), cb, ud, out, err)
    });
    let r = take_forward(&op);
    let expected: ForwardBackwardOutput = {
        let mut b = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        ok(tinkex_forward_result_to_json(r, &mut b, &mut err), err);
        serde_json::from_slice(&bytes_value(b)).unwrap()
    };
    // A sample result taken, then its future, client and runtime freed first.
    let s = sampler(&svc);
    let req =
        j(&json!({"prompt": prompt(), "num_samples": 2, "sampling_params": {"max_tokens": 5}}));
    let sop = sample_op(s, &req);
    let sr = take_sample(&sop);
    let sample_json = sample_to_json(sr);
    tinkex_sampling_client_free(s);
    drop(sop);
    drop(op);
    drop(training);
    drop(svc);
    // The runtime is shut down and freed (Rt's drop) before the results are read.
    drop(rt);
    assert_forward_eq(r, &expected);
    assert_sample_eq(sr, &sample_json, true);
    tinkex_forward_result_free(r);
    tinkex_sample_result_free(sr);

    // The other order: the result freed before the future.
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let s = sampler(&svc);
    let op = sample_op(s, &req);
    let r = take_sample(&op);
    tinkex_sample_result_free(r);
    drop(op);
    tinkex_sampling_client_free(s);
    // A runtime freed without shutdown while a result is held.
    let rt2 = Rt::new();
    let svc2 = Svc::new(&rt2, &emu.url);
    let s2 = sampler(&svc2);
    let op = sample_op(s2, &req);
    let r = take_sample(&op);
    tinkex_sampling_client_free(s2);
    drop(op);
    drop(svc2);
    tinkex_runtime_free(rt2.0);
    std::mem::forget(rt2);
    assert_eq!(tinkex_sample_result_num_sequences(r), 2);
    tinkex_sample_result_free(r);
}

#[test]
fn typed_sample_submit_equals_the_json_request() {
    let emu = Emu::start("typed-submit");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let s = sampler(&svc);
    let ids32: Vec<i32> = PROMPT.iter().map(|&t| t as i32).collect();
    let mut p = tinkex_sample_params_default();
    assert_eq!(
        p.struct_size as usize,
        std::mem::size_of::<tinkex_sample_params>()
    );
    p.num_samples = 2;
    p.max_tokens = 5;
    p.seed = 31;
    p.has_seed = true;
    p.prompt_logprobs = true;
    p.prompt_logprobs_last_n = 3;
    p.temperature = 0.7;
    let stop = b"[100007]";
    let body = j(
        &json!({"prompt": prompt(), "num_samples": 2, "prompt_logprobs": true,
        "prompt_logprobs_last_n": 3,
        "sampling_params": {"max_tokens": 5, "seed": 31, "temperature": 0.7, "stop": [100007]}}),
    );
    let from_json: SampleResponse = serde_json::from_value(sample_op(s, &body).json()).unwrap();
    for (ptr, dtype) in [
        (ids32.as_ptr().cast(), tinkex_dtype::Int32 as i32),
        (PROMPT.as_ptr().cast(), tinkex_dtype::Int64 as i32),
    ] {
        let op = submit(|cb, ud, out, err| {
            tinkex_sampling_client_sample_tokens(
                s,
                ptr,
                PROMPT.len(),
                dtype,
                &p,
                stop.as_ptr(),
                stop.len(),
                cb,
                ud,
                out,
                err,
            )
        });
        let r = take_sample(&op);
        assert_sample_eq(r, &from_json, false);
        tinkex_sample_result_free(r);
    }
    // Rejected before anything is submitted.
    let reject = |params: &tinkex_sample_params, dtype: i32, stop: &[u8]| {
        let mut fut = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let st = tinkex_sampling_client_sample_tokens(
            s,
            PROMPT.as_ptr().cast(),
            PROMPT.len(),
            dtype,
            params,
            if stop.is_empty() {
                std::ptr::null()
            } else {
                stop.as_ptr()
            },
            stop.len(),
            None,
            std::ptr::null_mut(),
            &mut fut,
            &mut err,
        );
        assert!(fut.is_null());
        tinkex_error_free(err);
        st
    };
    let int64 = tinkex_dtype::Int64 as i32;
    let mut small = tinkex_sample_params_default();
    small.struct_size = 8;
    assert_eq!(reject(&small, int64, b""), tinkex_status::InvalidArg);
    let mut zero = tinkex_sample_params_default();
    zero.num_samples = 0;
    assert_eq!(reject(&zero, int64, b""), tinkex_status::InvalidArg);
    let mut last_n = tinkex_sample_params_default();
    last_n.prompt_logprobs_last_n = 2;
    assert_eq!(reject(&last_n, int64, b""), tinkex_status::InvalidArg);
    let d = tinkex_sample_params_default();
    assert_eq!(
        reject(&d, tinkex_dtype::Float32 as i32, b""),
        tinkex_status::InvalidArg
    );
    assert_eq!(reject(&d, 77, b""), tinkex_status::InvalidArg);
    assert_eq!(reject(&d, int64, b"{\"bad\""), tinkex_status::InvalidJson);
    // NULL params: the defaults (one sample).
    let op = submit(|cb, ud, out, err| {
        tinkex_sampling_client_sample_tokens(
            s,
            PROMPT.as_ptr().cast(),
            PROMPT.len(),
            int64,
            std::ptr::null(),
            std::ptr::null(),
            0,
            cb,
            ud,
            out,
            err,
        )
    });
    let r = take_sample(&op);
    assert_eq!(tinkex_sample_result_num_sequences(r), 1);
    tinkex_sample_result_free(r);
    tinkex_sampling_client_free(s);
}
