//! The REST and admin API (PROTOCOL.md 9, 2.8, 3.3, 5.2, 6.9, 7.2): every method of
//! `src/core/rest/methods.json` end to end, against a scripted server that records each
//! request whole (method, path with query, headers, body) and against the emulator (real
//! state, `/_emulator/journal`).

mod support;

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;
use tinkex::core::rest::ArgErrorKind;
use tinkex::core::types::AccessScope;
use tinkex::core::{AdminClient, Config, ErrorKind, LoraOptions, RestClient, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---- a scripted HTTP/1.1 server ---------------------------------------------------------

/// One request as received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A canned answer: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, String);

struct Scripted {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answers consumed first, in order, before `route` decides.
    queue: Arc<Mutex<VecDeque<Answer>>>,
}

impl Scripted {
    async fn start(route: fn(&Seen) -> Answer) -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let queue: Arc<Mutex<VecDeque<Answer>>> = Default::default();
        let (s2, q2) = (seen.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (seen, queue) = (s2.clone(), q2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let method = first.next().unwrap_or("").to_string();
                    let target = first.next().unwrap_or("").to_string();
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = buf[head_end + 4..].to_vec();
                    while body.len() < len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let req = Seen {
                        method,
                        target,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let queued = queue.lock().unwrap().pop_front();
                    let (status, extra, text) = queued.unwrap_or_else(|| route(&req));
                    seen.lock().unwrap().push(req);
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n",
                        text.len()
                    );
                    for (k, v) in extra {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&text);
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Scripted { base, seen, queue }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests of the API proper (not the startup config fetches).
    fn api(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !s.target.starts_with("/api/v1/client/"))
            .collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn ok(v: Value) -> Answer {
    (200, vec![], v.to_string())
}

const RUN: &str = r#"{"training_run_id": "run-1", "base_model": "Qwen/Qwen3-8B",
  "model_owner": "tml:organization_user:abc", "is_lora": true, "last_request_time": "2026-07-01T12:00:00Z",
  "future_field": 1}"#;

/// Canned answers per endpoint (shapes of section 9), each with an unknown field.
fn canned(s: &Seen) -> Answer {
    let path = s.target.split('?').next().unwrap_or("");
    let run: Value = serde_json::from_str(RUN).unwrap();
    let ckpts = json!({"checkpoints": [{"checkpoint_id": "weights/a", "checkpoint_type": "training",
        "time": "2026-07-01T11:59:00Z", "tinker_path": "tinker://run-1/weights/a", "x": 1}], "extra": 2});
    match (s.method.as_str(), path) {
        (_, "/api/v1/client/config") => ok(json!({})),
        (_, "/api/v1/client/dynamic_config") => ok(json!({})),
        ("GET", "/api/v1/training_runs") => ok(
            json!({"training_runs": [run], "cursor": {"offset": 0, "limit": 20, "total_count": 1}}),
        ),
        ("GET", "/api/v1/checkpoints") => ok(ckpts),
        ("GET", p) if p.ends_with("/checkpoints") => ok(ckpts),
        ("GET", p) if p.ends_with("/external_weights_urls") => ok(
            json!({"urls": {"config.json": "https://storage.example/c?sig=1"}, "expires": "2026-07-01T13:00:00Z", "x": 0}),
        ),
        ("GET", p) if p.starts_with("/api/v1/training_runs/") => ok(run),
        ("POST", "/api/v1/weights_info") => {
            ok(json!({"base_model": "Qwen/Qwen3-8B", "is_lora": true, "lora_rank": 32, "x": 1}))
        }
        ("GET", "/api/v1/sessions") => ok(json!({"sessions": ["s1", "s2"], "x": 1})),
        ("POST", "/api/v1/sessions/search") => ok(json!({"sessions": [{"session_id": "s1",
            "created_at": "2026-07-01T00:00:00Z", "owner": "u", "project_id": "p",
            "status": {"type": "client_finished", "reason": {"type": "errored"}, "detail": null},
            "checkpoints_count": 2, "x": 1}], "next_cursor": null})),
        ("GET", p) if p.ends_with("/trace_export") => {
            ok(json!({"status": "ready", "url": "https://storage.example/t?sig=2", "error": null}))
        }
        ("GET", p) if p.starts_with("/api/v1/sessions/") => {
            ok(json!({"training_run_ids": ["run-1"], "sampler_ids": [], "x": 1}))
        }
        ("POST", "/api/v1/copy_weights") => ok(json!({"tinker_path": "tinker://copy-1/weights/a"})),
        ("GET", p) if p.starts_with("/api/v1/samplers/") => {
            ok(json!({"sampler_id": "s:sample:0", "base_model": "Qwen/Qwen3-8B", "x": 1}))
        }
        ("GET", "/api/v1/get_server_capabilities") => ok(json!({"supported_models": [
            {"model_name": "Qwen/Qwen3-8B", "max_context_length": 32768, "trainable": true, "sampleable": true, "x": 1}]})),
        ("GET", "/api/v1/audit") => ok(json!({"entries": [{"timestamp": "2026-07-01T00:00:00Z",
            "event": "checkpoint_created", "event_details": {"a": 1}, "x": 1}]})),
        ("GET", "/api/v1/billing/usage/events") => {
            ok(json!({"data": [{"bucket_start": "2026-07-01T00:00:00Z",
            "bucket_end": "2026-07-01T01:00:00Z", "event_info": {"type": "training", "token_count": 10}},
            {"bucket_start": "2026-07-01T00:00:00Z", "bucket_end": "2026-07-01T01:00:00Z",
             "event_info": {"type": "quantum", "qubits": 3}}],
            "sessions": {"s1": {"user_metadata": null}}, "cost_data_through": null}))
        }
        ("GET", "/api/v1/billing/usage/checkpoints/current") => ok(json!({"data": [
            {"checkpoint_count": 1, "size_bytes": 10, "size_gigabytes": 1e-8}], "x": 1})),
        ("DELETE", _) | ("POST", _) | ("PUT", _) => ok(json!({})),
        _ => (404, vec![], "{}".into()),
    }
}

fn config(base: &str) -> Config {
    Config::builder()
        .api_key("tml-rest-api-test")
        .base_url(base)
        .telemetry(false)
        .project_id("proj-config")
        .retry(fast_retry())
        .build()
        .unwrap()
}

/// Every method of the table, with the exact request of section 9 it must send.
#[tokio::test]
async fn every_table_method_sends_its_exact_wire_shape() {
    let srv = Scripted::start(canned).await;
    let rest = RestClient::new(config(&srv.base)).unwrap();
    let p = "tinker://run-1/weights/step-1";
    let x = "tinker://run-1/external_weights/exp-1";
    let ck = "/api/v1/training_runs/run-1/checkpoints/weights/step-1";
    // (method, args, expected HTTP method, expected target, expected JSON body)
    let cases: Vec<(&str, Value, &str, String, Value)> = vec![
        ("list_training_runs", json!({}), "GET",
         "/api/v1/training_runs?limit=20&offset=0&access_scope=owned".into(), Value::Null),
        ("list_training_runs", json!({"limit": 5, "offset": 10, "access_scope": "accessible", "project_id": "pr"}),
         "GET", "/api/v1/training_runs?limit=5&offset=10&access_scope=accessible&project_id=pr".into(), Value::Null),
        ("get_training_run", json!({"training_run_id": "run-1", "access_scope": "accessible"}), "GET",
         "/api/v1/training_runs/run-1?access_scope=accessible".into(), Value::Null),
        ("get_training_run_by_tinker_path", json!({"tinker_path": p}), "GET",
         "/api/v1/training_runs/run-1?access_scope=owned".into(), Value::Null),
        ("list_checkpoints", json!({"training_run_id": "run-1"}), "GET",
         "/api/v1/training_runs/run-1/checkpoints".into(), Value::Null),
        ("list_user_checkpoints", json!({}), "GET", "/api/v1/checkpoints?limit=100&offset=0".into(), Value::Null),
        ("delete_checkpoint", json!({"training_run_id": "run-1", "checkpoint_id": "weights/step-1"}),
         "DELETE", ck.into(), Value::Null),
        ("delete_checkpoint_from_tinker_path", json!({"tinker_path": p}), "DELETE", ck.into(), Value::Null),
        ("publish_checkpoint_from_tinker_path", json!({"tinker_path": p}), "POST", format!("{ck}/publish"), Value::Null),
        ("unpublish_checkpoint_from_tinker_path", json!({"tinker_path": p}), "DELETE", format!("{ck}/publish"), Value::Null),
        ("set_checkpoint_ttl_from_tinker_path", json!({"tinker_path": p, "ttl_seconds": 86400}), "PUT",
         format!("{ck}/ttl"), json!({"ttl_seconds": 86400})),
        ("set_checkpoint_ttl_from_tinker_path", json!({"tinker_path": p, "ttl_seconds": null}), "PUT",
         format!("{ck}/ttl"), json!({"ttl_seconds": null})),
        ("get_external_weights_urls", json!({"tinker_path": x}), "GET",
         "/api/v1/training_runs/run-1/checkpoints/external_weights/exp-1/external_weights_urls".into(), Value::Null),
        ("get_weights_info_by_tinker_path", json!({"tinker_path": p}), "POST", "/api/v1/weights_info".into(),
         json!({"tinker_path": p})),
        ("list_sessions", json!({}), "GET", "/api/v1/sessions?limit=20&offset=0&access_scope=owned".into(), Value::Null),
        ("get_session", json!({"session_id": "s1", "access_scope": "accessible"}), "GET",
         "/api/v1/sessions/s1?access_scope=accessible".into(), Value::Null),
        ("assign_session_project", json!({"session_id": "s1", "project_id": "pr"}), "PUT",
         "/api/v1/sessions/s1/project".into(), json!({"project_id": "pr"})),
        ("export_session_trace", json!({"session_id": "s1"}), "GET", "/api/v1/sessions/s1/trace_export".into(), Value::Null),
        ("search_sessions", json!({"request": {"display_name": "nightly", "statuses": [{"type": "client_finished", "reasons": ["errored"]}]}}),
         "POST", "/api/v1/sessions/search".into(),
         json!({"user_metadata": {}, "display_name": "nightly", "owner": {"type": "own"},
                "statuses": [{"type": "client_finished", "reasons": ["errored"]}], "limit": 50})),
        ("copy_weights", json!({"path": p, "ttl_seconds": 7200}), "POST", "/api/v1/copy_weights".into(),
         json!({"destination_project_id": "proj-config", "source_path": p, "ttl_seconds": 7200})),
        ("copy_weights", json!({"path": p, "destination_project_id": "proj-arg"}), "POST", "/api/v1/copy_weights".into(),
         json!({"destination_project_id": "proj-arg", "source_path": p})),
        ("get_sampler", json!({"sampler_id": "s:sample:0"}), "GET", "/api/v1/samplers/s:sample:0".into(), Value::Null),
        ("get_server_capabilities", json!({}), "GET", "/api/v1/get_server_capabilities".into(), Value::Null),
        ("get_audit_log", json!({}), "GET", "/api/v1/audit?event_type=all".into(), Value::Null),
        ("get_audit_log", json!({"event_type": "checkpoints", "day": "2026-07-01"}), "GET",
         "/api/v1/audit?event_type=checkpoints&day=2026-07-01".into(), Value::Null),
        ("get_billing_usage", json!({"starting_on": "2026-07-01T00:00:00Z", "ending_before": "2026-07-02T00:00:00+00:00"}),
         "GET", "/api/v1/billing/usage/events?starting_on=2026-07-01T00%3A00%3A00Z&ending_before=2026-07-02T00%3A00%3A00%2B00%3A00".into(), Value::Null),
        ("get_current_checkpoint_storage_usage", json!({}), "GET", "/api/v1/billing/usage/checkpoints/current".into(), Value::Null),
        ("get_current_checkpoint_storage_usage", json!({"project_id": "pr"}), "GET",
         "/api/v1/billing/usage/checkpoints/current?project_id=pr".into(), Value::Null),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (name, args, method, target, body) in cases {
        srv.clear();
        let out = rest
            .call_json(name, args.clone())
            .await
            .unwrap_or_else(|e| panic!("{name} {args}: {e}"));
        let api = srv.api();
        assert_eq!(api.len(), 1, "{name}: one request, got {api:?}");
        let r = &api[0];
        assert_eq!(r.method, method, "{name}");
        assert_eq!(r.target, target, "{name}");
        assert_eq!(r.json(), body, "{name}: body {}", r.body);
        assert!(
            !r.json().as_object().is_some_and(|o| o.contains_key("type")),
            "{name}: no type field"
        );
        assert_eq!(r.header("x-api-key"), Some("tml-rest-api-test"), "{name}");
        assert_eq!(
            r.header("x-idempotency-key").is_some(),
            method != "GET",
            "{name}: idempotency key on every non-GET"
        );
        match name {
            "copy_weights" => assert_eq!(out, json!("tinker://copy-1/weights/a")),
            "export_session_trace" => assert_eq!(out, json!("https://storage.example/t?sig=2")),
            n if n.starts_with("delete")
                || n.contains("publish")
                || n.starts_with("set_")
                || n.starts_with("assign") =>
            {
                assert_eq!(out, Value::Null, "{name}")
            }
            _ => assert!(out.is_object(), "{name}: {out}"),
        }
        covered.insert(name);
    }
    // whoami makes no request (its own test covers the decoding).
    srv.clear();
    let err = rest.call_json("whoami", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::User, "{err}");
    assert!(err.message.contains("whoami requires JWT auth"), "{err}");
    assert!(srv.api().is_empty(), "whoami sent {:?}", srv.api());
    covered.insert("whoami");
    let table = tinkex::core::rest::methods::table();
    for m in &table.methods {
        assert!(
            covered.contains(m.name.as_str()),
            "method {} not covered",
            m.name
        );
    }
    // Unknown fields and unknown discriminators are tolerated.
    let billing = rest
        .get_billing_usage("2026-07-01T00:00:00Z", "2026-07-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(billing.data.len(), 2);
}

/// 9.12: the audit log's 302 to a signed URL is followed with no credential and no SDK
/// header; the other pools keep credentials only for their own origin (tests/hardening.rs).
#[tokio::test]
async fn the_audit_redirect_is_followed_without_credentials_or_sdk_headers() {
    fn route(s: &Seen) -> Answer {
        if s.target.starts_with("/api/v1/audit") {
            return (
                302,
                vec![("location".into(), "/signed/audit.json?sig=abc".into())],
                String::new(),
            );
        }
        if s.target.starts_with("/signed/") {
            return ok(
                json!({"entries": [{"timestamp": "2026-07-01T00:00:00Z", "event": "project_created"}]}),
            );
        }
        canned(s)
    }
    let srv = Scripted::start(route).await;
    let admin = AdminClient::new(config(&srv.base)).unwrap();
    let log = admin.get_audit_log("all", None).await.unwrap();
    assert_eq!(log.entries[0].event, "project_created");
    let seen = srv.api();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].header("x-api-key"), Some("tml-rest-api-test"));
    let signed = &seen[1];
    assert_eq!(signed.target, "/signed/audit.json?sig=abc");
    for (k, _) in &signed.headers {
        assert!(
            !(k.starts_with("x-")
                || k == "user-agent"
                || k == "authorization"
                || k.starts_with("cf-")),
            "the signed URL received {k}"
        );
    }
    // The generic admin call offers only the admin methods.
    let e = admin.prepare("list_sessions", json!({})).unwrap_err();
    assert_eq!(e.kind, ArgErrorKind::InvalidArg);
}

/// 6.9: one X-Idempotency-Key for the whole call, reused by the HTTP layer and by the holder
/// loop's re-issue; the access token in a header, never in the body; no `type` field.
#[tokio::test]
async fn copy_weights_keeps_one_idempotency_key_across_every_retry_layer() {
    let srv = Scripted::start(canned).await;
    let mut retry = fast_retry();
    retry.http_max_retries = 1;
    let cfg = Config::builder()
        .api_key("tml-rest-api-test")
        .base_url(&srv.base)
        .telemetry(false)
        .project_id("proj-config")
        .retry(retry)
        .build()
        .unwrap();
    let service = ServiceClient::new(cfg).unwrap();
    // Startup first, so only copy_weights meets the 503s.
    service
        .create_rest_client()
        .get_server_capabilities()
        .await
        .unwrap();
    srv.clear();
    {
        let mut q = srv.queue.lock().unwrap();
        // HTTP layer: 503, retry (same call) 503 → the holder loop re-issues → 503 → 200.
        for _ in 0..3 {
            q.push_back((503, vec![], "{}".into()));
        }
    }
    let path = service
        .copy_weights(
            "tinker://run-1/weights/a",
            Some(3600),
            Some("secret-token-1"),
        )
        .await
        .unwrap();
    assert_eq!(path, "tinker://copy-1/weights/a");
    let seen = srv.api();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let key = seen[0].header("x-idempotency-key").unwrap().to_string();
    for s in &seen {
        assert_eq!(s.target, "/api/v1/copy_weights");
        assert_eq!(
            s.header("x-idempotency-key"),
            Some(key.as_str()),
            "one key for the call"
        );
        assert_eq!(
            s.header("x-tinker-weights-access-token"),
            Some("secret-token-1")
        );
        assert!(!s.body.contains("secret-token-1"), "token not in the body");
        assert_eq!(
            s.json(),
            json!({"destination_project_id": "proj-config", "source_path": "tinker://run-1/weights/a", "ttl_seconds": 3600})
        );
    }
    let counts: Vec<_> = seen
        .iter()
        .map(|s| s.header("x-stainless-retry-count").unwrap().to_string())
        .collect();
    assert_eq!(counts, ["0", "1", "0", "1"], "two calls of the HTTP layer");
    // Without a project anywhere: a user error before any request.
    srv.clear();
    let no_project = ServiceClient::new(
        Config::builder()
            .api_key("tml-rest-api-test")
            .base_url(&srv.base)
            .telemetry(false)
            .retry(fast_retry())
            .build()
            .unwrap(),
    )
    .unwrap();
    if std::env::var("TINKER_PROJECT_ID").is_err() {
        let e = no_project
            .copy_weights("tinker://run-1/weights/a", None, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::User, "{e}");
        let rest = RestClient::new(
            Config::builder()
                .api_key("tml-rest-api-test-2")
                .base_url(&srv.base)
                .telemetry(false)
                .build()
                .unwrap(),
        )
        .unwrap();
        let e = rest
            .copy_weights("tinker://run-1/weights/a", None, None, None)
            .await
            .unwrap_err();
        assert!(e.message.contains("destination_project_id"), "{e}");
        assert!(srv.api().is_empty());
    }
}

/// Client-side checks of the table and of 9.8 / 10.11: nothing is sent.
#[tokio::test]
async fn generic_call_argument_errors_are_typed_and_send_nothing() {
    let srv = Scripted::start(canned).await;
    let rest = RestClient::new(config(&srv.base)).unwrap();
    let bad: Vec<(&str, Value, ArgErrorKind, &str)> = vec![
        (
            "no_such_method",
            json!({}),
            ArgErrorKind::InvalidArg,
            "no_such_method",
        ),
        (
            "get_training_run",
            json!({}),
            ArgErrorKind::InvalidArg,
            "training_run_id",
        ),
        (
            "list_training_runs",
            json!({"limt": 3}),
            ArgErrorKind::InvalidJson,
            "limt",
        ),
        (
            "list_training_runs",
            json!({"limit": "3"}),
            ArgErrorKind::InvalidArg,
            "limit",
        ),
        (
            "list_training_runs",
            json!({"limit": 1.5}),
            ArgErrorKind::InvalidArg,
            "limit",
        ),
        (
            "list_sessions",
            json!({"access_scope": "everything"}),
            ArgErrorKind::InvalidArg,
            "access_scope",
        ),
        (
            "list_sessions",
            json!("x"),
            ArgErrorKind::InvalidJson,
            "object",
        ),
        (
            "get_audit_log",
            json!({"day": "2026-02-30"}),
            ArgErrorKind::InvalidArg,
            "day",
        ),
        (
            "get_billing_usage",
            json!({"starting_on": "2026-07-01T00:00:00Z"}),
            ArgErrorKind::InvalidArg,
            "ending_before",
        ),
        (
            "search_sessions",
            json!({"request": {"limit": 500}}),
            ArgErrorKind::InvalidArg,
            "limit",
        ),
        (
            "search_sessions",
            json!({"request": {"colour": "red"}}),
            ArgErrorKind::InvalidJson,
            "colour",
        ),
        (
            "copy_weights",
            json!({"path": 7}),
            ArgErrorKind::InvalidArg,
            "path",
        ),
    ];
    for (name, args, kind, mentions) in bad {
        let e = rest.prepare(name, args.clone()).unwrap_err();
        assert_eq!(e.kind, kind, "{name} {args}: {e}");
        assert!(e.message.contains(mentions), "{name}: {e}");
        let err = rest.call_json(name, args).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::User);
    }
    // Client-side path checks: bad tinker paths, a non-external path for 9.8.
    for (name, args) in [
        (
            "get_external_weights_urls",
            json!({"tinker_path": "tinker://run-1/weights/a"}),
        ),
        (
            "delete_checkpoint_from_tinker_path",
            json!({"tinker_path": "tinker://run-1/other/a"}),
        ),
        (
            "publish_checkpoint_from_tinker_path",
            json!({"tinker_path": "http://run-1/weights/a"}),
        ),
        (
            "get_training_run_by_tinker_path",
            json!({"tinker_path": "tinker://run-1/weights/a/b"}),
        ),
        ("get_training_run", json!({"training_run_id": "../x"})),
    ] {
        let e = rest.call_json(name, args).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::User, "{name}: {e}");
    }
    let e = rest
        .get_external_weights_urls("tinker://run-1/sampler_weights/a")
        .await
        .unwrap_err();
    assert!(e.message.contains("external_weights"), "{e}");
    assert!(srv.api().is_empty(), "sent {:?}", srv.api());
}

// ---- against the emulator ---------------------------------------------------------------

async fn journal(emu: &tinkex_emulator::RunningEmulator) -> Vec<(String, String)> {
    control_get(emu, "journal").await["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap_or("").to_string(),
                e["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn emu_config(emu: &tinkex_emulator::RunningEmulator, key: &str) -> Config {
    Config::builder()
        .api_key(key)
        .base_url(emu.base_url())
        .telemetry(false)
        .retry(fast_retry())
        .build()
        .unwrap()
}

/// 3.3: RestClient::new and AdminClient::new run client/config and dynamic_config, never
/// create_session or a heartbeat; ServiceClient::create_rest_client does not start a session.
#[tokio::test]
async fn session_less_holders_never_create_a_session() {
    let emu = emulator("rest-sessionless").await;
    let cfg = emu_config(&emu, "tml-sessionless");
    let rest = RestClient::new(cfg.clone()).unwrap();
    assert!(rest.is_sessionless());
    rest.list_training_runs(20, 0, AccessScope::Owned, None)
        .await
        .unwrap();
    rest.list_sessions(20, 0, AccessScope::Owned).await.unwrap();
    let admin = AdminClient::new(cfg.clone()).unwrap();
    admin
        .get_current_checkpoint_storage_usage(None)
        .await
        .unwrap();
    // The same configuration shares the cached holder: startup ran once.
    let again = RestClient::new(cfg).unwrap();
    again.get_server_capabilities().await.unwrap();
    // The service's REST client shares the service holder, no session either.
    let service = client_with(&emu, fast_retry());
    let shared = service.create_rest_client();
    assert!(!shared.is_sessionless());
    shared.list_user_checkpoints(10, 0).await.unwrap();
    assert_eq!(service.session_id(), None);
    let j = journal(&emu).await;
    let paths: Vec<&str> = j.iter().map(|(_, p)| p.as_str()).collect();
    assert!(!paths.contains(&"/api/v1/create_session"), "{paths:?}");
    assert!(!paths.contains(&"/api/v1/session_heartbeat"), "{paths:?}");
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "/api/v1/client/dynamic_config")
            .count(),
        1,
        "{paths:?}"
    );
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "/api/v1/client/config")
            .count(),
        2,
        "{paths:?}"
    );
    assert_eq!(
        control_get(&emu, "sessions").await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// 2.8: whoami decodes the JWT the holder holds (JWT mode); with a plain key it fails; no
/// request of its own.
#[tokio::test]
async fn whoami_reads_the_held_jwt() {
    let emu = emulator_with("rest-whoami", |c| {
        c.client_config
            .insert("pjwt_auth_enabled".into(), json!(true));
    })
    .await;
    let rest = RestClient::new(emu_config(&emu, "tml-whoami-user")).unwrap();
    let me = rest.whoami().await.unwrap();
    assert!(
        me.user_urn.starts_with("tml:organization_user:emu-"),
        "{me:?}"
    );
    assert!(
        me.org_urn.starts_with("tml:organization:emu-org-"),
        "{me:?}"
    );
    assert!(
        me.email
            .as_deref()
            .is_some_and(|e| e.ends_with("@tinkex.invalid")),
        "{me:?}"
    );
    let before = journal(&emu).await.len();
    let again = rest.call_json("whoami", json!({})).await.unwrap();
    assert_eq!(again["user_urn"], json!(me.user_urn));
    assert_eq!(
        journal(&emu).await.len(),
        before,
        "whoami sends nothing with a fresh JWT"
    );

    let plain = emulator("rest-whoami-plain").await;
    let rest = RestClient::new(emu_config(&plain, "tml-whoami-user")).unwrap();
    let e = rest.whoami().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
}

/// Every table method against the emulator's real state (decoding its answers), with the
/// state changes visible through later calls.
#[tokio::test]
async fn every_method_works_against_the_emulator() {
    let emu = emulator("rest-e2e").await;
    let mut cfg = emu_config(&emu, "tml-rest-e2e");
    cfg.retry.trace_export_poll_interval = Duration::from_millis(20);
    cfg.project_id = Some("proj-e2e".into());
    let service = ServiceClient::new(cfg.clone()).unwrap();
    let training = service
        .create_lora_training_client(BASE_MODEL, LoraOptions::default())
        .await
        .unwrap();
    let run = training.model_id().to_string();
    let saved = training.save_state("step-1").await.unwrap();
    let sampler_path = training.save_weights_for_sampler("s-1").await.unwrap();
    let session_id = service.session_id().unwrap();
    let rest = RestClient::new(cfg).unwrap();
    let call = |name: &'static str, args: Value| {
        let rest = rest.clone();
        async move {
            rest.call_json(name, args.clone())
                .await
                .unwrap_or_else(|e| panic!("{name} {args}: {e}"))
        }
    };
    let runs = call("list_training_runs", json!({})).await;
    assert!(runs["training_runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["training_run_id"] == json!(run)));
    assert_eq!(
        call("get_training_run", json!({"training_run_id": run})).await["training_run_id"],
        json!(run)
    );
    assert_eq!(
        call(
            "get_training_run_by_tinker_path",
            json!({"tinker_path": saved})
        )
        .await["training_run_id"],
        json!(run)
    );
    assert_eq!(
        call("list_checkpoints", json!({"training_run_id": run})).await["checkpoints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        call("list_user_checkpoints", json!({"limit": 10})).await["checkpoints"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    call(
        "set_checkpoint_ttl_from_tinker_path",
        json!({"tinker_path": saved, "ttl_seconds": 86400}),
    )
    .await;
    let ck = call("list_checkpoints", json!({"training_run_id": run})).await;
    assert!(
        ck["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["tinker_path"] == json!(saved) && c["expires_at"].is_string()),
        "{ck}"
    );
    call(
        "set_checkpoint_ttl_from_tinker_path",
        json!({"tinker_path": saved, "ttl_seconds": null}),
    )
    .await;
    let ck = call("list_checkpoints", json!({"training_run_id": run})).await;
    assert!(
        ck["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["tinker_path"] == json!(saved) && c["expires_at"].is_null()),
        "{ck}"
    );
    call(
        "publish_checkpoint_from_tinker_path",
        json!({"tinker_path": sampler_path}),
    )
    .await;
    let ck = call("list_checkpoints", json!({"training_run_id": run})).await;
    assert!(
        ck["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["tinker_path"] == json!(sampler_path) && c["public"] == json!(true)),
        "{ck}"
    );
    call(
        "unpublish_checkpoint_from_tinker_path",
        json!({"tinker_path": sampler_path}),
    )
    .await;
    let info = call(
        "get_weights_info_by_tinker_path",
        json!({"tinker_path": saved}),
    )
    .await;
    assert_eq!(info["base_model"], json!(BASE_MODEL));
    let sessions = call("list_sessions", json!({})).await;
    assert!(
        sessions["sessions"]
            .as_array()
            .unwrap()
            .contains(&json!(session_id)),
        "{sessions}"
    );
    let s = call("get_session", json!({"session_id": session_id})).await;
    assert!(
        s["training_run_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(run)),
        "{s}"
    );
    let found = call(
        "search_sessions",
        json!({"request": {"session_id": session_id}}),
    )
    .await;
    assert_eq!(
        found["sessions"][0]["session_id"],
        json!(session_id),
        "{found}"
    );
    control_post(
        &emu,
        "trace_export",
        json!({"pending_polls": 2, "fail": null}),
    )
    .await;
    let url = call("export_session_trace", json!({"session_id": session_id})).await;
    assert!(url.as_str().unwrap().contains("/_signed/"), "{url}");
    let copy = call("copy_weights", json!({"path": saved})).await;
    assert!(copy.as_str().unwrap().starts_with("tinker://"), "{copy}");
    let sampler_id = service
        .create_sampling_client(&sampler_path)
        .await
        .unwrap()
        .sampling_session_id()
        .to_string();
    assert_eq!(
        call("get_sampler", json!({"sampler_id": sampler_id})).await["base_model"],
        json!(BASE_MODEL)
    );
    assert!(call("get_server_capabilities", json!({})).await["supported_models"].is_array());
    let storage = call("get_current_checkpoint_storage_usage", json!({})).await;
    assert!(storage["data"].is_array(), "{storage}");
    let audit = call("get_audit_log", json!({})).await;
    assert!(audit["entries"].is_array(), "{audit}");
    let downloads = control_get(&emu, "signed_downloads").await;
    let list = downloads["downloads"]
        .as_array()
        .or_else(|| downloads.as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        !list.is_empty(),
        "the audit log came through a signed URL: {downloads}"
    );
    for d in &list {
        assert_eq!(d["api_key_header"], json!(false), "{d}");
        assert_eq!(d["authorization_header"], json!(false), "{d}");
    }
    let hour = 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end = now / hour * hour;
    let fmt = |t: u64| {
        let days = t / 86400;
        let (y, m, d) = civil(days as i64);
        format!("{y:04}-{m:02}-{d:02}T{:02}:00:00Z", (t % 86400) / 3600)
    };
    let usage = call(
        "get_billing_usage",
        json!({"starting_on": fmt(end - 24 * hour), "ending_before": fmt(end)}),
    )
    .await;
    assert!(usage["data"].is_array(), "{usage}");
    call(
        "assign_session_project",
        json!({"session_id": session_id, "project_id": "proj-e2e"}),
    )
    .await;
    call(
        "delete_checkpoint",
        json!({"training_run_id": run, "checkpoint_id": "weights/step-1"}),
    )
    .await;
    call(
        "delete_checkpoint_from_tinker_path",
        json!({"tinker_path": sampler_path}),
    )
    .await;
    let ck = call("list_checkpoints", json!({"training_run_id": run})).await;
    assert_eq!(ck["checkpoints"].as_array().unwrap().len(), 0, "{ck}");
    // 9.10: a failed export is an error carrying the server's text.
    control_post(
        &emu,
        "trace_export",
        json!({"pending_polls": 0, "fail": "disk full"}),
    )
    .await;
    let e = rest.export_session_trace(&session_id).await.unwrap_err();
    assert!(e.message.contains("disk full"), "{e}");
}

/// Days since 1970-01-01 → (year, month, day).
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// 3.3: a session-less holder's telemetry runs under `sessionless-{uuid}` and never emits
/// SESSION_START or SESSION_END, even after a failed ("fatal") call.
#[tokio::test]
async fn session_less_telemetry_has_a_synthetic_id_and_no_session_events() {
    let emu = emulator("rest-telemetry").await;
    let mut cfg = emu_config(&emu, "tml-rest-telemetry");
    cfg.telemetry = true;
    cfg.telemetry_settings.enabled = true;
    cfg.telemetry_settings.flush_interval = Duration::from_millis(20);
    let rest = RestClient::new(cfg).unwrap();
    let e = rest
        .get_training_run("no-such-run", AccessScope::Owned)
        .await
        .unwrap_err();
    assert_eq!(e.http_status, Some(404), "{e}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let batches = loop {
        let b = control_get(&emu, "telemetry").await["batches"].clone();
        let seen = b.as_array().is_some_and(|a| {
            a.iter()
                .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
                .any(|e| e["event"] != json!("SESSION_START"))
        });
        if seen {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "no telemetry: {b}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for b in batches.as_array().unwrap() {
        let id = b["session_id"].as_str().unwrap();
        assert!(id.starts_with("sessionless-") && id.len() > 20, "{id}");
        for e in b["events"].as_array().unwrap() {
            assert!(
                e["event"] != json!("SESSION_START") && e["event"] != json!("SESSION_END"),
                "{e}"
            );
        }
    }
}
