//! The training report (`report.json`) and curves (`curves.svg`) written
//! next to the model, so a racer can see what a run did without a notebook.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::dagger::{IterStats, TrainConfig};

pub fn write(
    dir: &Path,
    cfg: &TrainConfig,
    tracks: &[String],
    history: &[IterStats],
) -> Result<()> {
    let report = json!({
        "trainer": "dagger-readout",
        "tracks": tracks,
        "seed": cfg.seed,
        "pool": cfg.spec.pool,
        "hidden": cfg.hidden,
        "lambda": cfg.lambda,
        "steps_per_iteration": cfg.steps_per_iteration,
        "drive_speed_mps": [cfg.drive_speed.0, cfg.drive_speed.1],
        "randomization": cfg.randomization,
        "iterations": history,
        "wall_clock_s": history.last().map(|s| s.elapsed_s),
    });
    let p = dir.join("report.json");
    std::fs::write(&p, serde_json::to_string_pretty(&report)?)
        .with_context(|| p.display().to_string())?;
    let p = dir.join("curves.svg");
    std::fs::write(&p, svg(history)).with_context(|| p.display().to_string())?;
    Ok(())
}

/// Two curves over DAgger iterations: the learner's steering error on the
/// states it visited, and the off-track rate while collecting.
pub fn svg(history: &[IterStats]) -> String {
    let (w, h, pad) = (640.0, 360.0, 48.0);
    let n = history.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n;
    let series = |f: &dyn Fn(&IterStats) -> f64| -> Vec<(usize, f64)> {
        history
            .iter()
            .enumerate()
            .map(|(i, s)| (i, f(s)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let err = series(&|s| s.steer_mae);
    let off = series(&|s| s.offtrack_rate);
    let max = err.iter().chain(&off).map(|p| p.1).fold(1e-6, f64::max);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{pad}" y="20">DAgger training: steering error (blue), off-track rate (red); max {max:.3}</text>
<text x="{cx}" y="{lb}">iteration</text>
"##,
        b = h - pad,
        r = w - pad,
        cx = w / 2.0 - 20.0,
        lb = h - 12.0
    );
    for (pts, colour) in [(&err, "#1f5fbf"), (&off, "#c0392b")] {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|&(i, v)| format!("{:.1},{:.1}", x(i), y(v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(i, v) in pts.iter() {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(i),
                y(v)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
