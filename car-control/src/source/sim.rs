//! The simulated camera, closing the loop through the sim actuator.
//!
//! Each frame: read what the sim actuator last put on the wire (the
//! [`SimLink`]: normalised commands, calibration undone), convert to the
//! car's units (steering x 30 deg, throttle x 4 m/s, the sim's top speed),
//! step the simulator one 15 Hz step through the sim crate's [`LapRunner`]
//! (continuous laps, off-track recovery, lap timing), and render into a
//! preallocated buffer. Timestamps are on the simulator's clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use servo_driver::sim_link::SimLink;
use sim::{CarAction, Channels, LapReport, LapRunner, Sim, SimConfig, Track, STEP_DT};

use crate::clock::{monotonic_ns, sleep_until};
use crate::frame::{Frame, FrameSource, PixelFormat, SourceError};

/// Lap statistics the source shares with the rest of the process (web UI
/// status, the headless summary). Updated on lap events only.
#[derive(Debug, Default)]
pub struct SimStatus {
    /// The latest lap report; updated on lap and off-track events only.
    pub report: Mutex<Option<LapReport>>,
    /// Progress of the current lap x 1000 (0-100000), for a lock-free peek.
    pub progress_milli: AtomicU64,
    /// Metres driven x 1000.
    pub travelled_mm: AtomicU64,
}

/// How the simulated camera renders and when its stream ends.
pub struct SimOptions {
    /// Frame width, pixels; match the model's input.
    pub width: u32,
    /// Frame height, pixels.
    pub height: u32,
    /// Gray or RGB frames.
    pub channels: Channels,
    /// Pace at 15 Hz of wall time; false = as fast as the loop takes frames.
    pub real_time: bool,
    /// End the stream after this many completed laps.
    pub laps: Option<usize>,
    /// End the stream after this many simulated steps (a car that never
    /// finishes a lap must not run forever).
    pub max_steps: Option<u64>,
    /// Fixes the start pose, the domain randomisation and the frame noise: the
    /// same seed and commands give the same run.
    pub seed: u64,
}

/// The simulator as a [`FrameSource`]: each frame steps the car with what
/// the sim backend last put on the [`SimLink`].
pub struct SimSource {
    runner: LapRunner,
    link: Arc<SimLink>,
    buf: Vec<u8>,
    width: u32,
    height: u32,
    channels: Channels,
    real_time: bool,
    laps: Option<usize>,
    max_steps: Option<u64>,
    seq: u64,
    /// Wall-clock time the next frame is due (real-time pacing).
    next_due_ns: u64,
    status: Arc<SimStatus>,
    /// Total metres driven (progress advanced), across laps.
    travelled_m: f64,
    last_lap_seen: usize,
    last_offtrack_seen: u32,
}

impl SimSource {
    /// A simulated car on `track`, driven through `link`, reset with
    /// `opts.seed`. Allocates the frame buffer now.
    pub fn new(track: Track, link: Arc<SimLink>, opts: SimOptions) -> Self {
        let mut runner = LapRunner::new(Sim::new(track, SimConfig::default()));
        runner.reset(opts.seed);
        let n = opts.width as usize * opts.height as usize * opts.channels.bytes_per_pixel();
        let status = Arc::new(SimStatus::default());
        *status.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(runner.report());
        SimSource {
            runner,
            link,
            buf: vec![0; n],
            width: opts.width,
            height: opts.height,
            channels: opts.channels,
            real_time: opts.real_time,
            laps: opts.laps,
            max_steps: opts.max_steps,
            seq: 0,
            next_due_ns: 0,
            status,
            travelled_m: 0.0,
            last_lap_seen: 0,
            last_offtrack_seen: 0,
        }
    }

    /// A shared handle on the lap statistics, for the web UI.
    pub fn status(&self) -> Arc<SimStatus> {
        self.status.clone()
    }

    /// The lap report now (laps, lap times, off-track events); allocates, so
    /// not for the hot path.
    pub fn report(&self) -> LapReport {
        self.runner.report()
    }

    /// Metres driven along the track since the start (all laps).
    pub fn travelled_m(&self) -> f64 {
        self.travelled_m
    }

    fn publish_status(&mut self) {
        let laps = self.runner.laps_completed();
        let off = self.runner.offtrack_events();
        if laps != self.last_lap_seen || off != self.last_offtrack_seen {
            // Lap events are rare (seconds apart): a lock and a clone here do
            // not touch the per-frame path.
            self.last_lap_seen = laps;
            self.last_offtrack_seen = off;
            if let Ok(mut r) = self.status.report.try_lock() {
                *r = Some(self.runner.report());
            }
        }
        self.status.progress_milli.store(
            (self.runner.lap_progress() * 1000.0).max(0.0) as u64,
            Ordering::Relaxed,
        );
        self.status
            .travelled_mm
            .store((self.travelled_m * 1000.0) as u64, Ordering::Relaxed);
    }
}

impl FrameSource for SimSource {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame<'_>, SourceError> {
        if let Some(n) = self.laps {
            if self.runner.laps_completed() >= n {
                return Err(SourceError::EndOfStream);
            }
        }
        if let Some(m) = self.max_steps {
            if self.runner.steps() >= m {
                return Err(SourceError::EndOfStream);
            }
        }
        if self.real_time {
            let now = monotonic_ns();
            if self.next_due_ns == 0 {
                self.next_due_ns = now;
            }
            if self.next_due_ns > now + timeout.as_nanos() as u64 {
                std::thread::sleep(timeout);
                return Err(SourceError::Timeout(timeout));
            }
            sleep_until(self.next_due_ns);
            self.next_due_ns += (STEP_DT * 1e9) as u64;
        }
        if self.seq > 0 {
            // The first frame shows the start pose; every later one follows
            // one step driven with what is on the wire now.
            let (steering, throttle) = self.link.load();
            let action = CarAction::from_commands(
                f64::from(steering),
                f64::from(throttle),
                &self.runner.sim().config().car,
            );
            let before = self.runner.sim().travelled_m();
            let laps_before = self.runner.laps_completed();
            self.runner.step(action);
            let after = self.runner.sim().travelled_m();
            let len = self.runner.sim().track().length();
            let lapped = self.runner.laps_completed() > laps_before;
            let d = if lapped {
                after + len - before
            } else {
                after - before
            };
            if d.is_finite() && d > 0.0 && d < 10.0 {
                self.travelled_m += d;
            }
            self.publish_status();
        }
        let ch = self.channels;
        self.runner
            .sim_mut()
            .render_into(&mut self.buf, self.width as usize, self.height as usize, ch)
            .map_err(|e| SourceError::Device(format!("sim render: {e}")))?;
        let seq = self.seq;
        self.seq += 1;
        Ok(Frame {
            data: &self.buf,
            format: match ch {
                Channels::Gray => PixelFormat::Gray8,
                Channels::Rgb => PixelFormat::Rgb8,
            },
            width: self.width,
            height: self.height,
            timestamp_ns: (self.runner.steps() as f64 * STEP_DT * 1e9) as u64,
            seq,
        })
    }

    fn name(&self) -> &'static str {
        "sim"
    }

    fn monotonic_timestamps(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(link: Arc<SimLink>, laps: Option<usize>, max_steps: Option<u64>) -> SimSource {
        SimSource::new(
            Track::builtin("oval").unwrap(),
            link,
            SimOptions {
                width: 160,
                height: 120,
                channels: Channels::Gray,
                real_time: false,
                laps,
                max_steps,
                seed: 1,
            },
        )
    }

    #[test]
    fn throttle_on_the_wire_moves_the_car_and_stamps_follow_sim_clock() {
        let link = Arc::new(SimLink::default());
        let mut s = src(link.clone(), None, Some(100));
        let t = Duration::from_millis(10);
        let f0 = s.next_frame(t).unwrap();
        assert_eq!(
            (f0.width, f0.height, f0.format),
            (160, 120, PixelFormat::Gray8)
        );
        assert_eq!(f0.timestamp_ns, 0);
        // Neutral on the wire: the car stays put.
        for _ in 0..5 {
            s.next_frame(t).unwrap();
        }
        assert!(s.travelled_m() < 1e-6);
        link.store(0.0, 0.5);
        let mut last_ts = 0;
        for _ in 0..15 {
            last_ts = s.next_frame(t).unwrap().timestamp_ns;
        }
        // 20 steps at 15 Hz.
        assert_eq!(last_ts, (20.0 * STEP_DT * 1e9) as u64);
        // Up to 2 m/s for 1 s (the car accelerates): it moved.
        assert!(s.travelled_m() > 0.3, "{}", s.travelled_m());
    }

    #[test]
    fn ends_after_step_budget() {
        let link = Arc::new(SimLink::default());
        let mut s = src(link, Some(1), Some(10));
        let mut n = 0;
        while s.next_frame(Duration::from_millis(1)).is_ok() {
            n += 1;
        }
        assert_eq!(n, 11);
    }
}
