//! PROTOCOL.md 16.4: the generic retry events (holder loop, sampling retry handler, poll
//! loop) reach the telemetry endpoint with the table's keys, and never carry the API key.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use tinkex::core::retry_handler::RetryConfig;
use tinkex::core::telemetry::TelemetryConfig;
use tinkex::core::types::{FinishReasonKind, ModelInput, SamplingParams};
use tinkex::core::{Config, LoraOptions, SampleOptions, ServiceClient};
use tinkex_emulator::RunningEmulator;

const KEY: &str = "tml-conformance-telemetry-secret";

/// A client with telemetry on, no HTTP-layer retries (so a single injected 503 reaches the
/// holder loop) and millisecond backoffs.
fn service(emu: &RunningEmulator) -> ServiceClient {
    let config = Config::builder()
        .api_key(KEY)
        .base_url(emu.base_url())
        .telemetry(true)
        .telemetry_settings(TelemetryConfig {
            flush_interval: Duration::from_millis(50),
            ..Default::default()
        })
        .retry(tinkex::core::RetryPolicy {
            http_max_retries: 0,
            ..fast_retry()
        })
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

/// Closes `svc` (which drains its telemetry) and returns every generic event received,
/// after checking that no batch contains the API key.
async fn generic_events(emu: &RunningEmulator, svc: &ServiceClient) -> Vec<Value> {
    svc.close(FinishReasonKind::Success, None).await.unwrap();
    let batches = control_get(emu, "telemetry").await;
    assert!(
        !batches.to_string().contains(KEY),
        "the API key is never sent in telemetry"
    );
    batches["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .filter(|e| e["event"] == "GENERIC_EVENT")
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event_name"] == name).collect()
}

fn assert_keys(event: &Value, keys: &[&str]) {
    let data = event["event_data"].as_object().unwrap();
    for k in keys {
        assert!(data.contains_key(*k), "{k} missing in {event}");
    }
    for forbidden in ["request_headers", "response_headers"] {
        assert!(!data.contains_key(forbidden), "{forbidden} sent: {event}");
    }
}

/// 16.4: a 503 on a holder-loop send yields `InternalClientHolder.execute_with_retries.exception`.
#[tokio::test]
async fn a_failed_holder_loop_attempt_sends_an_execute_with_retries_event() {
    let emu = emulator("conf-telem-holder").await;
    let svc = service(&emu);
    let training = svc
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    fault(
        &emu,
        json!({"path": "forward_backward", "status": 503, "count": 1}),
    )
    .await;
    training
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    let events = generic_events(&emu, &svc).await;
    let holder = named(
        &events,
        "InternalClientHolder.execute_with_retries.exception",
    );
    assert_eq!(holder.len(), 1, "{events:?}");
    let e = holder[0];
    assert_keys(
        e,
        &[
            "func",
            "exception",
            "exception_type",
            "exception_stack",
            "status_code",
            "is_retryable",
            "is_user_error",
            "attempt_count",
            "start_time",
            "current_time",
            "elapsed_time",
        ],
    );
    let d = &e["event_data"];
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(d["status_code"], 503);
    assert_eq!(d["is_retryable"], true);
    assert_eq!(d["is_user_error"], false);
    assert_eq!(d["attempt_count"], 0);
    assert!(d["exception_stack"].is_null());
    assert!(d["start_time"].as_f64().unwrap() > 1.0e9, "Unix seconds");
    assert!(d["current_time"].as_f64().unwrap() >= d["start_time"].as_f64().unwrap());
}

/// 16.4: a poll answered 503 yields `APIFuture.result_async.api_status_error`; a future
/// that failed with category `user` yields `application_error` with `error_category` "User".
#[tokio::test]
async fn failed_polls_and_failed_futures_send_result_async_events() {
    let emu = emulator("conf-telem-poll").await;
    let svc = service(&emu);
    let training = svc
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    fault(
        &emu,
        json!({"path": "retrieve_future", "status": 503, "count": 1}),
    )
    .await;
    training
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    fault(
        &emu,
        json!({"path": "retrieve_future", "status": 200, "count": 1,
               "body": {"error": "the batch is malformed", "category": "user"}}),
    )
    .await;
    assert!(training
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .is_err());
    let events = generic_events(&emu, &svc).await;

    let status = named(&events, "APIFuture.result_async.api_status_error");
    assert_eq!(status.len(), 1, "{events:?}");
    let e = status[0];
    assert_keys(
        e,
        &[
            "request_id",
            "request_type",
            "status_code",
            "detail",
            "kind",
            "should_retry",
            "is_user_error",
            "exception",
            "exception_type",
            "iteration",
            "elapsed_time",
            "bad_request_retries",
            "connection_error_retries",
        ],
    );
    let d = &e["event_data"];
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(d["status_code"], 503);
    assert_eq!(d["kind"], "retry");
    assert_eq!(d["should_retry"], true);
    assert_eq!(d["request_type"], "ForwardBackward");
    assert!(d["iteration"].as_u64().unwrap() >= 1);

    let app = named(&events, "APIFuture.result_async.application_error");
    assert_eq!(app.len(), 1, "{events:?}");
    let e = app[0];
    assert_keys(
        e,
        &[
            "request_id",
            "request_type",
            "error",
            "error_category",
            "is_user_error",
            "iteration",
            "elapsed_time",
        ],
    );
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(e["event_data"]["error_category"], "User");
    assert_eq!(e["event_data"]["is_user_error"], true);
    assert_eq!(e["event_data"]["error"], "the batch is malformed");
}

/// 16.4: a sample whose poll answers 410 is re-run by the retry handler, which reports the
/// failed attempt as `RetryHandler.execute.exception`.
#[tokio::test]
async fn a_resampled_sample_sends_a_retry_handler_event() {
    let emu = emulator("conf-telem-410").await;
    let svc = service(&emu);
    let sampler = svc
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap()
        .with_retry_config(RetryConfig {
            retry_delay_base: Duration::from_millis(10),
            retry_delay_max: Duration::from_millis(50),
            ..RetryConfig::default()
        });
    fault(
        &emu,
        json!({"path": "retrieve_future", "status": 410, "count": 1}),
    )
    .await;
    let params = SamplingParams {
        max_tokens: Some(2),
        ..Default::default()
    };
    sampler
        .sample(
            ModelInput::from_ints(vec![11, 12, 13]),
            1,
            params,
            SampleOptions::default(),
        )
        .await
        .unwrap();
    let events = generic_events(&emu, &svc).await;
    let handler = named(&events, "RetryHandler.execute.exception");
    assert_eq!(handler.len(), 1, "{events:?}");
    let e = handler[0];
    assert_keys(
        e,
        &[
            "func",
            "exception",
            "exception_type",
            "exception_stack",
            "status_code",
            "should_retry",
            "is_user_error",
            "attempt_count",
            "start_time",
            "current_time",
            "elapsed_time",
        ],
    );
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(e["event_data"]["status_code"], 410);
    assert_eq!(e["event_data"]["should_retry"], true);
    assert_eq!(e["event_data"]["attempt_count"], 0);
    // The poll itself is reported too (kind retryable_exception, as the SDK's 410).
    let poll = named(&events, "APIFuture.result_async.api_status_error");
    assert!(
        poll.iter()
            .any(|e| e["event_data"]["kind"] == "retryable_exception"),
        "{events:?}"
    );
}
