//! The Rust API against the in-process emulator (issue 3 acceptance 1-2).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tinkex::core::types::{
    AdamParams, FinishReasonKind, ModelInput, QueueState, SamplingParams, TensorValues,
};
use tinkex::core::{ErrorKind, Event, LoraOptions, SampleOptions};

fn adam(lr: f64) -> AdamParams {
    AdamParams {
        learning_rate: lr,
        ..Default::default()
    }
}

#[tokio::test]
async fn training_loop_loss_falls_then_save_and_sample() {
    let emu = emulator("loop").await;
    let service = client(&emu);
    let caps = service.get_server_capabilities().await.unwrap();
    assert!(caps
        .supported_models
        .iter()
        .any(|m| m.model_name.as_deref() == Some(BASE_MODEL)));
    let training = service
        .create_lora_training_client(
            BASE_MODEL,
            LoraOptions {
                rank: 8,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(training.base_model(), Some(BASE_MODEL));
    let b = batch();
    let mut losses = Vec::new();
    for _ in 0..20 {
        let fb = training.forward_backward(b.clone(), "cross_entropy", None);
        let opt = training.optim_step(adam(1e-3));
        losses.push(mean_loss(&fb.await.unwrap(), 96));
        opt.await.unwrap();
    }
    assert!(losses[19] < 0.7 * losses[0], "{losses:?}");
    assert_eq!(optimizer_steps(&emu, training.model_id()).await, 20);

    let path = training.save_state("after-20").await.unwrap();
    assert!(path.ends_with("/weights/after-20"), "{path}");
    let named = training.save_weights_for_sampler("s20").await.unwrap();
    assert!(named.contains("/sampler_weights/s20"));
    let sampler = training
        .save_weights_and_get_sampling_client()
        .await
        .unwrap();
    let out = sampler
        .sample(
            ModelInput::from_ints(vec![100_000, 100_001]),
            4,
            SamplingParams {
                max_tokens: Some(6),
                ..Default::default()
            },
            SampleOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.sequences.len(), 4);
    assert!(out
        .sequences
        .iter()
        .all(|s| s.tokens.len() == 6 && s.sequence_id.is_some()));
    let from_path = service.create_sampling_client(&named).await.unwrap();
    assert_eq!(
        from_path.base_model(),
        BASE_MODEL,
        "base model learned from GET /samplers"
    );

    let rest = service.create_rest_client();
    let listed = rest.list_checkpoints(training.model_id()).await.unwrap();
    assert_eq!(listed.checkpoints.len(), 2);
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let sessions = control_get(&emu, "sessions").await;
    assert_eq!(sessions["sessions"][0]["finished"]["type"], "success");
}

#[tokio::test]
async fn a_1025_datum_batch_is_two_ordered_chunks_with_combined_metrics() {
    let emu = emulator("chunks").await;
    let service = client(&emu);
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let data: Vec<_> = (0..1025).map(|i| datum(&[i, i + 1, i + 2])).collect();
    let out = training
        .forward_backward(data, "cross_entropy", None)
        .await
        .unwrap();
    assert_eq!(out.loss_fn_outputs.len(), 1025);
    let elementwise: f64 = out
        .loss_fn_outputs
        .iter()
        .map(|o| match &o["elementwise_loss"].data {
            TensorValues::Float32(v) => v.iter().map(|&x| f64::from(x)).sum::<f64>(),
            _ => panic!("float32 expected"),
        })
        .sum();
    let sum = out.metrics["loss:sum"];
    assert!(
        (sum - elementwise).abs() < 1e-3 * sum.abs(),
        "loss:sum {sum} = Σ chunk sums {elementwise}"
    );
    let stats = control_get(&emu, &format!("models/{}", training.model_id())).await;
    assert_eq!(
        stats["next_seq_id"], 3,
        "two chunks took seq_ids 1 and 2: {stats}"
    );
    assert_eq!(stats["skipped_seq_ids"], serde_json::json!([]));
    training.optim_step(adam(1e-3)).await.unwrap();
    assert_eq!(
        control_get(&emu, &format!("models/{}", training.model_id())).await["next_seq_id"],
        4
    );
}

#[tokio::test]
async fn resuming_with_optimizer_state_matches_continuing() {
    let emu = emulator("resume").await;
    let service = client(&emu);
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let b = batch();
    for _ in 0..3 {
        training.forward_backward(b.clone(), "cross_entropy", None);
        training.optim_step(adam(1e-3));
    }
    let path = training.save_state("mid").await.unwrap();
    // Continue one step on the original client...
    training.forward_backward(b.clone(), "cross_entropy", None);
    training.optim_step(adam(1e-3));
    let continued = training
        .forward(b.clone(), "cross_entropy", None)
        .await
        .unwrap()
        .metrics["loss:sum"];
    // ...and the same step on a client resumed from the checkpoint.
    let resumed = service
        .create_training_client_from_state_with_optimizer(&path)
        .await
        .unwrap();
    resumed.forward_backward(b.clone(), "cross_entropy", None);
    resumed.optim_step(adam(1e-3));
    let after = resumed
        .forward(b.clone(), "cross_entropy", None)
        .await
        .unwrap()
        .metrics["loss:sum"];
    assert!(
        (after - continued).abs() <= 1e-9 * continued.abs(),
        "{after} vs {continued}"
    );

    // Without optimizer state the next step differs (fresh Adam moments).
    let fresh = service
        .create_training_client_from_state(&path)
        .await
        .unwrap();
    fresh.forward_backward(b.clone(), "cross_entropy", None);
    fresh.optim_step(adam(1e-3));
    let other = fresh
        .forward(b.clone(), "cross_entropy", None)
        .await
        .unwrap()
        .metrics["loss:sum"];
    assert!((other - continued).abs() > 1e-9, "optimizer state matters");
    // load_state on a live client brings the saved weights back; the result is the
    // server's LoadWeightsResponse (6.8).
    let loaded = training.load_state(&path).await.unwrap();
    assert_eq!(loaded.path.as_deref(), Some(path.as_str()));
    assert_eq!(loaded.model_id.as_deref(), Some(training.model_id()));
    assert_eq!(loaded.kind.as_deref(), Some("load_weights"));
    let saved_loss = training
        .forward(b, "cross_entropy", None)
        .await
        .unwrap()
        .metrics["loss:sum"];
    assert!(saved_loss > continued);
}

#[tokio::test]
async fn two_hundred_concurrent_samples_and_compute_logprobs() {
    let emu = emulator("samples").await;
    let service = client(&emu);
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let params = SamplingParams {
        max_tokens: Some(4),
        seed: None,
        ..Default::default()
    };
    let futures: Vec<_> = (0..200)
        .map(|i| {
            sampler.sample(
                ModelInput::from_ints(vec![i, i + 1]),
                1,
                params.clone(),
                SampleOptions::default(),
            )
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for f in futures {
        let out = f.await.unwrap();
        assert_eq!(out.sequences[0].tokens.len(), 4);
        ids.insert(out.sequences[0].sequence_id.clone().unwrap());
    }
    assert_eq!(ids.len(), 200, "every sample is a distinct request");

    let lp = sampler
        .compute_logprobs(ModelInput::from_ints(vec![5, 6, 7, 8]))
        .await
        .unwrap();
    assert_eq!(lp.len(), 4);
    assert!(lp[0].is_none() && lp[1..].iter().all(|x| x.is_some_and(|v| v <= 0.0)));
    let topk = sampler
        .sample(
            ModelInput::from_ints(vec![5, 6, 7]),
            1,
            SamplingParams {
                max_tokens: Some(2),
                ..Default::default()
            },
            SampleOptions {
                prompt_logprobs: true,
                topk_prompt_logprobs: 3,
                topk_sample_logprobs: 2,
                prompt_logprobs_last_n: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let rows = topk.topk_prompt_logprobs.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].is_none() && rows[1].as_ref().unwrap().len() == 3);
    assert_eq!(topk.sequences[0].topk_logprobs.as_ref().unwrap().len(), 2);
}

#[tokio::test]
async fn wait_timeout_is_typed_and_cancel_stops_polling() {
    // Polls are held 100 ms; forward_backward never finishes on the server, so every poll
    // reaches the emulator's handler (counted per request id) and answers try_again.
    let emu = emulator_with("cancel", |c| c.poll_hold = Duration::from_millis(100)).await;
    control_post(
        &emu,
        "delays",
        serde_json::json!({"ForwardBackward": 3_600_000}),
    )
    .await;
    let service = client(&emu);
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let f = training.forward_backward(batch(), "cross_entropy", None);
    let e = f
        .result_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    let id = f.request_id().expect("submitted before the timeout");
    let polls_of = |v: &serde_json::Value, id: &str| v["polls"][id].as_u64().unwrap_or(0);
    let before = polls_of(&control_get(&emu, "polls").await, &id);
    assert!(before >= 1, "polled during the wait");
    // The wait timed out but the operation goes on polling until cancelled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while polls_of(&control_get(&emu, "polls").await, &id) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "polling continues after the wait timed out"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.cancel();
    assert_eq!(f.clone().await.unwrap_err().kind, ErrorKind::Cancelled);
    let at_cancel = polls_of(&control_get(&emu, "polls").await, &id);
    // A marker operation on another model polls the same way (held 100 ms, try_again):
    // once it has been polled 5 times, a still-running poll loop of the cancelled
    // operation would have polled about as often. Only a poll already on the wire when
    // cancelling may still arrive.
    let other = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let marker = other.forward_backward(batch(), "cross_entropy", None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let polls = control_get(&emu, "polls").await;
        let marker_polls = marker.request_id().map_or(0, |m| polls_of(&polls, &m));
        if marker_polls >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the marker operation keeps polling: {polls}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = polls_of(&control_get(&emu, "polls").await, &id);
    assert!(
        after <= at_cancel + 1,
        "the server sees no further polls of a cancelled operation: {at_cancel} at cancel, {after} after the marker's 5"
    );
    marker.cancel();
}

async fn one_step_with_poll_fault(
    rule: serde_json::Value,
) -> (tinkex::core::Result<()>, Vec<Event>, u64) {
    let emu = emulator("dispatch").await;
    let service = client(&emu);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    service
        .events()
        .subscribe(move |e| sink.lock().unwrap().push(e.clone()));
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    fault(&emu, rule).await;
    training.forward_backward(batch(), "cross_entropy", None);
    let res = training.optim_step(adam(1e-3)).await.map(|_| ());
    let steps = optimizer_steps(&emu, training.model_id()).await;
    let events = events.lock().unwrap().clone();
    (res, events, steps)
}

#[tokio::test]
async fn retrieve_future_dispatch_table() {
    let rf = "/api/v1/retrieve_future";
    // Recoverable answers: the operation completes and the step is applied once.
    for rule in [
        serde_json::json!({"path": rf, "status": 408, "count": 2, "body": {"type": "try_again", "request_id": "x", "queue_state": "paused_capacity"}}),
        serde_json::json!({"path": rf, "status": 503, "count": 3}),
        serde_json::json!({"path": rf, "status": 429, "count": 2, "headers": {"retry-after-ms": "20"}}),
        serde_json::json!({"path": rf, "status": 400, "count": 2}),
        serde_json::json!({"path": rf, "status": 400, "count": 3, "body": {"detail": "transient"}}),
        serde_json::json!({"path": rf, "status": 402, "count": 2, "body": {"detail": "billing"}}),
        serde_json::json!({"path": rf, "reset": true, "count": 2}),
    ] {
        let (res, _, steps) = one_step_with_poll_fault(rule.clone()).await;
        assert!(res.is_ok(), "{rule}: {res:?}");
        assert_eq!(steps, 1, "{rule}");
    }
    // 408 with a queue state is reported as an event naming the training client's model.
    let (_, events, _) = one_step_with_poll_fault(serde_json::json!({"path": rf, "status": 408, "count": 1,
        "body": {"type": "try_again", "request_id": "x", "queue_state": "paused_rate_limit", "queue_state_reason": "busy"}})).await;
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::QueueState {
                state: QueueState::PausedRateLimit,
                client_id,
                ..
            } if client_id.ends_with(":train:0")
        )),
        "{events:?}"
    );
    // Fatal answers.
    let (res, _, _) =
        one_step_with_poll_fault(serde_json::json!({"path": rf, "status": 410})).await;
    assert_eq!(res.unwrap_err().kind, ErrorKind::Expired);
    let (res, _, _) = one_step_with_poll_fault(
        serde_json::json!({"path": rf, "status": 400, "body": {"detail": "bad"}}),
    )
    .await;
    assert_eq!(
        res.unwrap_err().kind,
        ErrorKind::User,
        "a 400 with a body fails after 3 retries"
    );
    let (res, _, _) = one_step_with_poll_fault(
        serde_json::json!({"path": rf, "status": 409, "body": {"detail": "conflict"}}),
    )
    .await;
    assert_eq!(
        res.unwrap_err().http_status,
        Some(409),
        "409 while polling is fatal"
    );
}

#[tokio::test]
async fn metadata_only_answers_and_failed_futures() {
    let emu = emulator_with("metadata", |c| c.inline_result_limit = 16).await;
    let service = client(&emu);
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let out = training
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    assert_eq!(
        out.loss_fn_outputs.len(),
        4,
        "result fetched after the metadata-only answer"
    );
    let e = training
        .forward_backward(batch(), "dro", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert_eq!(
        e.category,
        Some(tinkex::core::types::RequestErrorCategory::User)
    );
    assert!(e.request_id.is_some() && e.message.contains("dro"), "{e}");
    // The failed request consumed its seq_id: later requests still run.
    training.optim_step(adam(1e-3)).await.unwrap();
}

#[tokio::test]
async fn bad_arguments_fail_before_any_request() {
    assert!(tinkex::core::Config::builder()
        .api_key("nope")
        .base_url("http://127.0.0.1:1")
        .build()
        .is_err());
    let emu = emulator("badargs").await;
    let service = client(&emu);
    assert_eq!(
        service
            .create_sampling_client("s3://x")
            .await
            .unwrap_err()
            .kind,
        ErrorKind::User
    );
    assert_eq!(
        service
            .create_training_client_from_state("tinker://x/other/y")
            .await
            .unwrap_err()
            .kind,
        ErrorKind::User
    );
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    assert_eq!(
        training
            .forward_backward(vec![], "cross_entropy", None)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::User
    );
    let e = service
        .create_lora_training_client("no/such-model", LoraOptions::default())
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.http_status), (ErrorKind::User, Some(400)));
    assert!(e.message.contains("not supported"), "{e}");
}

#[tokio::test]
async fn retry_policy_can_be_set_per_call() {
    // The failed send leaves a gap in seq_ids; the emulator skips it after this timeout.
    let emu = emulator_with("percall", |c| {
        c.seq_gap_timeout = Duration::from_millis(300)
    })
    .await;
    let service = client(&emu);
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    fault(
        &emu,
        serde_json::json!({"path": "/api/v1/optim_step", "status": 503, "count": 3}),
    )
    .await;
    let capped = tinkex::core::RetryPolicy {
        max_attempts: Some(2),
        ..fast_retry()
    };
    let e = training
        .with_retry_policy(capped)
        .optim_step(adam(1e-3))
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.http_status), (ErrorKind::Transient, Some(503)));
    assert!(e.message.contains("gave up after 2 attempts"), "{e}");
    // The failed send passed its turn on; the client's own (unbounded) policy rides out the rest.
    training.optim_step(adam(1e-3)).await.unwrap();
    assert_eq!(optimizer_steps(&emu, training.model_id()).await, 1);
    let stats = control_get(&emu, &format!("models/{}", training.model_id())).await;
    assert_eq!(stats["skipped_seq_ids"], serde_json::json!([1]));
}
