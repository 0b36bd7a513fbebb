//! Wire-level tests of the emulator (issue 2, acceptance 1): ordering, dedup, long poll,
//! result negotiation, 410, auth, checkpoints across restarts, and a loss that falls.

mod support;

use prost::Message;
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::proto;

#[tokio::test]
async fn out_of_order_arrivals_execute_in_seq_id_order() {
    let dir = state_dir("order");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let b = batch();

    // Control: the loss of the batch before any step.
    let before = api.forward_backward(&model, 1, &b, true).await;
    let loss0 = api.loss(&before).await;

    // seq 4 (forward) and seq 3 (optim_step) arrive before seq 2 (forward_backward).
    let fwd = api.forward_backward(&model, 4, &b, true).await;
    let step = api.optim_step(&model, 3, 1e-2).await;
    let stats = api.control(&format!("models/{model}")).await;
    assert_eq!(stats["queued"], 2, "early arrivals are buffered: {stats}");
    assert_eq!(stats["next_seq_id"], 2);
    assert!(
        matches!(api.poll(&fwd, true).await, Poll::TryAgain(_)),
        "seq 4 waits for seq 2"
    );

    let fb = api.forward_backward(&model, 2, &b, false).await;
    let loss_fb = api.loss(&fb).await;
    api.result_json(&step).await;
    let loss_after = api.loss(&fwd).await;
    assert!(
        (loss_fb - loss0).abs() < 1e-6,
        "seq 2 ran before the step: {loss_fb} vs {loss0}"
    );
    assert!(
        loss_after < loss0,
        "seq 4 ran after the step: {loss_after} !< {loss0}"
    );
    let stats = api.control(&format!("models/{model}")).await;
    assert_eq!(stats["optimizer_steps"], 1);
    assert_eq!(stats["next_seq_id"], 5);
}

#[tokio::test]
async fn a_repeated_seq_id_is_the_same_request_and_steps_once() {
    let dir = state_dir("dedup");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let fb = api.forward_backward(&model, 1, &batch(), false).await;
    let fb_again = api.forward_backward(&model, 1, &batch(), false).await;
    assert_eq!(fb, fb_again);
    let s1 = api.optim_step(&model, 2, 1e-2).await;
    let s2 = api.optim_step(&model, 2, 1e-2).await;
    assert_eq!(s1, s2, "a retried optim_step returns the same request id");
    api.result_json(&s1).await;
    let s3 = api.optim_step(&model, 2, 1e-2).await;
    assert_eq!(s1, s3, "also after completion");
    let stats = api.control(&format!("models/{model}")).await;
    assert_eq!(stats["optimizer_steps"], 1, "{stats}");

    // Model creation is deduplicated by (session_id, model_seq_id) too.
    let body = json!({"session_id": session, "model_seq_id": 0, "base_model": BASE_MODEL, "type": "create_model"});
    let a = api.ok("create_model", body.clone()).await;
    let b = api.ok("create_model", body).await;
    assert_eq!(a["request_id"], b["request_id"]);
}

#[tokio::test]
async fn long_poll_holds_then_try_again_and_wakes_on_completion() {
    let dir = state_dir("longpoll");
    let hold = Duration::from_millis(400);
    let emu = start(&dir, hold).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    // seq 2 waits for seq 1, so it stays pending.
    let step = api.optim_step(&model, 2, 1e-3).await;
    let t = Instant::now();
    match api.poll(&step, false).await {
        Poll::TryAgain(v) => {
            assert_eq!(v["request_id"], step.as_str());
            assert_eq!(v["queue_state"], "active");
        }
        _ => panic!("expected try_again"),
    }
    assert!(
        t.elapsed() >= hold,
        "the server held the poll for the configured time"
    );

    // A poll already waiting returns as soon as the result exists.
    let long_emu = start(&state_dir("longpoll2"), Duration::from_secs(30)).await;
    let api2 = Api::new(long_emu.base_url());
    let session = api2.session().await;
    let model = api2.model(&session, 0).await;
    let step = api2.optim_step(&model, 2, 1e-3).await;
    let t = Instant::now();
    let poller = {
        let (http, base, step) = (api2.http.clone(), api2.base.clone(), step.clone());
        tokio::spawn(async move { Api { http, base }.poll(&step, false).await })
    };
    // Wait until the poll is held by the server before making the result exist.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api2.control("polls").await["polls"][&step]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the poll reaches the server");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    api2.forward_backward(&model, 1, &batch(), false).await;
    let res = poller.await.unwrap();
    assert!(matches!(res, Poll::Json(_)), "poll returned the result");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "woken long before the 30 s hold"
    );
}

#[tokio::test]
async fn results_are_protobuf_or_json_by_accept_and_stay_retrievable() {
    let dir = state_dir("negotiate");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let b = batch();
    let fb = api.forward_backward(&model, 1, &b, false).await;

    let bytes = api.result_proto(&fb).await;
    let out = proto::ForwardBackwardOutput::decode(bytes.as_slice()).unwrap();
    let record = &out.loss_fn_outputs[0];
    assert_eq!(record.num_datums, 4);
    let logprobs = &record.fields["logprobs"];
    assert_eq!(logprobs.dtype, proto::DType::Float32 as i32);
    let offsets = proto::unpack_le::<i64>(&logprobs.offsets).unwrap();
    assert_eq!(
        offsets,
        vec![0, 96, 192, 288, 384],
        "24 float32 logprobs per datum"
    );

    let v = api.result_json(&fb).await;
    assert_eq!(v["loss_fn_output_type"], "ArrayRecord");
    assert_eq!(v["loss_fn_outputs"].as_array().unwrap().len(), 4);
    assert_eq!(v["loss_fn_outputs"][0]["logprobs"]["shape"], json!([24]));
    let json_loss = v["metrics"]["loss:sum"].as_f64().unwrap();
    assert!((json_loss - out.metrics["loss:sum"]).abs() < 1e-9);

    // Non-tensor results are JSON even when protobuf is accepted.
    let step = api.optim_step(&model, 2, 1e-3).await;
    match api.poll(&step, true).await {
        Poll::Json(v) => assert!(v["metrics"].is_object(), "{v}"),
        Poll::TryAgain(_) => {
            let v = api.result_json(&step).await;
            assert!(v["metrics"].is_object(), "{v}");
        }
        _ => panic!("optim_step result must be JSON"),
    }
}

#[tokio::test]
async fn unknown_futures_get_410_and_errors_have_json_bodies() {
    let dir = state_dir("errors");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    match api.poll("req-does-not-exist", false).await {
        Poll::Status(410, v) => assert!(v["detail"].as_str().unwrap().contains("not found")),
        _ => panic!("expected 410"),
    }
    // Missing or malformed keys: 401 with a JSON body and a non-zero content length.
    for key in [None, Some("sk-wrong")] {
        let mut req = api
            .http
            .post(format!("{}/api/v1/create_session", api.base))
            .json(&json!({}));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert!(resp.content_length().unwrap_or(0) > 0);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["detail"].is_string());
    }
    // A user error fails the future with category "user" (HTTP 200).
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let req = proto::ForwardBackwardRequest {
        model_id: model.clone(),
        seq_id: 1,
        data: vec![proto_datum(&[1, 2, 3], &[2, 3, 4])],
        loss_fn: "dro".into(),
        ..Default::default()
    };
    let resp = api
        .http
        .post(format!("{}/api/v1/forward_backward", api.base))
        .header("X-API-Key", KEY)
        .header("Content-Type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    let id = resp.json::<serde_json::Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = api.result_json(&id).await;
    assert_eq!(v["category"], "user");
    assert!(v["error"].as_str().unwrap().contains("dro"), "{v}");
}

#[tokio::test]
async fn loss_falls_over_twenty_steps() {
    let dir = state_dir("loss");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let b = batch();
    let mut losses = Vec::new();
    for step in 0..20 {
        let fb = api.forward_backward(&model, 2 * step + 1, &b, false).await;
        let opt = api.optim_step(&model, i64::from(2 * step + 2), 1e-3).await;
        losses.push(api.loss(&fb).await);
        api.result_json(&opt).await;
    }
    assert!(
        losses[19] < 0.7 * losses[0],
        "loss fell substantially: {losses:?}"
    );
}

#[tokio::test]
async fn checkpoints_survive_a_restart_and_load_with_optimizer_state() {
    let dir = state_dir("restart");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let b = batch();
    for step in 0..3 {
        api.forward_backward(&model, 2 * step + 1, &b, false).await;
        let opt = api.optim_step(&model, i64::from(2 * step + 2), 1e-2).await;
        api.result_json(&opt).await;
    }
    let save = api
        .ok("save_weights", json!({"model_id": model, "path": "ckpt", "seq_id": 7, "overwrite": false, "type": "save_weights"}))
        .await;
    let saved = api.result_json(save["request_id"].as_str().unwrap()).await;
    let path = saved["path"].as_str().unwrap().to_string();
    assert_eq!(path, format!("tinker://{model}/weights/ckpt"));
    // Continue one more step on the live model: this is the reference.
    let fb = api.forward_backward(&model, 8, &b, false).await;
    api.result_proto(&fb).await;
    let opt = api.optim_step(&model, 9, 1e-2).await;
    api.result_json(&opt).await;
    let reference = api
        .loss(&api.forward_backward(&model, 10, &b, true).await)
        .await;
    emu.shutdown().await;

    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let (status, listed) = api.get(&format!("training_runs/{model}/checkpoints")).await;
    assert_eq!(status, 200);
    assert_eq!(listed["checkpoints"][0]["tinker_path"], path.as_str());
    let (_, runs) = api.get("training_runs").await;
    assert_eq!(
        runs["training_runs"][0]["last_checkpoint"]["checkpoint_id"],
        "weights/ckpt"
    );

    let session = api.session().await;
    let load = api
        .ok("load_weights", json!({"session_id": session, "model_seq_id": 0, "path": path, "optimizer": true, "type": "load_weights"}))
        .await;
    let loaded = api.result_json(load["request_id"].as_str().unwrap()).await;
    let new_model = loaded["model_id"].as_str().unwrap().to_string();
    assert_eq!(new_model, format!("{session}:train:0"));
    api.forward_backward(&new_model, 1, &b, false).await;
    let opt = api.optim_step(&new_model, 2, 1e-2).await;
    api.result_json(&opt).await;
    let resumed = api
        .loss(&api.forward_backward(&new_model, 3, &b, true).await)
        .await;
    assert!(
        (resumed - reference).abs() < 1e-6 * reference.abs().max(1.0),
        "resuming with optimizer state matches continuing: {resumed} vs {reference}"
    );
}

#[tokio::test]
async fn sampling_returns_sequence_ids_and_protobuf_sample_response() {
    let dir = state_dir("sample");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let s = api
        .ok("create_sampling_session", json!({"session_id": session, "sampling_session_seq_id": 0, "base_model": BASE_MODEL, "type": "create_sampling_session"}))
        .await;
    let sampler = s["sampling_session_id"].as_str().unwrap().to_string();
    let body = json!({"num_samples": 4, "prompt": {"chunks": [{"tokens": [151644, 872, 198], "type": "encoded_text"}]},
        "sampling_params": {"max_tokens": 5, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
        "sampling_session_id": sampler, "seq_id": 0, "prompt_logprobs": true, "topk_prompt_logprobs": 2,
        "topk_sample_logprobs": 0, "prompt_alt_tokens_k": 0, "type": "sample"});
    let f = api.ok("asample", body.clone()).await;
    assert_eq!(f["sample_sequence_ids"].as_array().unwrap().len(), 4);
    assert_eq!(
        api.ok("asample", body).await["request_id"],
        f["request_id"],
        "same seq_id, same request"
    );
    let bytes = api.result_proto(f["request_id"].as_str().unwrap()).await;
    let r = proto::SampleResponse::decode(bytes.as_slice()).unwrap();
    assert_eq!(r.sequences.len(), 4);
    for seq in &r.sequences {
        assert_eq!(proto::unpack_le::<i32>(&seq.tokens).unwrap().len(), 5);
        assert_eq!(seq.stop_reason, proto::StopReason::Length as i32);
    }
    let prompt = proto::unpack_le::<f32>(r.prompt_logprobs.as_ref().unwrap()).unwrap();
    assert!(prompt[0].is_nan() && prompt[1..].iter().all(|x| x.is_finite() && *x <= 0.0));
    let topk = r.topk_prompt_logprobs.unwrap();
    assert_eq!((topk.k, topk.length), (2, 3));
}

#[tokio::test]
async fn name_conflicts_are_409_and_context_length_is_enforced() {
    let dir = state_dir("conflict");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let save = |seq: i64, overwrite: bool| json!({"model_id": model, "path": "same", "seq_id": seq, "overwrite": overwrite, "type": "save_weights"});
    let first = api.ok("save_weights", save(1, false)).await;
    api.result_json(first["request_id"].as_str().unwrap()).await;
    let (status, body) = api.post("save_weights", save(2, false)).await;
    assert_eq!(status, 409, "{body}");
    let again = api.ok("save_weights", save(2, true)).await;
    api.result_json(again["request_id"].as_str().unwrap()).await;

    let long: Vec<i64> = (0..32_769).collect();
    let fb = api
        .forward_backward(&model, 3, &[(long.clone(), long)], true)
        .await;
    let v = api.result_json(&fb).await;
    assert_eq!(v["category"], "user");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("max context length 32768"),
        "{v}"
    );

    let ext = api
        .ok(
            "save_weights_external",
            json!({"model_id": model, "path": "hf", "seq_id": 4, "type": "save_weights_external"}),
        )
        .await;
    let r = api.result_json(ext["request_id"].as_str().unwrap()).await;
    assert_eq!(r["path"], format!("tinker://{model}/external_weights/hf"));
    assert!(r["size_bytes"].as_u64().unwrap() > 0);
    let (_, s) = api.get(&format!("sessions/{session}")).await;
    assert_eq!(s["training_run_ids"], json!([model]));
}

#[tokio::test]
async fn live_models_and_sessions_survive_a_restart() {
    let dir = state_dir("live");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let b = batch();
    let fb = api.forward_backward(&model, 1, &b, false).await;
    let loss_before = api.loss(&fb).await;
    // Gradients accumulated by seq 1 are not applied yet when the server dies.
    emu.shutdown().await;

    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let (status, _) = api
        .post(
            "session_heartbeat",
            json!({"session_id": session, "type": "session_heartbeat"}),
        )
        .await;
    assert_eq!(status, 200, "the session is known after the restart");
    assert!(
        (api.loss(&fb).await - loss_before).abs() < 1e-12,
        "old results stay retrievable"
    );
    let again = api.forward_backward(&model, 1, &b, false).await;
    assert_eq!(
        again, fb,
        "an executed seq_id resubmitted is the same request"
    );
    let step = api.optim_step(&model, 2, 1e-2).await;
    api.result_json(&step).await;
    let stats = api.control(&format!("models/{model}")).await;
    assert_eq!(
        (
            stats["optimizer_steps"].as_u64(),
            stats["next_seq_id"].as_i64()
        ),
        (Some(1), Some(3))
    );
    let after = api
        .loss(&api.forward_backward(&model, 3, &b, true).await)
        .await;
    assert!(
        after < loss_before,
        "the step used the gradients accumulated before the restart"
    );
}

#[tokio::test]
async fn zero_compute_mode_returns_canned_results_of_the_right_shape() {
    let dir = state_dir("zero");
    let mut cfg = tinkex_emulator::EmulatorConfig::new(&dir);
    cfg.poll_hold = Duration::from_millis(200);
    cfg.zero_compute = true;
    cfg.persist_live_state = false;
    let emu = tinkex_emulator::Emulator::start(cfg).await.unwrap();
    let api = Api::new(emu.base_url());
    let session = api.session().await;
    let model = api.model(&session, 0).await;
    let fb = api.forward_backward(&model, 1, &batch(), false).await;
    let out = proto::ForwardBackwardOutput::decode(api.result_proto(&fb).await.as_slice()).unwrap();
    assert_eq!(out.metrics["loss:sum"], 0.0);
    assert_eq!(out.loss_fn_outputs[0].num_datums, 4);
    assert!(!dir.join("live").exists(), "nothing persisted");
}

#[tokio::test]
async fn flags_are_settable_and_the_journal_records_each_request() {
    let dir = state_dir("flags");
    let emu = start(&dir, Duration::from_millis(200)).await;
    let api = Api::new(emu.base_url());
    let (status, defaults) = api
        .post("client/config", json!({"sdk_version": "0.38.0"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(defaults["sample_use_retrieve_futures"], json!(false));
    assert_eq!(
        defaults["billing_exception_max_pause_duration_sec"],
        json!(3600)
    );
    let (status, _) = emu
        .control(
            "POST",
            "flags",
            Some(&json!({
                "client_config": {"sample_use_retrieve_futures": true, "proto_compress_fwdbwd": null},
                "dynamic_config": {"sample_cancel_enabled": true}
            })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, client) = api
        .post("client/config", json!({"sdk_version": "0.38.0"}))
        .await;
    assert_eq!(client["sample_use_retrieve_futures"], json!(true));
    assert!(
        client.get("proto_compress_fwdbwd").is_none(),
        "null removes a flag"
    );
    let (_, dynamic) = api
        .post("client/dynamic_config", json!({"sdk_version": "0.38.0"}))
        .await;
    assert_eq!(dynamic["sample_cancel_enabled"], json!(true));
    let (status, _) = emu
        .control("POST", "flags", Some(&json!({"nope": {}})))
        .await;
    assert_eq!(status, 400, "unknown parts are refused");

    let (_, journal) = emu.control("GET", "journal", None).await;
    let entries = journal["journal"].as_array().unwrap();
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v1/client/config",
            "/api/v1/client/config",
            "/api/v1/client/dynamic_config"
        ]
    );
    assert!(entries.iter().all(|e| e["status"] == json!(200)));
    emu.control("DELETE", "journal", None).await;
    let (_, journal) = emu.control("GET", "journal", None).await;
    assert_eq!(journal["journal"], json!([]));
}
