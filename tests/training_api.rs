//! The training API of issue 14 end to end against the in-process emulator: optimizer
//! families (PROTOCOL.md 6.1, 6.4, 10.8), full save bodies (6.5-6.7), create-via-load extras
//! and resume (6.8, 11.1), every loss of 10.4, server-side custom losses (5.10, 11.6), DMel
//! chunks (10.1, 20.1) and console URLs (20.2). Wire bodies are checked on the bytes a
//! recording proxy saw between the client and the emulator.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use support::*;
use tinkex::core::requests::{
    CreateLoraTrainingClientInput, CreateTrainingClientFromStateInput, OptimStepInput,
    SaveStateInput, SaveWeightsAndGetSamplingClientInput, SaveWeightsExternalInput,
    SaveWeightsForSamplerInput,
};
use tinkex::core::types::{
    tensor_container_dim, AdamParams, Chunk, CustomLossInput, Datum, DimuonParams, LossConfigValue,
    ModelInput, OptimizerConfig, TensorData,
};
use tinkex::core::{Config, ErrorKind, LoraOptions, ServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ------------------------------------------------------------------------------------------
// A recording proxy (every request's path and body)
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    body: Vec<u8>,
}

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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = emu.addr();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(relay(s, upstream, seen2.clone()));
            }
        });
        Recorder {
            base_url: format!("http://{addr}"),
            seen,
            task,
        }
    }

    /// JSON bodies sent to `endpoint` (the path after `/api/v1/`), in order.
    fn bodies(&self, endpoint: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.split('?').next() == Some(&format!("/api/v1/{endpoint}")))
            .map(|s| serde_json::from_slice(&s.body).unwrap_or(Value::Null))
            .collect()
    }

    fn count(&self, endpoint: &str) -> usize {
        self.bodies(endpoint).len()
    }
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

async fn relay(client: TcpStream, upstream: std::net::SocketAddr, seen: Arc<Mutex<Vec<Seen>>>) {
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
        let (end, len) = loop {
            if let Some(end) = head_end(&buf) {
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
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        seen.lock().unwrap().push(Seen {
            path,
            body: buf[end..end + len].to_vec(),
        });
        if uw.write_all(&buf[..end + len]).await.is_err() {
            return;
        }
        buf = buf[end + len..].to_vec();
    }
}

fn client_of(rec: &Recorder) -> ServiceClient {
    let config = Config::builder()
        .api_key("tml-training-api-test")
        .base_url(&rec.base_url)
        .telemetry(false)
        .retry(fast_retry())
        .build()
        .unwrap();
    ServiceClient::new(config).unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rl_datum(tokens: &[i64]) -> Datum {
    let mut d = datum(tokens);
    let n = tokens.len() - 1;
    d.loss_fn_inputs
        .insert("logprobs".into(), TensorData::from_f32(vec![-2.0; n]));
    d.loss_fn_inputs
        .insert("advantages".into(), TensorData::from_f32(vec![0.5; n]));
    d
}

async fn lora(
    service: &ServiceClient,
    optimizer: Option<OptimizerConfig>,
) -> tinkex::core::TrainingClient {
    service
        .create_lora_training_client_with(&CreateLoraTrainingClientInput {
            base_model: BASE_MODEL.into(),
            lora_config: None,
            user_metadata: Some(meta(&[("team", "rl")])),
            optimizer,
        })
        .await
        .unwrap()
}

// ------------------------------------------------------------------------------------------
// Optimizers (6.1, 6.4, 10.8)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_model_sends_metadata_and_optimizer_and_dimuon_steps_train() {
    let emu = emulator("train-api-dimuon").await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = lora(&service, Some(OptimizerConfig::dimuon())).await;
    let body = &rec.bodies("create_model")[0];
    assert_eq!(body["user_metadata"], json!({"team": "rl"}));
    assert_eq!(
        body["optimizer_config"],
        json!({"type": "dimuon", "version": 1})
    );
    assert_eq!(
        training.get_info().optimizer_config,
        OptimizerConfig::dimuon(),
        "get_info reports the model's optimizer"
    );
    // The run keeps its metadata (REST).
    let run = service
        .create_rest_client()
        .get_training_run(training.model_id(), Default::default())
        .await
        .unwrap();
    assert_eq!(run.user_metadata, Some(meta(&[("team", "rl")])));
    // weights_info reports the optimizer of a saved checkpoint.
    let data = batch();
    let first = training
        .forward_backward(data.clone(), "cross_entropy", None)
        .await
        .unwrap();
    let step: OptimStepInput =
        serde_json::from_value(json!({"type": "dimuon", "learning_rate": 0.02})).unwrap();
    let r = training.optim_step_with(step).await.unwrap();
    assert_eq!(r.metrics.unwrap()["step:max"], 1.0);
    let sent = &rec.bodies("optim_step")[0];
    assert_eq!(
        sent["optimizer_params"],
        json!({"type": "dimuon", "learning_rate": 0.02, "grad_clip_norm": 0.0, "beta1": 0.9})
    );
    assert!(sent.get("adam_params").is_none());
    for _ in 0..8 {
        training
            .forward_backward(data.clone(), "cross_entropy", None)
            .await
            .unwrap();
        training
            .optim_step_dimuon(DimuonParams {
                learning_rate: 0.02,
                grad_clip_norm: 1.0,
                beta1: 0.9,
            })
            .await
            .unwrap();
    }
    let last = training.forward(data, "cross_entropy", None).await.unwrap();
    assert!(
        last.metrics["loss:sum"] < first.metrics["loss:sum"],
        "dimuon steps lower the loss: {} -> {}",
        first.metrics["loss:sum"],
        last.metrics["loss:sum"]
    );
    // Adam parameters on a Dimuon model: the server's user error.
    let e = training
        .optim_step(AdamParams::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert!(e.message.contains("dimuon"), "{e}");
    // NaN/Inf and out-of-range Dimuon values never leave the client.
    let before = rec.count("optim_step");
    for p in [
        DimuonParams {
            learning_rate: f64::NAN,
            grad_clip_norm: 0.0,
            beta1: 0.9,
        },
        DimuonParams {
            learning_rate: 0.1,
            grad_clip_norm: f64::INFINITY,
            beta1: 0.9,
        },
        DimuonParams {
            learning_rate: -0.1,
            grad_clip_norm: 0.0,
            beta1: 0.9,
        },
        DimuonParams {
            learning_rate: 0.1,
            grad_clip_norm: 0.0,
            beta1: 1.0,
        },
    ] {
        let e = training.optim_step_dimuon(p).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::User, "{e}");
    }
    assert_eq!(rec.count("optim_step"), before);
    // Unknown families pass through (the emulator refuses them by name); a bad dimuon
    // version is refused client-side.
    let other = OptimizerConfig {
        kind: "lion".into(),
        extra: serde_json::from_value(json!({"betas": [0.9, 0.99]})).unwrap(),
    };
    let e = service
        .create_lora_training_client_with(&CreateLoraTrainingClientInput {
            base_model: BASE_MODEL.into(),
            lora_config: None,
            user_metadata: None,
            optimizer: Some(other),
        })
        .await
        .unwrap_err();
    assert!(e.message.contains("lion"), "{e}");
    assert_eq!(
        rec.bodies("create_model").last().unwrap()["optimizer_config"],
        json!({"type": "lion", "betas": [0.9, 0.99]})
    );
    let bad = OptimizerConfig {
        kind: "dimuon".into(),
        extra: serde_json::from_value(json!({"version": 2})).unwrap(),
    };
    let n = rec.count("create_model");
    let e = service
        .create_model_full(BASE_MODEL, LoraOptions::default(), None, bad)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert_eq!(rec.count("create_model"), n);
}

// ------------------------------------------------------------------------------------------
// Saving (6.5-6.7) and ephemeral sampling clients (6.6)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn save_bodies_external_export_and_inflight_sampling() {
    let emu = emulator("train-api-save").await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = lora(&service, None).await;
    let path = training
        .save_state_with(SaveStateInput {
            path: "s1".into(),
            ttl_seconds: Some(7200),
            overwrite: true,
            user_metadata: Some(meta(&[("epoch", "3")])),
        })
        .await
        .unwrap();
    assert!(path.ends_with("/weights/s1"), "{path}");
    let b = &rec.bodies("save_weights")[0];
    assert_eq!(b["path"], "s1");
    assert_eq!(b["ttl_seconds"], 7200);
    assert_eq!(b["overwrite"], true);
    assert_eq!(b["user_metadata"], json!({"epoch": "3"}));
    assert_eq!(b["type"], "save_weights");
    let sp = training
        .save_weights_for_sampler_with(&SaveWeightsForSamplerInput {
            path: "w1".into(),
            ttl_seconds: Some(3600),
            user_metadata: Some(meta(&[("k", "v")])),
        })
        .await
        .unwrap();
    assert!(sp.ends_with("/sampler_weights/w1"), "{sp}");
    let b = &rec.bodies("save_weights_for_sampler")[0];
    assert_eq!(
        (
            &b["path"],
            &b["ttl_seconds"],
            &b["user_metadata"],
            &b["kind"]
        ),
        (
            &json!("w1"),
            &json!(3600),
            &json!({"k": "v"}),
            &json!("snapshot")
        )
    );
    // External export.
    let ext = training
        .save_weights_external_with(&SaveWeightsExternalInput {
            path: "hf".into(),
            ttl_seconds: None,
            age_encryption_recipients: Some(vec!["age1qqqqexample".into()]),
        })
        .await
        .unwrap();
    assert!(ext.path.ends_with("/external_weights/hf"), "{ext:?}");
    assert!(ext.size_bytes.unwrap() > 0);
    let b = &rec.bodies("save_weights_external")[0];
    assert_eq!(b["age_encryption_recipients"], json!(["age1qqqqexample"]));
    assert_eq!(b["type"], "save_weights_external");
    assert!(b.get("ttl_seconds").is_none());
    let too_many: Vec<String> = (0..11).map(|i| format!("age1k{i}")).collect();
    let e = training
        .save_weights_external("x", None, Some(too_many))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert_eq!(
        rec.count("save_weights_external"),
        1,
        "refused before sending"
    );
    // Inflight: later inflight saves update every inflight client of the model.
    let inflight = SaveWeightsAndGetSamplingClientInput {
        kind: Some("inflight".into()),
        ..Default::default()
    };
    let a = training
        .save_weights_and_get_sampling_client_with(&inflight)
        .await
        .unwrap();
    let snap = training
        .save_weights_and_get_sampling_client_with(&Default::default())
        .await
        .unwrap();
    assert!(!a.record_stability_info() && !snap.record_stability_info());
    let kinds: Vec<Value> = rec
        .bodies("save_weights_for_sampler")
        .iter()
        .skip(1)
        .map(|b| {
            json!([
                b["kind"],
                b.get("path").is_some(),
                b["sampling_session_seq_id"].is_i64()
            ])
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            json!(["inflight", false, true]),
            json!(["snapshot", false, true])
        ]
    );
    let prompt = ModelInput::from_ints((1..20).collect());
    let a0 = a.compute_logprobs(prompt.clone()).await.unwrap();
    let s0 = snap.compute_logprobs(prompt.clone()).await.unwrap();
    assert_eq!(a0, s0, "same weights at first");
    for _ in 0..3 {
        training
            .forward_backward(batch(), "cross_entropy", None)
            .await
            .unwrap();
        training
            .optim_step(AdamParams {
                learning_rate: 1e-2,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let _b = training
        .save_weights_and_get_sampling_client_with(&inflight)
        .await
        .unwrap();
    let a1 = a.compute_logprobs(prompt.clone()).await.unwrap();
    let s1 = snap.compute_logprobs(prompt).await.unwrap();
    assert_eq!(s0, s1, "a snapshot keeps its weights");
    assert_ne!(
        a0, a1,
        "the earlier inflight client samples the newer weights"
    );
    // record_stability_info is the new client's setting: every sample sends it (12.1).
    let recording = training
        .save_weights_and_get_sampling_client_with(&SaveWeightsAndGetSamplingClientInput {
            record_stability_info: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(recording.record_stability_info());
    recording
        .compute_logprobs(ModelInput::from_ints(vec![1, 2, 3]))
        .await
        .unwrap();
    let last_sample = rec.bodies("asample").last().cloned().unwrap();
    assert_eq!(last_sample["record_stability_info"], json!(true));
    let e = training
        .save_weights_and_get_sampling_client_with(&SaveWeightsAndGetSamplingClientInput {
            kind: Some("live".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
}

// ------------------------------------------------------------------------------------------
// Create-via-load (6.8, 11.1) and resume
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_via_load_extras_legacy_token_and_resume_training_run() {
    let emu = emulator("train-api-load").await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = lora(&service, None).await;
    // A run without a training checkpoint cannot be resumed.
    let e = service
        .resume_training_run(training.model_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert!(e.message.contains("no training checkpoint"), "{e}");
    training.save_state("a").await.unwrap();
    let newest = training.save_state("b").await.unwrap();
    let loaded = service
        .create_training_client_from_state_with(&CreateTrainingClientFromStateInput {
            path: newest.clone(),
            optimizer: false,
            base_model: Some(BASE_MODEL.into()),
            user_metadata: Some(meta(&[("from", "b")])),
            weights_access_token: Some("tok-123".into()),
            optimizer_config: Some(OptimizerConfig::dimuon()),
        })
        .await
        .unwrap();
    let b = &rec.bodies("load_weights")[0];
    assert_eq!(b["base_model"], BASE_MODEL);
    assert_eq!(b["user_metadata"], json!({"from": "b"}));
    assert_eq!(b["weights_access_token"], "tok-123");
    assert_eq!(
        b["optimizer_config"],
        json!({"type": "dimuon", "version": 1})
    );
    assert_eq!(b["optimizer"], false);
    assert!(b.get("model_id").is_none() && b["model_seq_id"].is_i64());
    assert_eq!(
        loaded.get_info().optimizer_config,
        OptimizerConfig::dimuon()
    );
    // An incompatible base model is refused by the server.
    let e = service
        .create_training_client_from_state_with(&CreateTrainingClientFromStateInput {
            path: newest.clone(),
            optimizer: true,
            base_model: Some("Qwen/Qwen3-30B-A3B".into()),
            user_metadata: None,
            weights_access_token: None,
            optimizer_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    // optimizer_config with optimizer: true is refused client-side.
    let n = rec.count("load_weights");
    let e = service
        .create_training_client_from_state_with(&CreateTrainingClientFromStateInput {
            path: newest.clone(),
            optimizer: true,
            base_model: None,
            user_metadata: None,
            weights_access_token: None,
            optimizer_config: Some(OptimizerConfig::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert_eq!(rec.count("load_weights"), n);
    // Legacy load carries the token.
    training
        .load_state_with(
            &serde_json::from_value(json!({"path": newest, "weights_access_token": "tok-9"}))
                .unwrap(),
        )
        .await
        .unwrap();
    let b = rec.bodies("load_weights").last().unwrap().clone();
    assert_eq!(b["weights_access_token"], "tok-9");
    assert!(b["model_id"].is_string() && b["seq_id"].is_i64());
    // Resume: the newest training checkpoint, with optimizer state.
    let resumed = service
        .resume_training_run(training.model_id())
        .await
        .unwrap();
    let b = rec.bodies("load_weights").last().unwrap().clone();
    assert_eq!(b["path"], json!(newest));
    assert_eq!(b["optimizer"], true);
    assert_ne!(resumed.model_id(), training.model_id());
}

// ------------------------------------------------------------------------------------------
// Losses (10.4)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_loss_name_passes_through_with_its_config() {
    let emu = emulator("train-api-losses").await;
    let service = client(&emu);
    let training = lora(&service, None).await;
    let data: Vec<Datum> = (0..2).map(|d| rl_datum(&[1 + d, 2, 3, 4, 5, 6])).collect();
    let cfg = |pairs: &[(&str, f64)]| -> Option<BTreeMap<String, LossConfigValue>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), LossConfigValue::Number(*v)))
                .collect(),
        )
    };
    for (loss, config) in [
        ("cross_entropy", None),
        ("importance_sampling", None),
        (
            "ppo",
            cfg(&[("clip_low_threshold", 0.7), ("clip_high_threshold", 1.3)]),
        ),
        (
            "cispo",
            cfg(&[("clip_low_threshold", 0.0), ("clip_high_threshold", 5.0)]),
        ),
        ("dro", cfg(&[("beta", 0.1)])),
        ("gspo", None),
    ] {
        let out = training
            .forward_backward(data.clone(), loss, config)
            .await
            .unwrap_or_else(|e| panic!("{loss}: {e}"));
        assert_eq!(out.loss_fn_outputs.len(), 2, "{loss}");
        assert!(out.metrics["loss:sum"].is_finite(), "{loss}");
    }
    // CISPO with the weight clipped to exactly 1 is -Σ A·logp.
    let out = training
        .forward(
            data.clone(),
            "cispo",
            cfg(&[("clip_low_threshold", 1.0), ("clip_high_threshold", 1.0)]),
        )
        .await
        .unwrap();
    let expect: f64 = out
        .loss_fn_outputs
        .iter()
        .map(|o| match &o["logprobs"].data {
            tinkex::core::types::TensorValues::Float32(v) => {
                v.iter().map(|x| -0.5 * f64::from(*x)).sum::<f64>()
            }
            _ => panic!(),
        })
        .sum();
    assert!(
        (out.metrics["loss:sum"] - expect).abs() < 1e-3,
        "{} vs {expect}",
        out.metrics["loss:sum"]
    );
    let e = training
        .forward_backward(data.clone(), "stable_reinforce", cfg(&[("kl_coeff", 0.01)]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert!(e.message.contains("stable_reinforce"), "{e}");
}

// ------------------------------------------------------------------------------------------
// Server-side custom losses (5.10, 11.6)
// ------------------------------------------------------------------------------------------

fn neg_ll_graph() -> Value {
    json!({"format": 1, "nodes": [
        {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}},
        {"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}},
        {"op": "call_function", "name": "mul", "target": "_operator.mul", "args": [{"ref": "logprobs"}, {"ref": "weights"}], "kwargs": {}},
        {"op": "call_method", "name": "sum_1", "target": "sum", "args": [{"ref": "mul"}], "kwargs": {}},
        {"op": "call_function", "name": "neg", "target": "operator.neg", "args": [{"ref": "sum_1"}], "kwargs": {}},
        {"op": "output", "name": "output", "target": "output", "args": [{"tuple": [{"ref": "neg"}, {"dict": {"custom/neg_ll:sum": {"ref": "neg"}}}]}], "kwargs": {}}
    ]})
}

fn inputs(pairs: &[(&str, u8)]) -> Vec<CustomLossInput> {
    pairs
        .iter()
        .map(|(n, r)| CustomLossInput {
            name: n.to_string(),
            rank: *r,
        })
        .collect()
}

#[tokio::test]
async fn server_side_custom_loss_needs_the_flag_validates_and_trains() {
    let emu = emulator("train-api-custom").await;
    // Flag off: a clear user error, nothing sent.
    {
        let rec = Recorder::start(&emu).await;
        let service = client_of(&rec);
        let e = service
            .create_custom_loss(
                "neg_ll".into(),
                inputs(&[("logprobs", 1), ("weights", 1)]),
                neg_ll_graph(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::User, "{e}");
        assert!(e.message.contains("custom_loss_server_side"), "{e}");
        assert_eq!(rec.count("create_custom_loss"), 0);
    }
    control_post(
        &emu,
        "flags",
        json!({"client_config": {"custom_loss_server_side": true}}),
    )
    .await;
    let rec = Recorder::start(&emu).await;
    let service = client_of(&rec);
    let training = lora(&service, None).await;
    let created = service
        .create_custom_loss(
            "neg_ll".into(),
            inputs(&[("logprobs", 1), ("weights", 1)]),
            neg_ll_graph(),
        )
        .await
        .unwrap();
    let b = &rec.bodies("create_custom_loss")[0];
    assert_eq!(b["custom_loss_seq_id"], 0);
    assert_eq!(b["name"], "neg_ll");
    assert_eq!(b["type"], "create_custom_loss");
    assert_eq!(
        b["inputs"],
        json!([{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}])
    );
    assert_eq!(
        b["graph"]["nodes"][2]["target"], "operator.mul",
        "_operator. is rewritten"
    );
    // The same loss twice in a session: refused client-side.
    let e = service
        .create_custom_loss(
            "neg_ll".into(),
            inputs(&[("logprobs", 1), ("weights", 1)]),
            neg_ll_graph(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert_eq!(rec.count("create_custom_loss"), 1);
    // Client-side rules: logprobs first, names, ranks.
    for bad in [
        inputs(&[("weights", 1)]),
        inputs(&[("logprobs", 0)]),
        inputs(&[("logprobs", 1), ("Bad", 1)]),
    ] {
        let e = service
            .create_custom_loss("x".into(), bad, neg_ll_graph())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::User);
    }
    // An op the server does not run: a user error naming it; the counter moved on.
    let mut g = neg_ll_graph();
    g["nodes"][4]["target"] = json!("torch.special.entr");
    let e = service
        .create_custom_loss("entr".into(), inputs(&[("logprobs", 1), ("weights", 1)]), g)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User, "{e}");
    assert!(e.message.contains("torch.special.entr"), "{e}");
    assert_eq!(rec.bodies("create_custom_loss")[1]["custom_loss_seq_id"], 1);
    // forward_backward with the loss: inputs checked client-side first.
    let config: BTreeMap<String, LossConfigValue> = [(
        "loss_id".to_string(),
        LossConfigValue::Text(created.loss_id.clone()),
    )]
    .into();
    let mut missing = batch();
    missing[1].loss_fn_inputs.remove("weights");
    let n = rec.count("forward_backward");
    let e = training
        .forward_backward(missing, "custom", Some(config.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert!(
        e.message.contains("datum[1]") && e.message.contains("weights"),
        "{e}"
    );
    let mut wrong_rank = batch();
    let mut w2 = TensorData::from_f32(vec![1.0; 24]);
    w2.shape = Some(vec![4, 6]);
    wrong_rank[0].loss_fn_inputs.insert("weights".into(), w2);
    assert!(training
        .forward_backward(wrong_rank, "custom", Some(config.clone()))
        .await
        .is_err());
    let unknown: BTreeMap<String, LossConfigValue> =
        [("loss_id".to_string(), LossConfigValue::Text("nope".into()))].into();
    assert!(training
        .forward_backward(batch(), "custom", Some(unknown))
        .await
        .is_err());
    assert_eq!(rec.count("forward_backward"), n, "nothing sent");
    // The custom loss equals the weighted cross entropy, and trains.
    let ce = training
        .forward(batch(), "cross_entropy", None)
        .await
        .unwrap();
    let out = training
        .forward_backward(batch(), "custom", Some(config.clone()))
        .await
        .unwrap();
    assert!(
        (out.metrics["loss:sum"] - ce.metrics["loss:sum"]).abs() < 1e-3,
        "{:?} vs {:?}",
        out.metrics,
        ce.metrics
    );
    assert!((out.metrics["custom/neg_ll:sum"] - ce.metrics["loss:sum"]).abs() < 1e-3);
    training
        .optim_step(AdamParams {
            learning_rate: 1e-2,
            ..Default::default()
        })
        .await
        .unwrap();
    let after = training
        .forward(batch(), "custom", Some(config))
        .await
        .unwrap();
    assert!(after.metrics["loss:sum"] < out.metrics["loss:sum"]);
}

// ------------------------------------------------------------------------------------------
// DMel chunks (10.1, 20.1)
// ------------------------------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn container(constant: bool, dtype: u8, shape: &[u64], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    if constant {
        b.push(254);
    }
    b.push(dtype);
    varint(shape.len() as u64, &mut b);
    for d in shape {
        varint(*d, &mut b);
    }
    b.extend_from_slice(payload);
    b
}

#[test]
fn tensor_container_header_reads_dimension_zero_and_every_error() {
    assert_eq!(
        tensor_container_dim(&container(false, 1, &[300, 80], &[]), 0),
        Ok(300)
    );
    assert_eq!(
        tensor_container_dim(&container(true, 7, &[5], &[]), 0),
        Ok(5)
    );
    assert_eq!(
        tensor_container_dim(&container(false, 1, &[3, 80], &[]), 1),
        Ok(80)
    );
    let err = |b: &[u8]| tensor_container_dim(b, 0).unwrap_err();
    assert!(err(&[]).contains("empty"));
    assert!(err(&[254]).contains("Truncated"));
    assert!(err(&[8, 1, 1]).contains("dtype byte: 8"));
    assert!(err(&[1]).contains("Truncated"));
    assert!(err(&[1, 2, 0x80]).contains("Truncated"));
    assert!(err(&[1, 0]).contains("no dimension 0"));
    let mut long = vec![1u8, 1];
    long.extend([0xff; 10]);
    long.push(1);
    assert!(err(&long).contains("too long"));
    // A huge declared ndim costs nothing: only dimension 0 is read.
    let mut huge = vec![1u8];
    varint(u64::MAX >> 1, &mut huge);
    varint(4, &mut huge);
    assert_eq!(tensor_container_dim(&huge, 0), Ok(4));
}

#[tokio::test]
async fn dmel_chunks_train_end_to_end() {
    use base64::Engine;
    let emu = emulator("train-api-dmel").await;
    let service = client(&emu);
    let training = lora(&service, None).await;
    let frames: Vec<u8> = (0..5 * 8).map(|i| (i * 37 % 251) as u8).collect();
    let dmel =
        base64::engine::general_purpose::STANDARD.encode(container(false, 1, &[5, 8], &frames));
    let d = Datum {
        model_input: ModelInput {
            chunks: vec![
                Chunk::EncodedText { tokens: vec![1, 2] },
                Chunk::Dmel { dmel: dmel.clone() },
            ],
        },
        loss_fn_inputs: [
            (
                "target_tokens".to_string(),
                TensorData::from_i64(vec![2, 3, 4, 5, 6, 7, 8]),
            ),
            ("weights".to_string(), TensorData::from_f32(vec![1.0; 7])),
        ]
        .into(),
    };
    assert_eq!(
        d.model_input.length(),
        Some(7),
        "2 text tokens + 5 dmel frames"
    );
    assert_eq!(
        tinkex::core::codec::estimate_datum_bytes(&d),
        8 + 44 + 56 + 28
    );
    let first = training
        .forward_backward(vec![d.clone()], "cross_entropy", None)
        .await
        .unwrap();
    assert_eq!(first.loss_fn_outputs[0]["logprobs"].data.len(), 7);
    for _ in 0..5 {
        training
            .optim_step(AdamParams {
                learning_rate: 1e-2,
                ..Default::default()
            })
            .await
            .unwrap();
        training
            .forward_backward(vec![d.clone()], "cross_entropy", None)
            .await
            .unwrap();
    }
    let last = training
        .forward(vec![d.clone()], "cross_entropy", None)
        .await
        .unwrap();
    assert!(last.metrics["loss:sum"] < first.metrics["loss:sum"]);
    // A malformed header is refused client-side (user error, nothing sent).
    let mut bad = d;
    bad.model_input.chunks[1] = Chunk::Dmel {
        dmel: base64::engine::general_purpose::STANDARD.encode([9u8, 1, 5]),
    };
    let e = training
        .forward(vec![bad], "cross_entropy", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::User);
    assert!(e.message.contains("dtype byte: 9"), "{e}");
}

// ------------------------------------------------------------------------------------------
// Console URLs (20.2)
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn console_urls_follow_the_sdk() {
    let emu = emulator("train-api-console").await;
    let service = client(&emu);
    assert_eq!(
        service.get_console_url(),
        "https://tinker.thinkingmachines.ai/sessions"
    );
    let training = lora(&service, None).await;
    let session = service.session_id().unwrap();
    assert_eq!(
        service.get_console_url(),
        format!("https://tinker.thinkingmachines.ai/sessions/{session}")
    );
    assert_eq!(
        training.get_console_url(),
        format!(
            "https://tinker.thinkingmachines.ai/training_runs/{}",
            training.model_id()
        )
    );
}
