//! Regression tests of the hardening issue, through the Rust API against small scripted
//! servers: redirects never carry the key to another origin, bodies and server text are
//! bounded, ids cannot rewrite paths, permanent failures are not retried. (The wider
//! hostile-server suite is `tests/hostile.rs`; TLS trust is `tests/tls.rs`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinkex::core::{Config, ErrorKind, Limits, RetryPolicy, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "tml-HARDENING-CANARY-0123456789";

/// What a scripted server answers to one request (given its raw head).
type Script = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

enum Reply {
    /// Raw bytes, then close.
    Raw(Vec<u8>),
    /// A 200 with a chunked body that never ends.
    Endless,
}

/// A loopback HTTP/1.1 server that records every request it receives (head and body).
struct Scripted {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let rec = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, script.clone(), rec.clone()));
            }
        });
        Scripted { url, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut sock: TcpStream, script: Script, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
        buf.drain(..end + 4 + len);
        // Every client fetches client/config first (PROTOCOL.md 3.2/3.3): answered with the
        // defaults and not recorded, so the scripts see only the requests under test.
        let path = head.split(' ').nth(1).unwrap_or_default();
        if head.starts_with("POST ") && path.ends_with("/api/v1/client/config") {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                .await;
            continue;
        }
        seen.lock().unwrap().push(format!("{head}\r\n\r\n{body}"));
        match script(&head) {
            Reply::Raw(bytes) => {
                let _ = sock.write_all(&bytes).await;
                return;
            }
            Reply::Endless => {
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                loop {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reply(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    Reply::Raw(s.into_bytes())
}

const RUNS: &str =
    r#"{"training_runs": [], "cursor": {"offset": 0, "limit": 10, "total_count": 0}}"#;

/// A client with fast retries and a short progress timeout.
fn client(url: &str, limits: Option<Limits>) -> ServiceClient {
    let mut b = Config::builder()
        .api_key(KEY)
        .base_url(url)
        .telemetry(false)
        .retry(RetryPolicy {
            progress_timeout: Duration::from_secs(20),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        });
    if let Some(l) = limits {
        b = b.limits(l);
    }
    ServiceClient::new(b.build().unwrap()).unwrap()
}

// ---- item 2: redirects --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_fetched_without_any_credential() {
    let other =
        Scripted::start(|_| reply("200 OK", &[("content-type", "application/json")], RUNS)).await;
    let target = format!("{}/signed/object?X-Sig=secret-token", other.url);
    let origin = Scripted::start(move |_| reply("302 Found", &[("location", &target)], "")).await;
    let runs = client(&origin.url, None)
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .expect("the redirected GET succeeds");
    assert!(runs.training_runs.is_empty());
    let got = other.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let req = got[0].to_ascii_lowercase();
    assert!(
        req.starts_with("get /signed/object?x-sig=secret-token"),
        "{req}"
    );
    assert!(
        !got[0].contains(KEY),
        "the key reached another origin: {}",
        got[0]
    );
    for header in ["x-api-key", "cf-access-client", "x-idempotency-key"] {
        assert!(
            !req.contains(header),
            "{header} reached another origin: {req}"
        );
    }
    assert!(
        origin.requests()[0].contains(KEY),
        "the base origin gets the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_origin_redirect_keeps_credentials_and_loops_are_bounded() {
    let origin = Scripted::start(|head| {
        if head.starts_with("GET /moved") {
            reply("200 OK", &[("content-type", "application/json")], RUNS)
        } else if head.starts_with("GET /loop") {
            reply("307 Temporary Redirect", &[("location", "/loop")], "")
        } else {
            reply("301 Moved Permanently", &[("location", "/moved")], "")
        }
    })
    .await;
    let svc = client(&origin.url, None);
    svc.create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .expect("same-origin redirect followed");
    let got = origin.requests();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].starts_with("GET /moved") && got[1].contains(KEY),
        "{}",
        got[1]
    );

    // A redirect loop fails at once as a permanent error: not retried for the progress
    // timeout.
    let looping = client(&format!("{}/loop", origin.url), None);
    let started = Instant::now();
    let err = looping
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(err.message.contains("more than 10 redirects"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        origin.requests().len() <= 2 + 12,
        "bounded: {}",
        origin.requests().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_307_to_another_origin_never_resends_the_body() {
    let other = Scripted::start(|_| reply("200 OK", &[], "{}")).await;
    let target = format!("{}/steal?sig=abc", other.url);
    let origin =
        Scripted::start(move |_| reply("307 Temporary Redirect", &[("location", &target)], ""))
            .await;
    let err = client(&origin.url, None)
        .create_rest_client()
        .get_weights_info_by_tinker_path("tinker://run-1/weights/w1")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(err.message.contains("another origin"), "{err}");
    assert!(
        !err.message.contains("sig=abc"),
        "the query (a signed token) is dropped: {err}"
    );
    assert!(
        other.requests().is_empty(),
        "nothing reached the other origin"
    );
}

// ---- item 4: bounded bodies and server text -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_fails_at_the_limit_instead_of_growing_memory() {
    let server = Scripted::start(|_| Reply::Endless).await;
    let limits = Limits {
        max_response_bytes: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let started = Instant::now();
    let err = client(&server.url, Some(limits))
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(err.message.contains("limit of 4194304 bytes"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
    assert_eq!(
        server.requests().len(),
        1,
        "a body over the limit is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_oversized_body_is_refused_before_it_is_read() {
    let server = Scripted::start(|_| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 107374182400\r\n\r\n{"
                .to_vec(),
        )
    })
    .await;
    let err = client(&server.url, None)
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
    assert!(err.message.contains("107374182400"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_detail_is_cut_and_escaped() {
    let detail = format!(
        "first line\nWARN forged log line\u{1b}[31m{}",
        "x".repeat(50 * 1024 * 1024)
    );
    let body = serde_json::json!({ "detail": detail }).to_string();
    let server = Scripted::start(move |_| reply("422 Unprocessable Entity", &[], &body)).await;
    let err = client(&server.url, None)
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::User);
    assert_eq!(err.http_status, Some(422));
    assert!(
        err.message.len() < 5000,
        "message of {} bytes",
        err.message.len()
    );
    assert!(
        !err.message.contains('\n') && !err.message.contains('\u{1b}'),
        "{}",
        &err.message[..200]
    );
    assert!(err.body.as_ref().is_some_and(|b| b.len() <= 4100));

    // A short detail is kept whole, with its control characters escaped (no forged lines).
    let body = serde_json::json!({ "detail": "bad\nWARN forged\u{1b}[2J" }).to_string();
    let server = Scripted::start(move |_| reply("400 Bad Request", &[], &body)).await;
    let err = client(&server.url, None)
        .create_rest_client()
        .list_training_runs(10, 0, Default::default(), None)
        .await
        .unwrap_err();
    assert_eq!(
        err.message, "HTTP 400: bad\\nWARN forged\\u{1b}[2J",
        "{err}"
    );
}

// ---- item 5: permanent failures --------------------------------------------------------

#[test]
fn credentials_that_could_never_be_sent_are_rejected_when_configured() {
    for bad in [
        "tml-abc\u{1}def",
        "tml-abc def",
        "tml-abc\r\nx-evil: 1",
        "tml-ключ",
        "eyJnot-a-jwt",
    ] {
        let err = Config::builder()
            .api_key(bad)
            .base_url("http://127.0.0.1:9")
            .build()
            .unwrap_err();
        assert!(
            !err.message.contains(bad.trim()),
            "the key is not echoed: {err}"
        );
    }
    // A JWT whose exp is in the past is refused; one in the future is accepted.
    use base64::Engine;
    let jwt = |exp: u64| {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            enc(r#"{"alg":"none"}"#),
            enc(&format!(r#"{{"exp":{exp}}}"#))
        )
    };
    let b = |k: String| {
        Config::builder()
            .api_key(k)
            .base_url("http://127.0.0.1:9")
            .build()
    };
    assert!(b(jwt(1_000)).unwrap_err().message.contains("expired"));
    assert!(b(jwt(4_000_000_000)).is_ok());
}

// ---- item 6: zero intervals ------------------------------------------------------------

#[test]
fn zero_intervals_are_rejected_everywhere() {
    use tinkex::core::telemetry::TelemetryConfig;
    use tinkex::core::HeartbeatConfig;
    let b = || {
        Config::builder()
            .api_key(KEY)
            .base_url("http://127.0.0.1:9")
    };
    let heartbeat = b()
        .heartbeat(HeartbeatConfig {
            interval: Duration::ZERO,
            ..HeartbeatConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(
        heartbeat.message.contains("heartbeat.interval"),
        "{heartbeat}"
    );
    let progress = b()
        .progress_event_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        progress.message.contains("progress_event_interval"),
        "{progress}"
    );
    let telemetry = b()
        .telemetry_settings(TelemetryConfig {
            flush_interval: Duration::ZERO,
            ..TelemetryConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(
        telemetry.message.contains("telemetry.flush_interval"),
        "{telemetry}"
    );
    let backoff = b()
        .retry(RetryPolicy {
            base_delay: Duration::ZERO,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap_err();
    assert!(backoff.message.contains("retry.base_delay"), "{backoff}");
}

// ---- item 7: ids cannot rewrite the request ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_would_rewrite_the_path_are_rejected_before_sending() {
    let server = Scripted::start(|_| reply("200 OK", &[], "{}")).await;
    let rest = client(&server.url, None).create_rest_client();
    for id in [
        "../../healthz",
        "x?limit=1#",
        "a/b",
        "",
        "a b",
        "..",
        "%2e%2e",
    ] {
        let err = rest
            .get_training_run(id, Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::User, "{id:?}: {err}");
        let err = rest.list_checkpoints(id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::User, "{id:?}: {err}");
    }
    for path in [
        "tinker://run/weights/..",
        "tinker://../weights/x",
        "tinker://run/weights/x?y=1",
        "tinker://run/weights/a#b",
    ] {
        let err = rest
            .delete_checkpoint_from_tinker_path(path)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::User, "{path}: {err}");
    }
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // A legal checkpoint id keeps its '/' (PROTOCOL.md 1.2).
    rest.delete_checkpoint_from_tinker_path("tinker://sess-1:train:0/weights/step-100")
        .await
        .unwrap();
    assert!(server.requests()[0]
        .starts_with("DELETE /api/v1/training_runs/sess-1:train:0/checkpoints/weights/step-100 "));
}

// ---- item 8: secrets in Debug and messages ---------------------------------------------

#[test]
fn the_builder_and_errors_never_show_the_key() {
    let b = Config::builder()
        .api_key(KEY)
        .base_url("https://user:pw-SECRET@h.example/x");
    assert!(!format!("{b:?}").contains("CANARY"), "{b:?}");
    assert!(!format!("{b:?}").contains("pw-SECRET"), "{b:?}");
    let err = b.build().unwrap_err();
    assert!(!err.message.contains("pw-SECRET"), "{err}");
    let err = Config::builder()
        .api_key(KEY)
        .base_url(format!("http://x:{KEY}@evil.example/"))
        .build()
        .unwrap_err();
    assert!(!err.message.contains("CANARY"), "{err}");
}

// ---- item 3: the plain-http guard ----------------------------------------------------

#[test]
fn the_plain_http_guard_decides_on_the_real_host() {
    let b = |u: &str| Config::builder().api_key(KEY).base_url(u).build();
    for bad in [
        "http://localhost:x@attacker.example/",
        "http://127.0.0.1@attacker.example/",
        "http://localhost.attacker.example/",
        "http://[::ffff:10.0.0.1]/",
        "http://127.0.0.1.nip.example/",
        // Found by the config_url fuzz target: NULs and junk after the host.
        "http://[::1]\u{e0}J\0\0\0",
        "http://127.0.0.1:9/a b",
    ] {
        assert!(b(bad).is_err(), "{bad} must be refused");
    }
    for good in [
        "http://localhost:8000",
        "http://127.0.0.1:9/",
        "http://127.3.4.5",
        "http://[::1]:8000/x",
        "http://[::ffff:127.0.0.1]:80",
        "https://tinker.example/services/x",
    ] {
        assert!(b(good).is_ok(), "{good} must be accepted");
    }
}

// ---- item 4: an announced result raises the limit ----------------------------------------

mod support;

/// A sample result of about 100 KB, fetched by a client whose default body limit is 16 KiB:
/// it fails when the server sends it inline (unannounced), and succeeds when the server
/// first announces its size (`complete_metadata` with `response_payload_size`, 8.1.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_result_may_exceed_the_default_limit_an_unannounced_one_may_not() {
    use tinkex::core::types::{ModelInput, SamplingParams};
    use tinkex::core::SampleOptions;
    let limits = Limits {
        max_response_bytes: 16 * 1024,
        ..Limits::default()
    };
    let big_sample = |sampler: tinkex::core::SamplingClient| async move {
        sampler
            .sample(
                ModelInput::from_ints((0..2000).collect()),
                1,
                SamplingParams {
                    max_tokens: Some(4),
                    ..Default::default()
                },
                SampleOptions {
                    prompt_logprobs: true,
                    topk_prompt_logprobs: 5,
                    ..SampleOptions::default()
                },
            )
            .await
    };
    for (inline_limit, should_pass) in [(1024, true), (64 * 1024 * 1024, false)] {
        let emu =
            support::emulator_with("announced", |c| c.inline_result_limit = inline_limit).await;
        let svc = client(emu.base_url(), Some(limits.clone()));
        let sampler = svc
            .create_sampling_client_for_base_model(support::BASE_MODEL)
            .await
            .unwrap();
        let result = big_sample(sampler).await;
        if should_pass {
            let out = result.expect("an announced result is read up to its announced size");
            assert_eq!(out.prompt_logprobs.map(|p| p.len()), Some(2000));
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Fatal, "{err}");
            assert!(err.message.contains("limit of 16384 bytes"), "{err}");
        }
    }
}
