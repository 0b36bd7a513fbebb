//! Hardening of the emulator (issue 11, item 12): the API key is skipped only by the exact
//! health route; compressed bodies are decoded with a limit; counts that drive allocation are
//! bounded; the `/_emulator` control routes need a token off loopback; framework errors have
//! JSON bodies; hostile values do not panic a handler.

mod support;

use prost::Message;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::time::Duration;
use support::*;
use tinkex::core::proto;
use tinkex_emulator::config::{ControlDenied, CONTROL_TOKEN_HEADER};
use tinkex_emulator::{Emulator, EmulatorConfig, RunningEmulator};

async fn start_with(tag: &str, f: impl FnOnce(&mut EmulatorConfig)) -> RunningEmulator {
    let mut cfg = EmulatorConfig::new(state_dir(tag));
    cfg.poll_hold = Duration::from_millis(200);
    f(&mut cfg);
    Emulator::start(cfg).await.expect("emulator starts")
}

/// A JSON value cut to a few hundred characters for assertion messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}… ({} chars)", &s[..300], s.len())
    } else {
        s
    }
}

/// Status and JSON body (Null when the body is not JSON).
async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn detail(v: &Value) -> &str {
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no JSON detail in {v}"))
}

// ---- 1. only the exact health route skips the API key ----

#[tokio::test]
async fn only_the_exact_health_route_skips_the_api_key() {
    let emu = start_with("healthz", |_| {}).await;
    let http = reqwest::Client::new();
    let base = emu.base_url();
    let (s, v) = answer(
        http.get(format!("{base}/api/v1/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));

    for (method, path) in [
        ("GET", "/api/v1/foo/healthz"),
        ("GET", "/api/v1/samplers/s:sample:0/healthz"),
        ("GET", "/api/v1/training_runs/r/healthz"),
        (
            "DELETE",
            "/api/v1/training_runs/r/checkpoints/weights/healthz",
        ),
        (
            "POST",
            "/api/v1/training_runs/r/checkpoints/weights/healthz/publish",
        ),
        ("POST", "/api/v1/healthz"),
    ] {
        let req = http.request(method.parse().unwrap(), format!("{base}{path}"));
        let (s, v) = answer(req.send().await.unwrap()).await;
        assert_eq!(s, 401, "{method} {path} needs a key: {v}");
        assert!(detail(&v).contains("X-API-Key"), "{v}");
    }
}

#[tokio::test]
async fn a_checkpoint_named_healthz_cannot_be_deleted_without_a_key() {
    let emu = start_with("healthz-ckpt", |_| {}).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let f = api
        .ok("save_weights", json!({"model_id": model, "path": "healthz", "seq_id": 1, "overwrite": false, "type": "save_weights"}))
        .await;
    api.result_json(f["request_id"].as_str().unwrap()).await;

    let url = format!(
        "{}/api/v1/training_runs/{model}/checkpoints/weights/healthz",
        emu.base_url()
    );
    let (s, v) = answer(api.http.delete(&url).send().await.unwrap()).await;
    assert_eq!(s, 401, "deleting without a key: {v}");
    let (s, listed) = api.get(&format!("training_runs/{model}/checkpoints")).await;
    assert_eq!(s, 200);
    assert_eq!(
        listed["checkpoints"].as_array().unwrap().len(),
        1,
        "the checkpoint survives: {listed}"
    );
    // With a key it is deleted as before.
    let (s, _) = answer(
        api.http
            .delete(&url)
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
}

// ---- 2. request bodies: raw limit and zstd with a decompressed limit ----

async fn post_fb(emu: &RunningEmulator, body: Vec<u8>, zstd: bool) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/forward_backward", emu.base_url()))
        .header("X-API-Key", KEY)
        .header("Content-Type", "application/x-protobuf");
    if zstd {
        req = req.header("Content-Encoding", "zstd");
    }
    answer(req.body(body).send().await.unwrap()).await
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB zero bytes each, with the given window
/// descriptor byte (no content size): 4 bytes per 128 KiB of output.
fn zstd_rle_bomb(window_descriptor: u8, blocks: usize) -> Vec<u8> {
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, window_descriptor];
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = last | (1 << 1) | ((128 * 1024) << 3); // RLE block of 128 KiB
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

#[tokio::test]
async fn a_zstd_body_within_the_limit_is_decoded() {
    let emu = start_with("zstd-ok", |c| c.max_decompressed_bytes = 1 << 20).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let req = proto::ForwardBackwardRequest {
        model_id: model.clone(),
        seq_id: 1,
        data: batch().iter().map(|(x, y)| proto_datum(x, y)).collect(),
        loss_fn: "cross_entropy".into(),
        forward_only: true,
        ..Default::default()
    };
    let compressed = ruzstd::encoding::compress_to_vec(
        req.encode_to_vec().as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let (s, v) = post_fb(&emu, compressed, true).await;
    assert_eq!(s, 200, "{}", short(&v));
    let loss = api.loss(v["request_id"].as_str().unwrap()).await;
    assert!(loss.is_finite() && loss > 0.0);
}

#[tokio::test]
async fn a_zstd_bomb_is_refused_with_413_once_it_passes_the_limit() {
    let emu = start_with("zstd-bomb", |c| c.max_decompressed_bytes = 1 << 20).await;
    // Window 512 KiB (within the limit), 10 MiB of output from 320 bytes.
    let bomb = zstd_rle_bomb(9 << 3, 80);
    let (s, v) = post_fb(&emu, bomb, true).await;
    assert_eq!(s, 413, "{}", short(&v));
    assert!(detail(&v).contains("1048576"), "names the limit: {v}");
}

#[tokio::test]
async fn a_zstd_frame_declaring_a_huge_window_or_size_is_refused_before_decoding() {
    let emu = start_with("zstd-window", |c| c.max_decompressed_bytes = 1 << 20).await;
    // Window descriptor 2 GiB (exponent 21).
    let (s, v) = post_fb(&emu, zstd_rle_bomb(21 << 3, 1), true).await;
    assert_eq!(s, 413, "huge window: {v}");
    assert!(detail(&v).contains("window"), "{v}");
    // Single segment with a declared content size of 2^40 bytes.
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
    frame.extend_from_slice(&[0x03 | (16 << 3), 0, 0, 0]); // one last RLE block of 16 bytes
    let (s, v) = post_fb(&emu, frame, true).await;
    assert_eq!(s, 413, "huge content size: {v}");
    // Garbage is a 400, not a 413 or a dropped connection.
    let (s, v) = post_fb(&emu, b"not zstd at all".to_vec(), true).await;
    assert_eq!(s, 400, "{}", short(&v));
    assert!(detail(&v).contains("zstd"), "{v}");
}

#[tokio::test]
async fn a_body_over_the_raw_limit_gets_413_with_a_json_body() {
    let emu = start_with("raw-limit", |c| c.max_body_bytes = 4096).await;
    let (s, v) = post_fb(&emu, vec![0u8; 64 * 1024], false).await;
    assert_eq!(s, 413, "{}", short(&v));
    assert!(detail(&v).contains("4096"), "names the limit: {v}");
    // JSON endpoints too.
    let (s, v) = answer(
        reqwest::Client::new()
            .post(format!("{}/api/v1/create_session", emu.base_url()))
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/json")
            .body(format!("{{\"tags\": [\"{}\"]}}", "x".repeat(10_000)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 413, "{}", short(&v));
    assert!(v["detail"].is_string(), "{v}");
}

// ---- 3. counts that drive allocation ----

async fn sampler(api: &Api) -> String {
    let session = api.session().await;
    let s = api
        .ok("create_sampling_session", json!({"session_id": session, "sampling_session_seq_id": 0, "base_model": BASE_MODEL, "type": "create_sampling_session"}))
        .await;
    s["sampling_session_id"].as_str().unwrap().to_string()
}

fn sample_body(sampler: &str, seq: i64, patch: Value) -> Value {
    let mut body = json!({"num_samples": 1, "prompt": {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]},
        "sampling_params": {"max_tokens": 2, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
        "sampling_session_id": sampler, "seq_id": seq, "prompt_logprobs": false, "topk_prompt_logprobs": 0,
        "topk_sample_logprobs": 0, "prompt_alt_tokens_k": 0, "type": "sample"});
    for (k, v) in patch.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn sample_counts_are_bounded_with_a_400_naming_the_field() {
    let emu = start_with("sample-limits", |_| {}).await;
    let api = Api::new(emu.base_url());
    let sampler = sampler(&api).await;
    let cases = [
        (json!({"num_samples": 100_000}), "num_samples"),
        (json!({"num_samples": i64::MAX}), "num_samples"),
        (
            json!({"topk_prompt_logprobs": 1i64 << 40}),
            "topk_prompt_logprobs",
        ),
        (
            json!({"topk_sample_logprobs": 5000}),
            "topk_sample_logprobs",
        ),
        (
            json!({"num_samples": 1024, "sampling_params": {"max_tokens": 30000, "temperature": 1.0, "top_k": -1, "top_p": 1.0}}),
            "max_tokens",
        ),
        (
            json!({"prompt": {"chunks": [{"type": "image_asset_pointer", "format": "png", "location": "x", "expected_tokens": 1_000_000},
                                         {"type": "image_asset_pointer", "format": "png", "location": "y", "expected_tokens": 1_000_000}]}}),
            "prompt",
        ),
    ];
    for (i, (patch, field)) in cases.into_iter().enumerate() {
        let (s, v) = api
            .post("asample", sample_body(&sampler, i as i64, patch.clone()))
            .await;
        assert_eq!(s, 400, "{patch}: {}", short(&v));
        assert!(detail(&v).contains(field), "{patch}: names {field}: {v}");
    }
    // The limits are configurable, and requests within them still work.
    let (s, v) = api
        .post(
            "asample",
            sample_body(
                &sampler,
                100,
                json!({"num_samples": 8, "topk_sample_logprobs": 3}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{}", short(&v));
    assert_eq!(v["sample_sequence_ids"].as_array().unwrap().len(), 8);
    let r = api.result_json(v["request_id"].as_str().unwrap()).await;
    assert_eq!(r["sequences"].as_array().unwrap().len(), 8, "{r}");
}

#[tokio::test]
async fn sample_limits_follow_the_config() {
    let emu = start_with("sample-limits-config", |c| {
        c.max_num_samples = 2;
        c.max_topk_logprobs = 1;
    })
    .await;
    let api = Api::new(emu.base_url());
    let sampler = sampler(&api).await;
    let (s, v) = api
        .post(
            "asample",
            sample_body(&sampler, 0, json!({"num_samples": 3})),
        )
        .await;
    assert_eq!(s, 400, "{}", short(&v));
    assert!(detail(&v).contains("at most 2"), "{v}");
    let (s, v) = api
        .post(
            "asample",
            sample_body(&sampler, 1, json!({"topk_prompt_logprobs": 2})),
        )
        .await;
    assert_eq!(s, 400, "{}", short(&v));
    let (s, v) = api
        .post(
            "asample",
            sample_body(&sampler, 2, json!({"num_samples": 2})),
        )
        .await;
    assert_eq!(s, 200, "{}", short(&v));
}

/// A JSON forward_backward whose model input and loss inputs are given as JSON values.
async fn json_fb(api: &Api, model: &str, seq: i64, data: Value) -> String {
    let v = api
        .ok(
            "forward_backward",
            json!({"model_id": model, "seq_id": seq, "type": "forward_backward",
                   "forward_backward_input": {"data": data, "loss_fn": "cross_entropy"}}),
        )
        .await;
    v["request_id"].as_str().unwrap().to_string()
}

fn target_tokens(n: usize) -> Value {
    json!({"data": vec![1; n], "dtype": "int64", "shape": [n]})
}

#[tokio::test]
async fn forward_backward_inputs_cannot_expand_without_bound() {
    let emu = start_with("fb-limits", |_| {}).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;

    // 64 media chunks of a million tokens each: 64M tokens from a few KB of JSON.
    let chunks: Vec<Value> = (0..64)
        .map(|i| json!({"type": "image_asset_pointer", "format": "png", "location": format!("l{i}"), "expected_tokens": 1_000_000}))
        .collect();
    let f = json_fb(
        &api,
        &model,
        1,
        json!([{"model_input": {"chunks": chunks}, "loss_fn_inputs": {"target_tokens": target_tokens(1)}}]),
    )
    .await;
    let r = api.result_json(&f).await;
    assert_eq!(r["category"], "user", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("limit of 1048576 tokens"),
        "{r}"
    );

    // Many datums, each within the per-input limit, together over the per-request limit.
    let datum = json!({"model_input": {"chunks": [{"type": "image_asset_pointer", "format": "png", "location": "l", "expected_tokens": 1_000_000}]},
                       "loss_fn_inputs": {"target_tokens": target_tokens(1)}});
    let f = json_fb(&api, &model, 2, Value::Array(vec![datum; 40])).await;
    let r = api.result_json(&f).await;
    assert!(r["error"].as_str().unwrap().contains("per request"), "{r}");

    // Sparse loss inputs whose dense form would be 2^62 values (over the request limit), or
    // just over the per-tensor limit.
    for (seq, cols, expect) in [
        (3, 1i64 << 62, "per request"),
        (4, (1i64 << 20) + 1, "sparse shape"),
    ] {
        let sparse = json!({"data": [], "dtype": "float32", "shape": [1, cols],
                            "sparse_crow_indices": [0, 0], "sparse_col_indices": []});
        let f = json_fb(
            &api,
            &model,
            seq,
            json!([{"model_input": {"chunks": [{"tokens": [1, 2], "type": "encoded_text"}]},
                    "loss_fn_inputs": {"target_tokens": target_tokens(2), "weights": sparse}}]),
        )
        .await;
        let r = api.result_json(&f).await;
        assert!(r["error"].as_str().unwrap().contains(expect), "{r}");
    }

    // The model still trains afterwards (the seq_ids were consumed in order).
    let ok = api.forward_backward(&model, 5, &batch(), true).await;
    assert!(api.loss(&ok).await > 0.0);
}

#[tokio::test]
async fn list_limits_out_of_range_are_a_400_naming_the_field() {
    let emu = start_with("page-limits", |_| {}).await;
    let api = Api::new(emu.base_url());
    for (path, field) in [
        ("training_runs?limit=-1", "limit"),
        ("training_runs?limit=1000000", "limit"),
        ("checkpoints?limit=10001", "limit"),
        ("checkpoints?offset=-5", "offset"),
        ("training_runs?limit=abc", "limit"),
    ] {
        let (s, v) = api.get(path).await;
        assert_eq!(s, 400, "{path}: {v}");
        assert!(detail(&v).contains(field), "{path}: {v}");
    }
    let (s, v) = api.get("training_runs?limit=5&offset=0").await;
    assert_eq!(s, 200, "{}", short(&v));
    assert_eq!(v["cursor"]["limit"], 5);
}

// ---- 4. the control routes ----

#[tokio::test]
async fn control_routes_require_the_configured_token() {
    let emu = start_with("control-token", |c| {
        c.control_token = Some("s3cret-token".into())
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/_emulator/futures", emu.base_url());
    let (s, v) = answer(http.get(&url).send().await.unwrap()).await;
    assert_eq!(s, 401, "{}", short(&v));
    assert!(detail(&v).contains(CONTROL_TOKEN_HEADER), "{v}");
    let (s, v) = answer(
        http.get(&url)
            .header(CONTROL_TOKEN_HEADER, "s3cret-tokeN")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401, "{}", short(&v));
    // A mutating route is refused too and has no effect.
    let (s, _) = answer(
        http.post(format!("{}/_emulator/faults", emu.base_url()))
            .json(&json!({"path": "/api/v1/healthz", "status": 500}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = answer(
        http.get(format!("{}/api/v1/healthz", emu.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "no fault was installed");
    let (s, v) = answer(
        http.get(&url)
            .header(CONTROL_TOKEN_HEADER, "s3cret-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{}", short(&v));
    assert!(v["total"].is_number(), "{v}");
}

#[test]
fn control_access_depends_on_the_bind_address_and_token() {
    let cfg = |host: &str, token: Option<&str>| {
        let mut c = EmulatorConfig::new("unused");
        c.host = host.parse::<IpAddr>().unwrap();
        c.control_token = token.map(str::to_string);
        c
    };
    // Loopback without a token: open, as before (every test relies on it).
    for host in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
        assert_eq!(cfg(host, None).control_access(None), Ok(()), "{host}");
    }
    // Any other address without a token: refused (403).
    for host in [
        "0.0.0.0",
        "::",
        "10.1.2.3",
        "192.168.0.7",
        "::ffff:10.0.0.1",
    ] {
        assert_eq!(
            cfg(host, None).control_access(None),
            Err(ControlDenied::NotLoopback),
            "{host}"
        );
        assert_eq!(
            cfg(host, None).control_access(Some(b"anything")),
            Err(ControlDenied::NotLoopback),
            "{host}"
        );
    }
    // With a token: required everywhere, loopback included.
    for host in ["0.0.0.0", "127.0.0.1"] {
        let c = cfg(host, Some("tok"));
        assert_eq!(c.control_access(None), Err(ControlDenied::MissingToken));
        assert_eq!(
            c.control_access(Some(b"tok2")),
            Err(ControlDenied::WrongToken)
        );
        assert_eq!(c.control_access(Some(b"")), Err(ControlDenied::WrongToken));
        assert_eq!(c.control_access(Some(b"tok")), Ok(()));
    }
}

#[tokio::test]
async fn an_empty_control_token_is_refused_at_start() {
    let mut cfg = EmulatorConfig::new(state_dir("empty-token"));
    cfg.control_token = Some(String::new());
    let err = Emulator::start(cfg).await.err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

// ---- siblings: JSON error bodies, no panics on hostile values, bounded telemetry ----

#[tokio::test]
async fn framework_errors_have_json_bodies() {
    let emu = start_with("json-errors", |_| {}).await;
    let http = reqwest::Client::new();
    // Wrong method: axum's 405 has an empty body of its own.
    let (s, v) = answer(
        http.get(format!("{}/api/v1/create_session", emu.base_url()))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 405);
    assert!(v["detail"].is_string(), "{v}");
    // Same on a control route.
    let (s, v) = answer(
        http.delete(format!("{}/_emulator/futures", emu.base_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 405);
    assert!(v["detail"].is_string(), "{v}");
}

#[tokio::test]
async fn an_enormous_outage_duration_is_accepted() {
    let emu = start_with("outage-overflow", |_| {}).await;
    let (s, v) = answer(
        reqwest::Client::new()
            .post(format!("{}/_emulator/outage", emu.base_url()))
            .json(&json!({"duration_ms": u64::MAX}))
            .send()
            .await
            .expect("an answer, not a dropped connection"),
    )
    .await;
    assert_eq!(s, 200, "{}", short(&v));
}

#[tokio::test]
async fn stored_telemetry_is_bounded() {
    use tinkex_emulator::state::MAX_TELEMETRY_BATCHES;
    let emu = start_with("telemetry-cap", |_| {}).await;
    let api = std::sync::Arc::new(Api::new(emu.base_url()));
    let total = MAX_TELEMETRY_BATCHES + 25;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..total).step_by(8) {
                let (s, _) = api.post("telemetry", json!({"events": [], "n": i})).await;
                assert_eq!(s, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        emu.state().telemetry.lock().unwrap().len(),
        MAX_TELEMETRY_BATCHES
    );
}
