//! Training bodies (PROTOCOL.md section 6 and 10.4-10.9).

use super::{default_true, Datum, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// LoRA adapter settings (10.9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoraConfig {
    /// Adapter rank.
    pub rank: u32,
    /// Adapter init seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Train the unembedding.
    #[serde(default = "default_true")]
    pub train_unembed: bool,
    /// Train MLP (and MoE) layers.
    #[serde(default = "default_true")]
    pub train_mlp: bool,
    /// Train attention layers.
    #[serde(default = "default_true")]
    pub train_attn: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 32,
            seed: None,
            train_unembed: true,
            train_mlp: true,
            train_attn: true,
        }
    }
}

/// Optimizer family chosen at model creation (10.8); unknown families pass through.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OptimizerConfig {
    /// Family name, e.g. `adamw` or `dimuon`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Family-specific fields (e.g. `version`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: "adamw".into(),
            extra: Map::new(),
        }
    }
}

/// Adam step parameters; every field is always serialized (10.8).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct AdamParams {
    /// Learning rate.
    pub learning_rate: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables.
    pub grad_clip_norm: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams {
            learning_rate: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-12,
            weight_decay: 0.0,
            grad_clip_norm: 0.0,
        }
    }
}

/// `create_model` body (6.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateModelRequest {
    /// The owning session.
    pub session_id: String,
    /// Session counter of training clients.
    pub model_seq_id: i64,
    /// Base model name.
    pub base_model: String,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Map<String, Value>>,
    /// LoRA settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_config: Option<LoraConfig>,
    /// Optimizer family.
    #[serde(default)]
    pub optimizer_config: OptimizerConfig,
    /// Discriminator, `create_model`.
    #[serde(rename = "type", default = "type_create_model")]
    pub kind: String,
}

fn type_create_model() -> String {
    "create_model".into()
}

/// Result of a `create_model` future.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateModelResult {
    /// The new model's id.
    pub model_id: String,
    /// Discriminator.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `get_info` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetInfoRequest {
    /// The model to describe.
    pub model_id: String,
    /// Discriminator, `get_info`.
    #[serde(rename = "type", default = "type_get_info")]
    pub kind: String,
}

fn type_get_info() -> String {
    "get_info".into()
}

/// Architecture and tokenizer of a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ModelData {
    /// Architecture family.
    #[serde(default)]
    pub arch: Option<String>,
    /// Base model name.
    #[serde(default)]
    pub model_name: Option<String>,
    /// Tokenizer id, cut at its first `:` as the official SDK does on receipt
    /// (`Qwen/Qwen3-8B:rev` → `Qwen/Qwen3-8B`, PROTOCOL.md 6.2).
    #[serde(default, deserialize_with = "tokenizer_id_before_colon")]
    pub tokenizer_id: Option<String>,
}

/// Deserializes `model_data.tokenizer_id` keeping the text before its first `:`.
fn tokenizer_id_before_colon<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let id: Option<String> = Option::deserialize(d)?;
    Ok(id.map(|s| match s.split_once(':') {
        Some((before, _)) => before.to_string(),
        None => s,
    }))
}

/// `get_info` response (6.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GetInfoResponse {
    /// Architecture and tokenizer.
    pub model_data: ModelData,
    /// The model id.
    pub model_id: String,
    /// Optimizer family.
    #[serde(default)]
    pub optimizer_config: OptimizerConfig,
    /// Whether the model is a LoRA adapter.
    #[serde(default)]
    pub is_lora: Option<bool>,
    /// LoRA rank.
    #[serde(default)]
    pub lora_rank: Option<u32>,
    /// Base model name.
    #[serde(default)]
    pub model_name: Option<String>,
    /// Discriminator.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// Loss function names (10.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossFnType {
    /// Weighted negative log-likelihood.
    CrossEntropy,
    /// Policy gradient with importance weights.
    ImportanceSampling,
    /// Clipped-ratio policy gradient.
    Ppo,
    /// CISPO.
    Cispo,
    /// DRO.
    Dro,
    /// GSPO.
    Gspo,
    /// Stable REINFORCE.
    StableReinforce,
    /// Server-side custom loss (`loss_fn_config.loss_id`).
    Custom,
}

impl LossFnType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LossFnType::CrossEntropy => "cross_entropy",
            LossFnType::ImportanceSampling => "importance_sampling",
            LossFnType::Ppo => "ppo",
            LossFnType::Cispo => "cispo",
            LossFnType::Dro => "dro",
            LossFnType::Gspo => "gspo",
            LossFnType::StableReinforce => "stable_reinforce",
            LossFnType::Custom => "custom",
        }
    }
}

/// A `loss_fn_config` value: a number or a string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum LossConfigValue {
    /// Numeric parameter.
    Number(f64),
    /// Text parameter (e.g. a `loss_id`).
    Text(String),
}

/// Legacy JSON `forward_backward_input` (6.3, 10.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ForwardBackwardInput {
    /// Training examples.
    pub data: Vec<Datum>,
    /// Loss function name (kept as text so unknown names reach the server's error).
    pub loss_fn: String,
    /// Loss parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
}

/// Legacy JSON `forward_backward` / `forward` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForwardBackwardJsonRequest {
    /// The batch (named `forward_input` on the legacy forward endpoint).
    #[serde(alias = "forward_input")]
    pub forward_backward_input: ForwardBackwardInput,
    /// The model.
    pub model_id: String,
    /// Ordering id.
    #[serde(default)]
    pub seq_id: Option<i64>,
}

/// Logical result of a forward/forward_backward future (6.3).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ForwardBackwardOutput {
    /// Output record class name, e.g. `ArrayRecord`.
    pub loss_fn_output_type: String,
    /// One map name → tensor per datum (read leniently: a response).
    #[serde(deserialize_with = "super::tensor::lenient_tensor_maps")]
    pub loss_fn_outputs: Vec<BTreeMap<String, TensorData>>,
    /// Metrics keyed `name:reduction`.
    pub metrics: BTreeMap<String, f64>,
}

/// `optim_step` body (6.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimStepRequest {
    /// The model.
    pub model_id: String,
    /// Ordering id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<i64>,
    /// Adam parameters (Adam family).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "optim_params"
    )]
    pub adam_params: Option<AdamParams>,
    /// Any other family's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_params: Option<Map<String, Value>>,
    /// Discriminator, `optim_step`.
    #[serde(rename = "type", default = "type_optim_step")]
    pub kind: String,
}

fn type_optim_step() -> String {
    "optim_step".into()
}

/// Result of an `optim_step` future.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OptimStepResult {
    /// Optimizer metrics.
    #[serde(default)]
    pub metrics: Option<BTreeMap<String, f64>>,
}

/// `save_weights` body (6.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaveWeightsRequest {
    /// The model.
    pub model_id: String,
    /// Checkpoint name (not a URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Ordering id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<i64>,
    /// Expiry, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Replace an existing checkpoint of that name.
    #[serde(default)]
    pub overwrite: bool,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Discriminator, `save_weights`.
    #[serde(rename = "type", default = "type_save_weights")]
    pub kind: String,
}

fn type_save_weights() -> String {
    "save_weights".into()
}

/// Result of `save_weights`, `save_weights_for_sampler` and `load_weights` futures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightsResult {
    /// `tinker://` path of the checkpoint.
    #[serde(default)]
    pub path: Option<String>,
    /// Sampling session created by an ephemeral save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_id: Option<String>,
    /// Model created by a create-via-load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Discriminator.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// `save_weights_for_sampler` body (6.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaveWeightsForSamplerRequest {
    /// The model.
    pub model_id: String,
    /// Name for a named save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Sampling counter value for an ephemeral save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_seq_id: Option<i64>,
    /// `snapshot` or `inflight`.
    #[serde(default = "kind_snapshot")]
    pub kind: String,
    /// Ordering id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<i64>,
    /// Expiry, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Discriminator, `save_weights_for_sampler`.
    #[serde(rename = "type", default = "type_save_weights_for_sampler")]
    pub request_type: String,
}

fn kind_snapshot() -> String {
    "snapshot".into()
}

fn type_save_weights_for_sampler() -> String {
    "save_weights_for_sampler".into()
}

/// `load_weights` body (6.8).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadWeightsRequest {
    /// Legacy addressing: existing model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Legacy addressing: ordering id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<i64>,
    /// Create-via-load addressing: session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Create-via-load addressing: training-client counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_seq_id: Option<i64>,
    /// Base model override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Free-form metadata (create-via-load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Map<String, Value>>,
    /// `tinker://` checkpoint path.
    pub path: String,
    /// Also restore optimizer state.
    #[serde(default)]
    pub optimizer: bool,
    /// Optimizer for a weights-only model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_config: Option<OptimizerConfig>,
    /// Token for checkpoints of another account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_access_token: Option<String>,
    /// Discriminator, `load_weights`.
    #[serde(rename = "type", default = "type_load_weights")]
    pub kind: String,
}

fn type_load_weights() -> String {
    "load_weights".into()
}

/// Dimuon step parameters, sent as `optimizer_params` (PROTOCOL.md 10.8). Closed: an
/// unknown field is an error, as in the official `DimuonParams` (`extra="forbid"`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DimuonParams {
    /// Step size; finite and `>= 0` (required).
    pub learning_rate: f64,
    /// Global gradient-norm clip; non-positive disables clipping.
    #[serde(default)]
    pub grad_clip_norm: f64,
    /// Momentum EMA coefficient, `0 <= beta1 < 1`.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
}

fn default_beta1() -> f64 {
    0.9
}

impl DimuonParams {
    /// The official constraints: every value finite (NaN/Inf rejected), `learning_rate >= 0`,
    /// `0 <= beta1 < 1`.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("learning_rate", self.learning_rate),
            ("grad_clip_norm", self.grad_clip_norm),
            ("beta1", self.beta1),
        ] {
            if !v.is_finite() {
                return Err(format!("DimuonParams.{name} must be finite, got {v}"));
            }
        }
        if self.learning_rate < 0.0 {
            return Err(format!(
                "DimuonParams.learning_rate must be >= 0, got {}",
                self.learning_rate
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return Err(format!(
                "DimuonParams.beta1 must be in [0, 1), got {}",
                self.beta1
            ));
        }
        Ok(())
    }

    /// The `optimizer_params` object, `type` first.
    pub fn to_wire(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), "dimuon".into());
        m.insert("learning_rate".into(), self.learning_rate.into());
        m.insert("grad_clip_norm".into(), self.grad_clip_norm.into());
        m.insert("beta1".into(), self.beta1.into());
        m
    }
}

impl OptimizerConfig {
    /// `{"type": "dimuon", "version": 1}`.
    pub fn dimuon() -> Self {
        let mut extra = Map::new();
        extra.insert("version".into(), 1.into());
        OptimizerConfig {
            kind: "dimuon".into(),
            extra,
        }
    }

    /// The official SDK's checks of the two known families (both closed, `extra="forbid"`):
    /// `adamw` takes no other field; `dimuon` takes only `version`, which must be 1 (default
    /// 1, filled in). Unknown families pass through unchanged.
    pub fn normalized(mut self) -> Result<Self, String> {
        match self.kind.as_str() {
            "adamw" => {
                if let Some(k) = self.extra.keys().next() {
                    return Err(format!(
                        "optimizer {{\"type\": \"adamw\"}} takes no other field, got {k:?}"
                    ));
                }
            }
            "dimuon" => {
                if let Some(k) = self.extra.keys().find(|k| *k != "version") {
                    return Err(format!(
                        "optimizer {{\"type\": \"dimuon\"}} takes only \"version\", got {k:?}"
                    ));
                }
                match self.extra.get("version") {
                    None => {
                        self.extra.insert("version".into(), 1.into());
                    }
                    Some(v) if v.as_i64() == Some(1) => {}
                    Some(v) => {
                        return Err(format!("dimuon optimizer version must be 1, got {v}"));
                    }
                }
            }
            "" => return Err("optimizer `type` must not be empty".into()),
            _ => {}
        }
        Ok(self)
    }
}

/// `save_weights_external` body (6.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaveWeightsExternalRequest {
    /// The model.
    pub model_id: String,
    /// Name of the export (not a URI).
    pub path: String,
    /// Ordering id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<i64>,
    /// Expiry, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// age recipients (at most 10); the files then get a `.age` suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_encryption_recipients: Option<Vec<String>>,
    /// Discriminator, `save_weights_external`.
    #[serde(rename = "type", default = "type_save_weights_external")]
    pub kind: String,
}

fn type_save_weights_external() -> String {
    "save_weights_external".into()
}

/// Result of a `load_state` / `load_state_with_optimizer` future: the server's
/// `LoadWeightsResponse` (PROTOCOL.md 6.8), passed through as the server sent it (every
/// field optional, as in the official SDK's model).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoadWeightsResponse {
    /// `tinker://` path of the loaded checkpoint, when the server reports it.
    #[serde(default)]
    pub path: Option<String>,
    /// Canonical id of the model the weights were loaded onto, when reported.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Discriminator, `load_weights` (absent when the server leaves it out).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// Result of a `save_weights_external` future.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SaveWeightsExternalResult {
    /// `tinker://<run>/external_weights/<name>`.
    pub path: String,
    /// Size of the export, when the server reports it.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// One input of a server-side custom loss (5.10): a parameter name and its rank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CustomLossInput {
    /// Parameter name (`logprobs` first, then `loss_fn_inputs` keys).
    pub name: String,
    /// 0 (scalar), 1 (`[T]`) or 2 (`[T, K]`).
    pub rank: u8,
}

/// `create_custom_loss` body (5.10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateCustomLossRequest {
    /// The session.
    pub session_id: String,
    /// Session counter of custom losses, from 0.
    pub custom_loss_seq_id: i64,
    /// The loss function's name.
    pub name: String,
    /// Its inputs, `logprobs` first.
    pub inputs: Vec<CustomLossInput>,
    /// The traced graph, `{"format": 1, "nodes": [...]}`.
    pub graph: Value,
    /// Discriminator, `create_custom_loss`.
    #[serde(rename = "type", default = "type_create_custom_loss")]
    pub kind: String,
}

fn type_create_custom_loss() -> String {
    "create_custom_loss".into()
}

/// Result of a `create_custom_loss` future.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateCustomLossResult {
    /// The server's id of the loss, for `loss_fn_config.loss_id`.
    pub loss_id: String,
}
