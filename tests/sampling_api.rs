//! The sampling API of issue 14 against the in-process emulator: `target_prompt_logprobs`,
//! `prompt_alt_tokens_k` and `record_stability_info` (PROTOCOL.md 7.1, 12.1), joining an
//! existing sampling session, sampler handles and their clones (20.4, 3.4, 12.2, 5.9) —
//! interoperable with the official SDK's handles — and the status introspection. Every wait
//! is on a condition with a deadline.

mod support;

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use support::*;
use tinkex::core::config::{ConfigInput, HeartbeatInput, TelemetryInput};
use tinkex::core::requests::{CreateSamplingClientInput, SampleInput};
use tinkex::core::sampling::{SamplerHandle, CLONE_SEQ_BLOCK};
use tinkex::core::types::{
    ModelInput, QueueState, SamplingParams, TensorData, TensorDtype, TensorValues,
};
use tinkex::core::{ErrorKind, SampleOptions, SamplingClient, ServiceClient};
use tinkex_emulator::sampling::Arrival;
use tinkex_emulator::RunningEmulator;

const KEY: &str = "tml-sampling-api-test";
const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `check` holds (polling every 10 ms), failing the test after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The local configuration of a clone: credentials only (the handle carries the base URL).
fn config_input(_emu: &RunningEmulator) -> ConfigInput {
    ConfigInput {
        api_key: Some(KEY.into()),
        telemetry: Some(false),
        ..ConfigInput::default()
    }
}

async fn original(emu: &RunningEmulator) -> (ServiceClient, SamplingClient) {
    let svc = client(emu);
    let sc = svc
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    (svc, sc)
}

fn clone_of(handle: &str, emu: &RunningEmulator) -> SamplingClient {
    SamplingClient::from_sampler_handle(
        handle,
        config_input(emu),
        tokio::runtime::Handle::current(),
    )
    .unwrap()
}

fn params() -> SamplingParams {
    SamplingParams {
        max_tokens: Some(2),
        ..Default::default()
    }
}

async fn sample(sc: &SamplingClient) -> tinkex::core::types::SampleResponse {
    sc.sample(
        ModelInput::from_ints(vec![3, 4, 5]),
        1,
        params(),
        SampleOptions::default(),
    )
    .await
    .unwrap()
}

async fn arrivals(emu: &RunningEmulator) -> Vec<Arrival> {
    serde_json::from_value(control_get(emu, "sampling_capacity").await["arrivals"].clone()).unwrap()
}

async fn journal_paths(emu: &RunningEmulator) -> Vec<(String, u64)> {
    control_get(emu, "journal").await["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn decode_json(handle: &str) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(handle)
        .expect("a handle is padded base64url");
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_round_trip_makes_a_clone_of_the_same_sampler() {
    let emu = emulator("handle-round-trip").await;
    let (svc, sc) = original(&emu).await;
    sample(&sc).await;
    let handle = sc.get_sampler_handle().unwrap();
    // The SDK's compact JSON, its field order, no credentials.
    use base64::Engine;
    let text = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE
            .decode(&handle)
            .unwrap(),
    )
    .unwrap();
    assert!(
        text.starts_with(r#"{"session_id":""#)
            && text.contains(r#","holder":{"base_url":""#)
            && text.contains(
                r#","default_headers_overrides":{},"client_config":{"pjwt_auth_enabled":false,"#
            )
            && text.contains(
                r#""api_key":null},"base_model":"Qwen/Qwen3-8B","record_stability_info":false}"#
            ),
        "{text}"
    );
    let decoded = SamplerHandle::decode(&handle).unwrap();
    assert_eq!(Some(decoded.session_id.clone()), svc.session_id());
    assert_eq!(decoded.sampling_session_id, sc.sampling_session_id());
    assert_eq!(
        decoded.holder.base_url,
        emu.base_url().trim_end_matches('/')
    );

    let clone = clone_of(&handle, &emu);
    assert!(clone.is_clone() && !sc.is_clone());
    assert_eq!(sc.cloned_sampler_id(), Some(0));
    let c = clone
        .cloned_sampler_id()
        .expect("random clone id at creation");
    assert!((1..=1_000_000_000).contains(&c), "{c}");
    assert_eq!(clone.sampling_session_id(), sc.sampling_session_id());
    assert_eq!(clone.base_model(), sc.base_model());
    // A clone's handle names the same sampler (and session).
    assert_eq!(
        SamplerHandle::decode(&clone.get_sampler_handle().unwrap()).unwrap(),
        decoded
    );
    let out = sample(&clone).await;
    assert_eq!(out.sequences.len(), 1);
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|a| a.seq_id)
        .collect();
    assert_eq!(
        seqs,
        vec![0, c * CLONE_SEQ_BLOCK],
        "clone seq_ids start at c × 1e9"
    );
    // No client/config, dynamic config or session creation for the clone.
    let paths = journal_paths(&emu).await;
    for p in [
        "/api/v1/client/config",
        "/api/v1/client/dynamic_config",
        "/api/v1/create_session",
    ] {
        assert_eq!(
            paths.iter().filter(|(q, _)| q == p).count(),
            1,
            "{p} only by the original: {paths:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_heartbeats_and_reports_telemetry_under_the_original_session() {
    let emu = emulator("handle-shadow-loops").await;
    let (svc, sc) = original(&emu).await;
    let session_id = svc.session_id().unwrap();
    let cfg = ConfigInput {
        telemetry: Some(true),
        telemetry_settings: Some(TelemetryInput {
            flush_interval_ms: Some(20),
            ..Default::default()
        }),
        heartbeat: Some(HeartbeatInput {
            interval_ms: Some(20),
            ..Default::default()
        }),
        ..config_input(&emu)
    };
    let _clone = SamplingClient::from_sampler_handle(
        &sc.get_sampler_handle().unwrap(),
        cfg,
        tokio::runtime::Handle::current(),
    )
    .unwrap();
    wait_until("two heartbeats of the clone", || async {
        journal_paths(&emu)
            .await
            .iter()
            .filter(|(p, s)| p == "/api/v1/session_heartbeat" && *s == 200)
            .count()
            >= 2
    })
    .await;
    wait_until("the clone's SESSION_START", || async {
        let t = control_get(&emu, "telemetry").await;
        t["batches"].as_array().unwrap().iter().any(|b| {
            b["session_id"] == json!(session_id)
                && b["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["event"] == "SESSION_START")
        })
    })
    .await;
    // The original (telemetry off, 10 s heartbeat) sent none of these.
    assert_eq!(
        journal_paths(&emu)
            .await
            .iter()
            .filter(|(p, _)| p == "/api/v1/create_session")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_and_clones_sample_concurrently_without_seq_id_collisions() {
    let emu = emulator("handle-concurrent").await;
    let (_svc, sc) = original(&emu).await;
    let handle = sc.get_sampler_handle().unwrap();
    let clone_a = clone_of(&handle, &emu);
    let clone_b = clone_of(&handle, &emu);
    let n = 6;
    let mut futs = Vec::new();
    for client in [&sc, &clone_a, &clone_b] {
        for _ in 0..n {
            futs.push(client.sample(
                ModelInput::from_ints(vec![3, 4, 5]),
                1,
                params(),
                SampleOptions::default(),
            ));
        }
    }
    // Each ApiFuture runs on its own from creation: awaiting in turn still runs all at once.
    for f in futs {
        f.await.unwrap();
    }
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter(|a| a.sampling_session_id.as_deref() == Some(sc.sampling_session_id()))
        .filter_map(|a| a.seq_id)
        .collect();
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3 * n, "no seq_id was sent twice: {seqs:?}");
    for c in [
        0,
        clone_a.cloned_sampler_id().unwrap(),
        clone_b.cloned_sampler_id().unwrap(),
    ] {
        let block: Vec<i64> = unique
            .iter()
            .copied()
            .filter(|s| s / CLONE_SEQ_BLOCK == c)
            .collect();
        let want: Vec<i64> = (0..n as i64).map(|i| c * CLONE_SEQ_BLOCK + i).collect();
        assert_eq!(block, want, "clone {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_join_the_sampling_session_when_the_flag_is_on() {
    let emu = emulator("handle-join").await;
    control_post(
        &emu,
        "flags",
        json!({"client_config": {"sample_join_sampling_session": true}}),
    )
    .await;
    let (_svc, sc) = original(&emu).await;
    sample(&sc).await;
    let handle = sc.get_sampler_handle().unwrap();
    assert_eq!(
        decode_json(&handle)["holder"]["client_config"]["sample_join_sampling_session"],
        true
    );
    let a = clone_of(&handle, &emu);
    let b = clone_of(&handle, &emu);
    assert_eq!(
        a.cloned_sampler_id(),
        None,
        "no I/O before the first sample"
    );
    let joins = |paths: &[(String, u64)]| {
        paths
            .iter()
            .filter(|(p, _)| p == "/api/v1/join_sampling_session")
            .count()
    };
    assert_eq!(joins(&journal_paths(&emu).await), 0);
    let submit = |c: &SamplingClient| {
        c.sample(
            ModelInput::from_ints(vec![3, 4, 5]),
            1,
            params(),
            SampleOptions::default(),
        )
    };
    let futs: Vec<_> = (0..3)
        .map(|_| submit(&a))
        .chain((0..2).map(|_| submit(&b)))
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    let mut ids = vec![
        a.cloned_sampler_id().unwrap(),
        b.cloned_sampler_id().unwrap(),
    ];
    ids.sort();
    assert_eq!(
        ids,
        vec![1, 2],
        "client counters from the server, original = 0"
    );
    assert_eq!(joins(&journal_paths(&emu).await), 2, "one join per clone");
    let mut seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|s| s.seq_id)
        .collect();
    seqs.sort();
    let ca = a.cloned_sampler_id().unwrap() * CLONE_SEQ_BLOCK;
    let cb = b.cloned_sampler_id().unwrap() * CLONE_SEQ_BLOCK;
    let mut want = vec![0, ca, ca + 1, ca + 2, cb, cb + 1];
    want.sort();
    assert_eq!(seqs, want);
}

#[tokio::test]
async fn garbage_handles_are_typed_user_errors() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
    let good = json!({
        "session_id": "s1", "sampling_session_id": "s1:sample:0",
        "holder": {"base_url": "http://127.0.0.1:1", "default_headers_overrides": {},
                   "client_config": {}, "client_dynamic_config": {}, "api_key": null},
        "base_model": "m", "record_stability_info": false
    });
    assert!(SamplerHandle::decode(&b64(&good.to_string())).is_ok());
    let with = |path: &[&str], v: Value| {
        let mut j = good.clone();
        let mut at = &mut j;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v;
        b64(&j.to_string())
    };
    let cases = vec![
        ("empty", String::new()),
        ("not base64", "!!!not base64!!!".to_string()),
        ("not JSON", b64("{nope")),
        ("a list", b64("[]")),
        ("too long", "A".repeat(70_000)),
        ("ftp URL", with(&["holder", "base_url"], json!("ftp://h/x"))),
        ("not a URL", with(&["holder", "base_url"], json!("::"))),
        ("slash in id", with(&["session_id"], json!("a/../b"))),
        ("empty id", with(&["sampling_session_id"], json!(""))),
        ("unknown field", with(&["extra"], json!(1))),
        (
            "bad flag type",
            with(
                &["holder", "client_config", "sample_no_retries"],
                json!("yes"),
            ),
        ),
        ("id not a string", with(&["session_id"], json!(5))),
    ];
    for (what, h) in cases {
        let e = SamplerHandle::decode(&h).expect_err(what);
        assert_eq!(e.kind, ErrorKind::User, "{what}: {e}");
        assert!(e.message.contains("invalid sampler handle"), "{what}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_prompt_logprobs_and_prompt_alt_tokens_are_computed() {
    let emu = emulator("sampling-targets").await;
    let (_svc, sc) = original(&emu).await;
    let prompt = vec![5, 6, 7, 8];
    let dense = TensorData {
        data: TensorValues::Int64(vec![6, -1, 7, 100, 8, -1]),
        dtype: TensorDtype::Int64,
        shape: Some(vec![3, 2]),
        sparse_crow_indices: None,
        sparse_col_indices: None,
    };
    let greedy = SamplingParams {
        max_tokens: Some(1),
        temperature: 0.0,
        ..Default::default()
    };
    let r = sc
        .sample(
            ModelInput::from_ints(prompt.clone()),
            1,
            greedy.clone(),
            SampleOptions {
                prompt_logprobs: true,
                topk_prompt_logprobs: 1,
                target_prompt_logprobs: Some(dense),
                prompt_alt_tokens_k: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lp = r.prompt_logprobs.clone().unwrap();
    let t = r.target_prompt_logprobs.clone().expect("target logprobs");
    assert_eq!(t.shape, Some(vec![3, 2]));
    let TensorValues::Float32(v) = &t.data else {
        panic!("float32 expected: {t:?}")
    };
    // Row i scores prompt position i + 1: the prompt's own tokens match prompt_logprobs.
    assert_eq!(v[0], lp[1].unwrap());
    assert_eq!(v[2], lp[2].unwrap());
    assert_eq!(v[4], lp[3].unwrap());
    assert_eq!((v[1], v[5]), (0.0, 0.0), "-1 cells are 0.0");
    assert!(v[3] < 0.0, "an arbitrary id has a real logprob");
    let alt = r.prompt_alt_tokens.clone().expect("prompt_alt_tokens");
    assert_eq!(alt.tokens.shape, Some(vec![3, 3]));
    assert_eq!(alt.logprobs.shape, Some(vec![3, 3]));
    let (TensorValues::Int64(ids), TensorValues::Float32(alps)) =
        (&alt.tokens.data, &alt.logprobs.data)
    else {
        panic!("int64 ids and float32 logprobs: {alt:?}")
    };
    // Greedy draws are the most likely token at each position.
    let topk = r.topk_prompt_logprobs.clone().unwrap();
    for row in 0..3 {
        let (best, best_lp) = topk[row + 1].as_ref().unwrap()[0];
        for j in 0..3 {
            assert_eq!(ids[row * 3 + j], best, "row {row}");
            assert!((alps[row * 3 + j] - best_lp).abs() < 1e-5);
        }
    }

    // Sparse CSR keeps its layout: only the named cells are returned.
    let sparse = TensorData {
        data: TensorValues::Int64(vec![6, 8]),
        dtype: TensorDtype::Int64,
        shape: Some(vec![3, 2]),
        sparse_crow_indices: Some(vec![0, 1, 1, 2]),
        sparse_col_indices: Some(vec![0, 1]),
    };
    let r2 = sc
        .sample(
            ModelInput::from_ints(prompt.clone()),
            1,
            greedy.clone(),
            SampleOptions {
                target_prompt_logprobs: Some(sparse),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t2 = r2.target_prompt_logprobs.unwrap();
    assert_eq!(t2.sparse_crow_indices, Some(vec![0, 1, 1, 2]));
    assert_eq!(t2.sparse_col_indices, Some(vec![0, 1]));
    assert_eq!(
        t2.data,
        TensorValues::Float32(vec![lp[1].unwrap(), lp[3].unwrap()])
    );
    assert!(r2.prompt_alt_tokens.is_none());

    // Client-side checks (7.1): int64, 2-D; the server checks the row count.
    let bad = |t: TensorData| SampleOptions {
        target_prompt_logprobs: Some(t),
        ..Default::default()
    };
    for (what, t) in [
        ("float32", TensorData::from_f32(vec![1.0, 2.0, 3.0])),
        ("1-D", TensorData::from_i64(vec![6, 7, 8])),
    ] {
        let e = sc
            .sample(
                ModelInput::from_ints(prompt.clone()),
                1,
                greedy.clone(),
                bad(t),
            )
            .await
            .expect_err(what);
        assert_eq!(e.kind, ErrorKind::User, "{what}: {e}");
        assert!(e.message.contains("target_prompt_logprobs"), "{what}: {e}");
    }
    let wrong_rows = TensorData {
        shape: Some(vec![2, 1]),
        ..TensorData::from_i64(vec![6, 7])
    };
    let e = sc
        .sample(ModelInput::from_ints(prompt), 1, greedy, bad(wrong_rows))
        .await
        .expect_err("the server wants len(prompt) - 1 rows");
    assert!(e.message.contains("rows"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_stability_info_is_sent_on_every_sample_and_sessions_can_be_joined() {
    let emu = emulator("sampling-stability").await;
    let svc = client(&emu);
    let recording = svc
        .create_sampling_client_with(&CreateSamplingClientInput {
            base_model: Some(BASE_MODEL.into()),
            record_stability_info: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(recording.record_stability_info());
    sample(&recording).await;
    recording
        .compute_logprobs(ModelInput::from_ints(vec![1, 2, 3]))
        .await
        .unwrap();
    // A client on an existing sampling session (here one nobody sampled from: like the
    // SDK's, such a client is not a clone and draws seq_ids from 0): no
    // create_sampling_session, the base model is looked up, the setting is per client.
    let fresh = svc
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let id = fresh.sampling_session_id().to_string();
    let plain = svc
        .create_sampling_client_with(&CreateSamplingClientInput {
            sampling_session_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(plain.sampling_session_id(), id);
    assert_eq!(plain.base_model(), BASE_MODEL);
    assert_eq!(
        plain.cloned_sampler_id(),
        Some(0),
        "not a clone, as in the SDK"
    );
    sample(&plain).await;
    let flags: Vec<Option<bool>> = arrivals(&emu)
        .await
        .iter()
        .map(|a| a.record_stability_info)
        .collect();
    assert_eq!(flags, vec![Some(true), Some(true), Some(false)]);
    let paths = journal_paths(&emu).await;
    assert_eq!(
        paths
            .iter()
            .filter(|(p, _)| p == "/api/v1/create_sampling_session")
            .count(),
        2
    );
    assert!(paths
        .iter()
        .any(|(p, _)| p.starts_with("/api/v1/samplers/")));
    // Exactly one target.
    let e = svc
        .create_sampling_client_with(&CreateSamplingClientInput {
            model_path: Some("tinker://x/sampler_weights/y".into()),
            sampling_session_id: Some(id),
            ..Default::default()
        })
        .await
        .expect_err("two targets");
    assert_eq!(e.kind, ErrorKind::User);
    let input: SampleInput = serde_json::from_value(json!({
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
        "target_prompt_logprobs": {"data": [2, 3], "dtype": "int64", "shape": [2, 1]},
        "prompt_alt_tokens_k": 2
    }))
    .unwrap();
    let r = plain.sample_with(input).await.unwrap();
    assert!(r.target_prompt_logprobs.is_some() && r.prompt_alt_tokens.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_queue_state_and_operations_in_flight() {
    let emu = emulator("sampling-status").await;
    let svc = client(&emu);
    let before = svc.status_report();
    assert_eq!(before.session_id, None);
    assert_eq!(before.last_progress_ms_ago, None);
    assert_eq!(before.queue_state, QueueState::Active);
    let sc = svc
        .create_sampling_client_for_base_model(BASE_MODEL)
        .await
        .unwrap();
    let idle = sc.status_report();
    assert_eq!(idle.session_id, svc.session_id());
    assert_eq!((idle.operations_in_flight, idle.operations_waiting), (0, 0));
    assert!(idle.last_progress_ms_ago.is_some());
    assert!(idle.telemetry.is_none(), "telemetry is off");
    control_post(
        &emu,
        "queue_state",
        json!({"queue_state": "paused_capacity", "reason": "maintenance window"}),
    )
    .await;
    control_post(&emu, "delays", json!({"Sample": 60_000})).await;
    let pending = sc.sample(
        ModelInput::from_ints(vec![3, 4, 5]),
        1,
        params(),
        SampleOptions::default(),
    );
    wait_until(
        "the paused state in the sampling client's status",
        || async {
            let s = sc.status_report();
            s.operations_in_flight == 1
                && s.queue_state == QueueState::PausedCapacity
                && s.queue_state_reason.as_deref() == Some("maintenance window")
        },
    )
    .await;
    let s = sc.status_report();
    assert_eq!(s.operations_waiting, 0, "accepted by the server");
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["queue_state"], "paused_capacity");
    for key in [
        "session_id",
        "queue_state_reason",
        "billing_paused_ms",
        "backoff_remaining_ms",
        "last_progress_ms_ago",
        "operations_waiting",
        "operations_in_flight",
        "telemetry",
        "dispatch",
    ] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let whole = svc.status_report();
    assert!(whole.operations_in_flight >= 1);
    assert_eq!(whole.queue_state, QueueState::PausedCapacity);
    pending.cancel();
    wait_until("the cancelled sample to leave the status", || async {
        sc.status_report().operations_in_flight == 0
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// Interoperability with the official SDK (target/official-sdk-venv)
// ------------------------------------------------------------------------------------------

fn official_python() -> Option<PathBuf> {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/official-sdk-venv/bin/python");
    py.exists().then_some(py)
}

/// Runs `script` with the official SDK's Python, `args` after it; returns stdout (asserting
/// success).
async fn run_python(py: PathBuf, script: &'static str, args: Vec<String>) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(py)
                .arg("-c")
                .arg(script)
                .args(args)
                .env("TINKER_TELEMETRY", "0")
                .env_remove("TINKER_API_KEY")
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("python finished in time")
    .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Rebuilds a handle's state with the SDK's own classes and prints the SDK's handle for it
/// (`SamplingClient.get_sampler_handle`, unbound, on a stand-in exposing `_pickle_state`).
const SDK_REENCODE: &str = r#"
import base64, dataclasses, json, sys, types
from tinker.lib.internal_client_holder import _ShadowHolderConfig
from tinker.lib.public_interfaces.sampling_client import SamplingClient, _SamplingClientPickleState
from tinker import types as types_
fields = json.loads(base64.urlsafe_b64decode(sys.argv[1]))
holder = _ShadowHolderConfig(**fields.pop("holder"))
# As a live SDK holder makes them: the flags in the SDK's own model_dump order and content.
holder = dataclasses.replace(
    holder,
    client_config=types_.ClientConfigResponse.model_validate(holder.client_config).model_dump(),
    client_dynamic_config=types_.ClientDynamicConfigResponse.model_validate(
        holder.client_dynamic_config).model_dump(),
)
state = _SamplingClientPickleState(**fields, holder=dataclasses.replace(holder, api_key="tml-secret"))
print(SamplingClient.get_sampler_handle(types.SimpleNamespace(_pickle_state=lambda: state)))
"#;

/// Rebuilds a clone from a handle with the SDK's `from_sampler_handle` and samples twice,
/// printing the clone id.
const SDK_CLONE_SAMPLES: &str = r#"
import sys
from tinker import types
from tinker.lib.public_interfaces.sampling_client import SamplingClient
c = SamplingClient.from_sampler_handle(sys.argv[1], api_key=sys.argv[2])
for _ in range(2):
    r = c.sample(types.ModelInput.from_ints([3, 4, 5]), 1, types.SamplingParams(max_tokens=2)).result()
    assert len(r.sequences) == 1
print(c._cloned_sampler_id)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_interoperate_with_the_official_sdk() {
    let Some(py) = official_python() else {
        eprintln!("skipped: the official SDK is not installed in target/official-sdk-venv");
        return;
    };
    let emu = emulator("handle-official").await;
    let (_svc, sc) = original(&emu).await;
    let ours = sc
        .with_record_stability_info(true)
        .get_sampler_handle()
        .unwrap();
    // The SDK's encoder, fed our handle's content, produces our handle byte for byte (and
    // drops the api_key it was given).
    let theirs = run_python(py.clone(), SDK_REENCODE, vec![ours.clone()]).await;
    let theirs = theirs.trim().to_string();
    assert_eq!(theirs, ours);
    // A handle the SDK made builds a working clone here.
    let clone = clone_of(&theirs, &emu);
    assert!(clone.record_stability_info());
    sample(&clone).await;
    // Our handle builds a working clone in the SDK, sampling alongside ours.
    let (sdk_out, _) = tokio::join!(
        run_python(py, SDK_CLONE_SAMPLES, vec![ours, KEY.to_string()]),
        sample(&sc),
    );
    let sdk_clone: i64 = sdk_out.trim().parse().unwrap();
    assert!(sdk_clone >= 1);
    let seqs: Vec<i64> = arrivals(&emu)
        .await
        .iter()
        .filter_map(|a| a.seq_id)
        .collect();
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "no seq_id collision: {seqs:?}");
    assert_eq!(
        seqs.iter()
            .filter(|s| **s / CLONE_SEQ_BLOCK == sdk_clone)
            .count(),
        2
    );
}
