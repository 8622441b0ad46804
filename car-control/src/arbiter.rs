//! The control arbiter: decides, once per tick, what goes to the wheels.
//!
//! A pure state machine. Time is passed in (nanoseconds on whichever clock
//! the loop runs on: monotonic on a car, the simulator's in headless runs) so
//! tests can inject faults and step time by hand. It never allocates; it logs
//! only on transitions, with the reason, never per frame.

use tracing::{info, warn};

/// What the car is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Wheels centred, throttle neutral. The state after start-up and stop.
    Stopped,
    /// Driven from the phone; each command expires after the manual timeout.
    Manual,
    /// Driven by the policy; neutral when no fresh action within the stall timeout.
    Autonomous,
    /// Raw pulses from the calibration wizard; throttle pulses expire like manual commands.
    Calibration,
}

impl Mode {
    /// Lower-case name for logs, telemetry and the web UI (`stopped`, `manual`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stopped => "stopped",
            Mode::Manual => "manual",
            Mode::Autonomous => "autonomous",
            Mode::Calibration => "calibration",
        }
    }

    /// Compact code for the telemetry ring (0 stopped, 1 manual, 2 autonomous,
    /// 3 calibration).
    pub fn to_u8(self) -> u8 {
        match self {
            Mode::Stopped => 0,
            Mode::Manual => 1,
            Mode::Autonomous => 2,
            Mode::Calibration => 3,
        }
    }

    /// Inverse of [`Self::to_u8`]; an unknown code reads as `Stopped`, the safe side.
    pub fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Manual,
            2 => Mode::Autonomous,
            3 => Mode::Calibration,
            _ => Mode::Stopped,
        }
    }
}

/// Which mode `start` enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriveMode {
    /// Drive from the phone's joystick ([`Mode::Manual`]).
    Manual,
    /// Drive with the policy ([`Mode::Autonomous`]); the default.
    Autonomous,
}

/// Why the output is neutral (for telemetry; transitions are logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeutralReason {
    /// The car is stopped: never started, stopped by the racer, or shut down.
    Stopped,
    /// The emergency stop is latched: reset it, then start again.
    EStop,
    /// Autonomous, but no fresh action within the stall timeout.
    Stall,
    /// Autonomous, started, no action yet (still within the stall bound).
    Waiting,
    /// Manual, but the last command is older than the manual timeout (or none).
    ManualExpired,
}

/// The arbiter's verdict for one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Neutral throttle, centred steering.
    Neutral(NeutralReason),
    /// Normalised commands in [-1, 1] for the servo driver.
    Drive {
        /// Steering in [-1, 1]; the calibration maps it to a pulse.
        steering: f32,
        /// Throttle in [-1, 1], already scaled by the max-speed setting.
        throttle: f32,
    },
    /// Raw pulse widths from the calibration wizard; `None` = that channel's `mid`.
    Pulses {
        /// Steering pulse, ns; holds until the wizard sends another.
        steering_ns: Option<u32>,
        /// Throttle pulse, ns; `None` once the wizard's last one is older than the
        /// manual timeout.
        throttle_ns: Option<u32>,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Start or calibration while the e-stop is latched: reset it first.
    #[error("emergency stop is latched: reset it first")]
    EStopLatched,
    /// Calibration asked for while driving: stop the car first.
    #[error("stop the car before entering calibration")]
    NotStopped,
    /// Calibration pulses outside calibration mode.
    #[error("not in calibration mode")]
    NotCalibrating,
    /// A manual command outside manual mode (routine after a stop; not logged).
    #[error("not in manual mode")]
    NotManual,
}

/// Timeouts in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Autonomous: longest gap without a fresh policy action before neutral
    /// (default 200 ms). Also the supervisor's bound for a hung loop.
    pub stall_ns: u64,
    /// Manual (and the wizard's throttle): dead-man time after the last command
    /// before neutral (default 250 ms).
    pub manual_ns: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            stall_ns: 200_000_000,
            manual_ns: 250_000_000,
        }
    }
}

/// The per-tick state machine that decides what goes to the wheels (see the
/// module docs). Only the control thread drives it.
#[derive(Debug)]
pub struct Arbiter {
    mode: Mode,
    drive_mode: DriveMode,
    estop: bool,
    max_speed_pct: u8,
    timeouts: Timeouts,
    /// (steering, throttle, time) of the newest manual command.
    manual: Option<(f32, f32, u64)>,
    /// (steering, throttle, time) of the newest policy action.
    action: Option<(f32, f32, u64)>,
    /// When autonomous mode was entered (the stall bound runs from here until
    /// the first action).
    entered_ns: u64,
    /// Latched "we are in a stall / expired" flags, so each is logged once.
    stalled: bool,
    manual_expired: bool,
    /// Calibration: steering pulse (holds), throttle pulse and when it came (expires).
    calib_steering: Option<u32>,
    calib_throttle: Option<(u32, u64)>,
    transitions: u64,
}

impl Arbiter {
    /// Stopped, e-stop clear, drive mode autonomous, max speed 0 %: nothing
    /// moves until the racer sets a max speed and starts.
    pub fn new(timeouts: Timeouts) -> Self {
        Arbiter {
            mode: Mode::Stopped,
            drive_mode: DriveMode::Autonomous,
            estop: false,
            max_speed_pct: 0,
            timeouts,
            manual: None,
            action: None,
            entered_ns: 0,
            stalled: false,
            manual_expired: true,
            calib_steering: None,
            calib_throttle: None,
            transitions: 0,
        }
    }

    /// What the car is doing now.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The mode the next [`Self::start`] enters.
    pub fn drive_mode(&self) -> DriveMode {
        self.drive_mode
    }
    /// True from [`Self::estop`] until [`Self::reset_estop`]: every decision is neutral.
    pub fn estop_latched(&self) -> bool {
        self.estop
    }
    /// Max-speed setting, 0-100 %; scales the throttle in both driving modes.
    pub fn max_speed_pct(&self) -> u8 {
        self.max_speed_pct
    }
    /// The max-speed setting as the action mapper's scale, 0.0-1.0.
    pub fn max_speed_scale(&self) -> f32 {
        f32::from(self.max_speed_pct) / 100.0
    }
    /// True while the stall rule holds the car in neutral.
    pub fn stalled(&self) -> bool {
        self.stalled
    }
    /// How many mode/latch transitions happened (tests, telemetry).
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    fn set_mode(&mut self, now_ns: u64, mode: Mode, reason: &str) {
        if self.mode != mode {
            info!(
                from = self.mode.as_str(),
                to = mode.as_str(),
                reason,
                "mode change"
            );
            self.mode = mode;
            self.transitions += 1;
        }
        self.entered_ns = now_ns;
        self.stalled = false;
        self.manual_expired = true;
        self.action = None;
        self.manual = None;
        self.calib_steering = None;
        self.calib_throttle = None;
    }

    /// Choose the mode `start` enters. While driving, switches at once.
    pub fn select(&mut self, now_ns: u64, drive_mode: DriveMode) {
        self.drive_mode = drive_mode;
        if matches!(self.mode, Mode::Manual | Mode::Autonomous) {
            let m = match drive_mode {
                DriveMode::Manual => Mode::Manual,
                DriveMode::Autonomous => Mode::Autonomous,
            };
            self.set_mode(now_ns, m, "drive mode selected");
        }
    }

    /// Enter the selected drive mode, with fresh stall and dead-man clocks and
    /// no old command. Refused while the e-stop is latched.
    pub fn start(&mut self, now_ns: u64) -> Result<(), Refused> {
        if self.estop {
            warn!(reason = "emergency stop latched", "start refused");
            return Err(Refused::EStopLatched);
        }
        let m = match self.drive_mode {
            DriveMode::Manual => Mode::Manual,
            DriveMode::Autonomous => Mode::Autonomous,
        };
        self.set_mode(now_ns, m, "start");
        Ok(())
    }

    /// Back to [`Mode::Stopped`] (neutral) and forget pending commands;
    /// `reason` goes to the log.
    pub fn stop(&mut self, now_ns: u64, reason: &str) {
        self.set_mode(now_ns, Mode::Stopped, reason);
    }

    /// Latch the emergency stop: neutral now, and nothing moves until [`Arbiter::reset_estop`].
    pub fn estop(&mut self, now_ns: u64, reason: &str) {
        if !self.estop {
            warn!(reason, "EMERGENCY STOP latched");
            self.estop = true;
            self.transitions += 1;
        }
        self.set_mode(now_ns, Mode::Stopped, reason);
    }

    /// Clear the latch. The car stays stopped; it needs a fresh start.
    pub fn reset_estop(&mut self, now_ns: u64) {
        if self.estop {
            info!(reason = "explicit reset", "emergency stop cleared");
            self.estop = false;
            self.transitions += 1;
        }
        self.set_mode(now_ns, Mode::Stopped, "e-stop reset");
    }

    /// Set the max speed, clamped to 100 %. Manual throttle is scaled here;
    /// policy actions are scaled by the brain from [`Self::max_speed_scale`].
    pub fn set_max_speed(&mut self, pct: u8) {
        let pct = pct.min(100);
        if pct != self.max_speed_pct {
            info!(
                from = self.max_speed_pct,
                to = pct,
                reason = "max speed set",
                "max speed"
            );
            self.max_speed_pct = pct;
        }
    }

    /// A manual drive command. Ignored (and refused) outside manual mode.
    pub fn manual(&mut self, now_ns: u64, steering: f32, throttle: f32) -> Result<(), Refused> {
        if self.mode != Mode::Manual {
            return Err(Refused::NotManual);
        }
        self.manual = Some((sanitize(steering), sanitize(throttle), now_ns));
        Ok(())
    }

    /// A fresh action from the policy (already scaled by the max-speed setting).
    pub fn action(&mut self, now_ns: u64, steering: f32, throttle: f32) {
        if self.mode == Mode::Autonomous {
            self.action = Some((sanitize(steering), sanitize(throttle), now_ns));
        }
    }

    /// Enter calibration mode for the wizard's raw pulses. Only from stopped
    /// (or calibrating); refused while driving or with the e-stop latched.
    pub fn enter_calibration(&mut self, now_ns: u64) -> Result<(), Refused> {
        if self.estop {
            return Err(Refused::EStopLatched);
        }
        if self.mode != Mode::Stopped && self.mode != Mode::Calibration {
            return Err(Refused::NotStopped);
        }
        self.set_mode(now_ns, Mode::Calibration, "calibration requested");
        Ok(())
    }

    /// Leave calibration mode for stopped; no effect in any other mode.
    pub fn exit_calibration(&mut self, now_ns: u64) {
        if self.mode == Mode::Calibration {
            self.set_mode(now_ns, Mode::Stopped, "calibration finished");
        }
    }

    /// Raw pulse widths while calibrating; `None` leaves a channel as it is.
    /// The steering pulse holds; the throttle pulse expires after the manual
    /// timeout (the wizard re-sends it while a button is held).
    pub fn calibration_pulses(
        &mut self,
        now_ns: u64,
        steering_ns: Option<u32>,
        throttle_ns: Option<u32>,
    ) -> Result<(), Refused> {
        if self.mode != Mode::Calibration {
            return Err(Refused::NotCalibrating);
        }
        if let Some(s) = steering_ns {
            self.calib_steering = Some(s);
        }
        if let Some(t) = throttle_ns {
            self.calib_throttle = Some((t, now_ns));
        }
        Ok(())
    }

    /// The next moment a timeout rule could change the decision (dead-man
    /// expiry, stall, calibration throttle expiry), if one is pending. The
    /// loop wakes by then so each rule fires at its bound.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.estop {
            return None;
        }
        match self.mode {
            Mode::Stopped => None,
            Mode::Manual => self
                .manual
                .map(|(_, _, at)| at + self.timeouts.manual_ns + 1),
            Mode::Calibration => self
                .calib_throttle
                .map(|(_, at)| at + self.timeouts.manual_ns + 1),
            Mode::Autonomous => {
                let last = self.action.map(|a| a.2).unwrap_or(self.entered_ns);
                Some(last + self.timeouts.stall_ns + 1)
            }
        }
    }

    /// What to put on the wire now.
    pub fn decide(&mut self, now_ns: u64) -> Decision {
        if self.estop {
            return Decision::Neutral(NeutralReason::EStop);
        }
        match self.mode {
            Mode::Stopped => Decision::Neutral(NeutralReason::Stopped),
            Mode::Calibration => {
                let throttle_ns = match self.calib_throttle {
                    Some((t, at)) if now_ns.saturating_sub(at) <= self.timeouts.manual_ns => {
                        Some(t)
                    }
                    _ => None,
                };
                Decision::Pulses {
                    steering_ns: self.calib_steering,
                    throttle_ns,
                }
            }
            Mode::Manual => match self.manual {
                Some((s, t, at)) if now_ns.saturating_sub(at) <= self.timeouts.manual_ns => {
                    if self.manual_expired {
                        self.manual_expired = false;
                    }
                    Decision::Drive {
                        steering: s,
                        throttle: t * self.max_speed_scale(),
                    }
                }
                _ => {
                    if !self.manual_expired {
                        warn!(
                            reason = "no manual command within the dead-man timeout",
                            timeout_ms = self.timeouts.manual_ns / 1_000_000,
                            "manual command expired: neutral"
                        );
                        self.manual_expired = true;
                        self.transitions += 1;
                    }
                    Decision::Neutral(NeutralReason::ManualExpired)
                }
            },
            Mode::Autonomous => {
                let last = self.action.map(|a| a.2).unwrap_or(self.entered_ns);
                let fresh = now_ns.saturating_sub(last) <= self.timeouts.stall_ns;
                if fresh {
                    if self.stalled {
                        info!(reason = "fresh actions again", "stall cleared");
                        self.stalled = false;
                        self.transitions += 1;
                    }
                    match self.action {
                        Some((s, t, _)) => Decision::Drive {
                            steering: s,
                            throttle: t,
                        },
                        None => Decision::Neutral(NeutralReason::Waiting),
                    }
                } else {
                    if !self.stalled {
                        warn!(
                            reason = "no fresh action (camera stall, slow or failed inference)",
                            timeout_ms = self.timeouts.stall_ns / 1_000_000,
                            "stall: neutral throttle, centred steering"
                        );
                        self.stalled = true;
                        self.transitions += 1;
                    }
                    Decision::Neutral(NeutralReason::Stall)
                }
            }
        }
    }
}

/// NaN becomes 0 (neutral), everything else is clamped to [-1, 1]; the
/// servo driver clamps and counts too, this keeps telemetry honest.
fn sanitize(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn auto() -> Arbiter {
        let mut a = Arbiter::new(Timeouts::default());
        a.set_max_speed(50);
        a.start(0).unwrap();
        a
    }

    #[test]
    fn starts_stopped_at_zero_speed() {
        let mut a = Arbiter::new(Timeouts::default());
        assert_eq!(a.mode(), Mode::Stopped);
        assert_eq!(a.max_speed_pct(), 0);
        assert_eq!(a.decide(0), Decision::Neutral(NeutralReason::Stopped));
    }

    #[test]
    fn autonomous_drives_fresh_actions_and_stalls_after_200ms() {
        let mut a = auto();
        assert_eq!(a.mode(), Mode::Autonomous);
        // No action yet: neutral but not a stall.
        assert_eq!(a.decide(10 * MS), Decision::Neutral(NeutralReason::Waiting));
        a.action(20 * MS, 0.5, 0.4);
        assert_eq!(
            a.decide(21 * MS),
            Decision::Drive {
                steering: 0.5,
                throttle: 0.4
            }
        );
        // Camera stalls: the last action is held up to the bound, then neutral.
        assert!(matches!(a.decide(220 * MS), Decision::Drive { .. }));
        assert_eq!(a.decide(221 * MS), Decision::Neutral(NeutralReason::Stall));
        assert!(a.stalled());
        // Frames flow again.
        a.action(300 * MS, -0.2, 0.3);
        assert_eq!(
            a.decide(301 * MS),
            Decision::Drive {
                steering: -0.2,
                throttle: 0.3
            }
        );
        assert!(!a.stalled());
    }

    #[test]
    fn never_any_action_is_a_stall_within_bound() {
        let mut a = auto();
        assert_eq!(a.decide(201 * MS), Decision::Neutral(NeutralReason::Stall));
    }

    #[test]
    fn failing_inference_means_no_fresh_action_and_neutral_within_bound() {
        let mut a = auto();
        a.action(0, 0.0, 0.8);
        // Inference fails every frame from t=0 on: the loop calls nothing on the
        // arbiter; ticks keep coming at 15 Hz.
        let mut t = 0;
        let mut neutral_at = None;
        while t < 1000 * MS {
            t += 66 * MS;
            if let Decision::Neutral(NeutralReason::Stall) = a.decide(t) {
                neutral_at.get_or_insert(t);
            }
        }
        let at = neutral_at.expect("went neutral");
        assert!(at <= 200 * MS + 66 * MS, "neutral at {at}");
    }

    #[test]
    fn manual_command_expires_after_250ms() {
        let mut a = Arbiter::new(Timeouts::default());
        a.set_max_speed(100);
        a.select(0, DriveMode::Manual);
        a.start(0).unwrap();
        assert_eq!(a.decide(0), Decision::Neutral(NeutralReason::ManualExpired));
        a.manual(10 * MS, -1.0, 0.6).unwrap();
        assert_eq!(
            a.decide(260 * MS),
            Decision::Drive {
                steering: -1.0,
                throttle: 0.6
            }
        );
        assert_eq!(
            a.decide(261 * MS),
            Decision::Neutral(NeutralReason::ManualExpired)
        );
    }

    #[test]
    fn manual_throttle_is_capped_by_max_speed() {
        let mut a = Arbiter::new(Timeouts::default());
        a.select(0, DriveMode::Manual);
        a.start(0).unwrap();
        a.manual(0, 0.0, 1.0).unwrap();
        // Max speed starts at 0 %: the car does not move.
        assert_eq!(
            a.decide(1),
            Decision::Drive {
                steering: 0.0,
                throttle: 0.0
            }
        );
        a.set_max_speed(30);
        match a.decide(2) {
            Decision::Drive { throttle, .. } => assert!((throttle - 0.3).abs() < 1e-6),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn estop_latches_until_explicit_reset() {
        let mut a = auto();
        a.action(0, 0.0, 1.0);
        a.estop(1, "button");
        assert_eq!(a.decide(2), Decision::Neutral(NeutralReason::EStop));
        // Start, actions, manual: all refused while latched.
        assert_eq!(a.start(3), Err(Refused::EStopLatched));
        a.action(4, 0.0, 1.0);
        assert_eq!(a.decide(5), Decision::Neutral(NeutralReason::EStop));
        assert_eq!(a.enter_calibration(6), Err(Refused::EStopLatched));
        // Stop does not clear it either.
        a.stop(7, "stop");
        assert_eq!(a.decide(8), Decision::Neutral(NeutralReason::EStop));
        a.reset_estop(9);
        // Reset leaves the car stopped; it needs a fresh start.
        assert_eq!(a.decide(10), Decision::Neutral(NeutralReason::Stopped));
        a.start(11).unwrap();
        a.action(12, 0.1, 0.2);
        assert!(matches!(a.decide(13), Decision::Drive { .. }));
    }

    #[test]
    fn actions_outside_autonomous_are_ignored_and_nan_is_neutral() {
        let mut a = Arbiter::new(Timeouts::default());
        a.action(0, 1.0, 1.0);
        assert_eq!(a.decide(1), Decision::Neutral(NeutralReason::Stopped));
        assert_eq!(a.manual(0, 1.0, 1.0), Err(Refused::NotManual));
        let mut a = auto();
        a.action(0, f32::NAN, 7.0);
        assert_eq!(
            a.decide(1),
            Decision::Drive {
                steering: 0.0,
                throttle: 1.0
            }
        );
    }

    #[test]
    fn stop_clears_old_action_so_restart_waits_for_fresh_one() {
        let mut a = auto();
        a.action(0, 0.0, 1.0);
        a.stop(10, "user");
        a.start(20).unwrap();
        assert_eq!(a.decide(21), Decision::Neutral(NeutralReason::Waiting));
    }

    #[test]
    fn calibration_only_from_stopped_and_throttle_pulse_expires() {
        let mut a = auto();
        assert_eq!(a.enter_calibration(0), Err(Refused::NotStopped));
        a.stop(1, "user");
        a.enter_calibration(2).unwrap();
        assert_eq!(
            a.decide(3),
            Decision::Pulses {
                steering_ns: None,
                throttle_ns: None
            }
        );
        a.calibration_pulses(10 * MS, Some(1_500_000), Some(1_600_000))
            .unwrap();
        assert_eq!(
            a.decide(100 * MS),
            Decision::Pulses {
                steering_ns: Some(1_500_000),
                throttle_ns: Some(1_600_000)
            }
        );
        // Steering holds (the wheels stay where the wizard put them); throttle
        // drops to neutral when the wizard goes quiet.
        assert_eq!(
            a.decide(261 * MS),
            Decision::Pulses {
                steering_ns: Some(1_500_000),
                throttle_ns: None
            }
        );
        a.exit_calibration(300 * MS);
        assert_eq!(
            a.decide(301 * MS),
            Decision::Neutral(NeutralReason::Stopped)
        );
        assert_eq!(
            a.calibration_pulses(302 * MS, None, None),
            Err(Refused::NotCalibrating)
        );
    }

    #[test]
    fn switching_drive_mode_while_running_takes_effect() {
        let mut a = auto();
        a.select(5, DriveMode::Manual);
        assert_eq!(a.mode(), Mode::Manual);
        a.select(6, DriveMode::Autonomous);
        assert_eq!(a.mode(), Mode::Autonomous);
        a.stop(7, "user");
        a.select(8, DriveMode::Manual);
        assert_eq!(a.mode(), Mode::Stopped);
    }
}
