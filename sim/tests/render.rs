//! What the camera sees: road ahead, borders either side, sky on top, and
//! the renderer's size and buffer checks.

// Tests tweak one field of a default config at a time; that reads clearer.
#![allow(clippy::field_reassign_with_default)]

use sim::{Channels, Randomization, RenderError, Sim, SimConfig, Track};

fn frame(sim: &mut Sim, w: usize, h: usize, ch: Channels) -> Vec<u8> {
    let mut buf = vec![0u8; w * h * ch.bytes_per_pixel()];
    sim.render_into(&mut buf, w, h, ch).unwrap();
    buf
}

#[test]
fn start_line_view_shows_road_borders_and_sky() {
    let mut sim = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
    sim.place(0.0, 0.0, 0.0);
    let (w, h) = (160, 120);
    let f = frame(&mut sim, w, h, Channels::Gray);
    let px = |x: usize, y: usize| f[y * w + x];
    // Top row: sky, uniform and bright.
    assert!(f[..w].iter().all(|&v| v == f[0]) && f[0] > 150);
    // Bottom row: road (dark grey) or a centre dash (orange); the camera
    // sees only ~0.25 m across right in front of the bumper.
    let road = 63u8;
    let bottom: Vec<u8> = (0..w).map(|x| px(x, h - 1)).collect();
    assert!(bottom.iter().filter(|&&v| v.abs_diff(road) <= 2).count() > w / 2);
    // White border lines on both sides, converging toward the horizon: the
    // innermost white pixel on the left moves right as rows go up.
    let white = |v: u8| v > 200;
    let left_edge = |y: usize| (0..w / 2).rev().find(|&x| white(px(x, y)));
    let right_edge = |y: usize| (w / 2..w).find(|&x| white(px(x, y)));
    let rows: Vec<usize> = (0..h)
        .filter(|&y| left_edge(y).is_some() && right_edge(y).is_some())
        .collect();
    assert!(rows.len() > h / 5, "borders visible on {} rows", rows.len());
    let (near, far) = (*rows.last().unwrap(), rows[0] + 2);
    assert!(left_edge(near) < left_edge(far), "{near} {far}");
    assert!(right_edge(near) > right_edge(far), "{near} {far}");
    // Orange centre dashes appear in RGB somewhere down the middle.
    let rgb = frame(&mut sim, w, h, Channels::Rgb);
    let orange = (h / 2..h).any(|y| {
        (w / 2 - 8..w / 2 + 8).any(|x| {
            let p = &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
            p[0] > 180 && p[1] > 100 && p[1] < 160 && p[2] < 40
        })
    });
    assert!(orange);
}

#[test]
fn rgb_and_gray_agree_on_geometry() {
    let mut sim = Sim::new(Track::builtin("technical").unwrap(), SimConfig::default());
    sim.place(37.0, 0.05, 0.1);
    let g = frame(&mut sim, 64, 48, Channels::Gray);
    let c = frame(&mut sim, 64, 48, Channels::Rgb);
    for i in 0..64 * 48 {
        let p = &c[i * 3..i * 3 + 3];
        let y = 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
        assert!(
            (y - g[i] as f64).abs() <= 1.5,
            "pixel {i}: {p:?} vs {}",
            g[i]
        );
    }
}

#[test]
fn any_size_and_bad_buffers() {
    let mut sim = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
    for (w, h) in [(1, 1), (640, 480), (33, 17), (160, 120)] {
        frame(&mut sim, w, h, Channels::Gray);
    }
    let mut small = vec![0u8; 100];
    assert!(matches!(
        sim.render_into(&mut small, 160, 120, Channels::Gray),
        Err(RenderError::Buffer { need: 19200, .. })
    ));
    assert!(matches!(
        sim.render_into(&mut small, 0, 120, Channels::Gray),
        Err(RenderError::Size { .. })
    ));
}

#[test]
fn randomization_changes_the_look_but_not_the_geometry() {
    let mut cfg = SimConfig::default();
    cfg.randomization = Randomization::standard();
    let mut sim = Sim::new(Track::builtin("oval").unwrap(), cfg);
    let mut clean = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
    clean.place(5.0, 0.0, 0.0);
    let base = frame(&mut clean, 160, 120, Channels::Gray);
    let mut looks = Vec::new();
    for seed in 0..6 {
        sim.reset(seed);
        sim.place(5.0, 0.0, 0.0);
        let f = frame(&mut sim, 160, 120, Channels::Gray);
        assert!(f != base);
        let mean = f.iter().map(|&v| v as f64).sum::<f64>() / f.len() as f64;
        looks.push(mean);
        // Lines and road still differ clearly, whatever the lighting.
        let ground = &f[60 * 160..];
        let max = *ground.iter().max().unwrap() as i32;
        let min = *ground.iter().min().unwrap() as i32;
        assert!(max - min > 60, "seed {seed}: contrast {min}..{max}");
    }
    looks.sort_by(f64::total_cmp);
    assert!(looks[5] - looks[0] > 5.0, "{looks:?}");
}
