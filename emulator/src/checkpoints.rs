//! Checkpoints on disk under the state dir.
//!
//! Layout: `{state_dir}/runs/{training_run_id}/run.json` describes a run;
//! `{state_dir}/runs/{training_run_id}/{weights|sampler_weights}/{name}/` holds `model.bin`
//! and `meta.json`. A checkpoint is written into `{state_dir}/tmp/` and renamed into place,
//! so it is either complete or absent, never half-written — also when the process is killed.

use crate::util::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tinkex::core::types::{Checkpoint, CheckpointKind, OptimizerConfig, TinkerPath};

/// What the emulator knows about a training run (persisted as `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id (= model id).
    pub training_run_id: String,
    /// Base model name.
    pub base_model: String,
    /// LoRA rank.
    pub lora_rank: u32,
    /// Train flags.
    pub train_unembed: bool,
    /// Train flags.
    pub train_mlp: bool,
    /// Train flags.
    pub train_attn: bool,
    /// Optimizer family.
    pub optimizer_config: OptimizerConfig,
    /// Free-form metadata.
    #[serde(default)]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Creation time, Unix seconds.
    pub created: f64,
}

/// Metadata stored next to a checkpoint's weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The public description.
    pub checkpoint: Checkpoint,
    /// Whether `model.bin` holds optimizer state.
    pub has_optimizer: bool,
    /// Creation time, Unix seconds (for ordering).
    pub created: f64,
}

/// Why a checkpoint operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// A checkpoint with that name exists and `overwrite` was false.
    Conflict(String),
    /// No such checkpoint.
    NotFound(String),
    /// A path component is not allowed.
    InvalidName(String),
    /// Filesystem failure.
    Io(io::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(p) => write!(
                f,
                "checkpoint {p} already exists (pass overwrite=true to replace it)"
            ),
            StoreError::NotFound(p) => write!(f, "checkpoint {p} not found"),
            StoreError::InvalidName(n) => write!(f, "invalid checkpoint or run name {n:?}"),
            StoreError::Io(e) => write!(f, "checkpoint storage error: {e}"),
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// The checkpoint directory of one emulator.
pub struct CheckpointStore {
    root: PathBuf,
    tmp_counter: AtomicU64,
}

/// Rejects names that would escape their directory.
fn check_component(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(StoreError::InvalidName(name.to_string()));
    }
    Ok(())
}

impl CheckpointStore {
    /// Opens (creating) the store under `state_dir`, removing leftovers of interrupted writes.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let root = state_dir.to_path_buf();
        fs::create_dir_all(root.join("runs"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(CheckpointStore {
            root,
            tmp_counter: AtomicU64::new(0),
        })
    }

    fn run_dir(&self, run_id: &str) -> Result<PathBuf, StoreError> {
        check_component(run_id)?;
        Ok(self.root.join("runs").join(run_id))
    }

    fn checkpoint_dir(&self, path: &TinkerPath) -> Result<PathBuf, StoreError> {
        check_component(&path.name)?;
        Ok(self
            .run_dir(&path.training_run_id)?
            .join(path.kind.segment())
            .join(&path.name))
    }

    fn fresh_tmp(&self) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("w{}-{n}", std::process::id()))
    }

    /// Records a run's description (idempotent, atomic).
    pub fn save_run(&self, run: &RunMeta) -> Result<(), StoreError> {
        let dir = self.run_dir(&run.training_run_id)?;
        fs::create_dir_all(&dir)?;
        let tmp = self.fresh_tmp();
        write_synced(
            &tmp,
            &serde_json::to_vec_pretty(run).expect("run meta serializes"),
        )?;
        fs::rename(&tmp, dir.join("run.json"))?;
        Ok(())
    }

    /// Reads a run's description.
    pub fn run(&self, run_id: &str) -> Option<RunMeta> {
        let bytes = fs::read(self.run_dir(run_id).ok()?.join("run.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// All runs on disk.
    pub fn runs(&self) -> Vec<RunMeta> {
        let Ok(entries) = fs::read_dir(self.root.join("runs")) else {
            return Vec::new();
        };
        let mut runs: Vec<RunMeta> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| self.run(&e.file_name().to_string_lossy()))
            .collect();
        runs.sort_by(|a, b| a.created.total_cmp(&b.created));
        runs
    }

    /// Writes a checkpoint atomically: a temp dir with both files, then one rename.
    pub fn save(
        &self,
        path: &TinkerPath,
        model_bytes: &[u8],
        has_optimizer: bool,
        user_metadata: Option<BTreeMap<String, String>>,
        ttl_seconds: Option<i64>,
        overwrite: bool,
        now: f64,
    ) -> Result<CheckpointMeta, StoreError> {
        let final_dir = self.checkpoint_dir(path)?;
        if final_dir.exists() && !overwrite {
            return Err(StoreError::Conflict(path.to_string()));
        }
        let meta = CheckpointMeta {
            checkpoint: Checkpoint {
                checkpoint_id: path.checkpoint_id(),
                checkpoint_type: path.kind.type_name().to_string(),
                time: rfc3339(now),
                tinker_path: path.to_string(),
                size_bytes: Some(model_bytes.len() as u64),
                public: false,
                user_metadata,
                expires_at: ttl_seconds.map(|t| rfc3339(now + t as f64)),
            },
            has_optimizer,
            created: now,
        };
        let tmp = self.fresh_tmp();
        fs::create_dir_all(&tmp)?;
        write_synced(&tmp.join("model.bin"), model_bytes)?;
        write_synced(
            &tmp.join("meta.json"),
            &serde_json::to_vec_pretty(&meta).expect("checkpoint meta serializes"),
        )?;
        fs::create_dir_all(final_dir.parent().expect("checkpoint dir has a parent"))?;
        if final_dir.exists() {
            let trash = self.fresh_tmp();
            fs::rename(&final_dir, &trash)?;
            fs::rename(&tmp, &final_dir)?;
            fs::remove_dir_all(&trash)?;
        } else {
            fs::rename(&tmp, &final_dir)?;
        }
        Ok(meta)
    }

    /// Reads a checkpoint's metadata.
    pub fn meta(&self, path: &TinkerPath) -> Result<CheckpointMeta, StoreError> {
        let dir = self.checkpoint_dir(path)?;
        let bytes =
            fs::read(dir.join("meta.json")).map_err(|_| StoreError::NotFound(path.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Io(io::Error::other(e)))
    }

    /// Reads a checkpoint's metadata and weights.
    pub fn load(&self, path: &TinkerPath) -> Result<(CheckpointMeta, Vec<u8>), StoreError> {
        let meta = self.meta(path)?;
        let bytes = fs::read(self.checkpoint_dir(path)?.join("model.bin"))?;
        Ok((meta, bytes))
    }

    /// Rewrites a checkpoint's metadata (publish, TTL).
    pub fn update_meta(
        &self,
        path: &TinkerPath,
        change: impl FnOnce(&mut CheckpointMeta),
    ) -> Result<CheckpointMeta, StoreError> {
        let mut meta = self.meta(path)?;
        change(&mut meta);
        let tmp = self.fresh_tmp();
        write_synced(
            &tmp,
            &serde_json::to_vec_pretty(&meta).expect("meta serializes"),
        )?;
        fs::rename(&tmp, self.checkpoint_dir(path)?.join("meta.json"))?;
        Ok(meta)
    }

    /// Deletes a checkpoint (atomically: renamed away, then removed).
    pub fn delete(&self, path: &TinkerPath) -> Result<(), StoreError> {
        let dir = self.checkpoint_dir(path)?;
        if !dir.exists() {
            return Err(StoreError::NotFound(path.to_string()));
        }
        let trash = self.fresh_tmp();
        fs::rename(&dir, &trash)?;
        fs::remove_dir_all(&trash)?;
        Ok(())
    }

    /// Checkpoints of one run, oldest first.
    pub fn list_run(&self, run_id: &str) -> Vec<CheckpointMeta> {
        let mut out = Vec::new();
        for kind in [
            CheckpointKind::Training,
            CheckpointKind::Sampler,
            CheckpointKind::External,
        ] {
            let Ok(dir) = self.run_dir(run_id) else {
                return out;
            };
            let Ok(entries) = fs::read_dir(dir.join(kind.segment())) else {
                continue;
            };
            for e in entries.filter_map(|e| e.ok()) {
                let path = TinkerPath {
                    training_run_id: run_id.to_string(),
                    kind,
                    name: e.file_name().to_string_lossy().into_owned(),
                };
                if let Ok(meta) = self.meta(&path) {
                    out.push(meta);
                }
            }
        }
        out.sort_by(|a, b| a.created.total_cmp(&b.created));
        out
    }

    /// Every checkpoint of every run, newest first.
    pub fn list_all(&self) -> Vec<CheckpointMeta> {
        let mut all: Vec<CheckpointMeta> = self
            .runs()
            .iter()
            .flat_map(|r| self.list_run(&r.training_run_id))
            .collect();
        all.sort_by(|a, b| b.created.total_cmp(&a.created));
        all
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tinkex-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_load_conflict_overwrite_delete() {
        let dir = tmpdir("basic");
        let store = CheckpointStore::open(&dir).unwrap();
        let p = TinkerPath::parse("tinker://s:train:0/weights/step-1").unwrap();
        store
            .save(&p, b"abc", true, None, None, false, 1.0)
            .unwrap();
        assert!(matches!(
            store.save(&p, b"x", true, None, None, false, 2.0),
            Err(StoreError::Conflict(_))
        ));
        store
            .save(&p, b"xyz", false, None, Some(3600), true, 2.0)
            .unwrap();
        let (meta, bytes) = store.load(&p).unwrap();
        assert_eq!(bytes, b"xyz");
        assert!(!meta.has_optimizer);
        assert!(meta.checkpoint.expires_at.is_some());
        store.delete(&p).unwrap();
        assert!(matches!(store.load(&p), Err(StoreError::NotFound(_))));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopening_keeps_checkpoints_and_clears_partial_writes() {
        let dir = tmpdir("reopen");
        let store = CheckpointStore::open(&dir).unwrap();
        let p = TinkerPath::parse("tinker://run/sampler_weights/a").unwrap();
        store.save(&p, b"w", false, None, None, false, 1.0).unwrap();
        fs::write(dir.join("tmp").join("half-written"), b"partial").unwrap();
        drop(store);
        let store = CheckpointStore::open(&dir).unwrap();
        assert_eq!(store.load(&p).unwrap().1, b"w");
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_cannot_escape() {
        let dir = tmpdir("escape");
        let store = CheckpointStore::open(&dir).unwrap();
        let p = TinkerPath {
            training_run_id: "..".into(),
            kind: CheckpointKind::Training,
            name: "x".into(),
        };
        assert!(matches!(
            store.save(&p, b"w", false, None, None, false, 1.0),
            Err(StoreError::InvalidName(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
