//! The training report (`report.json`) and curves (`curves.svg`) written
//! next to the model, so a racer can see what a run did without a notebook.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::dagger::IterStats;

/// Write `report.json` (which trainer, the run's settings, every iteration's
/// or update's figures, and whatever `extra` holds, such as evaluation
/// results) and `curves.svg`.
pub fn write(
    dir: &Path,
    trainer: &str,
    settings: Value,
    history: Value,
    wall_clock_s: Option<f64>,
    extra: Value,
    curves: &str,
) -> std::io::Result<()> {
    let report = json!({
        "trainer": trainer,
        "settings": settings,
        "iterations": history,
        "wall_clock_s": wall_clock_s,
        "result": extra,
    });
    let text = serde_json::to_string_pretty(&report).expect("report serialises");
    safe_io::atomic::write(&dir.join("report.json"), text.as_bytes())?;
    safe_io::atomic::write(&dir.join("curves.svg"), curves.as_bytes())
}

/// One plotted series: title, colour, (wall-clock s, value) points, log scale.
pub struct Panel<'a> {
    pub title: &'a str,
    pub colour: &'a str,
    pub points: Vec<(f64, f64)>,
    pub log: bool,
}

/// Imitation: training loss (log scale), check-lap progress, and off-track
/// events per 1000 collected steps, over wall-clock time.
pub fn svg(history: &[IterStats]) -> String {
    let pts = |f: &dyn Fn(&IterStats) -> f64| history.iter().map(|s| (s.elapsed_s, f(s))).collect();
    panels(&[
        Panel {
            title: "training loss (log scale)",
            colour: "#1f5fbf",
            points: pts(&|s| s.loss),
            log: true,
        },
        Panel {
            title: "check laps: mean progress %",
            colour: "#1e8449",
            points: pts(&|s| s.eval_progress),
            log: false,
        },
        Panel {
            title: "off-track per 1000 collected steps",
            colour: "#c0392b",
            points: pts(&|s| s.offtrack_per_1000),
            log: false,
        },
    ])
}

/// Stacked panels sharing one wall-clock axis.
pub fn panels(panels: &[Panel<'_>]) -> String {
    let (w, ph, pad) = (720.0, 200.0, 56.0);
    let h = ph * panels.len() as f64 + 40.0;
    let t_max = panels
        .iter()
        .flat_map(|p| p.points.iter().map(|q| q.0))
        .fold(1.0, f64::max);
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>"##
    );
    for (k, panel) in panels.iter().enumerate() {
        let (title, colour, log) = (panel.title, panel.colour, panel.log);
        let top = 20.0 + ph * k as f64;
        let bottom = top + ph - 36.0;
        let pts: Vec<(f64, f64)> = panel
            .points
            .iter()
            .copied()
            .filter(|(_, v)| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let tf = |v: f64| if log { v.log10() } else { v };
        let (lo, hi) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(tf(p.1)), b.max(tf(p.1)))
            });
        let (lo, hi) = if pts.is_empty() {
            (0.0, 1.0)
        } else if log {
            (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
        } else {
            (lo.min(0.0), if hi > lo.min(0.0) { hi } else { 1.0 })
        };
        let y = |v: f64| bottom - (bottom - top - 18.0) * (tf(v) - lo) / (hi - lo);
        let label = |v: f64| {
            if log {
                format!("1e{}", v.round() as i32)
            } else if v.abs() >= 10.0 || v == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let _ = writeln!(
            out,
            r##"<text x="{pad}" y="{ty}" font-weight="bold">{title}</text>
<line x1="{pad}" y1="{bottom}" x2="{r}" y2="{bottom}" stroke="#444"/><line x1="{pad}" y1="{t2}" x2="{pad}" y2="{bottom}" stroke="#444"/>
<text x="4" y="{bottom}">{lo_l}</text><text x="4" y="{t2}">{hi_l}</text>"##,
            ty = top + 10.0,
            r = w - pad,
            t2 = top + 18.0,
            lo_l = label(lo),
            hi_l = label(hi),
        );
        if !pts.is_empty() {
            let path: Vec<String> = pts
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{cx}" y="{by}">wall-clock seconds (0 - {t_max:.0})</text>"#,
        cx = w / 2.0 - 80.0,
        by = h - 8.0
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_have_one_line_per_panel() {
        let s = |i: usize, loss: f64, p: f64| IterStats {
            iteration: i,
            samples: 100 * i,
            expert_mix: 0.5,
            offtrack_per_1000: 3.0,
            loss,
            train_steps_total: 10 * i,
            eval_progress: p,
            eval_laps: 0,
            eval_offtrack: 0,
            eval_lap_time_s: None,
            elapsed_s: 10.0 * (i + 1) as f64,
        };
        let svg = svg(&[s(0, 0.2, 10.0), s(1, 0.05, 60.0), s(2, 0.01, 100.0)]);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("training loss") && svg.contains("1e-2") && svg.contains("1e0"));
        // Empty history still gives a valid picture with axes.
        assert!(super::svg(&[]).ends_with("</svg>\n"));
    }
}
