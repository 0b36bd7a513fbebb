//! The server side of PROTOCOL.md 8.2 (`retrieve_futures`) and 8.3 (`cancel_future`), on the
//! wire: cursors, trimming, ack-only polls, long polls, clone targets, payload deletion and
//! cancellation.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;

async fn sampler(api: &Api) -> String {
    let session = api.session().await;
    let s = api
        .ok("create_sampling_session", json!({"session_id": session, "sampling_session_seq_id": 0, "base_model": BASE_MODEL, "type": "create_sampling_session"}))
        .await;
    s["sampling_session_id"].as_str().unwrap().to_string()
}

async fn asample(api: &Api, sampler: &str, seq: i64) -> String {
    let body = json!({"num_samples": 1, "prompt": {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]},
        "sampling_params": {"max_tokens": 2, "temperature": 1.0, "top_k": -1, "top_p": 1.0},
        "sampling_session_id": sampler, "seq_id": seq, "prompt_logprobs": false, "topk_prompt_logprobs": 0,
        "topk_sample_logprobs": 0, "prompt_alt_tokens_k": 0, "type": "sample"});
    api.ok("asample", body).await["request_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn retrieve(
    api: &Api,
    sampler: &str,
    clone: i64,
    prev: i64,
    timeout: Option<f64>,
    retrieved: &[&str],
) -> Value {
    let mut body = json!({"target": {"type": "sampling_session", "sampling_session_id": sampler, "cloned_sampler_id": clone},
        "prev_cursor": prev, "retrieved_request_ids": retrieved});
    if let Some(t) = timeout {
        body["timeout"] = json!(t);
    }
    api.ok("retrieve_futures", body).await
}

fn ids(v: &Value) -> Vec<String> {
    v["completions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["request_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn completions_by_cursor_trimmed_when_acknowledged_and_per_clone() {
    let dir = state_dir("rfs-cursor");
    let emu = start(&dir, Duration::from_millis(300)).await;
    let api = Api::new(emu.base_url());
    let s = sampler(&api).await;
    // Nothing yet; this first poll also makes the emulator compute payload sizes for it.
    let none = retrieve(&api, &s, 0, 0, Some(0.0), &[]).await;
    assert!(ids(&none).is_empty());
    assert_eq!(none["cursor"], 0);
    let a = asample(&api, &s, 0).await;
    // A long poll (timeout omitted) returns as soon as the completion exists.
    let first = retrieve(&api, &s, 0, 0, None, &[]).await;
    assert_eq!(ids(&first), vec![a.clone()]);
    let c = &first["completions"][0];
    assert_eq!(c["state"], "finished");
    assert!(c["response_payload_uncompressed_size"].as_u64().unwrap() > 0);
    let cursor = first["cursor"].as_i64().unwrap();
    assert!(cursor > 0);
    // Re-reading from 0 still sees it (not acknowledged yet); from the cursor it is gone.
    assert_eq!(
        ids(&retrieve(&api, &s, 0, 0, Some(0.0), &[]).await),
        vec![a.clone()]
    );
    let t = Instant::now();
    let ack = retrieve(&api, &s, 0, cursor, Some(0.0), &[&a]).await;
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "ack-only polls return at once"
    );
    assert!(ids(&ack).is_empty());
    assert_eq!(ack["cursor"], cursor);
    // Acknowledged: trimmed (from 0 nothing is left), and the payload is deleted.
    assert!(ids(&retrieve(&api, &s, 0, 0, Some(0.0), &[]).await).is_empty());
    assert!(matches!(api.poll(&a, true).await, Poll::Status(410, _)));
    // A long poll with nothing to report holds, then answers empty with the same cursor.
    let t = Instant::now();
    let empty = retrieve(&api, &s, 0, cursor, None, &[]).await;
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(ids(&empty).is_empty());
    assert_eq!(empty["cursor"], cursor);
    // A clone's requests (seq_id block 1e9 × c) are reported to its own target only.
    let b = asample(&api, &s, 2_000_000_005).await;
    let clone = retrieve(&api, &s, 2, 0, None, &[]).await;
    assert_eq!(ids(&clone), vec![b]);
    assert!(ids(&retrieve(&api, &s, 0, cursor, Some(0.0), &[]).await).is_empty());
}

#[tokio::test]
async fn bad_targets_are_rejected_with_json_errors() {
    let dir = state_dir("rfs-bad");
    let emu = start(&dir, Duration::from_millis(100)).await;
    let api = Api::new(emu.base_url());
    let s = sampler(&api).await;
    let (status, body) = api
        .post(
            "retrieve_futures",
            json!({"target": {"type": "model", "sampling_session_id": s}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = api
        .post(
            "retrieve_futures",
            json!({"target": {"type": "sampling_session", "sampling_session_id": "nope:sample:9"}}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn cancel_future_fails_a_pending_sample_and_reports_it_failed() {
    let dir = state_dir("cancel");
    let emu = start(&dir, Duration::from_millis(200)).await;
    emu.control("POST", "delays", Some(&json!({"Sample": 30_000})))
        .await;
    let api = Api::new(emu.base_url());
    let s = sampler(&api).await;
    let a = asample(&api, &s, 0).await;
    assert!(matches!(api.poll(&a, true).await, Poll::TryAgain(_)));
    let (status, body) = api.post("cancel_future", json!({"request_id": a})).await;
    assert_eq!((status, &body["cancelled"]), (200, &json!(true)), "{body}");
    match api.poll(&a, true).await {
        Poll::Json(v) => {
            assert_eq!(v["category"], "user");
            assert!(v["error"].as_str().unwrap().contains("cancel"), "{v}");
        }
        _ => panic!("a cancelled future reads as failed"),
    }
    let events = retrieve(&api, &s, 0, 0, Some(0.0), &[]).await;
    assert_eq!(events["completions"][0]["state"], "failed");
    assert!(emu.state().futures.is_cancelled(&a));
    // Cancelling again (already finished) and unknown ids.
    let (status, body) = api.post("cancel_future", json!({"request_id": a})).await;
    assert_eq!((status, &body["cancelled"]), (200, &json!(false)));
    let (status, _) = api
        .post("cancel_future", json!({"request_id": "nope"}))
        .await;
    assert_eq!(status, 404);
}
