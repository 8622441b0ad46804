//! The wire-level fault suite: the real `car-runtime` binary driving on a
//! fake stock PWM board (a sysfs tree in a temp dir, the stock chip at
//! `0000:00:17.0`), one fault at a time, and the time from the fault to
//! neutral on the wire, read from the throttle's `duty_cycle` file every
//! 200 us. Used by `tests/tests/faults.rs` (asserts each bound) and by
//! `examples/fault_bench.rs` (prints the table, medians of several runs).
//!
//! Times are CLOCK_MONOTONIC, which this process and the daemon share: a
//! signal's fault time is when it was sent; a camera frame's is the tick at
//! which the daemon took it (its `--record` log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{car_runtime, write_centre_seeking_model};

pub mod hostile;
pub mod web;

use web::Phone;

/// The stock calibration's neutral throttle and steering (no calibration file).
pub const NEUTRAL_THROTTLE: &str = "1446000";
pub const NEUTRAL_STEERING: &str = "1450000";

/// CLOCK_MONOTONIC in ns, the daemon's clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A stock-board-like sysfs tree: pwmchip0 whose device is 0000:00:17.0,
/// channels 0 (ESC) and 1 (servo) exported.
pub fn fake_board(root: &Path) {
    let dev = root.join("devices/pci0000:00/0000:00:17.0");
    std::fs::create_dir_all(&dev).unwrap();
    let chip = root.join("class/pwm/pwmchip0");
    std::fs::create_dir_all(&chip).unwrap();
    std::os::unix::fs::symlink(&dev, chip.join("device")).unwrap();
    std::fs::write(chip.join("export"), "").unwrap();
    for ch in ["pwm0", "pwm1"] {
        let d = chip.join(ch);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["period", "duty_cycle", "enable"] {
            std::fs::write(d.join(f), "0\n").unwrap();
        }
    }
}

/// One daemon on its own board.
pub struct Car {
    pub dir: tempfile::TempDir,
    pub sys: PathBuf,
    pub child: Child,
    /// The daemon's stderr so far (read by a thread, so the pipe never
    /// fills and blocks the daemon's logging).
    log: Arc<Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl Car {
    /// Start the daemon with this `[source]` table (TOML), the test's
    /// centre-seeking model, autonomous at 60 %; `extra` CLI arguments.
    pub fn start(source: &str, extra: &[&str]) -> Car {
        Car::start_with(source, "", false, extra)
    }

    /// [`Car::start`] with more `[web]` keys (TOML lines) and, when
    /// `jittery`, [`hostile::write_jittery_driver`]'s model, whose
    /// throttle on the wire changes on almost every tick.
    pub fn start_with(source: &str, web_extra: &str, jittery: bool, extra: &[&str]) -> Car {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        fake_board(&sys);
        // `{lap}` in the source: a recorded lap of the simulator, replayed.
        let source = if source.contains("{lap}") {
            let lap = dir.path().join("lap");
            std::fs::create_dir_all(&lap).unwrap();
            for (i, f) in lap_frames().iter().enumerate() {
                std::fs::write(lap.join(format!("{i:06}.jpg")), f).unwrap();
            }
            source.replace("{lap}", lap.to_str().unwrap())
        } else {
            source.to_string()
        };
        let model = dir.path().join("model");
        if jittery {
            hostile::write_jittery_driver(&model);
        } else {
            write_centre_seeking_model(&model, 2.0);
        }
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "{source}\n[model]\npath = \"{}\"\nbackend = \"tract\"\n\
                 [actuator]\nbackend = \"sysfs\"\ncalibration = \"{}\"\n[actuator.sysfs]\nroot = \"{}\"\n\
                 [web]\naddress = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nmodels_dir = \"{}\"\n{web_extra}\n",
                model.display(),
                dir.path().join("c.json").display(),
                sys.display(),
                dir.path().join("web").display(),
                dir.path().join("models").display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(car_runtime())
            .args(["run", "--autonomous", "--max-speed", "60", "--config"])
            .arg(&cfg)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let log_reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut b = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut b) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&b[..n]));
            }
        });
        Car {
            dir,
            sys,
            child,
            log,
            log_reader: Some(log_reader),
        }
    }

    /// A recorded simulator lap replayed in a loop at 15 fps as the camera
    /// (on a fake board the simulated car does not move, so the simulated
    /// camera's frames would not change), the web UI's model upload limit at
    /// 16 MiB (gzip bombs are refused at 4x that), `web_extra` more `[web]`
    /// keys, and a model whose throttle changes on almost every tick.
    pub fn lap_web(web_extra: &str, extra: &[&str]) -> Car {
        Car::start_with(
            "[source]\nkind = \"replay\"\nreplay_dir = \"{lap}\"\nreplay_rate = 15.0\nreplay_loop = true\n",
            &format!("max_upload_bytes = 16777216\n{web_extra}"),
            true,
            extra,
        )
    }

    /// The web UI's address, from the daemon's "web UI: http://..." line.
    pub fn web_addr(&mut self, limit: Duration) -> Result<SocketAddr, String> {
        let t = Instant::now();
        loop {
            let found = self.log.lock().unwrap().lines().find_map(|l| {
                l.strip_prefix("web UI: http://")
                    .and_then(|a| a.trim().trim_end_matches('/').parse().ok())
            });
            if let Some(a) = found {
                return Ok(a);
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                return Err(format!("daemon exited ({st}): {}", self.stderr()));
            }
            if t.elapsed() > limit {
                return Err(format!("no web UI address: {}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Log in as the racer would, with the daemon's initial password.
    pub fn phone(&mut self) -> Result<Phone, String> {
        let addr = self.web_addr(Duration::from_secs(60))?;
        let pw_file = self.dir.path().join("web").join("initial-password");
        let t = Instant::now();
        let pw = loop {
            match std::fs::read_to_string(&pw_file) {
                Ok(p) if !p.trim().is_empty() => break p.trim().to_string(),
                _ if t.elapsed() > Duration::from_secs(10) => {
                    return Err(format!("no {}", pw_file.display()))
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Phone::login(addr, &pw).map_err(|e| e.to_string())
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The simulated camera (real time) as the frame source.
    pub fn sim() -> Car {
        Car::start("[source]\nkind = \"sim\"\nwidth = 160\nheight = 120\n", &[])
    }

    pub fn throttle(&self) -> String {
        read_trim(&self.sys.join("class/pwm/pwmchip0/pwm0/duty_cycle"))
    }

    pub fn steering(&self) -> String {
        read_trim(&self.sys.join("class/pwm/pwmchip0/pwm1/duty_cycle"))
    }

    /// Wait until the throttle leaves neutral (the car drives).
    pub fn wait_driving(&mut self, limit: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let v = self.throttle();
            if !v.is_empty() && v != "0" && v != NEUTRAL_THROTTLE {
                return Ok(());
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                return Err(format!(
                    "daemon exited before driving ({st}): {}",
                    self.stderr()
                ));
            }
            if t.elapsed() > limit {
                return Err("the throttle never left neutral".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Poll the throttle every 200 us; CLOCK_MONOTONIC when it first reads
    /// neutral, or `None` within `limit`.
    pub fn wait_neutral(&self, limit: Duration) -> Option<u64> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.throttle() == NEUTRAL_THROTTLE {
                return Some(monotonic_ns());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }

    /// Wait for the process to end (killing it after `limit`).
    pub fn finish(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if t.elapsed() > limit {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's stderr: all of it once the daemon has exited, what it
    /// wrote so far while it runs.
    pub fn stderr(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_some() {
            if let Some(t) = self.log_reader.take() {
                let _ = t.join();
            }
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Car {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured fault.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Fault -> neutral on the wire, ms.
    pub ms: f64,
    /// How the daemon ended ("exit 0", "signal 6 (SIGABRT)", "running").
    pub ended: String,
}

fn describe(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => st.to_string(),
    }
}

/// Send `sig` to a driving daemon; time until neutral on the wire.
pub fn signal(sig: i32) -> Result<Outcome, String> {
    let mut car = Car::sim();
    car.wait_driving(Duration::from_secs(60))?;
    let sent = monotonic_ns();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(car.child.id() as i32, sig) };
    let neutral = car.wait_neutral(Duration::from_secs(3));
    let st = car.finish(Duration::from_secs(5));
    let ended = describe(st);
    let at = neutral.ok_or_else(|| {
        format!(
            "signal {sig}: throttle still {} after 3 s ({ended}): {}",
            car.throttle(),
            car.stderr()
        )
    })?;
    if car.steering() != NEUTRAL_STEERING {
        return Err(format!("signal {sig}: steering left at {}", car.steering()));
    }
    Ok(Outcome {
        ms: (at.saturating_sub(sent)) as f64 / 1e6,
        ended,
    })
}

/// The kinds of hostile camera frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// Baseline JPEG whose SOF claims 65535x65535.
    HugeBaseline,
    /// The same header turned progressive (the general decoder's path).
    HugeProgressive,
    /// 90 % of the scan data cut, a marker after the cut.
    TruncatedScan,
}

impl BadFrame {
    pub const ALL: [BadFrame; 3] = [
        BadFrame::HugeBaseline,
        BadFrame::HugeProgressive,
        BadFrame::TruncatedScan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BadFrame::HugeBaseline => "JPEG frame claiming 65535x65535",
            BadFrame::HugeProgressive => "progressive JPEG claiming 65535x65535",
            BadFrame::TruncatedScan => "JPEG frame with 90 % of its scan cut",
        }
    }

    /// Make the hostile frame from a good one.
    pub fn make(self, good: &[u8]) -> Vec<u8> {
        let mut j = good.to_vec();
        let sof = (0..j.len() - 1)
            .find(|&i| j[i] == 0xFF && j[i + 1] == 0xC0)
            .expect("baseline SOF0 in the recorded frame");
        match self {
            BadFrame::HugeBaseline | BadFrame::HugeProgressive => {
                // FF C0 len(2) precision(1) height(2) width(2)
                j[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
                if self == BadFrame::HugeProgressive {
                    j[sof + 1] = 0xC2;
                }
                j
            }
            BadFrame::TruncatedScan => {
                let sos = (0..j.len() - 1)
                    .find(|&i| j[i] == 0xFF && j[i + 1] == 0xDA)
                    .expect("SOS in the recorded frame");
                let hdr = u16::from_be_bytes([j[sos + 2], j[sos + 3]]) as usize;
                let data = sos + 2 + hdr;
                let keep = (j.len() - 2 - data) / 10;
                j.truncate(data + keep);
                j.extend_from_slice(&[0xFF, 0xD9]);
                j
            }
        }
    }
}

/// Frames of a simulated lap as the car's camera would send them (JPEG,
/// 160x120 grey), recorded by the daemon itself.
pub fn recorded_frames(dir: &Path) -> Vec<Vec<u8>> {
    let model = dir.join("rec-model");
    write_centre_seeking_model(&model, 2.0);
    let rec = dir.join("rec");
    let st = Command::new(car_runtime())
        .args([
            "run",
            "--sim",
            "--headless",
            "--laps",
            "1",
            "--max-speed",
            "60",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--record")
        .arg(&rec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "recording a lap failed");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// [`recorded_frames`], once per process.
pub fn lap_frames() -> &'static [Vec<u8>] {
    static LAP: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    LAP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        recorded_frames(dir.path())
    })
}

/// Replay `good` frames then hostile ones at 15 fps into a driving daemon;
/// time from the tick that took the first hostile frame to neutral.
pub fn bad_frame(kind: BadFrame, good: &[Vec<u8>]) -> Result<Outcome, String> {
    const GOOD: usize = 45; // 3 s of driving
    const BAD: usize = 30;
    let replay = tempfile::tempdir().unwrap();
    for (i, f) in good.iter().take(GOOD).enumerate() {
        std::fs::write(replay.path().join(format!("{i:06}.jpg")), f).unwrap();
    }
    let bad = kind.make(&good[GOOD]);
    for i in GOOD..GOOD + BAD {
        std::fs::write(replay.path().join(format!("{i:06}.jpg")), &bad).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let rec = out.path().join("rec");
    let mut car = Car::start(
        &format!(
            "[source]\nkind = \"replay\"\nreplay_dir = \"{}\"\nreplay_rate = 15.0\n",
            replay.path().display()
        ),
        &["--record", rec.to_str().unwrap()],
    );
    car.wait_driving(Duration::from_secs(60))?;
    // Neutral comes from the stall rule (the frame is an error), long
    // before the stream ends 2 s later.
    let t = Instant::now();
    let mut neutral = None;
    while t.elapsed() < Duration::from_secs(10) {
        if car.throttle() == NEUTRAL_THROTTLE {
            neutral = Some(monotonic_ns());
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let st = car.finish(Duration::from_secs(60));
    let ended = describe(st);
    let err = car.stderr();
    if !st.success() {
        return Err(format!(
            "{}: the daemon did not survive ({ended}): {err}",
            kind.name()
        ));
    }
    let at = neutral.ok_or_else(|| format!("{}: never neutral", kind.name()))?;
    let log = std::fs::read_to_string(rec.join("log.jsonl"))
        .map_err(|e| format!("{}: no record log: {e}", kind.name()))?;
    let fault = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["seq"].as_u64().is_some_and(|s| s >= GOOD as u64))
        .and_then(|v| v["tick_ns"].as_u64())
        .ok_or_else(|| {
            format!(
                "{}: the hostile frame is not in the record log",
                kind.name()
            )
        })?;
    if at < fault {
        return Err(format!(
            "{}: neutral {} ms before the hostile frame: the good frames did not drive",
            kind.name(),
            (fault - at) / 1_000_000
        ));
    }
    Ok(Outcome {
        ms: (at - fault) as f64 / 1e6,
        ended,
    })
}

/// Name of a signal number, for tables.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => "?",
    }
}

/// Signals that end the process by default and can be caught: the daemon
/// stops through its loop (bound: the 100 ms grace of the signal guard).
pub const GRACEFUL: [i32; 14] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGPWR,
    libc::SIGSTKFLT,
    libc::SIGIO,
];

/// Fatal signals, sent: neutral from the handler, then the process dies.
pub const FATAL: [i32; 7] = [
    libc::SIGABRT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGSYS,
    libc::SIGTRAP,
];

/// Bounds, ms (ARCHITECTURE.md's safety table).
pub const GRACEFUL_BOUND_MS: f64 = 100.0;
pub const FATAL_BOUND_MS: f64 = 20.0;
pub const FRAME_BOUND_MS: f64 = 200.0;

// ---------------------------------------------------------------------------
// Faults through the web UI: model uploads, a model too slow for the car,
// the e-stop through floods.

/// What the wire did while it was watched (sampled every 1 ms).
#[derive(Debug, Clone, Copy, Default)]
pub struct WireStats {
    pub samples: u64,
    /// Samples that read neutral throttle.
    pub neutral: u64,
    pub throttle_changes: u64,
    pub steering_changes: u64,
}

/// Samples the wire on a thread until [`WireWatch::stop`].
pub struct WireWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<WireStats>,
}

impl WireWatch {
    pub fn start(car: &Car) -> WireWatch {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let pwm = car.sys.join("class/pwm/pwmchip0");
        let thread = std::thread::spawn(move || {
            let mut s = WireStats::default();
            let (mut t0, mut s0) = (String::new(), String::new());
            while !st.load(Ordering::Relaxed) {
                let t = read_trim(&pwm.join("pwm0/duty_cycle"));
                let g = read_trim(&pwm.join("pwm1/duty_cycle"));
                s.samples += 1;
                if t == NEUTRAL_THROTTLE {
                    s.neutral += 1;
                }
                if s.samples > 1 && t != t0 {
                    s.throttle_changes += 1;
                }
                if s.samples > 1 && g != s0 {
                    s.steering_changes += 1;
                }
                (t0, s0) = (t, g);
                std::thread::sleep(Duration::from_millis(1));
            }
            s
        });
        WireWatch { stop, thread }
    }

    pub fn stop(self) -> WireStats {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Stop a daemon that should still be healthy; how it ended.
fn stop_daemon(car: &mut Car, what: &str) -> Result<String, String> {
    if !car.alive() {
        let st = car.finish(Duration::from_secs(1));
        return Err(format!(
            "{what}: the daemon died ({}): {}",
            describe(st),
            car.stderr()
        ));
    }
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(car.child.id() as i32, libc::SIGTERM) };
    let st = car.finish(Duration::from_secs(30));
    if !st.success() {
        return Err(format!(
            "{what}: SIGTERM ended the daemon with {}: {}",
            describe(st),
            car.stderr()
        ));
    }
    Ok(describe(st))
}

/// The hostile model packages uploaded while the car drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadUpload {
    /// `model.onnx` declaring a 1x1x65535x65535 input.
    HugeInput,
    /// 100,000 Relu nodes in a chain.
    Chain,
    /// A 650 KB `.tar.gz` that unpacks to 100 MiB (the limit here is 64 MiB).
    GzipBomb,
    /// sqrt(-x): NaN on every camera frame (the check runs one).
    NanOutputs,
}

impl BadUpload {
    pub const ALL: [BadUpload; 4] = [
        BadUpload::HugeInput,
        BadUpload::Chain,
        BadUpload::GzipBomb,
        BadUpload::NanOutputs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BadUpload::HugeInput => "upload: model declaring a 1x1x65535x65535 input",
            BadUpload::Chain => "upload: 100,000-node chain",
            BadUpload::GzipBomb => "upload: gzip bomb (.tar.gz, 100 MiB of zeros)",
            BadUpload::NanOutputs => "upload: model with NaN outputs",
        }
    }

    /// What the refusal must say (the file and field).
    pub fn expect(self) -> &'static [&'static str] {
        match self {
            BadUpload::HugeInput => &["model.onnx", "dimension 2 is 65535"],
            BadUpload::Chain => &["model.onnx", "graph.node"],
            BadUpload::GzipBomb => &["bomb.tar.gz", "unpacks to more than"],
            BadUpload::NanOutputs => &["non-finite"],
        }
    }

    /// The upload's files.
    pub fn files(self) -> Vec<(&'static str, Vec<u8>)> {
        let meta = hostile::metadata(1.0);
        match self {
            BadUpload::HugeInput => vec![
                ("model.onnx", hostile::huge_input_model()),
                ("model_metadata.json", meta),
            ],
            BadUpload::Chain => vec![
                ("model.onnx", hostile::chain_model(100_000)),
                ("model_metadata.json", meta),
            ],
            BadUpload::GzipBomb => vec![("bomb.tar.gz", hostile::gzip_bomb(100 << 20))],
            BadUpload::NanOutputs => vec![
                ("model.onnx", hostile::nan_model()),
                ("model_metadata.json", meta),
            ],
        }
    }
}

/// Upload `kind` through `phone` while `car` drives: refused naming the
/// file and field, the wire driven by the old model throughout (never
/// neutral, still changing), the daemon alive. `Outcome::ms` is the time
/// the refusal took.
pub fn bad_upload(
    car: &mut Car,
    phone: &mut Phone,
    kind: BadUpload,
    n: usize,
) -> Result<Outcome, String> {
    let files = kind.files();
    let parts: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let watch = WireWatch::start(car);
    let t = Instant::now();
    let r = phone
        .upload(&format!("bad-{n}"), &parts)
        .map_err(io(kind.name()))?;
    let took = t.elapsed();
    // The old model must go on driving after the refusal too.
    std::thread::sleep(Duration::from_millis(1000));
    let wire = watch.stop();
    if !car.alive() {
        return Err(format!(
            "{}: the daemon died: {}",
            kind.name(),
            car.stderr()
        ));
    }
    if r.status == 200 || !kind.expect().iter().all(|e| r.body.contains(e)) {
        return Err(format!(
            "{}: expected a refusal naming {:?}, got {} {}",
            kind.name(),
            kind.expect(),
            r.status,
            r.body
        ));
    }
    if wire.neutral > 0 || wire.throttle_changes < 3 {
        return Err(format!(
            "{}: the old model did not keep driving: {wire:?}",
            kind.name()
        ));
    }
    let st = phone.get("/api/status").map_err(io("status"))?;
    let model = st.json()["model"].clone();
    if model["state"] == "loaded"
        && model["requested"]
            .as_str()
            .is_some_and(|p| p.contains("bad-"))
    {
        return Err(format!("{}: the model was loaded: {model}", kind.name()));
    }
    Ok(Outcome {
        ms: took.as_secs_f64() * 1e3,
        ended: format!(
            "running; refused {}; wire: {} throttle / {} steering changes, never neutral",
            r.status, wire.throttle_changes, wire.steering_changes
        ),
    })
}

/// Every hostile upload `runs` times against one driving daemon.
pub fn bad_uploads(runs: usize) -> Result<Vec<(BadUpload, Vec<Outcome>)>, String> {
    let mut car = Car::lap_web("", &[]);
    car.wait_driving(Duration::from_secs(60))?;
    let mut phone = car.phone()?;
    let mut out = Vec::new();
    for kind in BadUpload::ALL {
        let mut v = Vec::new();
        for i in 0..runs {
            v.push(bad_upload(
                &mut car,
                &mut phone,
                kind,
                out.len() * runs + i,
            )?);
        }
        out.push((kind, v));
    }
    stop_daemon(&mut car, "after the uploads")?;
    Ok(out)
}

/// The slow model: 3x3 convolutions, `SLOW_CHANNELS` wide, `SLOW_LAYERS`
/// deep, over the full 160x120 frame.
pub const SLOW_CHANNELS: i64 = 64;
pub const SLOW_LAYERS: usize = 8;

/// A model valid in every respect but far too slow for the car, uploaded and
/// loaded through the web UI while the car drives: the check child passes
/// it (it has no time limit per inference below its 90 s wall clock), the
/// loop then hangs inside inference, and the supervisor must write neutral.
/// `Outcome::ms`: from the start of the tick that hung (the record log) to
/// neutral on the wire; `ended` carries the phone's status text.
pub fn hung_stage() -> Result<Outcome, String> {
    const WHAT: &str = "hung stage (slow model)";
    let out = tempfile::tempdir().unwrap();
    let rec = out.path().join("rec");
    let mut car = Car::lap_web("", &["--record", rec.to_str().unwrap()]);
    car.wait_driving(Duration::from_secs(60))?;
    let mut phone = car.phone()?;
    let onnx = hostile::slow_model(SLOW_CHANNELS, SLOW_LAYERS);
    let meta = hostile::metadata(1.0);
    let r = phone
        .upload(
            "slow",
            &[("model.onnx", &onnx), ("model_metadata.json", &meta)],
        )
        .map_err(io(WHAT))?;
    if r.status != 200 {
        return Err(format!("{WHAT}: upload refused: {} {}", r.status, r.body));
    }
    let r = phone
        .send(
            "POST",
            "/api/models/slow/load",
            Some("application/json"),
            b"",
        )
        .map_err(io(WHAT))?;
    if r.status != 200 {
        return Err(format!("{WHAT}: load refused: {} {}", r.status, r.body));
    }
    // The loader checks it again in the child, then hands it to the loop.
    let t = Instant::now();
    loop {
        let s = phone.get("/api/status").map_err(io(WHAT))?.json();
        match s["model"]["state"].as_str() {
            Some("loaded") => break,
            Some("error") => return Err(format!("{WHAT}: the loader refused it: {s}")),
            _ if t.elapsed() > Duration::from_secs(120) => {
                return Err(format!("{WHAT}: never loaded: {s}"))
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    let neutral = car.wait_neutral(Duration::from_secs(10)).ok_or_else(|| {
        format!(
            "{WHAT}: throttle still {} 10 s after the swap",
            car.throttle()
        )
    })?;
    // The failsafe writes throttle first, then steering (a read between the
    // truncate and the write sees an empty file).
    let t = Instant::now();
    while car.steering() != NEUTRAL_STEERING {
        if t.elapsed() > Duration::from_millis(100) {
            return Err(format!("{WHAT}: steering left at {:?}", car.steering()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // What the phone shows, once the loop has come back from inference.
    let t = Instant::now();
    let event = loop {
        let s = phone.get("/api/status").map_err(io(WHAT))?.json();
        let ev = s["last_event"].as_str().unwrap_or("").to_string();
        if s["mode"] == "stopped" && ev.contains("missed its deadline") {
            break ev;
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("{WHAT}: the phone was not told: {s}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if car.throttle() != NEUTRAL_THROTTLE {
        return Err(format!("{WHAT}: the car drove again: {}", car.throttle()));
    }
    let ended = stop_daemon(&mut car, WHAT)?;
    let log = std::fs::read_to_string(rec.join("log.jsonl"))
        .map_err(|e| format!("{WHAT}: no record log: {e}"))?;
    let ticks: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let hung = ticks
        .iter()
        .find(|v| v["latency_us"]["inference"].as_f64().unwrap_or(0.0) >= 500_000.0)
        .ok_or_else(|| format!("{WHAT}: no slow inference in the record log"))?;
    let inference_ms = hung["latency_us"]["inference"].as_f64().unwrap_or(0.0) / 1e3;
    let fault = hung["tick_ns"].as_u64().unwrap_or(0);
    if neutral < fault {
        return Err(format!("{WHAT}: neutral before the slow tick began"));
    }
    Ok(Outcome {
        ms: (neutral - fault) as f64 / 1e6,
        ended: format!("alive, stopped (one inference {inference_ms:.0} ms); phone: \"{event}\"; {ended} on SIGTERM"),
    })
}

/// The e-stop was accepted (200) and the phone's status shows the latch
/// (the answer itself is the loop's last sample, from before it applied).
fn estop_shown(phone: &mut Phone, r: &web::Response) -> Result<(), String> {
    if r.status != 200 {
        return Err(format!("e-stop answered {} {}", r.status, r.body));
    }
    let t = Instant::now();
    loop {
        let s = phone.get("/api/status").map_err(|e| e.to_string())?.json();
        if s["estop"] == true {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(2) {
            return Err(format!("the status does not show the e-stop: {s}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The flooding threads stand for other machines on the car's network:
/// here they share the daemon's two cores, so they run at the lowest
/// priority rather than outrank the web server (nice 10) for the CPU.
fn attacker_priority() {
    // SAFETY: plain syscalls on this thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Reset the e-stop and wait until the loop has applied it (the phone's
/// Start is refused while the status still shows the latch).
fn reset_estop(phone: &mut Phone) -> Result<(), String> {
    let r = phone
        .command(serde_json::json!({"cmd": "reset_e_stop"}))
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("reset refused: {} {}", r.status, r.body));
    }
    let t = Instant::now();
    loop {
        let s = phone.get("/api/status").map_err(|e| e.to_string())?.json();
        if s["estop"] == false {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(2) {
            return Err(format!("the e-stop does not clear: {s}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Several drive WebSockets (the server's cap, 4) flood manual commands as
/// fast as they can while the car drives in manual mode on them; the e-stop
/// over HTTP, `runs` times (reset and driving again between them). Time
/// from the e-stop request to neutral on the wire.
pub fn estop_drive_flood(runs: usize) -> Result<Vec<Outcome>, String> {
    const WHAT: &str = "e-stop through a drive flood";
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut car = Car::lap_web("", &[]);
    car.wait_driving(Duration::from_secs(60))?;
    let mut phone = car.phone()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut floods = Vec::new();
    for i in 0..4 {
        let mut ws = phone.drive_socket().map_err(io(WHAT))?;
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        floods.push(std::thread::spawn(move || {
            attacker_priority();
            let msg = format!("{{\"s\":{:.2},\"t\":0.5}}", 0.1 * i as f32);
            while !stop.load(Ordering::Relaxed) && ws.send_text(&msg).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut out = Vec::new();
    let mut result = Ok(());
    for _ in 0..runs {
        let manual = serde_json::json!({"cmd": "set_mode", "mode": "manual"});
        let r = phone.command(manual).map_err(io(WHAT))?;
        if r.status != 200 {
            result = Err(format!(
                "{WHAT}: manual mode refused: {} {}",
                r.status, r.body
            ));
            break;
        }
        if let Err(e) = car.wait_driving(Duration::from_secs(10)) {
            result = Err(format!("{WHAT}: the flood did not drive: {e}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        let before = sent.load(Ordering::Relaxed);
        let t0 = monotonic_ns();
        let r = phone.estop().map_err(io(WHAT))?;
        let answered_ms = (monotonic_ns() - t0) as f64 / 1e6;
        let Some(at) = car.wait_neutral(Duration::from_secs(2)) else {
            result = Err(format!(
                "{WHAT}: throttle still {} 2 s after the e-stop",
                car.throttle()
            ));
            break;
        };
        if let Err(e) = estop_shown(&mut phone, &r) {
            result = Err(format!("{WHAT}: {e}"));
            break;
        }
        // Latched: the flood goes on, the wire stays neutral.
        let watch = WireWatch::start(&car);
        std::thread::sleep(Duration::from_millis(300));
        let w = watch.stop();
        let during = sent.load(Ordering::Relaxed) - before;
        if w.neutral != w.samples {
            result = Err(format!(
                "{WHAT}: the flood drove through the latched e-stop: {w:?}"
            ));
            break;
        }
        out.push(Outcome {
            ms: (at.saturating_sub(t0)) as f64 / 1e6,
            ended: format!("running, latched; e-stop answered in {answered_ms:.1} ms ({during} drive messages in the 0.3 s after)"),
        });
        if let Err(e) = reset_estop(&mut phone) {
            result = Err(format!("{WHAT}: {e}"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        let _ = f.join();
    }
    result?;
    stop_daemon(&mut car, WHAT)?;
    Ok(out)
}

/// Connections held open by [`estop_connection_flood`].
pub const FLOOD_CONNECTIONS: usize = 400;
/// The server's connection cap in that test (`[web] max_connections`).
pub const FLOOD_CAP: usize = 64;

/// A phone logged in first; then a thread keeps `FLOOD_CONNECTIONS`
/// connections open against a cap of `FLOOD_CAP`, replacing them
/// continuously: half idle, half slowloris (request headers that never
/// end); the e-stop through the phone's session, `runs` times (reset and
/// autonomous again between them). Time from the e-stop request to
/// neutral; the page must still answer the phone.
pub fn estop_connection_flood(runs: usize) -> Result<Vec<Outcome>, String> {
    const WHAT: &str = "e-stop through a connection flood";
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut car = Car::lap_web(&format!("max_connections = {FLOOD_CAP}\n"), &[]);
    car.wait_driving(Duration::from_secs(60))?;
    let mut phone = car.phone()?;
    let r = phone.get("/api/status").map_err(io(WHAT))?;
    if r.status != 200 {
        return Err(format!("{WHAT}: status {} {}", r.status, r.body));
    }
    let addr = phone.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
        std::thread::spawn(move || {
            attacker_priority();
            let mut held = std::collections::VecDeque::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                    if i % 2 == 1 {
                        let _ = s.write_all(b"GET /drive HTTP/1.1\r\nHost: car\r\nX-Slow: ");
                    }
                    held.push_back(s);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() > FLOOD_CONNECTIONS {
                    held.pop_front();
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut out = Vec::new();
    let mut result = Ok(());
    for _ in 0..runs {
        // Let the flood fill the table well past the cap.
        let start = opened.load(Ordering::Relaxed);
        while opened.load(Ordering::Relaxed) < start + FLOOD_CONNECTIONS as u64 {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = car.wait_driving(Duration::from_secs(10)) {
            result = Err(format!("{WHAT}: not driving: {e}"));
            break;
        }
        let t0 = monotonic_ns();
        let r = match phone.estop() {
            Ok(r) => r,
            Err(e) => {
                result = Err(format!("{WHAT}: the phone's e-stop failed: {e}"));
                break;
            }
        };
        let Some(at) = car.wait_neutral(Duration::from_secs(2)) else {
            result = Err(format!(
                "{WHAT}: throttle still {} 2 s after the e-stop",
                car.throttle()
            ));
            break;
        };
        if let Err(e) = estop_shown(&mut phone, &r) {
            result = Err(format!("{WHAT}: {e}"));
            break;
        }
        let t = Instant::now();
        let page = phone.get("/drive").map_err(io(WHAT))?;
        let page_ms = t.elapsed().as_secs_f64() * 1e3;
        if page.status != 200 || !page.body.contains("<html") {
            result = Err(format!("{WHAT}: the page did not answer: {}", page.status));
            break;
        }
        out.push(Outcome {
            ms: (at.saturating_sub(t0)) as f64 / 1e6,
            ended: format!(
                "running; page answered the phone in {page_ms:.1} ms ({} connections opened so far)",
                opened.load(Ordering::Relaxed)
            ),
        });
        if let Err(e) = reset_estop(&mut phone) {
            result = Err(format!("{WHAT}: {e}"));
            break;
        }
        let auto = serde_json::json!({"cmd": "set_mode", "mode": "autonomous"});
        let r = phone.command(auto).map_err(io(WHAT))?;
        if r.status != 200 {
            result = Err(format!("{WHAT}: {} {}", r.status, r.body));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    result?;
    stop_daemon(&mut car, WHAT)?;
    Ok(out)
}

/// Bounds, ms (ARCHITECTURE.md's safety table).
/// A hung stage: the supervisor's stall bound.
pub const HUNG_BOUND_MS: f64 = 200.0;
/// The e-stop from the request leaving the phone to neutral on the wire.
pub const ESTOP_BOUND_MS: f64 = 50.0;
/// A hostile upload is refused within this (the check child included).
pub const UPLOAD_BOUND_MS: f64 = 10_000.0;
