//! [`web_ui::CarApi`] over the loop's queues, telemetry ring and frame slot.
//! Everything here runs on the web server's threads; nothing makes the
//! control loop wait (commands go through the bounded queue, reads copy).

use std::path::Path;
use std::sync::{Arc, Mutex};

use web_ui::{
    ApiError, CalibrationView, CarApi, CarStatus, Channel, FrameAction, FrameCopy, ModelSummary,
    TelemetrySample,
};

use crate::arbiter::{DriveMode, Mode};
use crate::commands::{event, Command, ModelState, ModelStatus, Shared};
use crate::frame::PixelFormat;
use crate::pipeline::ModelLoader;
use crate::source::sim::SimStatus;

/// Record which model drives (start-up, before the loop runs).
pub fn set_active_model(shared: &Shared, origin: &str, _backend: &str) {
    crate::pipeline::update_status(shared, |s| {
        s.state = ModelState::Loaded;
        s.active = Some(origin.to_string());
        s.requested = Some(origin.to_string());
        s.error = None;
    });
}

/// The loader's status as the web UI's JSON has it. (A function, not a
/// `From`: both types belong to other crates.)
fn to_web_model(s: &ModelStatus) -> web_ui::ModelStatus {
    web_ui::ModelStatus {
        state: match s.state {
            ModelState::None => web_ui::ModelState::None,
            ModelState::Loading => web_ui::ModelState::Loading,
            ModelState::Loaded => web_ui::ModelState::Loaded,
            ModelState::Error => web_ui::ModelState::Error,
        },
        active: s.active.clone(),
        requested: s.requested.clone(),
        error: s.error.clone(),
    }
}

pub struct RuntimeApi {
    shared: Arc<Shared>,
    actuator: servo_driver::ActuatorConfig,
    backend: Option<policy::Backend>,
    loader: Option<Arc<ModelLoader>>,
    simulated: bool,
    _sim: Option<Arc<SimStatus>>,
    /// The gauge's last reading (absent without one).
    battery: Arc<crate::battery::BatteryState>,
    live: Mutex<servo_driver::Calibration>,
    actuator_name: String,
    /// The board's tail light (None: it has none).
    tail: Option<Arc<crate::lights::TailControl>>,
    /// Stamped on every status request: the status LEDs show a phone is on.
    phone: Arc<crate::lights::PhoneSeen>,
}

impl RuntimeApi {
    pub fn new(
        shared: Arc<Shared>,
        actuator: servo_driver::ActuatorConfig,
        backend: Option<policy::Backend>,
        loader: Option<Arc<ModelLoader>>,
        simulated: bool,
        sim: Option<Arc<SimStatus>>,
        battery: Arc<crate::battery::BatteryState>,
    ) -> Self {
        let live = actuator
            .load_calibration()
            .unwrap_or_else(|_| servo_driver::Calibration::stock());
        let actuator_name = actuator.backend.as_str().to_string();
        RuntimeApi {
            shared,
            actuator,
            backend,
            loader,
            simulated,
            _sim: sim,
            battery,
            live: Mutex::new(live),
            actuator_name,
            tail: None,
            phone: Arc::default(),
        }
    }

    /// The tail light the phone sets, and where phone visits are stamped.
    pub fn with_lights(
        mut self,
        tail: Option<Arc<crate::lights::TailControl>>,
        phone: Arc<crate::lights::PhoneSeen>,
    ) -> Self {
        self.tail = tail;
        self.phone = phone;
        self
    }

    fn send(&self, c: Command) -> Result<(), ApiError> {
        if self.shared.send(c) {
            Ok(())
        } else {
            Err(ApiError::Busy)
        }
    }

    fn estop_latched(&self) -> bool {
        self.shared.telemetry.latest().is_some_and(|s| s.estop)
    }

    fn mode_now(&self) -> Mode {
        self.shared
            .telemetry
            .latest()
            .map(|s| s.mode())
            .unwrap_or(Mode::Stopped)
    }

    fn set_live(&self, cal: servo_driver::Calibration) -> Result<(), ApiError> {
        self.send(Command::SetCalibration(cal))?;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = cal;
        Ok(())
    }
}

fn to_web_mode(m: Mode) -> web_ui::Mode {
    match m {
        Mode::Stopped => web_ui::Mode::Stopped,
        Mode::Manual => web_ui::Mode::Manual,
        Mode::Autonomous => web_ui::Mode::Autonomous,
        Mode::Calibration => web_ui::Mode::Calibration,
    }
}

/// The driver's calibration as the web shows it (the one conversion; the
/// fuzz target's fake car uses it too).
pub fn to_web_cal(c: &servo_driver::Calibration) -> web_ui::Calibration {
    let ch = |c: servo_driver::ChannelCalibration| web_ui::ChannelCalibration {
        min: c.min,
        mid: c.mid,
        max: c.max,
        polarity: c.polarity,
    };
    web_ui::Calibration {
        steering: ch(c.steering),
        throttle: ch(c.throttle),
        period_ns: c.period_ns,
    }
}

/// A calibration from the web, as the driver takes it.
pub fn from_web_cal(c: &web_ui::Calibration) -> servo_driver::Calibration {
    let ch = |c: web_ui::ChannelCalibration| servo_driver::ChannelCalibration {
        min: c.min,
        mid: c.mid,
        max: c.max,
        polarity: c.polarity,
    };
    servo_driver::Calibration {
        steering: ch(c.steering),
        throttle: ch(c.throttle),
        period_ns: c.period_ns,
    }
}

fn cpu_temp_c() -> Option<f32> {
    let t = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    t.trim().parse::<f32>().ok().map(|m| m / 1000.0)
}

/// Frame period at 15 fps: a step longer than this missed its deadline.
const DEADLINE_US: f32 = 66_667.0;

impl CarApi for RuntimeApi {
    fn status(&self) -> CarStatus {
        self.phone.stamp();
        let latest = self.shared.telemetry.latest().unwrap_or_default();
        let mut recent = Vec::with_capacity(128);
        let n = self.shared.telemetry.written();
        self.shared
            .telemetry
            .read_since(n.saturating_sub(120), &mut recent);
        let mut lat: Vec<f32> = recent
            .iter()
            .filter(|s| s.has_frame)
            .map(|s| {
                if s.capture_to_pwm_us > 0.0 {
                    s.capture_to_pwm_us
                } else {
                    s.total_us
                }
            })
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f32| {
            if lat.is_empty() {
                0.0
            } else {
                lat[((lat.len() - 1) as f32 * p).round() as usize] / 1000.0
            }
        };
        let last_event = if latest.estop {
            Some("emergency stop latched".to_string())
        } else if latest.stalled {
            Some("stall: no fresh action, neutral".to_string())
        } else {
            event::text(
                self.shared
                    .last_event
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .map(String::from)
        };
        CarStatus {
            mode: to_web_mode(latest.mode()),
            estop: latest.estop,
            max_speed_pct: f32::from(latest.max_speed_pct),
            model: to_web_model(
                &self
                    .shared
                    .model_status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
            fps: latest.fps,
            latency_p50_ms: pct(0.5),
            latency_p99_ms: pct(0.99),
            cpu_temp_c: cpu_temp_c(),
            battery_pct: self.battery.percent(),
            battery_level: self.battery.level(),
            battery_low: self.battery.low(),
            last_event,
            simulated: self.simulated,
            actuator: self.actuator_name.clone(),
        }
    }

    fn estop(&self) -> Result<(), ApiError> {
        // The dedicated path: an atomic the loop reads before every write.
        self.shared.estop();
        Ok(())
    }

    fn command(&self, cmd: web_ui::Command) -> Result<(), ApiError> {
        match cmd {
            // The arbiter refuses these too; refusing here as well tells the
            // phone at once (HTTP 409) instead of a silent no-op.
            web_ui::Command::SetMode { mode }
                if mode != web_ui::Mode::Stopped && self.estop_latched() =>
            {
                Err(ApiError::Refused(
                    "emergency stop is latched: reset it before starting".into(),
                ))
            }
            web_ui::Command::SetMode { mode } => match mode {
                web_ui::Mode::Stopped => self.send(Command::Stop),
                web_ui::Mode::Manual => {
                    self.send(Command::Select(DriveMode::Manual))?;
                    if self.mode_now() != Mode::Manual {
                        self.send(Command::Start)?;
                    }
                    Ok(())
                }
                web_ui::Mode::Autonomous => {
                    self.send(Command::Select(DriveMode::Autonomous))?;
                    if self.mode_now() != Mode::Autonomous {
                        self.send(Command::Start)?;
                    }
                    Ok(())
                }
                web_ui::Mode::Calibration => self.send(Command::EnterCalibration),
            },
            web_ui::Command::EStop => {
                self.shared.estop();
                Ok(())
            }
            web_ui::Command::ResetEStop => self.send(Command::ResetEStop),
            web_ui::Command::SetMaxSpeed { percent } => {
                let p = if percent.is_finite() {
                    percent.clamp(0.0, 100.0).round() as u8
                } else {
                    0
                };
                self.send(Command::MaxSpeed(p))
            }
            web_ui::Command::Manual { steering, throttle } => {
                // The stick's own slot, never the queue: a flood of stick
                // positions cannot crowd out a mode change. Now is when the
                // web server received it: the dead-man counts from here.
                self.shared
                    .manual(steering, throttle, crate::clock::monotonic_ns());
                Ok(())
            }
        }
    }

    fn telemetry_since(&self, after_seq: u64, out: &mut Vec<TelemetrySample>) -> u64 {
        let mut tmp = Vec::with_capacity(256);
        let newest = self.shared.telemetry.read_since(after_seq, &mut tmp);
        let room = out.capacity().saturating_sub(out.len());
        let skip = if room > 0 && tmp.len() > room {
            tmp.len() - room
        } else {
            0
        };
        out.extend(tmp.iter().skip(skip).map(|s| {
            let total = if s.capture_to_pwm_us > 0.0 {
                s.capture_to_pwm_us
            } else {
                s.total_us
            };
            TelemetrySample {
                seq: s.tick,
                timestamp_ns: if s.has_frame {
                    s.timestamp_ns
                } else {
                    s.tick_ns
                },
                mode: Some(to_web_mode(s.mode())),
                steering: s.wire_steering,
                throttle: s.wire_throttle,
                action_index: (s.action_index >= 0).then_some(s.action_index as u32),
                total_us: total as u32,
                inference_us: s.inference_us as u32,
                deadline_missed: s.stalled || total > DEADLINE_US,
                dropped_frames: s.dropped,
            }
        }));
        newest
    }

    fn latest_frame(&self, after_seq: u64, out: &mut FrameCopy) -> bool {
        let Some(m) = self.shared.frame.read_into(Some(after_seq), &mut out.data) else {
            return false;
        };
        out.format = match m.format {
            PixelFormat::Gray8 => web_ui::PixelFormat::Gray8,
            PixelFormat::Rgb8 => web_ui::PixelFormat::Rgb8,
            PixelFormat::Jpeg => web_ui::PixelFormat::Jpeg,
            PixelFormat::Yuyv => {
                // Browsers get the Y plane: gray, half the bytes.
                let n = out.data.len() / 2;
                for i in 0..n {
                    out.data[i] = out.data[2 * i];
                }
                out.data.truncate(n);
                web_ui::PixelFormat::Gray8
            }
        };
        out.seq = m.seq;
        out.timestamp_ns = m.timestamp_ns;
        out.width = m.width;
        out.height = m.height;
        out.action = m.action.map(|a| FrameAction {
            index: a.index.map(|i| i as u32),
            steering_angle_deg: a.steering_angle_deg,
            speed_mps: a.speed_mps,
            steering: a.steering,
            throttle: a.throttle,
        });
        true
    }

    fn calibration(&self) -> CalibrationView {
        let live = *self.live.lock().unwrap_or_else(|e| e.into_inner());
        let saved = self.actuator.load_calibration().unwrap_or(live);
        CalibrationView {
            saved: to_web_cal(&saved),
            live: to_web_cal(&live),
        }
    }

    fn calibration_set(&self, cal: web_ui::Calibration) -> Result<(), ApiError> {
        let c = from_web_cal(&cal);
        c.validate().map_err(|e| ApiError::Invalid(e.to_string()))?;
        if matches!(self.mode_now(), Mode::Manual | Mode::Autonomous) {
            return Err(ApiError::Refused(
                "stop the car before changing the calibration".into(),
            ));
        }
        self.set_live(c)
    }

    fn calibration_pulse(&self, channel: Channel, pulse_ns: u32) -> Result<(), ApiError> {
        if matches!(self.mode_now(), Mode::Manual | Mode::Autonomous) {
            return Err(ApiError::Refused(
                "enter calibration mode first (stop the car)".into(),
            ));
        }
        let ns = pulse_ns.clamp(500_000, 2_500_000);
        let cmd = match channel {
            Channel::Steering => Command::CalibrationPulses {
                steering_ns: Some(ns),
                throttle_ns: None,
            },
            Channel::Throttle => Command::CalibrationPulses {
                steering_ns: None,
                throttle_ns: Some(ns),
            },
        };
        self.send(cmd)
    }

    fn calibration_save(&self) -> Result<web_ui::Calibration, ApiError> {
        let live = *self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dir) = self.actuator.calibration.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| ApiError::Internal(format!("{}: {e}", dir.display())))?;
        }
        live.save(&self.actuator.calibration)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(to_web_cal(&live))
    }

    fn calibration_cancel(&self) -> Result<web_ui::Calibration, ApiError> {
        let saved = self
            .actuator
            .load_calibration()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.set_live(saved)?;
        Ok(to_web_cal(&saved))
    }

    fn calibration_import_stock(&self, json: &[u8]) -> Result<web_ui::Calibration, ApiError> {
        let text = std::str::from_utf8(json)
            .map_err(|_| ApiError::Invalid("calibration.json: not UTF-8 text".into()))?;
        let cal =
            servo_driver::Calibration::from_deepracer_json(text, Path::new("calibration.json"))
                .map_err(|e| ApiError::Invalid(e.to_string()))?;
        if matches!(self.mode_now(), Mode::Manual | Mode::Autonomous) {
            return Err(ApiError::Refused(
                "stop the car before changing the calibration".into(),
            ));
        }
        self.set_live(cal)?;
        Ok(to_web_cal(&cal))
    }

    fn validate_model(&self, dir: &Path) -> Result<ModelSummary, String> {
        let backend = self
            .backend
            .as_ref()
            .ok_or_else(|| "no inference backend is available on this car".to_string())?;
        // Validated in a child process with resource limits, never here:
        // a model that aborts or spins the engine takes only the child
        // down. The summary comes from the child's report, so the upload
        // is not loaded into the daemon at all.
        let report = ModelLoader::check_first(dir, backend)?;
        let s = &report["summary"];
        let text = |k: &str| {
            s[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{}: the model check's report has no {k}", dir.display()))
        };
        Ok(ModelSummary {
            action_space: text("action_space")?,
            input: text("input")?,
            sensors: s["sensors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn load_model(&self, dir: &Path) -> Result<(), ApiError> {
        let loader = self.loader.as_ref().ok_or_else(|| {
            ApiError::Internal("no inference backend is available on this car".into())
        })?;
        if loader.request(dir.to_path_buf()) {
            Ok(())
        } else {
            Err(ApiError::Internal("model loader thread has stopped".into()))
        }
    }

    fn tail_light(&self) -> Option<web_ui::TailLightColour> {
        let c = self.tail.as_ref()?.colour();
        Some(web_ui::TailLightColour {
            r: c.r,
            g: c.g,
            b: c.b,
        })
    }

    fn set_tail_light(
        &self,
        c: web_ui::TailLightColour,
    ) -> Result<web_ui::TailLightColour, ApiError> {
        let tail = self
            .tail
            .as_ref()
            .ok_or_else(|| ApiError::Refused("this car has no tail light".into()))?;
        tail.set(servo_driver::leds::Rgb {
            r: c.r,
            g: c.g,
            b: c.b,
        })
        .map_err(ApiError::Internal)?;
        Ok(c)
    }
}
