//! `car-runtime check-model`: load a model with each available backend and
//! run one frame through it exactly as the car would.
//!
//! The inference backend is process-global (`ort::set_api` is one-shot), so
//! each backend is tried in a child process of ourselves (`--child`); the
//! parent collects their JSON and reports.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use car_runtime::brain::{Brain, StageTimes};
use car_runtime::config::BackendChoice;
use car_runtime::frame::{Frame, PixelFormat};
use car_runtime::pipeline::{self, PolicyBrain};

#[derive(Args)]
pub struct CheckArgs {
    /// Model folder or .tar.gz.
    path: PathBuf,
    /// Run this picture (JPEG or PNG) through the car's preprocessing.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Print {"backend","outputs","action","load_ms","inference_ms"} for the
    /// backend the car would drive with.
    #[arg(long)]
    json: bool,
    /// Check with this backend only (auto, tract, onnxruntime).
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Path to libonnxruntime.so.
    #[arg(long)]
    onnxruntime_library: Option<String>,
    /// Internal: run one backend in this process and print its JSON.
    #[arg(long, hide = true)]
    child: bool,
}

pub fn main(a: CheckArgs) -> Result<()> {
    if a.child {
        let backend = a.backend.unwrap_or(BackendChoice::Auto);
        let v = match check_one(
            &a.path,
            a.image.as_deref(),
            backend,
            a.onnxruntime_library.as_deref(),
        ) {
            Ok(v) => v,
            Err(e) => e,
        };
        println!("{v}");
        return Ok(());
    }
    let backends: Vec<BackendChoice> = match a.backend {
        Some(BackendChoice::Auto) | None => vec![BackendChoice::Onnxruntime, BackendChoice::Tract],
        Some(b) => vec![b],
    };
    let exe = std::env::current_exe().context("locating car-runtime")?;
    let mut results: Vec<(BackendChoice, Value)> = Vec::new();
    for b in backends {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("check-model")
            .arg(&a.path)
            .arg("--child")
            .arg("--backend")
            .arg(b.as_str());
        if let Some(i) = &a.image {
            cmd.arg("--image").arg(i);
        }
        if let Some(l) = &a.onnxruntime_library {
            cmd.arg("--onnxruntime-library").arg(l);
        }
        let out = cmd
            .output()
            .context("running the check in a child process")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                json!({"error": format!("check crashed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())})
            });
        results.push((b, v));
    }
    // The car drives with ONNX Runtime when it loads, else tract.
    let chosen = results.iter().find(|(_, v)| v.get("error").is_none());
    if a.json {
        match chosen {
            Some((_, v)) => {
                let out = json!({
                    "backend": v["backend"],
                    "outputs": v["outputs"],
                    "action": v["action"],
                    "load_ms": v["load_ms"],
                    "inference_ms": v["inference_ms"],
                });
                println!("{out}");
            }
            None => {
                let errs: Vec<String> = results
                    .iter()
                    .map(|(b, v)| format!("{}: {}", b.as_str(), v["error"].as_str().unwrap_or("?")))
                    .collect();
                bail!(
                    "{}: the model does not load with any backend\n  {}",
                    a.path.display(),
                    errs.join("\n  ")
                );
            }
        }
        return Ok(());
    }
    let mut any_ok = false;
    let mut model_error = None;
    for (b, v) in &results {
        println!("== backend {}", b.as_str());
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            if v.get("unavailable").and_then(|u| u.as_bool()) == Some(true) {
                println!("   not available: {e}");
            } else {
                println!("   FAILED: {e}");
                model_error = Some(e.to_string());
            }
            continue;
        }
        any_ok = true;
        println!("   engine:       {}", v["backend"].as_str().unwrap_or("?"));
        println!(
            "   input:        {} ({})",
            v["input"]["shape"],
            v["input"]["layout"].as_str().unwrap_or("?")
        );
        println!(
            "   outputs:      {} values",
            v["outputs"].as_array().map(|a| a.len()).unwrap_or(0)
        );
        println!(
            "   action space: {}",
            v["action_space"].as_str().unwrap_or("?")
        );
        println!("   frame:        {}", v["frame"].as_str().unwrap_or("?"));
        println!("   raw outputs:  {}", v["outputs"]);
        println!("   action:       {}", v["action"]);
        println!(
            "   load {:.1} ms, inference {:.3} ms",
            v["load_ms"].as_f64().unwrap_or(0.0),
            v["inference_ms"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(e) = model_error {
        bail!("{e}");
    }
    if !any_ok {
        bail!("{}: no backend could load the model", a.path.display());
    }
    Ok(())
}

fn err(unavailable: bool, e: impl std::fmt::Display) -> Value {
    json!({"error": e.to_string(), "unavailable": unavailable})
}

/// One backend, in this process. Err carries the JSON error object.
fn check_one(
    path: &Path,
    image: Option<&Path>,
    backend: BackendChoice,
    lib: Option<&str>,
) -> Result<Value, Value> {
    let b = pipeline::init_backend(backend, lib.unwrap_or("")).map_err(|e| err(true, e))?;
    let t = Instant::now();
    let model = policy::Model::load(path, &b).map_err(|e| err(false, e))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let spec = *model.policy.input_spec();
    let engine = model.policy.backend_name().to_string();
    let action_space = match &model.metadata.action_space {
        policy::ActionSpace::Discrete(a) => format!("discrete, {} actions", a.len()),
        policy::ActionSpace::Continuous {
            steering_angle,
            speed,
        } => format!(
            "continuous, steering {}..{} deg, speed {}..{} m/s",
            steering_angle.low, steering_angle.high, speed.low, speed.high
        ),
    };
    let mut brain = PolicyBrain::new(model);
    // The frame: the given picture as the camera would deliver it (a JPEG
    // as MJPEG, anything else as RGB), or a simulator frame at 640x480.
    let (data, format, w, h, what) = match image {
        Some(p) => {
            let bytes =
                std::fs::read(p).map_err(|e| err(false, format!("{}: {e}", p.display())))?;
            let is_jpeg = bytes.starts_with(&[0xFF, 0xD8]);
            if is_jpeg {
                let (w, h) = car_runtime::source::replay::jpeg_size(&bytes)
                    .ok_or_else(|| err(false, format!("{}: not a readable JPEG", p.display())))?;
                (
                    bytes,
                    PixelFormat::Jpeg,
                    w,
                    h,
                    format!("{} ({w}x{h} JPEG)", p.display()),
                )
            } else {
                let img = image::load_from_memory(&bytes)
                    .map_err(|e| err(false, format!("{}: {e}", p.display())))?
                    .to_rgb8();
                let (w, h) = img.dimensions();
                (
                    img.into_raw(),
                    PixelFormat::Rgb8,
                    w,
                    h,
                    format!("{} ({w}x{h})", p.display()),
                )
            }
        }
        None => {
            let mut s = sim::Sim::new(
                sim::Track::builtin_names()
                    .first()
                    .and_then(|n| sim::Track::builtin(n))
                    .expect("built-in track"),
                sim::SimConfig::default(),
            );
            s.reset(0);
            let mut buf = vec![0u8; 640 * 480 * 3];
            s.render_into(&mut buf, 640, 480, sim::Channels::Rgb)
                .map_err(|e| err(false, e))?;
            (
                buf,
                PixelFormat::Rgb8,
                640,
                480,
                "simulator frame 640x480 RGB".to_string(),
            )
        }
    };
    let frame = Frame {
        data: &data,
        format,
        width: w,
        height: h,
        timestamp_ns: 0,
        seq: 0,
    };
    let mut times = StageTimes::default();
    let action = brain
        .decide(&frame, 1.0, &mut times)
        .map_err(|e| err(false, e))?;
    // Again for the steady-state inference time (the first run warms caches).
    let action = brain
        .decide(&frame, 1.0, &mut times)
        .map_err(|e| err(false, e))
        .unwrap_or(action);
    let outputs = brain.outputs().to_vec();
    Ok(json!({
        "backend": engine,
        "outputs": outputs,
        "action": {
            "index": (action.index >= 0).then_some(action.index),
            "steering_angle": action.steering_angle_deg,
            "speed": action.speed_mps,
            "steering": action.steering,
            "throttle": action.throttle,
        },
        "load_ms": load_ms,
        "inference_ms": f64::from(times.inference_us) / 1e3,
        "input": {"shape": spec.shape(), "layout": spec.layout.as_str()},
        "action_space": action_space,
        "frame": what,
    }))
}
