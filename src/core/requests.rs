//! The JSON inputs of client operations, one type per operation, and the results that have
//! no wire type of their own.
//!
//! These are the types the C ABI parses (`src/ffi` deserializes them as they are and calls
//! the `*_with` method of the client), and a Rust caller may use the same methods. Every
//! closed model rejects unknown fields, naming the field; what the protocol leaves open stays
//! open (`loss_fn_config`, extra `loss_fn_inputs` keys, `user_metadata`, the parameters of an
//! optimizer family this client does not know). The JSON Schema of each type (feature
//! `schema`) is committed under `docs/schema/` (see `tests/schema.rs`).
//!
//! Inputs shared with the wire live in [`crate::core::types`]: [`ForwardBackwardInput`]
//! (forward, forward_backward), [`AdamParams`], [`LoraConfig`], [`SamplingParams`],
//! [`ModelInput`], [`crate::core::types::Datum`], [`crate::core::types::TensorData`].

use crate::core::api_future::ApiFuture;
use crate::core::error::Error;
use crate::core::retry_handler::RetryConfigInput;
use crate::core::sampling::{SampleOptions, SamplingClient};
use crate::core::service::{LoraOptions, ServiceClient};
use crate::core::training::TrainingClient;
use crate::core::types::{
    AdamParams, CreateCustomLossResult, CustomLossInput, Datum, DimuonParams, FinishReason,
    FinishReasonKind, ForwardBackwardInput, ForwardBackwardOutput, LoraConfig, LossConfigValue,
    ModelInput, OptimStepResult, OptimizerConfig, SampleResponse, SamplingParams,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

// ------------------------------------------------------------------------------------------
// Service client
// ------------------------------------------------------------------------------------------

/// Input of `create_lora_training_client`: the `create_model` body without the fields the
/// client owns (PROTOCOL.md 6.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateLoraTrainingClientInput {
    /// Base model name, e.g. `Qwen/Qwen3-8B`.
    pub base_model: String,
    /// LoRA settings; absent means rank 32 with every layer group trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_config: Option<LoraConfig>,
    /// Metadata stored on the training run: an open map of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Optimizer family, fixed for the model's lifetime: `{"type": "adamw"}` (default),
    /// `{"type": "dimuon", "version": 1}`, or another family passed through unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerConfig>,
}

/// Input of `create_training_client_from_state`: a training checkpoint to start from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateTrainingClientFromStateInput {
    /// `tinker://<run>/weights/<name>` path of the checkpoint.
    pub path: String,
    /// Also restore the optimizer state (otherwise it is reset).
    #[serde(default)]
    pub optimizer: bool,
    /// Base model override; must be compatible with the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Metadata stored on the new training run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, String>>,
    /// Access token for a checkpoint under another account (sent raw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_access_token: Option<String>,
    /// Optimizer of the new weights-only model (only with `optimizer: false`; default
    /// `{"type": "adamw"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_config: Option<OptimizerConfig>,
}

/// Input of `create_custom_loss` (PROTOCOL.md 5.10): a loss traced elsewhere (e.g. by the
/// Python binding with `torch.fx`), as its inputs and encoded graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateCustomLossInput {
    /// The loss function's name.
    pub name: String,
    /// Its parameters with their ranks, `logprobs` first.
    pub inputs: Vec<CustomLossInput>,
    /// The encoded graph, `{"format": 1, "nodes": [...]}`.
    pub graph: Value,
}

/// Result of `create_custom_loss`: the server's id of the loss.
pub type CreateCustomLossOutput = CreateCustomLossResult;

fn default_true() -> bool {
    true
}

/// Input of `resume_training_run`: the run whose latest training checkpoint to resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ResumeTrainingRunInput {
    /// The training run id.
    pub training_run_id: String,
    /// Also restore the optimizer state (default true).
    #[serde(default = "default_true")]
    pub optimizer: bool,
}

/// Input of `create_sampling_client` (`SamplingClient.create`): exactly one of
/// `model_path`, `base_model` and `sampling_session_id` — except that `base_model` may come
/// with `sampling_session_id` (the base model is then not fetched, as in the SDK).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateSamplingClientInput {
    /// `tinker://<run>/sampler_weights/<name>` weights to sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    /// Base model to sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// An existing sampling session of this ServiceClient's session to sample from (no
    /// `create_sampling_session`; PROTOCOL.md 12.1). The client is not a clone: its
    /// `seq_id`s start at 0, as in the official SDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_id: Option<String>,
    /// Send `record_stability_info: true` on every sample of the client (12.1).
    #[serde(default)]
    pub record_stability_info: bool,
    /// The sampling retry handler's configuration (the Python `RetryConfig`, PROTOCOL.md
    /// 13.5); absent = the defaults. `max_connections` is always overridden by the server's
    /// `sample_max_concurrent_requests` (12.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_config: Option<RetryConfigInput>,
}

impl CreateSamplingClientInput {
    /// Checks that exactly one target is given (see the type), and that `retry_config` is
    /// valid.
    pub fn validate(&self) -> Result<(), String> {
        match (
            &self.model_path,
            &self.base_model,
            &self.sampling_session_id,
        ) {
            (Some(_), None, None) | (None, Some(_), None) | (None, _, Some(_)) => {}
            _ => {
                return Err(
                    "give exactly one of model_path, base_model and sampling_session_id".into(),
                )
            }
        }
        if let Some(r) = &self.retry_config {
            r.to_config().map_err(|e| e.message)?;
        }
        Ok(())
    }
}

fn success() -> FinishReason {
    FinishReason {
        kind: FinishReasonKind::Success,
    }
}

/// Input of `close`: the `sessions/{id}/finish` body (PROTOCOL.md 3.5); every field
/// optional (an empty object means success).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CloseInput {
    /// Why the session ended; default `{"type": "success"}`.
    #[serde(default = "success")]
    pub reason: FinishReason,
    /// Free text sent with the reason.
    #[serde(default)]
    pub detail: Option<String>,
}

impl Default for CloseInput {
    fn default() -> Self {
        CloseInput {
            reason: success(),
            detail: None,
        }
    }
}

impl ServiceClient {
    /// [`create_lora_training_client`](Self::create_lora_training_client) from its JSON
    /// input.
    pub fn create_lora_training_client_with(
        &self,
        input: &CreateLoraTrainingClientInput,
    ) -> ApiFuture<TrainingClient> {
        let lora = input.lora_config.clone().unwrap_or_default();
        let options = LoraOptions {
            rank: lora.rank,
            seed: lora.seed,
            train_unembed: lora.train_unembed,
            train_mlp: lora.train_mlp,
            train_attn: lora.train_attn,
        };
        let optimizer = match input.optimizer.clone().map(OptimizerConfig::normalized) {
            None => OptimizerConfig::default(),
            Some(Ok(o)) => o,
            Some(Err(e)) => return ApiFuture::ready(Err(Error::user(e))),
        };
        self.create_model_full(
            &input.base_model,
            options,
            input.user_metadata.clone(),
            optimizer,
        )
    }

    /// [`create_training_client_from_state`](Self::create_training_client_from_state) (or
    /// its `_with_optimizer` form) from its JSON input.
    pub fn create_training_client_from_state_with(
        &self,
        input: &CreateTrainingClientFromStateInput,
    ) -> ApiFuture<TrainingClient> {
        if input.optimizer && input.optimizer_config.is_some() {
            return ApiFuture::ready(Err(Error::user(
                "optimizer_config applies only to a weights-only load (optimizer: false); a \
                 load with optimizer state keeps the checkpoint's optimizer",
            )));
        }
        let optimizer_config = match input
            .optimizer_config
            .clone()
            .map(OptimizerConfig::normalized)
        {
            None => None,
            Some(Ok(o)) => Some(o),
            Some(Err(e)) => return ApiFuture::ready(Err(Error::user(e))),
        };
        self.training_client_from_state_full(crate::core::service::FromStateOptions {
            path: input.path.clone(),
            optimizer: input.optimizer,
            base_model: input.base_model.clone(),
            user_metadata: input.user_metadata.clone(),
            weights_access_token: input.weights_access_token.clone(),
            optimizer_config,
        })
    }

    /// [`create_custom_loss`](Self::create_custom_loss) from its JSON input.
    pub fn create_custom_loss_with(
        &self,
        input: CreateCustomLossInput,
    ) -> ApiFuture<CreateCustomLossResult> {
        self.create_custom_loss(input.name, input.inputs, input.graph)
    }

    /// [`resume_training_run`](Self::resume_training_run) from its JSON input.
    pub fn resume_training_run_with(
        &self,
        input: &ResumeTrainingRunInput,
    ) -> ApiFuture<TrainingClient> {
        self.resume_training_run_opts(&input.training_run_id, input.optimizer)
    }

    /// [`create_sampling_client`](Self::create_sampling_client) or
    /// [`create_sampling_client_for_base_model`](Self::create_sampling_client_for_base_model)
    /// from its JSON input; fails (user error) unless exactly one target is given.
    pub fn create_sampling_client_with(
        &self,
        input: &CreateSamplingClientInput,
    ) -> ApiFuture<SamplingClient> {
        let retry_config = match input.retry_config.as_ref().map(|r| r.to_config()) {
            Some(Err(e)) => return ApiFuture::ready(Err(e)),
            Some(Ok(c)) => Some(c),
            None => None,
        };
        if let Err(e) = input.validate() {
            return ApiFuture::ready(Err(Error::user(e)));
        }
        let created = match (
            &input.model_path,
            &input.base_model,
            &input.sampling_session_id,
        ) {
            (_, base, Some(id)) => self.sampling_client_for_session(id, base.clone()),
            (Some(p), None, None) => self.create_sampling_client(p),
            (None, Some(b), None) => self.create_sampling_client_for_base_model(b),
            _ => unreachable!("validated above"),
        };
        let record = input.record_stability_info;
        ApiFuture::spawn(&self.core().runtime, move |_| async move {
            let client = created.await?.with_record_stability_info(record);
            Ok(match retry_config {
                None => client,
                Some(config) => client.with_retry_config(config),
            })
        })
    }

    /// [`close`](Self::close) as an [`ApiFuture`] running on the client's runtime.
    pub fn close_with(&self, input: CloseInput) -> ApiFuture<()> {
        let client = self.clone();
        ApiFuture::spawn(&self.core().runtime, move |_| async move {
            client.close(input.reason.kind, input.detail).await
        })
    }
}

// ------------------------------------------------------------------------------------------
// Training client
// ------------------------------------------------------------------------------------------

/// Input of the batch forms of `forward_backward` / `forward` (the datums come from a datum
/// batch): the loss (PROTOCOL.md 10.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LossInput {
    /// Loss function name (kept as text so unknown names reach the server's error).
    pub loss_fn: String,
    /// Loss parameters: an open map of names to numbers or strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
}

impl ForwardBackwardInput {
    /// The input of datums given separately (a datum batch) and a loss.
    pub fn from_parts(data: Vec<Datum>, loss: LossInput) -> Self {
        ForwardBackwardInput {
            data,
            loss_fn: loss.loss_fn,
            loss_fn_config: loss.loss_fn_config,
        }
    }
}

/// Input of `optim_step` (PROTOCOL.md 10.8): Adam step parameters, or the parameters of
/// another optimizer family, passed through with all their fields.
///
/// JSON: an object without `type` (or with `"type": "adam"` / `"adamw"` / `null`) is
/// [`AdamParams`] (closed: a misspelled field is an error); `"type": "dimuon"` is
/// [`DimuonParams`] (closed; NaN/Inf and out-of-range values rejected); an object with any
/// other `type` is sent as `optimizer_params` unchanged.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimStepInput {
    /// Adam parameters (sent as `adam_params`).
    Adam(AdamParams),
    /// Dimuon parameters (sent as `optimizer_params`).
    Dimuon(DimuonParams),
    /// Another family's parameters, `type` included (sent as `optimizer_params`).
    Other(Map<String, Value>),
}

impl Default for OptimStepInput {
    fn default() -> Self {
        OptimStepInput::Adam(AdamParams::default())
    }
}

impl Serialize for OptimStepInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OptimStepInput::Adam(p) => p.serialize(s),
            OptimStepInput::Dimuon(p) => p.to_wire().serialize(s),
            OptimStepInput::Other(m) => m.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OptimStepInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut map = Map::<String, Value>::deserialize(d)?;
        match map.get("type") {
            None => {}
            Some(Value::Null) => {
                map.remove("type");
            }
            Some(Value::String(t)) if t == "adam" || t == "adamw" => {
                map.remove("type");
            }
            Some(Value::String(t)) if t == "dimuon" => {
                map.remove("type");
                // Values are checked by `optim_step_dimuon` (a user error, not a JSON one).
                return DimuonParams::deserialize(Value::Object(map))
                    .map(OptimStepInput::Dimuon)
                    .map_err(|e| D::Error::custom(e.to_string()));
            }
            Some(Value::String(_)) => return Ok(OptimStepInput::Other(map)),
            Some(_) => return Err(D::Error::custom("optimizer `type` must be a string")),
        }
        AdamParams::deserialize(Value::Object(map))
            .map(OptimStepInput::Adam)
            .map_err(|e| D::Error::custom(e.to_string()))
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for OptimStepInput {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OptimStepInput".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let adam = generator.subschema_for::<AdamParams>();
        schemars::json_schema!({
            "description": "Adam step parameters (closed; the parser also accepts `\"type\": \"adam\"` or `\"adamw\"` beside them), another optimizer family's parameters with its `type` (open, passed through as `optimizer_params`), or Dimuon parameters (closed; values checked when submitted: finite, learning_rate >= 0, 0 <= beta1 < 1).",
            "anyOf": [
                adam,
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {"type": "string", "not": {"enum": ["adam", "adamw", "dimuon"]}}
                    },
                    "additionalProperties": true
                },
                {
                    "type": "object",
                    "description": "DimuonParams (PROTOCOL.md 10.8), sent as optimizer_params.",
                    "required": ["type", "learning_rate"],
                    "properties": {
                        "type": {"const": "dimuon"},
                        "learning_rate": {"type": "number", "minimum": 0},
                        "grad_clip_norm": {"type": "number", "default": 0.0},
                        "beta1": {"type": "number", "default": 0.9, "minimum": 0, "exclusiveMaximum": 1}
                    },
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// Input of `save_state`: the `save_weights` body without the fields the client owns
/// (PROTOCOL.md 6.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SaveStateInput {
    /// Checkpoint name (not a URI).
    pub path: String,
    /// Expiry in seconds (3600 … 10 years); absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Replace an existing checkpoint of the same name.
    #[serde(default)]
    pub overwrite: bool,
    /// Metadata stored with the checkpoint: an open map of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, String>>,
}

impl SaveStateInput {
    /// A save of the given name with no TTL, no overwrite and no metadata.
    pub fn named(path: impl Into<String>) -> Self {
        SaveStateInput {
            path: path.into(),
            ttl_seconds: None,
            overwrite: false,
            user_metadata: None,
        }
    }
}

/// Input of `save_weights_for_sampler`: the named body without client-owned fields (6.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SaveWeightsForSamplerInput {
    /// Name of the sampler weights (not a URI).
    pub path: String,
    /// Expiry in seconds; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Metadata stored with the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<BTreeMap<String, String>>,
}

/// Input of `save_weights_external` (6.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SaveWeightsExternalInput {
    /// Name of the export (not a URI).
    pub path: String,
    /// Expiry in seconds; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// At most 10 age recipients (`age1…` or SSH public keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_encryption_recipients: Option<Vec<String>>,
}

/// Input of `save_weights_and_get_sampling_client` (6.6, ephemeral save).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SaveWeightsAndGetSamplingClientInput {
    /// `snapshot` (default: fixed weights) or `inflight` (a mutable target later saves
    /// update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The sampling client's retry handler configuration (13.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_config: Option<RetryConfigInput>,
    /// Ask the server to record stability information with every sample.
    #[serde(default)]
    pub record_stability_info: bool,
}

/// Input of `load_state`: a training checkpoint to load into the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LoadStateInput {
    /// `tinker://<run>/weights/<name>` path of the checkpoint.
    pub path: String,
    /// Also restore the optimizer state (otherwise it is reset).
    #[serde(default)]
    pub optimizer: bool,
    /// Access token for a checkpoint under another account (sent raw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_access_token: Option<String>,
}

/// Result of `save_state` and `save_weights_for_sampler`: where the checkpoint is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SavedPath {
    /// `tinker://` path of the checkpoint.
    pub path: String,
}

/// Input of `tinkex_custom_loss_set_metrics`: the client-side loss's metrics by name
/// (`{"loss:sum": L, ...}`); an open map.
pub type CustomLossMetricsInput = BTreeMap<String, f64>;

/// Result of `tinkex_tinker_path_parse`: the parts of a `tinker://` path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TinkerPathInfo {
    /// The training run (model) id.
    pub training_run_id: String,
    /// The checkpoint kind as its path segment (`weights`, `sampler_weights`, ...).
    pub kind: String,
    /// The checkpoint name.
    pub name: String,
    /// `{kind}/{name}`, the id the REST endpoints take.
    pub checkpoint_id: String,
}

impl From<&crate::core::types::TinkerPath> for TinkerPathInfo {
    fn from(p: &crate::core::types::TinkerPath) -> Self {
        TinkerPathInfo {
            training_run_id: p.training_run_id.clone(),
            kind: p.kind.segment().to_string(),
            name: p.name.clone(),
            checkpoint_id: p.checkpoint_id(),
        }
    }
}

/// Result of operations that return nothing (`close`, `load_state`): `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Empty {}

impl TrainingClient {
    /// [`forward_backward`](Self::forward_backward) from its JSON input.
    pub fn forward_backward_with(
        &self,
        input: ForwardBackwardInput,
    ) -> ApiFuture<ForwardBackwardOutput> {
        self.forward_backward(input.data, &input.loss_fn, input.loss_fn_config)
    }

    /// [`forward`](Self::forward) from its JSON input.
    pub fn forward_with(&self, input: ForwardBackwardInput) -> ApiFuture<ForwardBackwardOutput> {
        self.forward(input.data, &input.loss_fn, input.loss_fn_config)
    }

    /// `optim_step` with Adam or another family's parameters (PROTOCOL.md 10.8).
    pub fn optim_step_with(&self, input: OptimStepInput) -> ApiFuture<OptimStepResult> {
        match input {
            OptimStepInput::Adam(p) => self.optim_step(p),
            OptimStepInput::Dimuon(p) => self.optim_step_dimuon(p),
            OptimStepInput::Other(m) => self.optim_step_params(None, Some(m)),
        }
    }

    /// [`save_state`](Self::save_state) with TTL, overwrite and metadata.
    pub fn save_state_with(&self, input: SaveStateInput) -> ApiFuture<String> {
        self.save_state_impl(input)
    }

    /// [`save_weights_for_sampler`](Self::save_weights_for_sampler) from its JSON input.
    pub fn save_weights_for_sampler_with(
        &self,
        input: &SaveWeightsForSamplerInput,
    ) -> ApiFuture<String> {
        self.save_weights_for_sampler_full(
            &input.path,
            input.ttl_seconds,
            input.user_metadata.clone(),
        )
    }

    /// [`load_state`](Self::load_state) (or its `_with_optimizer` form) from its JSON input.
    pub fn load_state_with(
        &self,
        input: &LoadStateInput,
    ) -> ApiFuture<crate::core::types::LoadWeightsResponse> {
        self.load_impl(
            &input.path,
            input.optimizer,
            input.weights_access_token.clone(),
        )
    }

    /// [`save_weights_external`](Self::save_weights_external) from its JSON input.
    pub fn save_weights_external_with(
        &self,
        input: &SaveWeightsExternalInput,
    ) -> ApiFuture<crate::core::types::SaveWeightsExternalResult> {
        self.save_weights_external(
            &input.path,
            input.ttl_seconds,
            input.age_encryption_recipients.clone(),
        )
    }

    /// [`save_weights_and_get_sampling_client`](Self::save_weights_and_get_sampling_client)
    /// with `kind`, `retry_config` and `record_stability_info`.
    pub fn save_weights_and_get_sampling_client_with(
        &self,
        input: &SaveWeightsAndGetSamplingClientInput,
    ) -> ApiFuture<SamplingClient> {
        let kind = input.kind.clone().unwrap_or_else(|| "snapshot".into());
        if kind != "snapshot" && kind != "inflight" {
            return ApiFuture::ready(Err(Error::user(format!(
                "kind must be \"snapshot\" or \"inflight\", got {kind:?}"
            ))));
        }
        let retry_config = match input.retry_config.as_ref().map(|r| r.to_config()) {
            Some(Err(e)) => return ApiFuture::ready(Err(e)),
            Some(Ok(c)) => Some(c),
            None => None,
        };
        let created = self.save_weights_and_get_sampling_client_kind(&kind);
        let record = input.record_stability_info;
        if retry_config.is_none() && !record {
            return created;
        }
        ApiFuture::spawn(&self.inner.core.runtime.clone(), move |_| async move {
            let mut client = created.await?;
            if let Some(config) = retry_config {
                client = client.with_retry_config(config);
            }
            if record {
                client = client.with_record_stability_info(true);
            }
            Ok(client)
        })
    }
}

// ------------------------------------------------------------------------------------------
// Sampling client
// ------------------------------------------------------------------------------------------

fn one() -> u32 {
    1
}

/// Input of `sample`: the `asample` body without the fields the client owns (PROTOCOL.md
/// 7.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SampleInput {
    /// The prompt.
    pub prompt: ModelInput,
    /// Independent samples to draw (at least 1).
    #[serde(default = "one")]
    pub num_samples: u32,
    /// Sampling parameters.
    #[serde(default)]
    pub sampling_params: SamplingParams,
    /// Return logprobs of the prompt tokens.
    #[serde(default)]
    pub prompt_logprobs: bool,
    /// Top-k logprobs per prompt position.
    #[serde(default)]
    pub topk_prompt_logprobs: u32,
    /// Top-k logprobs per sampled position.
    #[serde(default)]
    pub topk_sample_logprobs: u32,
    /// Score only the last N prompt tokens (needs `prompt_logprobs`).
    #[serde(default)]
    pub prompt_logprobs_last_n: Option<u32>,
    /// Token ids whose logprobs to return: int64 `[len(prompt) - 1, K]`, dense or sparse
    /// CSR, `-1` cells request nothing; the result's `target_prompt_logprobs` has the same
    /// shape and layout (PROTOCOL.md 7.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prompt_logprobs: Option<crate::core::types::TensorData>,
    /// Tokens to draw at every prompt position after the first; the result's
    /// `prompt_alt_tokens` holds them (7.1).
    #[serde(default)]
    pub prompt_alt_tokens_k: u32,
}

impl SampleInput {
    /// The checks done before anything is sent (PROTOCOL.md 7.1): at least one sample;
    /// `prompt_logprobs_last_n` at least 1 and only with `prompt_logprobs`.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_samples == 0 {
            return Err("num_samples must be at least 1".into());
        }
        self.options().validate().map_err(|e| e.message)
    }

    fn options(&self) -> SampleOptions {
        SampleOptions {
            prompt_logprobs: self.prompt_logprobs,
            topk_prompt_logprobs: self.topk_prompt_logprobs,
            topk_sample_logprobs: self.topk_sample_logprobs,
            prompt_logprobs_last_n: self.prompt_logprobs_last_n,
            target_prompt_logprobs: self.target_prompt_logprobs.clone(),
            prompt_alt_tokens_k: self.prompt_alt_tokens_k,
        }
    }

    /// One sample of `prompt` with default parameters.
    pub fn new(prompt: ModelInput) -> Self {
        SampleInput {
            prompt,
            num_samples: 1,
            sampling_params: SamplingParams::default(),
            prompt_logprobs: false,
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: 0,
            prompt_logprobs_last_n: None,
            target_prompt_logprobs: None,
            prompt_alt_tokens_k: 0,
        }
    }
}

/// Input of `compute_logprobs`: the prompt to score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ComputeLogprobsInput {
    /// The prompt.
    pub prompt: ModelInput,
    /// Score only the last N prompt tokens (1 … len(prompt) − 1); earlier entries are null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs_last_n: Option<u32>,
}

impl ComputeLogprobsInput {
    /// The checks done before anything is sent: `prompt_logprobs_last_n` at least 1.
    pub fn validate(&self) -> Result<(), String> {
        match self.prompt_logprobs_last_n {
            Some(0) => Err("prompt_logprobs_last_n must be 1 or greater, got 0".into()),
            _ => Ok(()),
        }
    }
}

/// Result of a sampling client's `get_info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SamplingClientInfo {
    /// The sampling session.
    pub sampling_session_id: String,
    /// The base model sampled.
    pub base_model: String,
    /// The clone id (`cloned_sampler_id`, PROTOCOL.md 12.2): 0 for a client of this
    /// process's ServiceClient, `c ≥ 1` for one rebuilt from a sampler handle, null until a
    /// clone that joins the sampling session has joined.
    pub cloned_sampler_id: Option<i64>,
    /// Whether every sample sends `record_stability_info: true` (12.1).
    pub record_stability_info: bool,
}

/// Result of `compute_logprobs`: one entry per prompt token, `null` at position 0.
pub type ComputeLogprobsOutput = Vec<Option<f32>>;

impl SamplingClient {
    /// [`sample`](Self::sample) from its JSON input.
    pub fn sample_with(&self, input: SampleInput) -> ApiFuture<SampleResponse> {
        let options = input.options();
        self.sample(
            input.prompt,
            input.num_samples,
            input.sampling_params,
            options,
        )
    }

    /// [`compute_logprobs`](Self::compute_logprobs) from its JSON input.
    pub fn compute_logprobs_with(
        &self,
        input: ComputeLogprobsInput,
    ) -> ApiFuture<ComputeLogprobsOutput> {
        self.compute_logprobs_last_n(input.prompt, input.prompt_logprobs_last_n)
    }

    /// The client's session and model.
    pub fn info(&self) -> SamplingClientInfo {
        SamplingClientInfo {
            sampling_session_id: self.sampling_session_id().to_string(),
            base_model: self.base_model().to_string(),
            cloned_sampler_id: self.cloned_sampler_id(),
            record_stability_info: self.record_stability_info(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optim_step_input_is_adam_closed_and_other_families_open() {
        let a: OptimStepInput = serde_json::from_str(r#"{"learning_rate": 0.5}"#).unwrap();
        assert!(matches!(a, OptimStepInput::Adam(p) if p.learning_rate == 0.5 && p.beta1 == 0.9));
        for t in [
            r#"{"type": "adamw"}"#,
            r#"{"type": "adam"}"#,
            r#"{"type": null}"#,
        ] {
            let a: OptimStepInput = serde_json::from_str(t).unwrap();
            assert_eq!(a, OptimStepInput::default(), "{t}");
        }
        let e = serde_json::from_str::<OptimStepInput>(r#"{"learning_rat": 1e-3}"#).unwrap_err();
        assert!(e.to_string().contains("learning_rat"), "{e}");
        let o: OptimStepInput =
            serde_json::from_str(r#"{"type": "lion", "learning_rate": 0.01, "version": 2}"#)
                .unwrap();
        match o {
            OptimStepInput::Other(m) => {
                assert_eq!(m["type"], "lion");
                assert_eq!(m["version"], 2);
            }
            _ => panic!("expected pass-through"),
        }
        let d: OptimStepInput =
            serde_json::from_str(r#"{"type": "dimuon", "learning_rate": 0.01}"#).unwrap();
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"type": "dimuon", "learning_rate": 0.01, "grad_clip_norm": 0.0, "beta1": 0.9})
        );
        for bad in [
            r#"{"type": "dimuon"}"#,
            r#"{"type": "dimuon", "learning_rate": 0.1, "version": 1}"#,
            r#"{"type": "dimuon", "learning_rate": 1e400}"#,
        ] {
            assert!(
                serde_json::from_str::<OptimStepInput>(bad).is_err(),
                "{bad}"
            );
        }
        for bad in [
            r#"{"type": "dimuon", "learning_rate": -1}"#,
            r#"{"type": "dimuon", "learning_rate": 0.1, "beta1": 1.0}"#,
            r#"{"type": "dimuon", "learning_rate": 0.1, "beta1": -0.1}"#,
        ] {
            match serde_json::from_str::<OptimStepInput>(bad).unwrap() {
                OptimStepInput::Dimuon(p) => assert!(p.validate().is_err(), "{bad}"),
                _ => panic!("{bad}"),
            }
        }
        let nan = DimuonParams {
            learning_rate: f64::NAN,
            grad_clip_norm: 0.0,
            beta1: 0.9,
        };
        assert!(nan.validate().is_err());
        let inf = DimuonParams {
            grad_clip_norm: f64::INFINITY,
            ..DimuonParams {
                learning_rate: 0.1,
                grad_clip_norm: 0.0,
                beta1: 0.9,
            }
        };
        assert!(inf.validate().is_err());
        assert!(serde_json::from_str::<OptimStepInput>(r#"{"type": 3}"#).is_err());
    }
}
