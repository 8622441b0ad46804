//! The control loop with injected faults: a source that stalls, inference
//! that fails, commands from "the phone", a model swap with a bad model.
//! The wheels record every write; the assertions are about what reached
//! the wire and when.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use car_control::arbiter::{DriveMode, Mode};
use car_control::brain::{Brain, BrainError, MappedAction, StageTimes};
use car_control::commands::{Command, Shared, COMMAND_QUEUE};
use car_control::control::{ControlLoop, EndReason, LoopClock, LoopOptions};
use car_control::frame::{Frame, FrameSource, PixelFormat, SourceError};
use car_control::wheels::{Wheels, WheelsError};
use servo_driver::Pulses;

const MID_S: u32 = 1_450_000;
const MID_T: u32 = 1_500_000;

/// Frames on a simulated 15 Hz clock; `stall_from..stall_to` (frame
/// indices) deliver nothing (timeouts) while the clock runs on.
struct ScriptedSource {
    n: u64,
    end: u64,
    stall: std::ops::Range<u64>,
    buf: Vec<u8>,
    /// Simulated time, ns; advanced 66.7 ms per frame or per timeout.
    t: u64,
}

impl FrameSource for ScriptedSource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame<'_>, SourceError> {
        if self.n >= self.end {
            return Err(SourceError::EndOfStream);
        }
        let i = self.n;
        self.n += 1;
        self.t += 66_666_667;
        if self.stall.contains(&i) {
            return Err(SourceError::Timeout(timeout));
        }
        Ok(Frame {
            data: &self.buf,
            format: PixelFormat::Gray8,
            width: 4,
            height: 4,
            timestamp_ns: self.t,
            seq: i,
        })
    }
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn monotonic_timestamps(&self) -> bool {
        false
    }
}

/// Always "full throttle, straight", scaled by max speed; fails on the
/// frame indices in `fail`.
struct FixedBrain {
    fail: std::ops::Range<u64>,
    name: &'static str,
    throttle: f32,
}

impl Brain for FixedBrain {
    fn decide(
        &mut self,
        f: &Frame<'_>,
        scale: f32,
        _t: &mut StageTimes,
    ) -> Result<MappedAction, BrainError> {
        if self.fail.contains(&f.seq) {
            return Err(BrainError("injected inference failure".into()));
        }
        Ok(MappedAction {
            index: Some(0),
            steering_angle_deg: 0.0,
            speed_mps: 1.0,
            steering: 0.0,
            throttle: self.throttle * scale,
        })
    }
    fn backend(&self) -> &str {
        "test"
    }
    fn origin(&self) -> &str {
        self.name
    }
}

/// Records (frame-clock time is not known here, so the write index) and pulses.
#[derive(Clone, Default)]
struct Wire {
    writes: Arc<Mutex<Vec<(f32, f32, bool)>>>,
}

impl Wheels for Wire {
    fn drive(&mut self, s: f32, t: f32) -> Result<Pulses, WheelsError> {
        self.writes.lock().unwrap().push((s, t, false));
        Ok(Pulses {
            steering_ns: (MID_S as f32 + s * 250_000.0) as u32,
            throttle_ns: (MID_T as f32 + t * 100_000.0) as u32,
        })
    }
    fn pulses(&mut self, s: Option<u32>, t: Option<u32>) -> Result<Pulses, WheelsError> {
        Ok(Pulses {
            steering_ns: s.unwrap_or(MID_S),
            throttle_ns: t.unwrap_or(MID_T),
        })
    }
    fn neutral(&mut self) -> Result<Pulses, WheelsError> {
        self.writes.lock().unwrap().push((0.0, 0.0, true));
        Ok(Pulses {
            steering_ns: MID_S,
            throttle_ns: MID_T,
        })
    }
    fn backend(&self) -> &'static str {
        "wire"
    }
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::new(4096, 64, Arc::new(AtomicBool::new(false))))
}

fn opts() -> LoopOptions {
    LoopOptions {
        clock: LoopClock::Source,
        // On the source clock a timeout counts as this much time: one frame period.
        poll: Duration::from_nanos(66_666_667),
        publish_frames: false,
        ..LoopOptions::default()
    }
}

fn autonomous(lp: &mut ControlLoop, pct: u8) {
    lp.arbiter.select(0, DriveMode::Autonomous);
    lp.arbiter.set_max_speed(pct);
    lp.arbiter.start(0).unwrap();
}

#[test]
fn stalled_camera_goes_neutral_within_200ms_and_recovers() {
    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 60,
        stall: 20..35, // one second without frames
        buf: vec![0; 16],
        t: 0,
    };
    let wire = Wire::default();
    let brain = FixedBrain {
        fail: 0..0,
        name: "fixed",
        throttle: 1.0,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        Some(Box::new(brain)),
        Box::new(wire.clone()),
        sh.clone(),
        opts(),
    );
    autonomous(&mut lp, 50);
    let s = lp.run();
    assert_eq!(s.end, EndReason::EndOfStream);
    let mut v = Vec::new();
    sh.telemetry.read_since(0, &mut v);
    // Ticks 0..20 have frames and drive at 0.5.
    assert!(v[5].wire_throttle > 0.49);
    // The stall starts at tick 20 (t = 21 x 66.7 ms); the last action was at
    // tick 19. Neutral must be on the wire no later than 200 ms after it:
    // by tick 22 (19 + 3 x 66.7 ms = 200 ms) at the latest.
    let last_action_ns = v[19].tick_ns;
    let first_neutral = v[20..35]
        .iter()
        .find(|s| s.wire_throttle == 0.0 && s.stalled)
        .expect("went neutral during the stall");
    assert!(first_neutral.tick_ns - last_action_ns <= 200_000_000 + 66_666_667);
    // Every stalled tick after the bound is neutral.
    for s in &v[23..35] {
        assert_eq!(s.wire_throttle, 0.0);
        assert_eq!(s.mode(), Mode::Autonomous);
    }
    // Frames flow again: driving resumes without any user action.
    assert!(v[40].wire_throttle > 0.49 && !v[40].stalled);
    // Exit wrote neutral last.
    assert_eq!(
        *wire.writes.lock().unwrap().last().unwrap(),
        (0.0, 0.0, true)
    );
    assert_eq!(s.frames, 45);
}

#[test]
fn failing_inference_goes_neutral_within_bound_and_is_counted() {
    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 40,
        stall: 0..0,
        buf: vec![0; 16],
        t: 0,
    };
    let brain = FixedBrain {
        fail: 10..25,
        name: "flaky",
        throttle: 1.0,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        Some(Box::new(brain)),
        Box::new(Wire::default()),
        sh.clone(),
        opts(),
    );
    autonomous(&mut lp, 100);
    let s = lp.run();
    assert_eq!(s.inference_errors, 15);
    let mut v = Vec::new();
    sh.telemetry.read_since(0, &mut v);
    // Failures from frame 10; last good action at frame 9. Frames 10-12 are
    // within 200 ms of it (held), frame 13 (+266 ms) must be neutral.
    for s in &v[13..25] {
        assert_eq!(
            s.wire_throttle, 0.0,
            "tick {} drove {}",
            s.tick, s.wire_throttle
        );
        assert!(s.stalled);
    }
    assert!(v[30].wire_throttle > 0.99);
}

#[test]
fn commands_from_the_queue_start_stop_and_estop() {
    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 1_000_000,
        stall: 0..0,
        buf: vec![0; 16],
        t: 0,
    };
    let brain = FixedBrain {
        fail: 0..0,
        name: "fixed",
        throttle: 1.0,
    };
    let lp = ControlLoop::new(
        Box::new(src),
        Some(Box::new(brain)),
        Box::new(Wire::default()),
        sh.clone(),
        opts(),
    );
    let h = lp.spawn().unwrap();
    let wait_for = |f: &dyn Fn(&car_control::telemetry::Sample) -> bool| {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(s) = sh.telemetry.latest() {
                if f(&s) {
                    return s;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "condition not reached"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Stopped at 0 %: nothing moves.
    wait_for(&|s| s.tick > 10);
    assert_eq!(sh.telemetry.latest().unwrap().wire_throttle, 0.0);
    assert!(sh.send(Command::MaxSpeed(40)));
    assert!(sh.send(Command::Select(DriveMode::Autonomous)));
    assert!(sh.send(Command::Start));
    let s = wait_for(&|s| s.wire_throttle > 0.0);
    assert!((s.wire_throttle - 0.4).abs() < 1e-6);
    assert!(sh.send(Command::EStop));
    wait_for(&|s| s.estop && s.wire_throttle == 0.0);
    // Start is refused while latched.
    assert!(sh.send(Command::Start));
    let after = sh.telemetry.written() + 20;
    let s = wait_for(&|s| s.tick > after);
    assert!(s.estop && s.wire_throttle == 0.0 && s.mode() == Mode::Stopped);
    assert!(sh.send(Command::ResetEStop));
    assert!(sh.send(Command::Start));
    wait_for(&|s| !s.estop && s.wire_throttle > 0.0);
    assert!(sh.send(Command::Shutdown));
    let sum = h.join().unwrap();
    assert_eq!(sum.end, EndReason::Signal);
    assert_eq!(sum.last_pulses.unwrap().throttle_ns, MID_T);
}

#[test]
fn manual_commands_expire_after_250ms() {
    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 100,
        stall: 0..0,
        buf: vec![0; 16],
        t: 0,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        None,
        Box::new(Wire::default()),
        sh.clone(),
        opts(),
    );
    lp.arbiter.set_max_speed(100);
    lp.arbiter.select(0, DriveMode::Manual);
    lp.arbiter.start(0).unwrap();
    // One command before the first tick; then the phone goes quiet.
    assert!(sh.send(Command::Manual {
        steering: 0.5,
        throttle: 0.7,
        received_ns: 0
    }));
    lp.run();
    let mut v = Vec::new();
    sh.telemetry.read_since(0, &mut v);
    // The command arrived at t=0 (loop clock = frame time, first frame at 66.7 ms).
    assert!((v[0].wire_throttle - 0.7).abs() < 1e-6);
    for s in &v {
        let age = s.tick_ns;
        if age > 250_000_000 {
            assert_eq!(
                s.wire_throttle, 0.0,
                "still driving {} ns after the last command",
                age
            );
        }
    }
}

#[test]
fn a_stick_flood_never_refuses_a_mode_change_and_the_newest_position_drives() {
    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 30,
        stall: 0..0,
        buf: vec![0; 16],
        t: 0,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        None,
        Box::new(Wire::default()),
        sh.clone(),
        opts(),
    );
    lp.arbiter.set_max_speed(100);
    // Far more stick positions than the command queue holds, all before
    // the loop's first tick (four phones flooding a busy car).
    for i in 0..(10 * COMMAND_QUEUE) {
        sh.manual(0.0, (i % 7) as f32 * 0.1, 0);
    }
    sh.manual(-0.25, 0.6, 0);
    // The mode change and start still get into the queue.
    assert!(
        sh.send(Command::Select(DriveMode::Manual)),
        "mode change refused"
    );
    assert!(sh.send(Command::Start), "start refused");
    lp.run();
    let mut v = Vec::new();
    sh.telemetry.read_since(0, &mut v);
    // The first tick applied the queue, then the newest stick position.
    assert!((v[0].wire_throttle - 0.6).abs() < 1e-6, "{:?}", v[0]);
    assert!((v[0].wire_steering + 0.25).abs() < 1e-6, "{:?}", v[0]);
    assert_eq!(
        sh.commands_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn model_swap_takes_effect_between_frames_and_old_model_is_handed_back() {
    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 1_000_000,
        stall: 0..0,
        buf: vec![0; 16],
        t: 0,
    };
    let first = FixedBrain {
        fail: 0..0,
        name: "first",
        throttle: 0.3,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        Some(Box::new(first)),
        Box::new(Wire::default()),
        sh.clone(),
        opts(),
    );
    autonomous(&mut lp, 100);
    let h = lp.spawn().unwrap();
    while sh.telemetry.latest().is_none_or(|s| s.wire_throttle == 0.0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!((sh.telemetry.latest().unwrap().wire_throttle - 0.3).abs() < 1e-6);
    let second: Box<dyn Brain> = Box::new(FixedBrain {
        fail: 0..0,
        name: "second",
        throttle: 0.8,
    });
    assert!(sh.models_in.enqueue(second).is_ok());
    let t0 = std::time::Instant::now();
    while (sh.telemetry.latest().unwrap().wire_throttle - 0.8).abs() > 1e-6 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1));
    }
    // The loop handed the old model back to be dropped elsewhere.
    let old = sh.models_out.dequeue().expect("old model handed back");
    assert_eq!(old.origin(), "first");
    sh.request_stop();
    h.join().unwrap();
}

#[test]
fn bad_model_through_the_loader_keeps_the_old_one() {
    // The real loader thread with a real (tract) backend: a folder whose
    // metadata does not match the graph is rejected before the loop sees it.
    let backend = match car_control::pipeline::init_backend(policy::BackendChoice::Tract, "") {
        Ok(b) => b,
        Err(e) => panic!("tract backend: {e}"),
    };
    let sh = shared();
    let loader = car_control::pipeline::ModelLoader::start(sh.clone(), backend, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("model.onnx"),
        car_control::pipeline::BUNDLED_ONNX,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model_metadata.json"),
        r#"{"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": ["FRONT_FACING_CAMERA"]}"#,
    )
    .unwrap();
    assert!(loader.request(dir.path().to_path_buf()));
    let t0 = std::time::Instant::now();
    loop {
        let st = sh.model_status.lock().unwrap().clone();
        if st.state == car_control::commands::ModelState::Error {
            let e = st.error.unwrap();
            assert!(e.contains("model.onnx") || e.contains("output"), "{e}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no verdict: {st:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing was handed to the loop.
    assert!(sh.models_in.dequeue().is_none());
    // A good one (the bundled model) is handed over.
    std::fs::write(
        dir.path().join("model_metadata.json"),
        car_control::pipeline::BUNDLED_METADATA,
    )
    .unwrap();
    assert!(loader.request(dir.path().to_path_buf()));
    let t0 = std::time::Instant::now();
    let b = loop {
        if let Some(b) = sh.models_in.dequeue() {
            break b;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(b.origin().contains(dir.path().to_str().unwrap()));
}

#[test]
fn recorder_in_the_loop_never_blocks_and_counts_drops() {
    let sh = shared();
    let dir = tempfile::tempdir().unwrap();
    let rec = car_control::recorder::Recorder::start(dir.path(), 2, 64, 80).unwrap();
    rec.set_write_delay(Duration::from_millis(30));
    let src = ScriptedSource {
        n: 0,
        end: 200,
        stall: 0..0,
        buf: vec![100; 16],
        t: 0,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        None,
        Box::new(Wire::default()),
        sh.clone(),
        opts(),
    );
    lp.recorder = Some(rec);
    let s = lp.run();
    let r = s.record.unwrap();
    assert_eq!(s.frames, 200);
    // The loop ran all 200 frames far faster than the "disk" (30 ms each):
    // most frames were dropped and counted, none lost silently.
    assert_eq!(r.recorded + r.dropped, 200);
    assert!(r.dropped > 150, "{r:?}");
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jpg")
        })
        .count() as u64;
    assert_eq!(files, r.recorded);
}

#[test]
fn commands_the_driver_did_not_take_reach_telemetry_and_the_summary() {
    // The real driver on its simulated output: a NaN steering and an
    // out-of-range throttle are each replaced or clamped, and counted.
    let actuator = servo_driver::ActuatorConfig {
        backend: servo_driver::BackendKind::Sim,
        ..Default::default()
    };
    let driver = servo_driver::config::open_with_calibration(
        &actuator,
        servo_driver::Calibration::stock(),
        None,
    )
    .unwrap();
    let mut wheels = car_control::pipeline::ServoWheels { driver, actuator };
    wheels.drive(f32::NAN, 2.0).unwrap();
    assert_eq!(wheels.bad_commands(), 2);

    let sh = shared();
    let src = ScriptedSource {
        n: 0,
        end: 10,
        stall: 0..0,
        buf: vec![0; 16],
        t: 0,
    };
    let brain = FixedBrain {
        fail: 0..0,
        name: "fixed",
        throttle: 1.0,
    };
    let mut lp = ControlLoop::new(
        Box::new(src),
        Some(Box::new(brain)),
        Box::new(wheels),
        sh.clone(),
        opts(),
    );
    autonomous(&mut lp, 50);
    let s = lp.run();
    // The arbiter only ever sends finite, in-range commands: the count
    // stays at what the driver saw before, in every tick and at the end.
    assert_eq!(s.bad_commands, 2);
    let mut v = Vec::new();
    sh.telemetry.read_since(0, &mut v);
    assert_eq!(v.len(), 10);
    assert!(v.iter().all(|t| t.bad_commands == 2), "{v:?}");
}
