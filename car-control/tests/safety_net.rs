//! The rules that do not depend on the control thread answering: the
//! supervisor (a hung stage), an engine that panics, the e-stop's own path
//! and the dead-man clock. Real-time loop, the real servo driver on a fake
//! stock sysfs PWM board; the test reads the throttle's `duty_cycle` file
//! every millisecond, as a scope on the ESC's wire would.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use car_control::arbiter::{DriveMode, Mode};
use car_control::brain::{Brain, BrainError, MappedAction, StageTimes};
use car_control::commands::{event, Command, Shared};
use car_control::control::{ControlLoop, LoopClock, LoopOptions};
use car_control::frame::{Frame, FrameSource, PixelFormat, SourceError};
use car_control::pipeline::ServoWheels;

/// Stock calibration: throttle neutral 1446000 ns, full forward 1311000 ns.
const NEUTRAL: &str = "1446000";

/// A stock-board-like sysfs tree (pwmchip0 on 0000:00:17.0, channels 0 and
/// 1 exported) and the servo driver on it.
struct Board {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Board {
    fn new() -> Board {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sys");
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
        Board { _dir: dir, root }
    }

    fn wheels(&self) -> ServoWheels {
        let actuator = servo_driver::ActuatorConfig {
            backend: servo_driver::BackendKind::Sysfs,
            calibration: self.root.join("no-calibration.json"),
            sysfs: servo_driver::config::SysfsConfig {
                root: self.root.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        ServoWheels {
            driver: servo_driver::open(&actuator, None).unwrap(),
            actuator,
        }
    }

    fn throttle_path(&self) -> PathBuf {
        self.root.join("class/pwm/pwmchip0/pwm0/duty_cycle")
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Frames at 100 Hz in real time, monotonic timestamps.
struct Camera {
    seq: u64,
    buf: Vec<u8>,
    next: Instant,
}

impl Camera {
    fn new() -> Camera {
        Camera {
            seq: 0,
            buf: vec![0; 16],
            next: Instant::now(),
        }
    }
}

impl FrameSource for Camera {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame<'_>, SourceError> {
        let now = Instant::now();
        if self.next > now + timeout {
            std::thread::sleep(timeout);
            return Err(SourceError::Timeout(timeout));
        }
        std::thread::sleep(self.next.saturating_duration_since(now));
        self.next += Duration::from_millis(10);
        self.seq += 1;
        Ok(Frame {
            data: &self.buf,
            format: PixelFormat::Gray8,
            width: 4,
            height: 4,
            timestamp_ns: car_control::clock::monotonic_ns(),
            seq: self.seq,
        })
    }
    fn name(&self) -> &'static str {
        "test-camera"
    }
    fn monotonic_timestamps(&self) -> bool {
        true
    }
}

/// Full throttle, except on frames `bad`: there it hangs for `hang` or panics.
struct Driver {
    bad: std::ops::Range<u64>,
    hang: Option<Duration>,
    /// When the bad stage began (the fault's start, for the bound).
    fault_at: Arc<Mutex<Option<Instant>>>,
}

impl Brain for Driver {
    fn decide(
        &mut self,
        f: &Frame<'_>,
        scale: f32,
        _: &mut StageTimes,
    ) -> Result<MappedAction, BrainError> {
        if self.bad.contains(&f.seq) {
            self.fault_at
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
            match self.hang {
                Some(d) => std::thread::sleep(d),
                None => panic!("injected engine panic"),
            }
        }
        Ok(MappedAction {
            throttle: scale,
            ..MappedAction::NEUTRAL
        })
    }
    fn backend(&self) -> &str {
        "test"
    }
    fn origin(&self) -> &str {
        "test"
    }
}

/// The supervisor's neutral goes through every live driver in the process
/// (a car has one): tests that watch a wire take turns.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(4096, 64, Arc::new(AtomicBool::new(false))))
}

fn start(lp: &mut ControlLoop, mode: DriveMode) {
    let now = car_control::clock::monotonic_ns();
    lp.arbiter.select(now, mode);
    lp.arbiter.set_max_speed(100);
    lp.arbiter.start(now).unwrap();
}

fn real_time() -> LoopOptions {
    LoopOptions {
        clock: LoopClock::Monotonic,
        publish_frames: false,
        ..LoopOptions::default()
    }
}

/// The loop on its own thread, autonomous at 100 %, for `ms` milliseconds.
fn drive(
    board: &Board,
    sh: &Arc<Shared>,
    brain: Driver,
    ms: u64,
) -> std::thread::JoinHandle<car_control::control::Summary> {
    let mut lp = ControlLoop::new(
        Box::new(Camera::new()),
        Some(Box::new(brain)),
        Box::new(board.wheels()),
        sh.clone(),
        LoopOptions {
            duration: Some(Duration::from_millis(ms)),
            ..real_time()
        },
    );
    start(&mut lp, DriveMode::Autonomous);
    lp.spawn().unwrap()
}

/// Wait until full forward (stock calibration: 1311000 ns) is on the wire.
fn wait_full_throttle(board: &Board) {
    let t = Instant::now();
    while read(&board.throttle_path()) != "1311000" {
        assert!(t.elapsed() < Duration::from_secs(5), "never drove");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Poll the throttle file every millisecond until `until` says stop; the
/// instant it first read neutral after `since` was set.
fn watch(board: &Board, since: &Mutex<Option<Instant>>, limit: Duration) -> Option<Duration> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let s = *since.lock().unwrap();
        if let Some(t0) = s {
            if read(&board.throttle_path()) == NEUTRAL {
                return Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn a_hung_stage_ends_in_neutral_within_the_stall_bound_and_stops_the_car() {
    let _turn = one_at_a_time();
    servo_driver::failsafe::install_panic_hook();
    let board = Board::new();
    let sh = shared();
    let fault_at = Arc::new(Mutex::new(None));
    let brain = Driver {
        bad: 30..31,
        hang: Some(Duration::from_millis(1500)),
        fault_at: fault_at.clone(),
    };
    let h = drive(&board, &sh, brain, 2500);
    wait_full_throttle(&board);
    let took = watch(&board, &fault_at, Duration::from_secs(3)).expect("neutral during the hang");
    eprintln!("hung stage -> neutral on the wire: {took:?}");
    assert!(
        took <= Duration::from_millis(200),
        "neutral {took:?} after the stage hung (bound 200 ms)"
    );
    // Still hung (the stage sleeps 1.5 s): the wire stays neutral.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(&board.throttle_path()), NEUTRAL);
    let s = h.join().unwrap();
    // When the loop ran again it stopped the car rather than drive on.
    assert_eq!(s.mode, Mode::Stopped);
    assert_eq!(sh.supervisor_trips.load(Ordering::Relaxed), 1);
    assert_eq!(sh.last_event.load(Ordering::Relaxed), event::LOOP_STALLED);
    assert_eq!(read(&board.throttle_path()), NEUTRAL);
}

#[test]
fn an_engine_panic_is_an_inference_error_and_a_good_frame_recovers_the_car() {
    let _turn = one_at_a_time();
    servo_driver::failsafe::install_panic_hook();
    let board = Board::new();
    let sh = shared();
    let fault_at = Arc::new(Mutex::new(None));
    // Panics on every frame for ~0.5 s (frames 30-79), then drives again.
    let brain = Driver {
        bad: 30..80,
        hang: None,
        fault_at: fault_at.clone(),
    };
    let h = drive(&board, &sh, brain, 1500);
    let took = watch(&board, &fault_at, Duration::from_secs(5)).expect("neutral after the panics");
    eprintln!("engine panic -> neutral on the wire: {took:?}");
    assert!(took <= Duration::from_millis(200 + 20), "{took:?}");
    let s = h.join().unwrap();
    assert!(s.inference_errors >= 40, "{}", s.inference_errors);
    // Not latched: after the panics the same model drove again.
    let mut v = Vec::new();
    sh.telemetry.read_since(0, &mut v);
    assert!(
        v.iter().rev().take(20).all(|x| x.wire_throttle == 1.0),
        "drives again after the engine recovered"
    );
    assert!(v.iter().any(|x| x.stalled), "the UI was told (stalled)");
    assert_eq!(s.mode, Mode::Autonomous);
    assert_eq!(sh.supervisor_trips.load(Ordering::Relaxed), 0);
}

#[test]
fn the_estop_gets_through_a_full_command_queue() {
    let _turn = one_at_a_time();
    let board = Board::new();
    let sh = shared();
    let brain = Driver {
        bad: 0..0,
        hang: None,
        fault_at: Arc::new(Mutex::new(None)),
    };
    let h = drive(&board, &sh, brain, 1500);
    wait_full_throttle(&board);
    // A drive socket floods the queue faster than the loop drains it.
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let flood = {
        let (sh, stop, refused) = (sh.clone(), stop.clone(), refused.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let c = Command::Manual {
                    steering: 0.0,
                    throttle: 1.0,
                    received_ns: 0,
                };
                if !sh.send(c) {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    while refused.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let pressed = Mutex::new(Some(Instant::now()));
    sh.estop();
    let took = watch(&board, &pressed, Duration::from_secs(2)).expect("e-stop reached the wire");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let s = h.join().unwrap();
    eprintln!("e-stop through a flooded queue -> neutral: {took:?}");
    assert!(s.estop, "e-stop latched");
    assert!(took <= Duration::from_millis(50), "{took:?}");
}

#[test]
fn the_dead_man_counts_from_when_the_command_was_received() {
    let _turn = one_at_a_time();
    let board = Board::new();
    let sh = shared();
    let mut lp = ControlLoop::new(
        Box::new(Camera::new()),
        None,
        Box::new(board.wheels()),
        sh.clone(),
        LoopOptions {
            duration: Some(Duration::from_millis(800)),
            ..real_time()
        },
    );
    start(&mut lp, DriveMode::Manual);
    // The phone's last command; the web server got it at `received`.
    let received = Instant::now();
    let received_ns = car_control::clock::monotonic_ns();
    assert!(sh.send(Command::Manual {
        steering: 0.0,
        throttle: 1.0,
        received_ns,
    }));
    let h = lp.spawn().unwrap();
    let mut drove = false;
    let mut neutral_after = None;
    while received.elapsed() < Duration::from_millis(700) {
        let v = read(&board.throttle_path());
        if v == "1311000" {
            drove = true;
        } else if drove && v == NEUTRAL {
            neutral_after = Some(received.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    h.join().unwrap();
    assert!(drove, "the manual command drove the car");
    let took = neutral_after.expect("the dead-man fired");
    eprintln!("last manual command -> neutral: {took:?}");
    assert!(
        took >= Duration::from_millis(240) && took <= Duration::from_millis(262),
        "dead-man fired {took:?} after the command was received (bound 250 ms)"
    );
}
