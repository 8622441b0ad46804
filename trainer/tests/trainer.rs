//! The trainer as a racer uses it: exported models run on the car's code
//! unchanged, the command line writes a complete model folder, resumes, and
//! rejects bad input with a clear message.

use std::path::Path;
use std::process::Command;

use burn::prelude::*;
use policy::{Backend, BackendChoice, Frame, Model, PixelFormat, Preprocessor};
use sim::{Channels, Sim, SimConfig, Track};
use trainer::net::{self, Net, NetKind, INPUT_H, INPUT_LEN, INPUT_W};
use trainer::{actions, export};

fn frame(track: &str, progress: f64) -> Vec<u8> {
    let cfg = SimConfig {
        start: sim::StartPolicy::Progress(progress),
        ..SimConfig::default()
    };
    let mut sim = Sim::new(Track::builtin(track).unwrap(), cfg);
    sim.reset(0);
    let mut f = vec![0u8; INPUT_LEN];
    sim.render_into(&mut f, INPUT_W, INPUT_H, Channels::Gray)
        .unwrap();
    f
}

/// What the car computes for a 160x120 grey camera frame with this model.
fn car_outputs(dir: &Path, img: &[u8]) -> Vec<f32> {
    let backend = Backend::init(BackendChoice::Tract, None).unwrap();
    let mut model = Model::load(dir, &backend).unwrap();
    let spec = *model.policy.input_spec();
    let mut pre = Preprocessor::new(160, 120, PixelFormat::Gray8, spec).unwrap();
    let mut input = vec![0f32; spec.len()];
    let f = Frame {
        data: img,
        format: PixelFormat::Gray8,
        width: 160,
        height: 120,
        timestamp_ns: 0,
        seq: 0,
    };
    pre.run(&f, &mut input).unwrap();
    let mut out = vec![0f32; model.policy.output_len()];
    model.policy.infer(&input, &mut out).unwrap();
    out
}

#[test]
fn exported_networks_compute_on_the_car_what_they_computed_in_training() {
    let device = Device::flex();
    device.seed(3);
    let t = tempfile::tempdir().unwrap();
    for (kind, space) in [
        (NetKind::Small, actions::parse("continuous").unwrap()),
        (NetKind::Shallow, actions::parse("discrete").unwrap()),
    ] {
        let n = space.output_len();
        let net = Net::new(kind, n, &device);
        let dir = t.path().join(kind.as_str());
        export::write(&dir, &net, kind, &space).unwrap();
        let onnx = std::fs::read(dir.join("model.onnx")).unwrap();
        assert!(String::from_utf8_lossy(&onnx).contains(export::INPUT_NAME));
        let backend = Backend::init(BackendChoice::Tract, None).unwrap();
        let report = policy::check::check_model(&dir, &backend, None).unwrap();
        assert_eq!(report.outputs.len(), n);
        for (track, p) in [("oval", 10.0), ("technical", 55.0)] {
            let img = frame(track, p);
            let mut want = net::infer(&net, &img, 1, &device);
            if kind == NetKind::Small {
                // Continuous: the exported graph clips the means as the car does.
                want.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
            }
            let got = car_outputs(&dir, &img);
            assert_eq!(got.len(), n);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{kind:?}: car {got:?} vs burn {want:?}"
                );
            }
        }
    }
}

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_car-trainer"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn train_writes_a_model_folder_and_resumes() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("m");
    let short = |cmd: &mut Command, iterations: &str| {
        cmd.args(["train", "--track", "oval", "--out"])
            .arg(&out)
            .args([
                "--iterations",
                iterations,
                "--samples",
                "400",
                "--train-steps",
                "15",
            ])
            .args([
                "--time-budget",
                "10",
                "--seed",
                "5",
                "--eval-track",
                "oval",
                "--eval-laps",
                "1",
            ]);
    };
    let mut cmd = trainer();
    short(&mut cmd, "2");
    run_ok(&mut cmd);
    for f in [
        "model.onnx",
        "model_metadata.json",
        "report.json",
        "curves.svg",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let r = report(&out);
    let iters = r["iterations"].as_array().unwrap().clone();
    assert_eq!(iters.len(), 2);
    assert!(iters[1]["samples"].as_u64() > iters[0]["samples"].as_u64());
    assert_eq!(r["result"]["evaluation"][0]["track"], "oval");
    let meta = std::fs::read_to_string(out.join("model_metadata.json")).unwrap();
    assert!(meta.contains("\"continuous\""), "{meta}");

    // Resume: the third iteration builds on the first two, which are kept as they were.
    let mut cmd = trainer();
    short(&mut cmd, "3");
    cmd.arg("--resume");
    run_ok(&mut cmd);
    let r2 = report(&out);
    let iters2 = r2["iterations"].as_array().unwrap();
    assert_eq!(iters2.len(), 3);
    assert_eq!(iters2[..2], iters[..]);
    assert!(iters2[2]["samples"].as_u64() > iters[1]["samples"].as_u64());

    // Resuming with another network is refused, naming the checkpoint.
    let mut cmd = trainer();
    short(&mut cmd, "4");
    cmd.args(["--resume", "--net", "shallow"]);
    let e = run_err(&mut cmd);
    assert!(e.contains("state.json") && e.contains("small"), "{e}");

    // Evaluation through the car's code prints the console's figures.
    let json = run_ok(
        trainer()
            .args([
                "eval", "--track", "oval", "--laps", "1", "--json", "--model",
            ])
            .arg(&out),
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    for k in [
        "laps_completed",
        "lap_times_s",
        "offtrack_events",
        "progress_mean",
    ] {
        assert!(v.get(k).is_some(), "{k} missing in {json}");
    }
    let p = v["progress_mean"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 100.0, "{json}");
}

#[test]
fn bad_arguments_say_what_is_wrong() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("m");
    let e = run_err(
        trainer()
            .args([
                "train",
                "--action-space",
                "discrete,steering-granularity=4",
                "--out",
            ])
            .arg(&out),
    );
    assert!(
        e.contains("steering granularity 4") && e.contains("3, 5 or 7"),
        "{e}"
    );
    let e = run_err(
        trainer()
            .args(["train", "--track", "nowhere", "--out"])
            .arg(&out),
    );
    assert!(e.contains("--track nowhere"), "{e}");
    let e = run_err(trainer().args(["train", "--resume", "--out"]).arg(&out));
    assert!(
        e.contains("state.json") && e.contains("cannot resume"),
        "{e}"
    );
    let e = run_err(
        trainer()
            .args(["eval", "--track", "oval", "--model"])
            .arg(&out),
    );
    assert!(e.contains("model"), "{e}");
}

#[test]
fn the_same_seed_trains_the_same_model() {
    let t = tempfile::tempdir().unwrap();
    let train = |name: &str, seed: &str| {
        let out = t.path().join(name);
        run_ok(
            trainer()
                .args(["train", "--track", "technical", "--out"])
                .arg(&out)
                .args([
                    "--iterations",
                    "2",
                    "--samples",
                    "300",
                    "--train-steps",
                    "10",
                ])
                .args(["--seed", seed]),
        );
        std::fs::read(out.join("model.onnx")).unwrap()
    };
    let a = train("a", "7");
    let b = train("b", "7");
    let c = train("c", "8");
    assert!(a == b, "two runs with --seed 7 exported different models");
    assert!(a != c, "--seed 7 and --seed 8 exported the same model");
}

#[test]
fn ppo_with_a_racers_reward_file_writes_a_model_and_a_broken_one_stops_training() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(
        d.join("hyperparameters.json"),
        r#"{"batch_size": 64, "num_episodes_between_training": 8, "num_epochs": 1, "term_cond_max_episodes": 16}"#,
    )
    .unwrap();
    std::fs::write(
        d.join("centre.py"),
        "def reward_function(params):\n    if params['distance_from_center'] <= 0.25 * params['track_width']:\n        return 1.0\n    return 1e-3\n",
    )
    .unwrap();
    std::fs::write(
        d.join("broken.py"),
        "def reward_function(params):\n    if params['steps'] > 5:\n        return params['no_such_key']\n    return 1.0\n",
    )
    .unwrap();
    let ppo_with = |reward: &str, out: &str, hyper: &str| {
        let mut c = trainer();
        c.args([
            "train",
            "--algo",
            "ppo",
            "--track",
            "oval",
            "--time-budget",
            "5",
            "--reward",
        ])
        .arg(d.join(reward))
        .arg("--hyperparameters")
        .arg(d.join(hyper))
        .arg("--out")
        .arg(d.join(out));
        c
    };
    let ppo = |reward: &str, out: &str| ppo_with(reward, out, "hyperparameters.json");
    run_ok(&mut ppo("centre.py", "m"));
    let out = d.join("m");
    for f in [
        "model.onnx",
        "model_metadata.json",
        "report.json",
        "curves.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let r = report(&out);
    assert_eq!(r["trainer"], "ppo-cnn");
    assert_eq!(
        r["settings"]["hyperparameters"]["num_episodes_between_training"],
        8
    );
    let updates = r["iterations"].as_array().unwrap();
    assert_eq!(updates.len(), 2, "16 episodes, 8 per update");
    assert!(std::fs::read_to_string(out.join("curves.svg"))
        .unwrap()
        .contains("policy entropy"));

    // Interrupted or out of episodes, a PPO run resumes from --out/checkpoint:
    // the updates it had stay as they were and numbering goes on.
    std::fs::write(
        d.join("more.json"),
        r#"{"batch_size": 64, "num_episodes_between_training": 8, "num_epochs": 1, "term_cond_max_episodes": 24}"#,
    )
    .unwrap();
    let mut c = ppo_with("centre.py", "m", "more.json");
    c.arg("--resume");
    run_ok(&mut c);
    let r2 = report(&out);
    let updates2 = r2["iterations"].as_array().unwrap();
    assert_eq!(updates2.len(), 3, "24 episodes, 8 per update");
    assert_eq!(updates2[..2], updates[..]);
    assert_eq!(updates2[2]["update"], 2);
    // An imitation resume of a PPO run, or a warm start on a resume, is refused.
    let mut c = trainer();
    c.args(["train", "--track", "oval", "--resume", "--out"])
        .arg(&out);
    let e = run_err(&mut c);
    assert!(e.contains("state.json") && e.contains("--algo ppo"), "{e}");
    let mut c = ppo("centre.py", "m");
    c.arg("--resume").arg("--init").arg(&out);
    let e = run_err(&mut c);
    assert!(e.contains("--init") && e.contains("--resume"), "{e}");

    // Discrete actions (categorical policy), warm-started from an imitation run.
    run_ok(
        trainer()
            .args([
                "train",
                "--track",
                "oval",
                "--iterations",
                "1",
                "--samples",
                "300",
            ])
            .args(["--train-steps", "5", "--action-space", "discrete", "--out"])
            .arg(d.join("imitation")),
    );
    let mut c = ppo("centre.py", "d");
    c.args(["--action-space", "discrete", "--init"])
        .arg(d.join("imitation"));
    run_ok(&mut c);
    let meta = std::fs::read_to_string(d.join("d/model_metadata.json")).unwrap();
    assert!(meta.contains("\"discrete\""), "{meta}");
    // A warm start must be the same network: a continuous run cannot start from it.
    let mut c = ppo("centre.py", "w");
    c.arg("--init").arg(d.join("imitation"));
    let e = run_err(&mut c);
    assert!(e.contains("best.bpk") && e.contains("2 outputs"), "{e}");

    let e = run_err(&mut ppo("broken.py", "b"));
    assert!(
        e.contains("broken.py:3:") && e.contains("KeyError") && e.contains("'no_such_key'"),
        "{e}"
    );
    assert!(e.contains("params: {") && e.contains("\"steps\":6"), "{e}");
    assert!(
        !d.join("b").join("model.onnx").exists(),
        "a failed run exported a model"
    );
}
