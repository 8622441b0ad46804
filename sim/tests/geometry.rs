//! Centre-line geometry on a track whose answers are known by hand.

use sim::Track;

/// Square loop 4 m a side, counter-clockwise, 0.6 m each side of centre.
fn square() -> Track {
    let c = [[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0], [0.0, 0.0]];
    let rows: Vec<[f64; 6]> = c
        .iter()
        .map(|p| {
            // Inner toward the square's middle (left of a CCW loop).
            let ix = if p[0] < 2.0 { p[0] + 0.6 } else { p[0] - 0.6 };
            let iy = if p[1] < 2.0 { p[1] + 0.6 } else { p[1] - 0.6 };
            let ox = if p[0] < 2.0 { p[0] - 0.6 } else { p[0] + 0.6 };
            let oy = if p[1] < 2.0 { p[1] - 0.6 } else { p[1] + 0.6 };
            [p[0], p[1], ix, iy, ox, oy]
        })
        .collect();
    Track::from_rows("square", "square.npy", &rows).unwrap()
}

#[test]
fn length_width_and_progress() {
    let t = square();
    assert_eq!(t.length(), 16.0);
    assert!((t.width() - 2.0 * 0.6 * 2f64.sqrt()).abs() < 1e-9);
    assert_eq!(t.progress_of(4.0), 25.0);
    assert_eq!(t.progress_of(16.0), 0.0);
    assert_eq!(t.progress_of(-4.0), 75.0);
    assert_eq!(t.progress_of(20.0), 25.0);
}

#[test]
fn nearest_segment_offset_and_side() {
    let t = square();
    // 0.2 m inside the bottom edge, 1 m along: left of a CCW loop.
    let p = t.nearest([1.0, 0.2]);
    assert_eq!(p.segment, 0);
    assert!((p.along - 1.0).abs() < 1e-12);
    assert!((p.s - 1.0).abs() < 1e-12);
    assert!((p.distance_from_center() - 0.2).abs() < 1e-12);
    assert!(p.is_left_of_center());
    assert_eq!(t.closest_waypoints(p.segment), [0, 1]);
    // Outside the right edge, 3 m up: right of centre, segment 1.
    let p = t.nearest([4.5, 3.0]);
    assert_eq!(p.segment, 1);
    assert!((p.s - 7.0).abs() < 1e-12);
    assert!(!p.is_left_of_center());
    assert!((p.offset + 0.5).abs() < 1e-12);
    assert_eq!(t.closest_waypoints(3), [3, 4]);
}

#[test]
fn heading_of_each_side() {
    let t = square();
    let h: Vec<f64> = (0..4).map(|i| t.segment_heading(i).to_degrees()).collect();
    assert_eq!(h, vec![0.0, 90.0, 180.0, -90.0]);
    let (p, hd) = t.point_at(10.0);
    assert_eq!(p, [2.0, 4.0]);
    assert_eq!(hd.to_degrees(), 180.0);
}

#[test]
fn progress_wraps_across_the_start_line() {
    let t = square();
    // Just before the line (on the last side) and just after it.
    let before = t.nearest([0.0, 0.1]);
    let after = t.nearest([0.1, 0.0]);
    assert!((t.progress_of(before.s) - (15.9 / 16.0 * 100.0)).abs() < 1e-9);
    assert!((t.progress_of(after.s) - (0.1 / 16.0 * 100.0)).abs() < 1e-9);
    // The signed arc between them is +0.2 m, not -15.8 m.
    assert!((t.arc_delta(before.s, after.s) - 0.2).abs() < 1e-12);
    assert!((t.arc_delta(after.s, before.s) + 0.2).abs() < 1e-12);
}

#[test]
fn on_track_uses_the_border_edges() {
    let t = square();
    // The corner rows put the borders 0.6*sqrt(2) = 0.85 m from the
    // centre; the half-width is interpolated between waypoints.
    let inside = t.nearest([2.0, 0.84]);
    let outside = t.nearest([2.0, -0.86]);
    assert!(t.is_on_track(&inside));
    assert!(!t.is_on_track(&outside));
}

#[test]
fn repeated_waypoint_is_tolerated() {
    // Same square with one waypoint repeated consecutively (as some
    // DeepRacer files have): same length, a zero-length segment that is
    // never the nearest, headings still defined.
    let mut rows: Vec<[f64; 6]> = vec![];
    let sq = square();
    for (k, w) in sq.waypoints().iter().enumerate() {
        let i = sq.inner_border()[k];
        let o = sq.outer_border()[k];
        rows.push([w[0], w[1], i[0], i[1], o[0], o[1]]);
        if k == 1 {
            rows.push(*rows.last().unwrap());
        }
    }
    let t = Track::from_rows("dup", "dup.npy", &rows).unwrap();
    assert_eq!(t.length(), 16.0);
    assert_eq!(t.segment_len(1), 0.0);
    assert_eq!(t.segment_heading(1).to_degrees(), 90.0);
    let p = t.nearest([4.2, 1.0]);
    assert_eq!(p.segment, 2);
    assert!((p.s - 5.0).abs() < 1e-12);
    assert_eq!(t.segment_at(4.0), 2);
}

#[test]
fn figure_eight_is_followed_along_the_branch_the_car_is_on() {
    let Some(files) = common::shared_tracks() else {
        return;
    };
    let bowtie = files
        .iter()
        .find(|p| p.ends_with("Bowtie_track.npy"))
        .expect("Bowtie in shared tracks");
    let t = Track::load(bowtie).unwrap();
    // Walk the centre line in small steps with the hinted search: the
    // arc position never jumps, even through the crossing.
    let mut pos = t.nearest(t.waypoints()[0]);
    let mut travelled = 0.0;
    let step = 0.05;
    let n = (t.length() / step) as usize;
    for k in 1..=n {
        let (p, _) = t.point_at(k as f64 * step);
        let next = t.nearest_near(p, pos.segment, 2.0);
        let d = t.arc_delta(pos.s, next.s);
        assert!((d - step).abs() < 1e-6, "jump of {d} m at {k}");
        travelled += d;
        pos = next;
    }
    assert!((travelled - n as f64 * step).abs() < 1e-6);
}

mod common;
