//! The training pass over one datum: forward, then exact backward.
//!
//! Positions whose loss coefficient `dL/dlogp` is non-zero are buffered in
//! chunks; each full chunk is back-propagated with batched outer products so
//! gradient rows stay in registers. The context recurrence is differentiated
//! by one reverse sweep at the end of the datum.

use super::math::{self, row, row_mut};
use super::network::{Network, Trainable, CONTEXT_DECAY, EMBED, MATRICES, UNEMBED, W_CTX, W_IN};
use super::{EMBED_DIM as D, HIDDEN_DIM as H, VOCAB as V};

/// Positions back-propagated together.
const CHUNK: usize = 64;

/// Accumulated `dL/dW` for each merged matrix (same layout as `merged`).
#[derive(Clone, Debug)]
pub(crate) struct Gradients {
    /// Indexed like `Network::mats`.
    pub mats: [Vec<f32>; MATRICES],
}

impl Gradients {
    /// Zero gradients shaped like `net`.
    pub(crate) fn zeros(net: &Network) -> Self {
        Self {
            mats: std::array::from_fn(|i| vec![0.0; net.mats[i].merged.len()]),
        }
    }

    /// Resets every gradient to zero.
    pub(crate) fn clear(&mut self) {
        self.mats.iter_mut().for_each(|g| g.fill(0.0));
    }
}

/// Scratch buffers reused across datums.
#[derive(Default)]
pub(crate) struct Workspace {
    /// Datum position of each buffered entry.
    positions: Vec<usize>,
    /// Buffered embeddings, `CHUNK × D`.
    emb: Vec<f32>,
    /// Buffered contexts, `CHUNK × D`.
    ctx: Vec<f32>,
    /// Buffered hidden activations, `CHUNK × H`.
    hid: Vec<f32>,
    /// Buffered `dL/dz`, `CHUNK × V`.
    dlogits: Vec<f32>,
    /// `dL/d(pre-activation)`, `CHUNK × H`.
    dpre: Vec<f32>,
    /// Direct `dL/dc_t` for every position of the datum, `n × D`.
    dctx: Vec<f32>,
}

impl Workspace {
    /// Sizes the buffers for a datum of `n` positions and empties them.
    fn reset(&mut self, n: usize, attn: bool) {
        self.positions.clear();
        self.emb.resize(CHUNK * D, 0.0);
        self.ctx.resize(CHUNK * D, 0.0);
        self.hid.resize(CHUNK * H, 0.0);
        self.dlogits.resize(CHUNK * V, 0.0);
        self.dpre.resize(CHUNK * H, 0.0);
        self.dctx.clear();
        if attn {
            self.dctx.resize(n * D, 0.0);
        }
    }
}

/// Where backward writes, and what it may touch.
pub(crate) struct Backward<'a> {
    /// Gradient accumulators.
    pub grads: &'a mut Gradients,
    /// Groups that are trained (others get no gradient).
    pub train: Trainable,
}

/// One position's forward state needed by backward.
struct Saved<'a> {
    /// Position in the datum.
    t: usize,
    /// Target bucket.
    y: usize,
    /// `dL/dlogp_t`.
    dlogp: f32,
    /// Input embedding.
    e: &'a [f32; D],
    /// Context.
    c: &'a [f32; D],
    /// Hidden activation.
    h: &'a [f32; H],
}

/// Runs one datum. `coeff(t, logp_t)` records the position's loss and returns
/// `dL/dlogp_t`; with `backward` the gradients are accumulated.
///
/// On x86-64 CPUs with AVX2 the same code is compiled a second time with
/// 256-bit vectors. No kernel reassociates or fuses floating-point operations,
/// so both versions produce bit-identical results.
pub(crate) fn run_datum(
    net: &Network,
    inputs: &[usize],
    targets: &[usize],
    backward: Option<Backward<'_>>,
    ws: &mut Workspace,
    coeff: impl FnMut(usize, f32) -> f32,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, as just checked.
        return unsafe { run_datum_avx2(net, inputs, targets, backward, ws, coeff) };
    }
    run_datum_portable(net, inputs, targets, backward, ws, coeff)
}

/// [`run_datum_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_datum_avx2(
    net: &Network,
    inputs: &[usize],
    targets: &[usize],
    backward: Option<Backward<'_>>,
    ws: &mut Workspace,
    coeff: impl FnMut(usize, f32) -> f32,
) {
    run_datum_portable(net, inputs, targets, backward, ws, coeff)
}

/// The training pass itself; see [`run_datum`].
#[inline(always)]
fn run_datum_portable(
    net: &Network,
    inputs: &[usize],
    targets: &[usize],
    mut backward: Option<Backward<'_>>,
    ws: &mut Workspace,
    mut coeff: impl FnMut(usize, f32) -> f32,
) {
    let n = inputs.len();
    let attn = backward.as_ref().is_some_and(|b| b.train.attn);
    ws.reset(n, attn);
    let mut c = [0f32; D];
    let mut h = [0f32; H];
    let mut z = [0f32; V];
    let mut exps = [0f32; V];
    for t in 0..n {
        let e = net.embedding(inputs[t]);
        net.hidden(e, &c, &mut h);
        net.logits(&h, &mut z);
        let norm = math::log_sum_exp(&z, &mut exps);
        let y = targets[t];
        let dlogp = coeff(t, z[y] - norm.lse);
        if let Some(bw) = backward.as_mut() {
            if dlogp != 0.0 {
                let saved = Saved {
                    t,
                    y,
                    dlogp,
                    e,
                    c: &c,
                    h: &h,
                };
                buffer(ws, &saved, &exps, norm.inv_sum);
                if ws.positions.len() == CHUNK {
                    backward_chunk(net, inputs, bw, ws);
                }
            }
        }
        Network::advance(&mut c, e);
    }
    if let Some(bw) = backward.as_mut() {
        backward_chunk(net, inputs, bw, ws);
        if attn {
            context_sweep(inputs, &ws.dctx, &mut bw.grads.mats[EMBED]);
        }
    }
}

/// Buffers a position and its `dL/dz = dlogp · (onehot(y) - softmax(z))`.
#[inline(always)]
fn buffer(ws: &mut Workspace, s: &Saved<'_>, exps: &[f32; V], inv_sum: f32) {
    let i = ws.positions.len();
    ws.positions.push(s.t);
    *row_mut::<D>(&mut ws.emb, i) = *s.e;
    *row_mut::<D>(&mut ws.ctx, i) = *s.c;
    *row_mut::<H>(&mut ws.hid, i) = *s.h;
    let g = row_mut::<V>(&mut ws.dlogits, i);
    let scale = -s.dlogp * inv_sum;
    for (gv, &ev) in g.iter_mut().zip(exps) {
        *gv = scale * ev;
    }
    g[s.y] += s.dlogp;
}

/// Back-propagates the buffered positions, then empties the buffer.
#[inline(always)]
fn backward_chunk(net: &Network, inputs: &[usize], bw: &mut Backward<'_>, ws: &mut Workspace) {
    let count = ws.positions.len();
    if count == 0 {
        return;
    }
    let grads = &mut bw.grads.mats;
    if bw.train.unembed {
        math::outer_accumulate::<H>(&mut grads[UNEMBED], V, &ws.dlogits, &ws.hid, count);
    }
    if bw.train.mlp || bw.train.attn {
        for i in 0..count {
            let da = pre_activation_grad(net, row(&ws.dlogits, i), row(&ws.hid, i));
            *row_mut::<H>(&mut ws.dpre, i) = da;
            if bw.train.attn {
                let t = ws.positions[i];
                let de = math::transpose_times::<D>(&net.mats[W_IN].merged, &da);
                math::add_into(row_mut(&mut grads[EMBED], inputs[t]), &de);
                *row_mut::<D>(&mut ws.dctx, t) =
                    math::transpose_times::<D>(&net.mats[W_CTX].merged, &da);
            }
        }
        if bw.train.mlp {
            math::outer_accumulate::<D>(&mut grads[W_IN], H, &ws.dpre, &ws.emb, count);
        }
        if bw.train.attn {
            math::outer_accumulate::<D>(&mut grads[W_CTX], H, &ws.dpre, &ws.ctx, count);
        }
    }
    ws.positions.clear();
}

/// `dL/da = (Uᵀ·dz) ⊙ (1 - h²)`.
#[inline(always)]
fn pre_activation_grad(net: &Network, dz: &[f32; V], h: &[f32; H]) -> [f32; H] {
    let mut dh = math::transpose_times::<H>(&net.mats[UNEMBED].merged, dz);
    for (d, &hk) in dh.iter_mut().zip(h) {
        *d *= 1.0 - hk * hk;
    }
    dh
}

/// Pushes the direct context gradients back through `c_t = λc_{t-1} + (1-λ)e_{t-1}`
/// into the embedding rows.
#[inline(always)]
fn context_sweep(inputs: &[usize], dctx: &[f32], grad_embed: &mut [f32]) {
    let mut total = [0f32; D];
    for t in (1..inputs.len()).rev() {
        let direct = row::<D>(dctx, t);
        let mut de = [0f32; D];
        for j in 0..D {
            total[j] = direct[j] + CONTEXT_DECAY * total[j];
            de[j] = (1.0 - CONTEXT_DECAY) * total[j];
        }
        math::add_into(row_mut(grad_embed, inputs[t - 1]), &de);
    }
}
