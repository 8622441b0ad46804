//! The expert laps every built-in track, and every real DeepRacer track when
//! `../shared` is present, at 1.5 m/s without leaving the road.

mod common;

use sim::{run_expert_laps, Expert, LapRunner, Sim, SimConfig, Track};

fn check_laps(track: Track, laps: usize) {
    let name = track.name().to_string();
    let len = track.length();
    let r = run_expert_laps(track, laps, 1.5, SimConfig::default());
    assert_eq!(r.laps_completed, laps, "{name}: {r:?}");
    assert_eq!(r.offtrack_events, 0, "{name}: {r:?}");
    for t in &r.lap_times_s {
        // Close to length / speed: corner cutting makes it a little
        // shorter, the start from rest a little longer.
        let ideal = len / 1.5;
        assert!(
            *t > 0.85 * ideal && *t < 1.1 * ideal,
            "{name}: lap {t} s vs {ideal} s"
        );
    }
}

/// Also checks that all four wheels stay on the road the whole time, which
/// is stricter than "no off-track event".
fn check_all_wheels_on(track: Track) {
    let name = track.name().to_string();
    let mut runner = LapRunner::new(Sim::new(track, SimConfig::default()));
    let e = Expert::new(1.5);
    let mut min_margin_steps = 0;
    while runner.laps_completed() < 1 && runner.steps() < 5000 {
        let a = e.act(runner.sim());
        let s = runner.step(a);
        if !s.params.all_wheels_on_track {
            min_margin_steps += 1;
        }
    }
    assert_eq!(runner.laps_completed(), 1, "{name}");
    assert_eq!(
        min_margin_steps, 0,
        "{name}: wheels off the road on {min_margin_steps} steps"
    );
}

#[test]
fn expert_laps_builtin_tracks() {
    for n in Track::builtin_names() {
        check_laps(Track::builtin(n).unwrap(), 2);
        check_all_wheels_on(Track::builtin(n).unwrap());
    }
}

#[test]
fn expert_laps_shared_tracks() {
    let Some(files) = common::shared_tracks() else {
        return;
    };
    for f in files {
        check_laps(Track::load(&f).unwrap(), 1);
        check_all_wheels_on(Track::load(&f).unwrap());
    }
}

#[test]
fn lap_runner_recovers_after_offtrack_and_keeps_timing() {
    let mut runner = LapRunner::new(Sim::new(
        Track::builtin("oval").unwrap(),
        SimConfig::default(),
    ));
    let e = Expert::new(1.5);
    // Steer hard right until the car leaves the road.
    let mut events = 0;
    for _ in 0..60 {
        let s = runner.step(sim::CarAction {
            steering_deg: -30.0,
            speed_mps: 1.5,
        });
        if s.offtrack {
            events += 1;
            // Back on the centre line, facing along the track, at rest.
            assert!(
                s.params.distance_from_center < 0.15,
                "{}",
                s.params.distance_from_center
            );
            assert!(s.params.all_wheels_on_track);
            assert_eq!(runner.sim().car().speed, 0.0);
            break;
        }
    }
    assert_eq!(events, 1);
    assert_eq!(runner.offtrack_events(), 1);
    // Then the expert finishes two laps; the first includes the detour.
    while runner.laps_completed() < 2 && runner.steps() < 4000 {
        let a = e.act(runner.sim());
        runner.step(a);
    }
    let laps = runner.lap_times_s();
    assert_eq!(laps.len(), 2);
    assert_eq!(runner.offtrack_events(), 1);
    assert!(laps[0] > laps[1], "{laps:?}");
    let total: f64 = laps.iter().sum();
    assert!(total <= runner.time_s() + 1e-9);
}
