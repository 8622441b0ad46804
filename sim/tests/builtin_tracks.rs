//! The built-in tracks in `sim/tracks/` are exactly what the generator in
//! `sim::trackgen` makes, and each is a drivable design.
//! `SIM_REGEN_TRACKS=1 cargo test -p sim --test builtin_tracks` rewrites them.

mod common;

use std::path::PathBuf;

use sim::trackgen;
use sim::Track;

fn tracks_dir() -> PathBuf {
    common::manifest_dir().join("tracks")
}

#[test]
fn builtin_tracks_match_generator() {
    let regen = std::env::var_os("SIM_REGEN_TRACKS").is_some();
    let specs = trackgen::specs();
    assert_eq!(
        specs.iter().map(|s| s.name).collect::<Vec<_>>(),
        Track::builtin_names(),
        "every design is built in, in order"
    );
    for spec in &specs {
        let bytes = trackgen::generate_npy(spec);
        let path = tracks_dir().join(format!("{}.npy", spec.name));
        if regen {
            let tmp = path.with_extension("npy.tmp");
            std::fs::write(&tmp, &bytes).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            on_disk == bytes,
            "{} differs from the generator; run with SIM_REGEN_TRACKS=1",
            path.display()
        );
    }
}

#[test]
fn builtin_designs_are_drivable() {
    for spec in trackgen::specs() {
        let rows = trackgen::generate_rows(&spec);
        let r = trackgen::min_radius(&rows);
        // The car turns down to 0.28 m and the tightest real DeepRacer
        // track bends at 0.56 m; the road's inner border needs the
        // centre-line radius to stay well above half the width.
        assert!(
            r > 0.5 && r > spec.width / 2.0 + 0.15,
            "{}: tightest radius {r:.2} m",
            spec.name
        );
        let t = Track::builtin(spec.name).unwrap();
        assert!(t.closed_in_file());
        assert!((t.width() - spec.width).abs() < 1e-9, "{}", spec.name);
        assert!(t.length() > 12.0, "{}: {}", spec.name, t.length());
        // No two far-apart stretches of road overlap: every waypoint's
        // nearest centre line (globally) is its own.
        for (i, w) in t.waypoints().iter().enumerate().take(t.segment_count()) {
            let p = t.nearest(*w);
            let d = t.arc_delta(p.s, t.segment_start_s(i)).abs();
            assert!(d < 1e-6, "{} waypoint {i} maps {d} m away", spec.name);
            // And the road keeps a gap: nothing else within a width.
            for (j, o) in t.waypoints().iter().enumerate().take(t.segment_count()) {
                let arc = t
                    .arc_delta(t.segment_start_s(i), t.segment_start_s(j))
                    .abs();
                if arc > 2.5 * t.width() {
                    let dd = ((o[0] - w[0]).powi(2) + (o[1] - w[1]).powi(2)).sqrt();
                    assert!(
                        dd > 1.6 * t.width(),
                        "{}: waypoints {i} and {j} are {dd:.2} m apart",
                        spec.name
                    );
                }
            }
        }
    }
}
