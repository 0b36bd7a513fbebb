//! Issue 12, acceptance 2: a misspelled field in every closed JSON input of the C ABI is
//! `TINKEX_STATUS_INVALID_JSON` naming the field, and the open maps pass through.
//!
//! Generated from the committed schema (`docs/schema/`, checked by `tests/schema.rs`): for
//! each export's input, a valid example is walked alongside its schema; every object the
//! schema closes (`additionalProperties: false`) — the top level and nested ones such as
//! `timeouts`, `retry`, `sampling_params`, `lora_config`, Adam parameters, a datum, a chunk,
//! a tensor — gets one extra field, and the export must refuse it, naming it. Every open map
//! (`loss_fn_config`, `loss_fn_inputs`, `user_metadata`, an unknown optimizer family's
//! parameters) gets an extra entry, and the export must accept it. The valid example itself
//! must be accepted (so a refusal is about the field). Submissions that are accepted are not
//! awaited: the parse happens at submit.

mod ffi_support;

use ffi_support::*;
use serde_json::{json, Value};
use std::path::Path;
use tinkex::ffi::datum::*;
use tinkex::ffi::future::*;
use tinkex::ffi::sampling::*;
use tinkex::ffi::service::*;
use tinkex::ffi::status::tinkex_status;
use tinkex::ffi::training::*;

fn schema(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Follows `$ref`s into `$defs`.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/$defs/").expect("local $ref");
            resolve(root, &root["$defs"][name])
        }
        None => s,
    }
}

/// The alternatives of a schema (`anyOf` / `oneOf` flattened), resolved.
fn alternatives<'a>(root: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    let s = resolve(root, s);
    for key in ["anyOf", "oneOf"] {
        if let Some(list) = s.get(key).and_then(Value::as_array) {
            return list.iter().flat_map(|b| alternatives(root, b)).collect();
        }
    }
    vec![s]
}

/// The object schema an example object matches: properties cover its keys (unless the
/// object is open), required keys present, a `type` discriminator equal.
fn object_schema<'a>(
    root: &'a Value,
    s: &'a Value,
    obj: &serde_json::Map<String, Value>,
) -> &'a Value {
    let candidates = alternatives(root, s);
    candidates
        .iter()
        .copied()
        .find(|b| {
            let is_object = |t: &Value| {
                t == "object" || t.as_array().is_some_and(|a| a.contains(&json!("object")))
            };
            if b.get("type").is_some_and(|t| !is_object(t)) {
                return false;
            }
            let props = b.get("properties").and_then(Value::as_object);
            let closed = b.get("additionalProperties") == Some(&Value::Bool(false));
            let keys_ok = obj
                .keys()
                .all(|k| !closed || props.is_some_and(|p| p.contains_key(k)));
            let required_ok = b
                .get("required")
                .and_then(Value::as_array)
                .is_none_or(|r| r.iter().all(|k| obj.contains_key(k.as_str().unwrap())));
            let tag_ok = match (props.and_then(|p| p.get("type")), obj.get("type")) {
                (Some(t), Some(v)) => {
                    t.get("const").is_none_or(|c| c == v)
                        && t.get("enum")
                            .and_then(Value::as_array)
                            .is_none_or(|e| e.contains(v))
                        && t.get("not").is_none_or(|n| {
                            !n.get("enum")
                                .and_then(Value::as_array)
                                .is_some_and(|e| e.contains(v))
                        })
                }
                _ => true,
            };
            keys_ok && required_ok && tag_ok
        })
        .unwrap_or_else(|| panic!("no schema alternative matches {obj:?} in {s}"))
}

/// Where an object sits in the example: keys and array indices.
type Where = Vec<Value>;

struct Site {
    path: Where,
    closed: bool,
    /// A value the open map accepts (for the extra entry).
    sample: Value,
}

fn sites(root: &Value, s: &Value, v: &Value, path: Where, out: &mut Vec<Site>) {
    match v {
        Value::Object(obj) => {
            let s = object_schema(root, s, obj);
            let extra = s.get("additionalProperties");
            let closed = extra == Some(&Value::Bool(false));
            if closed {
                out.push(Site {
                    path: path.clone(),
                    closed: true,
                    sample: Value::Null,
                });
            } else if extra.is_some() {
                // An open map: its extra entry copies an existing value (typed maps) or is 1.
                let sample = obj.values().next().cloned().unwrap_or(json!(1));
                out.push(Site {
                    path: path.clone(),
                    closed: false,
                    sample,
                });
            }
            for (k, child) in obj {
                let child_schema = s
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| extra.filter(|e| e.is_object()));
                if let Some(cs) = child_schema {
                    let mut p = path.clone();
                    p.push(json!(k));
                    sites(root, cs, child, p, out);
                }
            }
        }
        Value::Array(items) => {
            let item_schemas: Vec<&Value> = alternatives(root, s)
                .into_iter()
                .filter_map(|b| b.get("items"))
                .collect();
            if let Some(is) = item_schemas.first() {
                for (i, item) in items.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(json!(i));
                    sites(root, is, item, p, out);
                }
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut serde_json::Map<String, Value> {
    let mut cur = v;
    for p in path {
        cur = match p {
            Value::String(k) => &mut cur[k.as_str()],
            Value::Number(i) => &mut cur[i.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    cur.as_object_mut().unwrap()
}

/// A call of one export with a JSON input: the status and the error text.
type Call<'a> = Box<dyn Fn(&[u8]) -> (tinkex_status, String) + 'a>;

/// Submits with no callback; frees the future of an accepted submission.
fn submit_status(
    f: impl FnOnce(*mut *mut tinkex_future, *mut *mut tinkex::ffi::error::tinkex_error) -> tinkex_status,
) -> (tinkex_status, String) {
    let mut fut = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let s = f(&mut fut, &mut err);
    tinkex_future_free(fut);
    (s, describe(err))
}

/// Checks one export's input against its schema; returns the number of closed and open
/// objects exercised.
fn check(export: &str, schema_name: &str, example: Value, call: &Call) -> (usize, usize) {
    let root = schema(schema_name);
    let (s, msg) = call(&serde_json::to_vec(&example).unwrap());
    assert_eq!(
        s,
        tinkex_status::Ok,
        "{export}: the valid example {example} is refused: {msg}"
    );
    let mut found = Vec::new();
    sites(&root, &root, &example, Vec::new(), &mut found);
    let (mut closed, mut open) = (0, 0);
    for site in found {
        let mut mutated = example.clone();
        let obj = at(&mut mutated, &site.path);
        if site.closed {
            let base = obj.keys().next().cloned().unwrap_or_else(|| "field".into());
            let field = format!("{base}_misspelled");
            obj.insert(field.clone(), json!(1));
            let (s, msg) = call(&serde_json::to_vec(&mutated).unwrap());
            assert_eq!(
                s,
                tinkex_status::InvalidJson,
                "{export}: unknown field {field} at {:?} not refused ({msg})",
                site.path
            );
            assert!(
                msg.contains(&field),
                "{export}: the message does not name {field}: {msg}"
            );
            closed += 1;
        } else {
            obj.insert("extra_open_entry".into(), site.sample.clone());
            let (s, msg) = call(&serde_json::to_vec(&mutated).unwrap());
            assert_eq!(
                s,
                tinkex_status::Ok,
                "{export}: the open map at {:?} refused an extra entry: {msg}",
                site.path
            );
            open += 1;
        }
    }
    (closed, open)
}

fn tensor_i64(v: &[i64]) -> Value {
    json!({"data": v, "dtype": "int64", "shape": [v.len()]})
}

fn datum() -> Value {
    json!({
        "model_input": {"chunks": [
            {"type": "encoded_text", "tokens": [101, 102, 103]},
            {"type": "image", "data": "iVBORw0KGgo=", "format": "png", "expected_tokens": 4}
        ]},
        "loss_fn_inputs": {
            "target_tokens": tensor_i64(&[102, 103, 104]),
            "weights": {"data": [1.0, 1.0, 0.5], "dtype": "float32"}
        }
    })
}

fn prompt() -> Value {
    json!({"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]})
}

fn sampling_client(svc: &Svc) -> *mut tinkex_sampling_client {
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
    let mut c = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    let s = tinkex_future_take_sampling_client(op.fut, &mut c, &mut err);
    assert_eq!(s, tinkex_status::Ok, "{}", describe(err));
    c
}

/// A datum batch with no datums. (`*_batch` consumes it under ABI 1; ABI 2.0 borrows it —
/// then it is leaked here, which a test may afford.)
fn empty_batch() -> *mut tinkex_datum_batch {
    let mut b = std::ptr::null_mut();
    let mut err = std::ptr::null_mut();
    assert_eq!(
        tinkex_datum_batch_new(&mut b, &mut err),
        tinkex_status::Ok,
        "{}",
        describe(err)
    );
    b
}

fn run_one(
    total: &mut (usize, usize),
    export: &str,
    schema: &str,
    example: Value,
    call: Call<'_>,
) -> (usize, usize) {
    let (c, o) = check(export, schema, example, &call);
    assert!(c > 0, "{export}: no closed object exercised");
    total.0 += c;
    total.1 += o;
    (c, o)
}

#[test]
fn service_client_config_rejects_unknown_fields_at_every_level() {
    let rt = Rt::new();
    let example = json!({
        "api_key": "tml-unknown-fields", "base_url": "http://127.0.0.1:9", "tags": ["a"],
        "project_id": "p", "display_name": "run", "telemetry": false,
        "allow_insecure_http": false,
        "telemetry_settings": {"max_batch": 100, "flush_interval_ms": 10000, "max_queue": 10000,
                               "http_timeout_ms": 5000, "drain_timeout_ms": 30000},
        "timeouts": {"connect_ms": 5000, "request_ms": 60000, "retrieve_future_ms": 45000,
                     "heartbeat_ms": 10000, "dynamic_config_ms": 10000, "telemetry_ms": 5000},
        "retry": {"progress_timeout_ms": 7200000, "base_delay_ms": 500, "max_delay_ms": 10000,
                  "jitter": 0.25, "max_attempts": 3, "max_retry_after_ms": 60000,
                  "billing_pause_step_ms": 5000, "billing_max_pause_ms": 3600000,
                  "min_poll_duration_ms": 1000},
        "heartbeat": {"interval_ms": 10000, "warn_after_ms": 120000},
        "progress_event_interval_ms": 10000,
        "limits": {"max_response_bytes": 67108864, "max_announced_response_bytes": 2147483648u64,
                   "max_redirects": 10}
    });
    let call: Call = Box::new(|json| {
        let mut svc = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let s = tinkex_service_client_new(rt.0, json.as_ptr(), json.len(), &mut svc, &mut err);
        tinkex_service_client_free(svc);
        (s, describe(err))
    });
    let (closed, open) = check("tinkex_service_client_new", "ConfigInput", example, &call);
    // The top level and its six nested objects.
    assert_eq!((closed, open), (6, 0));
    // Validation lives in the core: the jitter range is checked by Config::validate.
    let bad = j(&json!({"api_key": "tml-x", "retry": {"jitter": 1.5}}));
    let (s, msg) = call(&bad);
    assert_eq!(s, tinkex_status::User, "{msg}");
    assert!(msg.contains("jitter"), "{msg}");
}

#[test]
fn every_request_input_rejects_unknown_fields_and_keeps_open_maps_open() {
    let emu = Emu::start("unknown-fields");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    let sampler = sampling_client(&svc);
    let mut total = (0, 0);

    // One submit shape for every JSON export: (handle, json, len, on_done, user_data, out, err).
    macro_rules! json_call {
        ($handle:expr, $f:ident) => {
            Box::new(|json: &[u8]| {
                submit_status(|out, err| {
                    $f(
                        $handle,
                        json.as_ptr(),
                        json.len(),
                        None,
                        std::ptr::null_mut(),
                        out,
                        err,
                    )
                })
            })
        };
    }
    // The batch submits borrow the batch: it is freed after the call.
    macro_rules! batch_call {
        ($f:ident) => {
            Box::new(|json: &[u8]| {
                let batch = empty_batch();
                let status = submit_status(|out, err| {
                    $f(
                        training.0,
                        batch,
                        json.as_ptr(),
                        json.len(),
                        None,
                        std::ptr::null_mut(),
                        out,
                        err,
                    )
                });
                tinkex_datum_batch_free(batch);
                status
            })
        };
    }

    // Service client.
    let (c, _) = run_one(
        &mut total,
        "create_lora_training_client",
        "CreateLoraTrainingClientInput",
        json!({"base_model": BASE_MODEL,
               "lora_config": {"rank": 8, "seed": 3, "train_unembed": true, "train_mlp": true,
                               "train_attn": false}}),
        json_call!(svc.0, tinkex_service_client_create_lora_training_client),
    );
    assert_eq!(c, 2, "top level and lora_config");
    run_one(
        &mut total,
        "create_training_client_from_state",
        "CreateTrainingClientFromStateInput",
        json!({"path": "tinker://run/weights/x", "optimizer": true}),
        json_call!(
            svc.0,
            tinkex_service_client_create_training_client_from_state
        ),
    );
    run_one(
        &mut total,
        "create_sampling_client",
        "CreateSamplingClientInput",
        json!({"base_model": BASE_MODEL}),
        json_call!(svc.0, tinkex_service_client_create_sampling_client),
    );

    // Training client.
    let fb = json!({"data": [datum()], "loss_fn": "ppo",
                    "loss_fn_config": {"clip_low_threshold": 0.8, "loss_id": "x"}});
    for (export, call) in [
        (
            "forward_backward",
            json_call!(training.0, tinkex_training_client_forward_backward) as Call,
        ),
        (
            "forward",
            json_call!(training.0, tinkex_training_client_forward),
        ),
    ] {
        let (c, o) = run_one(&mut total, export, "ForwardBackwardInput", fb.clone(), call);
        // Top level, datum, model_input, two chunks, two tensors; loss_fn_config and
        // loss_fn_inputs are open.
        assert_eq!((c, o), (7, 2), "{export}");
    }
    for (export, call) in [
        (
            "forward_backward_batch",
            batch_call!(tinkex_training_client_forward_backward_batch) as Call,
        ),
        (
            "forward_batch",
            batch_call!(tinkex_training_client_forward_batch),
        ),
    ] {
        let (c, o) = run_one(
            &mut total,
            export,
            "LossInput",
            json!({"loss_fn": "cross_entropy", "loss_fn_config": {"beta": 0.1}}),
            call,
        );
        assert_eq!((c, o), (1, 1), "{export}");
    }
    run_one(
        &mut total,
        "optim_step (Adam)",
        "OptimStepInput",
        json!({"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12,
               "weight_decay": 0.0, "grad_clip_norm": 1.0}),
        json_call!(training.0, tinkex_training_client_optim_step),
    );
    // An unknown optimizer family passes through with its fields (PROTOCOL.md 10.8).
    let (c, o) = check(
        "optim_step (other family)",
        "OptimStepInput",
        json!({"type": "lion", "learning_rate": 0.01, "version": 1}),
        &(json_call!(training.0, tinkex_training_client_optim_step) as Call),
    );
    assert_eq!((c, o), (0, 1));
    // Dimuon parameters are closed (the official DimuonParams forbids extra fields).
    run_one(
        &mut total,
        "optim_step (Dimuon)",
        "OptimStepInput",
        json!({"type": "dimuon", "learning_rate": 0.01, "grad_clip_norm": 0.0, "beta1": 0.9}),
        json_call!(training.0, tinkex_training_client_optim_step),
    );
    let (c, o) = run_one(
        &mut total,
        "save_state",
        "SaveStateInput",
        json!({"path": "uf", "ttl_seconds": 3600, "overwrite": true,
               "user_metadata": {"k": "v"}}),
        json_call!(training.0, tinkex_training_client_save_state),
    );
    assert_eq!((c, o), (1, 1), "user_metadata is open");
    run_one(
        &mut total,
        "save_weights_for_sampler",
        "SaveWeightsForSamplerInput",
        json!({"path": "uf-sampler"}),
        json_call!(training.0, tinkex_training_client_save_weights_for_sampler),
    );
    run_one(
        &mut total,
        "load_state",
        "LoadStateInput",
        json!({"path": "tinker://run/weights/x", "optimizer": false}),
        json_call!(training.0, tinkex_training_client_load_state),
    );

    // Sampling client.
    let (c, _) = run_one(
        &mut total,
        "sample",
        "SampleInput",
        json!({"prompt": prompt(), "num_samples": 2,
               "sampling_params": {"max_tokens": 4, "seed": 1, "stop": [7], "temperature": 0.7,
                                   "top_k": -1, "top_p": 0.9},
               "prompt_logprobs": true, "topk_prompt_logprobs": 0, "topk_sample_logprobs": 0,
               "prompt_logprobs_last_n": 2}),
        json_call!(sampler, tinkex_sampling_client_sample),
    );
    assert_eq!(c, 4, "top level, prompt, chunk, sampling_params");
    run_one(
        &mut total,
        "compute_logprobs",
        "ComputeLogprobsInput",
        json!({"prompt": prompt()}),
        json_call!(sampler, tinkex_sampling_client_compute_logprobs),
    );

    // Close last: the valid example finishes the session.
    run_one(
        &mut total,
        "close",
        "CloseInput",
        json!({"reason": {"type": "errored"}, "detail": "test"}),
        json_call!(svc.0, tinkex_service_client_close),
    );
    tinkex_sampling_client_free(sampler);
    assert!(total.0 >= 25, "closed objects exercised: {total:?}");
}

#[test]
fn the_misspelled_learning_rate_of_the_issue_is_refused() {
    let emu = Emu::start("unknown-fields-lr");
    let rt = Rt::new();
    let svc = Svc::new(&rt, &emu.url);
    let training = training_client(&svc);
    let body = j(&json!({"learning_rat": 1e-3}));
    let (s, msg) = submit_status(|out, err| {
        tinkex_training_client_optim_step(
            training.0,
            body.as_ptr(),
            body.len(),
            None,
            std::ptr::null_mut(),
            out,
            err,
        )
    });
    assert_eq!(s, tinkex_status::InvalidJson, "{msg}");
    assert!(msg.contains("`learning_rat`"), "{msg}");
}
