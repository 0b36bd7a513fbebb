//! Small float kernels shared by the forward and backward passes.
//!
//! Everything here is written so that LLVM can vectorise it without
//! reassociating floating-point sums: vector lanes always run over
//! independent outputs, and reductions use a fixed number of partial sums.
//! The results are therefore bit-identical whatever SIMD width the compiler
//! picks, which keeps training, scoring and sampling log-probabilities equal.

/// Number of independent partial sums used by reductions.
const LANES: usize = 8;

/// `exp(x)` to about one ulp for `x` in `[-87, 88]` (inputs are clamped there).
///
/// Cody-Waite range reduction plus a degree-6 Taylor polynomial; branch free so
/// that it vectorises, unlike the libm call.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = (shifted.to_bits() as i32 - 0x4B40_0000 + 127) << 23;
    p * f32::from_bits(exponent as u32)
}

/// `tanh(x)` via a rational approximation (max error about 1e-7), branch free.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    let p = x2 * p - 8.604_672e-11;
    let p = x2 * p + 5.122_297e-8;
    let p = x2 * p + 1.485_722_4e-5;
    let p = x2 * p + 6.372_619_3e-4;
    let p = x2 * p + 4.893_524_6e-3;
    let q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
    let q = x2 * q + 2.268_434_6e-3;
    let q = x2 * q + 4.893_525e-3;
    x * p / q
}

/// Log-softmax normaliser of a logit vector.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Normaliser {
    /// `log Σ exp(z)`.
    pub lse: f32,
    /// `1 / Σ exp(z - max)`: turns the `exps` buffer into probabilities.
    pub inv_sum: f32,
}

/// Fills `exps[v] = exp(z[v] - max z)` and returns the log-sum-exp of `z`.
#[inline(always)]
pub(crate) fn log_sum_exp(z: &[f32], exps: &mut [f32]) -> Normaliser {
    debug_assert_eq!(z.len() % LANES, 0);
    let mut maxes = [f32::NEG_INFINITY; LANES];
    for chunk in z.chunks_exact(LANES) {
        for (m, &x) in maxes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = maxes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut sums = [0f32; LANES];
    for (zc, ec) in z.chunks_exact(LANES).zip(exps.chunks_exact_mut(LANES)) {
        for i in 0..LANES {
            ec[i] = exp(zc[i] - max);
            sums[i] += ec[i];
        }
    }
    let sum: f32 = sums.iter().sum();
    Normaliser {
        lse: max + sum.ln(),
        inv_sum: 1.0 / sum,
    }
}

/// `y += a * x` over fixed-size rows.
#[inline(always)]
pub(crate) fn axpy<const N: usize>(y: &mut [f32; N], a: f32, x: &[f32; N]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Views row `i` of a row-major buffer with rows of length `N`.
#[inline(always)]
pub(crate) fn row<const N: usize>(buf: &[f32], i: usize) -> &[f32; N] {
    buf[i * N..(i + 1) * N].try_into().expect("row in bounds")
}

/// Mutable view of row `i` of a row-major buffer with rows of length `N`.
#[inline(always)]
pub(crate) fn row_mut<const N: usize>(buf: &mut [f32], i: usize) -> &mut [f32; N] {
    (&mut buf[i * N..(i + 1) * N])
        .try_into()
        .expect("row in bounds")
}

/// `grad[r][c] += Σ_i left[i][r] · right[i][c]` for `count` samples.
///
/// `grad` is `rows × C` (`rows` even), `left` is `count × rows`, `right` is
/// `count × C`. Two gradient rows are accumulated at once in registers while
/// the samples stream past, which gives the CPU independent add chains.
#[inline(always)]
pub(crate) fn outer_accumulate<const C: usize>(
    grad: &mut [f32],
    rows: usize,
    left: &[f32],
    right: &[f32],
    count: usize,
) {
    debug_assert_eq!(rows % 2, 0);
    for r in (0..rows).step_by(2) {
        let mut acc0 = [0f32; C];
        let mut acc1 = [0f32; C];
        for i in 0..count {
            let x = row::<C>(right, i);
            axpy(&mut acc0, left[i * rows + r], x);
            axpy(&mut acc1, left[i * rows + r + 1], x);
        }
        add_into(row_mut::<C>(grad, r), &acc0);
        add_into(row_mut::<C>(grad, r + 1), &acc1);
    }
}

/// `y += x`.
#[inline(always)]
pub(crate) fn add_into<const N: usize>(y: &mut [f32; N], x: &[f32; N]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// `Wᵀ·v` for a row-major `W` (`v.len()` rows of length `C`, even count);
/// even and odd rows are summed separately, then added.
#[inline(always)]
pub(crate) fn transpose_times<const C: usize>(w: &[f32], v: &[f32]) -> [f32; C] {
    debug_assert_eq!(v.len() % 2, 0);
    let mut even = [0f32; C];
    let mut odd = [0f32; C];
    for (r, pair) in v.chunks_exact(2).enumerate() {
        axpy(&mut even, pair[0], row(w, 2 * r));
        axpy(&mut odd, pair[1], row(w, 2 * r + 1));
    }
    add_into(&mut even, &odd);
    even
}

/// Sum of squares in `f64`.
pub(crate) fn sum_sq(xs: &[f32]) -> f64 {
    xs.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst}");
    }

    #[test]
    fn tanh_matches_std() {
        let mut worst = 0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            worst = worst.max((tanh(x) as f64 - (x as f64).tanh()).abs());
            x += 0.00731;
        }
        assert!(worst < 1e-6, "abs error {worst}");
        assert_eq!(tanh(0.0), 0.0);
        assert!((tanh(1e-4) - 1e-4).abs() < 1e-10);
    }

    #[test]
    fn log_sum_exp_is_exact_enough() {
        let z: Vec<f32> = (0..256)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 3.0)
            .collect();
        let mut exps = vec![0f32; 256];
        let n = log_sum_exp(&z, &mut exps);
        let want = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((n.lse as f64 - want).abs() < 1e-5);
        let total: f32 = exps.iter().map(|e| e * n.inv_sum).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
}
