//! The emulator's tiny model: a real network trained on the CPU, so that
//! losses really fall, log-probabilities are real and samples follow training.
//!
//! # Architecture
//!
//! * Token ids of any size are hashed into [`VOCAB`] buckets by [`bucket`].
//! * Each position `t` embeds its input bucket (`e_t`, [`EMBED_DIM`] wide) and
//!   keeps a decayed running mean of the earlier embeddings,
//!   `c_t = 0.8·c_{t-1} + 0.2·e_{t-1}` (the "attention" of this model).
//! * A hidden layer `h_t = tanh(W_in·e_t + W_ctx·c_t + b_h)` ([`HIDDEN_DIM`]
//!   wide) feeds the next-bucket logits `z_t = U·h_t + b_z`.
//! * Base weights come from a hash of `base_model`. Each of `E`, `W_in`,
//!   `W_ctx` and `U` carries a LoRA adapter `scale·B·A` of rank `lora_rank`
//!   (clamped to 1..=256): `A` is drawn from the config seed, `B` starts at
//!   zero, so a fresh model equals its base model. Only adapters are trained;
//!   `train_attn` covers `E` and `W_ctx`, `train_mlp` covers `W_in`,
//!   `train_unembed` covers `U`.
//! * `scale = 512 / rank`. The large LoRA alpha is a calibration: with so few
//!   hidden units a customary alpha would make the usual learning rates far
//!   too slow; with it, 20 AdamW steps at lr 1e-3 cut the loss of a small
//!   batch by well over 40 % and lr 1e-4 still moves it visibly.
//!
//! Forward and backward are exact (gradients are checked against finite
//! differences in the tests); losses are summed in `f64`. Everything is
//! deterministic given the base model name and seeds.

mod adam;
mod backprop;
mod codec;
mod dimuon;
pub mod graph;
mod lora;
mod loss;
mod math;
mod network;
mod rng;
mod sample;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use adam::AdamParams;
pub use dimuon::DimuonParams;
pub use loss::{DatumInput, DatumOutput, ForwardBackwardResult, LossFn};
pub use sample::{SampleParams, SampledSequence};

use adam::Moments;
use backprop::{Backward, Gradients, Workspace};
use network::{Network, Trainable, MATRICES};

/// Number of hashed token buckets (the model's real vocabulary).
pub const VOCAB: usize = 256;
/// Width of the token embedding and of the running context.
pub const EMBED_DIM: usize = 32;
/// Width of the hidden layer.
pub const HIDDEN_DIM: usize = 32;

/// The bucket of a token id: ids in `0..VOCAB` are their own bucket (so
/// byte-level ids map to themselves); any other id is mixed with the
/// SplitMix64 finaliser and reduced to `0..VOCAB`.
pub fn bucket(token: i64) -> usize {
    if (0..VOCAB as i64).contains(&token) {
        token as usize
    } else {
        (rng::mix64(token as u64 ^ 0x7f4a_7c15_9e37_79b9) % VOCAB as u64) as usize
    }
}

/// What a model is: its base, its adapter and which parts train.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Base model name, e.g. `"Qwen/Qwen3-8B"`; base weights are derived from
    /// a hash of it.
    pub base_model: String,
    /// LoRA rank (0 is treated as 1, values above 256 as 256).
    pub lora_rank: u32,
    /// LoRA init seed; `None` uses a fixed default.
    pub seed: Option<u64>,
    /// Train the output layer `U`.
    pub train_unembed: bool,
    /// Train the hidden layer `W_in`.
    pub train_mlp: bool,
    /// Train the embedding `E` and the context mixing `W_ctx`.
    pub train_attn: bool,
}

/// Errors reported to the user.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// The request is invalid; the message says which input and why.
    InvalidInput(String),
    /// A checkpoint could not be read; the message says why.
    Corrupt(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::InvalidInput(msg) => write!(f, "invalid input: {msg}"),
            ModelError::Corrupt(msg) => write!(f, "corrupt model checkpoint: {msg}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// A trainable tiny language model with its optimiser state.
#[derive(Clone)]
pub struct TinyModel {
    config: ModelConfig,
    net: Network,
    grads: Gradients,
    /// AdamW moments of `[A, B]` for each adapted matrix.
    moments: [[Moments; 2]; MATRICES],
    steps: u64,
    /// Most recent original token id trained as a target in each bucket.
    vocab_map: Vec<Option<i64>>,
    has_optimizer_state: bool,
}

impl std::fmt::Debug for TinyModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TinyModel")
            .field("config", &self.config)
            .field("optimizer_steps", &self.steps)
            .field("has_optimizer_state", &self.has_optimizer_state)
            .finish_non_exhaustive()
    }
}

impl TinyModel {
    /// A fresh model: base weights from the base model name, adapters from
    /// the seed (with `B = 0`, so it behaves exactly like its base model).
    pub fn new(config: ModelConfig) -> Self {
        let net = Network::new(&config);
        let grads = Gradients::zeros(&net);
        let moments = std::array::from_fn(|i| {
            let mat = &net.mats[i];
            [Moments::zeros(mat.a.len()), Moments::zeros(mat.b.len())]
        });
        Self {
            config,
            net,
            grads,
            moments,
            steps: 0,
            vocab_map: vec![None; VOCAB],
            has_optimizer_state: true,
        }
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Number of optimiser steps applied so far (0 after loading a checkpoint
    /// without optimiser state).
    pub fn optimizer_steps(&self) -> u64 {
        self.steps
    }

    /// Forward (and unless `forward_only`, backward: gradients are
    /// ACCUMULATED into an internal buffer, summed over calls until the next
    /// [`optim_step`](Self::optim_step)).
    ///
    /// All data are validated before anything is computed. Training calls
    /// also update the vocabulary map with every target whose weight
    /// (cross-entropy) or advantage (other losses) is non-zero.
    pub fn forward_backward(
        &mut self,
        data: &[DatumInput],
        loss: &LossFn,
        forward_only: bool,
    ) -> Result<ForwardBackwardResult, ModelError> {
        loss::validate(data, loss)?;
        let train = Trainable::from_config(&self.config);
        let learn = !forward_only && train.any();
        let mut ws = Workspace::default();
        let mut result = ForwardBackwardResult::default();
        for datum in data {
            let inputs: Vec<usize> = datum.tokens.iter().map(|&t| bucket(t)).collect();
            let targets: Vec<usize> = datum.target_tokens.iter().map(|&t| bucket(t)).collect();
            let n = inputs.len();
            let mut out = DatumOutput {
                logprobs: vec![0.0; n],
                elementwise_loss: vec![0.0; n],
            };
            if loss.is_sequence_level() {
                // Forward first: the loss needs every position's log-probability.
                let mut logps = vec![0f32; n];
                backprop::run_datum(&self.net, &inputs, &targets, None, &mut ws, |t, logp| {
                    logps[t] = logp;
                    0.0
                });
                let (values, grads) =
                    loss::sequence_loss(loss, datum, &logps, &mut result.metrics)?;
                if learn {
                    let backward = Some(Backward {
                        grads: &mut self.grads,
                        train,
                    });
                    backprop::run_datum(&self.net, &inputs, &targets, backward, &mut ws, |t, _| {
                        grads[t]
                    });
                }
                out.logprobs = logps;
                for (t, v) in values.iter().enumerate() {
                    out.elementwise_loss[t] = *v as f32;
                    result.loss_sum += v;
                }
                result.outputs.push(out);
                if !forward_only {
                    self.remember_targets(datum, &targets, loss);
                }
                continue;
            }
            let backward = learn.then_some(Backward {
                grads: &mut self.grads,
                train,
            });
            backprop::run_datum(
                &self.net,
                &inputs,
                &targets,
                backward,
                &mut ws,
                |t, logp| {
                    let (value, dlogp) = loss::position_loss(loss, datum, t, logp);
                    out.logprobs[t] = logp;
                    out.elementwise_loss[t] = value as f32;
                    result.loss_sum += value;
                    dlogp
                },
            );
            result.outputs.push(out);
            if !forward_only {
                self.remember_targets(datum, &targets, loss);
            }
        }
        Ok(result)
    }

    fn remember_targets(&mut self, datum: &DatumInput, targets: &[usize], loss: &LossFn) {
        for (t, (&token, &b)) in datum.target_tokens.iter().zip(targets).enumerate() {
            if loss::is_trained(loss, datum, t) {
                self.vocab_map[b] = Some(token);
            }
        }
    }

    /// Applies AdamW to the accumulated gradients of the trainable groups,
    /// zeroes the gradients and returns metrics: `grad_norm:mean` (global
    /// norm before clipping), `lr:mean` and `step:max` (steps so far).
    ///
    /// A non-finite gradient (e.g. an overflowing importance ratio) is an
    /// error: the gradients are discarded and the weights left unchanged.
    pub fn optim_step(&mut self, params: &AdamParams) -> Result<HashMap<String, f64>, ModelError> {
        params.validate()?;
        let train = Trainable::from_config(&self.config);
        let grads: Vec<(usize, Vec<f32>, Vec<f32>)> = (0..MATRICES)
            .filter(|&i| train.matrix(i))
            .map(|i| {
                let (da, db) = self.net.mats[i].adapter_grads(&self.grads.mats[i]);
                (i, da, db)
            })
            .collect();
        self.grads.clear();
        let norm = grads
            .iter()
            .map(|(_, da, db)| math::sum_sq(da) + math::sum_sq(db))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(ModelError::InvalidInput(
                "the accumulated gradient is not finite (an importance ratio probably \
                 overflowed); the gradients were discarded and the weights left unchanged"
                    .into(),
            ));
        }
        let clip = params.grad_clip_norm;
        let grad_scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        self.steps += 1;
        for (i, da, db) in grads {
            let mat = &mut self.net.mats[i];
            let [ma, mb] = &mut self.moments[i];
            ma.update(&mut mat.a, &da, grad_scale, params, self.steps);
            mb.update(&mut mat.b, &db, grad_scale, params, self.steps);
            mat.merge();
        }
        self.has_optimizer_state = true;
        Ok(HashMap::from([
            ("grad_norm:mean".to_string(), norm),
            ("lr:mean".to_string(), params.learning_rate),
            ("step:max".to_string(), self.steps as f64),
        ]))
    }

    /// Applies one Dimuon step (see `dimuon.rs`: Muon on each adapter matrix) to the
    /// accumulated gradients, zeroes them and returns the same metrics as
    /// [`optim_step`](Self::optim_step). The momentum buffer is the first-moment slot.
    pub fn optim_step_dimuon(
        &mut self,
        params: &DimuonParams,
    ) -> Result<HashMap<String, f64>, ModelError> {
        params.validate()?;
        let train = Trainable::from_config(&self.config);
        let grads: Vec<(usize, Vec<f32>, Vec<f32>)> = (0..MATRICES)
            .filter(|&i| train.matrix(i))
            .map(|i| {
                let (da, db) = self.net.mats[i].adapter_grads(&self.grads.mats[i]);
                (i, da, db)
            })
            .collect();
        self.grads.clear();
        let norm = grads
            .iter()
            .map(|(_, da, db)| math::sum_sq(da) + math::sum_sq(db))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(ModelError::InvalidInput(
                "the accumulated gradient is not finite; the gradients were discarded and the \
                 weights left unchanged"
                    .into(),
            ));
        }
        let clip = params.grad_clip_norm;
        let grad_scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        self.steps += 1;
        for (i, da, db) in grads {
            let mat = &mut self.net.mats[i];
            let [ma, mb] = &mut self.moments[i];
            let (rows, cols, rank) = (mat.rows, mat.cols, mat.rank);
            dimuon::update(&mut mat.a, &mut ma.m, &da, grad_scale, rank, cols, params);
            dimuon::update(&mut mat.b, &mut mb.m, &db, grad_scale, rows, rank, params);
            mat.merge();
        }
        self.has_optimizer_state = true;
        Ok(HashMap::from([
            ("grad_norm:mean".to_string(), norm),
            ("lr:mean".to_string(), params.learning_rate),
            ("step:max".to_string(), self.steps as f64),
        ]))
    }

    /// Log-probabilities of each prompt token given its prefix:
    /// `[0]` is `None`, `[i]` is `log p(prompt[i] | prompt[..i])` for `i >= 1`.
    pub fn prompt_logprobs(&self, prompt: &[i64]) -> Vec<Option<f32>> {
        let buckets: Vec<usize> = prompt.iter().map(|&t| bucket(t)).collect();
        let mut out = vec![None; prompt.len()];
        let inputs = &buckets[..buckets.len().saturating_sub(1)];
        self.net.scan(inputs, |t, z, lse| {
            out[t + 1] = Some(z[buckets[t + 1]] - lse);
        });
        out
    }

    /// The `k` most likely (token id, logprob) pairs at each prompt position,
    /// sorted by logprob descending (position 0 gets an empty vec). Token ids
    /// come from the vocabulary map, as in sampling; `k` is capped at `VOCAB`.
    pub fn topk_prompt_logprobs(&self, prompt: &[i64], k: usize) -> Vec<Vec<(i64, f32)>> {
        let buckets: Vec<usize> = prompt.iter().map(|&t| bucket(t)).collect();
        let mut out = vec![Vec::new(); prompt.len()];
        let inputs = &buckets[..buckets.len().saturating_sub(1)];
        self.net.scan(inputs, |t, z, lse| {
            let mut order: Vec<usize> = (0..VOCAB).collect();
            order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
            out[t + 1] = order
                .into_iter()
                .take(k)
                .map(|b| (self.token_of(b), z[b] - lse))
                .collect();
        });
        out
    }

    /// Draws `num_samples` continuations of `prompt`. Deterministic when
    /// `params.seed` is `Some` (sample `i` uses a stream derived from the seed
    /// and `i`); random otherwise. Emitted ids come from the vocabulary map
    /// (bucket `b` emits the last trained target of `b`, else `b` itself), so
    /// each emitted id hashes back to the sampled bucket. An empty prompt
    /// starts from bucket 0.
    pub fn sample(
        &self,
        prompt: &[i64],
        params: &SampleParams,
        num_samples: usize,
    ) -> Vec<SampledSequence> {
        sample::sample(&self.net, &self.vocab_map, prompt, params, num_samples)
    }

    /// Serialises adapters, config and vocabulary map (plus Adam moments and
    /// step count when `with_optimizer`) to a compact little-endian format
    /// with a magic header, version, length and checksum. Base weights are
    /// re-derived from the base model name on load.
    pub fn to_bytes(&self, with_optimizer: bool) -> Vec<u8> {
        codec::encode(self, with_optimizer)
    }

    /// Reads [`to_bytes`](Self::to_bytes) output; truncated, damaged or
    /// foreign bytes give [`ModelError::Corrupt`]. Without optimiser state
    /// the model keeps its weights but starts with fresh Adam moments and a
    /// step count of 0.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        codec::decode(bytes)
    }

    /// Whether the model carries optimiser state: false only for a model
    /// loaded from a checkpoint without it that has not stepped since.
    pub fn has_optimizer_state(&self) -> bool {
        self.has_optimizer_state
    }

    /// The accumulated (not yet applied) gradients as little-endian f32s, for persisting a
    /// live model across a restart together with [`to_bytes`](Self::to_bytes).
    pub fn gradients_to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for g in &self.grads.mats {
            out.extend_from_slice(&(g.len() as u64).to_le_bytes());
            for x in g {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }

    /// Restores gradients written by [`gradients_to_bytes`](Self::gradients_to_bytes).
    pub fn set_gradients_from_bytes(&mut self, bytes: &[u8]) -> Result<(), ModelError> {
        let mut pos = 0;
        for g in self.grads.mats.iter_mut() {
            let len_bytes = bytes
                .get(pos..pos + 8)
                .ok_or_else(|| ModelError::Corrupt("gradient section truncated".into()))?;
            let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
            pos += 8;
            if len != g.len() {
                return Err(ModelError::Corrupt(format!(
                    "gradient of length {len} where {} was expected",
                    g.len()
                )));
            }
            let body = bytes
                .get(pos..pos + 4 * len)
                .ok_or_else(|| ModelError::Corrupt("gradient section truncated".into()))?;
            for (x, c) in g.iter_mut().zip(body.chunks_exact(4)) {
                *x = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
            pos += 4 * len;
        }
        if pos != bytes.len() {
            return Err(ModelError::Corrupt(
                "trailing bytes after the gradients".into(),
            ));
        }
        Ok(())
    }

    /// The token id a bucket emits.
    fn token_of(&self, b: usize) -> i64 {
        self.vocab_map[b].unwrap_or(b as i64)
    }
}
