//! Deterministic generator of the built-in tracks in `sim/tracks/*.npy`.
//!
//! Each track is a closed centripetal Catmull-Rom spline through hand-placed
//! control points, resampled at even spacing, with borders offset along the
//! normal. Only `+ - * /` and `sqrt` are used, so the output is bit-identical
//! on every IEEE-754 machine; the test `builtin_tracks_match_generator`
//! regenerates the files and compares bytes (run it with
//! `SIM_REGEN_TRACKS=1` to rewrite them after changing a design).

use crate::npy;

/// One built-in track design.
pub struct TrackSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// Distance between the borders' outer edges, metres.
    pub width: f64,
    /// Centre-line waypoint spacing, metres (DeepRacer files use ~0.15-0.2).
    pub spacing: f64,
    pub control: Vec<[f64; 2]>,
}

/// All built-in designs, in the same order as [`crate::Track::builtin_names`].
pub fn specs() -> Vec<TrackSpec> {
    vec![
        TrackSpec {
            name: "oval",
            description: "stadium oval: 6 m straights joined by half circles (1.05-1.5 m radius)",
            width: 0.76,
            spacing: 0.15,
            control: stadium([1.8, 0.6], 6.0, 1.5, 0.5),
        },
        TrackSpec {
            name: "technical",
            description: "hairpin, S-bend and a tight sweeper",
            width: 0.76,
            spacing: 0.15,
            control: vec![
                [2.0, 0.8],
                [4.0, 0.8],
                [6.0, 0.8],
                [7.6, 1.0],
                [8.6, 1.8],
                [8.9, 3.2],
                [9.0, 4.4],
                [8.85, 5.3],
                [8.6, 5.9],
                [8.0, 6.15],
                [7.4, 5.9],
                [7.15, 5.3],
                [7.0, 4.5],
                [6.7, 3.7],
                [6.1, 3.0],
                [5.3, 2.8],
                [4.6, 3.2],
                [4.0, 3.9],
                [3.2, 4.2],
                [2.4, 4.0],
                [1.4, 3.6],
                [0.8, 2.7],
                [0.9, 1.5],
            ],
        },
        TrackSpec {
            name: "speedway",
            description: "long fast kidney with sweeping bends",
            width: 1.0,
            spacing: 0.2,
            control: vec![
                [2.0, 1.0],
                [5.0, 0.8],
                [8.0, 0.8],
                [11.0, 0.9],
                [13.4, 1.4],
                [14.8, 2.8],
                [14.9, 4.6],
                [13.8, 6.2],
                [11.6, 6.8],
                [9.6, 6.2],
                [7.6, 5.6],
                [5.6, 6.4],
                [3.4, 6.8],
                [1.6, 6.0],
                [0.8, 4.4],
                [0.8, 2.6],
            ],
        },
    ]
}

/// Control points on a stadium (two straights joined by half circles),
/// counter-clockwise, starting at the beginning of the bottom straight.
/// The circle points use a fixed rational parametrisation (no sin/cos) so
/// they are exact on every machine.
fn stadium(origin: [f64; 2], straight: f64, radius: f64, step: f64) -> Vec<[f64; 2]> {
    let mut pts = Vec::new();
    let n_str = (straight / step).round() as usize;
    // Quarter-circle points from the tangent-half-angle formula, t in [0,1]
    // covers 0..90 degrees.
    let quarter: Vec<[f64; 2]> = (0..4)
        .map(|k| {
            let t = k as f64 / 4.0;
            let d = 1.0 + t * t;
            [(1.0 - t * t) / d, 2.0 * t / d]
        })
        .collect();
    let (x0, y0) = (origin[0], origin[1]);
    for i in 0..n_str {
        pts.push([x0 + straight * i as f64 / n_str as f64, y0]);
    }
    // Right end: centre (x0 + straight, y0 + radius), from angle -90 to +90.
    let cx = x0 + straight;
    let cy = y0 + radius;
    for q in &quarter {
        // angle a - 90deg: (sin a, -cos a)
        pts.push([cx + radius * q[1], cy - radius * q[0]]);
    }
    for q in &quarter {
        pts.push([cx + radius * q[0], cy + radius * q[1]]);
    }
    for i in 0..n_str {
        pts.push([cx - straight * i as f64 / n_str as f64, y0 + 2.0 * radius]);
    }
    let cx = x0;
    for q in &quarter {
        pts.push([cx - radius * q[1], cy + radius * q[0]]);
    }
    for q in &quarter {
        pts.push([cx - radius * q[0], cy - radius * q[1]]);
    }
    pts
}

fn dist(a: [f64; 2], b: [f64; 2]) -> f64 {
    ((b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1])).sqrt()
}

/// Centripetal Catmull-Rom point between p1 and p2 at u in [0, 1].
fn catmull_rom(p: [[f64; 2]; 4], u: f64) -> [f64; 2] {
    let kt = |a: [f64; 2], b: [f64; 2]| dist(a, b).sqrt().max(1e-9);
    let t0 = 0.0;
    let t1 = t0 + kt(p[0], p[1]);
    let t2 = t1 + kt(p[1], p[2]);
    let t3 = t2 + kt(p[2], p[3]);
    let t = t1 + (t2 - t1) * u;
    let lerp = |a: [f64; 2], b: [f64; 2], ta: f64, tb: f64| {
        let wa = (tb - t) / (tb - ta);
        let wb = (t - ta) / (tb - ta);
        [a[0] * wa + b[0] * wb, a[1] * wa + b[1] * wb]
    };
    let a1 = lerp(p[0], p[1], t0, t1);
    let a2 = lerp(p[1], p[2], t1, t2);
    let a3 = lerp(p[2], p[3], t2, t3);
    let b1 = lerp(a1, a2, t0, t2);
    let b2 = lerp(a2, a3, t1, t3);
    lerp(b1, b2, t1, t2)
}

/// Rows `[cx, cy, ix, iy, ox, oy]` of a design, first row repeated last.
pub fn generate_rows(spec: &TrackSpec) -> Vec<[f64; 6]> {
    let cp = &spec.control;
    let n = cp.len();
    // Dense polyline through the spline.
    let per = 64;
    let mut dense = Vec::with_capacity(n * per + 1);
    for i in 0..n {
        let p = [cp[(i + n - 1) % n], cp[i], cp[(i + 1) % n], cp[(i + 2) % n]];
        for k in 0..per {
            dense.push(catmull_rom(p, k as f64 / per as f64));
        }
    }
    dense.push(dense[0]);
    let mut cum = vec![0.0];
    for w in dense.windows(2) {
        let l = cum[cum.len() - 1] + dist(w[0], w[1]);
        cum.push(l);
    }
    let total = cum[cum.len() - 1];
    let m = (total / spec.spacing).round().max(8.0) as usize;
    let mut centre = Vec::with_capacity(m);
    let mut j = 0;
    for k in 0..m {
        let s = total * k as f64 / m as f64;
        while cum[j + 1] < s {
            j += 1;
        }
        let f = (s - cum[j]) / (cum[j + 1] - cum[j]);
        let a = dense[j];
        let b = dense[j + 1];
        centre.push([a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f]);
    }
    // Signed area tells the direction; inner is the left border of a
    // counter-clockwise track, as in DeepRacer's files.
    let mut area = 0.0;
    for k in 0..m {
        let a = centre[k];
        let b = centre[(k + 1) % m];
        area += a[0] * b[1] - b[0] * a[1];
    }
    let ccw = area > 0.0;
    let hw = spec.width / 2.0;
    let mut rows = Vec::with_capacity(m + 1);
    for k in 0..m {
        let a = centre[(k + m - 1) % m];
        let b = centre[(k + 1) % m];
        let l = dist(a, b);
        let left = [-(b[1] - a[1]) / l, (b[0] - a[0]) / l];
        let c = centre[k];
        let lp = [c[0] + left[0] * hw, c[1] + left[1] * hw];
        let rp = [c[0] - left[0] * hw, c[1] - left[1] * hw];
        let (inner, outer) = if ccw { (lp, rp) } else { (rp, lp) };
        rows.push([c[0], c[1], inner[0], inner[1], outer[0], outer[1]]);
    }
    rows.push(rows[0]);
    rows
}

/// The `.npy` bytes of a design.
pub fn generate_npy(spec: &TrackSpec) -> Vec<u8> {
    let rows = generate_rows(spec);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    npy::write_f64_2d(rows.len(), 6, &flat)
}

/// Smallest radius of curvature of the centre line (circumradius of every
/// three consecutive waypoints), metres.
pub fn min_radius(rows: &[[f64; 6]]) -> f64 {
    let pts: Vec<[f64; 2]> = rows[..rows.len() - 1]
        .iter()
        .map(|r| [r[0], r[1]])
        .collect();
    let m = pts.len();
    let mut best = f64::INFINITY;
    for k in 0..m {
        let a = pts[(k + m - 1) % m];
        let b = pts[k];
        let c = pts[(k + 1) % m];
        let cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if cross.abs() < 1e-12 {
            continue;
        }
        let r = dist(a, b) * dist(b, c) * dist(a, c) / (2.0 * cross.abs());
        best = best.min(r);
    }
    best
}
