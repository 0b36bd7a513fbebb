//! The send path of PROTOCOL.md against the in-process emulator: the HTTP layer (13.2), the
//! holder retry loop (13.4), the empty-400 rule (1.5), the billing pause (13.7), the
//! ephemeral save's sampling seq id (6.6), turns (11.3), training 410 (8.1.3), deprecation
//! notes (1.6.4), create_session messages (5.5), heartbeat warnings (5.6) and zstd bodies
//! (14.1). Each attempt is read from the emulator's journal (idempotency key, retry count,
//! content encoding, status).

mod support;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::types::AdamParams;
use tinkex::core::{
    Config, ErrorKind, Event, HeartbeatConfig, LoraOptions, RetryPolicy, ServiceClient,
};
use tinkex_emulator::RunningEmulator;

// ---- a global tracing capture --------------------------------------------------------------

#[derive(Clone, Debug)]
struct Line {
    level: tracing::Level,
    text: String,
}

fn lines() -> &'static Mutex<Vec<Line>> {
    static LINES: OnceLock<Mutex<Vec<Line>>> = OnceLock::new();
    LINES.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.0.push_str(&format!("{}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        lines().lock().unwrap().push(Line {
            level: *event.metadata().level(),
            text: text.0,
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Installs the capture once per test binary; lines are told apart by unique text.
fn capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
}

fn logged(level: tracing::Level, needle: &str) -> Vec<String> {
    lines()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.level == level && l.text.contains(needle))
        .map(|l| l.text.clone())
        .collect()
}

// ---- helpers -------------------------------------------------------------------------------

fn adam() -> AdamParams {
    AdamParams {
        learning_rate: 1e-3,
        ..Default::default()
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        progress_timeout: Duration::from_secs(60),
        ..fast_retry()
    }
}

fn service(emu: &RunningEmulator, retry: RetryPolicy) -> ServiceClient {
    service_with(emu, retry, HeartbeatConfig::default())
}

fn service_with(emu: &RunningEmulator, retry: RetryPolicy, hb: HeartbeatConfig) -> ServiceClient {
    let config = Config::builder()
        .api_key("tml-conformance-send")
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(retry)
        .heartbeat(hb)
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

async fn clear_journal(emu: &RunningEmulator) {
    let (status, _) = emu.control("DELETE", "journal", None).await;
    assert_eq!(status, 200);
}

/// Journal entries whose path is exactly `path`: (idempotency key, retry count, encoding,
/// status).
async fn journal(emu: &RunningEmulator, path: &str) -> Vec<(String, String, Option<String>, u64)> {
    let j = control_get(emu, "journal").await;
    j["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == path)
        .map(|e| {
            (
                e["idempotency_key"].as_str().unwrap_or("").to_string(),
                e["retry_count"].as_str().unwrap_or("").to_string(),
                e["content_encoding"].as_str().map(str::to_string),
                e["status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

async fn set_client_config(emu: &RunningEmulator, flags: Value) {
    control_post(emu, "flags", json!({ "client_config": flags })).await;
}

async fn training(service: &ServiceClient) -> tinkex::core::TrainingClient {
    service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap()
}

// ---- 13.2 / 13.4: layers and idempotency keys ----------------------------------------------

/// HTTP-layer retries keep the key and count in `x-stainless-retry-count`; the holder loop
/// re-issues with a new key once the HTTP layer's `max_retries` are spent.
#[tokio::test]
async fn http_layer_keeps_the_key_holder_loop_takes_a_new_one() {
    let emu = emulator("send-keys").await;
    let svc = service(
        &emu,
        RetryPolicy {
            http_max_retries: 2,
            ..policy()
        },
    );
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 503, "count": 5}),
    )
    .await;
    clear_journal(&emu).await;
    tc.optim_step(adam()).await.unwrap();
    let j = journal(&emu, "/api/v1/optim_step").await;
    assert_eq!(j.len(), 6, "{j:?}");
    let counts: Vec<&str> = j.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(counts, ["0", "1", "2", "0", "1", "2"], "{j:?}");
    assert!(
        j[..3].iter().all(|e| e.0 == j[0].0),
        "one key per call: {j:?}"
    );
    assert!(
        j[3..].iter().all(|e| e.0 == j[3].0),
        "one key per call: {j:?}"
    );
    assert_ne!(j[0].0, j[3].0, "a re-issued call has a new key");
    assert_eq!(j[5].3, 200);
    assert_eq!(optimizer_steps(&emu, tc.model_id()).await, 1);
}

/// save_weights is called with `max_retries=0` (section 4): every retry is a holder-loop
/// re-issue with a fresh key and retry count 0.
#[tokio::test]
async fn zero_retry_endpoints_are_reissued_with_fresh_keys() {
    let emu = emulator("send-zero").await;
    let svc = service(&emu, policy());
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/save_weights", "status": 503, "count": 2}),
    )
    .await;
    clear_journal(&emu).await;
    tc.save_state("zero-retry").await.unwrap();
    let j = journal(&emu, "/api/v1/save_weights").await;
    assert_eq!(j.len(), 3, "{j:?}");
    assert!(j.iter().all(|e| e.1 == "0"), "{j:?}");
    let keys: std::collections::HashSet<_> = j.iter().map(|e| e.0.clone()).collect();
    assert_eq!(keys.len(), 3, "{j:?}");
}

/// `retry-after-ms` replaces the backoff (13.2).
#[tokio::test]
async fn retry_after_is_honoured() {
    let emu = emulator("send-retry-after").await;
    let svc = service(&emu, policy());
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 429, "count": 1,
               "headers": {"retry-after-ms": "400"}}),
    )
    .await;
    clear_journal(&emu).await;
    let started = Instant::now();
    tc.optim_step(adam()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    let j = journal(&emu, "/api/v1/optim_step").await;
    assert_eq!(j.len(), 2);
    assert_eq!((j[1].0 == j[0].0, j[1].1.as_str()), (true, "1"));
}

/// A send that keeps answering 409 is retried but bounded by the holder window, not by the
/// (much longer) progress timeout.
#[tokio::test]
async fn a_409_is_retried_but_bounded_by_the_holder_window() {
    let emu = emulator("send-409").await;
    let svc = service(
        &emu,
        RetryPolicy {
            http_max_retries: 1,
            holder_window: Duration::from_millis(500),
            progress_timeout: Duration::from_secs(120),
            ..policy()
        },
    );
    let rest = svc.create_rest_client();
    fault(
        &emu,
        json!({"path": "/api/v1/weights_info", "status": 409, "body": {"detail": "conflict"}}),
    )
    .await;
    clear_journal(&emu).await;
    let started = Instant::now();
    let err = rest
        .get_weights_info_by_tinker_path("tinker://run/weights/x")
        .await
        .unwrap_err();
    assert_eq!(err.http_status, Some(409), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let j = journal(&emu, "/api/v1/weights_info").await;
    let keys: std::collections::HashSet<_> = j.iter().map(|e| e.0.clone()).collect();
    assert!(keys.len() >= 2, "re-issued by the holder loop: {j:?}");
    assert!(j.iter().all(|e| e.1 == "0" || e.1 == "1"), "{j:?}");
}

/// Sends outside the holder loop (create_session, create_model, …) get HTTP-layer retries
/// only: a create_model answering 503 fails after 1 + http_max_retries attempts with one key.
#[tokio::test]
async fn create_model_has_http_layer_retries_only() {
    let emu = emulator("send-create-model").await;
    let svc = service(
        &emu,
        RetryPolicy {
            http_max_retries: 3,
            ..policy()
        },
    );
    fault(&emu, json!({"path": "/api/v1/create_model", "status": 503})).await;
    let err = svc
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.http_status, Some(503), "{err}");
    let j = journal(&emu, "/api/v1/create_model").await;
    assert_eq!(j.len(), 4, "{j:?}");
    assert!(j.iter().all(|e| e.0 == j[0].0), "{j:?}");
}

// ---- 1.5: empty 400 -------------------------------------------------------------------------

/// An empty 400 becomes a connection error (re-issued by the holder loop) while the pool's
/// reconnect budget of 16 lasts; after that the 400 is returned as is.
#[tokio::test]
async fn empty_400_reconnects_within_the_budget() {
    // A failed send leaves a gap in seq_id: the emulator waits 300 ms for it.
    let emu = emulator_with("send-400", |c| {
        c.seq_gap_timeout = Duration::from_millis(300)
    })
    .await;
    let svc = service(
        &emu,
        RetryPolicy {
            holder_window: Duration::from_secs(30),
            ..policy()
        },
    );
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 400, "count": 2}),
    )
    .await;
    clear_journal(&emu).await;
    tc.optim_step(adam()).await.unwrap();
    let j = journal(&emu, "/api/v1/optim_step").await;
    assert_eq!(j.len(), 3, "{j:?}");
    assert!(
        j.iter().all(|e| e.1 == "0"),
        "not an HTTP-layer retry: {j:?}"
    );
    // A 400 with a body is an ordinary client error.
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 400, "count": 1, "body": {"detail": "bad"}}),
    )
    .await;
    let err = tc.optim_step(adam()).await.unwrap_err();
    assert_eq!((err.kind, err.http_status), (ErrorKind::User, Some(400)));
    // Two successes give back the two units spent above (+1 each, capped at 16).
    tc.optim_step(adam()).await.unwrap();
    // An endless run of empty 400s: 16 reconnects, then the 400 itself.
    fault(&emu, json!({"path": "/api/v1/optim_step", "status": 400})).await;
    clear_journal(&emu).await;
    let err = tc.optim_step(adam()).await.unwrap_err();
    assert_eq!(err.http_status, Some(400), "{err}");
    assert!(
        err.transport.is_none(),
        "the plain 400 once the budget is spent: {err:?}"
    );
    assert_eq!(journal(&emu, "/api/v1/optim_step").await.len(), 17);
}

// ---- 13.7: billing --------------------------------------------------------------------------

/// 402 pauses (the call is re-issued, attempt unchanged) until the server's maximum pause,
/// then the caller gets the typed billing error.
#[tokio::test]
async fn billing_pause_then_typed_error_after_the_server_maximum() {
    capture();
    let emu = emulator("send-billing").await;
    set_client_config(&emu, json!({"billing_exception_max_pause_duration_sec": 1})).await;
    let svc = service(
        &emu,
        RetryPolicy {
            billing_pause_step: Duration::from_millis(50),
            ..policy()
        },
    );
    let tc = training(&svc).await;
    // A short incident is waited out.
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 402, "count": 3, "body": {"detail": "pay-short"}}),
    )
    .await;
    tc.optim_step(adam()).await.unwrap();
    assert_eq!(
        logged(tracing::Level::WARN, "pay-short").len(),
        1,
        "one WARNING per 60 s"
    );
    // An endless one fails after about the server's maximum (1 s), from the incident start.
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 402, "body": {"detail": "pay-long"}}),
    )
    .await;
    let started = Instant::now();
    let err = tc.optim_step(adam()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Billing, "{err}");
    assert!(!err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !logged(tracing::Level::ERROR, "Aborting").is_empty(),
        "ERROR … Aborting."
    );
}

// ---- 6.6 / 11.3 / 8.1.3 --------------------------------------------------------------------

/// The ephemeral save_weights_for_sampler takes a fresh sampling_session_seq_id per holder
/// attempt: the first (failed) attempt used 0, the session the server creates is 1.
#[tokio::test]
async fn ephemeral_sampler_save_takes_a_fresh_sampling_seq_per_attempt() {
    let emu = emulator("send-ephemeral").await;
    let svc = service(&emu, policy());
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/save_weights_for_sampler", "status": 503, "count": 1}),
    )
    .await;
    let sampler = tc.save_weights_and_get_sampling_client().await.unwrap();
    assert!(
        sampler.sampling_session_id().ends_with(":sample:1"),
        "{}",
        sampler.sampling_session_id()
    );
}

/// A send that fails still passes the turn on: the next request is sent and completes.
#[tokio::test]
async fn a_failed_send_advances_the_turn() {
    let emu = emulator_with("send-turn", |c| {
        c.seq_gap_timeout = Duration::from_millis(300)
    })
    .await;
    let svc = service(&emu, policy());
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/optim_step", "status": 422, "count": 1, "body": {"detail": "no"}}),
    )
    .await;
    let failed = tc.optim_step(adam());
    let next = tc.optim_step(adam());
    assert_eq!(failed.await.unwrap_err().http_status, Some(422));
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("the next request is not blocked")
        .unwrap();
}

/// A 410 on a training future reaches the caller as `Expired`; the request is not resent.
#[tokio::test]
async fn training_410_reaches_the_caller_without_resubmission() {
    let emu = emulator("send-410").await;
    let svc = service(&emu, policy());
    let tc = training(&svc).await;
    fault(
        &emu,
        json!({"path": "/api/v1/retrieve_future", "status": 410, "count": 1, "body": {"detail": "gone"}}),
    )
    .await;
    clear_journal(&emu).await;
    let err = tc
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Expired, "{err}");
    assert_eq!(journal(&emu, "/api/v1/forward_backward").await.len(), 1);
}

// ---- 1.6.4 / 5.5 / 5.6 ---------------------------------------------------------------------

/// `x-deprecation-note` is logged at WARNING (ERROR with `x-deprecation-level: error`),
/// sanitized, once per distinct note.
#[tokio::test]
async fn deprecation_notes_are_logged_once_per_note() {
    capture();
    let emu = emulator("send-deprecation").await;
    let svc = service(&emu, policy());
    let rest = svc.create_rest_client();
    fault(
        &emu,
        json!({"path": "/api/v1/weights_info", "status": 404, "count": 3, "body": {"detail": "nope"},
               "headers": {"x-deprecation-note": "dep-note-a\told"}}),
    )
    .await;
    for _ in 0..3 {
        rest.get_weights_info_by_tinker_path("tinker://run/weights/x")
            .await
            .unwrap_err();
    }
    let warn = logged(tracing::Level::WARN, "Deprecation notice: dep-note-a");
    assert_eq!(warn.len(), 1, "{warn:?}");
    assert!(!warn[0].contains('\t'), "sanitized: {warn:?}");
    fault(
        &emu,
        json!({"path": "/api/v1/weights_info", "status": 404, "count": 1, "body": {"detail": "nope"},
               "headers": {"x-deprecation-note": "dep-note-b", "x-deprecation-level": "error"}}),
    )
    .await;
    rest.get_weights_info_by_tinker_path("tinker://run/weights/x")
        .await
        .unwrap_err();
    assert_eq!(
        logged(tracing::Level::ERROR, "Deprecation notice: dep-note-b").len(),
        1
    );
}

/// create_session's messages reach the log at INFO / WARNING / ERROR.
#[tokio::test]
async fn create_session_messages_are_logged() {
    capture();
    let emu = emulator("send-session-msgs").await;
    fault(
        &emu,
        json!({"path": "/api/v1/create_session", "status": 200, "count": 1,
               "body": {"type": "create_session", "session_id": "sess-msgs",
                        "info_message": "msg-info-5.5", "warning_message": "msg-warn-5.5",
                        "error_message": "msg-error-5.5"}}),
    )
    .await;
    let svc = service(&emu, policy());
    // The session is created by the first call that needs it; create_model then fails (the
    // emulator does not know the injected session), which is irrelevant here.
    let _ = svc
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await;
    assert_eq!(logged(tracing::Level::INFO, "msg-info-5.5").len(), 1);
    assert_eq!(logged(tracing::Level::WARN, "msg-warn-5.5").len(), 1);
    assert_eq!(logged(tracing::Level::ERROR, "msg-error-5.5").len(), 1);
}

/// Failing heartbeats: one `HeartbeatWarning` event per failed beat after `warn_after`, but
/// the WARNING line at most once per `warn_log_interval`, with the elapsed time; 410 → INFO
/// and the loop stops.
#[tokio::test]
async fn heartbeat_warnings_are_rate_limited_and_410_stops() {
    capture();
    let emu = emulator("send-heartbeat").await;
    let svc = service_with(
        &emu,
        policy(),
        HeartbeatConfig {
            interval: Duration::from_millis(20),
            warn_after: Duration::from_millis(60),
            warn_log_interval: Duration::from_secs(60),
        },
    );
    let warnings = Arc::new(Mutex::new(0u32));
    let sink = warnings.clone();
    svc.events().subscribe(move |e| {
        if matches!(e, Event::HeartbeatWarning { .. }) {
            *sink.lock().unwrap() += 1;
        }
    });
    let tc = training(&svc).await;
    let sid = svc.session_id().unwrap();
    fault(
        &emu,
        json!({"path": "/api/v1/session_heartbeat", "status": 503}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while *warnings.lock().unwrap() < 5 {
        assert!(Instant::now() < deadline, "heartbeat warnings");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = logged(tracing::Level::WARN, &format!("for session {sid}"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("Session heartbeat failed for"),
        "{lines:?}"
    );
    assert_eq!(emu.control("DELETE", "faults", None).await.0, 200);
    fault(
        &emu,
        json!({"path": "/api/v1/session_heartbeat", "status": 410, "body": {"detail": "ended"}}),
    )
    .await;
    while !svc.status().session_expired {
        assert!(Instant::now() < deadline, "410 expires the session");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        logged(tracing::Level::INFO, &format!("session {sid} has ended")).len(),
        1
    );
    drop(tc);
}

// ---- 14.1 / 11.4: zstd and chunking flags --------------------------------------------------

/// With `proto_compress_fwdbwd`, forward_backward bodies are zstd-compressed
/// (`Content-Encoding: zstd`) and the emulator accepts them; `fwdbwd_max_chunk_len` splits
/// the batch.
#[tokio::test]
async fn zstd_bodies_and_chunk_flags_follow_client_config() {
    let emu = emulator("send-zstd").await;
    set_client_config(
        &emu,
        json!({"proto_compress_fwdbwd": true, "fwdbwd_max_chunk_len": 2,
               "fwdbwd_dispatch_bytes_semaphore_size": 1}),
    )
    .await;
    let svc = service(&emu, policy());
    let tc = training(&svc).await;
    clear_journal(&emu).await;
    let out = tc
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    assert_eq!(out.loss_fn_outputs.len(), 4);
    let j = journal(&emu, "/api/v1/forward_backward").await;
    assert_eq!(j.len(), 2, "4 datums in chunks of 2: {j:?}");
    assert!(
        j.iter()
            .all(|e| e.2.as_deref() == Some("zstd") && e.3 == 200),
        "{j:?}"
    );
    // Without the flag: plain bodies, and the same loss.
    let emu2 = emulator("send-plain").await;
    let svc2 = service(&emu2, policy());
    let tc2 = training(&svc2).await;
    let plain = tc2
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    let j = journal(&emu2, "/api/v1/forward_backward").await;
    assert!(j.iter().all(|e| e.2.is_none()), "{j:?}");
    let a = out.metrics["loss:sum"];
    let b = plain.metrics["loss:sum"];
    assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
}
