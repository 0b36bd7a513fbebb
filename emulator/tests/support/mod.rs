//! A minimal raw HTTP client for driving the emulator in tests (no SDK logic on purpose:
//! these tests pin the server's wire behaviour).

#![allow(dead_code)]

use prost::Message;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tinkex::core::proto;
use tinkex_emulator::{Emulator, EmulatorConfig, RunningEmulator};

pub const KEY: &str = "tml-emulator-test";
pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// A fresh state dir under the system temp dir.
pub fn state_dir(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("tinkex-emu-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts an emulator with a short long-poll hold so tests run fast.
pub async fn start(dir: &PathBuf, hold: Duration) -> RunningEmulator {
    let mut cfg = EmulatorConfig::new(dir);
    cfg.poll_hold = hold;
    Emulator::start(cfg).await.expect("emulator starts")
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

/// What a single retrieve_future call answered.
pub enum Poll {
    TryAgain(Value),
    Proto(Vec<u8>),
    Json(Value),
    Status(u16, Value),
}

impl Api {
    pub fn new(base: &str) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v1/{path}", self.base))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/api/v1/{path}", self.base))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    pub async fn control(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_emulator/{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn session(&self) -> String {
        let v = self
            .ok("create_session", json!({"tags": [], "user_metadata": {}, "sdk_version": "0.38.0", "type": "create_session"}))
            .await;
        v["session_id"].as_str().unwrap().to_string()
    }

    /// create_model + wait; returns the model id.
    pub async fn model(&self, session: &str, model_seq_id: i64) -> String {
        let f = self
            .ok(
                "create_model",
                json!({"session_id": session, "model_seq_id": model_seq_id, "base_model": BASE_MODEL,
                       "lora_config": {"rank": 8, "train_unembed": true, "train_mlp": true, "train_attn": true},
                       "optimizer_config": {"type": "adamw"}, "type": "create_model"}),
            )
            .await;
        let r = self.result_json(f["request_id"].as_str().unwrap()).await;
        r["model_id"].as_str().unwrap().to_string()
    }

    pub async fn poll(&self, request_id: &str, proto: bool) -> Poll {
        let resp = self
            .http
            .post(format!("{}/api/v1/retrieve_future", self.base))
            .header("X-API-Key", KEY)
            .header(
                "Accept",
                if proto {
                    "application/x-protobuf"
                } else {
                    "application/json"
                },
            )
            .json(&json!({"request_id": request_id, "allow_metadata_only": false}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.bytes().await.unwrap().to_vec();
        if status != 200 {
            return Poll::Status(
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            );
        }
        if ct.contains("application/x-protobuf") {
            return Poll::Proto(bytes);
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        if v["type"] == "try_again" {
            Poll::TryAgain(v)
        } else {
            Poll::Json(v)
        }
    }

    /// Polls until the future is done (deadline 60 s); returns the JSON result.
    pub async fn result_json(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.poll(request_id, false).await {
                Poll::TryAgain(_) => assert!(
                    Instant::now() < deadline,
                    "future {request_id} never finished"
                ),
                Poll::Json(v) => return v,
                Poll::Proto(_) => panic!("asked for JSON, got protobuf"),
                Poll::Status(s, v) => panic!("retrieve_future {request_id}: HTTP {s} {v}"),
            }
        }
    }

    /// Polls until done asking for protobuf; returns the raw payload.
    pub async fn result_proto(&self, request_id: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.poll(request_id, true).await {
                Poll::TryAgain(_) => assert!(
                    Instant::now() < deadline,
                    "future {request_id} never finished"
                ),
                Poll::Proto(b) => return b,
                Poll::Json(v) => panic!("expected a protobuf result, got JSON {v}"),
                Poll::Status(s, v) => panic!("retrieve_future {request_id}: HTTP {s} {v}"),
            }
        }
    }

    /// Submits a protobuf forward_backward; returns the request id.
    pub async fn forward_backward(
        &self,
        model_id: &str,
        seq_id: i32,
        batch: &[(Vec<i64>, Vec<i64>)],
        forward_only: bool,
    ) -> String {
        let req = proto::ForwardBackwardRequest {
            model_id: model_id.into(),
            seq_id,
            data: batch.iter().map(|(x, y)| proto_datum(x, y)).collect(),
            loss_fn: "cross_entropy".into(),
            forward_only,
            ..Default::default()
        };
        let resp = self
            .http
            .post(format!("{}/api/v1/forward_backward", self.base))
            .header("X-API-Key", KEY)
            .header("Content-Type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let v: Value = resp.json().await.unwrap();
        v["request_id"].as_str().unwrap().to_string()
    }

    pub async fn optim_step(&self, model_id: &str, seq_id: i64, lr: f64) -> String {
        let v = self
            .ok(
                "optim_step",
                json!({"model_id": model_id, "seq_id": seq_id, "type": "optim_step",
                       "adam_params": {"learning_rate": lr, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12, "weight_decay": 0.0, "grad_clip_norm": 0.0}}),
            )
            .await;
        v["request_id"].as_str().unwrap().to_string()
    }

    /// The loss:sum of a finished forward/forward_backward, read from the protobuf result.
    pub async fn loss(&self, request_id: &str) -> f64 {
        let out =
            proto::ForwardBackwardOutput::decode(self.result_proto(request_id).await.as_slice())
                .unwrap();
        out.metrics["loss:sum"]
    }
}

pub fn proto_datum(tokens: &[i64], targets: &[i64]) -> proto::Datum {
    let mut inputs = std::collections::BTreeMap::new();
    inputs.insert(
        "target_tokens".to_string(),
        proto::Tensor {
            encoding: Some(proto::TensorEncoding::Dense(proto::pack_le(targets))),
            dtype: proto::DType::Int64 as i32,
            shape: vec![targets.len() as i64],
        },
    );
    let tok32: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    proto::Datum {
        model_input: vec![proto::Chunk {
            chunk: Some(proto::ChunkKind::EncodedText(proto::EncodedTextChunk {
                tokens: proto::pack_le(&tok32),
            })),
        }],
        loss_fn_inputs: inputs,
        ..Default::default()
    }
}

/// A fixed batch: 4 sequences of 24 tokens with large token ids, targets shifted by one.
pub fn batch() -> Vec<(Vec<i64>, Vec<i64>)> {
    (0..4)
        .map(|d| {
            let seq: Vec<i64> = (0..25)
                .map(|i| 100_000 + ((d * 7919 + i * 104_729) % 50_000) as i64)
                .collect();
            (seq[..24].to_vec(), seq[1..].to_vec())
        })
        .collect()
}
