//! Telemetry through the client against the emulator (issue 4 acceptance 9).

mod support;

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::telemetry::TelemetryConfig;
use tinkex::core::types::FinishReasonKind;
use tinkex::core::{Config, Event, LoraOptions, ServiceClient};

fn client(emu: &tinkex_emulator::RunningEmulator, settings: TelemetryConfig) -> ServiceClient {
    let config = Config::builder()
        .api_key("tml-telemetry-secret-key")
        .base_url(emu.base_url())
        .telemetry(true)
        .telemetry_settings(settings)
        .retry(fast_retry())
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

fn received(batches: &serde_json::Value) -> Vec<serde_json::Value> {
    batches["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn graceful_close_with_a_slow_sink_loses_nothing() {
    let emu = emulator("telemetry-slow").await;
    // Every telemetry batch takes 300 ms to be accepted.
    fault(
        &emu,
        json!({"path": "/api/v1/telemetry", "latency_ms": 300}),
    )
    .await;
    let service = client(
        &emu,
        TelemetryConfig {
            flush_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let failures: Vec<_> = (0..150)
        .map(|_| training.forward_backward(batch(), "dro", None))
        .collect();
    for f in failures {
        assert!(f.await.is_err());
    }
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let batches = control_get(&emu, "telemetry").await;
    let events = received(&batches);
    // Each failed future sends its `APIFuture.result_async.application_error` (16.4) and
    // the caller's `user_error` (16.3).
    assert_eq!(
        events.len(),
        301,
        "SESSION_START + 150 × (application_error + user_error), none lost"
    );
    assert_eq!(events[0]["event"], "SESSION_START");
    assert!(events[1..].iter().all(|e| e["event"] == "GENERIC_EVENT"));
    for name in ["user_error", "APIFuture.result_async.application_error"] {
        let n = events.iter().filter(|e| e["event_name"] == name).count();
        assert_eq!(n, 150, "{name}");
    }
    let indices: Vec<u64> = events
        .iter()
        .map(|e| e["event_session_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..301).collect::<Vec<_>>(), "in order");
    for b in batches["batches"].as_array().unwrap() {
        assert!(b["events"].as_array().unwrap().len() <= 100);
        assert_eq!(b["session_id"].as_str(), service.session_id().as_deref());
    }
    assert!(
        !batches.to_string().contains("telemetry-secret-key"),
        "the API key is never sent in telemetry"
    );
}

#[tokio::test]
async fn a_dead_sink_under_load_bounds_memory_counts_overflow_and_never_blocks_requests() {
    let emu = emulator("telemetry-dead").await;
    // The sink hangs far longer than anything else in this test.
    fault(
        &emu,
        json!({"path": "/api/v1/telemetry", "stall_ms": 60_000}),
    )
    .await;
    let settings = TelemetryConfig {
        max_queue: 200,
        flush_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let service = client(&emu, settings);
    let overflow = Arc::new(Mutex::new(Vec::new()));
    let sink = overflow.clone();
    service.events().subscribe(move |e| {
        if let Event::TelemetryOverflow { dropped } = e {
            sink.lock().unwrap().push(*dropped);
        }
    });
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    // 1,000 requests in a burst (1,000/s for 10 s scaled to one second), each recording an event.
    let t = Instant::now();
    let failures: Vec<_> = (0..1000)
        .map(|_| training.forward_backward(batch(), "dro", None))
        .collect();
    for f in failures {
        assert!(f.await.is_err());
    }
    let elapsed = t.elapsed();
    assert!(
        elapsed < Duration::from_secs(30),
        "requests never wait on the hanging sink ({elapsed:?})"
    );
    let telemetry = service.telemetry_counters().unwrap();
    assert!(
        telemetry.queued <= 200,
        "bounded queue: {}",
        telemetry.queued
    );
    // At most a few batches (5 s send timeout each) can leave the queue meanwhile.
    assert!(
        telemetry.dropped >= 300,
        "overflow counted: {}",
        telemetry.dropped
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while overflow.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "an overflow event is emitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
