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
    /// CISPO (MiniMax-M1, arXiv 2506.13585): the importance weight is clipped and detached,
    /// `loss = -Σ_t sg(clip(r_t, clip_low, clip_high)) · A_t · logp_t`, so
    /// `dL/dlogp_t = -clip(r_t) · A_t` and no token's gradient is dropped.
    Cispo {
        /// Lower bound of the clipped weight.
        clip_low: f32,
        /// Upper bound of the clipped weight.
        clip_high: f32,
    },
    /// DRO (direct reward optimization with a quadratic penalty, Richemond et al. 2024,
    /// arXiv 2405.19107, token form): with `d_t = logp_t - sampling_logprobs_t`,
    /// `loss = Σ_t (-A_t · logp_t + beta/2 · d_t²)`, `dL/dlogp_t = -A_t + beta · d_t`.
    Dro {
        /// Penalty coefficient.
        beta: f32,
    },
    /// GSPO (arXiv 2507.18071, the GSPO-token form): per datum the sequence ratio
    /// `s = exp(mean_t(logp_t - sampling_logprobs_t))`, token ratios `s_t = sg(s)·p_t/sg(p_t)`
    /// (value `s`, `ds_t/dlogp_t = s`), `loss = -(1/n) Σ_t min(s_t·A_t, clip(s_t)·A_t)`.
    Gspo {
        /// Lower bound of the clipped ratio.
        clip_low: f32,
        /// Upper bound of the clipped ratio.
        clip_high: f32,
    },
    /// A server-side custom loss (PROTOCOL.md 5.10): a traced graph evaluated per datum.
    Custom(std::sync::Arc<super::graph::LossGraph>),
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
            LossFn::Cispo { .. } => "cispo",
            LossFn::Dro { .. } => "dro",
            LossFn::Gspo { .. } => "gspo",
            LossFn::Custom(_) => "custom",
        }
    }

    /// Whether the loss needs the whole sequence's log-probabilities before any gradient
    /// (computed in a forward pass, then a second pass back-propagates).
    pub(crate) fn is_sequence_level(&self) -> bool {
        matches!(self, LossFn::Gspo { .. } | LossFn::Custom(_))
    }
}

/// Per-position loss values and `dL/dlogp` of a sequence-level loss for one datum whose
/// log-probabilities are `logps`; `metrics` collects `(key, value)` of custom metrics.
pub(crate) fn sequence_loss(
    loss: &LossFn,
    datum: &DatumInput,
    logps: &[f32],
    metrics: &mut Vec<(String, f64)>,
) -> Result<(Vec<f64>, Vec<f32>), ModelError> {
    let n = logps.len();
    match loss {
        LossFn::Gspo {
            clip_low,
            clip_high,
        } => {
            let q = datum.sampling_logprobs.as_deref().unwrap_or(&[]);
            let a = datum.advantages.as_deref().unwrap_or(&[]);
            let mean = (0..n)
                .map(|t| f64::from(logps[t]) - f64::from(q[t]))
                .sum::<f64>()
                / n.max(1) as f64;
            let s = mean.exp();
            let clipped = s.clamp(f64::from(*clip_low), f64::from(*clip_high));
            let mut values = vec![0.0; n];
            let mut grads = vec![0.0f32; n];
            for t in 0..n {
                let adv = f64::from(a[t]);
                let (un, cl) = (s * adv, clipped * adv);
                if un <= cl {
                    values[t] = -un / n as f64;
                    grads[t] = (-s * adv / n as f64) as f32;
                } else {
                    values[t] = -cl / n as f64;
                }
            }
            Ok((values, grads))
        }
        LossFn::Custom(graph) => graph
            .evaluate(datum, logps, metrics)
            .map_err(ModelError::InvalidInput),
        _ => unreachable!("not a sequence-level loss"),
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
    /// Every `loss_fn_inputs` tensor by name, as f32 values and its shape (read by custom
    /// losses).
    pub inputs: std::collections::HashMap<String, (Vec<f32>, Vec<usize>)>,
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
    /// Extra metrics per datum (`key:reduction`, value), reduced by the caller (custom
    /// losses).
    pub metrics: Vec<(String, f64)>,
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
        LossFn::Cispo {
            clip_low,
            clip_high,
        } => {
            let (ratio, adv) = ratio_and_advantage(datum, t, logp);
            let w = ratio.clamp(f64::from(*clip_low), f64::from(*clip_high));
            (-w * adv * f64::from(logp), (-w * adv) as f32)
        }
        LossFn::Dro { beta } => {
            let field = |v: &Option<Vec<f32>>| v.as_ref().map_or(0.0, |v| f64::from(v[t]));
            let adv = field(&datum.advantages);
            let d = f64::from(logp) - field(&datum.sampling_logprobs);
            let b = f64::from(*beta);
            (
                -adv * f64::from(logp) + b / 2.0 * d * d,
                (-adv + b * d) as f32,
            )
        }
        LossFn::Gspo { .. } | LossFn::Custom(_) => unreachable!("sequence-level loss"),
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
        LossFn::Custom(_) => return true,
        _ => &datum.advantages,
    };
    field.as_ref().is_none_or(|v| v[t] != 0.0)
}

/// Checks a batch before anything is computed, so errors leave no trace.
pub(crate) fn validate(data: &[DatumInput], loss: &LossFn) -> Result<(), ModelError> {
    if data.is_empty() {
        return invalid("forward_backward needs at least one datum, got none".into());
    }
    match loss {
        LossFn::Ppo {
            clip_low,
            clip_high,
        }
        | LossFn::Cispo {
            clip_low,
            clip_high,
        }
        | LossFn::Gspo {
            clip_low,
            clip_high,
        } => validate_clip(loss.name(), *clip_low, *clip_high)?,
        LossFn::Dro { beta } if !(beta.is_finite() && *beta >= 0.0) => {
            return invalid(format!(
                "loss_fn dro needs a finite beta >= 0, got beta={beta}"
            ))
        }
        _ => {}
    }
    data.iter()
        .enumerate()
        .try_for_each(|(i, d)| validate_datum(i, d, loss))
}

fn validate_clip(name: &str, low: f32, high: f32) -> Result<(), ModelError> {
    if !(low.is_finite() && high.is_finite() && low >= 0.0 && low <= high) {
        return invalid(format!(
            "loss_fn {name} needs finite clip thresholds with 0 <= clip_low <= clip_high, \
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
    if let LossFn::Custom(graph) = loss {
        return graph
            .check_datum(index, d)
            .map_err(ModelError::InvalidInput);
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
