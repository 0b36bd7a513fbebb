//! Conformance of what goes on the wire (issue 13): base URL, headers, timeouts, bodies,
//! startup order, environment variables, the dynamic-config refresh loop and telemetry, each
//! checked on the bytes a recording proxy saw between the client and the in-process emulator.
//! Every test is named after the PROTOCOL.md rule it proves (docs/conformance.md).

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::*;
use tinkex::core::types::{FinishReasonKind, ModelInput, SamplingParams};
use tinkex::core::{Config, HeartbeatConfig, LoraOptions, SampleOptions, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ------------------------------------------------------------------------------------------
// The recording proxy
// ------------------------------------------------------------------------------------------

/// One request as the proxy received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// The path as sent by the client (prefix included).
    path: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: body is not JSON: {e}", self.method, self.path))
    }

    /// The API path (after `/api/v1/`), e.g. `create_session`.
    fn endpoint(&self) -> &str {
        self.path
            .split_once("/api/v1/")
            .map(|(_, p)| p)
            .unwrap_or(&self.path)
    }
}

/// A transparent HTTP/1.1 proxy in front of the emulator that records every request
/// (method, path, version, all headers, body) and forwards it unchanged, except that a
/// configured path prefix is removed (the emulator serves `/api/v1/...` only).
struct Recorder {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(emu: &tinkex_emulator::RunningEmulator) -> Recorder {
        Self::with_prefix(emu, "").await
    }

    async fn with_prefix(emu: &tinkex_emulator::RunningEmulator, prefix: &str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = emu.addr();
        let (seen2, prefix2) = (seen.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(relay(s, upstream, seen2.clone(), prefix2.clone()));
            }
        });
        Recorder {
            base_url: format!("http://{addr}{prefix}"),
            seen,
            task,
        }
    }

    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn to(&self, endpoint: &str) -> Vec<Seen> {
        self.all()
            .into_iter()
            .filter(|s| s.endpoint() == endpoint)
            .collect()
    }

    /// Waits (deadline, no sleep-and-hope) until `pred` holds on what was recorded.
    async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.all()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; saw {:?}",
                self.all().iter().map(|s| &s.path).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Relays one client connection: parses each request, records it, forwards it (prefix
/// stripped); the upstream's bytes are copied back unchanged.
async fn relay(
    client: TcpStream,
    upstream: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    prefix: String,
) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // A whole request: head, then Content-Length bytes of body.
        let (head_end, len) = loop {
            if let Some(end) = find_head_end(&buf) {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + len {
                    break (end, len);
                }
            }
            match cr.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let body = buf[head_end..head_end + len].to_vec();
        let rest = buf[head_end + len..].to_vec();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (method, path, version) = (
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
            first.next().unwrap_or("").to_string(),
        );
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            version: version.clone(),
            headers,
            body,
            at: Instant::now(),
        });
        let forwarded_path = path.strip_prefix(prefix.as_str()).unwrap_or(&path);
        let mut out = format!("{method} {forwarded_path} {version}\r\n").into_bytes();
        let after_line = head.find("\r\n").map(|i| i + 2).unwrap_or(head.len());
        out.extend_from_slice(&buf[after_line..head_end + len]);
        if uw.write_all(&out).await.is_err() {
            return;
        }
        buf = rest;
    }
}

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

const KEY: &str = "tml-conformance-wire";

fn config_for(base_url: &str) -> tinkex::core::ConfigBuilder {
    Config::builder()
        .api_key(KEY)
        .base_url(base_url)
        .telemetry(false)
        .retry(fast_retry())
}

fn client_of(rec: &Recorder) -> ServiceClient {
    ServiceClient::new(config_for(&rec.base_url).build().unwrap()).unwrap()
}

/// Log records captured by a process-wide subscriber (each test looks for its own text).
fn logs() -> &'static Mutex<Vec<(tracing::Level, String)>> {
    static LOGS: OnceLock<Mutex<Vec<(tracing::Level, String)>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
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
        logs()
            .lock()
            .unwrap()
            .push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

async fn wait_for_log(needle: &str, timeout: Duration) -> tracing::Level {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((level, _)) = logs()
            .lock()
            .unwrap()
            .iter()
            .find(|(_, t)| t.contains(needle))
        {
            return *level;
        }
        assert!(Instant::now() < deadline, "no log containing {needle:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn training_client(service: &ServiceClient) -> tinkex::core::TrainingClient {
    service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap()
}

fn greedy(max_tokens: i64) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// A session with training, sampling and REST traffic: every kind of request the client
/// makes in normal use.
async fn exercise(service: &ServiceClient) {
    service.get_server_capabilities().await.unwrap();
    let training = training_client(service).await;
    training
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    training
        .optim_step(tinkex::core::types::AdamParams::default())
        .await
        .unwrap();
    training
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    let saved = training.save_state("wire").await.unwrap();
    training.save_weights_for_sampler("wire-s").await.unwrap();
    training.load_state(&saved).await.unwrap();
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    for _ in 0..2 {
        sampler
            .sample(
                ModelInput::from_ints(vec![100_000, 100_001]),
                1,
                greedy(2),
                SampleOptions::default(),
            )
            .await
            .unwrap();
    }
    let rest = service.create_rest_client();
    rest.list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap();
    rest.delete_checkpoint_from_tinker_path(&saved)
        .await
        .unwrap();
}

// ------------------------------------------------------------------------------------------
// 1.1 / 1.2 base URL
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn base_url_path_prefix_is_kept_and_trailing_slashes_stripped() {
    let emu = emulator("wire-prefix").await;
    let rec = Recorder::with_prefix(&emu, "/services/tinker-prod").await;
    let config = config_for(&format!("{}///", rec.base_url)).build().unwrap();
    assert_eq!(config.base_url, rec.base_url, "trailing '/' stripped");
    let service = ServiceClient::new(config).unwrap();
    service.get_server_capabilities().await.unwrap();
    training_client(&service).await;
    let all = rec.all();
    assert!(all.len() >= 5, "{all:?}");
    for s in &all {
        assert!(
            s.path.starts_with("/services/tinker-prod/api/v1/"),
            "prefix kept, one '/' between base and path: {}",
            s.path
        );
    }
}

// ------------------------------------------------------------------------------------------
// 1.3 / 1.6 / 1.7 headers and bodies of every request
// ------------------------------------------------------------------------------------------

const OS_NAMES: &[&str] = &[
    "Linux", "MacOS", "Windows", "FreeBSD", "OpenBSD", "iOS", "Android", "Unknown",
];
const ARCH_NAMES: &[&str] = &["x64", "arm64", "arm", "x32", "unknown"];

#[tokio::test]
async fn every_request_carries_the_protocol_headers() {
    let emu = emulator("wire-headers").await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    exercise(&service).await;
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let all = rec.all();
    let user_agent = format!(
        "libtinkex/{} (tinker-protocol 0.38.0)",
        env!("CARGO_PKG_VERSION")
    );
    for s in &all {
        let at = format!("{} {}", s.method, s.path);
        // 1.3: plain text is spoken as HTTP/1.1.
        assert_eq!(s.version, "HTTP/1.1", "{at}");
        assert_eq!(s.header("user-agent"), Some(user_agent.as_str()), "{at}");
        assert_eq!(
            s.header("x-stainless-package-version"),
            Some("0.38.0"),
            "{at}"
        );
        let os = s.header("x-stainless-os").unwrap();
        assert!(
            OS_NAMES.contains(&os) || os.starts_with("Other:"),
            "{at}: {os}"
        );
        let arch = s.header("x-stainless-arch").unwrap();
        assert!(
            ARCH_NAMES.contains(&arch) || arch.starts_with("other:"),
            "{at}: {arch}"
        );
        assert_eq!(s.header("x-stainless-runtime"), Some("libtinkex"), "{at}");
        assert_eq!(
            s.header("x-stainless-runtime-version"),
            Some(env!("CARGO_PKG_VERSION")),
            "{at}"
        );
        assert_eq!(s.header("x-stainless-async"), Some("async:tokio"), "{at}");
        // 1.6.2: x-sdk-version everywhere, x-sdk-method omitted (allowed).
        assert_eq!(s.header("x-sdk-version"), Some("0.38.0"), "{at}");
        assert_eq!(s.header("x-sdk-method"), None, "{at}");
        // The credential only in X-API-Key.
        assert_eq!(s.header("x-api-key"), Some(KEY), "{at}");
        assert_eq!(s.header("authorization"), None, "{at}");
        // 1.6.3: the back-pressure header on asample only.
        let backpressure = s.header("x-tinker-sampling-backpressure");
        if s.endpoint() == "asample" {
            assert_eq!(backpressure, Some("1"), "{at}");
        } else {
            assert_eq!(backpressure, None, "{at}");
        }
        // 1.6.3: `X-Stainless-Raw-Response: raw` on every retrieve_future poll only.
        let raw = s.header("x-stainless-raw-response");
        if s.endpoint() == "retrieve_future" {
            assert_eq!(raw, Some("raw"), "{at}");
        } else {
            assert_eq!(raw, None, "{at}");
        }
        // 1.6.1 Accept: protobuf only on polls of protobuf results.
        let proto_poll = s.endpoint() == "retrieve_future"
            && matches!(
                s.header("x-tinker-request-type"),
                Some("ForwardBackward" | "Forward" | "Sample")
            );
        let accept = if proto_poll {
            "application/x-protobuf"
        } else {
            "application/json"
        };
        assert_eq!(s.header("accept"), Some(accept), "{at}");
        // 1.6.1 / 1.7 Content-Type, and no body on GET / DELETE.
        match s.method.as_str() {
            "GET" => {
                assert_eq!(s.header("content-type"), None, "{at}");
                assert!(s.body.is_empty(), "{at}: a GET has a body");
            }
            // A body-less request other than GET keeps `Content-Type: application/json`.
            "DELETE" => {
                assert_eq!(s.header("content-type"), Some("application/json"), "{at}");
                assert!(s.body.is_empty(), "{at}: a body-less request has a body");
            }
            "POST" if s.endpoint() == "forward_backward" => {
                assert_eq!(
                    s.header("content-type"),
                    Some("application/x-protobuf"),
                    "{at}"
                )
            }
            "POST" => {
                assert_eq!(s.header("content-type"), Some("application/json"), "{at}");
                s.json();
            }
            other => panic!("unexpected method {other}"),
        }
    }
    // 8.1.4: each poll names the kind of the request it polls (the calls above are
    // sequential, so a poll belongs to the last submission before it).
    let mut last_submit = None;
    let mut kinds = std::collections::BTreeSet::new();
    for s in &all {
        let expected: &[&str] = match s.endpoint() {
            "create_model" => &["CreateModel"],
            "forward_backward" => &["ForwardBackward", "Forward"],
            "optim_step" => &["OptimStep"],
            "save_weights" => &["SaveWeights"],
            "save_weights_for_sampler" => &["SaveWeightsForSampler"],
            "load_weights" => &["LoadWeights"],
            "asample" => &["Sample"],
            "retrieve_future" => {
                let kind = s.header("x-tinker-request-type").unwrap();
                let allowed: &[&str] = last_submit.expect("a poll before any submission");
                assert!(allowed.contains(&kind), "{kind} polled after {allowed:?}");
                kinds.insert(kind.to_string());
                continue;
            }
            _ => continue,
        };
        last_submit = Some(expected);
    }
    let all_kinds = [
        "CreateModel",
        "ForwardBackward",
        "Forward",
        "OptimStep",
        "SaveWeights",
        "SaveWeightsForSampler",
        "LoadWeights",
        "Sample",
    ];
    assert_eq!(kinds, all_kinds.iter().map(|k| k.to_string()).collect());
    let endpoints: Vec<&str> = all.iter().map(|s| s.endpoint()).collect();
    for e in [
        "get_server_capabilities",
        "client/config",
        "create_session",
        "create_model",
        "forward_backward",
        "retrieve_future",
        "asample",
    ] {
        assert!(endpoints.contains(&e), "{e} not exercised: {endpoints:?}");
    }
    assert!(endpoints.iter().any(|e| e.starts_with("training_runs?")));
    assert!(all.iter().any(|s| s.method == "DELETE"));
}

// ------------------------------------------------------------------------------------------
// 1.4 timeouts
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn read_timeout_header_matches_each_endpoints_timeout() {
    let defaults = tinkex::core::Timeouts::default();
    assert_eq!(defaults.connect, Duration::from_secs(5));
    assert_eq!(
        tinkex::core::telemetry::TelemetryConfig::default().http_timeout,
        Duration::from_secs(5)
    );
    let emu = emulator("wire-timeouts").await;
    let rec = Recorder::start(&emu).await;
    let config = config_for(&rec.base_url)
        .telemetry(true)
        .telemetry_settings(tinkex::core::telemetry::TelemetryConfig {
            flush_interval: Duration::from_millis(50),
            ..Default::default()
        })
        .heartbeat(HeartbeatConfig {
            interval: Duration::from_millis(50),
            ..Default::default()
        })
        .build()
        .unwrap();
    assert_eq!(config.timeouts, defaults, "default timeouts in effect");
    let service = ServiceClient::new(config).unwrap();
    exercise(&service).await;
    rec.wait_for(
        "a heartbeat and a telemetry batch",
        Duration::from_secs(10),
        |all| {
            all.iter().any(|s| s.endpoint() == "session_heartbeat")
                && all.iter().any(|s| s.endpoint() == "telemetry")
        },
    )
    .await;
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let expected = [
        ("client/config", "10"), // differs: the SDK uses 60 for the first config fetch
        ("client/dynamic_config", "10"),
        ("create_session", "60"),
        ("session_heartbeat", "10"),
        ("telemetry", "5"),
        ("retrieve_future", "45"),
        ("create_model", "60"),
        ("get_info", "60"),
        ("forward_backward", "60"),
        ("asample", "60"),
        ("get_server_capabilities", "60"),
    ];
    for (endpoint, secs) in expected {
        let seen = rec.to(endpoint);
        assert!(!seen.is_empty(), "no {endpoint} request");
        for s in seen {
            assert_eq!(
                s.header("x-stainless-read-timeout"),
                Some(secs),
                "{endpoint}"
            );
        }
    }
}

/// 1.4: `retrieve_futures` carries 45 s while it long-polls (timeout omitted) and 5 s when
/// it only acknowledges (`timeout: 0`); `cancel_future` carries 30 s.
#[tokio::test]
async fn poller_and_cancel_read_timeouts_match_the_sdk() {
    let defaults = tinkex::core::RetryPolicy::default();
    assert_eq!(defaults.futures_ack_timeout, Duration::from_secs(5));
    assert_eq!(defaults.cancel_future_timeout, Duration::from_secs(30));
    let emu = emulator_with("wire-poller-timeouts", |c| {
        c.dynamic_config
            .insert("sample_cancel_enabled".into(), json!(true));
        c.client_config
            .insert("sample_use_retrieve_futures".into(), json!(true));
    })
    .await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let sample = || {
        sampler.sample(
            ModelInput::from_ints(vec![100_000, 100_001]),
            1,
            greedy(2),
            SampleOptions::default(),
        )
    };
    // A completed sample: long polls while it is waited for, then an ack-only poll.
    sample().await.unwrap();
    // A sample held by the server, cancelled while it is waited for.
    control_post(&emu, "delays", json!({"Sample": 30_000})).await;
    let f = sample();
    let before = rec.to("retrieve_futures").len();
    rec.wait_for(
        "a long poll for the held sample",
        Duration::from_secs(10),
        |all| {
            all.iter()
                .filter(|s| s.endpoint() == "retrieve_futures")
                .count()
                > before
        },
    )
    .await;
    f.cancel();
    rec.wait_for("cancel_future", Duration::from_secs(10), |all| {
        all.iter().any(|s| s.endpoint() == "cancel_future")
    })
    .await;
    control_post(&emu, "delays", json!({"Sample": null})).await;
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let (mut long, mut ack) = (0, 0);
    for s in rec.to("retrieve_futures") {
        let expected = if s.json()["timeout"] == json!(0.0) {
            ack += 1;
            "5"
        } else {
            assert!(s.json().get("timeout").is_none(), "{:?}", s.json());
            long += 1;
            "45"
        };
        assert_eq!(s.header("x-stainless-read-timeout"), Some(expected));
    }
    assert!(
        long > 0 && ack > 0,
        "long polls {long}, ack-only polls {ack}"
    );
    let cancels = rec.to("cancel_future");
    assert!(!cancels.is_empty());
    for s in cancels {
        assert_eq!(s.header("x-stainless-read-timeout"), Some("30"));
    }
}

/// 13.5: the sampling retry handler logs its progress (`[{session}]: N waiting, N in
/// progress, N completed`) at DEBUG at most once per `progress_log_interval` (2 s by
/// default), and once more when it goes idle: with a 1 ns interval every call's entry is
/// logged, with an hour only the idle lines are.
#[tokio::test]
async fn retry_handler_progress_is_logged_at_debug_per_interval() {
    use tinkex::core::dispatch::SamplingSettings;
    logs();
    assert_eq!(
        SamplingSettings::default().progress_log_interval,
        Duration::from_secs(2)
    );
    let emu = emulator("wire-handler-log").await;
    let mut ids = Vec::new();
    for interval in [Duration::from_nanos(1), Duration::from_secs(3600)] {
        let service = ServiceClient::new(
            config_for(&emu.base_url())
                .sampling(SamplingSettings {
                    progress_log_interval: interval,
                    ..Default::default()
                })
                .build()
                .unwrap(),
        )
        .unwrap();
        let sampler = service
            .create_sampling_client_for_base_model(BASE_MODEL)
            .await
            .unwrap();
        let sample = || {
            sampler.sample(
                ModelInput::from_ints(vec![100_000, 100_001]),
                1,
                greedy(2),
                SampleOptions::default(),
            )
        };
        let (a, b, c) = tokio::join!(sample(), sample(), sample());
        a.unwrap();
        b.unwrap();
        c.unwrap();
        ids.push(sampler.sampling_session_id().to_string());
    }
    let lines_of = |id: &str| -> Vec<String> {
        let tag = format!("[{id}]: ");
        logs()
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, text)| *level == tracing::Level::DEBUG && text.contains(&tag))
            .map(|(_, text)| text.clone())
            .collect()
    };
    let every = lines_of(&ids[0]);
    assert!(
        every.iter().any(|l| !l.contains(" 0 in progress")),
        "1 ns interval: entries logged too: {every:?}"
    );
    let hourly = lines_of(&ids[1]);
    assert!(!hourly.is_empty(), "the idle line is logged");
    assert!(
        hourly
            .iter()
            .all(|l| l.contains("0 waiting, 0 in progress")),
        "an hour's interval: only the idle lines: {hourly:?}"
    );
}

/// The arrival times (at the proxy) of the forward_backward chunks of one 4-chunk call,
/// each answered 400 ms late, with `flags` in client/config.
async fn chunk_arrivals(tag: &str, flags: Value) -> Vec<Instant> {
    let emu = emulator_with(tag, |c| {
        c.client_config
            .insert("fwdbwd_max_chunk_len".into(), json!(1));
        for (k, v) in flags.as_object().unwrap() {
            c.client_config.insert(k.clone(), v.clone());
        }
    })
    .await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = training_client(&service).await;
    fault(
        &emu,
        json!({"path": "/api/v1/forward_backward", "latency_ms": 400}),
    )
    .await;
    let out = training
        .forward_backward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    assert_eq!(out.loss_fn_outputs.len(), 4);
    let at: Vec<Instant> = rec
        .to("forward_backward")
        .into_iter()
        .map(|s| s.at)
        .collect();
    assert_eq!(at.len(), 4, "4 datums in chunks of 1");
    at
}

/// 5.3 / 11.4: `parallel_fwdbwd_chunks: false` sends the chunks one after another (each
/// only after the previous was answered); a dispatch byte budget smaller than one chunk
/// (`fwdbwd_dispatch_bytes_semaphore_size: 1`) also lets one chunk through at a time; by
/// default chunks 2…4 are in flight together.
#[tokio::test]
async fn chunk_concurrency_follows_parallel_flag_and_dispatch_budget() {
    let latency = Duration::from_millis(400);
    let one_at_a_time = |at: &[Instant], what: &str| {
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= latency, "{what}: {:?}", w[1] - w[0]);
        }
    };
    let sequential = chunk_arrivals(
        "wire-chunks-sequential",
        json!({"parallel_fwdbwd_chunks": false}),
    )
    .await;
    one_at_a_time(&sequential, "parallel_fwdbwd_chunks: false");
    let budget = chunk_arrivals(
        "wire-chunks-budget",
        json!({"fwdbwd_dispatch_bytes_semaphore_size": 1}),
    )
    .await;
    one_at_a_time(&budget, "a 1-byte dispatch budget");
    let parallel = chunk_arrivals("wire-chunks-parallel", json!({})).await;
    // Chunks 2..4 together (before any answer), then chunk 1 after them.
    assert!(parallel[2] - parallel[0] < latency, "{parallel:?}");
    assert!(parallel[3] - parallel[2] >= latency, "{parallel:?}");
}

/// A batch big enough to be encoded on the client's encoder threads (above its inline
/// limit of 256 KiB): `n` datums of `tokens` tokens with int64 targets, float32 weights
/// weights, advantages and logprobs (PPO's inputs), and a shape-less tensor in some.
fn large_batch(n: usize, tokens: usize) -> Vec<tinkex::core::types::Datum> {
    use tinkex::core::types::TensorData;
    (0..n)
        .map(|d| {
            let ids: Vec<i64> = (0..=tokens)
                .map(|i| 100_000 + ((d * 7919 + i * 104_729) % 50_000) as i64)
                .collect();
            let mut datum = datum(&ids);
            datum.loss_fn_inputs.insert(
                "advantages".into(),
                TensorData::from_f32((0..tokens).map(|i| (i % 7) as f32 - 3.0).collect()),
            );
            datum
                .loss_fn_inputs
                .insert("logprobs".into(), TensorData::from_f32(vec![-1.5; tokens]));
            if d % 3 == 1 {
                datum.loss_fn_inputs.get_mut("weights").unwrap().shape = None;
            }
            datum
        })
        .collect()
}

/// The forward_backward bodies of one call as the server received them, in arrival order,
/// with the prost encoding of each chunk as the client built it before (the intermediate
/// `proto::ForwardBackwardRequest`, `codec::forward_backward_request`).
async fn chunk_bodies(
    tag: &str,
    flags: Value,
    data: Vec<tinkex::core::types::Datum>,
    loss_fn: &str,
    config: Option<BTreeMap<String, tinkex::core::types::LossConfigValue>>,
) -> (Vec<Seen>, Vec<Vec<u8>>) {
    use prost::Message;
    let emu = emulator_with(tag, |c| {
        c.zero_compute = true;
        for (k, v) in flags.as_object().unwrap() {
            c.client_config.insert(k.clone(), v.clone());
        }
    })
    .await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = training_client(&service).await;
    let sc = tinkex::core::types::ClientConfig::default();
    let max_len = flags["fwdbwd_max_chunk_len"]
        .as_u64()
        .unwrap_or(sc.fwdbwd_max_chunk_len);
    let ranges = tinkex::core::chunking::chunk_ranges(
        &data,
        max_len as usize,
        sc.fwdbwd_max_chunk_bytes_count as usize,
    );
    let out = training
        .forward_backward(data.clone(), loss_fn, config.clone())
        .await
        .unwrap();
    assert_eq!(out.loss_fn_outputs.len(), data.len());
    let seen = rec.to("forward_backward");
    // seq 0 is create_model; this is the client's first ordered operation.
    let cfg = config.unwrap_or_default();
    let want = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            tinkex::core::codec::forward_backward_request(
                training.model_id(),
                1 + i as i64,
                &data[r.clone()],
                r.start,
                loss_fn,
                &cfg,
                false,
            )
            .unwrap()
            .encode_to_vec()
        })
        .collect();
    (seen, want)
}

/// 11.4 / 14.3: the bodies written straight from the datums (in parallel, each sent once
/// encoded) are byte for byte the prost encodings of before, and arrive in the order of
/// 11.4: chunks 2…N before chunk 1 by default, 1…N with `parallel_fwdbwd_chunks: false`.
#[tokio::test]
async fn chunk_bodies_are_the_prost_encoding_and_arrive_in_the_order_of_11_4() {
    let config = BTreeMap::from([
        (
            "clip_low_threshold".to_string(),
            tinkex::core::types::LossConfigValue::Number(0.8),
        ),
        (
            "clip_high_threshold".to_string(),
            tinkex::core::types::LossConfigValue::Number(1.2),
        ),
    ]);
    for (tag, parallel) in [
        ("wire-bodies-parallel", true),
        ("wire-bodies-sequential", false),
    ] {
        let flags = json!({"fwdbwd_max_chunk_len": 3, "parallel_fwdbwd_chunks": parallel});
        let (seen, want) = chunk_bodies(
            tag,
            flags,
            large_batch(11, 6_000),
            "ppo",
            Some(config.clone()),
        )
        .await;
        assert_eq!(want.len(), 4, "11 datums in chunks of 3");
        assert_eq!(seen.len(), 4, "{tag}: one request per chunk");
        let seq_of = |body: &[u8]| {
            want.iter()
                .position(|w| w.as_slice() == body)
                .unwrap_or_else(|| panic!("{tag}: a body that is no chunk's prost encoding"))
        };
        let order: Vec<usize> = seen.iter().map(|s| seq_of(&s.body)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![0, 1, 2, 3],
            "{tag}: every chunk once: {order:?}"
        );
        if parallel {
            assert_eq!(order[3], 0, "{tag}: chunk 1 last: {order:?}");
        } else {
            assert_eq!(order, vec![0, 1, 2, 3], "{tag}");
        }
        for s in &seen {
            assert_eq!(s.header("content-type"), Some("application/x-protobuf"));
        }
    }
    // Small batches (encoded on the calling task) too, with a text loss config.
    let small = BTreeMap::from([(
        "loss_id".to_string(),
        tinkex::core::types::LossConfigValue::Text("ce".into()),
    )]);
    let (seen, want) = chunk_bodies(
        "wire-bodies-small",
        json!({"fwdbwd_max_chunk_len": 2}),
        batch(),
        "cross_entropy",
        Some(small),
    )
    .await;
    let bodies: Vec<&[u8]> = seen.iter().map(|s| s.body.as_slice()).collect();
    assert_eq!(bodies, vec![want[1].as_slice(), want[0].as_slice()]);
}

/// 11.4: a user error anywhere in the batch (here a token id beyond int32 in the last
/// datum, checked on the encoder threads) fails the call before any chunk is sent.
#[tokio::test]
async fn a_bad_datum_in_a_late_chunk_sends_no_chunk() {
    let emu = emulator_with("wire-bodies-bad", |c| {
        c.zero_compute = true;
        c.client_config
            .insert("fwdbwd_max_chunk_len".into(), json!(2));
    })
    .await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = training_client(&service).await;
    let mut data = large_batch(8, 6_000);
    if let tinkex::core::types::Chunk::EncodedText { tokens } = &mut data[7].model_input.chunks[0] {
        tokens[5_000] = 1 << 40;
    }
    let e = training
        .forward_backward(data, "cross_entropy", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, tinkex::core::ErrorKind::User, "{e}");
    assert!(e.message.contains("datum 7: token id"), "{e}");
    assert!(rec.to("forward_backward").is_empty());
    // The turn passed on: the next operation goes out (4 datums in chunks of 2). The
    // server holds it behind the gap in seq_id (11.3), so only its sending is awaited.
    let next = training.forward_backward(batch(), "cross_entropy", None);
    rec.wait_for("the next call's chunks", Duration::from_secs(20), |s| {
        s.iter()
            .filter(|s| s.endpoint() == "forward_backward")
            .count()
            == 2
    })
    .await;
    next.cancel();
}

// ------------------------------------------------------------------------------------------
// 3.1 / 3.2 / 3.3 / 5.2 / 5.3 / 5.5 / 6.1 / 6.8 / 11.1 / 11.8 / 12.2 startup and bodies
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn constructing_a_service_client_performs_no_io_and_rest_calls_create_no_session() {
    let emu = emulator("wire-noio").await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let caps = service.get_server_capabilities().await.unwrap();
    assert!(!caps.supported_models.is_empty());
    service
        .create_rest_client()
        .list_training_runs(5, 0, Default::default(), None)
        .await
        .unwrap();
    let all = rec.all();
    let seen: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s.method.as_str(), s.endpoint().split('?').next().unwrap()))
        .collect();
    // Nothing from construction; the first call fetches client/config (3.2 step 2, also
    // for session-less use, 3.3), then GET get_server_capabilities; REST needs no session.
    assert_eq!(
        seen,
        vec![
            ("POST", "client/config"),
            ("GET", "get_server_capabilities"),
            ("GET", "training_runs")
        ]
    );
    assert_eq!(service.session_id(), None);
}

#[tokio::test]
async fn startup_order_config_bodies_and_session_counters() {
    let emu = emulator("wire-startup").await;
    let rec = Recorder::start(&emu).await;
    let config = config_for(&rec.base_url)
        // Explicit tags (a libtinkex extension: the SDK reads TINKER_TAGS only) as given.
        .tags(vec!["b".into(), "a".into()])
        .project_id("proj-7")
        .display_name("nightly")
        .build()
        .unwrap();
    let service = ServiceClient::new(config).unwrap();
    let t0 = training_client(&service).await;
    let t1 = training_client(&service).await;
    let s0 = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let _s1 = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let info_requests = rec.to("get_info").len();
    assert_eq!(info_requests, 2, "one get_info per training client");
    // 11.8: get_info answers from the cache.
    assert_eq!(t0.get_info().model_id, t0.model_id());
    assert_eq!(rec.to("get_info").len(), info_requests);
    // 12.2: sample seq_id per client from 0.
    for _ in 0..2 {
        s0.sample(
            ModelInput::from_ints(vec![100_000]),
            1,
            greedy(1),
            SampleOptions::default(),
        )
        .await
        .unwrap();
    }
    // 7.1: prompt_logprobs_last_n requires prompt_logprobs (refused before sending).
    let before = rec.all().len();
    let err = s0
        .sample(
            ModelInput::from_ints(vec![100_000]),
            1,
            greedy(1),
            SampleOptions {
                prompt_logprobs_last_n: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, tinkex::core::ErrorKind::User, "{err}");
    assert_eq!(rec.all().len(), before, "nothing sent");
    // 6.6: the ephemeral sampler takes the next sampling_session_seq_id (2), no `path`,
    // and its base model from get_info (no GET samplers/{id}).
    let ephemeral = t0.save_weights_and_get_sampling_client().await.unwrap();
    assert_eq!(ephemeral.base_model(), BASE_MODEL);
    let save = rec.to("save_weights_for_sampler")[0].json();
    assert_eq!(save["sampling_session_seq_id"], json!(2), "{save}");
    assert!(save.get("path").is_none(), "{save}");
    assert!(
        rec.all()
            .iter()
            .all(|s| !s.endpoint().starts_with("samplers/")),
        "base model known from get_info"
    );
    // 6.8: legacy load_weights body.
    let saved = t1.save_state("ckpt").await.unwrap();
    t1.load_state(&saved).await.unwrap();

    let all = rec.all();
    let order: Vec<&str> = all.iter().map(|s| s.endpoint()).take(3).collect();
    assert_eq!(
        order,
        ["client/config", "client/dynamic_config", "create_session"],
        "3.2 startup order"
    );
    // 5.3: client/config fetched once per holder.
    assert_eq!(rec.to("client/config").len(), 1);
    for e in ["client/config", "client/dynamic_config"] {
        assert_eq!(rec.to(e)[0].json(), json!({"sdk_version": "0.38.0"}), "{e}");
    }
    let sessions = rec.to("create_session");
    assert_eq!(sessions.len(), 1, "one session per ServiceClient");
    assert_eq!(
        sessions[0].json(),
        json!({"tags": ["b", "a"], "user_metadata": {}, "sdk_version": "0.38.0",
               "project_id": "proj-7", "display_name": "nightly", "type": "create_session"})
    );
    let session_id = service.session_id().unwrap();
    // 3.1 counters from 0; 6.1 / 11.1 create_model body with the LoRA defaults.
    let models: Vec<Value> = rec.to("create_model").iter().map(Seen::json).collect();
    for (i, m) in models.iter().enumerate() {
        assert_eq!(
            *m,
            json!({"session_id": session_id, "model_seq_id": i, "base_model": BASE_MODEL,
                   "lora_config": {"rank": 32, "train_unembed": true, "train_mlp": true,
                                   "train_attn": true},
                   "optimizer_config": {"type": "adamw"}, "type": "create_model"})
        );
    }
    assert_eq!(models.len(), 2);
    let samplers: Vec<Value> = rec
        .to("create_sampling_session")
        .iter()
        .map(Seen::json)
        .collect();
    let seqs: Vec<&Value> = samplers
        .iter()
        .map(|b| &b["sampling_session_seq_id"])
        .collect();
    assert_eq!(seqs, [&json!(0), &json!(1)]);
    let sample_seqs: Vec<Value> = rec
        .to("asample")
        .iter()
        .map(|s| s.json()["seq_id"].clone())
        .collect();
    assert_eq!(sample_seqs, [json!(0), json!(1)]);
    // 1.7 / 7.1: defaulted fields always sent, None omitted.
    let body = rec.to("asample")[0].json();
    for k in [
        "num_samples",
        "prompt",
        "sampling_params",
        "sampling_session_id",
        "seq_id",
        "topk_prompt_logprobs",
        "topk_sample_logprobs",
        "prompt_alt_tokens_k",
        "prompt_logprobs",
        "record_stability_info",
        "type",
    ] {
        assert!(body.get(k).is_some(), "asample body lacks {k}: {body}");
    }
    for k in [
        "base_model",
        "model_path",
        "target_prompt_logprobs",
        "prompt_logprobs_last_n",
    ] {
        assert!(
            body.get(k).is_none(),
            "asample body has None field {k}: {body}"
        );
    }
    let load = rec.to("load_weights")[0].json();
    assert_eq!(load["model_id"], json!(t1.model_id()));
    assert_eq!(load["path"], json!(saved));
    assert_eq!(load["optimizer"], json!(false));
    assert_eq!(load["type"], json!("load_weights"));
    assert!(load["seq_id"].is_i64(), "{load}");
    let save = rec.to("save_weights")[0].json();
    assert_eq!(
        save["overwrite"],
        json!(false),
        "defaulted field sent: {save}"
    );
    assert_eq!(save["type"], json!("save_weights"));
}

#[tokio::test]
async fn create_session_body_omits_unset_project_and_display_name() {
    let emu = emulator("wire-session-body").await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    assert_eq!(
        rec.to("create_session")[0].json(),
        json!({"tags": [], "user_metadata": {}, "sdk_version": "0.38.0", "type": "create_session"})
    );
}

#[tokio::test]
async fn create_session_messages_are_logged_at_their_levels() {
    logs();
    let emu = emulator("wire-messages").await;
    fault(
        &emu,
        json!({"path": "/api/v1/create_session", "status": 200, "count": 1,
               "body": {"session_id": "conformance-messages",
                        "info_message": "info-7f3a", "warning_message": "warning-7f3a",
                        "error_message": "error-7f3a"}}),
    )
    .await;
    let service = client(&emu);
    // The session exists only in the injected answer: what follows may fail.
    let _ = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await;
    assert_eq!(
        service.session_id().as_deref(),
        Some("conformance-messages")
    );
    let t = Duration::from_secs(5);
    assert_eq!(wait_for_log("info-7f3a", t).await, tracing::Level::INFO);
    assert_eq!(wait_for_log("warning-7f3a", t).await, tracing::Level::WARN);
    assert_eq!(wait_for_log("error-7f3a", t).await, tracing::Level::ERROR);
}

#[test]
fn client_config_flags_default_and_ignore_unknown_fields() {
    use tinkex::core::types::{ClientConfig, DynamicConfig};
    let c: ClientConfig = serde_json::from_value(json!({})).unwrap();
    let expected = json!({
        "pjwt_auth_enabled": false, "credential_default_source": "api_key",
        "sample_dispatch_bytes_semaphore_size": 10485760,
        "inflight_response_bytes_semaphore_size": 52428800,
        "parallel_fwdbwd_chunks": true, "proto_compress_fwdbwd": false,
        "fwdbwd_max_chunk_len": 1024, "fwdbwd_max_chunk_bytes_count": 5000000,
        "fwdbwd_dispatch_bytes_semaphore_size": 50000000,
        "billing_exception_max_pause_duration_sec": 3600, "sample_no_retries": false,
        "sample_enable_stuck_detection": true, "sample_max_concurrent_requests": 2000,
        "use_pyqwest_transport": true, "sample_use_retrieve_futures": false,
        "custom_loss_server_side": false, "sample_join_sampling_session": false});
    assert_eq!(serde_json::to_value(&c).unwrap(), expected);
    assert_eq!(c, ClientConfig::default());
    let c: ClientConfig = serde_json::from_value(
        json!({"fwdbwd_max_chunk_len": 7, "a_flag_from_the_future": {"x": 1}}),
    )
    .unwrap();
    assert_eq!(c.fwdbwd_max_chunk_len, 7);
    assert!(c.parallel_fwdbwd_chunks);
    let d: DynamicConfig =
        serde_json::from_value(json!({"sample_cancel_enabled": true, "new": 1})).unwrap();
    assert_eq!(d.refresh_interval_sec, 300);
    assert!(d.sample_cancel_enabled);
    assert_eq!(d.sample_cancel_max_batch_size, 64);
}

// ------------------------------------------------------------------------------------------
// 1.8 no-content endpoints
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_content_endpoints_ignore_the_body() {
    let emu = emulator("wire-nocontent").await;
    let service = client(&emu);
    let training = training_client(&service).await;
    let saved = training.save_state("gone").await.unwrap();
    for path in ["/checkpoints/", "/finish"] {
        fault(
            &emu,
            json!({"path": path, "status": 200, "count": 1,
                   "body": "not the shape of anything"}),
        )
        .await;
    }
    service
        .create_rest_client()
        .delete_checkpoint_from_tinker_path(&saved)
        .await
        .unwrap();
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
}

// ------------------------------------------------------------------------------------------
// 5.4 the dynamic-config refresh loop (real time: its 10 s floor is not configurable)
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_config_refresh_has_a_10s_floor_one_attempt_and_keeps_values_on_failure() {
    let emu = emulator("wire-dynamic").await;
    // Asks for 3 s: the client waits max(3, 10) = 10 s.
    control_post(
        &emu,
        "flags",
        json!({"dynamic_config": {"refresh_interval_sec": 3}}),
    )
    .await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    // The first refresh fails: the values of the initial fetch must stay (a reset to the
    // default 300 s would push the next refresh 5 minutes away).
    fault(
        &emu,
        json!({"path": "/api/v1/client/dynamic_config", "status": 500, "count": 1}),
    )
    .await;
    rec.wait_for(
        "three dynamic_config requests",
        Duration::from_secs(40),
        |all| {
            all.iter()
                .filter(|s| s.endpoint() == "client/dynamic_config")
                .count()
                >= 3
        },
    )
    .await;
    let times: Vec<Instant> = rec
        .to("client/dynamic_config")
        .iter()
        .map(|s| s.at)
        .collect();
    for (i, pair) in times.windows(2).take(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(9_900) && gap < Duration::from_secs(15),
            "gap {i} was {gap:?}: expected the 10 s floor (one attempt, values kept)"
        );
    }
    let faults = control_get(&emu, "faults").await;
    assert_eq!(faults["faults"][0]["hits"], json!(1), "{faults}");
    for s in rec.to("client/dynamic_config") {
        assert_eq!(s.json(), json!({"sdk_version": "0.38.0"}));
    }
}

// ------------------------------------------------------------------------------------------
// 16 telemetry
// ------------------------------------------------------------------------------------------

fn telemetry_client(base_url: &str) -> ServiceClient {
    let config = config_for(base_url)
        .telemetry(true)
        .telemetry_settings(tinkex::core::telemetry::TelemetryConfig {
            flush_interval: Duration::from_millis(50),
            ..Default::default()
        })
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

/// Every event the emulator stored for `session_id`, in order.
async fn telemetry_events(emu: &tinkex_emulator::RunningEmulator, session_id: &str) -> Vec<Value> {
    let stored = control_get(emu, "telemetry").await;
    stored["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["session_id"] == json!(session_id))
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test]
async fn telemetry_batches_go_to_the_telemetry_endpoint_with_the_batch_fields() {
    let emu = emulator("wire-telemetry").await;
    let rec = Recorder::start(&emu).await;
    let service = telemetry_client(&rec.base_url);
    training_client(&service).await;
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let batches = rec.to("telemetry");
    assert!(!batches.is_empty());
    let session_id = service.session_id().unwrap();
    for b in &batches {
        assert_eq!(b.method, "POST");
        assert_eq!(b.header("x-sdk-method"), None, "no attribution");
        let j = b.json();
        assert_eq!(j["session_id"], json!(session_id));
        assert_eq!(j["sdk_version"], json!("0.38.0"));
        assert!(
            j["platform"].is_string() && j["process_uuid"].is_string(),
            "{j}"
        );
        assert!(j["events"].as_array().unwrap().len() <= 100);
    }
    let events = telemetry_events(&emu, &session_id).await;
    assert_eq!(events[0]["event"], json!("SESSION_START"));
    assert_eq!(events[0]["event_session_index"], json!(0));
    assert!(
        events.iter().all(|e| e["event"] != json!("SESSION_END")),
        "16.3: no SESSION_END on a normal close: {events:?}"
    );
}

#[tokio::test]
async fn a_failed_public_call_sends_its_error_then_session_end() {
    let emu = emulator("wire-session-end").await;
    let service = telemetry_client(emu.base_url());
    training_client(&service).await;
    let session_id = service.session_id().unwrap();
    fault(
        &emu,
        json!({"path": "/api/v1/create_model", "status": 400, "count": 1,
               "body": {"detail": "bad model"}}),
    )
    .await;
    let err = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = telemetry_events(&emu, &session_id).await;
        if events.iter().any(|e| e["event"] == json!("SESSION_END")) {
            break events;
        }
        assert!(Instant::now() < deadline, "no SESSION_END: {events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            e["event_name"]
                .as_str()
                .unwrap_or(e["event"].as_str().unwrap())
                .to_string()
        })
        .collect();
    let err_at = names.iter().position(|n| n == "user_error").unwrap();
    assert_eq!(names[err_at + 1], "SESSION_END", "{names:?}");
    let end = &events[err_at + 1];
    let duration = end["duration"].as_str().unwrap();
    assert!(
        duration.starts_with("0:00:") && duration.len() == "0:00:00.000000".len(),
        "{duration}"
    );
    service
        .close(FinishReasonKind::Errored, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_telemetry_answer_other_than_accepted_fails_the_batch() {
    logs();
    let emu = emulator("wire-accepted").await;
    fault(
        &emu,
        json!({"path": "/api/v1/telemetry", "status": 200, "body": {"status": "queued"}}),
    )
    .await;
    let service = telemetry_client(emu.base_url());
    training_client(&service).await;
    let session_id = service.session_id().unwrap();
    let level = wait_for_log(
        &format!("telemetry response is not {{\"status\": \"accepted\"}}"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(level, tracing::Level::WARN);
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    assert!(telemetry_events(&emu, &session_id).await.is_empty());
}

// ------------------------------------------------------------------------------------------
// 6.2 / 12.1 client-side checks
// ------------------------------------------------------------------------------------------

#[test]
fn get_info_tokenizer_id_is_cut_at_the_first_colon() {
    use tinkex::core::types::GetInfoResponse;
    let parse = |tok: Value| -> GetInfoResponse {
        serde_json::from_value(json!({"model_id": "s:train:0",
            "model_data": {"model_name": "Qwen/Qwen3-8B", "tokenizer_id": tok}}))
        .unwrap()
    };
    let tok = |r: GetInfoResponse| r.model_data.tokenizer_id;
    assert_eq!(
        tok(parse(json!("Qwen/Qwen3-8B:rev:2"))).as_deref(),
        Some("Qwen/Qwen3-8B")
    );
    assert_eq!(
        tok(parse(json!("Qwen/Qwen3-8B"))).as_deref(),
        Some("Qwen/Qwen3-8B")
    );
    assert_eq!(tok(parse(json!(""))).as_deref(), Some(""));
    assert_eq!(tok(parse(Value::Null)), None);
}

#[test]
fn create_sampling_client_takes_exactly_one_of_model_path_and_base_model() {
    use tinkex::core::requests::CreateSamplingClientInput;
    let input = |v: Value| -> CreateSamplingClientInput { serde_json::from_value(v).unwrap() };
    assert!(input(json!({"base_model": BASE_MODEL})).validate().is_ok());
    assert!(input(json!({"model_path": "tinker://a/b"}))
        .validate()
        .is_ok());
    assert!(input(json!({})).validate().is_err());
    assert!(
        input(json!({"base_model": BASE_MODEL, "model_path": "tinker://a/b"}))
            .validate()
            .is_err()
    );
}

#[test]
fn lora_defaults_are_rank_32_and_every_target_trained() {
    let d = LoraOptions::default();
    assert_eq!(
        (d.rank, d.seed, d.train_mlp, d.train_attn, d.train_unembed),
        (32, None, true, true, true)
    );
}

// ------------------------------------------------------------------------------------------
// 2.1 environment variables (in a child process: the environment is process-wide)
// ------------------------------------------------------------------------------------------

const CHILD: &str = "TINKEX_CONFORMANCE_WIRE_CHILD";

/// Runs the test `name` of this binary alone in a child process (marked by [`CHILD`]).
fn run_child(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn environment_variables_follow_the_sdk() {
    run_child("environment_variables_child");
}

/// Runs only as the child of [`environment_variables_follow_the_sdk`], alone in its process,
/// so it may change the environment.
#[test]
fn environment_variables_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("TINKER_") || k.starts_with("CLOUDFLARE_ACCESS_") {
            std::env::remove_var(k);
        }
    }
    let set = |k: &str, v: &str| std::env::set_var(k, v);
    let build = |b: tinkex::core::ConfigBuilder| b.build();

    // TINKER_API_KEY: used when no key is passed; empty counts as unset.
    set("TINKER_API_KEY", "");
    let err = build(Config::builder()).unwrap_err();
    assert_eq!(err.kind, tinkex::core::ErrorKind::Auth, "{err}");
    set("TINKER_API_KEY", "tml-from-env");
    let c = build(Config::builder()).unwrap();
    assert_eq!(
        c.credentials.plain_key().unwrap(),
        tinkex::core::config::ApiKey::new("tml-from-env").unwrap()
    );
    let c = build(Config::builder().api_key("tml-argument")).unwrap();
    assert_eq!(
        c.credentials.plain_key().unwrap(),
        tinkex::core::config::ApiKey::new("tml-argument").unwrap()
    );

    // 1.1 base URL: argument, else TINKER_BASE_URL, else the default; empty = unset.
    assert_eq!(
        build(Config::builder()).unwrap().base_url,
        tinkex::core::config::DEFAULT_BASE_URL
    );
    set("TINKER_BASE_URL", "");
    assert_eq!(
        build(Config::builder()).unwrap().base_url,
        tinkex::core::config::DEFAULT_BASE_URL
    );
    set("TINKER_BASE_URL", "http://127.0.0.1:9/from-env//");
    assert_eq!(
        build(Config::builder()).unwrap().base_url,
        "http://127.0.0.1:9/from-env"
    );
    let c = build(Config::builder().base_url("http://127.0.0.1:8/arg")).unwrap();
    assert_eq!(c.base_url, "http://127.0.0.1:8/arg");
    let c = build(Config::builder().base_url("")).unwrap();
    assert_eq!(c.base_url, "http://127.0.0.1:9/from-env");

    // TINKER_PROJECT_ID.
    assert_eq!(build(Config::builder()).unwrap().project_id, None);
    set("TINKER_PROJECT_ID", "proj-env");
    assert_eq!(
        build(Config::builder()).unwrap().project_id.as_deref(),
        Some("proj-env")
    );
    let c = build(Config::builder().project_id("proj-arg")).unwrap();
    assert_eq!(c.project_id.as_deref(), Some("proj-arg"));

    // TINKER_TAGS: split on ',', de-duplicated (sorted).
    assert!(build(Config::builder()).unwrap().tags.is_empty());
    set("TINKER_TAGS", "b,a,,b, c ");
    assert_eq!(build(Config::builder()).unwrap().tags, ["a", "b", "c"]);
    let c = build(Config::builder().tags(vec!["x".into()])).unwrap();
    assert_eq!(c.tags, ["x"]);

    // TINKER_TELEMETRY: default on; on only for 1/true/yes/on (any case).
    assert!(build(Config::builder()).unwrap().telemetry);
    for (v, on) in [
        ("1", true),
        ("true", true),
        ("YES", true),
        ("On", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("off", false),
        ("", false),
        ("maybe", false),
    ] {
        set("TINKER_TELEMETRY", v);
        let c = build(Config::builder()).unwrap();
        assert_eq!((v, c.telemetry, c.telemetry_settings.enabled), (v, on, on));
    }
    set("TINKER_TELEMETRY", "1");
    assert!(!build(Config::builder().telemetry(false)).unwrap().telemetry);

    // On the wire: the key, the Cloudflare headers, project and tags from the environment.
    set("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-id-123");
    set("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-secret-456");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let emu = emulator("wire-env").await;
        let rec = Recorder::start(&emu).await;
        set("TINKER_BASE_URL", &rec.base_url);
        let service = ServiceClient::new(Config::from_env().unwrap()).unwrap();
        service
            .create_sampling_client_for_base_model(BASE_MODEL)
            .await
            .unwrap();
        service
            .close(FinishReasonKind::Success, None)
            .await
            .unwrap();
        let all = rec.all();
        for s in &all {
            assert_eq!(s.header("x-api-key"), Some("tml-from-env"), "{}", s.path);
            assert_eq!(
                s.header("cf-access-client-id"),
                Some("cf-id-123"),
                "{}",
                s.path
            );
            assert_eq!(
                s.header("cf-access-client-secret"),
                Some("cf-secret-456"),
                "{}",
                s.path
            );
        }
        let body = rec.to("create_session")[0].json();
        assert_eq!(body["project_id"], json!("proj-env"));
        assert_eq!(body["tags"], json!(["a", "b", "c"]));
        assert!(
            !rec.to("telemetry").is_empty(),
            "TINKER_TELEMETRY=1 sends telemetry"
        );

        // TINKER_TELEMETRY=0: nothing sent; no Cloudflare headers when the variables are unset.
        set("TINKER_TELEMETRY", "0");
        std::env::remove_var("CLOUDFLARE_ACCESS_CLIENT_ID");
        std::env::remove_var("CLOUDFLARE_ACCESS_CLIENT_SECRET");
        let rec = Recorder::start(&emu).await;
        set("TINKER_BASE_URL", &rec.base_url);
        let service = ServiceClient::new(Config::from_env().unwrap()).unwrap();
        service
            .create_sampling_client_for_base_model(BASE_MODEL)
            .await
            .unwrap();
        service
            .close(FinishReasonKind::Success, None)
            .await
            .unwrap();
        assert!(rec.to("telemetry").is_empty());
        for s in rec.all() {
            assert_eq!(s.header("cf-access-client-id"), None);
            assert_eq!(s.header("cf-access-client-secret"), None);
        }
    });
}

// ------------------------------------------------------------------------------------------
// 1.3 HTTP/2 via ALPN over TLS (in a child process: SSL_CERT_FILE is process-wide)
// ------------------------------------------------------------------------------------------

#[test]
fn tls_offers_h2_and_http11_by_alpn() {
    run_child("tls_alpn_child");
}

/// A TLS server offering `protocols`; sends each handshake's negotiated ALPN protocol.
async fn alpn_server(
    protocols: &[&[u8]],
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<Option<Vec<u8>>>,
) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let data = |n: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(n)
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data("localhost.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data("localhost.key")).unwrap();
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(sock).await {
                let _ = tx.send(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
            }
        }
    });
    (format!("https://localhost:{port}"), rx)
}

/// Runs only as the child of [`tls_offers_h2_and_http11_by_alpn`].
#[test]
fn tls_alpn_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var(
        "SSL_CERT_FILE",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-ca.crt"),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (offered, expected) in [
            (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
            (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
        ] {
            let (url, mut negotiated) = alpn_server(offered).await;
            let config = Config::builder()
                .api_key(KEY)
                .base_url(url)
                .telemetry(false)
                .retry(tinkex::core::RetryPolicy {
                    max_attempts: Some(1),
                    ..fast_retry()
                })
                .build()
                .unwrap();
            let service = ServiceClient::new(config).unwrap();
            // The server hangs up after the handshake: the call fails, the handshake counts.
            let _ = service.get_server_capabilities().await;
            let got = tokio::time::timeout(Duration::from_secs(10), negotiated.recv())
                .await
                .expect("a handshake")
                .unwrap();
            assert_eq!(got.as_deref(), Some(expected), "server offered {offered:?}");
        }
    });
}

/// 5.5 and 1.6.1: the session's `user_metadata` goes out with create_session, and
/// `default_headers_overrides` reach every request to the service (over the built-in headers),
/// while the credential header cannot be overridden and the values never show in `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_metadata_and_header_overrides_are_sent() {
    let emu = emulator("wire-overrides").await;
    let rec = Recorder::start(&emu).await;
    let meta: BTreeMap<String, String> = [("team".to_string(), "rl".to_string())].into();
    let headers: BTreeMap<String, String> = [
        ("X-Team-Route".to_string(), "blue-secret-route".to_string()),
        ("X-Stainless-Async".to_string(), "async:custom".to_string()),
    ]
    .into();
    let config = config_for(&rec.base_url)
        .user_metadata(meta)
        .default_headers_overrides(headers)
        .build()
        .unwrap();
    assert!(
        !format!("{config:?}").contains("blue-secret-route"),
        "override values never show in Debug"
    );
    let service = ServiceClient::new(config).unwrap();
    service.get_server_capabilities().await.unwrap();
    let training = training_client(&service).await;
    drop(training);
    service
        .close(FinishReasonKind::Success, None)
        .await
        .unwrap();
    let all = rec.all();
    let create = all
        .iter()
        .find(|s| s.endpoint() == "create_session")
        .expect("create_session was sent");
    assert_eq!(create.json()["user_metadata"], json!({"team": "rl"}));
    for s in &all {
        let at = format!("{} {}", s.method, s.path);
        assert_eq!(s.header("x-team-route"), Some("blue-secret-route"), "{at}");
        assert_eq!(s.header("x-stainless-async"), Some("async:custom"), "{at}");
        assert_eq!(s.header("x-api-key"), Some(KEY), "{at}");
    }
    let refused = config_for(&rec.base_url)
        .default_headers_overrides([("X-API-Key".to_string(), "tml-other".to_string())].into())
        .build();
    let err = refused.expect_err("the credential header cannot be overridden");
    assert!(!err.to_string().contains("tml-other"), "{err}");
}

/// 20.4: a sampler handle is untrusted input. Its base URL is checked like a configured one
/// (plain http only to loopback unless `allow_insecure_http`), libtinkex writes no header
/// overrides into a handle, and a clone never sends the overrides a handle carries: only
/// those of its own configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_handles_carry_no_header_overrides_and_their_url_is_checked() {
    use tinkex::core::config::ConfigInput;
    use tinkex::core::sampling::SamplerHandle;
    use tinkex::core::{ErrorKind, SamplingClient};
    let emu = emulator("wire-handle-headers").await;
    let rec = Recorder::start(&emu).await;
    let original_headers: BTreeMap<String, String> =
        [("X-Original-Route".to_string(), "orig-secret".to_string())].into();
    let service = ServiceClient::new(
        config_for(&rec.base_url)
            .default_headers_overrides(original_headers)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sampler = service
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let handle = sampler.get_sampler_handle().unwrap();
    let mut decoded = SamplerHandle::decode(&handle).unwrap();
    assert!(
        decoded.holder.default_headers_overrides.is_empty(),
        "the original's overrides stay out of the handle"
    );
    assert!(!handle.contains("orig-secret"));

    // A handle (say, made by another SDK) that carries overrides: the clone ignores them.
    decoded.holder.default_headers_overrides =
        [("x-from-handle".to_string(), "injected".to_string())].into();
    let foreign = decoded.encode().unwrap();
    let clone_config = || ConfigInput {
        api_key: Some(KEY.into()),
        telemetry: Some(false),
        default_headers_overrides: Some([("X-Clone-Own".to_string(), "mine".to_string())].into()),
        ..ConfigInput::default()
    };
    let clone = SamplingClient::from_sampler_handle(
        &foreign,
        clone_config(),
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    let before = rec.all().len();
    clone
        .sample(
            ModelInput::from_ints(vec![1, 2, 3]),
            1,
            SamplingParams {
                max_tokens: Some(1),
                ..Default::default()
            },
            SampleOptions::default(),
        )
        .await
        .unwrap();
    let sent: Vec<Seen> = rec.all().into_iter().skip(before).collect();
    assert!(sent.iter().any(|s| s.endpoint() == "asample"), "{sent:?}");
    for s in &sent {
        let at = format!("{} {}", s.method, s.path);
        assert_eq!(s.header("x-from-handle"), None, "{at}");
        assert_eq!(s.header("x-original-route"), None, "{at}");
        assert_eq!(s.header("x-clone-own"), Some("mine"), "{at}");
        assert_eq!(s.header("x-api-key"), Some(KEY), "{at}");
    }

    // A handle naming a plain-http host that is not loopback is refused (the clone would
    // send the local API key there), unless the local configuration allows insecure http.
    decoded.holder.base_url = "http://192.0.2.7:8080".into();
    let remote = decoded.encode().unwrap();
    let err = SamplingClient::from_sampler_handle(
        &remote,
        clone_config(),
        tokio::runtime::Handle::current(),
    )
    .expect_err("plain http to a remote host is refused");
    assert!(err.kind == ErrorKind::User, "{err:?}");
    assert!(!err.to_string().contains(KEY), "{err}");
    let allowed = ConfigInput {
        allow_insecure_http: Some(true),
        ..clone_config()
    };
    SamplingClient::from_sampler_handle(&remote, allowed, tokio::runtime::Handle::current())
        .expect("allowed when the local configuration opts in (nothing is sent yet)");
}
