//! The control loop: one OS thread that owns the frame source, the brain
//! (preprocess + policy + action mapping), the arbiter and the wheels.
//!
//! Per tick: drain commands and ready models, wait for a frame (short
//! timeout, so stall and dead-man rules fire without frames), run the brain,
//! ask the arbiter, write the wheels, then publish telemetry, the latest
//! frame and the recording. Nothing here allocates once warm, takes a lock
//! a reader can hold, or logs except on transitions. Every exit ends in
//! neutral.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::arbiter::{Arbiter, Decision, Mode, Timeouts};
use crate::brain::{Brain, StageTimes};
use crate::clock::monotonic_ns;
use crate::commands::{Command, Shared};
use crate::frame::{FrameSource, SourceError};
use crate::notify::Notifier;
use crate::recorder::{RecordStats, Recorder};
use crate::telemetry::{LatencyStats, Sample};
use crate::wheels::Wheels;

/// Which clock the arbiter's timeouts run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopClock {
    /// CLOCK_MONOTONIC: the car, real-time simulation, replay.
    Monotonic,
    /// The frames' own timestamps: headless simulation, faster than real time.
    Source,
}

#[derive(Debug, Clone)]
pub struct LoopOptions {
    pub timeouts: Timeouts,
    /// Longest wait for a frame per tick.
    pub poll: Duration,
    pub clock: LoopClock,
    /// Stop after this long on the loop clock (`--duration`).
    pub duration: Option<Duration>,
    /// Copy frames to the web UI's slot (only while someone watches).
    pub publish_frames: bool,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            timeouts: Timeouts::default(),
            poll: Duration::from_millis(20),
            clock: LoopClock::Monotonic,
            duration: None,
            publish_frames: true,
        }
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// SIGTERM/SIGINT or a shutdown command.
    Signal,
    Duration,
    EndOfStream,
}

/// Per-stage latency distributions over a run.
#[derive(Debug, Clone, Default)]
pub struct StageStats {
    pub capture_to_start: LatencyStats,
    pub preprocess: LatencyStats,
    pub inference: LatencyStats,
    pub mapping: LatencyStats,
    pub actuate: LatencyStats,
    pub total: LatencyStats,
    pub capture_to_pwm: LatencyStats,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub end: EndReason,
    pub frames: u64,
    pub dropped: u64,
    pub ticks: u64,
    pub inference_errors: u64,
    pub actuator_errors: u64,
    pub source_errors: u64,
    /// Frames per second over the run, on the loop clock.
    pub fps: f64,
    pub elapsed_s: f64,
    pub mode: Mode,
    pub estop: bool,
    pub stages: StageStats,
    pub record: Option<RecordStats>,
    /// The last pulses written (neutral after a clean exit).
    pub last_pulses: Option<servo_driver::Pulses>,
}

pub struct ControlLoop {
    pub source: Box<dyn FrameSource>,
    pub brain: Option<Box<dyn Brain>>,
    pub arbiter: Arbiter,
    pub wheels: Box<dyn Wheels>,
    pub shared: Arc<Shared>,
    pub recorder: Option<Recorder>,
    pub notifier: Option<Notifier>,
    /// SIGTERM/SIGINT from servo-driver's signal guard.
    pub signal: Option<servo_driver::failsafe::StopFlag>,
    pub opts: LoopOptions,
    last_decision: Decision,
    /// `shared.estop_requests` as of the last look.
    estops_seen: u64,
}

impl ControlLoop {
    pub fn new(
        source: Box<dyn FrameSource>,
        brain: Option<Box<dyn Brain>>,
        wheels: Box<dyn Wheels>,
        shared: Arc<Shared>,
        opts: LoopOptions,
    ) -> Self {
        ControlLoop {
            source,
            brain,
            arbiter: Arbiter::new(opts.timeouts),
            wheels,
            shared,
            recorder: None,
            notifier: None,
            signal: None,
            opts,
            last_decision: Decision::Neutral(crate::arbiter::NeutralReason::Stopped),
            estops_seen: 0,
        }
    }

    /// Run on a dedicated OS thread.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<Summary>> {
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || self.run())
    }

    /// Run until a signal, the duration, or the end of the stream; always
    /// ends by writing neutral.
    pub fn run(mut self) -> Summary {
        // Real time only: on the simulator's clock (headless) a slow frame
        // is slow simulated time, not a car rolling on with its throttle.
        let supervisor = (self.opts.clock == LoopClock::Monotonic)
            .then(|| {
                self.shared
                    .heartbeat_ns
                    .store(monotonic_ns(), Ordering::Release);
                let bound = Duration::from_nanos(self.opts.timeouts.stall_ns);
                crate::supervisor::Supervisor::start(self.shared.clone(), bound)
                    .map_err(|e| error!(error = %e, "supervisor thread did not start"))
                    .ok()
            })
            .flatten();
        let summary = self.run_inner();
        let last = match self.wheels.neutral() {
            Ok(p) => Some(p),
            Err(e) => {
                // The loop's own handle failed: try every backend's
                // independent writer (it reopens the device) before giving up.
                let r = servo_driver::failsafe::emergency_neutral_all();
                error!(error = %e, written = r.written, failed = r.failed, "could not write neutral at exit through the loop's handle; used the emergency writers");
                None
            }
        };
        if last.is_some() {
            if let Some(s) = &self.signal {
                // The guard thread stands down only once neutral is on the
                // wire; otherwise it keeps its own emergency write.
                s.neutral_done();
            }
            info!(reason = ?summary.end, frames = summary.frames, "control loop ended: neutral written");
        }
        drop(supervisor);
        if let Some(n) = &self.notifier {
            n.stopping();
        }
        let record = self.recorder.take().map(|r| r.finish());
        Summary {
            record,
            last_pulses: last.or(summary.last_pulses),
            ..summary
        }
    }

    fn apply(&mut self, cmd: Command, now: u64) -> bool {
        let a = &mut self.arbiter;
        let refused = match cmd {
            Command::Start => a.start(now).err(),
            Command::Stop => {
                a.stop(now, "stop requested");
                None
            }
            Command::EStop => {
                a.estop(now, "emergency stop requested");
                None
            }
            Command::ResetEStop => {
                a.reset_estop(now);
                None
            }
            Command::Select(m) => {
                a.select(now, m);
                None
            }
            Command::MaxSpeed(p) => {
                a.set_max_speed(p);
                None
            }
            Command::Manual {
                steering,
                throttle,
                received_ns,
            } => {
                // The dead-man runs from when the web server received the
                // command, not from when this loop got to it.
                let at = if received_ns != 0 && self.opts.clock == LoopClock::Monotonic {
                    received_ns.min(now)
                } else {
                    now
                };
                a.manual(at, steering, throttle).err()
            }
            Command::EnterCalibration => a.enter_calibration(now).err(),
            Command::ExitCalibration => {
                a.exit_calibration(now);
                None
            }
            Command::CalibrationPulses {
                steering_ns,
                throttle_ns,
            } => a.calibration_pulses(now, steering_ns, throttle_ns).err(),
            Command::SetCalibration(cal) => {
                if let Err(e) = self.wheels.set_calibration(cal) {
                    warn!(error = %e, "live calibration refused; keeping the old one");
                }
                None
            }
            Command::ReloadCalibration => {
                if let Err(e) = self.wheels.reload_calibration() {
                    error!(error = %e, "calibration reload failed; keeping the old one");
                } else {
                    info!("calibration reloaded");
                }
                None
            }
            Command::Shutdown => {
                a.stop(now, "shutdown requested");
                return false;
            }
        };
        // Manual commands outside manual mode arrive routinely (the phone's
        // joystick after a stop); not worth a log line each.
        if let Some(r) = refused {
            use crate::arbiter::Refused;
            match r {
                Refused::EStopLatched => self
                    .shared
                    .set_event(crate::commands::event::START_REFUSED_ESTOP),
                Refused::NotStopped => self
                    .shared
                    .set_event(crate::commands::event::CALIBRATION_REFUSED),
                _ => {}
            }
            if !matches!(cmd, Command::Manual { .. }) {
                warn!(command = ?cmd, reason = %r, "command refused");
            }
        }
        true
    }

    fn run_inner(&mut self) -> Summary {
        let shared = self.shared.clone();
        let mut stages = StageStats::default();
        let mut frames: u64 = 0;
        let mut ticks: u64 = 0;
        let mut inference_errors: u64 = 0;
        let mut actuator_errors: u64 = 0;
        let mut source_errors: u64 = 0;
        let mut in_error_streak = false;
        let mut in_source_error = false;
        let mut in_actuator_error = false;
        let mut last_frame_ns: u64 = 0;
        let mut first_frame_ns: Option<u64> = None;
        let mut fps_ema: f64 = 0.0;
        let mut prev_frame_tick: Option<u64> = None;
        let mut last_pulses = None;
        let mut action = crate::brain::Action {
            index: -1,
            ..Default::default()
        };
        let start_mono = monotonic_ns();
        let deadline = self.opts.duration.map(|d| d.as_nanos() as u64);
        let mut loop_start: Option<u64> = None;
        let end;
        let clock = self.opts.clock;
        let poll = self.opts.poll;
        let publish = self.opts.publish_frames;
        let monotonic_src = self.source.monotonic_timestamps();

        loop {
            // 1. Commands and models.
            let now = clock_now(clock, last_frame_ns);
            let mut keep_going = true;
            while let Some(cmd) = shared.commands.dequeue() {
                keep_going &= self.apply(cmd, now);
            }
            while let Some(new) = shared.models_in.dequeue() {
                info!(
                    origin = new.origin(),
                    backend = new.backend(),
                    "model swapped in"
                );
                shared.set_event(crate::commands::event::MODEL_SWAPPED);
                if let Some(old) = self.brain.replace(new) {
                    // Drop the old model on the loader's thread, not here.
                    let _ = shared.models_out.enqueue(old);
                }
            }
            let signalled = self.signal.as_ref().is_some_and(|s| s.stop_requested());
            if !keep_going || signalled || shared.stopping() {
                end = EndReason::Signal;
                break;
            }

            // 2. A frame, or a tick without one.
            let mut sample = Sample {
                action_index: -1,
                ..Default::default()
            };
            let mut times = StageTimes::default();
            // Wake in time for the next timeout rule (dead-man, stall), so
            // it fires at its bound and not up to one poll later.
            let wait = match (clock, self.arbiter.next_deadline()) {
                (LoopClock::Monotonic, Some(d)) => {
                    let left = Duration::from_nanos(d.saturating_sub(monotonic_ns()));
                    poll.min(left.max(Duration::from_millis(1)))
                }
                _ => poll,
            };
            let got = self.source.next_frame(wait);
            let t_start = Instant::now();
            let start_ns = monotonic_ns();
            match got {
                Ok(frame) => {
                    in_source_error = false;
                    frames += 1;
                    last_frame_ns = frame.timestamp_ns;
                    let now = clock_now(clock, last_frame_ns);
                    loop_start.get_or_insert(now);
                    first_frame_ns.get_or_insert(now);
                    if let Some(p) = prev_frame_tick {
                        let dt = now.saturating_sub(p) as f64 / 1e9;
                        if dt > 0.0 {
                            let inst = 1.0 / dt;
                            fps_ema = if fps_ema == 0.0 {
                                inst
                            } else {
                                0.9 * fps_ema + 0.1 * inst
                            };
                        }
                    }
                    prev_frame_tick = Some(now);
                    sample.has_frame = true;
                    sample.seq = frame.seq;
                    sample.timestamp_ns = frame.timestamp_ns;
                    if monotonic_src {
                        sample.capture_to_start_us =
                            start_ns.saturating_sub(frame.timestamp_ns) as f32 / 1e3;
                    }
                    if let Some(brain) = self.brain.as_mut() {
                        let scale = self.arbiter.max_speed_scale();
                        // An engine that panics is an inference error (the
                        // stall rule stops the car; a good model recovers
                        // it), not a latch that silently disables driving.
                        let decided = servo_driver::failsafe::catch_panic(|| {
                            brain.decide(&frame, scale, &mut times)
                        })
                        .unwrap_or_else(|p| {
                            Err(crate::brain::BrainError(format!("engine panicked: {p}")))
                        });
                        match decided {
                            Ok(a) => {
                                if in_error_streak {
                                    info!("inference recovered");
                                    in_error_streak = false;
                                }
                                action = a;
                                self.arbiter.action(now, a.steering, a.throttle);
                            }
                            Err(e) => {
                                inference_errors += 1;
                                action = crate::brain::Action {
                                    index: -1,
                                    ..Default::default()
                                };
                                if !in_error_streak {
                                    shared.set_event(crate::commands::event::INFERENCE_FAILED);
                                    error!(error = %e, "inference failed (stall rule will stop the car)");
                                    in_error_streak = true;
                                }
                            }
                        }
                    }
                    // 3. Decide and actuate while the frame is still borrowed
                    // (recording and publishing need it after the write).
                    let (pulses, act_us) = actuate(
                        &mut self.arbiter,
                        self.wheels.as_mut(),
                        &shared,
                        &mut self.estops_seen,
                        &mut self.last_decision,
                        now,
                        &mut actuator_errors,
                        &mut in_actuator_error,
                    );
                    last_pulses = pulses.or(last_pulses);
                    let end_ns = monotonic_ns();
                    fill(
                        &mut sample,
                        self.last_decision,
                        &self.arbiter,
                        &action,
                        pulses,
                        &times,
                        act_us,
                    );
                    sample.total_us = t_start.elapsed().as_secs_f32() * 1e6;
                    if monotonic_src {
                        sample.capture_to_pwm_us =
                            end_ns.saturating_sub(frame.timestamp_ns) as f32 / 1e3;
                        stages
                            .capture_to_start
                            .record_us(f64::from(sample.capture_to_start_us));
                        stages
                            .capture_to_pwm
                            .record_us(f64::from(sample.capture_to_pwm_us));
                    }
                    stages.preprocess.record_us(f64::from(times.preprocess_us));
                    stages.inference.record_us(f64::from(times.inference_us));
                    stages.mapping.record_us(f64::from(times.mapping_us));
                    stages.actuate.record_us(f64::from(act_us));
                    stages.total.record_us(f64::from(sample.total_us));
                    sample.tick_ns = now;
                    sample.fps = fps_ema as f32;
                    sample.frames = frames;
                    sample.inference_errors = inference_errors;
                    sample.actuator_errors = actuator_errors;
                    if let Some(r) = &self.recorder {
                        r.offer(&frame, &sample);
                    }
                    if publish && shared.frame.wanted(monotonic_ns() / 1_000_000, 2_000) {
                        shared.frame.publish_with(
                            &frame,
                            (action.index >= 0 || action.speed_mps != 0.0).then_some(
                                crate::telemetry::FrameAction {
                                    index: action.index,
                                    steering_angle_deg: action.steering_angle_deg,
                                    speed_mps: action.speed_mps,
                                    steering: action.steering,
                                    throttle: action.throttle,
                                },
                            ),
                        );
                    }
                }
                Err(e) => {
                    match e {
                        // On the source's clock a timeout means that much
                        // time passed without a frame (stall rules still fire).
                        SourceError::Timeout(d) => {
                            last_frame_ns = last_frame_ns.saturating_add(d.as_nanos() as u64)
                        }
                        SourceError::EndOfStream => {
                            end = EndReason::EndOfStream;
                            break;
                        }
                        SourceError::Device(msg) => {
                            source_errors += 1;
                            if !in_source_error {
                                shared.set_event(crate::commands::event::SOURCE_FAILED);
                                error!(source = self.source.name(), error = %msg, "frame source error (stall rule will stop the car)");
                                in_source_error = true;
                            }
                            // The source failed at once; do not spin.
                            std::thread::sleep(poll);
                        }
                    }
                    let now = clock_now(clock, last_frame_ns);
                    let (pulses, act_us) = actuate(
                        &mut self.arbiter,
                        self.wheels.as_mut(),
                        &shared,
                        &mut self.estops_seen,
                        &mut self.last_decision,
                        now,
                        &mut actuator_errors,
                        &mut in_actuator_error,
                    );
                    last_pulses = pulses.or(last_pulses);
                    let no_action = crate::brain::Action {
                        index: -1,
                        ..Default::default()
                    };
                    fill(
                        &mut sample,
                        self.last_decision,
                        &self.arbiter,
                        &no_action,
                        pulses,
                        &times,
                        act_us,
                    );
                    sample.tick_ns = now;
                    sample.fps = fps_ema as f32;
                    sample.frames = frames;
                    sample.dropped = self.source.dropped();
                    sample.inference_errors = inference_errors;
                    sample.actuator_errors = actuator_errors;
                }
            }
            ticks += 1;
            sample.tick = ticks;
            sample.dropped = self.source.dropped();
            shared.telemetry.push(&sample);
            shared.ticks.store(ticks, Ordering::Relaxed);
            shared.heartbeat_ns.store(monotonic_ns(), Ordering::Release);
            if let Some(n) = self.notifier.as_mut() {
                n.watchdog(monotonic_ns());
            }
            if let (Some(d), Some(s)) = (deadline, loop_start) {
                if clock_now(clock, last_frame_ns).saturating_sub(s) >= d {
                    end = EndReason::Duration;
                    break;
                }
            } else if let Some(d) = deadline {
                // No frame ever: the duration still runs on the wall clock.
                if monotonic_ns().saturating_sub(start_mono) >= d {
                    end = EndReason::Duration;
                    break;
                }
            }
        }

        let elapsed_ns = match (first_frame_ns, self.opts.clock) {
            (Some(f), _) => clock_now(clock, last_frame_ns).saturating_sub(f),
            (None, _) => monotonic_ns().saturating_sub(start_mono),
        };
        let elapsed_s = elapsed_ns as f64 / 1e9;
        let fps = if frames > 1 && elapsed_s > 0.0 {
            (frames - 1) as f64 / elapsed_s
        } else {
            0.0
        };
        Summary {
            end,
            frames,
            dropped: self.source.dropped(),
            ticks,
            inference_errors,
            actuator_errors,
            source_errors,
            fps,
            elapsed_s,
            mode: self.arbiter.mode(),
            estop: self.arbiter.estop_latched(),
            stages,
            record: None,
            last_pulses,
        }
    }
}

fn clock_now(clock: LoopClock, last_frame_ns: u64) -> u64 {
    match clock {
        LoopClock::Monotonic => monotonic_ns(),
        LoopClock::Source => last_frame_ns,
    }
}

/// Ask the arbiter and write the wheels; on a failed write try neutral.
/// First the two signals that bypass the command queue: an e-stop request
/// and the supervisor's "you were late" (both one atomic load when idle).
#[allow(clippy::too_many_arguments)]
fn actuate(
    arbiter: &mut Arbiter,
    wheels: &mut dyn Wheels,
    shared: &Shared,
    estops_seen: &mut u64,
    last_decision: &mut Decision,
    now: u64,
    errors: &mut u64,
    in_error: &mut bool,
) -> (Option<servo_driver::Pulses>, f32) {
    let estops = shared.estop_requests.load(Ordering::Acquire);
    if estops != *estops_seen {
        *estops_seen = estops;
        arbiter.estop(now, "emergency stop requested");
    }
    // A plain load first: the swap (a write) only when the flag is set.
    if shared.supervisor_tripped.load(Ordering::Relaxed)
        && shared.supervisor_tripped.swap(false, Ordering::AcqRel)
    {
        arbiter.stop(
            now,
            "control loop missed its deadline (the supervisor wrote neutral)",
        );
    }
    {
        let t = Instant::now();
        let decision = arbiter.decide(now);
        *last_decision = decision;
        shared
            .wire_live
            .store(!matches!(decision, Decision::Neutral(_)), Ordering::Release);
        let r = match decision {
            Decision::Neutral(_) => wheels.neutral(),
            Decision::Drive { steering, throttle } => wheels.drive(steering, throttle),
            Decision::Pulses {
                steering_ns,
                throttle_ns,
            } => wheels.pulses(steering_ns, throttle_ns),
        };
        let us = t.elapsed().as_secs_f32() * 1e6;
        match r {
            Ok(p) => {
                if *in_error {
                    info!("actuator writes recovered");
                    *in_error = false;
                }
                (Some(p), us)
            }
            Err(e) => {
                *errors += 1;
                if !*in_error {
                    error!(error = %e, backend = wheels.backend(), "actuator write failed; trying neutral");
                    *in_error = true;
                }
                let _ = wheels.neutral();
                (None, us)
            }
        }
    }
}

fn fill(
    s: &mut Sample,
    d: Decision,
    a: &Arbiter,
    action: &crate::brain::Action,
    pulses: Option<servo_driver::Pulses>,
    times: &StageTimes,
    act_us: f32,
) {
    if let Decision::Drive { steering, throttle } = d {
        s.wire_steering = steering;
        s.wire_throttle = throttle;
    }
    s.mode = a.mode().to_u8();
    s.estop = a.estop_latched();
    s.stalled = a.stalled();
    s.max_speed_pct = a.max_speed_pct();
    s.action_index = action.index;
    s.steering_angle_deg = action.steering_angle_deg;
    s.speed_mps = action.speed_mps;
    s.steering = action.steering;
    s.throttle = action.throttle;
    if let Some(p) = pulses {
        s.steering_ns = p.steering_ns;
        s.throttle_ns = p.throttle_ns;
    }
    s.preprocess_us = times.preprocess_us;
    s.inference_us = times.inference_us;
    s.mapping_us = times.mapping_us;
    s.actuate_us = act_us;
}
