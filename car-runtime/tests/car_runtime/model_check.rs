//! Hostile models against the real `car-runtime` binary and the daemon's
//! validate path: every one is refused (exit 1) or reported as a crashed
//! check (exit 3), and the process that asked is still alive to say so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use car_runtime::pipeline::ModelLoader;
use policy::export::{write_model_dir, Attr, GraphBuilder};
use policy::metadata::{ActionSpace, DiscreteAction, ModelMetadata};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_car-runtime"))
}

fn three_actions() -> ModelMetadata {
    ModelMetadata::new(ActionSpace::Discrete(
        [-30.0, 0.0, 30.0]
            .iter()
            .map(|&a| DiscreteAction {
                steering_angle: a,
                speed: 1.0,
            })
            .collect(),
    ))
}

/// `x` (the camera, `dims`) -> `body` -> mean over the image -> 3 scores.
fn write_model(dir: &Path, dims: &[i64], body: impl FnOnce(&mut GraphBuilder, String) -> String) {
    let mut g = GraphBuilder::new("hostile");
    let x = g.input("x", dims);
    let y = body(&mut g, x);
    let m = g.node(
        "ReduceMean",
        &[&y],
        None,
        &[
            ("axes", Attr::Ints(vec![1, 2, 3])),
            ("keepdims", Attr::Int(0)),
        ],
    );
    let ones = g.init("ones", &[1, 3], &[1.0, 1.0, 1.0]).unwrap();
    g.node("Mul", &[&m, &ones], Some("policy"), &[]);
    g.output("policy", &[1, 3]);
    write_model_dir(dir, &g.to_bytes(), &three_actions()).unwrap();
}

fn huge_input(dir: &Path) {
    write_model(dir, &[1, 1, 65535, 65535], |_, x| x);
}

/// A small file whose first run (the load's warm-up) needs a 7.7 GB
/// tensor: past the check child's address-space limit, so the engine's
/// allocation fails and the child aborts.
fn memory_bomb(dir: &Path) {
    write_model(dir, &[1, 1, 120, 160], |g, x| {
        let shape = g.init_i64("bomb_shape", &[2000, 50, 120, 160]);
        g.node("Expand", &[&x, &shape], None, &[])
    });
}

struct Run {
    code: Option<i32>,
    text: String,
    took: Duration,
}

fn check_model(dir: &Path, extra: &[&str]) -> Run {
    let t = Instant::now();
    let out = Command::new(exe())
        .arg("check-model")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        text: String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr),
        took: t.elapsed(),
    }
}

fn backend() -> policy::Backend {
    car_runtime::pipeline::init_backend(car_runtime::config::BackendChoice::Tract, "").unwrap()
}

#[test]
fn a_65535_square_input_is_refused_by_check_model_not_crashed() {
    let t = tempfile::tempdir().unwrap();
    huge_input(t.path());
    let r = check_model(t.path(), &["--backend", "tract"]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(r.text.contains("model.onnx"), "{}", r.text);
    assert!(r.text.contains("dimension 2 is 65535"), "{}", r.text);
    assert!(!r.text.contains("crashed"), "{}", r.text);
}

#[test]
fn the_daemon_validate_path_refuses_it_and_lives() {
    let t = tempfile::tempdir().unwrap();
    huge_input(t.path());
    // The daemon's own path (`RuntimeApi::validate_model` and the model
    // loader thread both call it): the check runs in a child car-runtime
    // found beside this test executable.
    let e = ModelLoader::check_first(t.path(), &backend()).unwrap_err();
    assert!(e.contains("dimension 2 is 65535"), "{e}");
    // Through the web UI's trait, as an upload is validated.
    use web_ui::api::CarApi;
    let sh = std::sync::Arc::new(car_runtime::commands::Shared::new(
        64,
        8,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    ));
    let api = car_runtime::web::RuntimeApi::new(
        sh,
        servo_driver::ActuatorConfig::default(),
        Some(backend()),
        None,
        true,
        None,
        car_runtime::battery::BatteryState::absent(),
    );
    let e = api.validate_model(t.path()).unwrap_err();
    assert!(e.contains("dimension 2 is 65535"), "{e}");
    // This process is alive, and a good model still validates.
    let good = tempfile::tempdir().unwrap();
    write_model(good.path(), &[1, 1, 120, 160], |_, x| x);
    let s = api.validate_model(good.path()).unwrap();
    assert_eq!(s.action_space, "discrete, 3 actions");
    assert_eq!(s.input, "[1,1,120,160] NCHW");
    assert_eq!(s.sensors, ["FRONT_FACING_CAMERA"]);
}

#[test]
fn a_100000_node_chain_is_refused_in_well_under_a_few_seconds() {
    let t = tempfile::tempdir().unwrap();
    write_model(t.path(), &[1, 1, 120, 160], |g, x| {
        let mut y = x;
        for _ in 0..100_000 {
            y = g.node("Relu", &[&y], None, &[]);
        }
        y
    });
    let r = check_model(t.path(), &["--backend", "tract"]);
    eprintln!("check-model refused the 100,000-node model in {:?}", r.took);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(r.text.contains("graph.node"), "{}", r.text);
    assert!(r.took < Duration::from_secs(5), "{:?}", r.took);
}

#[test]
fn negative_speed_metadata_is_refused_naming_the_field() {
    let t = tempfile::tempdir().unwrap();
    write_model(t.path(), &[1, 1, 120, 160], |_, x| x);
    std::fs::write(
        t.path().join("model_metadata.json"),
        r#"{"action_space": [{"steering_angle": -30, "speed": 1}, {"steering_angle": 0, "speed": 1},
            {"steering_angle": 30, "speed": 1}, {"steering_angle": 0, "speed": -1}]}"#,
    )
    .unwrap();
    let r = check_model(t.path(), &["--backend", "tract"]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.text
            .contains("model_metadata.json: action_space[3].speed: -1 is outside 0.01-4 m/s"),
        "{}",
        r.text
    );
}

#[test]
fn a_nan_output_model_is_refused_by_check_model() {
    let t = tempfile::tempdir().unwrap();
    // sqrt(-x): -0 on a blank frame, NaN on the simulator frame.
    write_model(t.path(), &[1, 1, 120, 160], |g, x| {
        let n = g.node("Neg", &[&x], None, &[]);
        g.node("Sqrt", &[&n], None, &[])
    });
    for extra in [
        &["--backend", "tract"][..],
        &["--backend", "tract", "--json"][..],
    ] {
        let r = check_model(t.path(), extra);
        assert_eq!(r.code, Some(1), "{extra:?}: {}", r.text);
        assert!(r.text.contains("non-finite"), "{extra:?}: {}", r.text);
    }
}

#[test]
// tract panics on the failed allocation (exit 101) where other code aborts
// (signal 6): both are crashes, never a refusal. The signal naming itself
// is tested in policy::check (a child killed by SIGABRT).
fn a_check_that_dies_is_a_crash_with_exit_code_3() {
    let t = tempfile::tempdir().unwrap();
    memory_bomb(t.path());
    let r = check_model(t.path(), &["--backend", "tract"]);
    assert_eq!(r.code, Some(3), "{}", r.text);
    assert!(
        r.text.contains("model check crashed (") && r.text.contains("the model was not loaded"),
        "{}",
        r.text
    );
    // The daemon's path reports it the same way, and lives.
    let e = ModelLoader::check_first(t.path(), &backend()).unwrap_err();
    assert!(e.starts_with("model check crashed ("), "{e}");
}

#[test]
fn check_model_help_documents_the_exit_codes() {
    let out = Command::new(exe())
        .args(["check-model", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "0  the model loaded",
        "1  the model was refused",
        "3  the check crashed",
    ] {
        assert!(help.contains(line), "{help}");
    }
}

#[test]
fn an_image_that_is_not_a_regular_file_is_refused_not_read_forever() {
    let t = tempfile::tempdir().unwrap();
    write_model(t.path(), &[1, 1, 120, 160], |_, x| x);
    let r = check_model(t.path(), &["--backend", "tract", "--image", "/dev/zero"]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(
        r.text
            .contains("/dev/zero: cannot read the image: not a regular file (a character device)"),
        "{}",
        r.text
    );
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
}
