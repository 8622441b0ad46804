//! The daemon's own wiring, through [`car_runtime::daemon::assemble`]: the
//! function `car-runtime run` calls, so what these tests drive is what the
//! car runs (the bundled model, the simulated car, the real servo driver on
//! its simulated output, the web UI on a loopback port).

use std::time::{Duration, Instant};

use car_runtime::config::{Config, SourceKind};
use car_runtime::control::EndReason;
use car_runtime::daemon::{assemble, RunOptions};

/// The simulated car with the stock calibration (no file: never whatever
/// this machine has under /var/lib). Tract, because the engine is chosen
/// once per process and this harness's model checks run on tract: `auto`
/// would pick ONNX Runtime wherever `ORT_DYLIB_PATH` is set.
fn sim_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.model.backend = car_runtime::config::BackendChoice::Tract;
    cfg.source.kind = SourceKind::Sim;
    cfg.actuator.backend = servo_driver::BackendKind::Sim;
    cfg.actuator.calibration = dir.join("calibration.json");
    cfg
}

#[test]
fn a_headless_run_laps_the_track_with_the_bundled_model_and_ends_in_neutral() {
    let run = RunOptions {
        headless: true,
        laps: 1,
        max_speed: Some(50),
        ..RunOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = assemble(sim_config(dir.path()), &run, None)
        .unwrap()
        .run()
        .unwrap();
    let laps = out.laps.expect("a sim run reports laps");
    assert_eq!(laps.laps_completed, 1, "{laps:?}");
    assert_eq!(laps.offtrack_events, 0, "{laps:?}");
    assert!(out.summary.frames > 50, "{}", out.summary.frames);
    assert_eq!(out.summary.inference_errors, 0);
    assert_eq!(out.summary.bad_commands, 0);
    // The last write of the run is the calibration's neutral.
    let neutral = servo_driver::Calibration::stock().neutral();
    assert_eq!(out.summary.last_pulses, Some(neutral));
}

#[test]
fn a_daemon_serves_its_web_ui_and_stops_at_the_duration_in_neutral() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = sim_config(state.path());
    cfg.web.address = "127.0.0.1:0".into();
    cfg.web.state_dir = Some(state.path().to_path_buf());
    let run = RunOptions {
        duration: Some(Duration::from_millis(1500)),
        ..RunOptions::default()
    };
    let d = assemble(cfg, &run, None).unwrap();
    let url = d.url().expect("the web UI started");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let t = Instant::now();
    let out = d.run().unwrap();
    assert_eq!(out.summary.end, EndReason::Duration);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // Never started (max speed 0, not autonomous): the wheels stayed put.
    let neutral = servo_driver::Calibration::stock().neutral();
    assert_eq!(out.summary.last_pulses, Some(neutral));
    assert!(out.summary.frames > 0);
}

#[test]
fn a_headless_run_of_a_real_camera_is_refused_before_anything_opens() {
    let mut cfg = Config::default();
    cfg.source.kind = SourceKind::V4l2;
    let run = RunOptions {
        headless: true,
        ..RunOptions::default()
    };
    let e = assemble(cfg, &run, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("--headless drives the simulated car"), "{e}");
    let run = RunOptions {
        max_speed: Some(101),
        ..RunOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let e = assemble(sim_config(dir.path()), &run, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("--max-speed: 101 is not 0-100"), "{e}");
}
