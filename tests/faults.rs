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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{car_runtime, write_centre_seeking_model};

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
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        fake_board(&sys);
        let model = dir.path().join("model");
        write_centre_seeking_model(&model, 2.0);
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "{source}\n[model]\npath = \"{}\"\nbackend = \"tract\"\n\
                 [actuator]\nbackend = \"sysfs\"\ncalibration = \"{}\"\n[actuator.sysfs]\nroot = \"{}\"\n\
                 [web]\naddress = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nmodels_dir = \"{}\"\n",
                model.display(),
                dir.path().join("c.json").display(),
                sys.display(),
                dir.path().join("web").display(),
                dir.path().join("models").display(),
            ),
        )
        .unwrap();
        let child = Command::new(car_runtime())
            .args(["run", "--autonomous", "--max-speed", "60", "--config"])
            .arg(&cfg)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Car { dir, sys, child }
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

    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
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
