//! Training models: one slot per model id, executing its requests strictly in `seq_id`
//! order (PROTOCOL.md 11.2-11.3, 17.6).
//!
//! Requests that arrive early wait in a buffer until every lower `seq_id` has run. A repeated
//! `seq_id` is the same request: it gets the same request id and is never executed twice, so
//! a retried `optim_step` cannot apply a second optimizer step. A `seq_id` that never arrives
//! (the client's send failed) is skipped after `seq_gap_timeout`; if it arrives later it
//! fails with a user error.

use crate::checkpoints::{RunMeta, StoreError};
use crate::futures::Outcome;
use crate::model::{self, DatumInput, LossFn, TinyModel};
use crate::state::AppState;
use crate::util::unix_now;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tinkex::core::types::{CheckpointKind, TinkerPath};
use tokio::sync::Notify;

/// One ordered operation on a model.
pub enum TrainOp {
    /// forward or forward_backward.
    ForwardBackward {
        /// The batch.
        data: Vec<DatumInput>,
        /// The loss.
        loss: LossFn,
        /// Skip gradient accumulation.
        forward_only: bool,
    },
    /// An AdamW step on the accumulated gradients.
    OptimStep(model::AdamParams),
    /// A Dimuon step on the accumulated gradients.
    OptimDimuon(model::DimuonParams),
    /// save_weights (training checkpoint with optimizer state).
    SaveState {
        /// Checkpoint name.
        name: String,
        /// Replace an existing checkpoint.
        overwrite: bool,
        /// Expiry.
        ttl_seconds: Option<i64>,
        /// Metadata.
        user_metadata: Option<BTreeMap<String, String>>,
    },
    /// save_weights_for_sampler, named and/or ephemeral.
    SaveForSampler {
        /// `snapshot` or `inflight`.
        kind: String,
        /// Name of a named save.
        name: Option<String>,
        /// Sampling-session counter of an ephemeral save.
        sampling_session_seq_id: Option<i64>,
        /// Expiry.
        ttl_seconds: Option<i64>,
        /// Metadata.
        user_metadata: Option<BTreeMap<String, String>>,
    },
    /// save_weights_external: the weights in an exportable form.
    SaveExternal {
        /// Checkpoint name.
        name: String,
        /// Expiry.
        ttl_seconds: Option<i64>,
        /// age recipients (files get a `.age` suffix).
        age_encryption_recipients: Vec<String>,
    },
    /// load_weights into this model.
    Load {
        /// Checkpoint path.
        path: TinkerPath,
        /// Also restore optimizer state.
        optimizer: bool,
    },
    /// A request that was accepted but is invalid; it fails in its turn.
    Fail(String),
}

struct Queued {
    request_id: String,
    kind: &'static str,
    op: TrainOp,
}

#[derive(Default)]
struct SeqState {
    next_seq: i64,
    highest_seen: i64,
    queued: BTreeMap<i64, Queued>,
    request_ids: HashMap<i64, String>,
    skipped: Vec<i64>,
    /// The last executed requests (request id, kind), newest last, for the journal.
    recent: std::collections::VecDeque<(String, &'static str)>,
}

/// Maps a persisted request kind back to its static name.
fn static_kind(kind: &str) -> &'static str {
    [
        "ForwardBackward",
        "Forward",
        "OptimStep",
        "SaveWeights",
        "SaveWeightsForSampler",
        "SaveWeightsExternal",
        "LoadWeights",
        "CreateModel",
    ]
    .into_iter()
    .find(|k| *k == kind)
    .unwrap_or("Unknown")
}

/// A live training model.
pub struct ModelSlot {
    /// Model id, `{session_id}:train:{model_seq_id}`.
    pub model_id: String,
    /// Owning session.
    pub session_id: String,
    /// Persisted description of the run.
    pub run: RunMeta,
    model: Arc<Mutex<TinyModel>>,
    seq: Mutex<SeqState>,
    wake: Notify,
    last_request_time: Mutex<f64>,
}

/// Counters exposed by the emulator's introspection endpoint.
#[derive(serde::Serialize)]
pub struct ModelStats {
    /// Model id.
    pub model_id: String,
    /// Optimizer steps applied.
    pub optimizer_steps: u64,
    /// Next `seq_id` the model will execute.
    pub next_seq_id: i64,
    /// Requests buffered waiting for an earlier `seq_id`.
    pub queued: usize,
    /// `seq_id`s skipped because they never arrived.
    pub skipped_seq_ids: Vec<i64>,
}

impl ModelSlot {
    /// Creates a slot whose next expected `seq_id` is `next_seq`, and starts its worker.
    pub fn start(
        app: &Arc<AppState>,
        model_id: String,
        session_id: String,
        run: RunMeta,
        model: TinyModel,
        next_seq: i64,
    ) -> Arc<Self> {
        let slot = Arc::new(ModelSlot {
            model_id,
            session_id,
            run,
            model: Arc::new(Mutex::new(model)),
            seq: Mutex::new(SeqState {
                next_seq,
                highest_seen: next_seq - 1,
                ..SeqState::default()
            }),
            wake: Notify::new(),
            last_request_time: Mutex::new(unix_now()),
        });
        tokio::spawn(run_worker(slot.clone(), app.clone()));
        slot
    }

    /// Submits an ordered request; returns its request id (the existing one for a repeat).
    pub fn submit(
        &self,
        app: &AppState,
        seq_id: Option<i64>,
        kind: &'static str,
        op: TrainOp,
    ) -> String {
        *self.last_request_time.lock().unwrap() = unix_now();
        let mut s = self.seq.lock().unwrap();
        let seq = seq_id.unwrap_or(s.highest_seen + 1);
        if let Some(existing) = s.request_ids.get(&seq) {
            return existing.clone();
        }
        let request_id = app.ids.next("req");
        s.request_ids.insert(seq, request_id.clone());
        s.highest_seen = s.highest_seen.max(seq);
        app.futures.register(&request_id, kind);
        crate::billing::on_train_request(
            app,
            &self.session_id,
            &self.model_id,
            &self.run.base_model,
            kind,
            &request_id,
            &op,
        );
        if seq < s.next_seq {
            app.futures.complete(
                &request_id,
                Outcome::user_error(format!(
                    "seq_id {seq} for model {} arrived after the server stopped waiting for it \
                     (later requests were already executed)",
                    self.model_id
                )),
            );
        } else {
            s.queued.insert(
                seq,
                Queued {
                    request_id: request_id.clone(),
                    kind,
                    op,
                },
            );
            self.wake.notify_one();
        }
        request_id
    }

    /// Recreates a model persisted before a restart; its recent results are retrievable again.
    pub fn restore(app: &Arc<AppState>, header: crate::persist::LiveModelHeader, model: TinyModel) {
        let slot = ModelSlot::start(
            app,
            header.model_id.clone(),
            header.session_id.clone(),
            header.run,
            model,
            header.next_seq,
        );
        {
            let mut s = slot.seq.lock().unwrap();
            for (seq, id) in &header.executed {
                s.request_ids.insert(*seq, id.clone());
                s.highest_seen = s.highest_seen.max(*seq);
            }
            for (id, kind, outcome) in &header.recent {
                if let Some(o) = crate::persist::outcome_from_json(outcome) {
                    app.futures.register_done(id, static_kind(kind), o);
                    s.recent.push_back((id.clone(), static_kind(kind)));
                }
            }
        }
        app.models.lock().unwrap().insert(header.model_id, slot);
    }

    /// Writes the model's live snapshot (after an operation, before its result is visible).
    pub fn persist(&self, app: &AppState, executed: Option<(String, &'static str)>) {
        let header = {
            let mut s = self.seq.lock().unwrap();
            s.recent.extend(executed);
            while s.recent.len() > crate::persist::RECENT_RESULTS {
                s.recent.pop_front();
            }
            let next = s.next_seq;
            let mut executed: Vec<(i64, String)> = s
                .request_ids
                .iter()
                .filter(|(seq, _)| **seq < next)
                .map(|(q, id)| (*q, id.clone()))
                .collect();
            executed.sort();
            crate::persist::LiveModelHeader {
                model_id: self.model_id.clone(),
                session_id: self.session_id.clone(),
                run: self.run.clone(),
                next_seq: next,
                executed,
                recent: s
                    .recent
                    .iter()
                    .filter_map(|(id, kind)| {
                        let outcome = app.futures.get(id)?.outcome()?;
                        Some((
                            id.clone(),
                            kind.to_string(),
                            crate::persist::outcome_to_json(&outcome)?,
                        ))
                    })
                    .collect(),
            }
        };
        let model = self.model.lock().unwrap();
        crate::persist::save_model(app, &header, &model);
    }

    /// Current counters.
    pub fn stats(&self) -> ModelStats {
        let s = self.seq.lock().unwrap();
        ModelStats {
            model_id: self.model_id.clone(),
            optimizer_steps: self.model.lock().unwrap().optimizer_steps(),
            next_seq_id: s.next_seq,
            queued: s.queued.len(),
            skipped_seq_ids: s.skipped.clone(),
        }
    }

    /// Time of the last request, Unix seconds.
    pub fn last_request_time(&self) -> f64 {
        *self.last_request_time.lock().unwrap()
    }

    /// Takes the request for the next `seq_id`, if it has arrived.
    fn take_next(&self) -> Option<Queued> {
        let mut s = self.seq.lock().unwrap();
        let next = s.next_seq;
        let q = s.queued.remove(&next)?;
        s.next_seq += 1;
        Some(q)
    }

    /// After a gap timeout: skip every missing `seq_id` below the lowest buffered one.
    fn skip_gap(&self) {
        let mut s = self.seq.lock().unwrap();
        let Some(&lowest) = s.queued.keys().next() else {
            return;
        };
        let missing: Vec<i64> = (s.next_seq..lowest).collect();
        if !missing.is_empty() {
            eprintln!(
                "tinkex-emulator: model {} skipping missing seq_id(s) {missing:?}",
                self.model_id
            );
            s.skipped.extend(missing);
            s.next_seq = lowest;
        }
    }

    fn has_buffered(&self) -> bool {
        !self.seq.lock().unwrap().queued.is_empty()
    }

    async fn execute(&self, app: &Arc<AppState>, op: TrainOp) -> Outcome {
        let model = self.model.clone();
        let app2 = app.clone();
        let model_id = self.model_id.clone();
        let session_id = self.session_id.clone();
        let base_model = self.run.base_model.clone();
        let job = move || {
            let mut model = model.lock().unwrap();
            execute_blocking(&app2, &model_id, &session_id, &base_model, &mut model, op)
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed {
                error: format!("internal emulator error: {e}"),
                category: tinkex::core::types::RequestErrorCategory::Server,
            },
        }
    }
}

async fn run_worker(slot: Arc<ModelSlot>, app: Arc<AppState>) {
    let mut shutdown = app.shutdown.clone();
    loop {
        if let Some(q) = slot.take_next() {
            let delay = app.op_delays.lock().unwrap().get(q.kind).copied();
            if let Some(d) = delay {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.changed() => return,
                }
            }
            let outcome = slot.execute(&app, q.op).await;
            // Persist first: a client must never see a result a restarted server lacks.
            app.futures.complete_hidden(&q.request_id, outcome);
            let (slot2, app2, id, kind) = (slot.clone(), app.clone(), q.request_id.clone(), q.kind);
            let _ =
                tokio::task::spawn_blocking(move || slot2.persist(&app2, Some((id, kind)))).await;
            app.futures.reveal(&q.request_id);
            continue;
        }
        let gap_wait = async {
            if slot.has_buffered() {
                if tokio::time::timeout(app.config.seq_gap_timeout, slot.wake.notified())
                    .await
                    .is_err()
                {
                    slot.skip_gap();
                }
            } else {
                slot.wake.notified().await;
            }
        };
        tokio::select! {
            _ = gap_wait => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn execute_blocking(
    app: &AppState,
    model_id: &str,
    session_id: &str,
    base_model: &str,
    model: &mut TinyModel,
    op: TrainOp,
) -> Outcome {
    match op {
        TrainOp::Fail(msg) => Outcome::user_error(msg),
        TrainOp::ForwardBackward { data, .. } if app.config.zero_compute => {
            Outcome::ForwardBackward {
                outputs: data
                    .iter()
                    .map(|d| crate::model::DatumOutput {
                        logprobs: vec![0.0; d.tokens.len()],
                        elementwise_loss: vec![0.0; d.tokens.len()],
                    })
                    .collect(),
                metrics: vec![("loss:sum".to_string(), 0.0)],
            }
        }
        TrainOp::OptimStep(_) | TrainOp::OptimDimuon(_) if app.config.zero_compute => {
            Outcome::Json(serde_json::json!({"metrics": {}}))
        }
        TrainOp::OptimDimuon(params) => match model.optim_step_dimuon(&params) {
            Ok(metrics) => {
                let metrics: BTreeMap<String, f64> = metrics.into_iter().collect();
                Outcome::Json(serde_json::json!({ "metrics": metrics }))
            }
            Err(e) => Outcome::user_error(e.to_string()),
        },
        TrainOp::ForwardBackward {
            data,
            loss,
            forward_only,
        } => match model.forward_backward(&data, &loss, forward_only) {
            Ok(res) => Outcome::ForwardBackward {
                metrics: std::iter::once(("loss:sum".to_string(), res.loss_sum))
                    .chain(reduce_metrics(&res.metrics, data.len()))
                    .collect(),
                outputs: res.outputs,
            },
            Err(e) => Outcome::user_error(e.to_string()),
        },
        TrainOp::OptimStep(params) => match model.optim_step(&params) {
            Ok(metrics) => {
                let metrics: BTreeMap<String, f64> = metrics.into_iter().collect();
                Outcome::Json(serde_json::json!({ "metrics": metrics }))
            }
            Err(e) => Outcome::user_error(e.to_string()),
        },
        TrainOp::SaveState {
            name,
            overwrite,
            ttl_seconds,
            user_metadata,
        } => {
            let path = TinkerPath {
                training_run_id: model_id.to_string(),
                kind: CheckpointKind::Training,
                name,
            };
            let bytes = model.to_bytes(true);
            match app.checkpoints.save(
                &path,
                &bytes,
                true,
                user_metadata,
                ttl_seconds,
                overwrite,
                unix_now(),
            ) {
                Ok(_) => Outcome::Json(
                    serde_json::json!({"path": path.to_string(), "type": "save_weights"}),
                ),
                Err(e) => store_failure(e),
            }
        }
        TrainOp::SaveForSampler {
            kind,
            name,
            sampling_session_seq_id,
            ttl_seconds,
            user_metadata,
        } => {
            let mut result = serde_json::json!({"path": null, "type": "save_weights_for_sampler"});
            if let Some(name) = name {
                let path = TinkerPath {
                    training_run_id: model_id.to_string(),
                    kind: CheckpointKind::Sampler,
                    name,
                };
                let bytes = model.to_bytes(false);
                if let Err(e) = app.checkpoints.save(
                    &path,
                    &bytes,
                    false,
                    user_metadata,
                    ttl_seconds,
                    true,
                    unix_now(),
                ) {
                    return store_failure(e);
                }
                result["path"] = path.to_string().into();
            }
            if let (Some(n), "inflight") = (sampling_session_seq_id, kind.as_str()) {
                // Publish the weights to the model's shared target; every inflight sampler of
                // this model (earlier ones included) samples from it from now on.
                let weights = Arc::new(model.clone());
                let target = {
                    let mut targets = app.inflight.lock().unwrap();
                    let t = targets
                        .entry(model_id.to_string())
                        .or_insert_with(|| Arc::new(std::sync::RwLock::new(weights.clone())))
                        .clone();
                    *t.write().unwrap_or_else(|e| e.into_inner()) = weights;
                    t
                };
                let id = format!("{session_id}:sample:{n}");
                app.samplers
                    .lock()
                    .unwrap()
                    .entry(id.clone())
                    .or_insert_with(|| {
                        Arc::new(crate::sampling::SamplerSlot::new_inflight(
                            id.clone(),
                            base_model.to_string(),
                            target,
                        ))
                    });
                result["sampling_session_id"] = id.into();
            } else if let Some(n) = sampling_session_seq_id {
                let id = app.create_sampler(
                    session_id,
                    n,
                    base_model.to_string(),
                    None,
                    Arc::new(model.clone()),
                );
                result["sampling_session_id"] = id.into();
            }
            Outcome::Json(result)
        }
        TrainOp::SaveExternal {
            name,
            ttl_seconds,
            age_encryption_recipients,
        } => crate::weights_export::save_external(
            app,
            model_id,
            model,
            name,
            ttl_seconds,
            &age_encryption_recipients,
        ),
        TrainOp::Load { path, optimizer } => {
            match load_checkpoint(app, &path, optimizer, base_model) {
                Ok(loaded) => {
                    *model = loaded;
                    Outcome::Json(serde_json::json!({
                        "path": path.to_string(), "model_id": model_id, "type": "load_weights"
                    }))
                }
                Err(outcome) => outcome,
            }
        }
    }
}

/// Reduces per-datum custom metrics (`name:sum` summed, `name:mean` averaged over the
/// batch's `n` datums; other reductions keep the last value).
fn reduce_metrics(per_datum: &[(String, f64)], n: usize) -> Vec<(String, f64)> {
    let mut acc: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in per_datum {
        let e = acc.entry(k.clone()).or_insert(0.0);
        if k.ends_with(":sum") || k.ends_with(":mean") {
            *e += v;
        } else {
            *e = *v;
        }
    }
    acc.into_iter()
        .map(|(k, v)| {
            let v = if k.ends_with(":mean") {
                v / n.max(1) as f64
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

/// Reads a training checkpoint into a model, checking kind, base model and optimizer state.
pub fn load_checkpoint(
    app: &AppState,
    path: &TinkerPath,
    optimizer: bool,
    base_model: &str,
) -> Result<TinyModel, Outcome> {
    if path.kind != CheckpointKind::Training {
        return Err(Outcome::user_error(format!(
            "{path} is a {} checkpoint; load_weights needs a training checkpoint (tinker://<run>/weights/<name>)",
            path.kind.type_name()
        )));
    }
    let (meta, bytes) = app.checkpoints.load(path).map_err(store_failure)?;
    let mut loaded = TinyModel::from_bytes(&bytes).map_err(|e| Outcome::Failed {
        error: format!("checkpoint {path} is corrupt: {e}"),
        category: tinkex::core::types::RequestErrorCategory::Server,
    })?;
    if loaded.config().base_model != base_model {
        return Err(Outcome::user_error(format!(
            "checkpoint {path} was trained from {} and cannot be loaded into a {base_model} model",
            loaded.config().base_model
        )));
    }
    if optimizer && !meta.has_optimizer {
        return Err(Outcome::user_error(format!(
            "checkpoint {path} has no optimizer state"
        )));
    }
    if !optimizer {
        loaded = TinyModel::from_bytes(&loaded.to_bytes(false)).expect("re-encoding round-trips");
    }
    Ok(loaded)
}

fn store_failure(e: StoreError) -> Outcome {
    match e {
        StoreError::Io(_) => Outcome::Failed {
            error: e.to_string(),
            category: tinkex::core::types::RequestErrorCategory::Server,
        },
        _ => Outcome::user_error(e.to_string()),
    }
}
