//! What one LoRA module stores, and the same update as exact low-rank factors.

/// A row-major `[rows, cols]` matrix of f32 (LoRA factors are read in f32 whatever their
/// stored dtype, as diffusers and ComfyUI compute the update).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
}

impl Matrix {
    pub fn new(rows: usize, cols: usize, values: Vec<f32>) -> Self {
        debug_assert_eq!(values.len(), rows * cols);
        Self { rows, cols, values }
    }

    pub fn identity(n: usize) -> Self {
        let mut values = vec![0.0; n * n];
        for i in 0..n {
            values[i * n + i] = 1.0;
        }
        Self::new(n, n, values)
    }

    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// `self @ other`.
    #[cfg(test)]
    pub fn matmul(&self, other: &Matrix) -> Matrix {
        debug_assert_eq!(self.cols, other.rows);
        let mut out = vec![0.0f32; self.rows * other.cols];
        for i in 0..self.rows {
            let row = &mut out[i * other.cols..(i + 1) * other.cols];
            for k in 0..self.cols {
                let a = self.values[i * self.cols + k];
                if a == 0.0 {
                    continue;
                }
                let b = &other.values[k * other.cols..(k + 1) * other.cols];
                for (o, &b) in row.iter_mut().zip(b) {
                    *o += a * b;
                }
            }
        }
        Matrix::new(self.rows, other.cols, out)
    }

    /// The Kronecker product `self ⊗ other`: `[a·c, b·d]` for `[a, b] ⊗ [c, d]`.
    pub fn kron(&self, other: &Matrix) -> Matrix {
        let (rows, cols) = (self.rows * other.rows, self.cols * other.cols);
        let mut out = vec![0.0f32; rows * cols];
        for i in 0..self.rows {
            for j in 0..self.cols {
                let a = self.values[i * self.cols + j];
                for k in 0..other.rows {
                    let r = i * other.rows + k;
                    let dst = &mut out[r * cols + j * other.cols..r * cols + (j + 1) * other.cols];
                    let src = &other.values[k * other.cols..(k + 1) * other.cols];
                    for (o, &b) in dst.iter_mut().zip(src) {
                        *o = a * b;
                    }
                }
            }
        }
        Matrix::new(rows, cols, out)
    }
}

/// The update one LoRA module stores, as the file stores it.
#[derive(Debug, Clone)]
pub(crate) enum Delta {
    /// `alpha / rank · up @ down` (LoRA: diffusers/PEFT `lora_B @ lora_A`, kohya
    /// `lora_up @ lora_down`, XLabs `up @ down`). `factor` is `alpha / rank` (or
    /// `alpha / √rank` for rank-stabilised PEFT LoRAs), 1 without an alpha.
    LowRank {
        down: Matrix,
        up: Matrix,
        factor: f32,
    },
    /// LyCORIS LoKr: `factor · w1 ⊗ w2`, each side full or a product `a @ b`.
    LoKr { w1: Side, w2: Side, factor: f32 },
    /// LyCORIS LoHa: `factor · (w1_a @ w1_b) ⊙ (w2_a @ w2_b)`.
    LoHa {
        w1: (Matrix, Matrix),
        w2: (Matrix, Matrix),
        factor: f32,
    },
    /// Full-weight differences (ComfyUI `.diff` for the weight `[out, in]`, `.diff_b` for the
    /// bias).
    Full {
        weight: Option<Matrix>,
        bias: Option<Vec<f32>>,
    },
    /// A full difference of a parameter that is not a matrix (ComfyUI's `.diff` on an RMSNorm
    /// `scale`), added to it.
    ParamDiff { shape: Vec<usize>, values: Vec<f32> },
    /// A parameter's new value (BFL control LoRAs' RMSNorm scales), replacing it whatever
    /// the LoRA's strength, as diffusers loads them.
    ParamSet { shape: Vec<usize>, values: Vec<f32> },
}

/// One side of a Kronecker product: a full matrix or a product `a @ b`.
#[derive(Debug, Clone)]
pub(crate) enum Side {
    Full(Matrix),
    Product(Matrix, Matrix),
}

impl Side {
    fn shape(&self) -> [usize; 2] {
        match self {
            Side::Full(m) => m.shape(),
            Side::Product(a, b) => [a.rows, b.cols],
        }
    }

    /// `(u, d)` with `u @ d` the matrix, `d` the thinner factor: a product as stored; a full
    /// `[a, b]` matrix as `(m, I_b)` or `(I_a, m)`, whichever has the smaller inner size.
    fn factors(&self) -> (Matrix, Matrix) {
        match self {
            Side::Product(a, b) => (a.clone(), b.clone()),
            Side::Full(m) if m.cols <= m.rows => (m.clone(), Matrix::identity(m.cols)),
            Side::Full(m) => (Matrix::identity(m.rows), m.clone()),
        }
    }
}

/// The low-rank form every delta is applied through: `factor · up @ down`.
#[derive(Debug, Clone)]
pub(crate) struct Factors {
    /// `[R, in]`.
    pub down: Matrix,
    /// `[out, R]`.
    pub up: Matrix,
    pub factor: f32,
}

impl Delta {
    /// `[out, in]` of the weight update, if it has one (`None`: a bias-only `.diff_b`).
    pub fn shape(&self) -> Option<[usize; 2]> {
        match self {
            Delta::LowRank { down, up, .. } => Some([up.rows, down.cols]),
            Delta::LoKr { w1, w2, .. } => {
                let ([a, b], [c, d]) = (w1.shape(), w2.shape());
                Some([a * c, b * d])
            }
            Delta::LoHa { w1, .. } => Some([w1.0.rows, w1.1.cols]),
            Delta::Full { weight, .. } => weight.as_ref().map(Matrix::shape),
            Delta::ParamDiff { .. } | Delta::ParamSet { .. } => None,
        }
    }

    /// The weight update as exact low-rank factors (`None` for full differences, which are
    /// only ever added to the weight):
    /// - LoKr: `(u1 d1) ⊗ (u2 d2) = (u1 ⊗ u2)(d1 ⊗ d2)`, rank `r1 · r2`;
    /// - LoHa: `(A1 B1) ⊙ (A2 B2) = U D` with `U[i, (k, l)] = A1[i, k] A2[i, l]` and
    ///   `D[(k, l), j] = B1[k, j] B2[l, j]`, rank `r1 · r2`.
    pub fn factors(&self) -> Option<Factors> {
        Some(match self {
            Delta::LowRank { down, up, factor } => Factors {
                down: down.clone(),
                up: up.clone(),
                factor: *factor,
            },
            Delta::LoKr { w1, w2, factor } => {
                let ((u1, d1), (u2, d2)) = (w1.factors(), w2.factors());
                Factors {
                    down: d1.kron(&d2),
                    up: u1.kron(&u2),
                    factor: *factor,
                }
            }
            Delta::LoHa { w1, w2, factor } => {
                let ((a1, b1), (a2, b2)) = (w1, w2);
                let (r1, r2) = (a1.cols, a2.cols);
                let rank = r1 * r2;
                let mut up = vec![0.0f32; a1.rows * rank];
                for i in 0..a1.rows {
                    for k in 0..r1 {
                        for l in 0..r2 {
                            up[i * rank + k * r2 + l] =
                                a1.values[i * r1 + k] * a2.values[i * r2 + l];
                        }
                    }
                }
                let cols = b1.cols;
                let mut down = vec![0.0f32; rank * cols];
                for k in 0..r1 {
                    for l in 0..r2 {
                        let row = &mut down[(k * r2 + l) * cols..(k * r2 + l + 1) * cols];
                        let (x, y) = (&b1.values[k * cols..], &b2.values[l * cols..]);
                        for (j, o) in row.iter_mut().enumerate() {
                            *o = x[j] * y[j];
                        }
                    }
                }
                Factors {
                    down: Matrix::new(rank, cols, down),
                    up: Matrix::new(a1.rows, rank, up),
                    factor: *factor,
                }
            }
            Delta::Full { .. } | Delta::ParamDiff { .. } | Delta::ParamSet { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, seed: u32) -> Matrix {
        let values = (0..rows * cols)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Matrix::new(rows, cols, values)
    }

    fn dense(f: &Factors) -> Matrix {
        let mut d = f.up.matmul(&f.down);
        d.values.iter_mut().for_each(|v| *v *= f.factor);
        d
    }

    fn close(a: &Matrix, b: &Matrix) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.values.iter().zip(&b.values) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn lokr_factors_are_the_kronecker_product() {
        for (w1, w2) in [
            (Side::Full(m(2, 3, 1)), Side::Full(m(4, 5, 2))),
            (
                Side::Full(m(3, 2, 1)),
                Side::Product(m(4, 2, 3), m(2, 5, 4)),
            ),
            (
                Side::Product(m(2, 1, 5), m(1, 3, 6)),
                Side::Product(m(4, 2, 3), m(2, 5, 4)),
            ),
        ] {
            let full = |s: &Side| match s {
                Side::Full(m) => m.clone(),
                Side::Product(a, b) => a.matmul(b),
            };
            let mut expected = full(&w1).kron(&full(&w2));
            expected.values.iter_mut().for_each(|v| *v *= 0.5);
            let delta = Delta::LoKr {
                w1,
                w2,
                factor: 0.5,
            };
            assert_eq!(delta.shape(), Some(expected.shape()));
            close(&dense(&delta.factors().unwrap()), &expected);
        }
    }

    #[test]
    fn loha_factors_are_the_hadamard_product() {
        let (a1, b1, a2, b2) = (m(6, 2, 1), m(2, 5, 2), m(6, 3, 3), m(3, 5, 4));
        let (p, q) = (a1.matmul(&b1), a2.matmul(&b2));
        let expected = Matrix::new(
            6,
            5,
            p.values
                .iter()
                .zip(&q.values)
                .map(|(x, y)| 2.0 * x * y)
                .collect(),
        );
        let delta = Delta::LoHa {
            w1: (a1, b1),
            w2: (a2, b2),
            factor: 2.0,
        };
        close(&dense(&delta.factors().unwrap()), &expected);
    }
}
