//! Scaled inverse DCTs that produce the box average of the full-size IDCT.
//!
//! At scale 1/d an 8x8 block becomes n x n pixels (n = 8/d), each the mean
//! of a d x d group of the full-size block. That mean is linear in the
//! coefficients, so it is an "IDCT" with a different basis:
//!
//!   m[i][k] = C(k)/2 * mean over p in group i of cos((2p+1) k pi / 16)
//!
//! applied separably (rows, then columns). For n = 8 this is the ordinary
//! IDCT; for n = 1 only the DC term survives. Compared with libjpeg's
//! reduced IDCTs (which sample the block), the box basis matches what the
//! model sees after a full decode and an area resize, and it is cheap: for
//! n = 2 every even frequency but 0 averages to exactly zero over a half
//! block, so only frequencies 0, 1, 3, 5, 7 (25 of 64 coefficients) count,
//! and for n = 4 frequency 4 drops out.
//!
//! Floats, not fixed point: with the coefficient magnitudes a hostile file
//! can produce, i32 fixed point needs clamps at every stage, and a float
//! cast to u8 saturates for free.

/// Box-IDCT basis for `n` outputs per dimension, rows `0..n` used.
pub(super) fn basis(n: usize) -> [[f32; 8]; 8] {
    let g = 8 / n;
    let mut m = [[0f32; 8]; 8];
    for (i, row) in m.iter_mut().enumerate().take(n) {
        for (k, w) in row.iter_mut().enumerate() {
            let ck = if k == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            let mean = (0..g)
                .map(|p| {
                    let x = (i * g + p) as f64;
                    ((2.0 * x + 1.0) * k as f64 * std::f64::consts::PI / 16.0).cos()
                })
                .sum::<f64>()
                / g as f64;
            let v = ck / 2.0 * mean;
            // Exact zeros (even frequencies at n = 2, frequency 4 at n = 4)
            // come out as ~1e-17: make them exact so nothing drifts.
            *w = if v.abs() < 1e-9 { 0.0 } else { v as f32 };
        }
    }
    m
}

/// Level shift, round and saturate one output sample.
#[inline(always)]
fn px(v: f32) -> u8 {
    // `as u8` saturates (NaN -> 0), so a hostile block cannot wrap.
    (v + 128.5) as u8
}

/// Fills an n x n output block with one value: the DC-only case, the most
/// common block in smooth camera images, and all of scale 1/8.
#[inline(always)]
pub(super) fn dc_only(dc: f32, n: usize, out: &mut [u8], stride: usize, w: usize, h: usize) {
    // C(0)^2 / 4 * F00 = F00 / 8.
    let v = px(dc * 0.125);
    if n == 2 && w >= 2 && h >= 2 && out.len() > stride + 1 {
        // Scale 1/4, the camera path: four byte stores, where the general
        // loop below costs two memset calls.
        out[0] = v;
        out[1] = v;
        out[stride] = v;
        out[stride + 1] = v;
        return;
    }
    for row in out.chunks_mut(stride).take(h.min(n)) {
        row[..w.min(n)].fill(v);
    }
}

/// n = 2 (scale 1/4). `blk` is the dequantised block in natural order;
/// `rows` has bit u set when row u may hold a nonzero coefficient.
#[inline(always)]
pub(super) fn box2(
    blk: &[f32; 64],
    rows: u8,
    m: &[[f32; 8]; 8],
    out: &mut [u8],
    stride: usize,
    w: usize,
    h: usize,
) {
    let a = &m[0];
    // Row pass over the rows that matter (0, 1, 3, 5, 7), each giving the
    // left and right half means; the right half flips the odd terms.
    let mut r = [[0f32; 2]; 5];
    for (slot, &u) in [0usize, 1, 3, 5, 7].iter().enumerate() {
        if rows & (1 << u) == 0 {
            continue;
        }
        let b = &blk[u * 8..u * 8 + 8];
        let e = b[0] * a[0];
        let o = b[1] * a[1] + b[3] * a[3] + b[5] * a[5] + b[7] * a[7];
        r[slot] = [e + o, e - o];
    }
    for j in 0..w.min(2) {
        let e = r[0][j] * a[0];
        let o = r[1][j] * a[1] + r[2][j] * a[3] + r[3][j] * a[5] + r[4][j] * a[7];
        out[j] = px(e + o);
        if h > 1 {
            out[stride + j] = px(e - o);
        }
    }
}

/// Any n (used for 4 and 8): straightforward separable matrix products,
/// skipping rows with no coefficients. Not on the 160x120 hot path.
pub(super) fn box_n<const N: usize>(
    blk: &[f32; 64],
    rows: u8,
    m: &[[f32; 8]; 8],
    out: &mut [u8],
    stride: usize,
    w: usize,
    h: usize,
) {
    let mut t = [[0f32; N]; 8];
    for (u, tu) in t.iter_mut().enumerate() {
        if rows & (1 << u) == 0 {
            continue;
        }
        let b = &blk[u * 8..u * 8 + 8];
        for (j, tj) in tu.iter_mut().enumerate() {
            *tj = (0..8).map(|v| b[v] * m[j][v]).sum();
        }
    }
    for i in 0..h.min(N) {
        let row = &mut out[i * stride..];
        for j in 0..w.min(N) {
            let s: f32 = (0..8).map(|u| m[i][u] * t[u][j]).sum();
            row[j] = px(s);
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index maths reads clearer
mod tests {
    use super::*;

    /// The n = 8 basis is the IDCT: a block with one coefficient matches the
    /// textbook formula, and each scaled basis is the mean of the full one.
    #[test]
    fn basis_is_idct_and_box_means() {
        let full = basis(8);
        for k in 0..8 {
            let ck = if k == 0 { 0.5f64.sqrt() } else { 1.0 };
            for x in 0..8 {
                let want =
                    ck / 2.0 * ((2 * x + 1) as f64 * k as f64 * std::f64::consts::PI / 16.0).cos();
                assert!((full[x][k] as f64 - want).abs() < 1e-6);
            }
        }
        for n in [1, 2, 4] {
            let g = 8 / n;
            let m = basis(n);
            for i in 0..n {
                for k in 0..8 {
                    let mean: f32 = (0..g).map(|p| full[i * g + p][k]).sum::<f32>() / g as f32;
                    assert!((m[i][k] - mean).abs() < 1e-6, "n={n} i={i} k={k}");
                }
            }
        }
        // The zeros box2 relies on.
        let m2 = basis(2);
        for k in [2, 4, 6] {
            assert_eq!(m2[0][k], 0.0);
            assert_eq!(m2[1][k], 0.0);
        }
        let m4 = basis(4);
        assert!((0..4).all(|i| m4[i][4] == 0.0));
    }

    /// box2 on a dense random block equals the generic path and the mean of
    /// the full-size IDCT.
    #[test]
    fn box2_matches_full_idct_mean() {
        let mut blk = [0f32; 64];
        let mut s = 12345u32;
        for c in blk.iter_mut() {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            // |AC| <= 8 keeps every full-size pixel inside 0..=255 (no clipping).
            *c = ((s >> 16) % 17) as f32 - 8.0;
        }
        blk[0] = 0.0;
        let mut full = [0u8; 64];
        box_n::<8>(&blk, 0xFF, &basis(8), &mut full, 8, 8, 8);
        let mut q = [0u8; 4];
        box2(&blk, 0xFF, &basis(2), &mut q, 2, 2, 2);
        for i in 0..2 {
            for j in 0..2 {
                let mut sum = 0u32;
                for y in 0..4 {
                    for x in 0..4 {
                        sum += full[(i * 4 + y) * 8 + j * 4 + x] as u32;
                    }
                }
                let mean = sum as f32 / 16.0;
                assert!((q[i * 2 + j] as f32 - mean).abs() <= 1.0, "{i},{j}");
            }
        }
    }
}
