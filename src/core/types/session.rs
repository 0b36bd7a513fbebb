//! Configuration, session and sampling-session bodies (PROTOCOL.md section 5).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body of `client/config` and `client/dynamic_config` requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SdkVersionRequest {
    /// The SDK version the client implements.
    pub sdk_version: String,
}

/// Startup feature flags from `POST /api/v1/client/config` (5.3); defaults as the SDK's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// Use the JWT exchange.
    pub pjwt_auth_enabled: bool,
    /// Where the raw credential comes from (`api_key` or `credential_cmd`).
    pub credential_default_source: String,
    /// Sampling dispatch byte budget.
    pub sample_dispatch_bytes_semaphore_size: u64,
    /// Budget for large results announced by metadata-only responses.
    pub inflight_response_bytes_semaphore_size: u64,
    /// Submit the chunks of one forward_backward concurrently.
    pub parallel_fwdbwd_chunks: bool,
    /// zstd-compress the protobuf forward_backward body.
    pub proto_compress_fwdbwd: bool,
    /// Max datums per forward_backward request.
    pub fwdbwd_max_chunk_len: u64,
    /// Max estimated serialized bytes per forward_backward request.
    pub fwdbwd_max_chunk_bytes_count: u64,
    /// forward_backward dispatch byte budget.
    pub fwdbwd_dispatch_bytes_semaphore_size: u64,
    /// How long 402 responses are waited out, seconds.
    pub billing_exception_max_pause_duration_sec: u64,
    /// Disable the sampling retry handler for `sample()`.
    pub sample_no_retries: bool,
    /// Enable the sampling progress timeout.
    pub sample_enable_stuck_detection: bool,
    /// Sampling retry-handler concurrency.
    pub sample_max_concurrent_requests: u64,
    /// Transport choice of the Python SDK (no wire effect).
    pub use_pyqwest_transport: bool,
    /// Use the batched `retrieve_futures` poller for sampling.
    pub sample_use_retrieve_futures: bool,
    /// Run traced custom losses server-side.
    pub custom_loss_server_side: bool,
    /// Clones ask the server for a clone id.
    pub sample_join_sampling_session: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            pjwt_auth_enabled: false,
            credential_default_source: "api_key".into(),
            sample_dispatch_bytes_semaphore_size: 10_485_760,
            inflight_response_bytes_semaphore_size: 52_428_800,
            parallel_fwdbwd_chunks: true,
            proto_compress_fwdbwd: false,
            fwdbwd_max_chunk_len: 1024,
            fwdbwd_max_chunk_bytes_count: 5_000_000,
            fwdbwd_dispatch_bytes_semaphore_size: 50_000_000,
            billing_exception_max_pause_duration_sec: 3600,
            sample_no_retries: false,
            sample_enable_stuck_detection: true,
            sample_max_concurrent_requests: 2000,
            use_pyqwest_transport: true,
            sample_use_retrieve_futures: false,
            custom_loss_server_side: false,
            sample_join_sampling_session: false,
        }
    }
}

/// Periodically refreshed flags from `POST /api/v1/client/dynamic_config` (5.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicConfig {
    /// Refresh period, seconds (the client waits at least 10 s).
    pub refresh_interval_sec: u64,
    /// Send `cancel_future` for abandoned sampling futures.
    pub sample_cancel_enabled: bool,
    /// Cancels dispatched concurrently per drain iteration.
    pub sample_cancel_max_batch_size: u64,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            refresh_interval_sec: 300,
            sample_cancel_enabled: false,
            sample_cancel_max_batch_size: 64,
        }
    }
}

/// `POST /api/v1/create_session` body (5.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateSessionRequest {
    /// Session tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub user_metadata: Map<String, Value>,
    /// SDK version.
    #[serde(default)]
    pub sdk_version: String,
    /// Project to bill and group under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Human-readable, non-unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Discriminator, `create_session`.
    #[serde(default = "create_session_type", rename = "type")]
    pub kind: String,
}

fn create_session_type() -> String {
    "create_session".into()
}

/// `create_session` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateSessionResponse {
    /// The new session's id.
    pub session_id: String,
    /// Discriminator, `create_session`.
    #[serde(default = "create_session_type", rename = "type")]
    pub kind: String,
    /// Logged at INFO.
    #[serde(default)]
    pub info_message: Option<String>,
    /// Logged at WARNING.
    #[serde(default)]
    pub warning_message: Option<String>,
    /// Logged at ERROR.
    #[serde(default)]
    pub error_message: Option<String>,
}

/// `session_heartbeat` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionHeartbeatRequest {
    /// The session being kept alive.
    pub session_id: String,
    /// Discriminator, `session_heartbeat`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Why a session finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FinishReasonKind {
    /// Clean exit.
    Success,
    /// The user's program failed.
    Errored,
    /// Interrupted (e.g. Ctrl-C).
    Interrupted,
}

/// The `reason` object of a finish request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FinishReason {
    /// The reason's kind.
    #[serde(rename = "type")]
    pub kind: FinishReasonKind,
}

/// `sessions/{id}/finish` body (3.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishSessionRequest {
    /// Why the session ended.
    pub reason: FinishReason,
    /// Free text; always present, `null` when not given.
    pub detail: Option<String>,
}

/// `create_sampling_session` body (5.8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateSamplingSessionRequest {
    /// The owning session.
    pub session_id: String,
    /// Next value of the session's sampling counter.
    pub sampling_session_seq_id: i64,
    /// Base model to sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// `tinker://` sampler weights to sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    /// Discriminator, `create_sampling_session`.
    #[serde(default = "create_sampling_session_type", rename = "type")]
    pub kind: String,
}

fn create_sampling_session_type() -> String {
    "create_sampling_session".into()
}

/// `create_sampling_session` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateSamplingSessionResponse {
    /// The new sampling session's id.
    pub sampling_session_id: String,
    /// Discriminator.
    #[serde(default = "create_sampling_session_type", rename = "type")]
    pub kind: String,
}

/// `GET /api/v1/samplers/{id}` response (7.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetSamplerResponse {
    /// The sampling session id.
    pub sampler_id: String,
    /// Base model served.
    pub base_model: String,
    /// Weights path, if not the base model.
    #[serde(default)]
    pub model_path: Option<String>,
}

/// One entry of the server's capabilities (5.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SupportedModel {
    /// Model name, e.g. `Qwen/Qwen3-8B`.
    #[serde(default)]
    pub model_name: Option<String>,
    /// Max context length in tokens.
    #[serde(default)]
    pub max_context_length: Option<i64>,
    /// Training runs can be created on it.
    #[serde(default)]
    pub trainable: Option<bool>,
    /// Has sampling capacity.
    #[serde(default)]
    pub sampleable: Option<bool>,
}

/// `GET /api/v1/get_server_capabilities` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServerCapabilities {
    /// Models the server serves.
    pub supported_models: Vec<SupportedModel>,
}
