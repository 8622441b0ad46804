//! Load a model, run one frame through the car's own pipeline and report
//! what came out: the one model check there is. `car-runtime check-model`
//! prints its report, the daemon's check child (below, [`check_in_child`])
//! sends the same report back as JSON before any model is loaded, and the
//! car's `PolicyBrain` runs the same three calls (preprocess, infer, map)
//! on every camera frame.

use crate::action::{ActionMapper, MappedAction};
use crate::backend::Backend;
use crate::frame::{Frame, PixelFormat};
use crate::metadata::ActionSpace;
use crate::model::{Model, ModelError};
use crate::policy::PolicyError;
use crate::preprocess::{InputSpec, PreprocessError, Preprocessor};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// Largest `--image` file: a camera frame, even an uncompressed RGB one at
/// the largest side the preprocessor takes, is well under this.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{file}: cannot read the image: {message}")]
    Image { file: String, message: String },
    #[error("preprocessing failed: {0}")]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Inference(#[from] PolicyError),
}

/// The frame a check feeds the model, as a camera would deliver it.
#[derive(Debug, Clone)]
pub struct TestFrame {
    pub data: Vec<u8>,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// What it is, for the report ("frame.jpg (640x480 JPEG)").
    pub name: String,
}

impl TestFrame {
    /// A picture file as the camera would deliver it: a JPEG stays JPEG
    /// (the car's MJPEG path, fast luma decode and all), anything else the
    /// `image` crate reads becomes RGB. Bounded read: a FIFO or a huge file
    /// is refused, naming the file.
    pub fn from_image(path: &Path) -> Result<TestFrame, CheckError> {
        let file = path.display().to_string();
        let bad = |message: String| CheckError::Image {
            file: file.clone(),
            message,
        };
        let bytes = safe_io::read_limited(path, MAX_IMAGE_BYTES).map_err(|e| bad(e.reason()))?;
        if bytes.starts_with(&[0xFF, 0xD8]) {
            let (width, height) = image::ImageReader::new(std::io::Cursor::new(&bytes))
                .with_guessed_format()
                .ok()
                .and_then(|r| r.into_dimensions().ok())
                .ok_or_else(|| bad("not a readable JPEG".into()))?;
            return Ok(TestFrame {
                data: bytes,
                format: PixelFormat::Jpeg,
                width,
                height,
                name: format!("{file} ({width}x{height} JPEG)"),
            });
        }
        let rgb = image::load_from_memory(&bytes)
            .map_err(|e| bad(e.to_string()))?
            .to_rgb8();
        let (width, height) = rgb.dimensions();
        Ok(TestFrame {
            data: rgb.into_raw(),
            format: PixelFormat::Rgb8,
            width,
            height,
            name: format!("{file} ({width}x{height})"),
        })
    }

    /// A 640x480 grey test frame with structure (a bright road-like band
    /// and a gradient), so a model's output depends on it.
    pub fn synthetic() -> TestFrame {
        let (w, h) = (640usize, 480usize);
        let mut v = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                let road = (x as i64 - 320).abs() < (y as i64 / 2 + 40);
                v[y * w + x] = if road && y > 200 {
                    180
                } else {
                    ((x + y) / 8 % 96) as u8
                };
            }
        }
        TestFrame {
            data: v,
            format: PixelFormat::Gray8,
            width: w as u32,
            height: h as u32,
            name: "synthetic 640x480 grey".into(),
        }
    }

    fn frame(&self) -> Frame<'_> {
        Frame {
            data: &self.data,
            format: self.format,
            width: self.width,
            height: self.height,
            timestamp_ns: 0,
            seq: 0,
        }
    }
}

/// Everything `check-model` shows for one backend.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub backend: String,
    pub graph: String,
    pub format: &'static str,
    pub input: InputSpec,
    pub action_space: ActionSpace,
    pub sensors: Vec<String>,
    /// Raw policy outputs for the frame.
    pub outputs: Vec<f32>,
    /// Mapped at 100 % max speed, so the throttle shows the model's intent.
    pub action: MappedAction,
    pub load_ms: f64,
    /// Steady state: the second run (the first warms the engine's caches).
    pub inference_ms: f64,
    /// What was fed ([`TestFrame::name`]).
    pub frame: String,
}

impl CheckReport {
    /// The JSON a check child prints and `check-model` reads back; its
    /// `summary` is what the web UI shows for an upload.
    pub fn to_json(&self) -> serde_json::Value {
        let space = &self.action_space;
        let (description, short) = match space {
            ActionSpace::Discrete(a) => {
                let d = format!("discrete, {} actions", a.len());
                (d.clone(), d)
            }
            ActionSpace::Continuous {
                steering_angle,
                speed,
            } => (
                format!(
                    "continuous, steering {}..{} deg, speed {}..{} m/s",
                    steering_angle.low, steering_angle.high, speed.low, speed.high
                ),
                "continuous".to_string(),
            ),
        };
        let shape = self.input.shape();
        json!({
            "backend": self.backend,
            "outputs": self.outputs,
            "action": {
                "index": self.action.index,
                "steering_angle": self.action.steering_angle_deg,
                "speed": self.action.speed_mps,
                "steering": self.action.steering,
                "throttle": self.action.throttle,
            },
            "load_ms": self.load_ms,
            "inference_ms": self.inference_ms,
            "input": {"shape": shape, "layout": self.input.layout.as_str()},
            "action_space": description,
            "frame": self.frame,
            "summary": {
                "action_space": short,
                "input": format!(
                    "[{}] {}",
                    shape.map(|d| d.to_string()).join(","),
                    self.input.layout.as_str()
                ),
                "sensors": self.sensors,
            },
        })
    }
}

/// Load `path` on `backend` and run `frame` through the car's pipeline
/// twice: a failure on either run (NaN outputs...) refuses the model as
/// surely as a load error, and the second run gives the steady-state
/// inference time.
pub fn check_model_on(
    path: &Path,
    backend: &Backend,
    frame: &TestFrame,
) -> Result<CheckReport, CheckError> {
    let start = Instant::now();
    let mut model = Model::load(path, backend)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let spec = *model.policy.input_spec();
    let mut pre = Preprocessor::new(frame.width, frame.height, frame.format, spec)?;
    let mut input = vec![0f32; spec.len()];
    let mut outputs = vec![0f32; model.policy.output_len()];
    let mut inference_ms = 0.0;
    for _ in 0..2 {
        pre.run(&frame.frame(), &mut input)?;
        let t = Instant::now();
        model.policy.infer(&input, &mut outputs)?;
        inference_ms = t.elapsed().as_secs_f64() * 1e3;
    }
    let action = ActionMapper::new(&model.metadata.action_space).map(&outputs, 1.0);
    Ok(CheckReport {
        backend: model.policy.backend_name().to_string(),
        graph: model.graph_name.clone(),
        format: model.format.as_str(),
        input: spec,
        action_space: model.metadata.action_space.clone(),
        sensors: model
            .metadata
            .sensor
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        outputs,
        action,
        load_ms,
        inference_ms,
        frame: frame.name.clone(),
    })
}

/// [`check_model_on`] the picture at `image` ([`TestFrame::from_image`]),
/// or on [`TestFrame::synthetic`].
pub fn check_model(
    path: &Path,
    backend: &Backend,
    image: Option<&Path>,
) -> Result<CheckReport, CheckError> {
    let frame = match image {
        Some(p) => TestFrame::from_image(p)?,
        None => TestFrame::synthetic(),
    };
    check_model_on(path, backend, &frame)
}

/// Exit codes of `car-runtime check-model`, shared with the code that reads
/// them so the two cannot drift.
pub mod exit {
    /// The model loaded and ran a frame to finite commands.
    pub const PASSED: i32 = 0;
    /// The model was refused with a reason (bad metadata, a cap, NaN output...).
    pub const REFUSED: i32 = 1;
    /// The check itself died: killed by a signal (abort, segfault, the CPU
    /// or wall-clock limit), or exited without a verdict. The model did
    /// something the engine could not survive; it is never loaded.
    pub const CRASHED: i32 = 3;
}

/// Resource limits of a model check child. The child applies the rlimits
/// to itself before it reads the model (`car-runtime check-model --child`);
/// the parent enforces the wall clock and kills the child at the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// RLIMIT_AS: the engines reserve address space generously (thread
    /// stacks, malloc arenas), so this is well above what a model uses; a
    /// DeepRacer deep network (100 MB) checks in under 1 GB.
    pub address_space_bytes: u64,
    /// RLIMIT_DATA: the heap proper.
    pub data_bytes: u64,
    /// RLIMIT_CPU soft limit (SIGXCPU); the hard limit (SIGKILL) is 5 s later.
    pub cpu_seconds: u64,
    /// RLIMIT_FSIZE: the child's output goes to files; no verdict is this big.
    pub file_bytes: u64,
    /// Wall clock from spawn to verdict; past it the child is killed.
    pub wall: std::time::Duration,
}

impl ChildLimits {
    /// The stock shallow network checks in about a second on a DeepRacer's
    /// Atom; the deep network in well under ten. A minute of CPU is plenty,
    /// and the wall clock allows for the control loop taking its share.
    pub const DEFAULT: ChildLimits = ChildLimits {
        address_space_bytes: 3 << 30,
        data_bytes: 2 << 30,
        cpu_seconds: 60,
        file_bytes: 16 << 20,
        wall: std::time::Duration::from_secs(90),
    };
}

/// What a check child came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildOutcome {
    /// It ran to the end and printed its JSON verdict (which may be a
    /// refusal: an `"error"` key).
    Finished(serde_json::Value),
    /// It died or was killed; the string says how ("signal 6: SIGABRT",
    /// "timed out after 90 s and was killed (signal 9: SIGKILL)").
    Crashed(String),
}

/// The verdict on one model, as the daemon acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The child's report (see `car-runtime check-model --child`).
    Passed(serde_json::Value),
    Refused(String),
    /// How the child died, already phrased for the user.
    Crashed(String),
}

impl Verdict {
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Passed(_) => exit::PASSED,
            Verdict::Refused(_) => exit::REFUSED,
            Verdict::Crashed(_) => exit::CRASHED,
        }
    }
}

/// The sentence the daemon and `check-model` show for a crashed check.
pub fn crash_message(how: &str) -> String {
    format!("model check crashed ({how}) — the model was not loaded")
}

/// Set to the path of a `car-runtime` binary to check models in. Only
/// needed by programs that are not `car-runtime` themselves (tests that
/// drive the daemon's library); see `checker_exe`.
pub const CHECKER_ENV: &str = "CAR_RUNTIME_CHECKER";

/// The `car-runtime` binary that checks models, in this order:
/// 1. `$CAR_RUNTIME_CHECKER`, when set;
/// 2. this very program when it is `car-runtime` (the daemon, the CLI), as
///    `/proc/self/exe` so that a package upgrade replacing the file on disk
///    still runs the same code as the daemon;
/// 3. a `car-runtime` beside this program or one folder up (cargo puts test
///    executables in `target/<profile>/deps/`, the binary in
///    `target/<profile>/`);
/// 4. otherwise an error: a model is never loaded unchecked.
pub fn checker_exe() -> Result<std::path::PathBuf, String> {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os(CHECKER_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    let is_car_runtime = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n == "car-runtime" || n == "car-runtime (deleted)")
    };
    if is_car_runtime(&me) {
        let proc_exe = PathBuf::from("/proc/self/exe");
        return Ok(if proc_exe.exists() { proc_exe } else { me });
    }
    for dir in me.ancestors().skip(1).take(2) {
        let p = dir.join("car-runtime");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "no car-runtime binary to check the model in ({} is not car-runtime and none is beside it); set {CHECKER_ENV} to its path",
        me.display()
    ))
}

/// The usual names of the signals a check child can die of.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => "unknown signal",
    }
}

/// Most bytes read back from the child's stdout and stderr.
const MAX_CHILD_STDOUT: u64 = 4 << 20;
const STDERR_TAIL: usize = 400;

/// An anonymous file for a child's output: created with O_EXCL in the temp
/// folder, then unlinked, so nothing is left behind and no pipe can fill
/// up (a full pipe would stall the child until the timeout).
fn scratch_file() -> std::io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..16 {
        let p = dir.join(format!(
            ".car-runtime-check-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        match o.open(&p) {
            Ok(f) => {
                let _ = std::fs::remove_file(&p);
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("cannot create a scratch file"))
}

fn read_back(f: &mut std::fs::File, limit: u64) -> String {
    use std::io::{Read, Seek};
    let mut buf = Vec::new();
    if f.rewind().is_ok() {
        let _ = f.take(limit).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Run `cmd` (a check child), wait at most `wall`, and say how it ended.
/// Its stdout's last JSON line is the verdict. Polls rather than blocks
/// so that no thread is needed to enforce the deadline.
pub fn run_child(
    mut cmd: std::process::Command,
    wall: std::time::Duration,
) -> std::io::Result<ChildOutcome> {
    use std::process::Stdio;
    let mut out = scratch_file()?;
    let mut err = scratch_file()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(err.try_clone()?));
    let mut child = cmd.spawn()?;
    // The spawn holds the command's copies of the files open; drop them.
    drop(cmd);
    let deadline = Instant::now() + wall;
    let mut nap = std::time::Duration::from_millis(1);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(20));
    };
    let stderr = read_back(&mut err, 1 << 20);
    // The last line the child wrote ("memory allocation of 7680000000
    // bytes failed"), cut short: earlier lines are the engine's log.
    let last_words = {
        let line = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty());
        match line {
            None => String::new(),
            Some(l) => {
                let cut: String = l.chars().take(STDERR_TAIL).collect();
                format!(": {cut}")
            }
        }
    };
    let Some(status) = status else {
        return Ok(ChildOutcome::Crashed(format!(
            "timed out after {} s and was killed (signal 9: SIGKILL)",
            wall.as_secs_f64()
        )));
    };
    #[cfg(unix)]
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return Ok(ChildOutcome::Crashed(format!(
            "signal {sig}: {}{last_words}",
            signal_name(sig)
        )));
    }
    if !status.success() {
        return Ok(ChildOutcome::Crashed(format!("{status}{last_words}")));
    }
    let stdout = read_back(&mut out, MAX_CHILD_STDOUT);
    Ok(stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .map_or_else(
            || ChildOutcome::Crashed(format!("no verdict on its output{last_words}")),
            ChildOutcome::Finished,
        ))
}

/// Check `model` in a child `car-runtime check-model --child` on the
/// engine `backend` uses, under `limits`. This is how the daemon validates
/// every model before it loads one: whatever the model does to the engine
/// (abort on a huge allocation, spin for minutes), only the child dies.
pub fn check_in_child(
    exe: &Path,
    model: &Path,
    backend: &Backend,
    limits: &ChildLimits,
) -> Verdict {
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("check-model")
        .arg(model)
        .arg("--child")
        .arg("--backend")
        .arg(backend.name());
    if let Some(lib) = backend.library() {
        cmd.arg("--onnxruntime-library").arg(lib);
    }
    match run_child(cmd, limits.wall) {
        Err(e) => Verdict::Refused(format!(
            "cannot start the model check ({}): {e}",
            exe.display()
        )),
        Ok(ChildOutcome::Crashed(how)) => Verdict::Crashed(crash_message(&how)),
        Ok(ChildOutcome::Finished(v)) => match v.get("error") {
            Some(e) => Verdict::Refused(e.as_str().map_or_else(|| e.to_string(), str::to_string)),
            None => Verdict::Passed(v),
        },
    }
}

#[cfg(test)]
mod child_tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn verdict_is_the_last_json_line() {
        let o = run_child(
            sh(r#"echo noise; echo '{"a":1}'; echo '{"b":2}'; echo trailing"#),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(o, ChildOutcome::Finished(serde_json::json!({"b": 2})));
    }

    #[test]
    fn a_child_killed_by_a_signal_is_a_crash_with_its_name() {
        let o = run_child(
            sh("echo 'memory allocation failed' >&2; kill -ABRT $$"),
            Duration::from_secs(10),
        )
        .unwrap();
        let ChildOutcome::Crashed(how) = o else {
            panic!("{o:?}")
        };
        assert!(how.starts_with("signal 6: SIGABRT"), "{how}");
        assert!(how.contains("memory allocation failed"), "{how}");
        assert_eq!(
            crash_message("signal 6: SIGABRT"),
            "model check crashed (signal 6: SIGABRT) — the model was not loaded"
        );
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let t = Instant::now();
        let o = run_child(sh("sleep 30"), Duration::from_millis(300)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let ChildOutcome::Crashed(how) = o else {
            panic!("{o:?}")
        };
        assert!(
            how.contains("timed out") && how.contains("SIGKILL"),
            "{how}"
        );
    }

    #[test]
    fn a_silent_or_failing_child_is_a_crash_not_a_pass() {
        for script in ["true", "echo '{\"a\":1}'; exit 101"] {
            let o = run_child(sh(script), Duration::from_secs(10)).unwrap();
            assert!(matches!(o, ChildOutcome::Crashed(_)), "{script}: {o:?}");
        }
    }

    #[test]
    fn a_child_that_floods_stdout_does_not_stall() {
        // More than a pipe holds: with pipes read after exit this would hang.
        let o = run_child(
            sh(r#"head -c 2000000 /dev/zero | tr '\0' x; echo; echo '{"ok":true}'"#),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(o, ChildOutcome::Finished(serde_json::json!({"ok": true})));
    }
}
