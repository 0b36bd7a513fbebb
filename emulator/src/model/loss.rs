//! Loss functions, their inputs and outputs, and input validation.

use super::ModelError;

/// A training loss, summed over every position of every datum.
#[derive(Clone, Debug, PartialEq)]
pub enum LossFn {
    /// `loss = -Σ_t weights_t · logp_t`.
    CrossEntropy,
    /// `loss = -Σ_t exp(logp_t - sampling_logprobs_t) · advantages_t`.
    ImportanceSampling,
    /// With `r_t = exp(logp_t - sampling_logprobs_t)`:
    /// `loss = -Σ_t min(r_t·A_t, clip(r_t, clip_low, clip_high)·A_t)`.
    Ppo {
        /// Lower bound of the clipped ratio (usually 0.8).
        clip_low: f32,
        /// Upper bound of the clipped ratio (usually 1.2).
        clip_high: f32,
    },
}

impl LossFn {
    /// PPO with the usual clip range `[0.8, 1.2]`.
    pub fn ppo_default() -> Self {
        LossFn::Ppo {
            clip_low: 0.8,
            clip_high: 1.2,
        }
    }

    /// The loss name used by the Tinker API (`cross_entropy`, …).
    pub fn name(&self) -> &'static str {
        match self {
            LossFn::CrossEntropy => "cross_entropy",
            LossFn::ImportanceSampling => "importance_sampling",
            LossFn::Ppo { .. } => "ppo",
        }
    }
}

/// One datum, already flattened by the server: model-input token ids (images
/// expanded to token ids by the server) and loss inputs.
#[derive(Clone, Debug, Default)]
pub struct DatumInput {
    /// Model input, length `n`.
    pub tokens: Vec<i64>,
    /// The token to predict at each position, length `n`.
    pub target_tokens: Vec<i64>,
    /// Per-position cross-entropy weights; `None` means all 1.0.
    pub weights: Option<Vec<f32>>,
    /// `loss_fn_inputs["logprobs"]`: log-probabilities under the sampler,
    /// required by importance sampling and PPO.
    pub sampling_logprobs: Option<Vec<f32>>,
    /// Per-position advantages, required by importance sampling and PPO.
    pub advantages: Option<Vec<f32>>,
}

/// Per-datum result of a forward pass.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatumOutput {
    /// `log p(target_t | tokens_{≤t})` for each position, length `n`.
    pub logprobs: Vec<f32>,
    /// Each position's contribution to the loss, length `n`.
    pub elementwise_loss: Vec<f32>,
}

/// Result of [`TinyModel::forward_backward`](super::TinyModel::forward_backward).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardBackwardResult {
    /// One output per input datum, in order.
    pub outputs: Vec<DatumOutput>,
    /// The total loss (sum over all positions of all datums).
    pub loss_sum: f64,
}

/// Loss and `dL/dlogp` at position `t` of `datum`, whose log-probability is
/// `logp`. Inputs must have been validated.
pub(crate) fn position_loss(loss: &LossFn, datum: &DatumInput, t: usize, logp: f32) -> (f64, f32) {
    let at = |v: &Option<Vec<f32>>| v.as_ref().map_or(1.0, |v| f64::from(v[t]));
    match loss {
        LossFn::CrossEntropy => {
            let w = at(&datum.weights);
            (-w * f64::from(logp), -w as f32)
        }
        LossFn::ImportanceSampling => {
            let (ratio, adv) = ratio_and_advantage(datum, t, logp);
            (-ratio * adv, (-ratio * adv) as f32)
        }
        LossFn::Ppo {
            clip_low,
            clip_high,
        } => {
            let (ratio, adv) = ratio_and_advantage(datum, t, logp);
            let unclipped = ratio * adv;
            let clipped = ratio.clamp(f64::from(*clip_low), f64::from(*clip_high)) * adv;
            if unclipped <= clipped {
                (-unclipped, -unclipped as f32)
            } else {
                (-clipped, 0.0)
            }
        }
    }
}

fn ratio_and_advantage(datum: &DatumInput, t: usize, logp: f32) -> (f64, f64) {
    let field = |v: &Option<Vec<f32>>| v.as_ref().map_or(0.0, |v| f64::from(v[t]));
    let ratio = (f64::from(logp) - field(&datum.sampling_logprobs)).exp();
    (ratio, field(&datum.advantages))
}

/// Whether position `t` takes part in training (non-zero weight or advantage);
/// such targets update the vocabulary map.
pub(crate) fn is_trained(loss: &LossFn, datum: &DatumInput, t: usize) -> bool {
    let field = match loss {
        LossFn::CrossEntropy => &datum.weights,
        _ => &datum.advantages,
    };
    field.as_ref().is_none_or(|v| v[t] != 0.0)
}

/// Checks a batch before anything is computed, so errors leave no trace.
pub(crate) fn validate(data: &[DatumInput], loss: &LossFn) -> Result<(), ModelError> {
    if data.is_empty() {
        return invalid("forward_backward needs at least one datum, got none".into());
    }
    if let LossFn::Ppo {
        clip_low,
        clip_high,
    } = loss
    {
        validate_clip(*clip_low, *clip_high)?;
    }
    data.iter()
        .enumerate()
        .try_for_each(|(i, d)| validate_datum(i, d, loss))
}

fn validate_clip(low: f32, high: f32) -> Result<(), ModelError> {
    if !(low.is_finite() && high.is_finite() && low >= 0.0 && low <= high) {
        return invalid(format!(
            "loss_fn ppo needs finite clip thresholds with 0 <= clip_low <= clip_high, \
             got clip_low={low}, clip_high={high}"
        ));
    }
    Ok(())
}

fn validate_datum(index: usize, d: &DatumInput, loss: &LossFn) -> Result<(), ModelError> {
    let n = d.tokens.len();
    if n == 0 {
        return invalid(format!("datum {index}: model_input has no tokens"));
    }
    if d.target_tokens.len() != n {
        return invalid(format!(
            "datum {index}: loss_fn_inputs[\"target_tokens\"] has {} entries but the model \
             input has {n} tokens; they must be the same length",
            d.target_tokens.len()
        ));
    }
    let fields = [
        ("weights", &d.weights),
        ("logprobs", &d.sampling_logprobs),
        ("advantages", &d.advantages),
    ];
    for (name, field) in fields {
        if let Some(values) = field {
            validate_field(index, name, values, n)?;
        }
    }
    if !matches!(loss, LossFn::CrossEntropy) {
        for (name, field) in [
            ("logprobs", &d.sampling_logprobs),
            ("advantages", &d.advantages),
        ] {
            if field.is_none() {
                return invalid(format!(
                    "loss_fn {} requires loss_fn_inputs[\"{name}\"] (datum {index})",
                    loss.name()
                ));
            }
        }
    }
    Ok(())
}

fn validate_field(index: usize, name: &str, values: &[f32], n: usize) -> Result<(), ModelError> {
    if values.len() != n {
        return invalid(format!(
            "datum {index}: loss_fn_inputs[\"{name}\"] has {} entries but the model input \
             has {n} tokens; they must be the same length",
            values.len()
        ));
    }
    if let Some((t, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return invalid(format!(
            "datum {index}: loss_fn_inputs[\"{name}\"][{t}] is {v}; all values must be finite"
        ));
    }
    Ok(())
}

fn invalid(message: String) -> Result<(), ModelError> {
    Err(ModelError::InvalidInput(message))
}
