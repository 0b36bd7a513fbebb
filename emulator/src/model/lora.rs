//! Low-rank adapted weight matrices: `W = base + scale · B·A`.
//!
//! The forward pass only ever reads the merged matrix `W` (kept in both
//! orientations), so a LoRA model costs no more per token than a dense one.
//! Backward accumulates `dL/dW` densely; because `dW` is linear in the
//! per-token terms, the exact adapter gradients follow once per optimiser
//! step: `dB = scale · dW·Aᵀ` and `dA = scale · Bᵀ·dW`.

use super::rng::SplitMix64;

/// One adapted weight matrix of shape `rows × cols` (row-major).
#[derive(Clone, Debug)]
pub(crate) struct LoraMatrix {
    /// Output dimension.
    pub rows: usize,
    /// Input dimension.
    pub cols: usize,
    /// Adapter rank.
    pub rank: usize,
    /// LoRA scale multiplying `B·A`.
    pub scale: f32,
    /// Frozen base weights, `rows × cols`.
    pub base: Vec<f32>,
    /// Adapter down-projection, `rank × cols`, random at init.
    pub a: Vec<f32>,
    /// Adapter up-projection, `rows × rank`, zero at init.
    pub b: Vec<f32>,
    /// `base + scale · B·A`, `rows × cols`.
    pub merged: Vec<f32>,
    /// Transpose of `merged`, `cols × rows`.
    pub merged_t: Vec<f32>,
}

impl LoraMatrix {
    /// A fresh adapter over `base`: `A` uniform with bound `1/sqrt(cols)` (the
    /// usual Kaiming-uniform LoRA init) drawn from `rng`, `B = 0`, so the
    /// adapted matrix starts equal to the base.
    pub(crate) fn new(
        rows: usize,
        cols: usize,
        rank: usize,
        scale: f32,
        base: Vec<f32>,
        rng: &mut SplitMix64,
    ) -> Self {
        assert_eq!(base.len(), rows * cols);
        let bound = 1.0 / (cols as f32).sqrt();
        let a = (0..rank * cols).map(|_| rng.symmetric(bound)).collect();
        let mut matrix = Self {
            rows,
            cols,
            rank,
            scale,
            base,
            a,
            b: vec![0.0; rows * rank],
            merged: Vec::new(),
            merged_t: Vec::new(),
        };
        matrix.merge();
        matrix
    }

    /// Recomputes `merged` and `merged_t` from `base`, `A` and `B`.
    pub(crate) fn merge(&mut self) {
        let (rows, cols, rank) = (self.rows, self.cols, self.rank);
        self.merged.clone_from(&self.base);
        for r in 0..rows {
            let out = &mut self.merged[r * cols..(r + 1) * cols];
            for j in 0..rank {
                let coef = self.scale * self.b[r * rank + j];
                if coef != 0.0 {
                    let a_row = &self.a[j * cols..(j + 1) * cols];
                    for (o, &a) in out.iter_mut().zip(a_row) {
                        *o += coef * a;
                    }
                }
            }
        }
        self.merged_t.resize(rows * cols, 0.0);
        for r in 0..rows {
            for c in 0..cols {
                self.merged_t[c * rows + r] = self.merged[r * cols + c];
            }
        }
    }

    /// Exact adapter gradients `(dA, dB)` from the gradient `dW` of the merged
    /// matrix (`rows × cols`).
    pub(crate) fn adapter_grads(&self, dw: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (rows, cols, rank) = (self.rows, self.cols, self.rank);
        let scale = f64::from(self.scale);
        let mut da = vec![0f64; rank * cols];
        let mut db = vec![0f32; rows * rank];
        for r in 0..rows {
            let dw_row = &dw[r * cols..(r + 1) * cols];
            if dw_row.iter().all(|&g| g == 0.0) {
                continue;
            }
            for j in 0..rank {
                let a_row = &self.a[j * cols..(j + 1) * cols];
                let dot: f64 = dw_row
                    .iter()
                    .zip(a_row)
                    .map(|(&g, &a)| f64::from(g) * f64::from(a))
                    .sum();
                db[r * rank + j] = (scale * dot) as f32;
                let b = scale * f64::from(self.b[r * rank + j]);
                if b != 0.0 {
                    for (d, &g) in da[j * cols..(j + 1) * cols].iter_mut().zip(dw_row) {
                        *d += b * f64::from(g);
                    }
                }
            }
        }
        (da.into_iter().map(|x| x as f32).collect(), db)
    }
}
