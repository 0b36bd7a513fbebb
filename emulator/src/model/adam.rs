//! AdamW: bias-corrected Adam with decoupled weight decay and global-norm
//! gradient clipping.

use super::ModelError;

/// Optimiser hyper-parameters of one `optim_step`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamParams {
    /// Step size.
    pub learning_rate: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies weights by `1 - lr·wd`.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip_norm: f64,
}

impl Default for AdamParams {
    /// The Tinker defaults: lr 1e-4, betas (0.9, 0.95), eps 1e-12, no decay or clipping.
    fn default() -> Self {
        Self {
            learning_rate: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-12,
            weight_decay: 0.0,
            grad_clip_norm: 0.0,
        }
    }
}

impl AdamParams {
    /// Rejects values that would corrupt the weights.
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let checks = [
            (
                "learning_rate",
                self.learning_rate,
                self.learning_rate >= 0.0,
            ),
            ("beta1", self.beta1, (0.0..1.0).contains(&self.beta1)),
            ("beta2", self.beta2, (0.0..1.0).contains(&self.beta2)),
            ("eps", self.eps, self.eps >= 0.0),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0.0),
            (
                "grad_clip_norm",
                self.grad_clip_norm,
                self.grad_clip_norm >= 0.0,
            ),
        ];
        for (name, value, ok) in checks {
            if !value.is_finite() || !ok {
                let rule = match name {
                    "beta1" | "beta2" => "must be in [0, 1)",
                    _ => "must be finite and >= 0",
                };
                return Err(ModelError::InvalidInput(format!(
                    "adam_params.{name} = {value} {rule}"
                )));
            }
        }
        Ok(())
    }
}

/// Adam first and second moments of one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Moments {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

impl Moments {
    /// Fresh (zero) moments for `len` parameters.
    pub(crate) fn zeros(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// One AdamW update of `params` with `grads · grad_scale` at 1-based `step`.
    pub(crate) fn update(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        grad_scale: f64,
        hp: &AdamParams,
        step: u64,
    ) {
        let exponent = i32::try_from(step).unwrap_or(i32::MAX);
        let correction1 = 1.0 - hp.beta1.powi(exponent);
        let correction2 = 1.0 - hp.beta2.powi(exponent);
        let decay = 1.0 - hp.learning_rate * hp.weight_decay;
        let state = self.m.iter_mut().zip(self.v.iter_mut());
        for ((p, &g), (m, v)) in params.iter_mut().zip(grads).zip(state) {
            let g = f64::from(g) * grad_scale;
            let m_new = hp.beta1 * f64::from(*m) + (1.0 - hp.beta1) * g;
            let v_new = hp.beta2 * f64::from(*v) + (1.0 - hp.beta2) * g * g;
            let denom = (v_new / correction2).sqrt() + hp.eps;
            let direction = if denom > 0.0 {
                m_new / correction1 / denom
            } else {
                0.0
            };
            *p = (f64::from(*p) * decay - hp.learning_rate * direction) as f32;
            *m = m_new as f32;
            *v = v_new as f32;
        }
    }
}
