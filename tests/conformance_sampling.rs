//! Conformance of the sampling client (PROTOCOL.md 7.1, 7.3, 12.2-12.8, 13.5, 15) against the
//! in-process emulator: dispatch gates, the 429 back-off protocol, the sampling retry
//! handler, the result checks and the queue-state log lines. Timings are configured small
//! and asserted as bounds on the emulator's arrival log, never with sleeps.

mod support;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::*;
use tinkex::core::dispatch::SamplingSettings;
use tinkex::core::queue_state::QueueStateConfig;
use tinkex::core::retry_handler::RetryConfig;
use tinkex::core::types::{ModelInput, QueueState, SamplingParams};
use tinkex::core::{Config, ErrorKind, Event, SampleOptions, SamplingClient, ServiceClient};
use tinkex_emulator::sampling::{key_fingerprint, Arrival};
use tinkex_emulator::RunningEmulator;

const KEY_A: &str = "tml-conformance-key-a";
const KEY_B: &str = "tml-conformance-key-b";

fn settings() -> SamplingSettings {
    SamplingSettings {
        backoff_short: Duration::from_millis(300),
        backoff_long: Duration::from_millis(600),
        backoff_step: Duration::from_millis(10),
        honour_retry_after: false,
        ..SamplingSettings::default()
    }
}

fn service(emu: &RunningEmulator, key: &str, s: SamplingSettings) -> ServiceClient {
    let config = Config::builder()
        .api_key(key)
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(fast_retry())
        .sampling(s)
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

/// A retry-handler configuration with millisecond delays.
fn fast_handler() -> RetryConfig {
    RetryConfig {
        retry_delay_base: Duration::from_millis(10),
        retry_delay_max: Duration::from_millis(50),
        ..RetryConfig::default()
    }
}

async fn sampler(svc: &ServiceClient) -> SamplingClient {
    svc.create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap()
        .with_retry_config(fast_handler())
}

fn params() -> SamplingParams {
    SamplingParams {
        max_tokens: Some(2),
        ..Default::default()
    }
}

fn prompt() -> ModelInput {
    ModelInput::from_ints(vec![11, 12, 13])
}

async fn capacity(emu: &RunningEmulator, body: Value) {
    control_post(emu, "sampling_capacity", body).await;
}

async fn capacity_state(emu: &RunningEmulator) -> Value {
    control_get(emu, "sampling_capacity").await
}

async fn arrivals(emu: &RunningEmulator) -> Vec<Arrival> {
    serde_json::from_value(capacity_state(emu).await["arrivals"].clone()).unwrap()
}

fn of_session<'a>(a: &'a [Arrival], session: &str) -> Vec<&'a Arrival> {
    a.iter()
        .filter(|x| x.sampling_session_id.as_deref() == Some(session))
        .collect()
}

async fn set_flags(emu: &RunningEmulator, client_config: Value) {
    control_post(emu, "flags", json!({ "client_config": client_config })).await;
}

/// 12.4: the byte budget (`sample_dispatch_bytes_semaphore_size` from client/config) admits
/// senders while it is non-negative, and charges ×20 while a back-off is recent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_budget_limits_concurrent_sends_and_is_charged_20x_after_a_backoff() {
    let emu = emulator("conf-bytes").await;
    // 3 tokens = 30 bytes; a budget of 100 admits 4 senders (30, 60, 90, then 10 ≥ 0).
    set_flags(&emu, json!({ "sample_dispatch_bytes_semaphore_size": 100 })).await;
    capacity(&emu, json!({ "asample_latency_ms": 150 })).await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    let futs: Vec<_> = (0..12)
        .map(|_| s.sample(prompt(), 1, params(), SampleOptions::default()))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    let stats = &capacity_state(&emu).await["keys"][key_fingerprint(KEY_A)];
    assert_eq!(stats["max_asample_in_handler"], 4, "{stats}");
    assert_eq!(s.dispatch_stats().max_in_flight, 4);
    assert_eq!(s.dispatch_stats().in_flight, 0, "permits are released");

    // A back-off makes the byte charge 600: one sender at a time, for 10 s after it ends.
    capacity(
        &emu,
        json!({ "asample_latency_ms": 100, "per_key": 0, "retry_after_secs": 0 }),
    )
    .await;
    let first = s.sample(prompt(), 1, params(), SampleOptions::default());
    // Wait for the 429 to arrive, then lift the capacity limit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.dispatch_stats().backoffs == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no 429 seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    capacity(&emu, json!({ "asample_latency_ms": 100 })).await;
    first.await.unwrap();
    let futs: Vec<_> = (0..5)
        .map(|_| s.sample(prompt(), 1, params(), SampleOptions::default()))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    let stats = &capacity_state(&emu).await["keys"][key_fingerprint(KEY_A)];
    assert_eq!(
        stats["max_asample_in_handler"], 1,
        "×20 charge while recent: {stats}"
    );
    assert!(s.dispatch_stats().throttled_dispatches >= 5);
}

/// 12.4: while a back-off is recent, at most 10 samples are being sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_backoff_limits_dispatch_to_10() {
    let emu = emulator("conf-ten").await;
    set_flags(
        &emu,
        json!({ "sample_dispatch_bytes_semaphore_size": 1_000_000_000u64 }),
    )
    .await;
    capacity(&emu, json!({ "per_key": 0, "retry_after_secs": 0 })).await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    let first = s.sample(prompt(), 1, params(), SampleOptions::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.dispatch_stats().backoffs == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no 429 seen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    capacity(&emu, json!({ "asample_latency_ms": 100 })).await;
    // The first sample took its gates before the back-off; the next ones are throttled.
    first.await.unwrap();
    let futs: Vec<_> = (0..40)
        .map(|_| s.sample(prompt(), 1, params(), SampleOptions::default()))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    let stats = &capacity_state(&emu).await["keys"][key_fingerprint(KEY_A)];
    let max = stats["max_asample_in_handler"].as_u64().unwrap();
    assert!((2..=10).contains(&max), "throttled to 10: {stats}");
}

/// 12.5: a 429 sets one holder-wide `backoff_until`; the rejected sample is resent with the
/// same seq_id after the back-off, and other samples of the holder (another sampling client
/// included) wait for it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_backs_off_holder_wide_and_resends_the_same_seq_id() {
    let emu = emulator("conf-backoff").await;
    capacity(
        &emu,
        json!({ "per_key": 1, "sample_hold_ms": 200, "retry_after_secs": 0 }),
    )
    .await;
    let svc = service(&emu, KEY_A, settings());
    let s1 = sampler(&svc).await;
    let s2 = sampler(&svc).await;
    let a = s1.sample(prompt(), 1, params(), SampleOptions::default());
    // Wait for A to be accepted so that B is the one rejected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while arrivals(&emu).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let b = s1.sample(prompt(), 1, params(), SampleOptions::default());
    while s1.dispatch_stats().backoffs == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no 429 seen");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let c = s2.sample(prompt(), 1, params(), SampleOptions::default());
    let (ra, rb, rc) = (a.await.unwrap(), b.await.unwrap(), c.await.unwrap());
    assert!(rb.sequences[0].sequence_id.is_some() && ra.sequences.len() == 1);
    assert_eq!(rc.sequences.len(), 1);

    let all = arrivals(&emu).await;
    let b_sends = of_session(&all, s1.sampling_session_id());
    let seqs: Vec<i64> = b_sends.iter().filter_map(|x| x.seq_id).collect();
    assert!(
        seqs.iter().all(|&q| q == 0 || q == 1),
        "no new seq_id for a back-off: {seqs:?}"
    );
    let b_only: Vec<&&Arrival> = b_sends.iter().filter(|x| x.seq_id == Some(1)).collect();
    assert!(b_only.len() >= 2, "B was rejected then resent: {all:?}");
    assert_eq!(b_only[0].status, 429);
    assert_eq!(b_only.last().unwrap().status, 200);
    // Every resend comes at least the back-off (300 ms) after the 429 before it.
    for w in b_only.windows(2) {
        assert!(
            w[1].at_ms - w[0].at_ms >= 295.0,
            "resent too early: {:?}",
            b_only
        );
    }
    // C (another client of the same holder) was not sent before B's first back-off ended.
    let first_429 = b_only[0].at_ms;
    let c_first = of_session(&all, s2.sampling_session_id())[0];
    assert!(
        c_first.at_ms - first_429 >= 295.0,
        "holder-wide back-off: {c_first:?} vs 429 at {first_429}"
    );
}

/// 12.5 (deliberate difference): a valid `Retry-After` on the 429 replaces the fixed
/// back-off when `honour_retry_after` is on (the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_of_a_429_sets_the_backoff() {
    let emu = emulator("conf-retry-after").await;
    capacity(
        &emu,
        json!({ "per_key": 1, "sample_hold_ms": 100, "retry_after_secs": 0.5 }),
    )
    .await;
    let svc = service(
        &emu,
        KEY_A,
        SamplingSettings {
            honour_retry_after: true,
            backoff_short: Duration::from_millis(20),
            ..settings()
        },
    );
    let s = sampler(&svc).await;
    let a = s.sample(prompt(), 1, params(), SampleOptions::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while arrivals(&emu).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let b = s.sample(prompt(), 1, params(), SampleOptions::default());
    a.await.unwrap();
    b.await.unwrap();
    let all = arrivals(&emu).await;
    let b_sends: Vec<&Arrival> = all.iter().filter(|x| x.seq_id == Some(1)).collect();
    assert_eq!(b_sends[0].status, 429);
    assert!(
        b_sends[1].at_ms - b_sends[0].at_ms >= 495.0,
        "Retry-After 0.5 s honoured: {b_sends:?}"
    );
}

/// 12.5 isolation: back-off state is per ServiceClient, so one API key's 429s never slow
/// another key's samples (the emulator's capacity is per key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_429s_never_slow_another_key() {
    let emu = emulator("conf-isolation").await;
    capacity(
        &emu,
        json!({ "per_key": 1, "sample_hold_ms": 300, "retry_after_secs": 0 }),
    )
    .await;
    let slow = SamplingSettings {
        backoff_short: Duration::from_secs(3),
        ..settings()
    };
    let svc_a = service(&emu, KEY_A, slow.clone());
    let svc_b = service(&emu, KEY_B, slow);
    let a = sampler(&svc_a).await;
    let b = sampler(&svc_b).await;
    let a_futs: Vec<_> = (0..3)
        .map(|_| a.sample(prompt(), 1, params(), SampleOptions::default()))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.dispatch_stats().backoffs == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no 429 for key A");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = tokio::time::Instant::now();
    b.sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "key B waited for key A's 3 s back-off: {took:?}"
    );
    assert_eq!(b.dispatch_stats().backoffs, 0);
    let keys = &capacity_state(&emu).await["keys"];
    assert_eq!(keys[key_fingerprint(KEY_B)]["rejected"], 0, "{keys}");
    assert!(keys[key_fingerprint(KEY_A)]["rejected"].as_u64().unwrap() >= 1);
    for f in a_futs {
        f.await.unwrap();
    }
}

/// 12.6/13.5: a 410 from a poll (expired future) re-runs the whole sample with a new seq_id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_future_is_resampled_with_a_new_seq_id() {
    let emu = emulator("conf-410").await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    fault(
        &emu,
        json!({ "path": "retrieve_future", "status": 410, "count": 2 }),
    )
    .await;
    let r = s
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap();
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|a| a.seq_id)
        .collect();
    assert_eq!(seqs, vec![0, 1, 2], "a new seq_id per re-run");
    assert!(r.sequences[0]
        .sequence_id
        .as_deref()
        .unwrap()
        .contains(":2:"));
    assert_eq!(s.retry_handler().stats().retries, 2);
}

/// 12.6: non-retryable failures are returned at once; a 410 on the asample send is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_errors_are_not_retried() {
    let emu = emulator("conf-final").await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    fault(
        &emu,
        json!({ "path": "asample", "status": 410, "count": 1 }),
    )
    .await;
    let e = s
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.http_status, Some(410), "{e}");
    fault(
        &emu,
        json!({ "path": "asample", "status": 422, "count": 1, "body": {"detail": "bad"} }),
    )
    .await;
    let e = s
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert_eq!(s.retry_handler().stats().retries, 0);
    // enable_retry_logic = false: a poll 410 is not re-run.
    let once = s.with_retry_config(RetryConfig {
        enable_retry_logic: false,
        ..fast_handler()
    });
    fault(
        &emu,
        json!({ "path": "retrieve_future", "status": 410, "count": 1 }),
    )
    .await;
    let e = once
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Expired, "{e}");
}

/// 12.6 and 7.3: with `sample_no_retries`, `sample()` is not retried but
/// `compute_logprobs()` still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_no_retries_spares_compute_logprobs() {
    let emu = emulator("conf-noretries").await;
    set_flags(&emu, json!({ "sample_no_retries": true })).await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    fault(
        &emu,
        json!({ "path": "retrieve_future", "status": 410, "count": 1 }),
    )
    .await;
    let e = s
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Expired, "sample() not retried: {e}");
    fault(
        &emu,
        json!({ "path": "retrieve_future", "status": 410, "count": 1 }),
    )
    .await;
    let lps = s.compute_logprobs(prompt()).await.unwrap();
    assert_eq!(lps.len(), 3);
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|a| a.seq_id)
        .collect();
    assert_eq!(
        seqs,
        vec![0, 1, 2],
        "compute_logprobs re-ran with a new seq_id"
    );
}

/// 12.6: max_connections follows `sample_max_concurrent_requests`, overriding the caller's
/// value (or is unlimited with `sample_use_retrieve_futures`); stuck detection follows
/// `sample_enable_stuck_detection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_flags_shape_the_retry_handler() {
    let emu = emulator("conf-handler-flags").await;
    set_flags(
        &emu,
        json!({ "sample_max_concurrent_requests": 2, "sample_enable_stuck_detection": false }),
    )
    .await;
    capacity(&emu, json!({ "sample_hold_ms": 100 })).await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await.with_retry_config(RetryConfig {
        max_connections: Some(50),
        ..fast_handler()
    });
    let h = s.retry_handler();
    assert_eq!(h.config().max_connections, Some(2));
    assert!(!h.config().enable_stuck_detection);
    let futs: Vec<_> = (0..6)
        .map(|_| s.sample(prompt(), 1, params(), SampleOptions::default()))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    assert_eq!(h.stats().max_in_progress, 2);
    assert_eq!(h.stats().completed, 6);
    let running = &capacity_state(&emu).await["keys"][key_fingerprint(KEY_A)];
    assert_eq!(running["max_in_flight"], 2, "{running}");
    // Clients of the same session and configuration share one handler.
    assert!(Arc::ptr_eq(&h, &s.clone().retry_handler()));
}

/// 13.5: stuck detection fails a call when nothing of the handler completes for
/// `progress_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_samples_fail_after_the_progress_timeout() {
    let emu = emulator("conf-stuck").await;
    capacity(&emu, json!({ "sample_hold_ms": 5000 })).await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await.with_retry_config(RetryConfig {
        progress_timeout: Duration::from_millis(300),
        ..fast_handler()
    });
    let e = s
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoProgress);
    assert!(
        e.message
            .contains("No progress made in 0.3s. Requests appear to be stuck."),
        "{e}"
    );
}

/// 12.7: `sample_sequence_ids` is required, and a server that ignores
/// `prompt_logprobs_last_n` is detected; `prompt_logprobs_last_n` needs `prompt_logprobs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_checks_reject_what_the_server_did_not_honour() {
    let emu = emulator("conf-checks").await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    let long = ModelInput::from_ints(vec![5, 6, 7, 8, 9]);
    let ok = s
        .compute_logprobs_last_n(long.clone(), Some(2))
        .await
        .unwrap();
    assert_eq!(ok.iter().filter(|x| x.is_some()).count(), 2, "{ok:?}");
    capacity(&emu, json!({ "ignore_prompt_logprobs_last_n": true })).await;
    let e = s
        .compute_logprobs_last_n(long.clone(), Some(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(e.message.contains("may predate this feature"), "{e}");
    capacity(&emu, json!({ "omit_sample_sequence_ids": true })).await;
    let e = s
        .sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap_err();
    assert!(e.message.contains("sample_sequence_ids"), "{e}");
    let e = s
        .sample(
            prompt(),
            1,
            params(),
            SampleOptions {
                prompt_logprobs_last_n: Some(1),
                ..SampleOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert!(e.message.contains("prompt_logprobs"), "{e}");
}

// ------------------------------------------------------------------------------------------
// Queue-state log lines (12.8, 15.2)
// ------------------------------------------------------------------------------------------

/// WARN lines logged by the library in this test process.
fn warnings() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut m = Message(String::new());
        e.record(&mut m);
        warnings().lock().unwrap().push(m.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn lines_with(needle: &str) -> Vec<String> {
    warnings()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// 12.8/15.2: a paused sampler logs "Sampling is paused for sampler {id}. Reason: {reason}"
/// (default reason when the server gives none) at most once per configured interval, while
/// events report every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_pause_lines_are_debounced_and_events_report_changes() {
    warnings();
    let emu = emulator_with("conf-queue", |c| c.poll_hold = Duration::from_millis(20)).await;
    let svc = service(
        &emu,
        KEY_A,
        SamplingSettings {
            queue_state: QueueStateConfig {
                log_interval: Duration::from_millis(300),
                ..QueueStateConfig::default()
            },
            ..settings()
        },
    );
    let s = sampler(&svc).await;
    let id = s.sampling_session_id().to_string();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let (c, sid) = (changes.clone(), id.clone());
    svc.events().subscribe(move |e| {
        if let Event::QueueState {
            client_id, state, ..
        } = e
        {
            if *client_id == sid {
                c.lock().unwrap().push(*state);
            }
        }
    });
    control_post(
        &emu,
        "queue_state",
        json!({ "queue_state": "paused_capacity" }),
    )
    .await;
    capacity(&emu, json!({ "sample_hold_ms": 1000 })).await;
    let started = tokio::time::Instant::now();
    s.sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap();
    let took = started.elapsed().as_millis() as usize;
    control_post(&emu, "queue_state", json!({ "queue_state": null })).await;
    let expected = format!(
        "Sampling is paused for sampler {id}. Reason: Tinker backend is running short on \
         capacity, please wait"
    );
    let lines = lines_with(&format!("sampler {id}."));
    assert!(lines.iter().all(|l| *l == expected), "{lines:?}");
    let polls: u64 = control_get(&emu, "polls").await["polls"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert!(
        lines.len() >= 2 && lines.len() <= took / 300 + 1,
        "{} lines in {took} ms ({polls} polls)",
        lines.len()
    );
    assert_eq!(
        *changes.lock().unwrap(),
        vec![QueueState::PausedCapacity, QueueState::Active],
        "one event per change"
    );
}

/// 15.2: a training pause is logged only after the grace period, then debounced, with the
/// server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_pause_lines_wait_for_the_grace_period() {
    warnings();
    let emu = emulator_with("conf-queue-train", |c| {
        c.poll_hold = Duration::from_millis(20)
    })
    .await;
    let svc = service(
        &emu,
        KEY_A,
        SamplingSettings {
            queue_state: QueueStateConfig {
                log_interval: Duration::from_millis(200),
                training_grace: Duration::from_millis(400),
            },
            ..settings()
        },
    );
    let tc = svc
        .create_lora_training_client(BASE_MODEL, Default::default())
        .await
        .unwrap();
    let model_id = tc.model_id().to_string();
    control_post(
        &emu,
        "queue_state",
        json!({ "queue_state": "paused_rate_limit", "reason": "quota of team" }),
    )
    .await;
    control_post(&emu, "delays", json!({ "ForwardBackward": 900 })).await;
    let started = tokio::time::Instant::now();
    tc.forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    let took = started.elapsed().as_millis() as usize;
    control_post(&emu, "queue_state", json!({ "queue_state": null })).await;
    let lines = lines_with(&format!("Training for {model_id} is paused"));
    assert!(
        lines
            .iter()
            .all(|l| *l == format!("Training for {model_id} is paused. Reason: quota of team.")),
        "{lines:?}"
    );
    assert!(
        !lines.is_empty() && lines.len() <= (took.saturating_sub(400)) / 200 + 1,
        "{} lines in {took} ms",
        lines.len()
    );
}

/// 12.5/13.7: a 402 on `asample` inside the billing pause is back-pressure like a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_inside_the_billing_pause_backs_off() {
    let emu = emulator("conf-402").await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    fault(
        &emu,
        json!({ "path": "asample", "status": 402, "count": 1 }),
    )
    .await;
    s.sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap();
    assert_eq!(s.dispatch_stats().backoffs, 1);
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|a| a.seq_id)
        .collect();
    assert_eq!(seqs, vec![0], "resent with the same seq_id");
}

/// 7.1/13.4: every `asample` attempt is a new HTTP request (new idempotency key) with no
/// HTTP-layer retries (`x-stainless-retry-count: 0`), and the same body (seq_id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_asample_attempt_has_a_new_idempotency_key() {
    let emu = emulator("conf-idem").await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    fault(
        &emu,
        json!({ "path": "asample", "status": 503, "count": 2 }),
    )
    .await;
    s.sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap();
    let journal = control_get(&emu, "journal").await;
    let sends: Vec<&Value> = journal["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/asample")))
        .collect();
    assert_eq!(sends.len(), 3, "{sends:?}");
    let keys: std::collections::BTreeSet<&str> = sends
        .iter()
        .map(|e| e["idempotency_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "a new key per attempt: {sends:?}");
    assert!(sends.iter().all(|e| e["retry_count"] == "0"), "{sends:?}");
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|a| a.seq_id)
        .collect();
    assert_eq!(seqs, vec![0]);
}

/// 12.6: with `sample_use_retrieve_futures` the handler has no concurrency limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_futures_mode_lifts_the_handler_limit() {
    let emu = emulator("conf-rf").await;
    set_flags(&emu, json!({ "sample_use_retrieve_futures": true })).await;
    let svc = service(&emu, KEY_A, settings());
    let s = sampler(&svc).await;
    assert_eq!(s.retry_handler().config().max_connections, None);
    s.sample(prompt(), 1, params(), SampleOptions::default())
        .await
        .unwrap();
}
