//! Autoregressive sampling with temperature, top-k, top-p and stop conditions.

use super::math;
use super::network::Network;
use super::rng::{derive_seed, entropy_seed, SplitMix64};
use super::{bucket, EMBED_DIM, VOCAB};

/// Sampling controls for [`TinyModel::sample`](super::TinyModel::sample).
#[derive(Clone, Debug)]
pub struct SampleParams {
    /// Maximum number of generated tokens.
    pub max_tokens: usize,
    /// Softmax temperature; `<= 0` (or not finite) means greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `-1` (any value `<= 0`) = no limit.
    pub top_k: i32,
    /// Nucleus sampling mass in `(0, 1)`; values outside mean no limit.
    pub top_p: f32,
    /// Seed for reproducible draws; `None` draws a random seed.
    pub seed: Option<u64>,
    /// Stop after emitting any of these (original) token ids.
    pub stop_tokens: Vec<i64>,
    /// Stop once the generated text ends with any of these strings. The text
    /// of a token is one byte: its bucket id (`VOCAB` is 256).
    pub stop_strings: Vec<String>,
}

impl Default for SampleParams {
    /// 16 tokens at temperature 1, no top-k/top-p, random seed, no stops.
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
            seed: None,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

/// One sampled continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledSequence {
    /// Generated token ids (original ids via the vocabulary map), including
    /// the stop token when one ended the sequence.
    pub tokens: Vec<i64>,
    /// Raw model log-probability (temperature 1, no top-k/top-p) of each token.
    pub logprobs: Vec<f32>,
    /// `true` if a stop token or string ended the sequence ("stop"), `false`
    /// if it ran to `max_tokens` ("length").
    pub stopped: bool,
}

/// Model state after reading a prompt: the running context and the bucket of
/// the last token, whose logits predict the first generated token.
#[derive(Clone)]
pub(crate) struct Prefix {
    ctx: [f32; EMBED_DIM],
    last: usize,
}

impl Prefix {
    /// Reads `prompt`; an empty prompt starts from bucket 0 with no context.
    pub(crate) fn new(net: &Network, prompt: &[i64]) -> Self {
        let mut ctx = [0f32; EMBED_DIM];
        let Some((&last, rest)) = prompt.split_last() else {
            return Self { ctx, last: 0 };
        };
        for &token in rest {
            Network::advance(&mut ctx, net.embedding(bucket(token)));
        }
        Self {
            ctx,
            last: bucket(last),
        }
    }
}

/// Draws `count` continuations of `prompt`.
pub(crate) fn sample(
    net: &Network,
    vocab_map: &[Option<i64>],
    prompt: &[i64],
    params: &SampleParams,
    count: usize,
) -> Vec<SampledSequence> {
    let prefix = Prefix::new(net, prompt);
    let base_seed = params.seed.unwrap_or_else(entropy_seed);
    (0..count)
        .map(|i| {
            let mut rng = SplitMix64::new(derive_seed(base_seed, i as u64));
            continue_from(net, vocab_map, prefix.clone(), params, &mut rng)
        })
        .collect()
}

fn continue_from(
    net: &Network,
    vocab_map: &[Option<i64>],
    mut state: Prefix,
    params: &SampleParams,
    rng: &mut SplitMix64,
) -> SampledSequence {
    let mut out = SampledSequence {
        tokens: Vec::new(),
        logprobs: Vec::new(),
        stopped: false,
    };
    let mut text = Vec::new();
    let mut z = [0f32; VOCAB];
    let mut exps = [0f32; VOCAB];
    while out.tokens.len() < params.max_tokens {
        net.step(state.last, &mut state.ctx, &mut z);
        let norm = math::log_sum_exp(&z, &mut exps);
        let chosen = choose(&z, params, rng);
        let token = vocab_map[chosen].unwrap_or(chosen as i64);
        debug_assert_eq!(bucket(token), chosen);
        out.tokens.push(token);
        out.logprobs.push(z[chosen] - norm.lse);
        text.push(chosen as u8);
        state.last = chosen;
        if is_stop(token, &text, params) {
            out.stopped = true;
            break;
        }
    }
    out
}

fn is_stop(token: i64, text: &[u8], params: &SampleParams) -> bool {
    params.stop_tokens.contains(&token)
        || params
            .stop_strings
            .iter()
            .any(|s| !s.is_empty() && text.ends_with(s.as_bytes()))
}

/// Picks a bucket from logits `z` under the sampling controls.
fn choose(z: &[f32; VOCAB], params: &SampleParams, rng: &mut SplitMix64) -> usize {
    let greedy = !(params.temperature > 0.0 && params.temperature.is_finite());
    if greedy || params.top_k == 1 {
        return argmax(z);
    }
    let mut order: Vec<usize> = (0..VOCAB).collect();
    if params.top_k > 0 || uses_top_p(params.top_p) {
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
    }
    if params.top_k > 0 {
        order.truncate(params.top_k as usize);
    }
    let inv_t = 1.0 / f64::from(params.temperature);
    let max = f64::from(z[argmax(z)]);
    let weights: Vec<f64> = order
        .iter()
        .map(|&v| ((f64::from(z[v]) - max) * inv_t).exp())
        .collect();
    let kept = nucleus_len(&weights, params.top_p);
    let total: f64 = weights[..kept].iter().sum();
    let mut u = rng.next_f64() * total;
    for (&v, &w) in order.iter().zip(&weights[..kept]) {
        if u < w {
            return v;
        }
        u -= w;
    }
    order[kept - 1]
}

/// Whether `top_p` restricts sampling at all.
fn uses_top_p(top_p: f32) -> bool {
    top_p > 0.0 && top_p < 1.0
}

/// Length of the smallest prefix of descending `weights` holding `top_p` of
/// the mass (all of them when `top_p` does not restrict sampling).
fn nucleus_len(weights: &[f64], top_p: f32) -> usize {
    if !uses_top_p(top_p) {
        return weights.len();
    }
    let total: f64 = weights.iter().sum();
    let target = f64::from(top_p) * total;
    let mut cumulative = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        cumulative += w;
        if cumulative >= target {
            return i + 1;
        }
    }
    weights.len()
}

/// Index of the largest logit (lowest index on ties).
pub(crate) fn argmax(z: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

impl super::TinyModel {
    /// Calls `f(row, logits, log_sum_exp)` for every prompt position after the first: row
    /// `i` holds the distribution over prompt token `i + 1` given `prompt[..=i]`.
    pub fn scan_prompt(&self, prompt: &[i64], mut f: impl FnMut(usize, &[f32; VOCAB], f32)) {
        let buckets: Vec<usize> = prompt.iter().map(|&t| bucket(t)).collect();
        let inputs = &buckets[..buckets.len().saturating_sub(1)];
        self.net.scan(inputs, |t, z, lse| f(t, z, lse));
    }

    /// The model's logprob of token id `token` (through its bucket) under `logits`.
    pub fn token_logprob(z: &[f32; VOCAB], lse: f32, token: i64) -> f32 {
        z[bucket(token)] - lse
    }

    /// `k` independent draws, at `temperature` (greedy when not positive), from the model's
    /// distribution at every prompt position after the first: `len(prompt) - 1` rows of `k`
    /// `(token id, model logprob)` pairs, row-major. Deterministic for a given `seed`.
    pub fn prompt_alt_tokens(
        &self,
        prompt: &[i64],
        k: usize,
        temperature: f32,
        seed: u64,
    ) -> (Vec<i64>, Vec<f32>) {
        let params = SampleParams {
            temperature,
            ..SampleParams::default()
        };
        let rows = prompt.len().saturating_sub(1);
        let mut tokens = Vec::with_capacity(rows * k);
        let mut logprobs = Vec::with_capacity(rows * k);
        let mut rng = SplitMix64::new(derive_seed(seed, 0xa17));
        self.scan_prompt(prompt, |_, z, lse| {
            for _ in 0..k {
                let b = choose(z, &params, &mut rng);
                tokens.push(self.vocab_map[b].unwrap_or(b as i64));
                logprobs.push(z[b] - lse);
            }
        });
        (tokens, logprobs)
    }
}
