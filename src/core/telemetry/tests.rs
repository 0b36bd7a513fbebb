//! Unit tests of the telemetry queue, event building, redaction and time formatting.

use super::*;
use crate::core::types::RequestErrorCategory;
use crate::core::types::SDK_VERSION;
use serde_json::json;
use std::time::UNIX_EPOCH;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Fail,
    Hang,
    Delay(Duration),
}

/// Records every batch it is asked to send (at call time), then behaves per `mode`.
struct ChanSink {
    tx: mpsc::UnboundedSender<TelemetryBatch>,
    mode: Mode,
}

impl TelemetrySink for ChanSink {
    fn send(&self, batch: TelemetryBatch, _timeout: Duration) -> SendFuture {
        let _ = self.tx.send(batch);
        let mode = self.mode;
        Box::pin(async move {
            match mode {
                Mode::Ok => Ok(()),
                Mode::Fail => Err(Error::from_status(500, "")),
                Mode::Hang => std::future::pending().await,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    Ok(())
                }
            }
        })
    }
}

struct Fixture {
    t: Arc<Telemetry>,
    rx: mpsc::UnboundedReceiver<TelemetryBatch>,
    overflow: Arc<Mutex<Vec<u64>>>,
    sink: Arc<ChanSink>,
}

fn fixture(config: TelemetryConfig, mode: Mode) -> Fixture {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Arc::new(ChanSink { tx, mode });
    let overflow = Arc::new(Mutex::new(Vec::new()));
    let o = overflow.clone();
    let t = Telemetry::start(
        config,
        sink.clone(),
        "sess-1".into(),
        Box::new(move |n| o.lock().unwrap().push(n)),
    );
    Fixture {
        t,
        rx,
        overflow,
        sink,
    }
}

/// Flushes only when told (interval one hour).
fn manual(max_batch: usize) -> TelemetryConfig {
    TelemetryConfig {
        max_batch,
        flush_interval: Duration::from_secs(3600),
        ..TelemetryConfig::default()
    }
}

fn ev(i: u64) -> Value {
    let mut e = base_event("GENERIC_EVENT", Severity::Info, SystemTime::now());
    e["event_name"] = json!("test");
    e["event_data"] = json!({ "i": i });
    e
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<TelemetryBatch>) -> TelemetryBatch {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no batch within 60 s")
        .expect("sink gone")
}

/// Nothing arrives within `within` (paused clock: time advances when idle).
async fn nothing(rx: &mut mpsc::UnboundedReceiver<TelemetryBatch>, within: Duration) {
    if let Ok(b) = tokio::time::timeout(within, rx.recv()).await {
        panic!("unexpected batch: {b:?}");
    }
}

/// Waits (yielding to other tasks, no sleeping) until `cond` holds, for 10 s real time.
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "condition not met");
        tokio::task::yield_now().await;
    }
}

fn indices(b: &TelemetryBatch) -> Vec<u64> {
    b.events
        .iter()
        .map(|e| e["event_data"]["i"].as_u64().unwrap())
        .collect()
}

/// Counts WARN events whose message contains a substring (current thread only).
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains(needle))
            .count()
    }
}

struct MessageVisitor(String);

impl tracing::field::Visit for MessageVisitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for Warnings {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut v = MessageVisitor(String::new());
            event.record(&mut v);
            self.0.lock().unwrap().push(v.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ---- formatting -------------------------------------------------------------------

#[test]
fn timestamps_are_utc_iso8601_with_z() {
    let at = |s: u64, us: u32| UNIX_EPOCH + Duration::new(s, us * 1000);
    assert_eq!(format_timestamp(at(0, 0)), "1970-01-01T00:00:00.000000Z");
    assert_eq!(
        format_timestamp(at(1_782_907_201, 250_000)),
        "2026-07-01T12:00:01.250000Z"
    );
    assert_eq!(
        format_timestamp(at(951_868_799, 999_999)),
        "2000-02-29T23:59:59.999999Z"
    );
    assert_eq!(
        format_timestamp(at(4_107_542_400, 1)),
        "2100-03-01T00:00:00.000001Z"
    );
}

#[test]
fn durations_use_python_timedelta_text() {
    let ms = Duration::from_millis;
    assert_eq!(format_timedelta(Duration::ZERO), "0:00:00");
    assert_eq!(format_timedelta(ms(2_100)), "0:00:02.100000");
    assert_eq!(format_timedelta(ms(312_500)), "0:05:12.500000");
    assert_eq!(format_timedelta(Duration::from_secs(3 * 3600)), "3:00:00");
    assert_eq!(
        format_timedelta(Duration::new(90_000, 1_000)),
        "1 day, 1:00:00.000001"
    );
    assert_eq!(
        format_timedelta(Duration::from_secs(2 * 86_400 + 61)),
        "2 days, 0:01:01"
    );
}

#[test]
fn secrets_are_redacted() {
    assert_eq!(
        redact_secrets("bad key tml-secret123 given"),
        "bad key tml-<redacted> given"
    );
    assert_eq!(
        redact_secrets("X-API-Key: tml-AbC_d-9;x"),
        "X-API-Key: tml-<redacted>;x"
    );
    assert_eq!(redact_secrets("tml-a"), "tml-<redacted>");
    assert_eq!(
        redact_secrets("text/html-page tml- x"),
        "text/html-page tml- x"
    );
    assert_eq!(
        redact_secrets("jwt eyJhbGci.eyJzdWIi.c2ln end"),
        "jwt eyJ<redacted> end"
    );
    assert_eq!(redact_secrets("eyJust kidding"), "eyJust kidding");
    assert_eq!(redact_secrets("naïve tml-é"), "naïve tml-é");
    let data = sanitize_data(json!({
        "request_headers": {"X-API-Key": "tml-hdr"},
        "Authorization": "Bearer abc",
        "nested": ["tml-zzz", {"x": "eyJa.b"}],
        "n": 3
    }));
    assert_eq!(
        data,
        json!({
            "Authorization": "<redacted>",
            "nested": ["tml-<redacted>", {"x": "eyJ<redacted>"}],
            "n": 3
        })
    );
}

// ---- classification (13.8) ----------------------------------------------------------

fn classify(err: &Error) -> Value {
    exception_event(err, "TrainingClient.forward_backward", SystemTime::now()).unwrap()
}

#[test]
fn user_and_system_errors_are_classified() {
    let e = classify(&Error::from_status(400, r#"{"detail":"bad"}"#));
    assert_eq!(e["event"], "GENERIC_EVENT");
    assert_eq!(e["event_name"], "user_error");
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(
        e["event_data"],
        json!({"error_type": "User", "message": "HTTP 400: bad", "status_code": 400,
               "method": "TrainingClient.forward_backward"})
    );

    for (status, kind) in [(408, "Transient"), (500, "Transient")] {
        let e = classify(&Error::from_status(status, "").with_request_id("req-1"));
        assert_eq!(e["event"], "UNHANDLED_EXCEPTION", "{status}");
        assert_eq!(e["severity"], "ERROR");
        assert_eq!(e["error_type"], kind);
        assert_eq!(e["error_message"], format!("HTTP {status}"));
        assert_eq!(
            e["traceback"],
            format!("in TrainingClient.forward_backward, request req-1, HTTP {status}")
        );
        assert!(e.get("event_data").is_none());
    }

    let failed = Error {
        category: Some(RequestErrorCategory::User),
        ..Error::fatal("invalid loss_fn")
    };
    let e = classify(&failed);
    assert_eq!(e["event_name"], "user_error");
    assert_eq!(e["severity"], "WARNING");
    assert_eq!(
        e["event_data"],
        json!({"error_type": "Fatal", "message": "invalid loss_fn",
               "method": "TrainingClient.forward_backward"})
    );
    let server = Error {
        category: Some(RequestErrorCategory::Server),
        ..Error::fatal("oom")
    };
    assert_eq!(classify(&server)["event"], "UNHANDLED_EXCEPTION");

    let e = classify(&Error::timeout(Duration::from_secs(3)));
    assert_eq!(e["event"], "UNHANDLED_EXCEPTION");
    assert_eq!(e["error_type"], "Timeout");
    assert_eq!(e["severity"], "ERROR");

    assert!(exception_event(&Error::cancelled(), "m", SystemTime::now()).is_none());
}

// ---- batching and flushing ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn batches_are_capped_and_order_is_preserved() {
    let mut f = fixture(manual(100), Mode::Ok);
    for i in 0..250 {
        f.t.push(ev(i));
    }
    f.t.flush_now();
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let b = recv(&mut f.rx).await;
        assert_eq!(b.session_id, "sess-1");
        assert_eq!(b.sdk_version, SDK_VERSION);
        assert_eq!(b.platform, platform());
        assert_eq!(b.process_uuid, process_uuid());
        sizes.push(b.events.len());
        all.extend(indices(&b));
        for e in &b.events {
            assert_eq!(
                e["event_session_index"].as_u64(),
                e["event_data"]["i"].as_u64()
            );
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(all, (0..250).collect::<Vec<_>>());
    nothing(&mut f.rx, Duration::from_secs(60)).await;
    wait_until(|| f.t.sent_events() == 250).await;
    assert_eq!(f.t.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn flushes_on_the_interval() {
    let config = TelemetryConfig {
        flush_interval: Duration::from_secs(10),
        ..TelemetryConfig::default()
    };
    let mut f = fixture(config, Mode::Ok);
    for i in 0..5 {
        f.t.push(ev(i));
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(f.rx.try_recv().is_err(), "flushed before the interval");
    let before = Instant::now();
    let b = recv(&mut f.rx).await;
    assert_eq!(indices(&b), [0, 1, 2, 3, 4]);
    assert!(before.elapsed() <= Duration::from_secs(1));
    // And again one interval later.
    f.t.push(ev(5));
    let b = recv(&mut f.rx).await;
    assert_eq!(indices(&b), [5]);
}

#[tokio::test(start_paused = true)]
async fn flushes_when_a_batch_fills() {
    let mut f = fixture(manual(10), Mode::Ok);
    for i in 0..9 {
        f.t.push(ev(i));
    }
    nothing(&mut f.rx, Duration::from_secs(60)).await;
    f.t.push(ev(9));
    let b = recv(&mut f.rx).await;
    assert_eq!(indices(&b), (0..10).collect::<Vec<_>>());
    // A flush sends everything queued, in batches of at most max_batch.
    for i in 10..35 {
        f.t.push(ev(i));
    }
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while got.len() < 25 {
        let b = recv(&mut f.rx).await;
        sizes.push(b.events.len());
        got.extend(indices(&b));
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(got, (10..35).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn drain_sends_everything_through_a_slow_sink() {
    let mut f = fixture(manual(100), Mode::Delay(Duration::from_millis(500)));
    for i in 0..1000 {
        f.t.push(ev(i));
    }
    let t0 = Instant::now();
    assert!(f.t.drain(Duration::from_secs(30)).await);
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    assert_eq!(f.t.sent_events(), 1000);
    assert_eq!(f.t.queued(), 0);
    let mut all = Vec::new();
    while let Ok(b) = f.rx.try_recv() {
        assert!(b.events.len() <= 100);
        all.extend(indices(&b));
    }
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    // The flusher is stopped: later events are ignored.
    f.t.push(ev(1000));
    f.t.flush_now();
    assert_eq!(f.t.queued(), 0);
    wait_until(|| Arc::strong_count(&f.t.shared) == 1).await;
    assert!(f.t.drain(Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn drain_times_out_with_a_hanging_sink() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let config = TelemetryConfig {
        http_timeout: Duration::from_secs(5),
        ..manual(100)
    };
    let mut f = fixture(config, Mode::Hang);
    for i in 0..300 {
        f.t.push(ev(i));
    }
    let t0 = Instant::now();
    assert!(!f.t.drain(Duration::from_secs(2)).await);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    assert_eq!(
        warnings.count("Timed out draining telemetry during shutdown"),
        1
    );
    assert_eq!(recv(&mut f.rx).await.events.len(), 100);
    // Stopped: no further sends.
    wait_until(|| Arc::strong_count(&f.t.shared) == 1).await;
    f.t.flush_now();
    nothing(&mut f.rx, Duration::from_secs(60)).await;
    assert_eq!(f.t.sent_events(), 0);
}

#[tokio::test(start_paused = true)]
async fn drain_counts_timed_out_batches_as_dropped() {
    let config = TelemetryConfig {
        http_timeout: Duration::from_secs(1),
        ..manual(100)
    };
    let mut f = fixture(config, Mode::Hang);
    for i in 0..300 {
        f.t.push(ev(i));
    }
    let t0 = Instant::now();
    assert!(f.t.drain(Duration::from_secs(30)).await);
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(f.t.sent_events(), 0);
    for _ in 0..3 {
        recv(&mut f.rx).await;
    }
    assert!(f.rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_with_a_failing_sink() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let mut f = fixture(manual(100), Mode::Fail);
    for i in 0..20_000 {
        f.t.push(ev(i));
        assert!(f.t.queued() <= 10_000);
    }
    assert_eq!(f.t.queued(), 10_000);
    assert_eq!(f.t.dropped(), 10_000);
    assert_eq!(*f.overflow.lock().unwrap(), [1]);
    assert_eq!(warnings.count("Telemetry queue full"), 1);
    // The flush sends 100 batches, all fail and are dropped, then reports the total once.
    f.t.flush_now();
    for _ in 0..100 {
        recv(&mut f.rx).await;
    }
    wait_until(|| f.overflow.lock().unwrap().len() == 2).await;
    assert_eq!(*f.overflow.lock().unwrap(), [1, 10_000]);
    assert_eq!(f.t.queued(), 0);
    assert_eq!(f.t.sent_events(), 0);
    assert_eq!(warnings.count("Failed to send telemetry batch"), 100);
    // No new drops: the next flush reports nothing.
    f.t.push(ev(0));
    f.t.flush_now();
    recv(&mut f.rx).await;
    assert!(f.t.drain(Duration::from_secs(30)).await);
    assert_eq!(*f.overflow.lock().unwrap(), [1, 10_000]);
    assert_eq!(warnings.count("Telemetry queue full"), 1);
}

#[tokio::test(start_paused = true)]
async fn memory_is_bounded_while_a_send_hangs() {
    let warnings = Warnings::default();
    let _guard = tracing::subscriber::set_default(warnings.clone());
    let config = TelemetryConfig {
        http_timeout: Duration::from_secs(5),
        ..manual(100)
    };
    let mut f = fixture(config, Mode::Hang);
    for i in 0..100 {
        f.t.push(ev(i));
    }
    recv(&mut f.rx).await; // the flusher is now stuck in a send
    assert_eq!(f.t.queued(), 0);
    for i in 100..20_100 {
        f.t.push(ev(i)); // never waits for the send
    }
    assert_eq!(f.t.queued(), 10_000);
    assert_eq!(f.t.dropped(), 10_000);
    assert_eq!(*f.overflow.lock().unwrap(), [1]);
    assert_eq!(warnings.count("Telemetry queue full"), 1);
    // Each batch is given up after http_timeout and dropped.
    let b = recv(&mut f.rx).await;
    assert_eq!(indices(&b)[0], 100);
    assert_eq!(warnings.count("Telemetry batch send timed out"), 1);
}

#[tokio::test(start_paused = true)]
async fn failed_batch_is_dropped_not_requeued() {
    let mut f = fixture(manual(100), Mode::Fail);
    for i in 0..5 {
        f.t.push(ev(i));
    }
    f.t.flush_now();
    assert_eq!(indices(&recv(&mut f.rx).await), [0, 1, 2, 3, 4]);
    wait_until(|| *f.t.shared.completed.borrow() == 5).await;
    assert_eq!(f.t.queued(), 0);
    f.t.flush_now();
    nothing(&mut f.rx, Duration::from_secs(60)).await;
    assert_eq!(f.t.sent_events(), 0);
    assert!(f.t.drain(Duration::from_secs(30)).await);
    assert!(f.rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn disabled_sends_nothing() {
    let config = TelemetryConfig {
        enabled: false,
        ..TelemetryConfig::default()
    };
    let mut f = fixture(config, Mode::Ok);
    f.t.session_start();
    f.t.generic("x", Severity::Info, json!({}));
    f.t.exception(&Error::fatal("boom"), "m");
    f.t.push(ev(0));
    f.t.session_end();
    f.t.flush_now();
    assert_eq!(f.t.queued(), 0);
    nothing(&mut f.rx, Duration::from_secs(60)).await;
    assert!(f.t.drain(Duration::from_secs(1)).await);
    assert_eq!(f.t.sent_events(), 0);
    assert_eq!(f.t.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_keep_index_order_on_a_multi_thread_runtime() {
    let mut f = fixture(
        TelemetryConfig {
            max_batch: 7,
            ..TelemetryConfig::default()
        },
        Mode::Ok,
    );
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let t = f.t.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    t.generic("x", Severity::Info, json!({ "i": i }));
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(f.t.drain(Duration::from_secs(30)).await);
    assert_eq!(f.t.sent_events(), 4000);
    let mut seen = Vec::new();
    while let Ok(b) = f.rx.try_recv() {
        assert!(!b.events.is_empty() && b.events.len() <= 7);
        seen.extend(
            b.events
                .iter()
                .map(|e| e["event_session_index"].as_u64().unwrap()),
        );
    }
    assert_eq!(seen, (0..4000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_stops_the_flusher() {
    let f = fixture(manual(100), Mode::Ok);
    assert_eq!(Arc::strong_count(&f.sink), 2);
    drop(f.t);
    wait_until(|| Arc::strong_count(&f.sink) == 1).await;
}

// ---- events -------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn events_have_the_common_fields_and_increasing_indices() {
    let mut f = fixture(manual(100), Mode::Ok);
    tokio::time::advance(Duration::from_millis(2_100)).await;
    f.t.session_start();
    f.t.generic(
        "RetryHandler.execute.exception",
        Severity::Warning,
        json!({"status_code": 503}),
    );
    f.t.exception(&Error::from_status(500, ""), "SamplingClient.sample");
    f.t.session_end();
    f.t.generic("plain", Severity::Debug, Value::Null);
    assert!(f.t.drain(Duration::from_secs(30)).await);
    let mut events = Vec::new();
    while let Ok(b) = f.rx.try_recv() {
        events.extend(b.events);
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "SESSION_START",
            "GENERIC_EVENT",
            "UNHANDLED_EXCEPTION",
            "SESSION_END",
            "GENERIC_EVENT"
        ]
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event_session_index"], i as u64);
        let id = e["event_id"].as_str().unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "4"));
        let ts = e["timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[10..11], &ts[26..]), (27, "T", "Z"), "{ts}");
    }
    assert_eq!(
        events
            .iter()
            .map(|e| e["severity"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["INFO", "WARNING", "ERROR", "INFO", "DEBUG"]
    );
    assert_eq!(events[1]["event_name"], "RetryHandler.execute.exception");
    assert_eq!(events[1]["event_data"], json!({"status_code": 503}));
    assert_eq!(events[3]["duration"], "0:00:02.100000");
    assert_eq!(events[4]["event_data"], json!({}));
    let start = events[0].as_object().unwrap();
    let mut keys: Vec<&str> = start.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "event",
            "event_id",
            "event_session_index",
            "severity",
            "timestamp"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_api_key_never_leaves() {
    let mut f = fixture(manual(100), Mode::Ok);
    let user = Error::from_status(422, r#"{"detail":"bad key tml-secret123"}"#);
    let system = Error::fatal("auth with tml-secret123 failed").with_request_id("req-1");
    f.t.exception(&user, "ServiceClient.create_lora_training_client");
    f.t.exception(&system, "ServiceClient.create_lora_training_client");
    f.t.generic(
        "APIFuture.result_async.api_status_error",
        Severity::Error,
        json!({"request_headers": {"X-API-Key": "tml-secret123"},
               "x-api-key": "tml-secret123",
               "detail": "key tml-secret123 rejected"}),
    );
    let b = recv(&mut f.rx).await; // exception() flushes at once
    let mut text = serde_json::to_string(&b).unwrap();
    assert!(f.t.drain(Duration::from_secs(30)).await);
    while let Ok(b) = f.rx.try_recv() {
        text.push_str(&serde_json::to_string(&b).unwrap());
    }
    assert!(!text.contains("tml-secret123"), "{text}");
    assert!(!text.contains("request_headers"), "{text}");
    assert!(text.contains("bad key tml-<redacted>"), "{text}");
    assert!(text.contains("auth with tml-<redacted> failed"), "{text}");
    assert!(text.contains("key tml-<redacted> rejected"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_fatal_exception_is_followed_by_session_end_and_flushed_at_once() {
    let mut f = fixture(manual(100), Mode::Ok);
    f.t.session_start();
    f.t.fatal_exception(
        &Error::from_status(400, r#"{"detail":"bad"}"#),
        "ServiceClient.create_lora_training_client",
    );
    let b = recv(&mut f.rx).await; // flushed without waiting for the interval
    let kinds: Vec<&str> = b
        .events
        .iter()
        .map(|e| e["event_name"].as_str().or(e["event"].as_str()).unwrap())
        .collect();
    assert_eq!(kinds, ["SESSION_START", "user_error", "SESSION_END"]);
    let session_indices: Vec<u64> = b
        .events
        .iter()
        .map(|e| e["event_session_index"].as_u64().unwrap())
        .collect();
    assert_eq!(session_indices, [0, 1, 2]);
    assert!(b.events[2]["duration"]
        .as_str()
        .unwrap()
        .starts_with("0:00:"));
    // A cancellation is not an exception: nothing, not even SESSION_END.
    f.t.fatal_exception(
        &Error::new(crate::core::error::ErrorKind::Cancelled, "cancelled"),
        "m",
    );
    assert_eq!(f.t.queued(), 0);
}

#[test]
fn only_a_status_accepted_answer_accepts_a_batch() {
    assert!(check_accepted(br#"{"status": "accepted"}"#).is_ok());
    assert!(check_accepted(br#"{"status":"accepted","extra":1}"#).is_ok());
    for bad in [
        &br#"{"status": "queued"}"#[..],
        br#"{}"#,
        b"",
        b"accepted",
        br#"{"status": 1}"#,
    ] {
        let e = check_accepted(bad).unwrap_err();
        assert!(e.message.contains("accepted"), "{e}");
    }
}
