//! `car-runtime check-model`: load a model with each available backend and
//! run one frame through it exactly as the car would.
//!
//! The inference backend is process-global (`ort::set_api` is one-shot), so
//! each backend is tried in a child process of ourselves (`--child`); the
//! parent collects their JSON and reports. The child is also the daemon's
//! sandbox for models (`policy::check::check_in_child`): it lowers its own
//! rlimits (address space, heap, CPU, file size, no core) and its priority
//! before it reads the model, and the parent kills it at a wall-clock
//! deadline, so a hostile model kills at most the child.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use car_runtime::config::BackendChoice;
use car_runtime::frame::PixelFormat;
use car_runtime::pipeline;
use policy::check::{
    check_model_on, crash_message, run_child, ChildLimits, ChildOutcome, TestFrame,
};

#[derive(Args)]
#[command(after_help = "Exit status:\n  \
    0  the model loaded and ran a frame to finite commands\n  \
    1  the model was refused (the message says which file and field), or the check could not run\n  \
    3  the check crashed: killed by a signal (abort, segfault, CPU or memory limit) or timed out; the model is unsafe to load")]
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
        // Limits first: nothing of the model is read before they hold. A
        // child that cannot limit itself refuses rather than runs unbounded.
        let v = match apply_child_limits(&ChildLimits::DEFAULT) {
            Err(e) => err(false, format!("cannot limit the model check: {e}")),
            Ok(()) => match check_one(
                &a.path,
                a.image.as_deref(),
                backend,
                a.onnxruntime_library.as_deref(),
            ) {
                Ok(v) => v,
                Err(e) => e,
            },
        };
        println!("{v}");
        return Ok(());
    }
    let backends: Vec<BackendChoice> = match a.backend {
        Some(BackendChoice::Auto) | None => vec![BackendChoice::OnnxRuntime, BackendChoice::Tract],
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
        let v = match run_child(cmd, ChildLimits::DEFAULT.wall)
            .context("running the check in a child process")?
        {
            ChildOutcome::Finished(v) => v,
            ChildOutcome::Crashed(how) => json!({"error": crash_message(&how), "crashed": true}),
        };
        results.push((b, v));
    }
    // A crash outranks everything: the model took an engine down, so it
    // must not be mistaken for a plain refusal (exit 1) or hidden behind
    // the other backend's pass.
    let crashed: Vec<String> = results
        .iter()
        .filter(|(_, v)| v.get("crashed").and_then(Value::as_bool) == Some(true))
        .map(|(b, v)| format!("{}: {}", b.as_str(), v["error"].as_str().unwrap_or("?")))
        .collect();
    if !crashed.is_empty() {
        eprintln!("error: {}: {}", a.path.display(), crashed.join("; "));
        std::process::exit(policy::check::exit::CRASHED);
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

/// Lower this process's limits to `l` (never raise them: a lower hard
/// limit from the service manager stays), and its priority, so a model
/// being checked competes with the control loop as little as the web UI.
// `rlim_t` is u64 on the car's targets (amd64, arm64) but not everywhere.
#[allow(clippy::unnecessary_cast)]
fn apply_child_limits(l: &ChildLimits) -> std::io::Result<()> {
    let set = |res, soft: u64, hard: u64| -> std::io::Result<()> {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a stack struct.
        if unsafe { libc::getrlimit(res, &mut cur) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let hard = (hard as libc::rlim_t).min(cur.rlim_max);
        let new = libc::rlimit {
            rlim_cur: (soft as libc::rlim_t).min(hard),
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the rlimit we own for the call.
        if unsafe { libc::setrlimit(res, &new) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(
        libc::RLIMIT_AS,
        l.address_space_bytes,
        l.address_space_bytes,
    )?;
    set(libc::RLIMIT_DATA, l.data_bytes, l.data_bytes)?;
    set(libc::RLIMIT_CPU, l.cpu_seconds, l.cpu_seconds + 5)?;
    set(libc::RLIMIT_FSIZE, l.file_bytes, l.file_bytes)?;
    // A crashing check must not write a multi-GB core next to the models.
    set(libc::RLIMIT_CORE, 0, 0)?;
    // SAFETY: plain syscall. Nice 10, as the web threads; failure to
    // lower the priority is not a reason to refuse the check.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
    Ok(())
}

fn err(unavailable: bool, e: impl std::fmt::Display) -> Value {
    json!({"error": e.to_string(), "unavailable": unavailable})
}

/// One backend, in this process, through the one model check
/// (`policy::check::check_model_on`). Err carries the JSON error object.
fn check_one(
    path: &Path,
    image: Option<&Path>,
    backend: BackendChoice,
    lib: Option<&str>,
) -> Result<Value, Value> {
    let b = pipeline::init_backend(backend, lib.unwrap_or("")).map_err(|e| err(true, e))?;
    // The frame: the given picture as the camera would deliver it, or a
    // simulator frame at the camera's 640x480.
    let frame = match image {
        Some(p) => TestFrame::from_image(p).map_err(|e| err(false, e))?,
        None => sim_frame().map_err(|e| err(false, e))?,
    };
    let report = check_model_on(path, &b, &frame).map_err(|e| err(false, e))?;
    Ok(report.to_json())
}

/// The first built-in track's start, rendered as the camera sees it.
fn sim_frame() -> Result<TestFrame, String> {
    let name = sim::Track::builtin_names()
        .first()
        .copied()
        .ok_or("no built-in track")?;
    let track = sim::Track::builtin(name).ok_or("no built-in track")?;
    let mut s = sim::Sim::new(track, sim::SimConfig::default());
    s.reset(0);
    let (width, height) = (640u32, 480u32);
    let mut data = vec![0u8; 640 * 480 * 3];
    s.render_into(
        &mut data,
        width as usize,
        height as usize,
        sim::Channels::Rgb,
    )
    .map_err(|e| e.to_string())?;
    Ok(TestFrame {
        data,
        format: PixelFormat::Rgb8,
        width,
        height,
        name: "simulator frame 640x480 RGB".to_string(),
    })
}
