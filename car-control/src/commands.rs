//! Commands into the control loop: bounded queues the loop drains once per
//! tick (`heapless::mpmc`: no lock and no waiting, though not strictly
//! lock-free: an operation racing a preempted one can fail, which the
//! caller sees as a full or empty queue). Producers (web UI, signal
//! handler, CLI) never wait for the loop; a full queue refuses the command
//! and the producer reports it. The e-stop does not use a queue at all
//! (`Shared::estop`), so no traffic can crowd it out; nor does the phone's
//! stick (`Shared::manual`, a latest-value slot): a flood of drive messages
//! can never fill the queue a mode change or a calibration needs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use heapless::mpmc::Queue;

use crate::arbiter::DriveMode;
use crate::brain::Brain;
use crate::telemetry::{FrameSlot, TelemetryRing};

/// Anything that changes what the car does. Small and `Copy`: it travels
/// through a bounded queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// Start driving in the selected drive mode; refused while the e-stop is latched.
    Start,
    /// Stop: neutral, mode stopped.
    Stop,
    /// Emergency stop through the queue; [`Shared::estop`] is the path that
    /// cannot be crowded out.
    EStop,
    /// Clear a latched e-stop; the car stays stopped until the next `Start`.
    ResetEStop,
    /// Manual or autonomous for the next `Start`; switches at once while driving.
    Select(DriveMode),
    /// 0-100 %.
    MaxSpeed(u8),
    /// Manual drive, each in [-1, 1]; expires after the manual timeout,
    /// counted from `received_ns` (CLOCK_MONOTONIC when the web server got
    /// it; 0 = when the loop takes it), so time spent in the queue counts.
    Manual {
        /// Steering in [-1, 1].
        steering: f32,
        /// Throttle in [-1, 1], before the max-speed scale.
        throttle: f32,
        /// When it was received, CLOCK_MONOTONIC ns; 0 = when the loop takes it.
        received_ns: u64,
    },
    /// Enter the calibration wizard's mode; only while stopped.
    EnterCalibration,
    /// Leave calibration mode for stopped.
    ExitCalibration,
    /// Raw pulse widths while calibrating; `None` leaves that channel as it is.
    CalibrationPulses {
        /// Steering pulse, ns; holds until changed.
        steering_ns: Option<u32>,
        /// Throttle pulse, ns; expires after the manual timeout, so the wizard
        /// re-sends it while a button is held.
        throttle_ns: Option<u32>,
    },
    /// Re-read the calibration file (after the web UI saved one).
    ReloadCalibration,
    /// Make this calibration live without saving it (the wizard).
    SetCalibration(servo_driver::Calibration),
    /// End the loop through the neutral path.
    Shutdown,
}

/// Queue sizes are powers of two (heapless requirement).
pub const COMMAND_QUEUE: usize = 64;
/// The loop's command queue: a full queue refuses a command, never waits.
pub type CommandQueue = Queue<Command, COMMAND_QUEUE>;
/// Models ready to swap in, and old ones handed back to be dropped off the loop.
pub type ModelQueue = Queue<Box<dyn Brain>, 4>;

/// Where the model loader stands. The web UI has its own copy of this (its
/// JSON); `car-runtime`'s adapter converts at the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelState {
    /// No load was ever requested and no model is active.
    #[default]
    None,
    /// The loader thread is loading `requested`; `active` still drives.
    Loading,
    /// `active` was loaded and is the one driving.
    Loaded,
    /// Loading `requested` failed with `error`; `active` (the old model, if
    /// any) is unchanged and still drives.
    Error,
}

/// Which model drives and what became of the last load request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelStatus {
    /// Where the loader stands.
    pub state: ModelState,
    /// Path of the model folder or archive that drives now, if any.
    pub active: Option<String>,
    /// Path of the last load request (same as `active` once it loaded).
    pub requested: Option<String>,
    /// The exact load error for `requested` when `state == Error`.
    pub error: Option<String>,
}

/// Last notable event, as a code the loop can store without allocating.
pub mod event {
    /// Nothing to report.
    pub const NONE: u8 = 0;
    /// A start was refused: the e-stop is latched.
    pub const START_REFUSED_ESTOP: u8 = 1;
    /// Calibration was refused: the car was not stopped.
    pub const CALIBRATION_REFUSED: u8 = 2;
    /// A new model took over.
    pub const MODEL_SWAPPED: u8 = 3;
    /// Inference started failing; the stall rule holds the car in neutral.
    pub const INFERENCE_FAILED: u8 = 4;
    /// The frame source (camera) reported an error; the stall rule holds the
    /// car in neutral.
    pub const SOURCE_FAILED: u8 = 5;
    /// A write to the servo or ESC failed. Nothing sets it yet: the loop's
    /// write-failure path only logs and counts.
    pub const ACTUATOR_FAILED: u8 = 6;
    /// The servo driver refused a calibration. Nothing sets it yet: a refused
    /// live calibration is only logged.
    pub const CALIBRATION_INVALID: u8 = 7;
    /// The supervisor wrote neutral for a missed deadline and the loop stopped
    /// the car; the racer must start it again.
    pub const LOOP_STALLED: u8 = 8;

    /// What the web UI shows for an event code; `None` for `NONE` and unknown codes.
    pub fn text(code: u8) -> Option<&'static str> {
        Some(match code {
            START_REFUSED_ESTOP => "start refused: emergency stop latched (reset it first)",
            CALIBRATION_REFUSED => "calibration refused: stop the car first",
            MODEL_SWAPPED => "new model swapped in",
            INFERENCE_FAILED => "inference failed: car held in neutral",
            SOURCE_FAILED => "camera error: car held in neutral",
            ACTUATOR_FAILED => "actuator write failed",
            CALIBRATION_INVALID => "calibration refused by the servo driver",
            LOOP_STALLED => {
                "control loop missed its deadline: the supervisor wrote neutral and stopped the car"
            }
            _ => return None,
        })
    }
}

/// Everything shared between the loop and the rest of the process.
pub struct Shared {
    /// Commands from the web UI, the CLI and signal handling, drained once per tick.
    pub commands: CommandQueue,
    /// Models the loader has checked and warmed up, swapped in between frames.
    pub models_in: ModelQueue,
    /// Replaced models, handed back so the loader thread drops them (slow;
    /// never on the loop).
    pub models_out: ModelQueue,
    /// One [`crate::telemetry::Sample`] per tick, for the web UI and logs.
    pub telemetry: TelemetryRing,
    /// The latest camera frame, for the web UI.
    pub frame: FrameSlot,
    /// Set by SIGTERM/SIGINT (servo-driver's failsafe) or a shutdown request.
    pub stop: Arc<AtomicBool>,
    /// Commands refused because the queue was full.
    pub commands_refused: AtomicU64,
    /// Loop heartbeat (ticks); the watchdog thread checks it moves.
    pub ticks: AtomicU64,
    /// Model load status; written by the loader thread and start-up, never by the loop.
    pub model_status: std::sync::Mutex<ModelStatus>,
    /// Last notable event ([`event`] code), for the web UI.
    pub last_event: std::sync::atomic::AtomicU8,
    /// E-stop requests, counted. Its own path into the loop: an increment
    /// never fails and no other traffic can fill it (the command queue can
    /// be full of drive messages); the loop latches the e-stop whenever the
    /// count moved since its last look.
    pub estop_requests: AtomicU64,
    /// CLOCK_MONOTONIC ns at the end of the loop's last tick (0 before the
    /// first); the supervisor writes neutral when it stops moving.
    pub heartbeat_ns: AtomicU64,
    /// True while the last write put something other than neutral on the
    /// wire: a hang then could leave the car moving. A loop blocked while
    /// the wire holds neutral (a camera being reopened) is safe as it is.
    pub wire_live: AtomicBool,
    /// Set by the supervisor after it wrote neutral for a missed deadline;
    /// the loop stops the car when it runs again.
    pub supervisor_tripped: AtomicBool,
    /// How many times the supervisor had to write neutral.
    pub supervisor_trips: AtomicU64,
    /// The stick's latest manual command (see [`Shared::manual`]).
    pub stick: ManualSlot,
}

/// The latest manual drive command: one value, overwritten by each new one,
/// never refused. The stick streams tens of positions a second and only
/// the newest matters, so queueing them would only let them crowd out the
/// commands that must not be lost. Lock-free: the writer stores the value,
/// then its receive time, then bumps the sequence; the loop takes the slot
/// whenever the sequence moved. Two writers racing can pair one's value
/// with the other's (older or newer by microseconds) receive time, which at
/// worst starts the dead-man a little early: the safe side.
#[derive(Debug, Default)]
pub struct ManualSlot {
    /// Steering f32 bits (low half), throttle f32 bits (high half).
    value: AtomicU64,
    /// CLOCK_MONOTONIC ns when the web server received it (0 = when taken).
    received_ns: AtomicU64,
    /// Bumped after every write.
    seq: AtomicU64,
}

impl ManualSlot {
    /// Overwrite the slot. Never fails, never waits.
    pub fn put(&self, steering: f32, throttle: f32, received_ns: u64) {
        let v = u64::from(steering.to_bits()) | (u64::from(throttle.to_bits()) << 32);
        self.value.store(v, Ordering::Relaxed);
        self.received_ns.store(received_ns, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// The slot's command when its sequence moved past `*seen` (which it
    /// then updates); `None` when nothing new was put since.
    pub fn take_new(&self, seen: &mut u64) -> Option<Command> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq == *seen {
            return None;
        }
        *seen = seq;
        let v = self.value.load(Ordering::Relaxed);
        Some(Command::Manual {
            steering: f32::from_bits(v as u32),
            throttle: f32::from_bits((v >> 32) as u32),
            received_ns: self.received_ns.load(Ordering::Relaxed),
        })
    }
}

impl Shared {
    // heapless marks mpmc::Queue::new deprecated because a producer pre-empted
    // mid-operation can make others fail for a moment; here a failed enqueue
    // is reported (Busy) and retried by the caller, never waited on.
    /// Empty queues and zero counters, a telemetry ring of `telemetry_capacity`
    /// samples and a frame slot whose buffers hold `frame_capacity` bytes (the
    /// largest frame the web UI can show). `stop` is the flag the signal
    /// handling raises.
    #[allow(deprecated)]
    pub fn new(telemetry_capacity: usize, frame_capacity: usize, stop: Arc<AtomicBool>) -> Self {
        Shared {
            commands: Queue::new(),
            models_in: Queue::new(),
            models_out: Queue::new(),
            telemetry: TelemetryRing::new(telemetry_capacity),
            frame: FrameSlot::new(frame_capacity),
            stop,
            commands_refused: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            model_status: std::sync::Mutex::new(ModelStatus::default()),
            last_event: std::sync::atomic::AtomicU8::new(0),
            estop_requests: AtomicU64::new(0),
            heartbeat_ns: AtomicU64::new(0),
            wire_live: AtomicBool::new(false),
            supervisor_tripped: AtomicBool::new(false),
            supervisor_trips: AtomicU64::new(0),
            stick: ManualSlot::default(),
        }
    }

    /// The stick's position: steering and throttle in [-1, 1], received at
    /// `received_ns` (CLOCK_MONOTONIC; 0 = when the loop takes it). Never
    /// refused: it overwrites whatever position the loop has not taken
    /// yet, and the loop applies it after the queued commands of its tick.
    pub fn manual(&self, steering: f32, throttle: f32, received_ns: u64) {
        self.stick.put(steering, throttle, received_ns);
    }

    /// Request the emergency stop. Never refused, never waits.
    pub fn estop(&self) {
        self.estop_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Queue a command; false (and counted) when the queue is full.
    pub fn send(&self, c: Command) -> bool {
        if self.commands.enqueue(c).is_ok() {
            true
        } else {
            self.commands_refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Ask the loop to end, through the neutral path, at its next tick.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Record the last notable event (an [`event`] code) for the web UI.
    pub fn set_event(&self, code: u8) {
        self.last_event.store(code, Ordering::Relaxed);
    }

    /// True once the loop has been asked to end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
