//! Synthetic camera frames: a track seen from the car, with the features a
//! model and a JPEG decoder meet on a real one (floor and wall gradients, a
//! dark road narrowing to the horizon, white edges, a dashed centre line,
//! red and white kerbs, sensor noise). Deterministic for a seed.

/// `w` x `h` pixels, 3 channels (RGB) or 1 (BT.601 luma, the gray the
/// stock car's OpenCV makes), row-major. `seed` moves the noise and bends
/// the road a little, so frames of one sequence differ.
pub fn track_scene(w: usize, h: usize, channels: usize, seed: u32) -> Vec<u8> {
    assert!(channels == 1 || channels == 3, "1 or 3 channels");
    let mut s = seed.wrapping_mul(2654435761) | 1;
    let mut noise = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s % 17) as f32 - 8.0
    };
    let mut out = Vec::with_capacity(w * h * channels);
    let horizon = h as f32 * 0.35;
    let bend = seed as f32;
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32, y as f32);
            let mut rgb = if fy < horizon {
                [150.0 + 60.0 * fy / horizon, 170.0, 200.0]
            } else {
                [70.0, 110.0 + 30.0 * (fy - horizon) / h as f32, 60.0]
            };
            if fy >= horizon {
                let t = (fy - horizon) / (h as f32 - horizon);
                let centre = w as f32 * (0.5 + 0.1 * (t * 3.0 + bend).sin());
                let half = w as f32 * (0.05 + 0.4 * t);
                let d = (fx - centre).abs();
                if d < half {
                    rgb = [60.0, 60.0, 65.0];
                    if d < 2.0 + 4.0 * t && ((fy * 0.15 / (0.2 + t)) as i32) % 2 == 0 {
                        rgb = [220.0, 200.0, 40.0];
                    }
                    if d > half * 0.92 {
                        rgb = [235.0, 235.0, 235.0];
                    }
                } else if d < half * 1.1 {
                    rgb = if ((fy / 6.0) as i32) % 2 == 0 {
                        [200.0, 40.0, 40.0]
                    } else {
                        [230.0, 230.0, 230.0]
                    };
                }
            }
            let n = noise();
            let px = rgb.map(|c| (c + n).clamp(0.0, 255.0) as u8);
            if channels == 1 {
                let g =
                    0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2]);
                out.push(g.round() as u8);
            } else {
                out.extend_from_slice(&px);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scene_is_deterministic_and_has_a_road() {
        let a = track_scene(64, 48, 3, 7);
        assert_eq!(a, track_scene(64, 48, 3, 7));
        assert_ne!(a, track_scene(64, 48, 3, 8));
        assert_eq!(a.len(), 64 * 48 * 3);
        let g = track_scene(64, 48, 1, 7);
        assert_eq!(g.len(), 64 * 48);
        // The bottom row is mostly dark road, the top row the bright wall.
        let mean = |row: usize| {
            g[row * 64..(row + 1) * 64]
                .iter()
                .map(|&p| f64::from(p))
                .sum::<f64>()
                / 64.0
        };
        let (top, bottom) = (mean(0), mean(47));
        assert!(top > bottom + 40.0, "top {top}, bottom {bottom}");
    }
}
