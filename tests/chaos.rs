//! The time-scaled reliability suite (issue 4): outages, random failures, resets and stalls,
//! slow and never-finishing operations, heartbeat trouble, long sessions, spinning polls.
//! Durations are written in real-service units and scaled down (see `scaled_config`).

mod support;

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::types::{AdamParams, ModelInput, SamplingParams};
use tinkex::core::{ErrorKind, Event, LoraOptions, SampleOptions, ServiceClient, TrainingClient};

fn adam() -> AdamParams {
    AdamParams {
        learning_rate: 1e-3,
        ..Default::default()
    }
}

async fn trainer(
    emu: &tinkex_emulator::RunningEmulator,
    scale: f64,
) -> (ServiceClient, TrainingClient) {
    let service = ServiceClient::new(scaled_config(emu.base_url(), scale)).unwrap();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    (service, training)
}

/// Runs `steps` forward_backward + optim_step pairs, all awaited; panics on any failure.
async fn train_steps(training: &TrainingClient, steps: usize) {
    let b = batch();
    let mut pending = Vec::new();
    for _ in 0..steps {
        pending.push((
            training.forward_backward(b.clone(), "cross_entropy", None),
            training.optim_step(adam()),
        ));
    }
    for (i, (fb, opt)) in pending.into_iter().enumerate() {
        fb.await
            .unwrap_or_else(|e| panic!("forward_backward {i} failed: {e}"));
        opt.await
            .unwrap_or_else(|e| panic!("optim_step {i} failed: {e}"));
    }
}

async fn outage_during_training_and_sampling(outage_secs: f64, scale: f64) {
    let emu = scaled_emulator("outage", scale).await;
    let (service, training) = trainer(&emu, scale).await;
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    train_steps(&training, 2).await;
    let outage_ms = (outage_secs * 1000.0 * scale) as u64;
    control_post(&emu, "outage", json!({"duration_ms": outage_ms})).await;
    let started = Instant::now();
    let samples: Vec<_> = (0..10)
        .map(|i| {
            sampler.sample(
                ModelInput::from_ints(vec![i, i + 1]),
                1,
                SamplingParams {
                    max_tokens: Some(3),
                    ..Default::default()
                },
                SampleOptions::default(),
            )
        })
        .collect();
    train_steps(&training, 5).await;
    for s in samples {
        s.await.expect("every sample completes");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(outage_ms),
        "the work waited out the outage"
    );
    assert_eq!(
        optimizer_steps(&emu, training.model_id()).await,
        7,
        "steps on the server = steps of the client"
    );
}

#[tokio::test]
async fn outage_of_30_seconds() {
    outage_during_training_and_sampling(30.0, 0.01).await;
}

#[tokio::test]
async fn outage_of_2_minutes() {
    outage_during_training_and_sampling(120.0, 0.01).await;
}

#[tokio::test]
async fn outage_of_10_minutes() {
    outage_during_training_and_sampling(600.0, 0.01).await;
}

#[tokio::test]
async fn half_of_all_requests_fail_with_503_for_a_50_step_loop() {
    let scale = 0.01;
    let emu = scaled_emulator("random503", scale).await;
    let (_service, training) = trainer(&emu, scale).await;
    // Before the handler (request lost) and after it (request done, answer lost).
    fault(
        &emu,
        json!({"path": "/api/v1/", "status": 503, "probability": 0.25}),
    )
    .await;
    fault(
        &emu,
        json!({"path": "/api/v1/", "status": 503, "probability": 0.33, "after_handler": true}),
    )
    .await;
    train_steps(&training, 50).await;
    assert_eq!(
        optimizer_steps(&emu, training.model_id()).await,
        50,
        "no step lost or applied twice"
    );
    let faults = control_get(&emu, "faults").await;
    let hits: u64 = faults["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["hits"].as_u64().unwrap())
        .sum();
    assert!(hits > 50, "the faults really fired ({hits})");
}

#[tokio::test]
async fn intermittent_503_bursts_every_10_seconds() {
    let scale = 0.01;
    let emu = scaled_emulator("bursts", scale).await;
    let (_service, training) = trainer(&emu, scale).await;
    // The bursts are installed in-process: the injector never depends on the network it
    // breaks.
    let state = emu.state().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burster = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let rule = json!({"path": "/api/v1/", "status": 503, "duration_ms": 30});
                state.faults.add(serde_json::from_value(rule).unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    train_steps(&training, 30).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    burster.await.unwrap();
    assert_eq!(optimizer_steps(&emu, training.model_id()).await, 30);
}

#[tokio::test]
async fn resets_mid_response_and_stalls_beyond_the_read_timeout_lose_nothing() {
    let scale = 0.01;
    let emu = scaled_emulator("resets", scale).await;
    let (_service, training) = trainer(&emu, scale).await;
    // The server executes the request, then the connection breaks mid-answer.
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "reset": true, "after_handler": true, "count": 3}),
    )
    .await;
    fault(&emu, json!({"path": "/api/v1/forward_backward", "reset": true, "after_handler": true, "count": 2})).await;
    fault(
        &emu,
        json!({"path": "/api/v1/retrieve_future", "reset": true, "count": 3}),
    )
    .await;
    // Stalls longer than the client's read timeout (60 s scaled = 0.6 s).
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "stall_ms": 1500, "after_handler": true, "count": 2}),
    )
    .await;
    fault(
        &emu,
        json!({"path": "/api/v1/retrieve_future", "stall_ms": 1500, "count": 2}),
    )
    .await;
    train_steps(&training, 6).await;
    assert_eq!(optimizer_steps(&emu, training.model_id()).await, 6);
}

#[tokio::test]
async fn an_hour_long_save_succeeds_under_the_two_hour_timeout() {
    let scale = 0.001; // 60 min -> 3.6 s, progress timeout 120 min -> 7.2 s
    let emu = scaled_emulator("slowsave", scale).await;
    let (_service, training) = trainer(&emu, scale).await;
    control_post(&emu, "delays", json!({"SaveWeights": 3600})).await;
    let t = Instant::now();
    let path = training
        .save_state("slow")
        .await
        .expect("a slow save is not a stuck save");
    assert!(path.ends_with("/weights/slow"));
    assert!(t.elapsed() >= Duration::from_millis(3600));
}

#[tokio::test]
async fn a_save_that_never_completes_fails_with_no_progress_at_the_timeout() {
    let scale = 0.0005; // progress timeout 7200 s -> 3.6 s
    let emu = scaled_emulator("stuck", scale).await;
    let (service, training) = trainer(&emu, scale).await;
    control_post(&emu, "delays", json!({"SaveWeights": 3_600_000})).await;
    let t = Instant::now();
    let e = training.save_state("never").await.unwrap_err();
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(e.kind, ErrorKind::NoProgress, "{e}");
    assert!(
        (3.42..=3.78).contains(&elapsed),
        "failed at {elapsed:.3} s, expected 3.6 s ± 5 %"
    );
    assert!(service.status().progress.in_flight == 0);

    // A request completing meanwhile pushes the deadline back.
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let t = Instant::now();
    let stuck = training.save_state("never-2");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    sampler
        .sample(
            ModelInput::from_ints(vec![1, 2]),
            1,
            SamplingParams {
                max_tokens: Some(2),
                ..Default::default()
            },
            SampleOptions::default(),
        )
        .await
        .unwrap();
    let e = stuck.await.unwrap_err();
    let elapsed = t.elapsed().as_secs_f64();
    assert_eq!(e.kind, ErrorKind::NoProgress);
    assert!(
        elapsed >= 2.0 + 3.42,
        "deadline moved by the completed sample: failed at {elapsed:.3} s"
    );
}

#[tokio::test]
async fn heartbeat_failing_for_5_minutes_keeps_the_session_then_410_expires_it() {
    let scale = 0.01; // heartbeat every 0.1 s, warning after 1.2 s, 5 min -> 3 s
    let emu = scaled_emulator("heartbeat", scale).await;
    let (service, training) = trainer(&emu, scale).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    service
        .events()
        .subscribe(move |e| sink.lock().unwrap().push(e.clone()));
    fault(
        &emu,
        json!({"path": "/api/v1/session_heartbeat", "status": 503, "duration_ms": 3000}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let warnings = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::HeartbeatWarning { .. }))
            .count();
        if warnings >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "heartbeat warnings are emitted once per interval after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_warning = events.lock().unwrap().iter().find_map(|e| match e {
        Event::HeartbeatWarning {
            failing_for_secs, ..
        } => Some(*failing_for_secs),
        _ => None,
    });
    assert!(
        first_warning.unwrap() >= 1.2,
        "no warning before 120 s (scaled) of failure"
    );
    train_steps(&training, 1).await;
    assert!(
        !service.status().session_expired,
        "transient failures never drop the session"
    );

    fault(&emu, json!({"path": "/api/v1/session_heartbeat", "status": 410, "body": {"detail": "session finished"}})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !service.status().session_expired {
        assert!(
            Instant::now() < deadline,
            "a 410 heartbeat expires the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::SessionExpired { .. })));
    let t = Instant::now();
    let e = training.optim_step(adam()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::SessionExpired);
    assert!(t.elapsed() < Duration::from_millis(100), "fails fast");
}

#[tokio::test]
async fn a_three_hour_session_with_partitions_every_30_minutes_completes() {
    let scale = 0.001; // 3 h -> 10.8 s; partitions of 5-30 s every 30 min -> 5-30 ms every 1.8 s
    let emu = scaled_emulator("longsession", scale).await;
    let (service, training) = trainer(&emu, scale).await;
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let started = Instant::now();
    let session = Duration::from_secs_f64(3.0 * 3600.0 * scale);
    // Partitions are started in-process (an HTTP control request could itself be cut by
    // the previous partition, and then not count); `control_get` below is in-process too.
    let state = emu.state().clone();
    let partitions = tokio::spawn(async move {
        let mut n = 0u64;
        while started.elapsed() < session {
            tokio::time::sleep(Duration::from_secs_f64(1800.0 * scale)).await;
            let ms = 5 + (n * 7919) % 26;
            n += 1;
            state.outage.start(Duration::from_millis(ms));
        }
        n
    });
    let mut steps = 0;
    while started.elapsed() < session {
        train_steps(&training, 5).await;
        sampler
            .sample(
                ModelInput::from_ints(vec![7, 8]),
                1,
                SamplingParams {
                    max_tokens: Some(2),
                    ..Default::default()
                },
                SampleOptions::default(),
            )
            .await
            .unwrap();
        steps += 5;
    }
    let partitions = partitions.await.unwrap();
    assert!(partitions >= 5, "{partitions} partitions");
    assert_eq!(optimizer_steps(&emu, training.model_id()).await, steps);
}

#[tokio::test]
async fn a_poll_endpoint_answering_503_instantly_is_not_spun_on() {
    let scale = 0.1; // backoff 50 ms .. 1 s; a 5 s window -> 0.5 s
    let emu = scaled_emulator("nospin", scale).await;
    let (_service, training) = trainer(&emu, scale).await;
    let before = control_get(&emu, "requests").await["requests"]["/api/v1/retrieve_future"]
        .as_u64()
        .unwrap_or(0);
    fault(
        &emu,
        json!({"path": "/api/v1/retrieve_future", "status": 503, "duration_ms": 500}),
    )
    .await;
    training.optim_step(adam()).await.unwrap();
    let polls = control_get(&emu, "requests").await["requests"]["/api/v1/retrieve_future"]
        .as_u64()
        .unwrap()
        - before;
    // Backoff 50, 100, 200, 400 ms (±25 %) covers the window in about 5 polls; a client
    // re-polling at once would send thousands.
    assert!(
        polls <= 10,
        "{polls} polls during a 0.5 s burst of instant 503s"
    );
}

#[tokio::test]
async fn progress_and_retry_events_are_emitted_while_waiting() {
    let scale = 0.01; // progress events every 0.1 s
    let emu = scaled_emulator("events", scale).await;
    let (service, training) = trainer(&emu, scale).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    service
        .events()
        .subscribe(move |e| sink.lock().unwrap().push(e.clone()));
    control_post(&emu, "delays", json!({"OptimStep": 500})).await;
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 503, "count": 2}),
    )
    .await;
    training.optim_step(adam()).await.unwrap();
    let events = events.lock().unwrap().clone();
    let progress: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { .. }))
        .collect();
    assert!(progress.len() >= 3, "{events:?}");
    match progress.last().unwrap() {
        Event::Progress {
            request_id,
            request_type,
            attempts,
            polls,
            deadline_in_secs,
            ..
        } => {
            assert!(request_id.is_some());
            assert_eq!(request_type, "OptimStep");
            assert_eq!(*attempts, 3, "two 503s, then accepted");
            assert!(*polls >= 1);
            assert!(*deadline_in_secs > 0.0 && *deadline_in_secs <= 72.0);
        }
        _ => unreachable!(),
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Retry { .. }))
            .count(),
        2
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Summary { in_flight: 1, .. })));
}
