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

/// The `GET /api/v1/get_server_capabilities` response under its official name (5.2).
pub type GetServerCapabilitiesResponse = super::ServerCapabilities;

/// Who may see a listed resource (`access_scope` query parameter, 9.1, 9.2, 9.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AccessScope {
    /// Only the caller's own resources (the default).
    #[default]
    Owned,
    /// Everything the caller may read.
    Accessible,
}

impl AccessScope {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessScope::Owned => "owned",
            AccessScope::Accessible => "accessible",
        }
    }
}

/// `GET /api/v1/sessions` response (9.10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListSessionsResponse {
    /// Session ids.
    pub sessions: Vec<String>,
}

/// `GET /api/v1/sessions/{session_id}` response (9.10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GetSessionResponse {
    /// Training run (model) ids of the session.
    pub training_run_ids: Vec<String>,
    /// Sampler ids of the session.
    pub sampler_ids: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `GET …/trace_export` poll answer (9.10; not a public model of the SDK).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceExportPollResponse {
    /// `pending`, `ready` or `failed`.
    pub status: String,
    /// The signed URL once `ready`.
    #[serde(default)]
    pub url: Option<String>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// `PUT …/ttl` body (9.7): the key is always present, `null` clears the expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetCheckpointTtlRequest {
    /// Seconds until expiry, or `None` to remove it.
    pub ttl_seconds: Option<i64>,
}

/// `PUT /api/v1/sessions/{id}/project` body (9.10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignSessionProjectRequest {
    /// Destination project.
    pub project_id: String,
}

/// `GET …/external_weights_urls` response (9.8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ExternalWeightsUrlsResponse {
    /// Relative file path → signed URL.
    pub urls: BTreeMap<String, String>,
    /// When the URLs expire, RFC 3339.
    pub expires: String,
}

/// `POST /api/v1/copy_weights` body (6.9): no `type` field; `None` fields omitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyWeightsRequest {
    /// Project that will own the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_project_id: Option<String>,
    /// Tinker path of the weights to copy.
    pub source_path: String,
    /// Seconds until the copy expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// `POST /api/v1/copy_weights` response (6.9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CopyWeightsResponse {
    /// Tinker path of the copy.
    pub tinker_path: String,
}

/// The caller's identity, decoded from the JWT (2.8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WhoamiResponse {
    /// URN of the calling principal (claim `sub`).
    pub user_urn: String,
    /// `tml:organization:{org_id}`.
    pub org_urn: String,
    /// Email, when user-backed (empty → `None`).
    #[serde(default)]
    pub email: Option<String>,
}

/// Who owns the searched sessions (9.11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SearchOwner {
    /// The caller's own sessions (default).
    Own,
    /// Every session the caller may read.
    Accessible,
    /// Sessions of these users (1…10 URNs).
    User {
        /// Owner URNs.
        owner_urns: Vec<String>,
    },
}

impl Default for SearchOwner {
    fn default() -> Self {
        SearchOwner::Own
    }
}

/// One status filter of a session search (9.11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SessionStatusQuery {
    /// Active sessions.
    Active,
    /// Cancelled sessions.
    Cancelled,
    /// Failed sessions.
    Failed,
    /// Sessions the client finished, optionally with these reasons (`success`, `errored`,
    /// `interrupted`).
    ClientFinished {
        /// Reasons (≥ 1 when present).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reasons: Option<Vec<String>>,
    },
}

/// Page cursor of a session search (9.11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionSearchCursor {
    /// Creation time of the last session of the previous page (timezone-aware).
    pub last_created_at: String,
    /// Id of that session.
    pub last_session_id: String,
}

/// `POST /api/v1/sessions/search` body (9.11): `None` fields omitted, defaults written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionSearchRequest {
    /// Exact session id (OR-ed with `display_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Restrict to these projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ids: Option<Vec<String>>,
    /// Every pair must match.
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
    /// Case-insensitive words of the display name (≥ 1 char).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Whose sessions.
    #[serde(default)]
    pub owner: SearchOwner,
    /// Any-of status filters (≥ 1 when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<SessionStatusQuery>>,
    /// Page size, 1…200.
    #[serde(default = "default_search_limit")]
    pub limit: i64,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<SessionSearchCursor>,
}

fn default_search_limit() -> i64 {
    50
}

impl Default for SessionSearchRequest {
    fn default() -> Self {
        SessionSearchRequest {
            session_id: None,
            project_ids: None,
            user_metadata: BTreeMap::new(),
            display_name: None,
            owner: SearchOwner::Own,
            statuses: None,
            limit: default_search_limit(),
            cursor: None,
        }
    }
}

impl SessionSearchRequest {
    /// The client-side checks of the official model (pydantic constraints).
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=200).contains(&self.limit) {
            return Err(format!("limit must be in 1..=200, got {}", self.limit));
        }
        if self.display_name.as_deref() == Some("") {
            return Err("display_name must have at least 1 character".into());
        }
        if let SearchOwner::User { owner_urns } = &self.owner {
            if !(1..=10).contains(&owner_urns.len()) {
                return Err(format!(
                    "owner.owner_urns must hold 1 to 10 URNs, got {}",
                    owner_urns.len()
                ));
            }
        }
        if let Some(s) = &self.statuses {
            if s.is_empty() {
                return Err("statuses must hold at least one status when given".into());
            }
            for q in s {
                if let SessionStatusQuery::ClientFinished {
                    reasons: Some(reasons),
                } = q
                {
                    if reasons.is_empty() {
                        return Err("client_finished.reasons must not be empty when given".into());
                    }
                    if let Some(r) = reasons
                        .iter()
                        .find(|r| !matches!(r.as_str(), "success" | "errored" | "interrupted"))
                    {
                        return Err(format!(
                            "client_finished.reasons: {:?} is not one of success, errored, interrupted",
                            crate::core::sanitize::bounded(r, 64)
                        ));
                    }
                }
            }
        }
        if let Some(c) = &self.cursor {
            if !crate::core::rest::is_rfc3339(&c.last_created_at, true) {
                return Err(
                    "cursor.last_created_at must be a timezone-aware RFC 3339 datetime".into(),
                );
            }
        }
        Ok(())
    }
}

/// A session's status in search results (9.11), discriminated by `type`. Unknown
/// discriminators are kept as raw JSON ([`SessionStatus::Other`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum SessionStatus {
    /// A known status.
    Known(KnownSessionStatus),
    /// A status this client does not know.
    Other(serde_json::Value),
}

/// The session statuses of 9.11.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum KnownSessionStatus {
    /// Running.
    Active,
    /// Cancelled.
    Cancelled {
        /// Why.
        #[serde(default)]
        detail: Option<String>,
    },
    /// Finished by the client.
    ClientFinished {
        /// `{"type": "success"|"errored"|"interrupted"}`.
        reason: serde_json::Value,
        /// Detail text.
        #[serde(default)]
        detail: Option<String>,
    },
    /// Failed.
    Failed {
        /// `user` or `internal`.
        category: String,
        /// Message.
        message: String,
        /// `{"type": "request"|"training_run"|"sampling_session", …}`.
        reason: serde_json::Value,
    },
}

/// One session of a search result (9.11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionSummary {
    /// Session id.
    pub session_id: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Owner URN.
    pub owner: String,
    /// Project.
    pub project_id: String,
    /// Status.
    #[serde(default)]
    pub status: Option<SessionStatus>,
    /// Number of checkpoints.
    pub checkpoints_count: i64,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Checkpoint bytes stored.
    #[serde(default)]
    pub checkpoint_storage_bytes: Option<i64>,
}

/// `POST /api/v1/sessions/search` response (9.11).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionSearchResponse {
    /// Sessions, newest first.
    pub sessions: Vec<SessionSummary>,
    /// Cursor of the next page.
    #[serde(default)]
    pub next_cursor: Option<SessionSearchCursor>,
}

/// One audit log entry (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditLogEntry {
    /// When, RFC 3339.
    pub timestamp: String,
    /// `<resource>_<action>`.
    pub event: String,
    /// Event details.
    #[serde(default)]
    pub event_details: serde_json::Map<String, serde_json::Value>,
    /// Model id.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Tinker path.
    #[serde(default)]
    pub tinker_path: Option<String>,
    /// Purpose.
    #[serde(default)]
    pub purpose: Option<String>,
}

/// `GET /api/v1/audit` response (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditLogResponse {
    /// Entries.
    pub entries: Vec<AuditLogEntry>,
}

/// What a billing bucket counts (9.12), discriminated by `type`; unknown kinds are kept as
/// raw JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum BillingEventInfo {
    /// A known kind.
    Known(KnownBillingEventInfo),
    /// A kind this client does not know.
    Other(serde_json::Value),
}

/// The billing event kinds of 9.12.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum KnownBillingEventInfo {
    /// Training tokens.
    Training {
        /// Tokens.
        token_count: i64,
    },
    /// Sampling prefill tokens.
    SamplingPrefill {
        /// Served from the prefill cache.
        cached: bool,
        /// Tokens.
        token_count: i64,
    },
    /// Sampled tokens.
    SamplingSample {
        /// Tokens.
        token_count: i64,
    },
    /// Checkpoint operations.
    Checkpoint {
        /// Operations.
        count: i64,
    },
    /// Storage.
    Storage {
        /// Free storage.
        #[serde(default)]
        free: bool,
        /// GB-hours.
        gigabyte_hours: f64,
    },
}

/// One hourly bucket of billing usage (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BillingUsageEvent {
    /// Bucket start, RFC 3339.
    pub bucket_start: String,
    /// Bucket end, RFC 3339.
    pub bucket_end: String,
    /// Base model.
    #[serde(default)]
    pub base_model: Option<String>,
    /// Organisation-user URN.
    #[serde(default)]
    pub user_id: Option<String>,
    /// User name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// Session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Estimated gross cost, USD.
    #[serde(default)]
    pub estimated_cost_usd: Option<f64>,
    /// Rate per million tokens, USD.
    #[serde(default)]
    pub effective_rate_usd_per_million_tokens: Option<f64>,
    /// Rate per GB-month, USD.
    #[serde(default)]
    pub effective_rate_usd_per_gigabyte_month: Option<f64>,
    /// The kind and quantity.
    pub event_info: BillingEventInfo,
}

/// A session's attributes in a billing response (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BillingUsageSession {
    /// The session's metadata.
    #[serde(default)]
    pub user_metadata: Option<BTreeMap<String, String>>,
}

/// `GET /api/v1/billing/usage/events` response (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BillingUsageResponse {
    /// Buckets.
    pub data: Vec<BillingUsageEvent>,
    /// Session id → attributes.
    #[serde(default)]
    pub sessions: BTreeMap<String, BillingUsageSession>,
    /// Boundary between invoice-derived and published-rate estimates.
    #[serde(default)]
    pub cost_data_through: Option<String>,
}

/// One row of current checkpoint storage usage (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CurrentCheckpointStorageUsageItem {
    /// Project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Owner URN.
    #[serde(default)]
    pub org_user_urn: Option<String>,
    /// Owner email.
    #[serde(default)]
    pub user_email: Option<String>,
    /// Owner name.
    #[serde(default)]
    pub user_name: Option<String>,
    /// Checkpoints.
    pub checkpoint_count: i64,
    /// Bytes.
    pub size_bytes: i64,
    /// Gigabytes.
    pub size_gigabytes: f64,
    /// Estimated monthly cost, USD.
    #[serde(default)]
    pub estimated_monthly_cost_usd: Option<f64>,
}

/// `GET /api/v1/billing/usage/checkpoints/current` response (9.12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CurrentCheckpointStorageUsageResponse {
    /// Rate per GB-month, USD.
    #[serde(default)]
    pub effective_rate_usd_per_gigabyte_month: Option<f64>,
    /// Rows.
    pub data: Vec<CurrentCheckpointStorageUsageItem>,
}
