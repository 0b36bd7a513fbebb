//! Dimuon step (the emulator's stand-in for Tinker's `dimuon` optimizer, PROTOCOL.md 10.8).
//!
//! No public description of Dimuon's update rule exists; the emulator implements the closest
//! documented rule, Muon ("MomentUm Orthogonalized by Newton-Schulz", K. Jordan et al.,
//! <https://kellerjordan.github.io/posts/muon/>), on each adapter matrix (LoRA `A` and `B`
//! are the 2-D parameters):
//!
//! 1. momentum `M ← beta1·M + G`, Nesterov update `U = G + beta1·M`;
//! 2. `O = NS5(U)`: five quintic Newton-Schulz iterations `X ← a·X + (b·XXᵀ + c·(XXᵀ)²)·X`
//!    with `(a, b, c) = (3.4445, −4.7750, 2.0315)` from `X₀ = U/(‖U‖_F + 1e-7)` (on the
//!    transpose when the matrix is taller than wide), an approximate orthogonalization;
//! 3. `W ← W − lr · sqrt(max(1, rows/cols)) · O`.
//!
//! The global gradient-norm clip (`grad_clip_norm > 0`) scales `G` first, as for AdamW.

use super::ModelError;

/// One Dimuon step's parameters (the wire `DimuonParams`).
#[derive(Clone, Debug, PartialEq)]
pub struct DimuonParams {
    /// Step size, finite and >= 0.
    pub learning_rate: f64,
    /// Global gradient-norm clip; non-positive disables it.
    pub grad_clip_norm: f64,
    /// Momentum coefficient in [0, 1).
    pub beta1: f64,
}

impl DimuonParams {
    /// The official constraints (finite values, lr >= 0, 0 <= beta1 < 1).
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let ok = self.learning_rate.is_finite()
            && self.grad_clip_norm.is_finite()
            && self.beta1.is_finite()
            && self.learning_rate >= 0.0
            && (0.0..1.0).contains(&self.beta1);
        if !ok {
            return Err(ModelError::InvalidInput(format!(
                "optimizer_params (dimuon) need finite values, learning_rate >= 0 and 0 <= beta1 < 1; got learning_rate={}, grad_clip_norm={}, beta1={}",
                self.learning_rate, self.grad_clip_norm, self.beta1
            )));
        }
        Ok(())
    }
}

const NS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// `rows × cols` row-major product `x · y` with `x: r×k`, `y: k×c`.
fn matmul(x: &[f64], y: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for t in 0..k {
            let a = x[i * k + t];
            if a != 0.0 {
                for j in 0..c {
                    out[i * c + j] += a * y[t * c + j];
                }
            }
        }
    }
    out
}

fn transpose(x: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = x[i * c + j];
        }
    }
    out
}

/// Approximate orthogonalization of a `rows × cols` matrix by 5 Newton-Schulz steps.
pub(crate) fn newton_schulz(u: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt() + 1e-7;
    let tall = rows > cols;
    let (mut x, r, c) = if tall {
        (transpose(u, rows, cols), cols, rows)
    } else {
        (u.to_vec(), rows, cols)
    };
    x.iter_mut().for_each(|v| *v /= norm);
    let (a, b, cc) = NS;
    for _ in 0..5 {
        let xt = transpose(&x, r, c);
        let gram = matmul(&x, &xt, r, c, r); // r×r
        let gram2 = matmul(&gram, &gram, r, r, r);
        let poly: Vec<f64> = gram
            .iter()
            .zip(&gram2)
            .map(|(g, g2)| b * g + cc * g2)
            .collect();
        let px = matmul(&poly, &x, r, r, c);
        x = x.iter().zip(&px).map(|(xv, p)| a * xv + p).collect();
    }
    if tall {
        transpose(&x, r, c)
    } else {
        x
    }
}

/// One Dimuon update of a `rows × cols` matrix `params` with momentum buffer `m`.
pub(crate) fn update(
    params: &mut [f32],
    m: &mut [f32],
    grads: &[f32],
    grad_scale: f64,
    rows: usize,
    cols: usize,
    hp: &DimuonParams,
) {
    let u: Vec<f64> = grads
        .iter()
        .zip(m.iter_mut())
        .map(|(&g, mv)| {
            let g = f64::from(g) * grad_scale;
            let m_new = hp.beta1 * f64::from(*mv) + g;
            *mv = m_new as f32;
            g + hp.beta1 * m_new
        })
        .collect();
    let o = newton_schulz(&u, rows, cols);
    let scale = hp.learning_rate * (rows as f64 / cols as f64).max(1.0).sqrt();
    for (p, ov) in params.iter_mut().zip(o) {
        *p = (f64::from(*p) - scale * ov) as f32;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn newton_schulz_roughly_orthogonalizes() {
        // A 2×3 matrix: rows of the result are near-orthonormal (singular values ~0.7..1.2).
        let u = [1.0, 2.0, 0.5, -1.0, 0.3, 2.0];
        let o = super::newton_schulz(&u, 2, 3);
        let dot = o[0] * o[3] + o[1] * o[4] + o[2] * o[5];
        let n0 = (o[0] * o[0] + o[1] * o[1] + o[2] * o[2]).sqrt();
        assert!(dot.abs() < 0.3, "{dot}");
        assert!((0.6..1.3).contains(&n0), "{n0}");
    }
}
