//! The raw HTTP loop: the same exchanges as a client (create the session, submit, long-poll
//! `retrieve_future`) with plain reqwest and nothing else — no retries beyond re-polling,
//! no backoff, no events, no progress tracking, no decoding of the result. It is the lower
//! bound for any client on this machine.
//!
//! Bodies are the ones libtinkex sends: they are serialized from the same wire types.

use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tinkex::core::types::{
    CreateModelRequest, CreateSamplingSessionRequest, CreateSessionRequest, FutureRetrieveRequest,
    LoraConfig, ModelInput, OptimizerConfig, SampleRequest, SamplingParams,
};

pub const API_KEY: &str = "tml-bench";

/// One raw client: a reqwest client with its defaults (HTTP/1.1 to http://, unbounded idle
/// pool) and the few ids a session needs.
#[derive(Clone)]
pub struct Raw {
    http: reqwest::Client,
    base: Arc<str>,
    /// Failed HTTP exchanges (each is retried once more as a poll).
    pub errors: Arc<AtomicU64>,
}

impl Raw {
    pub fn new(base: &str) -> Raw {
        Raw {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').into(),
            errors: Arc::new(AtomicU64::new(0)),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: Bytes,
        proto: bool,
        accept_proto: bool,
    ) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", API_KEY)
            .header(
                "content-type",
                if proto {
                    "application/x-protobuf"
                } else {
                    "application/json"
                },
            )
            .header(
                "accept",
                if accept_proto {
                    "application/x-protobuf"
                } else {
                    "application/json"
                },
            )
            .body(body)
            .send()
            .await
    }

    /// POSTs a JSON body and parses a JSON answer (set-up calls only).
    pub async fn post_json(&self, path: &str, body: &impl serde::Serialize) -> Value {
        let body = serde_json::to_vec(body).unwrap();
        let r = self
            .post(path, body.into(), false, false)
            .await
            .expect("raw set-up request");
        let status = r.status();
        let v: Value =
            serde_json::from_slice(&r.bytes().await.expect("answer")).expect("JSON answer");
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// Submits a body and returns the request id of the future.
    pub async fn submit(&self, path: &str, body: Bytes, proto: bool) -> Option<String> {
        match self.post(path, body, proto, false).await {
            Ok(r) if r.status().is_success() => {
                let b = r.bytes().await.ok()?;
                #[derive(serde::Deserialize)]
                struct Id {
                    request_id: String,
                }
                serde_json::from_slice::<Id>(&b).ok().map(|i| i.request_id)
            }
            _ => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Long-polls until the future is done; returns the payload size. Re-polls on try_again;
    /// on a transport error or non-200 waits 100 ms and polls again.
    pub async fn wait(&self, request_id: &str, accept_proto: bool) -> usize {
        let body: Bytes = serde_json::to_vec(&FutureRetrieveRequest {
            request_id: request_id.to_string(),
            allow_metadata_only: true,
        })
        .unwrap()
        .into();
        loop {
            match self
                .post("/api/v1/retrieve_future", body.clone(), false, accept_proto)
                .await
            {
                Ok(r) if r.status().as_u16() == 200 => {
                    let proto = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|c| c.contains("protobuf"));
                    let Ok(b) = r.bytes().await else {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if proto {
                        return b.len();
                    }
                    // JSON: try_again (poll again), metadata-only (poll again), or a result.
                    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                    if v.get("type").and_then(Value::as_str) == Some("try_again")
                        || v.get("status").and_then(Value::as_str) == Some("complete_metadata")
                    {
                        continue;
                    }
                    return b.len();
                }
                _ => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// create_session.
    pub async fn create_session(&self) -> String {
        let v = self
            .post_json(
                "/api/v1/create_session",
                &CreateSessionRequest {
                    tags: vec![],
                    user_metadata: Default::default(),
                    sdk_version: tinkex::core::types::SDK_VERSION.into(),
                    project_id: None,
                    display_name: None,
                    kind: "create_session".into(),
                },
            )
            .await;
        v["session_id"].as_str().unwrap().to_string()
    }

    /// create_model, polled to its model id.
    pub async fn create_model(&self, session_id: &str, base_model: &str) -> String {
        let v = self
            .post_json(
                "/api/v1/create_model",
                &CreateModelRequest {
                    session_id: session_id.into(),
                    model_seq_id: 0,
                    base_model: base_model.into(),
                    user_metadata: None,
                    lora_config: Some(LoraConfig {
                        rank: 32,
                        seed: None,
                        train_unembed: true,
                        train_mlp: true,
                        train_attn: true,
                    }),
                    optimizer_config: OptimizerConfig::default(),
                    kind: "create_model".into(),
                },
            )
            .await;
        let id = v["request_id"].as_str().unwrap().to_string();
        let body =
            serde_json::to_vec(&json!({"request_id": id, "allow_metadata_only": false})).unwrap();
        loop {
            let r = self
                .post("/api/v1/retrieve_future", body.clone().into(), false, false)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            if let Some(m) = v.get("model_id").and_then(Value::as_str) {
                return m.to_string();
            }
        }
    }
}

/// A raw sampler: one sampling session, `seq_id`s from 0 as libtinkex numbers them.
#[derive(Clone)]
pub struct RawSampler {
    pub raw: Raw,
    session: Arc<str>,
    next_seq: Arc<AtomicI64>,
    prompt: ModelInput,
    params: SamplingParams,
}

impl RawSampler {
    pub async fn new(
        base: &str,
        base_model: &str,
        prompt: ModelInput,
        params: SamplingParams,
    ) -> RawSampler {
        let raw = Raw::new(base);
        let session_id = raw.create_session().await;
        let v = raw
            .post_json(
                "/api/v1/create_sampling_session",
                &CreateSamplingSessionRequest {
                    session_id,
                    sampling_session_seq_id: 0,
                    base_model: Some(base_model.into()),
                    model_path: None,
                    kind: "create_sampling_session".into(),
                },
            )
            .await;
        RawSampler {
            raw,
            session: v["sampling_session_id"].as_str().unwrap().into(),
            next_seq: Arc::new(AtomicI64::new(0)),
            prompt,
            params,
        }
    }

    /// The body libtinkex's `SamplingClient::sample` sends for this prompt.
    fn body(&self, seq: i64) -> Bytes {
        serde_json::to_vec(&SampleRequest {
            num_samples: 1,
            prompt: self.prompt.clone(),
            sampling_params: self.params.clone(),
            base_model: None,
            model_path: None,
            sampling_session_id: Some(self.session.to_string()),
            seq_id: Some(seq),
            prompt_logprobs: Some(false),
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: 0,
            target_prompt_logprobs: None,
            prompt_alt_tokens_k: 0,
            prompt_logprobs_last_n: None,
            record_stability_info: Some(false),
            kind: "sample".into(),
        })
        .unwrap()
        .into()
    }

    /// Submits one sample (retrying the submission on failure) and waits for its result.
    pub async fn sample(&self) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let body = self.body(seq);
        let id = loop {
            if let Some(id) = self
                .raw
                .submit("/api/v1/asample", body.clone(), false)
                .await
            {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.raw.wait(&id, true).await;
    }
}
