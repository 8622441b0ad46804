//! Ridge regression by normal equations, accumulated one sample at a time so
//! DAgger can keep adding data without storing every frame.

/// Accumulates `X^T X` and `X^T Y` for inputs with an implicit bias column.
#[derive(Debug, Clone)]
pub struct Ridge {
    dim: usize,
    outs: usize,
    /// Upper triangle of X^T X, (dim x dim), row-major, dim = inputs + 1.
    xtx: Vec<f64>,
    /// X^T Y, (dim x outs).
    xty: Vec<f64>,
    samples: u64,
    scratch: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RidgeError {
    #[error("no training samples")]
    Empty,
    #[error("normal equations are not positive definite (raise the regularisation)")]
    NotPositiveDefinite,
}

impl Ridge {
    pub fn new(inputs: usize, outs: usize) -> Ridge {
        let dim = inputs + 1;
        Ridge {
            dim,
            outs,
            xtx: vec![0.0; dim * dim],
            xty: vec![0.0; dim * outs],
            samples: 0,
            scratch: vec![0.0; dim],
        }
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Add one sample `x` (inputs) with targets `y` (outs), weighted.
    pub fn add(&mut self, x: &[f32], y: &[f32], weight: f64) {
        debug_assert_eq!(x.len() + 1, self.dim);
        debug_assert_eq!(y.len(), self.outs);
        let d = self.dim;
        for (s, &v) in self.scratch.iter_mut().zip(x) {
            *s = v as f64;
        }
        self.scratch[d - 1] = 1.0;
        for i in 0..d {
            let xi = self.scratch[i] * weight;
            if xi == 0.0 {
                continue;
            }
            let row = &mut self.xtx[i * d + i..(i + 1) * d];
            for (r, &xj) in row.iter_mut().zip(&self.scratch[i..]) {
                *r += xi * xj;
            }
            for (o, &t) in y.iter().enumerate() {
                self.xty[i * self.outs + o] += xi * t as f64;
            }
        }
        self.samples += 1;
    }

    /// Weights `(outs x (inputs + 1))`, the last column the bias. `lambda`
    /// penalises the weights, not the bias, scaled by the sample count so it
    /// means the same whatever the data size.
    pub fn solve(&self, lambda: f64) -> Result<Vec<Vec<f64>>, RidgeError> {
        if self.samples == 0 {
            return Err(RidgeError::Empty);
        }
        let d = self.dim;
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in i..d {
                a[i * d + j] = self.xtx[i * d + j];
                a[j * d + i] = self.xtx[i * d + j];
            }
        }
        let reg = lambda * self.samples as f64;
        for i in 0..d - 1 {
            a[i * d + i] += reg;
        }
        a[(d - 1) * d + d - 1] += 1e-9 * self.samples as f64;
        cholesky_in_place(&mut a, d)?;
        let mut out = Vec::with_capacity(self.outs);
        let mut b = vec![0.0; d];
        for o in 0..self.outs {
            for i in 0..d {
                b[i] = self.xty[i * self.outs + o];
            }
            cholesky_solve(&a, d, &mut b);
            out.push(b.clone());
        }
        Ok(out)
    }
}

/// Lower-triangular L with A = L L^T, stored in the lower triangle of `a`.
fn cholesky_in_place(a: &mut [f64], n: usize) -> Result<(), RidgeError> {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return Err(RidgeError::NotPositiveDefinite);
        }
        let l = s.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / l;
        }
    }
    Ok(())
}

fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_linear_map() {
        // y0 = 2 x0 - x1 + 0.5, y1 = -3 x1 + 1: exact data, tiny lambda.
        let mut r = Ridge::new(2, 2);
        let mut seed = 1u64;
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x0 = ((seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
            let x1 = ((seed >> 11 & 0xffff) as f32 / 65536.0) - 0.5;
            r.add(&[x0, x1], &[2.0 * x0 - x1 + 0.5, -3.0 * x1 + 1.0], 1.0);
        }
        let w = r.solve(1e-9).unwrap();
        let expect = [[2.0, -1.0, 0.5], [0.0, -3.0, 1.0]];
        for (row, e) in w.iter().zip(expect) {
            for (a, b) in row.iter().zip(e) {
                assert!((a - b).abs() < 1e-4, "{row:?} vs {e:?}");
            }
        }
    }

    #[test]
    fn empty_is_an_error() {
        assert!(matches!(
            Ridge::new(3, 1).solve(0.1),
            Err(RidgeError::Empty)
        ));
    }
}
