//! The readout's input: the camera image averaged over `pool x pool` blocks.
//!
//! The exported ONNX graph computes the same thing with `AveragePool`, so the
//! features fitted here are bit-for-bit what the car's model sees (up to f32
//! summation order).

/// Geometry of the pooled image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSpec {
    pub width: usize,
    pub height: usize,
    pub pool: usize,
}

impl FeatureSpec {
    /// The DeepRacer camera input (160x120 gray) pooled 8x8: 20x15 features.
    pub const DEFAULT: FeatureSpec = FeatureSpec {
        width: 160,
        height: 120,
        pool: 8,
    };

    pub fn cols(&self) -> usize {
        self.width / self.pool
    }
    pub fn rows(&self) -> usize {
        self.height / self.pool
    }
    pub fn len(&self) -> usize {
        self.cols() * self.rows()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Block averages of a gray image (raw 0-255), row-major, into `out`.
    pub fn extract(&self, gray: &[u8], out: &mut [f32]) {
        assert_eq!(gray.len(), self.width * self.height, "image size");
        assert_eq!(out.len(), self.len(), "feature buffer size");
        let (p, cols) = (self.pool, self.cols());
        out.fill(0.0);
        for y in 0..self.rows() * p {
            let row = &gray[y * self.width..y * self.width + cols * p];
            let acc = &mut out[(y / p) * cols..(y / p + 1) * cols];
            for (a, block) in acc.iter_mut().zip(row.chunks_exact(p)) {
                *a += block.iter().map(|&v| v as u32).sum::<u32>() as f32;
            }
        }
        let inv = 1.0 / (p * p) as f32;
        out.iter_mut().for_each(|v| *v *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_average_matches_hand_computation() {
        let spec = FeatureSpec {
            width: 4,
            height: 2,
            pool: 2,
        };
        let img = [0u8, 2, 10, 20, 4, 6, 30, 40];
        let mut f = [0.0f32; 2];
        spec.extract(&img, &mut f);
        assert_eq!(f, [3.0, 25.0]);
    }
}
