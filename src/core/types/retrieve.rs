//! Untyped futures and `retrieve_future` bodies (PROTOCOL.md section 8).

use serde::{Deserialize, Serialize};

/// The immediate answer of every future endpoint (6, 7.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UntypedApiFuture {
    /// Id to poll with `retrieve_future`.
    pub request_id: String,
    /// The model the request belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// One id per requested sample (asample only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_sequence_ids: Option<Vec<String>>,
}

/// `retrieve_future` body (8.1.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FutureRetrieveRequest {
    /// The future to fetch.
    pub request_id: String,
    /// May the server answer with size metadata instead of a large payload.
    #[serde(default)]
    pub allow_metadata_only: bool,
}

/// Server-reported state of a queued request (15.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// Queued or running normally.
    Active,
    /// The backend is short on capacity.
    PausedCapacity,
    /// A concurrency or rate limit of the caller is hit.
    PausedRateLimit,
    /// Any other or missing value.
    #[serde(other)]
    Unknown,
}

impl QueueState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Active => "active",
            QueueState::PausedCapacity => "paused_capacity",
            QueueState::PausedRateLimit => "paused_rate_limit",
            QueueState::Unknown => "unknown",
        }
    }
}

/// A try-again answer to a poll (200 JSON or the body of a 408).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TryAgainResponse {
    /// Always `try_again`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The polled request.
    pub request_id: String,
    /// Queue state; missing or unrecognised means unknown.
    #[serde(default)]
    pub queue_state: Option<QueueState>,
    /// Free-text reason for the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_state_reason: Option<String>,
}

/// Who is at fault for a failed request (10.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestErrorCategory {
    /// The server failed.
    Server,
    /// The request was invalid.
    User,
    /// Unclassified (also any unrecognised value).
    #[serde(other)]
    Unknown,
}

/// A future that completed with an error (HTTP 200 `{"error", "category"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestFailedResponse {
    /// Human-readable message.
    pub error: String,
    /// Fault category.
    #[serde(default = "unknown_category")]
    pub category: RequestErrorCategory,
}

fn unknown_category() -> RequestErrorCategory {
    RequestErrorCategory::Unknown
}

/// Size announcement instead of a large payload (`status: complete_metadata`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetadataOnlyResponse {
    /// Always `complete_metadata`.
    pub status: String,
    /// Uncompressed payload size in bytes.
    #[serde(default)]
    pub response_payload_size: Option<u64>,
}
