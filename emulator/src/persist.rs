//! Live state that survives a crash: sessions, sampling sessions and training models
//! (weights, Adam state, accumulated gradients, executed `seq_id`s and recent results) are
//! written under `{state_dir}/live/` — each file to a temp name, then renamed — so an
//! emulator killed with SIGKILL and restarted on the same state dir carries on where it
//! stopped. A model's snapshot is written after an operation executes and before its future
//! completes, so a client never sees a result the restarted server does not know.
//!
//! Not persisted: pending (not yet executed) requests and sampling futures; their pollers
//! get 410 after a restart: a training call reaches its caller as `Expired` (PROTOCOL.md
//! 13.9), a sample is re-run by the sampling retry handler with a new `seq_id`.

use crate::checkpoints::RunMeta;
use crate::futures::Outcome;
use crate::model::{DatumOutput, TinyModel};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tinkex::core::types::RequestErrorCategory;

/// How many recent results of a model are kept retrievable across a restart.
pub const RECENT_RESULTS: usize = 64;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn live_dir(app: &AppState, kind: &str) -> PathBuf {
    app.config.state_dir.join("live").join(kind)
}

/// Writes `bytes` to `path` atomically (temp file + rename; no fsync: a killed process
/// keeps its page cache, which is the failure these files are for).
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("live files have a parent");
    fs::create_dir_all(dir)?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// A session as persisted.
#[derive(Serialize, Deserialize)]
pub struct LiveSession {
    /// Id.
    pub session_id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata.
    pub user_metadata: serde_json::Map<String, Value>,
    /// Creation time.
    pub created: f64,
    /// Finish reason, if finished.
    pub finished: Option<(tinkex::core::types::FinishReasonKind, Option<String>)>,
    /// Creation requests by model_seq_id.
    pub model_requests: Vec<(i64, String)>,
}

/// Persists one session.
pub fn save_session(app: &AppState, session: &LiveSession) {
    if !app.config.persist_live_state {
        return;
    }
    let path = live_dir(app, "sessions").join(format!("{}.json", session.session_id));
    if let Err(e) = write_atomic(
        &path,
        &serde_json::to_vec(session).expect("session serializes"),
    ) {
        eprintln!(
            "tinkex-emulator: cannot persist session {}: {e}",
            session.session_id
        );
    }
}

/// A sampling session as persisted (its weights next to it, unless it serves a base model).
#[derive(Serialize, Deserialize)]
pub struct LiveSampler {
    /// Id.
    pub id: String,
    /// Base model.
    pub base_model: String,
    /// Checkpoint path it was created from.
    pub model_path: Option<String>,
    /// Whether `{id}.bin` holds its weights (false: the untrained base model).
    pub has_weights: bool,
}

/// Persists one sampling session.
pub fn save_sampler(app: &AppState, sampler: &LiveSampler, weights: Option<&TinyModel>) {
    if !app.config.persist_live_state {
        return;
    }
    let dir = live_dir(app, "samplers");
    let result = weights
        .map(|m| write_atomic(&dir.join(format!("{}.bin", sampler.id)), &m.to_bytes(false)))
        .unwrap_or(Ok(()))
        .and_then(|_| {
            write_atomic(
                &dir.join(format!("{}.json", sampler.id)),
                &serde_json::to_vec(sampler).expect("sampler serializes"),
            )
        });
    if let Err(e) = result {
        eprintln!(
            "tinkex-emulator: cannot persist sampler {}: {e}",
            sampler.id
        );
    }
}

/// The JSON header of a persisted model.
#[derive(Serialize, Deserialize)]
pub struct LiveModelHeader {
    /// Model id.
    pub model_id: String,
    /// Owning session.
    pub session_id: String,
    /// Run description.
    pub run: RunMeta,
    /// Next `seq_id` to execute.
    pub next_seq: i64,
    /// Executed `seq_id`s and their request ids.
    pub executed: Vec<(i64, String)>,
    /// Recent results: (request id, request kind, outcome).
    pub recent: Vec<(String, String, Value)>,
}

/// Serializes an outcome for the journal (sample outcomes are not journaled).
pub fn outcome_to_json(o: &Outcome) -> Option<Value> {
    Some(match o {
        Outcome::Json(v) => json!({"json": v}),
        Outcome::Failed { error, category } => {
            json!({"failed": {"error": error, "category": category}})
        }
        Outcome::ForwardBackward { outputs, metrics } => {
            json!({"fb": {"outputs": outputs, "metrics": metrics}})
        }
        Outcome::Sample(_) => return None,
    })
}

/// Reads a journaled outcome.
pub fn outcome_from_json(v: &Value) -> Option<Outcome> {
    if let Some(j) = v.get("json") {
        return Some(Outcome::Json(j.clone()));
    }
    if let Some(f) = v.get("failed") {
        return Some(Outcome::Failed {
            error: f.get("error")?.as_str()?.to_string(),
            category: serde_json::from_value::<RequestErrorCategory>(f.get("category")?.clone())
                .ok()?,
        });
    }
    let fb = v.get("fb")?;
    Some(Outcome::ForwardBackward {
        outputs: serde_json::from_value::<Vec<DatumOutput>>(fb.get("outputs")?.clone()).ok()?,
        metrics: serde_json::from_value::<Vec<(String, f64)>>(fb.get("metrics")?.clone()).ok()?,
    })
}

/// Persists a model: `[u64 header len][header JSON][u64 model len][model bytes][gradients]`.
pub fn save_model(app: &AppState, header: &LiveModelHeader, model: &TinyModel) {
    if !app.config.persist_live_state {
        return;
    }
    let head = serde_json::to_vec(header).expect("model header serializes");
    let weights = model.to_bytes(true);
    let grads = model.gradients_to_bytes();
    let mut bytes = Vec::with_capacity(16 + head.len() + weights.len() + grads.len());
    bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&(weights.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&weights);
    bytes.extend_from_slice(&grads);
    let path = live_dir(app, "models").join(format!("{}.bin", header.model_id));
    if let Err(e) = write_atomic(&path, &bytes) {
        eprintln!(
            "tinkex-emulator: cannot persist model {}: {e}",
            header.model_id
        );
    }
}

fn read_model(bytes: &[u8]) -> Result<(LiveModelHeader, TinyModel), String> {
    let take = |pos: usize, n: usize| bytes.get(pos..pos + n).ok_or("truncated model snapshot");
    let head_len = u64::from_le_bytes(take(0, 8)?.try_into().expect("8")) as usize;
    let header: LiveModelHeader =
        serde_json::from_slice(take(8, head_len)?).map_err(|e| e.to_string())?;
    let pos = 8 + head_len;
    let model_len = u64::from_le_bytes(take(pos, 8)?.try_into().expect("8")) as usize;
    let mut model = TinyModel::from_bytes(take(pos + 8, model_len)?).map_err(|e| e.to_string())?;
    model
        .set_gradients_from_bytes(&bytes[pos + 8 + model_len..])
        .map_err(|e| e.to_string())?;
    Ok((header, model))
}

fn read_dir_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect()
}

/// Loads everything persisted into a fresh state (call before serving).
pub fn restore(app: &Arc<AppState>) {
    for path in read_dir_files(&live_dir(app, "sessions"), "json") {
        match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<LiveSession>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => app.restore_session(s),
            Err(e) => eprintln!(
                "tinkex-emulator: skipping unreadable {}: {e}",
                path.display()
            ),
        }
    }
    let sampler_dir = live_dir(app, "samplers");
    for path in read_dir_files(&sampler_dir, "json") {
        let Ok(s) = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<LiveSampler>(&b).map_err(|e| e.to_string()))
        else {
            continue;
        };
        let model = if s.has_weights {
            match fs::read(sampler_dir.join(format!("{}.bin", s.id)))
                .ok()
                .and_then(|b| TinyModel::from_bytes(&b).ok())
            {
                Some(m) => Arc::new(m),
                None => continue,
            }
        } else {
            app.base_model(&s.base_model)
        };
        app.restore_sampler(s, model);
    }
    for path in read_dir_files(&live_dir(app, "models"), "bin") {
        match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| read_model(&b))
        {
            Ok((header, model)) => crate::training::ModelSlot::restore(app, header, model),
            Err(e) => eprintln!(
                "tinkex-emulator: skipping unreadable {}: {e}",
                path.display()
            ),
        }
    }
}
