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
use crate::brain::{Brain, MappedAction, StageTimes};
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

/// How a [`ControlLoop`] runs.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    /// Stall and dead-man timeouts; copied into the arbiter by
    /// [`ControlLoop::new`], so set them before.
    pub timeouts: Timeouts,
    /// Longest wait for a frame per tick.
    pub poll: Duration,
    /// Which clock the timeouts run on; `Source` only for headless simulation.
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
    /// The run length (`duration`) elapsed on the loop clock.
    Duration,
    /// The source ran out of frames (end of a replay, sim lap or step limit).
    EndOfStream,
}

/// Per-stage latency distributions over a run.
#[derive(Debug, Clone, Default)]
pub struct StageStats {
    /// Frame capture to the start of its tick: how stale frames are when the
    /// loop takes them. Only for sources with monotonic timestamps.
    pub capture_to_start: LatencyStats,
    /// Decode and preprocessing.
    pub preprocess: LatencyStats,
    /// The model's forward pass.
    pub inference: LatencyStats,
    /// Policy outputs to action.
    pub mapping: LatencyStats,
    /// Arbiter decision plus the wheel write.
    pub actuate: LatencyStats,
    /// The frame step, from taking the frame to the end of the wheel write.
    pub total: LatencyStats,
    /// Frame capture to the end of the wheel write: the latency the car drives
    /// with. Only for sources with monotonic timestamps.
    pub capture_to_pwm: LatencyStats,
}

/// What a run did, returned when the loop ends.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why the run ended.
    pub end: EndReason,
    /// Frames taken from the source.
    pub frames: u64,
    /// Frames the source had to drop ([`FrameSource::dropped`]).
    pub dropped: u64,
    /// Loop iterations, with a frame or without.
    pub ticks: u64,
    /// Brain calls that failed or panicked; the stall rule held neutral.
    pub inference_errors: u64,
    /// Wheel writes that failed (each followed by a neutral attempt).
    pub actuator_errors: u64,
    /// See [`crate::telemetry::Sample::bad_commands`].
    pub bad_commands: u64,
    /// Ticks on which the source reported a device error.
    pub source_errors: u64,
    /// Frames per second over the run, on the loop clock.
    pub fps: f64,
    /// Seconds from the first frame to the end, on the loop clock (on the wall
    /// clock when no frame ever came).
    pub elapsed_s: f64,
    /// The arbiter's mode when the loop ended.
    pub mode: Mode,
    /// Whether the e-stop was latched when the loop ended.
    pub estop: bool,
    /// Per-stage latency distributions.
    pub stages: StageStats,
    /// Recorder counts, when recording.
    pub record: Option<RecordStats>,
    /// The last pulses written (neutral after a clean exit).
    pub last_pulses: Option<servo_driver::Pulses>,
}

/// The control loop: owns everything on the hot path. Build it with
/// [`Self::new`], attach the optional parts, then [`Self::spawn`] or
/// [`Self::run`].
pub struct ControlLoop {
    /// Where frames come from (camera, replay, simulator).
    pub source: Box<dyn FrameSource>,
    /// Frame -> action; `None` until a model is swapped in (autonomous mode
    /// then holds neutral).
    pub brain: Option<Box<dyn Brain>>,
    /// Decides each tick what goes to the wheels.
    pub arbiter: Arbiter,
    /// The output: the servo driver, or a test double.
    pub wheels: Box<dyn Wheels>,
    /// Commands in, telemetry and status out.
    pub shared: Arc<Shared>,
    /// Records frames and samples to disk; `None` = not recording.
    pub recorder: Option<Recorder>,
    /// systemd notifications (ready, watchdog); `None` outside systemd.
    pub notifier: Option<Notifier>,
    /// SIGTERM/SIGINT from servo-driver's signal guard.
    pub signal: Option<servo_driver::failsafe::StopFlag>,
    /// Poll, clock and run length, read every tick.
    pub opts: LoopOptions,
    last_decision: Decision,
    /// `shared.estop_requests` as of the last look.
    estops_seen: u64,
    /// `shared.stick`'s sequence as of the last look.
    stick_seen: u64,
}

impl ControlLoop {
    /// A loop that starts stopped, with no recorder, notifier or signal flag.
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
            stick_seen: 0,
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
        // The source lends each frame for one tick while the steps below
        // need the rest of `self`: holding the source in a local splits the
        // borrows. `Detached` is a zero-sized placeholder (no allocation).
        let mut source = std::mem::replace(&mut self.source, Box::new(Detached));
        let mut st = RunState::new(self.opts.duration);
        let end = loop {
            if let Some(end) = self.tick(source.as_mut(), &mut st) {
                break end;
            }
        };
        let mut summary = st.summary(end, source.dropped(), &self.arbiter, self.opts.clock);
        summary.bad_commands = self.wheels.bad_commands();
        self.source = source;
        summary
    }

    /// One tick: commands and models in, a frame step or an idle step,
    /// then telemetry and the heartbeat out. `Some` ends the run.
    fn tick(&mut self, source: &mut dyn FrameSource, st: &mut RunState) -> Option<EndReason> {
        let clock = self.opts.clock;
        if !self.take_inputs(clock_now(clock, st.last_frame_ns)) {
            return Some(EndReason::Signal);
        }
        let mut sample = Sample {
            action_index: -1,
            ..Default::default()
        };
        let monotonic_src = source.monotonic_timestamps();
        let got = source.next_frame(self.frame_wait());
        match got {
            Ok(frame) => {
                self.frame_step(&frame, monotonic_src, st, &mut sample);
            }
            Err(SourceError::EndOfStream) => return Some(EndReason::EndOfStream),
            Err(e) => self.idle_step(e, source.name(), st, &mut sample),
        }
        self.end_tick(st, &mut sample, source.dropped())
    }

    /// Drain the command queue and hand in ready models. `false` when the
    /// loop must end (shutdown command, signal, stop request).
    fn take_inputs(&mut self, now: u64) -> bool {
        let shared = self.shared.clone();
        let mut keep_going = true;
        while let Some(cmd) = shared.commands.dequeue() {
            keep_going &= self.apply(cmd, now);
        }
        // After the queue: a Select + Start queued this tick come first,
        // so the stick drives as soon as manual mode is on.
        if let Some(cmd) = shared.stick.take_new(&mut self.stick_seen) {
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
        keep_going && !signalled && !shared.stopping()
    }

    /// How long to wait for a frame: the poll, cut short so the next
    /// timeout rule (dead-man, stall) fires at its bound and not up to one
    /// poll later.
    fn frame_wait(&self) -> Duration {
        let poll = self.opts.poll;
        match (self.opts.clock, self.arbiter.next_deadline()) {
            (LoopClock::Monotonic, Some(d)) => {
                let left = Duration::from_nanos(d.saturating_sub(monotonic_ns()));
                poll.min(left.max(Duration::from_millis(1)))
            }
            _ => poll,
        }
    }

    /// A frame arrived: brain, actuate, then record and publish while the
    /// frame is still borrowed.
    fn frame_step(
        &mut self,
        frame: &crate::frame::Frame<'_>,
        monotonic_src: bool,
        st: &mut RunState,
        sample: &mut Sample,
    ) {
        let t_start = Instant::now();
        let start_ns = monotonic_ns();
        st.in_source_error = false;
        st.frames += 1;
        st.last_frame_ns = frame.timestamp_ns;
        let now = clock_now(self.opts.clock, st.last_frame_ns);
        st.loop_start.get_or_insert(now);
        st.first_frame_ns.get_or_insert(now);
        if let Some(p) = st.prev_frame_tick {
            let dt = now.saturating_sub(p) as f64 / 1e9;
            if dt > 0.0 {
                let inst = 1.0 / dt;
                st.fps_ema = if st.fps_ema == 0.0 {
                    inst
                } else {
                    0.9 * st.fps_ema + 0.1 * inst
                };
            }
        }
        st.prev_frame_tick = Some(now);
        sample.has_frame = true;
        sample.seq = frame.seq;
        sample.timestamp_ns = frame.timestamp_ns;
        if monotonic_src {
            sample.capture_to_start_us = start_ns.saturating_sub(frame.timestamp_ns) as f32 / 1e3;
        }
        let mut times = StageTimes::default();
        self.think(frame, now, st, &mut times);
        let action = st.action;
        let act_us = self.actuate_and_fill(now, &action, &times, st, sample);
        let end_ns = monotonic_ns();
        sample.total_us = t_start.elapsed().as_secs_f32() * 1e6;
        let stages = &mut st.stages;
        if monotonic_src {
            sample.capture_to_pwm_us = end_ns.saturating_sub(frame.timestamp_ns) as f32 / 1e3;
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
        if let Some(r) = &self.recorder {
            r.offer(frame, sample);
        }
        let shared = &self.shared;
        if self.opts.publish_frames && shared.frame.wanted(monotonic_ns() / 1_000_000, 2_000) {
            shared.frame.publish_with(
                frame,
                (action.index.is_some() || action.speed_mps != 0.0).then_some(action),
            );
        }
    }

    /// The brain's decision for this frame into `st.action` and the
    /// arbiter; a failure (or an engine panic) is an inference error, for
    /// the stall rule to act on.
    fn think(
        &mut self,
        frame: &crate::frame::Frame<'_>,
        now: u64,
        st: &mut RunState,
        times: &mut StageTimes,
    ) {
        let Some(brain) = self.brain.as_mut() else {
            return;
        };
        let scale = self.arbiter.max_speed_scale();
        // An engine that panics is an inference error (the stall rule
        // stops the car; a good model recovers it), not a latch that
        // silently disables driving.
        let decided = servo_driver::failsafe::catch_panic(|| brain.decide(frame, scale, times))
            .unwrap_or_else(|p| Err(crate::brain::BrainError(format!("engine panicked: {p}"))));
        match decided {
            Ok(a) => {
                if st.in_error_streak {
                    info!("inference recovered");
                    st.in_error_streak = false;
                }
                st.action = a;
                self.arbiter.action(now, a.steering, a.throttle);
            }
            Err(e) => {
                st.inference_errors += 1;
                st.action = NO_ACTION;
                if !st.in_error_streak {
                    self.shared
                        .set_event(crate::commands::event::INFERENCE_FAILED);
                    error!(error = %e, "inference failed (stall rule will stop the car)");
                    st.in_error_streak = true;
                }
            }
        }
    }

    /// No frame this tick (a timeout, or a source error): the timeout
    /// rules still run and the wheels are still written.
    fn idle_step(
        &mut self,
        e: SourceError,
        source_name: &'static str,
        st: &mut RunState,
        sample: &mut Sample,
    ) {
        match e {
            // On the source's clock a timeout means that much time passed
            // without a frame (stall rules still fire).
            SourceError::Timeout(d) => {
                st.last_frame_ns = st.last_frame_ns.saturating_add(d.as_nanos() as u64)
            }
            SourceError::EndOfStream => {}
            SourceError::Device(msg) => {
                st.source_errors += 1;
                if !st.in_source_error {
                    self.shared.set_event(crate::commands::event::SOURCE_FAILED);
                    error!(source = source_name, error = %msg, "frame source error (stall rule will stop the car)");
                    st.in_source_error = true;
                }
                // The source failed at once; do not spin.
                std::thread::sleep(self.opts.poll);
            }
        }
        let now = clock_now(self.opts.clock, st.last_frame_ns);
        self.actuate_and_fill(now, &NO_ACTION, &StageTimes::default(), st, sample);
    }

    /// The one place the wheels are written during a run, for both steps:
    /// ask the arbiter, write, and fill the tick's sample. Returns the
    /// write's duration in microseconds.
    fn actuate_and_fill(
        &mut self,
        now: u64,
        action: &MappedAction,
        times: &StageTimes,
        st: &mut RunState,
        sample: &mut Sample,
    ) -> f32 {
        let (pulses, act_us) = actuate(
            &mut self.arbiter,
            self.wheels.as_mut(),
            &self.shared,
            &mut self.estops_seen,
            &mut self.last_decision,
            now,
            &mut st.actuator_errors,
            &mut st.in_actuator_error,
        );
        st.last_pulses = pulses.or(st.last_pulses);
        fill(
            sample,
            self.last_decision,
            &self.arbiter,
            action,
            pulses,
            times,
            act_us,
        );
        sample.tick_ns = now;
        sample.fps = st.fps_ema as f32;
        sample.frames = st.frames;
        sample.inference_errors = st.inference_errors;
        sample.actuator_errors = st.actuator_errors;
        sample.bad_commands = self.wheels.bad_commands();
        act_us
    }

    /// Publish the tick (telemetry, heartbeat, watchdog) and check the
    /// run's duration.
    fn end_tick(
        &mut self,
        st: &mut RunState,
        sample: &mut Sample,
        dropped: u64,
    ) -> Option<EndReason> {
        st.ticks += 1;
        sample.tick = st.ticks;
        sample.dropped = dropped;
        let shared = &self.shared;
        shared.telemetry.push(sample);
        shared.ticks.store(st.ticks, Ordering::Relaxed);
        shared.heartbeat_ns.store(monotonic_ns(), Ordering::Release);
        if let Some(n) = self.notifier.as_mut() {
            n.watchdog(monotonic_ns());
        }
        let d = st.deadline?;
        let elapsed = match st.loop_start {
            Some(s) => clock_now(self.opts.clock, st.last_frame_ns).saturating_sub(s),
            // No frame ever: the duration still runs on the wall clock.
            None => monotonic_ns().saturating_sub(st.start_mono),
        };
        (elapsed >= d).then_some(EndReason::Duration)
    }
}

/// The action of a tick without one.
const NO_ACTION: MappedAction = MappedAction::NEUTRAL;

/// Stands in for the source while the run holds it (see `run_inner`).
struct Detached;

impl FrameSource for Detached {
    fn next_frame(&mut self, _: Duration) -> Result<crate::frame::Frame<'_>, SourceError> {
        Err(SourceError::EndOfStream)
    }
    fn name(&self) -> &'static str {
        "detached"
    }
}

/// What a run counts and remembers from tick to tick.
struct RunState {
    stages: StageStats,
    frames: u64,
    ticks: u64,
    inference_errors: u64,
    actuator_errors: u64,
    source_errors: u64,
    /// Set while inferences fail, cleared by the first good one: one log
    /// line and one event per streak, not per frame.
    in_error_streak: bool,
    in_source_error: bool,
    in_actuator_error: bool,
    /// The last frame's timestamp (the loop clock in `LoopClock::Source`).
    last_frame_ns: u64,
    first_frame_ns: Option<u64>,
    fps_ema: f64,
    prev_frame_tick: Option<u64>,
    last_pulses: Option<servo_driver::Pulses>,
    /// The last decided action (kept while frames come without a brain).
    action: MappedAction,
    start_mono: u64,
    /// `--duration` in ns, counted from the first frame.
    deadline: Option<u64>,
    loop_start: Option<u64>,
}

impl RunState {
    fn new(duration: Option<Duration>) -> RunState {
        RunState {
            stages: StageStats::default(),
            frames: 0,
            ticks: 0,
            inference_errors: 0,
            actuator_errors: 0,
            source_errors: 0,
            in_error_streak: false,
            in_source_error: false,
            in_actuator_error: false,
            last_frame_ns: 0,
            first_frame_ns: None,
            fps_ema: 0.0,
            prev_frame_tick: None,
            last_pulses: None,
            action: NO_ACTION,
            start_mono: monotonic_ns(),
            deadline: duration.map(|d| d.as_nanos() as u64),
            loop_start: None,
        }
    }

    fn summary(self, end: EndReason, dropped: u64, arbiter: &Arbiter, clock: LoopClock) -> Summary {
        let elapsed_ns = match self.first_frame_ns {
            Some(f) => clock_now(clock, self.last_frame_ns).saturating_sub(f),
            None => monotonic_ns().saturating_sub(self.start_mono),
        };
        let elapsed_s = elapsed_ns as f64 / 1e9;
        let fps = if self.frames > 1 && elapsed_s > 0.0 {
            (self.frames - 1) as f64 / elapsed_s
        } else {
            0.0
        };
        Summary {
            end,
            frames: self.frames,
            dropped,
            ticks: self.ticks,
            inference_errors: self.inference_errors,
            actuator_errors: self.actuator_errors,
            bad_commands: 0,
            source_errors: self.source_errors,
            fps,
            elapsed_s,
            mode: arbiter.mode(),
            estop: arbiter.estop_latched(),
            stages: self.stages,
            record: None,
            last_pulses: self.last_pulses,
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
    action: &MappedAction,
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
    // -1: no discrete index (continuous space, or no action this tick).
    s.action_index = action.index.map_or(-1, |i| i as i32);
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
