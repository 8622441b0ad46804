//! `car-runtime` as a racer runs it: headless laps in the simulator, model
//! checks, calibration import/show, and `neutral` on a (fake) stock board.

use std::path::Path;
use std::process::Command;

use e2e_tests::{car_runtime, shared_dir, write_centre_seeking_model};

fn run_json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("car-runtime runs");
    assert!(
        out.status.success(),
        "{:?} failed: {}\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn headless_sim_drives_a_lap_with_a_test_built_model_and_prints_exact_json() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_centre_seeking_model(&model, 2.0);
    let v = run_json(
        Command::new(car_runtime())
            .args([
                "run",
                "--sim",
                "--headless",
                "--laps",
                "1",
                "--max-speed",
                "50",
                "--json",
                "--track",
                "oval",
                "--backend",
                "tract",
                "--model",
            ])
            .arg(&model),
    );
    assert_eq!(
        keys(&v),
        [
            "frames",
            "lap_times_s",
            "laps_completed",
            "latency_ms",
            "offtrack_events"
        ]
    );
    assert_eq!(keys(&v["latency_ms"]), ["p50", "p99"]);
    let frames = v["frames"].as_u64().unwrap();
    assert!(frames > 0, "{v}");
    // The car moved: it finished the lap (the run ends there) and the lap
    // took a plausible time for 1 m/s on a ~20 m track.
    assert_eq!(v["laps_completed"], 1, "{v}");
    let lap = v["lap_times_s"][0].as_f64().unwrap();
    assert!(lap > 3.0 && lap < 120.0, "lap time {lap}");
    // One frame per 15 Hz step: the frames cover the lap time.
    assert!(
        frames as f64 >= lap * 15.0 - 2.0,
        "{frames} frames for a {lap} s lap"
    );
    let p50 = v["latency_ms"]["p50"].as_f64().unwrap();
    let p99 = v["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{v}");
}

#[test]
fn headless_at_zero_max_speed_does_not_move() {
    // Max speed starts at 0 %: the same model, no --max-speed, the car stays
    // on the start line until the step budget ends the run.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_centre_seeking_model(&model, 2.0);
    let v = run_json(
        Command::new(car_runtime())
            .args([
                "run",
                "--sim",
                "--headless",
                "--laps",
                "1",
                "--json",
                "--track",
                "oval",
                "--backend",
                "tract",
                "--model",
            ])
            .arg(&model),
    );
    assert_eq!(v["laps_completed"], 0, "{v}");
    assert_eq!(v["offtrack_events"], 0, "{v}");
    assert!(v["frames"].as_u64().unwrap() >= 1000, "{v}");
}

#[test]
fn check_model_json_on_a_built_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_centre_seeking_model(&model, 1.0);
    let v = run_json(
        Command::new(car_runtime())
            .arg("check-model")
            .arg(&model)
            .arg("--json"),
    );
    assert_eq!(
        keys(&v),
        ["action", "backend", "inference_ms", "load_ms", "outputs"]
    );
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), 7);
    let sum: f64 = outs.iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-4, "softmax outputs sum to {sum}");
    let idx = v["action"]["index"].as_u64().unwrap() as usize;
    // The index is the argmax of the outputs, and the action is that entry.
    let best = outs
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.as_f64().unwrap().total_cmp(&b.1.as_f64().unwrap()))
        .unwrap()
        .0;
    assert_eq!(idx, best);
    assert_eq!(
        v["action"]["steering_angle"].as_f64().unwrap() as f32,
        e2e_tests::ANGLES[idx]
    );
    assert_eq!(v["action"]["speed"].as_f64().unwrap(), 1.0);
    assert!(v["load_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn check_model_with_image_and_a_broken_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_centre_seeking_model(&model, 1.0);
    // A picture bright on the right: the controller steers right (negative angle).
    let mut img = image_gray(640, 480, 60);
    for y in 240..480 {
        for x in 560..600 {
            img[y * 640 + x] = 230;
        }
    }
    let png = dir.path().join("right.pgm");
    write_pgm(&png, 640, 480, &img);
    let out = Command::new(car_runtime())
        .arg("check-model")
        .arg(&model)
        .arg("--image")
        .arg(&png)
        .arg("--json")
        .output()
        .unwrap();
    if out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
        assert!(v["action"]["steering_angle"].as_f64().unwrap() < 0.0, "{v}");
    } else {
        // PGM may not be a format the image crate was built with; the
        // error must say which file.
        assert!(String::from_utf8_lossy(&out.stderr).contains("right.pgm"));
    }
    // Output size that does not match the action space: a clear error.
    let meta = std::fs::read_to_string(model.join("model_metadata.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&meta).unwrap();
    m["action_space"].as_array_mut().unwrap().pop();
    std::fs::write(model.join("model_metadata.json"), m.to_string()).unwrap();
    let out = Command::new(car_runtime())
        .arg("check-model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.onnx") || err.contains("model_metadata.json"),
        "{err}"
    );
}

fn image_gray(w: usize, h: usize, v: u8) -> Vec<u8> {
    vec![v; w * h]
}

fn write_pgm(p: &Path, w: usize, h: usize, px: &[u8]) {
    let mut b = format!("P5\n{w} {h}\n255\n").into_bytes();
    b.extend_from_slice(px);
    std::fs::write(p, b).unwrap();
}

/// The DeepRacer console export in ../shared, or None (and a SKIPPED line
/// saying what could not be done) when it is absent.
fn console_archive(to: &str) -> Option<std::path::PathBuf> {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared is absent (no DeepRacer console archive to {to})");
        return None;
    };
    let archive = shared.join("models/deepracer-console-structure.tar.gz");
    if !archive.is_file() {
        eprintln!("SKIPPED: {} is absent", archive.display());
        return None;
    }
    Some(archive)
}

#[test]
fn check_model_json_on_the_shared_console_archive() {
    let Some(archive) = console_archive("check") else {
        return;
    };
    let v = run_json(
        Command::new(car_runtime())
            .arg("check-model")
            .arg(&archive)
            .arg("--json"),
    );
    assert_eq!(
        keys(&v),
        ["action", "backend", "inference_ms", "load_ms", "outputs"]
    );
    assert_eq!(v["outputs"].as_array().unwrap().len(), 9);
    let idx = v["action"]["index"].as_u64().unwrap();
    assert!(idx < 9);
    let angle = v["action"]["steering_angle"].as_f64().unwrap();
    assert!([-30.0, 0.0, 30.0].contains(&angle), "{v}");
}

/// The bench's JSON as the issue fixes it, and the zero-allocation rule:
/// no heap allocation per frame after warm-up.
fn check_bench_json(v: &serde_json::Value, backend: &str, frames: u64) {
    assert_eq!(
        keys(v),
        [
            "allocs_per_frame",
            "arena_allocs_per_frame",
            "arena_peak_kb",
            "backend",
            "fps",
            "frames",
            "peak_rss_mb",
            "stages_ms"
        ]
    );
    assert_eq!(v["backend"], backend, "{v}");
    assert_eq!(v["frames"], frames, "{v}");
    assert!(v["fps"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(
        keys(&v["stages_ms"]),
        [
            "actuate",
            "decode",
            "inference",
            "mapping",
            "preprocess",
            "total"
        ]
    );
    for (stage, s) in v["stages_ms"].as_object().unwrap() {
        let (p50, p99) = (s["p50"].as_f64().unwrap(), s["p99"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{stage}: {s}");
    }
    assert!(
        v["stages_ms"]["total"]["p50"].as_f64().unwrap()
            >= v["stages_ms"]["inference"]["p50"].as_f64().unwrap()
    );
    assert_eq!(
        v["allocs_per_frame"], 0.0,
        "heap allocations per frame: {v}"
    );
}

#[test]
fn bench_on_a_recorded_run_allocates_nothing_per_frame() {
    // Record a lap the way a racer would, then bench the pipeline on those
    // very frames with the built-in engine. tract allocates every layer's
    // tensors on every run: the frame arena must serve them all.
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let lap = run_json(
        Command::new(car_runtime())
            .args([
                "run",
                "--sim",
                "--headless",
                "--laps",
                "1",
                "--max-speed",
                "60",
                "--json",
                "--backend",
                "tract",
                "--record",
            ])
            .arg(&rec),
    );
    assert_eq!(lap["laps_completed"], 1, "{lap}");
    let v = run_json(
        Command::new(car_runtime())
            .args([
                "bench",
                "--frames",
                "40",
                "--warmup",
                "10",
                "--json",
                "--backend",
                "tract",
            ])
            .arg("--frames-dir")
            .arg(&rec),
    );
    check_bench_json(&v, "tract", 40);
    assert!(v["arena_allocs_per_frame"].as_f64().unwrap() > 0.0, "{v}");

    // A folder with no frames: the error names it.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = Command::new(car_runtime())
        .args(["bench", "--json", "--backend", "tract", "--frames-dir"])
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&*empty.to_string_lossy()) && err.contains("no .jpg frames"),
        "{err}"
    );
}

#[test]
fn bench_on_the_shared_console_archive_allocates_nothing_per_frame() {
    let Some(archive) = console_archive("bench") else {
        return;
    };
    let v = run_json(
        Command::new(car_runtime())
            .args([
                "bench", "--frames", "20", "--warmup", "5", "--json", "--model",
            ])
            .arg(&archive),
    );
    check_bench_json(&v, "tract-tensorflow", 20);
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("config.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn calibration_import_then_show_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cal_path = dir.path().join("state/calibration.json");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[actuator]\nbackend = \"sim\"\ncalibration = \"{}\"\n",
            cal_path.display()
        ),
    );
    let stock = dir.path().join("deepracer-calibration.json");
    std::fs::write(
        &stock,
        r#"{"Calibration": {"Servo": {"max": 1710000, "mid": 1460000, "min": 1210000, "polarity": -1},
                             "Motor": {"max": 1600000, "mid": 1440000, "min": 1300000, "polarity": 1},
                             "version": 1}}"#,
    )
    .unwrap();
    let st = Command::new(car_runtime())
        .args(["calibration", "import"])
        .arg(&stock)
        .arg("--config")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(cal_path.is_file());
    let v = run_json(
        Command::new(car_runtime())
            .args(["calibration", "show", "--json", "--config"])
            .arg(&cfg),
    );
    assert_eq!(
        v["steering"],
        serde_json::json!({"min": 1210000, "mid": 1460000, "max": 1710000, "polarity": -1})
    );
    assert_eq!(
        v["throttle"],
        serde_json::json!({"min": 1300000, "mid": 1440000, "max": 1600000, "polarity": 1})
    );
    assert_eq!(v["period_ns"], 20_000_000);
    // A broken stock file: error names the file; the saved calibration stays.
    std::fs::write(
        &stock,
        r#"{"Calibration": {"Servo": {"max": 1, "mid": 2, "min": 3, "polarity": 1}}}"#,
    )
    .unwrap();
    let out = Command::new(car_runtime())
        .args(["calibration", "import"])
        .arg(&stock)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("deepracer-calibration.json"));
    let v2 = run_json(
        Command::new(car_runtime())
            .args(["calibration", "show", "--json", "--config"])
            .arg(&cfg),
    );
    assert_eq!(v, v2);
}

#[test]
fn neutral_writes_mid_on_a_fake_sysfs_board() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    e2e_tests::faults::fake_board(&root);
    let cal_path = dir.path().join("calibration.json");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[actuator]\nbackend = \"sysfs\"\ncalibration = \"{}\"\n[actuator.sysfs]\nroot = \"{}\"\n",
            cal_path.display(),
            root.display()
        ),
    );
    // Leave the wheels somewhere else first, as a crashed daemon would.
    let chip = root.join("class/pwm/pwmchip0");
    std::fs::write(chip.join("pwm0/duty_cycle"), "1600000\n").unwrap();
    std::fs::write(chip.join("pwm1/duty_cycle"), "1200000\n").unwrap();
    let out = Command::new(car_runtime())
        .arg("neutral")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &str| {
        std::fs::read_to_string(chip.join(p))
            .unwrap()
            .trim()
            .to_string()
    };
    // No calibration file: the stock defaults (throttle mid 1446000 on
    // channel 0, steering mid 1450000 on channel 1).
    assert_eq!(read("pwm0/duty_cycle"), "1446000");
    assert_eq!(read("pwm1/duty_cycle"), "1450000");
    assert_eq!(read("pwm0/period"), "20000000");
    assert_eq!(read("pwm0/enable"), "1");
}

#[test]
fn neutral_fails_clearly_without_the_chip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    std::fs::create_dir_all(root.join("class/pwm")).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[actuator]\nbackend = \"sysfs\"\ncalibration = \"{}\"\n[actuator.sysfs]\nroot = \"{}\"\n",
            dir.path().join("c.json").display(),
            root.display()
        ),
    );
    let out = Command::new(car_runtime())
        .arg("neutral")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0000:00:17.0"), "{err}");
}

#[test]
fn bad_config_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "[control]\nstall_timeout_ms = \"soon\"\n");
    let out = Command::new(car_runtime())
        .args(["run", "--sim", "--headless", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("control.stall_timeout_ms"),
        "{err}"
    );
}

#[test]
fn sigterm_while_driving_ends_in_neutral_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    e2e_tests::faults::fake_board(&root);
    let model = dir.path().join("model");
    write_centre_seeking_model(&model, 2.0);
    // The simulated camera, but the (fake) stock PWM board as the wire.
    let cfg = write_config(
        dir.path(),
        &format!(
            "[source]\nkind = \"sim\"\nwidth = 160\nheight = 120\n[model]\npath = \"{}\"\nbackend = \"tract\"\n\
             [actuator]\nbackend = \"sysfs\"\ncalibration = \"{}\"\n[actuator.sysfs]\nroot = \"{}\"\n\
             [web]\naddress = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n",
            model.display(),
            dir.path().join("c.json").display(),
            root.display(),
            dir.path().join("web").display()
        ),
    );
    let mut child = Command::new(car_runtime())
        .args([
            "run",
            "--autonomous",
            "--max-speed",
            "60",
            "--json",
            "--config",
        ])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let duty = root.join("class/pwm/pwmchip0/pwm0/duty_cycle");
    let read = || {
        std::fs::read_to_string(&duty)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let start = std::time::Instant::now();
    // Stock throttle calibration: mid 1446000; forward is below mid (polarity -1).
    while read() == "1446000" || read().is_empty() || read() == "0" {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "throttle never left neutral: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "daemon exited early ({st}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let driving = read();
    assert_ne!(driving, "1446000");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(), "1446000", "throttle after SIGTERM (was {driving})");
    let steer = std::fs::read_to_string(root.join("class/pwm/pwmchip0/pwm1/duty_cycle")).unwrap();
    assert_eq!(steer.trim(), "1450000");
    // The exit summary says the run ended on the signal, in autonomous mode.
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v["end"], "signal");
    assert!(v["frames"].as_u64().unwrap() > 0);
    assert_eq!(v["last_pulses"]["throttle_ns"], 1446000);
}
