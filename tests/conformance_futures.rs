//! Conformance of futures (PROTOCOL.md 8.1 polling, 8.2 the batched `retrieve_futures` poller,
//! 8.3 `cancel_future`) through the Rust API against an in-process emulator: one test per
//! observable row of the 8.1.3 dispatch table, the poller's cursor/ack behaviour and terminal
//! failure, cancel_future sent once with no more polls, and the no-spinning bounds.

mod support;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::types::{ModelInput, QueueState, SamplingParams};
use tinkex::core::{ErrorKind, Event, RetryPolicy, SampleOptions, SamplingClient, ServiceClient};
use tinkex_emulator::RunningEmulator;

const RF: &str = "/api/v1/retrieve_future";
const RFS: &str = "/api/v1/retrieve_futures";

/// The fast test policy, with a short poller retry delay.
fn policy() -> RetryPolicy {
    RetryPolicy {
        futures_poller_retry_delay: Duration::from_millis(50),
        ..fast_retry()
    }
}

async fn sampler_of(service: &ServiceClient) -> SamplingClient {
    service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap()
}

fn sample(
    s: &SamplingClient,
    i: i64,
) -> tinkex::core::ApiFuture<tinkex::core::types::SampleResponse> {
    s.sample(
        ModelInput::from_ints(vec![1 + i, 2 + i, 3]),
        1,
        SamplingParams {
            max_tokens: Some(3),
            ..Default::default()
        },
        SampleOptions::default(),
    )
}

/// The journal entries whose path is exactly `path`: (status) in order.
async fn journal(emu: &RunningEmulator, path: &str) -> Vec<u64> {
    control_get(emu, "journal").await["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == path)
        .map(|e| e["status"].as_u64().unwrap_or(0))
        .collect()
}

async fn clear_journal(emu: &RunningEmulator) {
    let (status, _) = emu.control("DELETE", "journal", None).await;
    assert_eq!(status, 200);
}

/// Polls of `request_id` that reached the handler.
async fn polls_of(emu: &RunningEmulator, request_id: &str) -> u64 {
    control_get(emu, "polls").await["polls"][request_id]
        .as_u64()
        .unwrap_or(0)
}

/// Waits (with a deadline) until `cond` holds.
async fn until<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One sample on a fresh client with `rule` installed on the poll path: (result, polls of
/// retrieve_future in the journal, asample sends in the journal).
async fn sample_with_poll_fault(
    rule: Value,
) -> (
    tinkex::core::Result<tinkex::core::types::SampleResponse>,
    Vec<u64>,
    usize,
) {
    let emu = emulator("conf-fut-row").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    clear_journal(&emu).await;
    fault(&emu, rule).await;
    let r = sample(&s, 0).await;
    (
        r,
        journal(&emu, RF).await,
        journal(&emu, "/api/v1/asample").await.len(),
    )
}

// ---- 8.1.3, row by row ----

#[tokio::test]
async fn row_protobuf_payload_is_decoded_and_json_try_again_reports_queue_state() {
    let emu = emulator("conf-fut-tryagain").await;
    let service = client_with(&emu, policy());
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    service
        .events()
        .subscribe(move |e| sink.lock().unwrap().push(e.clone()));
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 600})).await;
    control_post(
        &emu,
        "queue_state",
        json!({"queue_state": "paused_capacity", "reason": "short on capacity"}),
    )
    .await;
    let f = sample(&s, 0);
    let out = f.clone().await.unwrap();
    assert_eq!(out.sequences.len(), 1);
    let id = f.request_id().unwrap();
    assert!(polls_of(&emu, &id).await >= 2, "try_again was polled again");
    let states: Vec<QueueState> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::QueueState { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    assert!(states.contains(&QueueState::PausedCapacity), "{states:?}");
}

#[tokio::test]
async fn row_held_try_again_and_held_408_are_repolled_at_once() {
    // A 408 answered after the hold (here 80 ms ≥ min_poll_duration 50 ms) is a try-again:
    // the next poll goes out at once. With a 400 ms unheld backoff, three backoffs would
    // take ≥ 0.9 s.
    let emu = emulator("conf-fut-held408").await;
    let service = client_with(
        &emu,
        RetryPolicy {
            poll_backoff_initial: Duration::from_millis(400),
            poll_backoff_max: Duration::from_millis(1000),
            ..policy()
        },
    );
    let s = sampler_of(&service).await;
    fault(
        &emu,
        json!({"path": RF, "status": 408, "latency_ms": 80, "count": 3,
        "body": {"type": "try_again", "request_id": "x", "queue_state": "active"}}),
    )
    .await;
    clear_journal(&emu).await;
    let t = Instant::now();
    sample(&s, 0).await.unwrap();
    let took = t.elapsed();
    assert_eq!(journal(&emu, RF).await, vec![408, 408, 408, 200]);
    assert!(
        took < Duration::from_millis(850),
        "held 408s were backed off: {took:?}"
    );
}

#[tokio::test]
async fn row_metadata_only_reserves_then_fetches_once_more() {
    let emu = emulator_with("conf-fut-meta", |c| c.inline_result_limit = 16).await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    let f = sample(&s, 0);
    f.clone().await.unwrap();
    assert_eq!(
        polls_of(&emu, &f.request_id().unwrap()).await,
        2,
        "metadata-only, then the payload"
    );
}

#[tokio::test]
async fn row_metadata_only_twice_is_an_error() {
    let (r, polls, _) = sample_with_poll_fault(json!({"path": RF, "status": 200, "count": 2,
        "body": {"status": "complete_metadata", "response_payload_size": 10}}))
    .await;
    let e = r.unwrap_err();
    assert!(e.message.contains("metadata-only twice"), "{e}");
    assert_eq!(polls.len(), 2);
}

#[tokio::test]
async fn row_failed_result_is_a_request_failed_error_with_category() {
    let emu = emulator("conf-fut-failed").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    // An empty prompt fails on the server with category user.
    let e = s
        .sample(
            ModelInput::from_ints(vec![]),
            1,
            SamplingParams::default(),
            SampleOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert_eq!(
        e.category,
        Some(tinkex::core::types::RequestErrorCategory::User)
    );
    assert!(e.request_id.is_some());
}

#[tokio::test]
async fn row_instant_5xx_408_and_connection_errors_are_retried() {
    for rule in [
        json!({"path": RF, "status": 503, "count": 3}),
        json!({"path": RF, "status": 408, "count": 3}),
        json!({"path": RF, "reset": true, "count": 2}),
        json!({"path": RF, "stall_ms": 50, "count": 1}),
    ] {
        let (r, polls, asamples) = sample_with_poll_fault(rule.clone()).await;
        assert!(r.is_ok(), "{rule}: {r:?}");
        assert_eq!(asamples, 1, "{rule}: no resubmission");
        assert_eq!(*polls.last().unwrap(), 200, "{rule}: {polls:?}");
    }
}

#[tokio::test]
async fn row_429_honours_retry_after() {
    let t = Instant::now();
    let (r, polls, _) = sample_with_poll_fault(
        json!({"path": RF, "status": 429, "count": 1, "headers": {"retry-after-ms": "400"}}),
    )
    .await;
    r.unwrap();
    assert_eq!(polls, vec![429, 200]);
    assert!(t.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn row_400_with_a_body_is_retried_three_times_then_fails() {
    let (r, polls, _) = sample_with_poll_fault(
        json!({"path": RF, "status": 400, "count": 3, "body": {"detail": "transient"}}),
    )
    .await;
    r.unwrap();
    assert_eq!(polls, vec![400, 400, 400, 200]);
    let (r, polls, asamples) =
        sample_with_poll_fault(json!({"path": RF, "status": 400, "body": {"detail": "bad"}})).await;
    let e = r.unwrap_err();
    assert_eq!(e.http_status, Some(400));
    assert_eq!(polls.len(), 4, "1 + 3 retries");
    assert_eq!(asamples, 1);
}

#[tokio::test]
async fn row_bare_400_is_retried_with_backoff() {
    let (r, polls, _) =
        sample_with_poll_fault(json!({"path": RF, "status": 400, "count": 2})).await;
    r.unwrap();
    assert_eq!(polls, vec![400, 400, 200]);
}

#[tokio::test]
async fn row_402_pauses_then_continues() {
    let (r, polls, _) = sample_with_poll_fault(
        json!({"path": RF, "status": 402, "count": 2, "body": {"detail": "billing"}}),
    )
    .await;
    r.unwrap();
    assert_eq!(polls, vec![402, 402, 200]);
}

#[tokio::test]
async fn row_410_resubmits_a_sample_with_a_new_seq_id() {
    let (r, polls, asamples) =
        sample_with_poll_fault(json!({"path": RF, "status": 410, "count": 1})).await;
    r.unwrap();
    assert_eq!(polls, vec![410, 200]);
    assert_eq!(asamples, 2, "the whole sample was resubmitted");
}

#[tokio::test]
async fn row_410_on_a_training_future_reaches_the_caller() {
    let emu = emulator("conf-fut-410train").await;
    let service = client_with(&emu, policy());
    let training = service
        .create_lora_training_client(BASE_MODEL, Default::default())
        .await
        .unwrap();
    fault(&emu, json!({"path": RF, "status": 410, "count": 1})).await;
    clear_journal(&emu).await;
    let e = training
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Expired, "{e}");
    assert_eq!(journal(&emu, RF).await, vec![410], "polled once");
}

#[tokio::test]
async fn row_other_4xx_while_polling_are_fatal() {
    for status in [401u16, 403, 404, 409, 422] {
        let (r, polls, asamples) =
            sample_with_poll_fault(json!({"path": RF, "status": status, "body": {"detail": "no"}}))
                .await;
        let e = r.unwrap_err();
        assert_eq!(e.http_status, Some(status), "{e}");
        assert!(!e.is_retryable(), "{status}: {e:?}");
        assert_eq!(polls, vec![u64::from(status)], "{status}: polled once");
        assert_eq!(asamples, 1, "{status}: not resubmitted");
    }
}

#[tokio::test]
async fn row_x_should_retry_overrides_the_status() {
    let (r, polls, _) = sample_with_poll_fault(
        json!({"path": RF, "status": 503, "headers": {"x-should-retry": "false"}}),
    )
    .await;
    assert_eq!(r.unwrap_err().http_status, Some(503));
    assert_eq!(polls, vec![503]);
    let (r, polls, _) = sample_with_poll_fault(json!({"path": RF, "status": 404, "count": 2,
        "headers": {"x-should-retry": "true"}, "body": {"detail": "later"}}))
    .await;
    r.unwrap();
    assert_eq!(polls, vec![404, 404, 200]);
}

// ---- No spinning, no slowness (issue 13 acceptance 3) ----

#[tokio::test]
async fn spin_bound_instant_503_for_5s_sees_at_most_10_polls_and_recovers_within_2s() {
    let emu = emulator("conf-fut-spin").await;
    // The default poll backoff: these are the shipped numbers.
    let service = client_with(&emu, RetryPolicy::default());
    let s = sampler_of(&service).await;
    clear_journal(&emu).await;
    let window = Duration::from_secs(5);
    fault(
        &emu,
        json!({"path": RF, "status": 503, "duration_ms": 5000}),
    )
    .await;
    let t = Instant::now();
    sample(&s, 0).await.unwrap();
    let took = t.elapsed();
    let polls = journal(&emu, RF).await;
    let failed = polls.iter().filter(|s| **s == 503).count();
    assert!(failed <= 10, "{failed} polls during 5 s of instant 503s");
    assert!(
        took <= window + Duration::from_secs(2),
        "the result arrived {:?} after the fault ended",
        took.saturating_sub(window)
    );
}

#[tokio::test]
async fn spin_bound_result_within_2s_after_3s_of_instant_408_or_5xx() {
    for status in [408u16, 500, 502] {
        let emu = emulator("conf-fut-recover").await;
        let service = client_with(&emu, RetryPolicy::default());
        let s = sampler_of(&service).await;
        fault(
            &emu,
            json!({"path": RF, "status": status, "duration_ms": 3000}),
        )
        .await;
        let t = Instant::now();
        sample(&s, 0).await.unwrap();
        let took = t.elapsed();
        assert!(
            took <= Duration::from_secs(5),
            "{status}: the result arrived {:?} after the fault ended",
            took.saturating_sub(Duration::from_secs(3))
        );
    }
}

#[tokio::test]
async fn spin_bound_is_shared_per_host_many_futures_back_off_together() {
    let emu = emulator("conf-fut-host").await;
    let service = client_with(&emu, RetryPolicy::default());
    let s = sampler_of(&service).await;
    clear_journal(&emu).await;
    fault(
        &emu,
        json!({"path": RF, "status": 503, "duration_ms": 2000}),
    )
    .await;
    let futures: Vec<_> = (0..40).map(|i| sample(&s, i)).collect();
    for f in futures {
        f.await.unwrap();
    }
    let failed = journal(&emu, RF)
        .await
        .iter()
        .filter(|s| **s == 503)
        .count();
    // One future alone sends ≤ 7 polls in 2 s; 40 sharing the host streak stay well below
    // 40 × 7 (they all sit at the cap quickly).
    assert!(
        failed <= 40 * 6,
        "{failed} failed polls from 40 futures in 2 s"
    );
}

// ---- 8.2 the retrieve_futures poller ----

async fn poller_emulator(tag: &str) -> RunningEmulator {
    emulator_with(tag, |c| {
        c.inline_result_limit = 16;
        c.client_config
            .insert("sample_use_retrieve_futures".into(), json!(true));
    })
    .await
}

async fn poller_requests(emu: &RunningEmulator) -> Vec<Value> {
    control_get(emu, "retrieve_futures").await["requests"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn poller_long_polls_then_fetches_each_result_once_and_acks() {
    let emu = poller_emulator("conf-fut-poller").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 300})).await;
    let futures: Vec<_> = (0..3).map(|i| sample(&s, i)).collect();
    let mut ids = Vec::new();
    for f in &futures {
        f.clone().await.unwrap();
        ids.push(f.request_id().unwrap());
    }
    // One retrieve_future per sample: the completion announced the size, so the first
    // fetch asks for the payload (allow_metadata_only false) although results are "large".
    for id in &ids {
        assert_eq!(polls_of(&emu, id).await, 1, "{id}");
    }
    // Acks: an ack-only poll carries every retrieved id, after which the server deleted
    // the payloads and trimmed the events.
    let mut sorted = ids.clone();
    sorted.sort();
    until(
        "the retrieved ids are acknowledged",
        Duration::from_secs(5),
        || async {
            let mut acked: Vec<String> = poller_requests(&emu)
                .await
                .iter()
                .flat_map(|r| {
                    r["retrieved_request_ids"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            acked.sort();
            acked == sorted
        },
    )
    .await;
    let reqs = poller_requests(&emu).await;
    assert!(
        reqs[0].get("timeout").is_none(),
        "long poll while waiting: {}",
        reqs[0]
    );
    assert_eq!(reqs[0]["prev_cursor"], 0);
    assert_eq!(reqs[0]["target"]["type"], "sampling_session");
    assert_eq!(reqs[0]["target"]["cloned_sampler_id"], 0);
    assert_eq!(
        reqs[0]["target"]["sampling_session_id"],
        s.sampling_session_id()
    );
    let cursors: Vec<i64> = reqs
        .iter()
        .map(|r| r["prev_cursor"].as_i64().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] <= w[1]), "{cursors:?}");
    let last = reqs.last().unwrap();
    assert_eq!(
        last["timeout"],
        json!(0.0),
        "acks are ack-only polls: {last}"
    );
    for id in &ids {
        assert!(
            emu.state().futures.get(id).is_none(),
            "{id} payload deleted"
        );
    }
    let (left, _) = emu
        .state()
        .futures
        .completion_log(&(s.sampling_session_id().to_string(), 0))
        .read_after(*cursors.last().unwrap());
    assert!(left.is_empty(), "acknowledged events trimmed: {left:?}");
}

#[tokio::test]
async fn poller_retryable_errors_are_retried() {
    let emu = poller_emulator("conf-fut-poller-retry").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    clear_journal(&emu).await;
    fault(&emu, json!({"path": RFS, "status": 503, "count": 2})).await;
    fault(
        &emu,
        json!({"path": RFS, "status": 400, "count": 2, "body": {"detail": "x"}}),
    )
    .await;
    sample(&s, 0).await.unwrap();
    let statuses = journal(&emu, RFS).await;
    assert_eq!(&statuses[..4], &[503, 503, 400, 400], "{statuses:?}");
}

#[tokio::test]
async fn poller_terminal_failure_fails_current_and_future_waiters() {
    let emu = poller_emulator("conf-fut-poller-fail").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    fault(
        &emu,
        json!({"path": RFS, "status": 403, "body": {"detail": "forbidden"}}),
    )
    .await;
    let e = sample(&s, 0).await.unwrap_err();
    assert!(e.message.contains("retrieve_futures polling failed"), "{e}");
    assert!(!e.is_retryable());
    let polled = journal(&emu, RFS).await.len();
    let e = sample(&s, 1).await.unwrap_err();
    assert!(e.message.contains("retrieve_futures polling failed"), "{e}");
    assert_eq!(
        journal(&emu, RFS).await.len(),
        polled,
        "a dead poller sends nothing"
    );
}

#[tokio::test]
async fn poller_failed_completion_still_reads_the_error() {
    let emu = poller_emulator("conf-fut-poller-failed").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    let f = s.sample(
        ModelInput::from_ints(vec![]),
        1,
        SamplingParams::default(),
        SampleOptions::default(),
    );
    let e = f.clone().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert_eq!(polls_of(&emu, &f.request_id().unwrap()).await, 1);
}

/// 8.2.5: the acknowledgement that failed (and would only be retried an hour later) is sent
/// by the final ack-only poll of close.
#[tokio::test]
async fn poller_acks_reach_the_server_when_the_client_closes_right_after() {
    let emu = emulator_with("conf-fut-poller-close", |c| {
        c.poll_hold = Duration::from_secs(5);
        c.client_config
            .insert("sample_use_retrieve_futures".into(), json!(true));
    })
    .await;
    let service = client_with(
        &emu,
        RetryPolicy {
            futures_poller_retry_delay: Duration::from_secs(3600),
            ..fast_retry()
        },
    );
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 300})).await;
    let f = sample(&s, 0);
    until("the long poll is held", Duration::from_secs(5), || async {
        !poller_requests(&emu).await.is_empty()
    })
    .await;
    // The next poller request (the ack after the result is fetched) fails.
    fault(&emu, json!({"path": RFS, "status": 503, "count": 1})).await;
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the sample completes")
        .unwrap();
    until("the ack poll failed", Duration::from_secs(5), || async {
        journal(&emu, RFS).await.contains(&503)
    })
    .await;
    let acked = || async {
        poller_requests(&emu).await.iter().any(|r| {
            r["retrieved_request_ids"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
    };
    assert!(!acked().await, "acknowledged before close");
    service
        .close(tinkex::core::types::FinishReasonKind::Success, None)
        .await
        .unwrap();
    until("everything acknowledged", Duration::from_secs(5), acked).await;
}

// ---- 8.3 cancel_future ----

async fn cancel_emulator(tag: &str, poller: bool) -> RunningEmulator {
    emulator_with(tag, |c| {
        c.dynamic_config
            .insert("sample_cancel_enabled".into(), json!(true));
        if poller {
            c.client_config
                .insert("sample_use_retrieve_futures".into(), json!(true));
        }
    })
    .await
}

async fn cancel_once_and_no_more_polls(poller: bool) {
    let emu = cancel_emulator("conf-fut-cancel", poller).await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 30_000})).await;
    clear_journal(&emu).await;
    let f = sample(&s, 0);
    until(
        "the sample is submitted and waited for",
        Duration::from_secs(5),
        || async {
            let Some(id) = f.request_id() else {
                return false;
            };
            if poller {
                !journal(&emu, RFS).await.is_empty()
            } else {
                polls_of(&emu, &id).await >= 1
            }
        },
    )
    .await;
    let id = f.request_id().unwrap();
    f.cancel();
    assert_eq!(f.clone().await.unwrap_err().kind, ErrorKind::Cancelled);
    until("cancel_future is sent", Duration::from_secs(5), || async {
        !journal(&emu, "/api/v1/cancel_future").await.is_empty()
    })
    .await;
    assert!(emu.state().futures.is_cancelled(&id));
    let polls = polls_of(&emu, &id).await;
    // Another sample runs to completion; the cancelled one is never polled again.
    control_post(&emu, "delays", json!({"Sample": null})).await;
    sample(&s, 1).await.unwrap();
    assert_eq!(polls_of(&emu, &id).await, polls, "no poll after the cancel");
    assert_eq!(journal(&emu, "/api/v1/cancel_future").await, vec![200]);
}

#[tokio::test]
async fn cancel_future_is_sent_once_and_polling_stops() {
    cancel_once_and_no_more_polls(false).await;
}

#[tokio::test]
async fn cancel_future_is_sent_once_in_poller_mode() {
    cancel_once_and_no_more_polls(true).await;
}

#[tokio::test]
async fn cancel_future_is_not_sent_when_the_flag_is_off() {
    let emu = emulator("conf-fut-nocancel").await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 30_000})).await;
    let f = sample(&s, 0);
    until("submitted", Duration::from_secs(5), || async {
        f.request_id().is_some()
    })
    .await;
    f.cancel();
    control_post(&emu, "delays", json!({"Sample": null})).await;
    sample(&s, 1).await.unwrap();
    assert!(journal(&emu, "/api/v1/cancel_future").await.is_empty());
}

#[tokio::test]
async fn cancel_future_batches_many_abandoned_samples() {
    let emu = emulator_with("conf-fut-cancel-many", |c| {
        c.dynamic_config
            .insert("sample_cancel_enabled".into(), json!(true));
        c.dynamic_config
            .insert("sample_cancel_max_batch_size".into(), json!(4));
    })
    .await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 30_000})).await;
    let futures: Vec<_> = (0..10).map(|i| sample(&s, i)).collect();
    for f in &futures {
        until("submitted", Duration::from_secs(5), || async {
            f.request_id().is_some()
        })
        .await;
    }
    for f in &futures {
        f.cancel();
    }
    until("every cancel sent", Duration::from_secs(5), || async {
        journal(&emu, "/api/v1/cancel_future").await.len() == 10
    })
    .await;
    for f in &futures {
        assert!(emu.state().futures.is_cancelled(&f.request_id().unwrap()));
    }
}

#[tokio::test]
async fn cancelling_compute_logprobs_cancels_its_sample() {
    let emu = cancel_emulator("conf-fut-cancel-logprobs", false).await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    control_post(&emu, "delays", json!({"Sample": 30_000})).await;
    clear_journal(&emu).await;
    let f = s.compute_logprobs(ModelInput::from_ints(vec![1, 2, 3]));
    until("the sample is polled", Duration::from_secs(5), || async {
        !journal(&emu, RF).await.is_empty()
    })
    .await;
    f.cancel();
    until("cancel_future is sent", Duration::from_secs(5), || async {
        journal(&emu, "/api/v1/cancel_future").await == vec![200]
    })
    .await;
    assert_eq!(emu.state().futures.cancelled_count(), 1);
}

// ---- 6.3 / 8.1.3 a JSON success for a protobuf-typed result ----

/// 6.3 / 8.1.3: a poll answered with a JSON `ForwardBackwardOutput` or `SampleResponse`
/// (although it asked for protobuf) is decoded; the SDK 0.38 rejects it (a deliberate
/// difference: older servers answer JSON). The injected results carry a mark (an extra
/// metric, other tokens) so the decoded value can only come from the JSON answer.
#[tokio::test]
async fn json_success_for_a_protobuf_typed_result_is_decoded() {
    let emu = emulator("conf-fut-json-proto").await;
    let service = client_with(&emu, policy());
    let training = service
        .create_lora_training_client(BASE_MODEL, tinkex::core::LoraOptions::default())
        .await
        .unwrap();
    let s = sampler_of(&service).await;
    // The protobuf results, as the emulator answers them.
    let fb = training
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    let sampled = sample(&s, 0).await.unwrap();
    // Marked copies, answered as JSON by the next poll.
    let mut fb_marked = fb.clone();
    fb_marked.metrics.insert("injected:sum".into(), 42.0);
    let mut sampled_marked = sampled.clone();
    for seq in &mut sampled_marked.sequences {
        for t in &mut seq.tokens {
            *t += 7;
        }
    }
    let as_json = |body: Value| json!({"path": RF, "status": 200, "body": body, "count": 1});
    fault(&emu, as_json(serde_json::to_value(&fb_marked).unwrap())).await;
    let fb_json = training
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    assert_eq!(fb_json, fb_marked);
    fault(
        &emu,
        as_json(serde_json::to_value(&sampled_marked).unwrap()),
    )
    .await;
    let mut sampled_json = sample(&s, 0).await.unwrap();
    // Each sequence is named by the `sample_sequence_ids` of its asample answer (7.1).
    for (got, want) in sampled_json
        .sequences
        .iter_mut()
        .zip(&sampled_marked.sequences)
    {
        got.sequence_id.clone_from(&want.sequence_id);
    }
    assert_eq!(sampled_json, sampled_marked);
}

// ---- 5.3 / 8.1.3 a server-set in-flight response budget ----

/// The wall time of two concurrent samples whose results are announced metadata-only and
/// whose every poll is answered `latency` late, with `flags` in client/config.
async fn two_metadata_only_samples(tag: &str, flags: Value, latency: Duration) -> Duration {
    let emu = emulator_with(tag, |c| {
        c.inline_result_limit = 16;
        for (k, v) in flags.as_object().unwrap() {
            c.client_config.insert(k.clone(), v.clone());
        }
    })
    .await;
    let service = client_with(&emu, policy());
    let s = sampler_of(&service).await;
    // Each sample polls twice: metadata-only, then the payload.
    fault(
        &emu,
        json!({"path": RF, "latency_ms": latency.as_millis() as u64}),
    )
    .await;
    let started = Instant::now();
    let (a, b) = tokio::join!(sample(&s, 0), sample(&s, 1));
    let took = started.elapsed();
    for f in [a, b] {
        f.unwrap();
    }
    took
}

/// 5.3 / 8.1.3: `inflight_response_bytes_semaphore_size` set by the server bounds the
/// payload bytes fetched at once: with a 1-byte budget the second sample's payload poll
/// waits until the first result is decoded (three poll latencies instead of two).
#[tokio::test]
async fn a_server_set_inflight_response_budget_serialises_payload_fetches() {
    let latency = Duration::from_millis(500);
    let small = two_metadata_only_samples(
        "conf-fut-inflight-small",
        json!({"inflight_response_bytes_semaphore_size": 1}),
        latency,
    )
    .await;
    assert!(small >= latency * 3, "1-byte budget: {small:?}");
    let default = two_metadata_only_samples("conf-fut-inflight-default", json!({}), latency).await;
    assert!(default < latency * 3, "default budget: {default:?}");
}
