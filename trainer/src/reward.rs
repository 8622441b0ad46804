//! Reward functions for reinforcement learning: built-in versions of the
//! DeepRacer console's examples, and racers' own Python files, run unchanged
//! by embedded CPython with exactly the `params` dict DeepRacer passes.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::PyModule;
use sim::Params;

/// A reward function: a built-in preset or a Python file.
pub enum Reward {
    Preset(Preset),
    Python(PythonReward),
}

/// Built-in rewards (the console's three examples and a progress-based
/// minimalist one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Highest near the centre line, in three bands.
    CentreLine,
    /// Flat reward while all wheels stay inside the borders with a margin.
    Borders,
    /// Centre line, less 20 % when steering harder than 15 degrees.
    ZigZag,
    /// Progress per step: rewards driving the lap fast, nothing else.
    Progress,
}

impl Preset {
    pub const NAMES: [&'static str; 4] = ["centre-line", "borders", "zigzag", "progress"];

    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "centre-line" | "center-line" | "follow-center-line" => Some(Preset::CentreLine),
            "borders" | "stay-inside-borders" => Some(Preset::Borders),
            "zigzag" | "prevent-zigzag" => Some(Preset::ZigZag),
            "progress" => Some(Preset::Progress),
            _ => None,
        }
    }

    pub fn reward(self, p: &Params) -> f64 {
        match self {
            Preset::CentreLine => centre_line(p),
            Preset::Borders => {
                let margin = 0.5 * p.track_width - p.distance_from_center;
                if p.all_wheels_on_track && margin >= 0.05 {
                    1.0
                } else {
                    1e-3
                }
            }
            Preset::ZigZag => {
                let r = centre_line(p);
                if p.steering_angle.abs() > 15.0 {
                    r * 0.8
                } else {
                    r
                }
            }
            Preset::Progress => {
                if p.is_offtrack || p.steps == 0 {
                    1e-3
                } else {
                    p.progress / p.steps as f64
                }
            }
        }
    }
}

fn centre_line(p: &Params) -> f64 {
    let d = p.distance_from_center;
    let w = p.track_width;
    if d <= 0.1 * w {
        1.0
    } else if d <= 0.25 * w {
        0.5
    } else if d <= 0.5 * w {
        0.1
    } else {
        1e-3
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error("--reward {0}: expected a .py file or one of: centre-line, borders, zigzag, progress")]
    Unknown(String),
    #[error("{file}: {message}")]
    Load { file: String, message: String },
    /// The function failed for one state: training stops with everything a
    /// racer needs to reproduce it.
    #[error("{file}:{line}: reward_function {message}\nparams: {params}")]
    Call {
        file: String,
        line: i64,
        message: String,
        params: String,
    },
}

/// Helper run inside the interpreter. Keeping the checks in Python means the
/// racer's function sees plain Python objects, exactly as on DeepRacer.
const HELPER: &str = r#"
import json, math, numbers, sys, traceback

def load(path):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    ns = {"__name__": "reward", "__file__": path}
    exec(compile(source, path, "exec"), ns)
    fn = ns.get("reward_function")
    if not callable(fn):
        raise ValueError("defines no function reward_function(params)")
    return fn

def params_from_json(text):
    p = json.loads(text)
    # DeepRacer passes points as (x, y) tuples.
    p["waypoints"] = [tuple(w) for w in p["waypoints"]]
    p["objects_location"] = [tuple(o) for o in p["objects_location"]]
    return p

def return_line(fn, params):
    # Run once more with a profiler to see which `return` produced the value.
    seen = []
    code = fn.__code__
    def prof(frame, event, arg):
        if event == "return" and frame.f_code is code:
            seen.append(frame.f_lineno)
    sys.setprofile(prof)
    try:
        fn(params)
    except Exception:
        pass
    finally:
        sys.setprofile(None)
    return seen[-1] if seen else code.co_firstlineno

def call(fn, text, path):
    params = params_from_json(text)
    try:
        r = fn(params)
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        line = next((f.lineno for f in reversed(tb) if f.filename == path), fn.__code__.co_firstlineno)
        return ("error", 0.0, line, "raised " + type(e).__name__ + ": " + str(e))
    if isinstance(r, bool) or not isinstance(r, numbers.Real):
        return ("error", 0.0, return_line(fn, params_from_json(text)),
                "returned " + type(r).__name__ + " " + repr(r)[:80] + ", not a number")
    r = float(r)
    if math.isnan(r) or math.isinf(r):
        return ("error", 0.0, return_line(fn, params_from_json(text)), "returned " + repr(r))
    if not -1e5 <= r <= 1e5:
        return ("error", 0.0, return_line(fn, params_from_json(text)),
                "returned " + repr(r) + ", outside [-1e5, 1e5]")
    return ("ok", r, 0, "")
"#;

/// A racer's `reward_function(params)` from a Python file.
pub struct PythonReward {
    path: PathBuf,
    func: Py<PyAny>,
    call: Py<PyAny>,
}

impl PythonReward {
    pub fn load(path: &Path) -> Result<PythonReward, RewardError> {
        let file = path.display().to_string();
        let abs = std::fs::canonicalize(path).map_err(|e| RewardError::Load {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Python::attach(|py| {
            let load_err = |e: PyErr| RewardError::Load {
                file: file.clone(),
                message: describe(py, &e, &abs),
            };
            let helper = PyModule::from_code(
                py,
                &CString::new(HELPER).expect("no NUL in the helper"),
                c"deepracer_rs_reward_helper.py",
                c"deepracer_rs_reward_helper",
            )
            .map_err(load_err)?;
            let func = helper
                .getattr("load")
                .and_then(|f| f.call1((abs.display().to_string(),)))
                .map_err(load_err)?;
            let call = helper.getattr("call").map_err(load_err)?;
            Ok(PythonReward {
                path: abs.clone(),
                func: func.unbind(),
                call: call.unbind(),
            })
        })
    }

    pub fn call(&self, p: &Params) -> Result<f64, RewardError> {
        let text = serde_json::to_string(p).expect("params serialise");
        let file = self.path.display().to_string();
        Python::attach(|py| {
            let out = self
                .call
                .bind(py)
                .call1((self.func.bind(py), text.as_str(), file.as_str()))
                .and_then(|r| r.extract::<(String, f64, i64, String)>());
            match out {
                Ok((status, value, _, _)) if status == "ok" => Ok(value),
                Ok((_, _, line, message)) => Err(RewardError::Call {
                    file: file.clone(),
                    line,
                    message,
                    params: text.clone(),
                }),
                Err(e) => Err(RewardError::Call {
                    file: file.clone(),
                    line: 0,
                    message: describe(py, &e, &self.path),
                    params: text.clone(),
                }),
            }
        })
    }
}

/// A Python error as one line, with the line in `path` where it happened.
fn describe(py: Python<'_>, e: &PyErr, path: &Path) -> String {
    let mut line = None;
    if let Some(tb) = e.traceback(py) {
        let mut cur = Some(tb.into_any());
        while let Some(t) = cur {
            let file: Option<String> = t
                .getattr("tb_frame")
                .and_then(|f| f.getattr("f_code"))
                .and_then(|c| c.getattr("co_filename"))
                .and_then(|n| n.extract())
                .ok();
            if file.as_deref() == Some(&*path.display().to_string()) {
                line = t.getattr("tb_lineno").and_then(|l| l.extract::<i64>()).ok();
            }
            cur = t.getattr("tb_next").ok().filter(|n| !n.is_none());
        }
    }
    // Syntax errors carry their line in the exception itself.
    if line.is_none() {
        line = e
            .value(py)
            .getattr("lineno")
            .and_then(|l| l.extract::<i64>())
            .ok();
    }
    let text = e.to_string();
    match line {
        Some(l) => format!("line {l}: {text}"),
        None => text,
    }
}

impl Reward {
    /// A preset name or a path to a `.py` file.
    pub fn parse(spec: &str) -> Result<Reward, RewardError> {
        if let Some(p) = Preset::parse(spec) {
            return Ok(Reward::Preset(p));
        }
        if spec.ends_with(".py") {
            return PythonReward::load(Path::new(spec)).map(Reward::Python);
        }
        Err(RewardError::Unknown(spec.to_string()))
    }

    pub fn call(&self, p: &Params) -> Result<f64, RewardError> {
        match self {
            Reward::Preset(x) => Ok(x.reward(p)),
            Reward::Python(f) => f.call(p),
        }
    }
}
