//! The network: weights, initialisation and the per-position forward pass.
//!
//! For an input bucket `x_t` with embedding `e_t = E[x_t]` and a decayed
//! running mean of the earlier embeddings
//! `c_0 = 0`, `c_t = λ·c_{t-1} + (1-λ)·e_{t-1}`:
//!
//! ```text
//! h_t = tanh(W_in·e_t + W_ctx·c_t + b_h)
//! z_t = U·h_t + b_z        (next-bucket logits)
//! ```
//!
//! `E`, `W_in`, `W_ctx` and `U` are LoRA-adapted matrices; biases are frozen.

use super::lora::LoraMatrix;
use super::math::{self, row};
use super::rng::{derive_seed, hash_str, SplitMix64};
use super::{ModelConfig, EMBED_DIM, HIDDEN_DIM, VOCAB};

/// Decay `λ` of the running context mean.
pub(crate) const CONTEXT_DECAY: f32 = 0.8;
/// LoRA alpha: adapters are scaled by `LORA_ALPHA / rank`.
///
/// Much larger than the customary 16 or 32: a 64-wide toy network has far
/// fewer directions to sum over than a real transformer, and this factor
/// calibrates it so that the usual learning rates (1e-4 … 1e-3) move the loss
/// about as fast as they do on a real LoRA.
pub(crate) const LORA_ALPHA: f32 = 512.0;
/// Largest adapter rank actually allocated; larger requests are clamped.
pub(crate) const MAX_RANK: usize = 256;
/// LoRA init seed used when the config has none.
const DEFAULT_LORA_SEED: u64 = 0x5eed_1e55_0fda_7a5e;

/// Index of the embedding matrix `E` (`VOCAB × EMBED_DIM`, group attn).
pub(crate) const EMBED: usize = 0;
/// Index of `W_in` (`HIDDEN_DIM × EMBED_DIM`, group mlp).
pub(crate) const W_IN: usize = 1;
/// Index of `W_ctx` (`HIDDEN_DIM × EMBED_DIM`, group attn).
pub(crate) const W_CTX: usize = 2;
/// Index of the unembedding `U` (`VOCAB × HIDDEN_DIM`, group unembed).
pub(crate) const UNEMBED: usize = 3;
/// Number of adapted matrices.
pub(crate) const MATRICES: usize = 4;

/// Which parameter groups receive updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trainable {
    /// The unembedding `U`.
    pub unembed: bool,
    /// The hidden layer `W_in`.
    pub mlp: bool,
    /// The embedding `E` and the context mixing `W_ctx`.
    pub attn: bool,
}

impl Trainable {
    /// The groups a config trains.
    pub(crate) fn from_config(config: &ModelConfig) -> Self {
        Self {
            unembed: config.train_unembed,
            mlp: config.train_mlp,
            attn: config.train_attn,
        }
    }

    /// Whether matrix `index` is trained.
    pub(crate) fn matrix(&self, index: usize) -> bool {
        match index {
            EMBED | W_CTX => self.attn,
            W_IN => self.mlp,
            _ => self.unembed,
        }
    }

    /// Whether anything is trained.
    pub(crate) fn any(&self) -> bool {
        self.unembed || self.mlp || self.attn
    }
}

/// The adapter rank actually used for a configured `lora_rank`.
pub(crate) fn effective_rank(lora_rank: u32) -> usize {
    (lora_rank as usize).clamp(1, MAX_RANK)
}

/// All weights of the model.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    /// `E`, `W_in`, `W_ctx`, `U`, indexed by [`EMBED`] … [`UNEMBED`].
    pub mats: [LoraMatrix; MATRICES],
    /// Hidden bias `b_h` (frozen).
    pub hidden_bias: [f32; HIDDEN_DIM],
    /// Output bias `b_z` (frozen).
    pub output_bias: [f32; VOCAB],
}

impl Network {
    /// Base weights from a hash of the base model name, adapters from the seed.
    pub(crate) fn new(config: &ModelConfig) -> Self {
        let rank = effective_rank(config.lora_rank);
        let scale = LORA_ALPHA / rank as f32;
        let mut base = SplitMix64::new(hash_str(&config.base_model));
        let seed = config.seed.unwrap_or(DEFAULT_LORA_SEED);
        let (d, h) = (EMBED_DIM, HIDDEN_DIM);
        let shapes = [(VOCAB, d, 0.8), (h, d, 1.0), (h, d, 2.0), (VOCAB, h, 1.2)];
        let mats = std::array::from_fn(|i| {
            let (rows, cols, gain) = shapes[i];
            let weights = base.uniform_vec(rows * cols, gain / (cols as f32).sqrt());
            let mut lora = SplitMix64::new(derive_seed(seed, i as u64));
            LoraMatrix::new(rows, cols, rank, scale, weights, &mut lora)
        });
        let mut hidden_bias = [0f32; HIDDEN_DIM];
        hidden_bias.copy_from_slice(&base.uniform_vec(HIDDEN_DIM, 0.1));
        let mut output_bias = [0f32; VOCAB];
        output_bias.copy_from_slice(&base.uniform_vec(VOCAB, 0.5));
        let mut net = Self {
            mats,
            hidden_bias,
            output_bias,
        };
        // The embedding's base gets unit-scale rows rather than 1/sqrt(cols).
        let embed = &mut net.mats[EMBED];
        embed
            .base
            .iter_mut()
            .for_each(|w| *w *= (EMBED_DIM as f32).sqrt());
        embed.merge();
        net
    }

    /// Recomputes every merged matrix after the adapters changed.
    pub(crate) fn merge(&mut self) {
        self.mats.iter_mut().for_each(LoraMatrix::merge);
    }

    /// Embedding row of a bucket.
    #[inline(always)]
    pub(crate) fn embedding(&self, bucket: usize) -> &[f32; EMBED_DIM] {
        row(&self.mats[EMBED].merged, bucket)
    }

    /// `h = tanh(W_in·e + W_ctx·c + b_h)`.
    #[inline(always)]
    pub(crate) fn hidden(
        &self,
        e: &[f32; EMBED_DIM],
        c: &[f32; EMBED_DIM],
        h: &mut [f32; HIDDEN_DIM],
    ) {
        let mut acc = self.hidden_bias;
        let (w_in, w_ctx) = (&self.mats[W_IN].merged_t, &self.mats[W_CTX].merged_t);
        for (j, &ej) in e.iter().enumerate() {
            math::axpy(&mut acc, ej, row(w_in, j));
        }
        for (j, &cj) in c.iter().enumerate() {
            math::axpy(&mut acc, cj, row(w_ctx, j));
        }
        for (hk, a) in h.iter_mut().zip(acc) {
            *hk = math::tanh(a);
        }
    }

    /// `z = U·h + b_z`, computed in blocks of 64 outputs held in registers.
    #[inline(always)]
    pub(crate) fn logits(&self, h: &[f32; HIDDEN_DIM], z: &mut [f32; VOCAB]) {
        const BLOCK: usize = 64;
        let u_t = &self.mats[UNEMBED].merged_t;
        for block in 0..VOCAB / BLOCK {
            let start = block * BLOCK;
            let mut acc: [f32; BLOCK] = self.output_bias[start..start + BLOCK]
                .try_into()
                .expect("block in bounds");
            for (k, &hk) in h.iter().enumerate() {
                let w: &[f32; BLOCK] = u_t[k * VOCAB + start..k * VOCAB + start + BLOCK]
                    .try_into()
                    .expect("block in bounds");
                math::axpy(&mut acc, hk, w);
            }
            z[start..start + BLOCK].copy_from_slice(&acc);
        }
    }

    /// `c ← λ·c + (1-λ)·e`: folds the embedding of the token just consumed
    /// into the running context.
    #[inline(always)]
    pub(crate) fn advance(c: &mut [f32; EMBED_DIM], e: &[f32; EMBED_DIM]) {
        for (ci, &ei) in c.iter_mut().zip(e) {
            *ci = CONTEXT_DECAY * *ci + (1.0 - CONTEXT_DECAY) * ei;
        }
    }

    /// Next-bucket logits after `input` given context `c` (then advances `c`).
    pub(crate) fn step(&self, input: usize, c: &mut [f32; EMBED_DIM], z: &mut [f32; VOCAB]) {
        let mut h = [0f32; HIDDEN_DIM];
        let e = self.embedding(input);
        self.hidden(e, c, &mut h);
        self.logits(&h, z);
        Self::advance(c, e);
    }

    /// Runs the model over `inputs`, handing `f` each position's logits and
    /// their normaliser (logits at `t` predict the bucket after `inputs[t]`).
    pub(crate) fn scan(&self, inputs: &[usize], mut f: impl FnMut(usize, &[f32; VOCAB], f32)) {
        let mut c = [0f32; EMBED_DIM];
        let mut z = [0f32; VOCAB];
        let mut exps = [0f32; VOCAB];
        for (t, &input) in inputs.iter().enumerate() {
            self.step(input, &mut c, &mut z);
            let norm = math::log_sum_exp(&z, &mut exps);
            f(t, &z, norm.lse);
        }
    }
}
