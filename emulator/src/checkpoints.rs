//! Checkpoints on disk under the state dir.
//!
//! Layout: `{state_dir}/runs/{training_run_id}/run.json` describes a run;
//! `{state_dir}/runs/{training_run_id}/{weights|sampler_weights}/{name}/` holds `model.bin`
//! and `meta.json`. A checkpoint is written into `{state_dir}/tmp/` and renamed into place,
//! so it is either complete or absent, never half-written — also when the process is killed.

use crate::util::rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
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
    /// Expiry, Unix seconds on the store's clock ([`CheckpointStore::now`]); `None` = never.
    /// A checkpoint past its expiry is deleted the next time it is looked up or listed.
    #[serde(default)]
    pub expires: Option<f64>,
    /// The checkpoint this one is a copy of (`copy_weights`, PROTOCOL.md 6.9), if any.
    #[serde(default)]
    pub copied_from: Option<String>,
}

/// One change to the store, for the audit log and billing (PROTOCOL.md 9.12).
#[derive(Clone, Debug, Serialize)]
pub struct StoreEvent {
    /// When, Unix seconds on the store's clock.
    pub time: f64,
    /// `created`, `deleted`, `expired`, `published`, `unpublished`, `ttl_set`,
    /// `ttl_cleared` or `copied`.
    pub action: &'static str,
    /// The checkpoint.
    pub tinker_path: String,
    /// Its size, for `created` and `copied`.
    pub size_bytes: Option<u64>,
}

/// Store events kept (older ones are dropped).
pub const MAX_STORE_EVENTS: usize = 100_000;

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
    /// Seconds added to the wall clock (`POST /_emulator/clock`), so TTL expiry is testable.
    clock_offset_ms: AtomicI64,
    events: Mutex<VecDeque<StoreEvent>>,
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
            clock_offset_ms: AtomicI64::new(0),
            events: Mutex::new(VecDeque::new()),
        })
    }

    /// The store's clock: Unix seconds plus the offset set with [`Self::advance_clock`].
    pub fn now(&self) -> f64 {
        crate::util::unix_now() + self.offset()
    }

    fn offset(&self) -> f64 {
        self.clock_offset_ms.load(Ordering::SeqCst) as f64 / 1000.0
    }

    /// Moves the store's clock forward by `seconds` (tests of TTL expiry and URL expiry).
    pub fn advance_clock(&self, seconds: f64) {
        let ms = (seconds.clamp(0.0, 1e12) * 1000.0) as i64;
        self.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// The state dir the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records a change (see [`StoreEvent`]).
    pub fn record(&self, action: &'static str, tinker_path: &str, size_bytes: Option<u64>) {
        let mut events = self.events.lock().unwrap();
        if events.len() >= MAX_STORE_EVENTS {
            events.pop_front();
        }
        events.push_back(StoreEvent {
            time: self.now(),
            action,
            tinker_path: tinker_path.to_string(),
            size_bytes,
        });
    }

    /// Every change recorded since start, oldest first.
    pub fn events(&self) -> Vec<StoreEvent> {
        self.events.lock().unwrap().iter().cloned().collect()
    }

    /// The directory of a checkpoint (it may not exist).
    pub fn dir_of(&self, path: &TinkerPath) -> Result<PathBuf, StoreError> {
        self.checkpoint_dir(path)
    }

    /// Bytes on disk under a run's directory.
    pub fn run_size_bytes(&self, run_id: &str) -> u64 {
        self.run_dir(run_id).map(|d| dir_size(&d)).unwrap_or(0)
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
    #[allow(clippy::too_many_arguments)]
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
        self.save_with_files(
            path,
            model_bytes,
            &[],
            has_optimizer,
            user_metadata,
            ttl_seconds,
            overwrite,
            now,
        )
    }

    /// [`Self::save`] plus extra files under `files/` in the same atomic rename (an external
    /// checkpoint's export, PROTOCOL.md 6.7). `size_bytes` is then the files' total size.
    #[allow(clippy::too_many_arguments)]
    pub fn save_with_files(
        &self,
        path: &TinkerPath,
        model_bytes: &[u8],
        files: &[(String, Vec<u8>)],
        has_optimizer: bool,
        user_metadata: Option<BTreeMap<String, String>>,
        ttl_seconds: Option<i64>,
        overwrite: bool,
        now: f64,
    ) -> Result<CheckpointMeta, StoreError> {
        let size = if files.is_empty() {
            model_bytes.len() as u64
        } else {
            files.iter().map(|(_, b)| b.len() as u64).sum()
        };
        let now = now + self.offset();
        let final_dir = self.checkpoint_dir(path)?;
        let _ = self.meta(path); // an expired checkpoint is deleted first: its name is free
        if final_dir.exists() && !overwrite {
            return Err(StoreError::Conflict(path.to_string()));
        }
        let meta = CheckpointMeta {
            checkpoint: Checkpoint {
                checkpoint_id: path.checkpoint_id(),
                checkpoint_type: path.kind.type_name().to_string(),
                time: rfc3339(now),
                tinker_path: path.to_string(),
                size_bytes: Some(size),
                public: false,
                user_metadata,
                expires_at: ttl_seconds.map(|t| rfc3339(now + t as f64)),
            },
            has_optimizer,
            created: now,
            expires: ttl_seconds.map(|t| now + t as f64),
            copied_from: None,
        };
        let tmp = self.fresh_tmp();
        fs::create_dir_all(&tmp)?;
        write_synced(&tmp.join("model.bin"), model_bytes)?;
        for (name, bytes) in files {
            check_component(name)?;
            fs::create_dir_all(tmp.join("files"))?;
            write_synced(&tmp.join("files").join(name), bytes)?;
        }
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
        self.record("created", &path.to_string(), Some(size));
        Ok(meta)
    }

    /// Writes a copy of `source` at `dest` (PROTOCOL.md 6.9): the weights are hard-linked
    /// (no bytes duplicated; the copy survives the source's deletion), with a fresh expiry.
    pub fn copy(
        &self,
        source: &TinkerPath,
        dest: &TinkerPath,
        ttl_seconds: Option<i64>,
    ) -> Result<CheckpointMeta, StoreError> {
        let src_meta = self.meta(source)?;
        let src_dir = self.checkpoint_dir(source)?;
        let final_dir = self.checkpoint_dir(dest)?;
        if final_dir.exists() {
            return Err(StoreError::Conflict(dest.to_string()));
        }
        let now = self.now();
        let mut meta = src_meta.clone();
        meta.checkpoint.checkpoint_id = dest.checkpoint_id();
        meta.checkpoint.tinker_path = dest.to_string();
        meta.checkpoint.time = rfc3339(now);
        meta.checkpoint.public = false;
        meta.checkpoint.expires_at = ttl_seconds.map(|t| rfc3339(now + t as f64));
        meta.created = now;
        meta.expires = ttl_seconds.map(|t| now + t as f64);
        meta.copied_from = Some(source.to_string());
        let tmp = self.fresh_tmp();
        fs::create_dir_all(&tmp)?;
        link_tree(&src_dir, &tmp, &["meta.json"])?;
        write_synced(
            &tmp.join("meta.json"),
            &serde_json::to_vec_pretty(&meta).expect("checkpoint meta serializes"),
        )?;
        fs::create_dir_all(final_dir.parent().expect("checkpoint dir has a parent"))?;
        fs::rename(&tmp, &final_dir)?;
        self.record("copied", &dest.to_string(), meta.checkpoint.size_bytes);
        Ok(meta)
    }

    /// Reads a checkpoint's metadata. A checkpoint past its expiry is deleted here and
    /// reported as not found.
    pub fn meta(&self, path: &TinkerPath) -> Result<CheckpointMeta, StoreError> {
        let dir = self.checkpoint_dir(path)?;
        let bytes =
            fs::read(dir.join("meta.json")).map_err(|_| StoreError::NotFound(path.to_string()))?;
        let meta: CheckpointMeta =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Io(io::Error::other(e)))?;
        if meta.expires.is_some_and(|e| e <= self.now()) {
            if self.remove(path).is_ok() {
                self.record("expired", &path.to_string(), None);
            }
            return Err(StoreError::NotFound(path.to_string()));
        }
        Ok(meta)
    }

    /// Sets (`Some`) or clears (`None`) a checkpoint's expiry, counted from now.
    pub fn set_ttl(
        &self,
        path: &TinkerPath,
        ttl_seconds: Option<i64>,
    ) -> Result<CheckpointMeta, StoreError> {
        let now = self.now();
        let meta = self.update_meta(path, |m| {
            m.expires = ttl_seconds.map(|t| now + t as f64);
            m.checkpoint.expires_at = ttl_seconds.map(|t| rfc3339(now + t as f64));
        })?;
        let action = if ttl_seconds.is_some() {
            "ttl_set"
        } else {
            "ttl_cleared"
        };
        self.record(action, &path.to_string(), None);
        Ok(meta)
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
        self.meta(path)?; // an expired checkpoint is not found
        self.remove(path)?;
        self.record("deleted", &path.to_string(), None);
        Ok(())
    }

    fn remove(&self, path: &TinkerPath) -> Result<(), StoreError> {
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

/// Total size of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Hard-links every file under `src` into `dst` (same layout), except the top-level names
/// in `skip`; falls back to a copy where linking is not possible.
fn link_tree(src: &Path, dst: &Path, skip: &[&str]) -> io::Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = dst.join(&name);
        if e.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            link_tree(&e.path(), &target, &[])?;
        } else if fs::hard_link(e.path(), &target).is_err() {
            fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
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
            .save(
                &p,
                b"xyz",
                false,
                None,
                Some(3600),
                true,
                crate::util::unix_now(),
            )
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
