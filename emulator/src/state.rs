//! Shared server state: sessions, models, sampling sessions, futures, checkpoints, telemetry.

use crate::checkpoints::CheckpointStore;
use crate::config::EmulatorConfig;
use crate::futures::FutureStore;
use crate::model::{ModelConfig, TinyModel};
use crate::sampling::SamplerSlot;
use crate::training::ModelSlot;
use crate::util::{unix_now, IdGen};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tinkex::core::types::FinishReasonKind;
use tokio::sync::watch;

/// Telemetry batches kept for `/_emulator/telemetry` (older ones are dropped).
pub const MAX_TELEMETRY_BATCHES: usize = 10_000;

/// Journal entries kept for `/_emulator/journal` (older ones are dropped).
pub const MAX_JOURNAL_ENTRIES: usize = 100_000;

/// One API request as received, for tests of what a client sent on each attempt. Carries
/// no credential.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JournalEntry {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// `X-Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
    /// `x-stainless-retry-count`, if sent.
    pub retry_count: Option<String>,
    /// `Content-Encoding`, if sent.
    pub content_encoding: Option<String>,
    /// `x-sdk-method`, if sent.
    pub sdk_method: Option<String>,
    /// The top-level `seq_id` of a JSON body (read when the body is at most
    /// [`crate::faults::SEQ_ID_PEEK_LIMIT`] bytes and not compressed).
    pub seq_id: Option<i64>,
    /// Status of the answer (0 when the connection was broken instead).
    pub status: u16,
}

/// One client session.
pub struct Session {
    /// Session id.
    pub session_id: String,
    /// Tags from create_session.
    pub tags: Vec<String>,
    /// Metadata from create_session.
    pub user_metadata: Map<String, Value>,
    /// Creation time.
    pub created: f64,
    /// Last heartbeat time.
    pub last_heartbeat: f64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// First finish reason received (first wins).
    pub finished: Option<(FinishReasonKind, Option<String>)>,
    /// create_model / create-via-load requests by `model_seq_id` (dedup of retries).
    pub model_requests: HashMap<i64, String>,
}

/// Everything the handlers share.
pub struct AppState {
    /// Settings.
    pub config: EmulatorConfig,
    /// Id generator.
    pub ids: IdGen,
    /// Futures by request id.
    pub futures: FutureStore,
    /// Checkpoints on disk.
    pub checkpoints: CheckpointStore,
    /// Sessions by id.
    pub sessions: Mutex<HashMap<String, Session>>,
    /// Training models by id.
    pub models: Mutex<HashMap<String, Arc<ModelSlot>>>,
    /// Sampling sessions by id.
    pub samplers: Mutex<HashMap<String, Arc<SamplerSlot>>>,
    /// Untrained base models, built once per name.
    base_models: Mutex<HashMap<String, Arc<TinyModel>>>,
    /// Telemetry batches received, in order (the newest [`MAX_TELEMETRY_BATCHES`]).
    pub telemetry: Mutex<Vec<Value>>,
    /// Injected faults.
    pub faults: crate::faults::FaultSet,
    /// A simulated outage.
    pub outage: crate::faults::Outage,
    /// Server-side duration of operations by request type (e.g. `SaveWeights`).
    pub op_delays: Mutex<HashMap<String, std::time::Duration>>,
    /// retrieve_future polls that reached the handler, by request id.
    pub polls: Mutex<HashMap<String, u64>>,
    /// Requests received (including those answered by a fault rule), by path.
    pub requests: Mutex<HashMap<String, u64>>,
    /// Every API request received, in order (the newest [`MAX_JOURNAL_ENTRIES`]).
    pub journal: Mutex<std::collections::VecDeque<JournalEntry>>,
    /// The `client/config` and `client/dynamic_config` answers.
    pub flags: crate::flags::Flags,
    /// JWT issuing and checking, and the log of credential kinds (PROTOCOL.md 2.7).
    pub auth: crate::auth::AuthState,
    /// Sampling capacity per API key and what was seen of it (`/_emulator/sampling_capacity`).
    pub sampling_capacity: crate::sampling::SamplingCapacity,
    /// Owners, projects and copies (REST management, PROTOCOL.md 9).
    pub registry: crate::sessions::Registry,
    /// Usage processed (billing, session traces).
    pub usage: crate::billing::UsageLog,
    /// Signed download URLs.
    pub signer: crate::signed_urls::Signer,
    /// Flips to `true` on shutdown; background workers stop.
    pub shutdown: watch::Receiver<bool>,
    /// Server-side custom losses by `loss_id` (PROTOCOL.md 5.10).
    pub custom_losses: Mutex<HashMap<String, Arc<crate::model::graph::LossGraph>>>,
    /// create_custom_loss request ids by (session, `custom_loss_seq_id`) (dedup of retries).
    pub custom_loss_requests: Mutex<HashMap<(String, i64), String>>,
    /// The inflight sampling target of each training model (6.6 `kind: inflight`).
    pub inflight: Mutex<HashMap<String, crate::sampling::InflightTarget>>,
}

impl AppState {
    /// Creates the state; `shutdown` stops the per-model workers.
    pub fn new(
        config: EmulatorConfig,
        checkpoints: CheckpointStore,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let flags = crate::flags::Flags::new(&config.client_config, &config.dynamic_config);
        let registry = crate::sessions::Registry::open(&config.state_dir);
        let auth = crate::auth::AuthState::new(config.jwt_lifetime);
        AppState {
            config,
            ids: IdGen::new(),
            futures: FutureStore::default(),
            checkpoints,
            sessions: Mutex::new(HashMap::new()),
            models: Mutex::new(HashMap::new()),
            samplers: Mutex::new(HashMap::new()),
            base_models: Mutex::new(HashMap::new()),
            telemetry: Mutex::new(Vec::new()),
            faults: crate::faults::FaultSet::default(),
            outage: crate::faults::Outage::default(),
            op_delays: Mutex::new(HashMap::new()),
            polls: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            journal: Mutex::new(std::collections::VecDeque::new()),
            flags,
            auth,
            sampling_capacity: Default::default(),
            registry,
            usage: Default::default(),
            signer: Default::default(),
            shutdown,
            custom_losses: Mutex::new(HashMap::new()),
            custom_loss_requests: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a new session and returns its id.
    pub fn create_session(&self, tags: Vec<String>, user_metadata: Map<String, Value>) -> String {
        let id = self.ids.uuid();
        let now = unix_now();
        self.sessions.lock().unwrap().insert(
            id.clone(),
            Session {
                session_id: id.clone(),
                tags,
                user_metadata,
                created: now,
                last_heartbeat: now,
                heartbeats: 0,
                finished: None,
                model_requests: HashMap::new(),
            },
        );
        self.persist_session(&id);
        id
    }

    /// Writes a session's current state to the live dir.
    pub fn persist_session(&self, session_id: &str) {
        let live = {
            let sessions = self.sessions.lock().unwrap();
            let Some(s) = sessions.get(session_id) else {
                return;
            };
            crate::persist::LiveSession {
                session_id: s.session_id.clone(),
                tags: s.tags.clone(),
                user_metadata: s.user_metadata.clone(),
                created: s.created,
                finished: s.finished.clone(),
                model_requests: s
                    .model_requests
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
            }
        };
        crate::persist::save_session(self, &live);
    }

    /// Re-registers a session persisted before a restart.
    pub fn restore_session(&self, s: crate::persist::LiveSession) {
        self.sessions.lock().unwrap().insert(
            s.session_id.clone(),
            Session {
                session_id: s.session_id,
                tags: s.tags,
                user_metadata: s.user_metadata,
                created: s.created,
                last_heartbeat: unix_now(),
                heartbeats: 0,
                finished: s.finished,
                model_requests: s.model_requests.into_iter().collect(),
            },
        );
    }

    /// Re-registers a sampling session persisted before a restart.
    pub fn restore_sampler(&self, s: crate::persist::LiveSampler, model: Arc<TinyModel>) {
        let slot = Arc::new(SamplerSlot::new(
            s.id.clone(),
            s.base_model,
            s.model_path,
            model,
        ));
        self.samplers.lock().unwrap().insert(s.id, slot);
    }

    /// Whether the session exists and is not finished; the error names which.
    pub fn check_session_open(&self, session_id: &str) -> Result<(), crate::util::ApiError> {
        match self.sessions.lock().unwrap().get(session_id) {
            None => Err(crate::util::ApiError::not_found(format!(
                "session {session_id} not found"
            ))),
            Some(s) if s.finished.is_some() => Err(crate::util::ApiError::new(
                axum::http::StatusCode::GONE,
                format!("session {session_id} has finished"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Looks up a model.
    pub fn model(&self, model_id: &str) -> Result<Arc<ModelSlot>, crate::util::ApiError> {
        self.models
            .lock()
            .unwrap()
            .get(model_id)
            .cloned()
            .ok_or_else(|| crate::util::ApiError::not_found(format!("model {model_id} not found")))
    }

    /// Looks up a sampling session.
    pub fn sampler(&self, id: &str) -> Result<Arc<SamplerSlot>, crate::util::ApiError> {
        self.samplers
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| {
                crate::util::ApiError::not_found(format!("sampling session {id} not found"))
            })
    }

    /// The untrained model of a base model name.
    pub fn base_model(&self, name: &str) -> Arc<TinyModel> {
        self.base_models
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(TinyModel::new(ModelConfig {
                    base_model: name.to_string(),
                    lora_rank: 0,
                    seed: None,
                    train_unembed: true,
                    train_mlp: true,
                    train_attn: true,
                }))
            })
            .clone()
    }

    /// Registers a sampling session `{session_id}:sample:{seq}` serving `model`; a repeated
    /// registration (a retried request) keeps the existing session.
    pub fn create_sampler(
        &self,
        session_id: &str,
        sampling_session_seq_id: i64,
        base_model: String,
        model_path: Option<String>,
        model: Arc<TinyModel>,
    ) -> String {
        let id = format!("{session_id}:sample:{sampling_session_seq_id}");
        if self.samplers.lock().unwrap().contains_key(&id) {
            return id;
        }
        let is_base = model_path.is_none() && Arc::ptr_eq(&model, &self.base_model(&base_model));
        crate::persist::save_sampler(
            self,
            &crate::persist::LiveSampler {
                id: id.clone(),
                base_model: base_model.clone(),
                model_path: model_path.clone(),
                has_weights: !is_base,
            },
            (!is_base).then_some(&*model),
        );
        self.samplers
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(SamplerSlot::new(id.clone(), base_model, model_path, model))
            });
        id
    }
}
