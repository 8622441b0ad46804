//! Racers' Python reward functions run unchanged: they get DeepRacer's
//! `params` with the same keys, types and values as the simulator's, and a
//! broken function stops training with the file, the line and the params.

use std::path::{Path, PathBuf};

use sim::{CarAction, Expert, Sim, SimConfig, StartPolicy, Track};
use trainer::reward::{Preset, PythonReward, Reward, RewardError};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Checks every key's type and range the way a careful racer's function
/// would, raising on any mismatch, and returns a value computed from the
/// params so the test can compare it with the simulator's own numbers.
const CHECKING: &str = r#"
import math

FLOATS = ["x", "y", "heading", "distance_from_center", "progress", "speed",
          "steering_angle", "track_width", "track_length"]
BOOLS = ["all_wheels_on_track", "is_left_of_center", "is_offtrack", "is_crashed",
         "is_reversed", "object_in_camera"]

def reward_function(params):
    for k in FLOATS:
        if type(params[k]) is not float:
            raise TypeError(k + " is " + type(params[k]).__name__)
    for k in BOOLS:
        if type(params[k]) is not bool:
            raise TypeError(k + " is " + type(params[k]).__name__)
    if type(params["steps"]) is not int or params["steps"] < 0:
        raise TypeError("steps")
    wp = params["waypoints"]
    if type(wp) is not list or not all(type(p) is tuple and len(p) == 2 and all(type(c) is float for c in p) for p in wp):
        raise TypeError("waypoints must be a list of (float, float)")
    cw = params["closest_waypoints"]
    if type(cw) is not list or len(cw) != 2 or not all(type(i) is int and 0 <= i < len(wp) for i in cw):
        raise ValueError("closest_waypoints " + repr(cw))
    if not -180.0 <= params["heading"] <= 180.0:
        raise ValueError("heading")
    if not 0.0 <= params["progress"] <= 100.0:
        raise ValueError("progress")
    if params["distance_from_center"] < 0.0 or params["track_width"] <= 0.0:
        raise ValueError("distance_from_center / track_width")
    for k in ["objects_distance", "objects_heading", "objects_left_of_center", "objects_location", "objects_speed"]:
        if type(params[k]) is not list:
            raise TypeError(k)
    if type(params["closest_objects"]) is not list:
        raise TypeError("closest_objects")
    return params["progress"] + 1000.0 * params["distance_from_center"] + (0.5 if params["is_offtrack"] else 0.0)
"#;

#[test]
fn python_sees_the_simulators_params_with_deepracer_types() {
    let t = tempfile::tempdir().unwrap();
    let f = PythonReward::load(&write(t.path(), "checking.py", CHECKING)).unwrap();
    let cfg = SimConfig {
        start: StartPolicy::Progress(20.0),
        ..SimConfig::default()
    };
    let mut sim = Sim::new(Track::builtin("technical").unwrap(), cfg);
    sim.reset(3);
    let expert = Expert::new(1.5);
    let mut offtrack_seen = false;
    for step in 0..400 {
        // Drive well, then steer off the road to see an off-track state too.
        let mut a = expert.act(&sim);
        if step > 100 {
            a = CarAction {
                steering_deg: 30.0,
                speed_mps: 2.0,
            };
        }
        let r = sim.step(a);
        let p = r.params.clone();
        let got = f.call(&p).unwrap_or_else(|e| panic!("step {step}: {e}"));
        let want =
            p.progress + 1000.0 * p.distance_from_center + if p.is_offtrack { 0.5 } else { 0.0 };
        assert!(
            (got - want).abs() < 1e-9,
            "step {step}: python {got} vs sim {want}"
        );
        offtrack_seen |= p.is_offtrack;
        if r.termination.is_some() {
            break;
        }
    }
    assert!(offtrack_seen, "the drive never left the track");
}

fn call_err(dir: &Path, name: &str, text: &str) -> String {
    let p = write(dir, name, text);
    let f = PythonReward::load(&p).unwrap();
    let mut sim = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
    sim.reset(0);
    let params = sim.params().clone();
    match f.call(&params) {
        Err(e @ RewardError::Call { .. }) => e.to_string(),
        other => panic!(
            "{name}: expected a call error, got {:?}",
            other.map_err(|e| e.to_string())
        ),
    }
}

#[test]
fn every_bad_return_names_the_file_the_line_and_the_params() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let e = call_err(
        d,
        "raises.py",
        "def reward_function(params):\n    w = params['track_width']\n    return 1.0 / (w - w)\n",
    );
    assert!(
        e.contains("raises.py:3:") && e.contains("ZeroDivisionError"),
        "{e}"
    );
    assert!(
        e.contains("\"track_width\":") && e.contains("\"waypoints\":"),
        "{e}"
    );

    let e = call_err(
        d,
        "none.py",
        "def reward_function(params):\n    if params['progress'] > 50:\n        return 1.0\n    return None\n",
    );
    assert!(
        e.contains("none.py:4:") && e.contains("returned NoneType None, not a number"),
        "{e}"
    );

    let e = call_err(
        d,
        "string.py",
        "def reward_function(params):\n    return '1.0'\n",
    );
    assert!(
        e.contains("string.py:2:") && e.contains("returned str '1.0', not a number"),
        "{e}"
    );

    let e = call_err(
        d,
        "nan.py",
        "def reward_function(params):\n    return float('nan')\n",
    );
    assert!(e.contains("nan.py:2:") && e.contains("returned nan"), "{e}");

    let e = call_err(
        d,
        "big.py",
        "def reward_function(params):\n\n    return 1e6\n",
    );
    assert!(
        e.contains("big.py:3:") && e.contains("outside [-1e5, 1e5]"),
        "{e}"
    );

    let e = call_err(
        d,
        "bool.py",
        "def reward_function(params):\n    return params['all_wheels_on_track']\n",
    );
    assert!(
        e.contains("bool.py:2:") && e.contains("returned bool True"),
        "{e}"
    );

    // Numbers of every kind Python has are fine, ints included.
    let p = write(d, "int.py", "def reward_function(params):\n    return 2\n");
    let mut sim = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
    sim.reset(0);
    assert_eq!(
        PythonReward::load(&p).unwrap().call(sim.params()).unwrap(),
        2.0
    );
}

#[test]
fn files_that_cannot_load_say_why() {
    let t = tempfile::tempdir().unwrap();
    let p = write(t.path(), "nofn.py", "def reward(params):\n    return 1.0\n");
    let e = PythonReward::load(&p).err().unwrap().to_string();
    assert!(
        e.contains("nofn.py") && e.contains("reward_function"),
        "{e}"
    );
    let p = write(
        t.path(),
        "syntax.py",
        "def reward_function(params)\n    return 1.0\n",
    );
    let e = PythonReward::load(&p).err().unwrap().to_string();
    assert!(
        e.contains("syntax.py") && e.contains("line 1") && e.contains("SyntaxError"),
        "{e}"
    );
    let e = PythonReward::load(&t.path().join("missing.py"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.py"), "{e}");
    let e = Reward::parse("wiggle").err().unwrap().to_string();
    assert!(e.contains("centre-line"), "{e}");
}

#[test]
fn presets_follow_the_console_examples() {
    let mut sim = Sim::new(Track::builtin("oval").unwrap(), SimConfig::default());
    sim.reset(0);
    let mut p = sim.params().clone();
    p.track_width = 1.0;
    let at = |p: &mut sim::Params, d: f64, steer: f64| {
        p.distance_from_center = d;
        p.steering_angle = steer;
        (
            Preset::CentreLine.reward(p),
            Preset::ZigZag.reward(p),
            Preset::Borders.reward(p),
        )
    };
    assert_eq!(at(&mut p, 0.05, 0.0), (1.0, 1.0, 1.0));
    assert_eq!(at(&mut p, 0.2, 20.0), (0.5, 0.4, 1.0));
    assert_eq!(at(&mut p, 0.4, 0.0), (0.1, 0.1, 1.0));
    assert_eq!(at(&mut p, 0.47, 0.0).2, 1e-3);
    assert_eq!(at(&mut p, 0.6, 0.0).0, 1e-3);
    p.progress = 30.0;
    p.steps = 60;
    p.is_offtrack = false;
    assert_eq!(Preset::Progress.reward(&p), 0.5);
}

#[test]
fn the_example_reward_file_runs_and_rewards_good_driving() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let r = Reward::parse(
        dir.join("examples/rewards/centre_and_heading.py")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let mut sim = Sim::new(Track::builtin("technical").unwrap(), SimConfig::default());
    sim.reset(0);
    let expert = Expert::new(1.5);
    let mut total = 0.0;
    for _ in 0..100 {
        let a = expert.act(&sim);
        let p = sim.step(a).params.clone();
        let v = r.call(&p).unwrap();
        assert!((1e-3..=1.001).contains(&v), "{v}");
        total += v;
    }
    // The expert drives on the line, along the track.
    assert!(total / 100.0 > 0.8, "mean reward {}", total / 100.0);
}
