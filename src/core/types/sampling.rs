//! Sampling bodies (PROTOCOL.md 7.1 and 10.6-10.7).

use super::{ModelInput, TensorData};
use serde::{Deserialize, Serialize};

/// Stop condition: one string, several strings, or token ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum StopCondition {
    /// One stop string.
    String(String),
    /// Stop strings.
    Strings(Vec<String>),
    /// Stop token ids.
    Tokens(Vec<i64>),
}

/// Sampling parameters (10.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SamplingParams {
    /// Maximum generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop condition; `None` keeps implicit EOS stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopCondition>,
    /// Softmax temperature.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Top-k cut-off; -1 = no limit.
    #[serde(default = "minus_one")]
    pub top_k: i64,
    /// Nucleus cut-off.
    #[serde(default = "one")]
    pub top_p: f64,
}

fn one() -> f64 {
    1.0
}

fn minus_one() -> i64 {
    -1
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: None,
            seed: None,
            stop: None,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
        }
    }
}

/// `asample` body (7.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRequest {
    /// Independent samples to draw.
    #[serde(default = "one_u")]
    pub num_samples: i64,
    /// The prompt.
    pub prompt: ModelInput,
    /// Sampling parameters.
    pub sampling_params: SamplingParams,
    /// Legacy addressing by base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Legacy addressing by weights path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    /// The sampling session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_id: Option<String>,
    /// Per-client counter; makes the request id deterministic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<i64>,
    /// Return logprobs of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<bool>,
    /// Top-k logprobs per prompt position.
    #[serde(default)]
    pub topk_prompt_logprobs: i64,
    /// Top-k logprobs per sampled position.
    #[serde(default)]
    pub topk_sample_logprobs: i64,
    /// Requested target logprobs, int64 `[len(prompt)-1, K]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prompt_logprobs: Option<TensorData>,
    /// Alternative draws per prompt position.
    #[serde(default)]
    pub prompt_alt_tokens_k: i64,
    /// Score only the last N prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs_last_n: Option<i64>,
    /// Record per-sequence stability data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_stability_info: Option<bool>,
    /// Discriminator, `sample`.
    #[serde(rename = "type", default = "type_sample")]
    pub kind: String,
}

fn one_u() -> i64 {
    1
}

fn type_sample() -> String {
    "sample".into()
}

/// Per-position top-k `(token, logprob)` lists; `None` where not computed.
pub type TopkLogprobLists = Vec<Option<Vec<(i64, f32)>>>;

/// Why a sequence stopped (10.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Hit `max_tokens`.
    Length,
    /// Stop sequence, stop token or EOS.
    Stop,
}

/// One sampled continuation (JSON form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SampledSequence {
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Generated token ids.
    pub tokens: Vec<i64>,
    /// Per-token logprobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<f32>>,
    /// Per-position top-k `(token, logprob)` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_logprobs: Option<TopkLogprobLists>,
    /// Session-scoped id, from the submit answer's `sample_sequence_ids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_id: Option<String>,
}

/// Result of a sample future (JSON form, 14.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SampleResponse {
    /// One sequence per requested sample.
    pub sequences: Vec<SampledSequence>,
    /// Prompt logprobs; `None` where not computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<Vec<Option<f32>>>,
    /// Top-k per prompt position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_prompt_logprobs: Option<TopkLogprobLists>,
    /// Prompt tokens billed as cache hits.
    #[serde(default)]
    pub prompt_cache_hit_tokens: i64,
    /// Logprobs of the ids of the request's `target_prompt_logprobs`: float32, the same
    /// shape and layout, `0.0` in `-1` cells (7.1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_tensor_opt"
    )]
    pub target_prompt_logprobs: Option<TensorData>,
    /// The draws of the request's `prompt_alt_tokens_k` (7.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_alt_tokens: Option<PromptAltTokens>,
    /// Discriminator, `sample`.
    #[serde(rename = "type", default = "type_sample")]
    pub kind: String,
}

/// `k` independent draws from the model's next-token distribution at every prompt position
/// after the first: two dense `[len(prompt) - 1, k]` tensors (7.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PromptAltTokens {
    /// int64 token ids; row `i` holds alternatives to prompt token `i + 1`.
    #[serde(deserialize_with = "lenient_tensor")]
    pub tokens: TensorData,
    /// float32 logprobs of `tokens` at their positions.
    #[serde(deserialize_with = "lenient_tensor")]
    pub logprobs: TensorData,
}

fn lenient_tensor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TensorData, D::Error> {
    Ok(super::LenientTensorData::deserialize(d)?.0)
}

fn lenient_tensor_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<TensorData>, D::Error> {
    Ok(Option::<super::LenientTensorData>::deserialize(d)?.map(|t| t.0))
}

/// `POST /api/v1/join_sampling_session` body (5.9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinSamplingSessionRequest {
    /// The existing sampling session to join.
    pub sampling_session_id: String,
    /// Discriminator, `join_sampling_session`.
    #[serde(rename = "type", default = "type_join")]
    pub kind: String,
}

fn type_join() -> String {
    "join_sampling_session".into()
}

/// `join_sampling_session` answer (5.9): a server-allocated id unique among the sampling
/// session's clients (the original client is 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinSamplingSessionResponse {
    /// The clone id (`cloned_sampler_id`, 12.2).
    pub client_counter: i64,
    /// Discriminator, `join_sampling_session`.
    #[serde(rename = "type", default = "type_join")]
    pub kind: String,
}
