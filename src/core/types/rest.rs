//! REST management bodies (PROTOCOL.md section 9 and 10.10).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A stored checkpoint (10.10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Checkpoint {
    /// `weights/<name>`, `sampler_weights/<name>` or `external_weights/<name>`.
    pub checkpoint_id: String,
    /// `training`, `sampler` or `external`.
    pub checkpoint_type: String,
    /// Creation time, RFC 3339.
    pub time: String,
    /// Full `tinker://` path.
    pub tinker_path: String,
    /// Size on disk.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Visible to other accounts.
    #[serde(default)]
    pub public: bool,
    /// Free-form metadata.
    #[serde(default)]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Expiry, RFC 3339; `None` = never.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Pagination cursor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Cursor {
    /// Offset of the page.
    pub offset: i64,
    /// Page size.
    pub limit: i64,
    /// Total items.
    pub total_count: i64,
}

/// A training run (9.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TrainingRun {
    /// Run id (= model id).
    pub training_run_id: String,
    /// Base model.
    pub base_model: String,
    /// Owner URN.
    pub model_owner: String,
    /// LoRA adapter.
    pub is_lora: bool,
    /// Marked corrupted.
    #[serde(default)]
    pub corrupted: bool,
    /// LoRA rank.
    #[serde(default)]
    pub lora_rank: Option<u32>,
    /// Last request time, RFC 3339.
    pub last_request_time: String,
    /// Latest training checkpoint.
    #[serde(default)]
    pub last_checkpoint: Option<Checkpoint>,
    /// Latest sampler checkpoint.
    #[serde(default)]
    pub last_sampler_checkpoint: Option<Checkpoint>,
    /// Free-form metadata.
    #[serde(default)]
    pub user_metadata: Option<BTreeMap<String, String>>,
}

/// `GET /api/v1/training_runs` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TrainingRunsResponse {
    /// The page of runs.
    pub training_runs: Vec<TrainingRun>,
    /// Pagination.
    pub cursor: Cursor,
}

/// Checkpoint listings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CheckpointsListResponse {
    /// The checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Pagination (absent for per-run listings).
    #[serde(default)]
    pub cursor: Option<Cursor>,
}

/// `weights_info` body (9.9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfoRequest {
    /// The checkpoint.
    pub tinker_path: String,
}

/// `weights_info` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WeightsInfoResponse {
    /// Base model.
    pub base_model: String,
    /// Optimizer family.
    #[serde(default)]
    pub optimizer_config: super::OptimizerConfig,
    /// LoRA adapter.
    pub is_lora: bool,
    /// LoRA rank.
    #[serde(default)]
    pub lora_rank: Option<u32>,
    /// Unembedding trained.
    #[serde(default)]
    pub train_unembed: Option<bool>,
    /// MLP trained.
    #[serde(default)]
    pub train_mlp: Option<bool>,
    /// Attention trained.
    #[serde(default)]
    pub train_attn: Option<bool>,
}
