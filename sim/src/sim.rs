//! The simulated car on a track: physics, episode rules, reward params and
//! the camera view.

use serde::{Deserialize, Serialize};

use crate::params::Params;
use crate::render::{
    self, CameraConfig, Channels, Look, Randomization, Raster, RayTables, RenderError,
};
use crate::rng::{mix64, Rng};
use crate::track::{Track, TrackPos};

/// Control steps per second (one camera frame per step), as in DeepRacer.
pub const STEP_HZ: f64 = 15.0;
/// Seconds per control step.
pub const STEP_DT: f64 = 1.0 / STEP_HZ;

/// The kinematic car.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CarConfig {
    /// Front to rear axle, metres.
    pub wheelbase_m: f64,
    /// Left to right wheel contact, metres.
    pub track_m: f64,
    /// Steering lock, degrees either side.
    pub max_steering_deg: f64,
    /// Top speed, m/s. Commands are clamped to `[0, max_speed]`; DeepRacer
    /// actions use 0.1-4 m/s, and 0 lets a stopped daemon stop the car.
    pub max_speed_mps: f64,
    /// First-order lag time constants, seconds (0 = instant).
    pub steering_tau_s: f64,
    pub speed_tau_s: f64,
    /// Physics sub-steps per control step.
    pub substeps: u32,
    /// Where DeepRacer's `x, y` point sits ahead of the origin, metres.
    pub params_point_ahead_m: f64,
}

impl Default for CarConfig {
    fn default() -> Self {
        CarConfig {
            wheelbase_m: 0.164,
            track_m: 0.162,
            max_steering_deg: 30.0,
            max_speed_mps: 4.0,
            steering_tau_s: 0.05,
            speed_tau_s: 0.2,
            substeps: 4,
            params_point_ahead_m: 0.14,
        }
    }
}

/// Where `reset` puts the car.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartPolicy {
    /// On the centre line at the start line.
    #[default]
    StartLine,
    /// On the centre line at this progress (0-100).
    Progress(f64),
    /// On the centre line at a progress drawn from the seed.
    Random,
}

/// Episode rules and world settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub car: CarConfig,
    pub camera: CameraConfig,
    pub randomization: Randomization,
    pub start: StartPolicy,
    /// Start pose jitter drawn at reset: lateral offset (m) and heading
    /// (degrees), half-ranges.
    pub start_lateral_jitter_m: f64,
    pub start_heading_jitter_deg: f64,
    /// Episode ends after this many steps (DeepRacer: 100,000).
    pub max_steps: u64,
    /// Episode ends after this many consecutive steps of decreasing progress.
    pub reversed_steps: u32,
    /// Episode ends after this many consecutive steps moving at most
    /// `immobile_m`.
    pub immobile_steps: u32,
    pub immobile_m: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            car: CarConfig::default(),
            camera: CameraConfig::default(),
            randomization: Randomization::none(),
            start: StartPolicy::StartLine,
            start_lateral_jitter_m: 0.0,
            start_heading_jitter_deg: 0.0,
            max_steps: 100_000,
            reversed_steps: 15,
            immobile_steps: 15,
            immobile_m: 0.0003,
        }
    }
}

/// One control command, in the car's units (as a DeepRacer action).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CarAction {
    /// Degrees, positive steers left.
    pub steering_deg: f64,
    /// Metres per second.
    pub speed_mps: f64,
}

impl CarAction {
    /// Normalised servo/ESC commands in [-1, 1] (what the daemon puts on
    /// the wire, what a trained policy outputs) as this car's action: the
    /// steering lock and top speed come from `car`. NaN or infinite
    /// commands are neutral (0), others are clamped; the simulated car has
    /// no reverse, so a negative throttle brakes to a stop. The one
    /// conversion the daemon's simulated camera and the trainer share.
    pub fn from_commands(steering: f64, throttle: f64, car: &CarConfig) -> CarAction {
        let finite = |x: f64| {
            if x.is_finite() {
                x.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        };
        CarAction {
            steering_deg: finite(steering) * car.max_steering_deg,
            speed_mps: finite(throttle).max(0.0) * car.max_speed_mps,
        }
    }
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// No wheel on the road.
    OffTrack,
    /// Moved at most `immobile_m` for `immobile_steps` steps.
    Immobilized,
    /// Progress decreased for `reversed_steps` consecutive steps.
    Reversed,
    /// Progress reached 100.
    LapComplete,
    /// `max_steps` reached.
    StepLimit,
}

/// What one step produced.
#[derive(Debug, Clone, Copy)]
pub struct StepResult<'a> {
    pub params: &'a Params,
    /// `Some` when the episode ended on this step.
    pub termination: Option<Termination>,
}

/// The car's physical state; the origin is the rear axle's centre.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CarState {
    pub x: f64,
    pub y: f64,
    /// Radians, counter-clockwise from +x.
    pub yaw: f64,
    /// Actual (lagged) speed, m/s.
    pub speed: f64,
    /// Actual (lagged) steering angle, radians.
    pub steer: f64,
}

/// A deterministic DeepRacer-style simulator for one track.
#[derive(Debug, Clone)]
pub struct Sim {
    track: Track,
    cfg: SimConfig,
    raster: Raster,
    tables: RayTables,
    look: Look,
    params: Params,
    car: CarState,
    seed: u64,
    /// Track position of the params point (continuity hint for searches).
    pos: TrackPos,
    steps: u64,
    /// Unwrapped arc length driven since the episode start, metres.
    travelled: f64,
    prev_travelled: f64,
    reversed_count: u32,
    immobile_count: u32,
    alpha_steer: f64,
    alpha_speed: f64,
    done: Option<Termination>,
}

/// Search window (metres of arc) when following the car along the track.
const FOLLOW_WINDOW_M: f64 = 2.0;

impl Sim {
    /// Builds the simulator (rasterises the track: a few milliseconds) and
    /// resets it with seed 0.
    pub fn new(track: Track, cfg: SimConfig) -> Sim {
        let raster = Raster::build(&track);
        let params = Params::new(track.waypoints().to_vec(), track.width(), track.length());
        let sub_dt = STEP_DT / cfg.car.substeps.max(1) as f64;
        let alpha = |tau: f64| {
            if tau <= 0.0 {
                1.0
            } else {
                1.0 - (-sub_dt / tau).exp()
            }
        };
        let look = Look::sample(&mut Rng::new(0), &Randomization::none(), &cfg.camera);
        let mut sim = Sim {
            pos: track.nearest(track.waypoints()[0]),
            track,
            raster,
            tables: RayTables::default(),
            look,
            params,
            car: CarState::default(),
            seed: 0,
            steps: 0,
            travelled: 0.0,
            prev_travelled: 0.0,
            reversed_count: 0,
            immobile_count: 0,
            alpha_steer: alpha(cfg.car.steering_tau_s),
            alpha_speed: alpha(cfg.car.speed_tau_s),
            done: None,
            cfg,
        };
        sim.reset(0);
        sim
    }

    pub fn track(&self) -> &Track {
        &self.track
    }
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }
    /// The DeepRacer reward params after the last step / reset / place.
    pub fn params(&self) -> &Params {
        &self.params
    }
    pub fn car(&self) -> &CarState {
        &self.car
    }
    /// Track position of the params point.
    pub fn track_pos(&self) -> &TrackPos {
        &self.pos
    }
    pub fn steps(&self) -> u64 {
        self.steps
    }
    /// Simulated seconds since the episode started.
    pub fn time_s(&self) -> f64 {
        self.steps as f64 * STEP_DT
    }
    /// Unwrapped metres of centre line driven since the episode start (can
    /// exceed a lap and go negative).
    pub fn travelled_m(&self) -> f64 {
        self.travelled
    }
    /// Why the episode ended, if it has.
    pub fn termination(&self) -> Option<Termination> {
        self.done
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Starts a new episode. The seed fixes the start pose (per the start
    /// policy and jitter), the domain randomisation and the frame noise.
    pub fn reset(&mut self, seed: u64) {
        self.seed = seed;
        let mut rng = Rng::new(seed);
        let r = self.cfg.randomization;
        self.look = Look::sample(&mut rng, &r, &self.cfg.camera);
        self.raster.scatter_clutter(&mut rng, r.clutter);
        let progress = match self.cfg.start {
            StartPolicy::StartLine => 0.0,
            StartPolicy::Progress(p) => p,
            StartPolicy::Random => rng.unit() * 100.0,
        };
        let lat = rng.sym(self.cfg.start_lateral_jitter_m);
        let head = rng.sym(self.cfg.start_heading_jitter_deg).to_radians();
        self.place(progress, lat, head);
    }

    /// Puts the car at `progress_pct` of the lap, `lateral_offset_m` left of
    /// the centre line (negative: right), heading along the track plus
    /// `heading_offset_rad`, at rest; restarts the episode's counters (the
    /// seed's randomisation stays).
    pub fn place(&mut self, progress_pct: f64, lateral_offset_m: f64, heading_offset_rad: f64) {
        let s = self.track.length() * progress_pct / 100.0;
        let (p, h) = self.track.point_at(s);
        let (sn, cs) = h.sin_cos();
        let yaw = wrap_angle(h + heading_offset_rad);
        self.car = CarState {
            x: p[0] - sn * lateral_offset_m,
            y: p[1] + cs * lateral_offset_m,
            yaw,
            speed: 0.0,
            steer: 0.0,
        };
        let seg = self.track.segment_at(s);
        let pp = self.params_point();
        self.pos = self.track.nearest_near(pp, seg, FOLLOW_WINDOW_M);
        self.steps = 0;
        self.travelled = 0.0;
        self.prev_travelled = 0.0;
        self.reversed_count = 0;
        self.immobile_count = 0;
        self.done = None;
        self.update_params(CarAction::default());
    }

    /// Puts the car back on the centre line at its nearest point, facing
    /// along the track, at rest: what DeepRacer evaluation does after an
    /// off-track. Lap progress and step count carry on.
    pub fn recover(&mut self) {
        let origin =
            self.track
                .nearest_near([self.car.x, self.car.y], self.pos.segment, FOLLOW_WINDOW_M);
        let (p, h) = self.track.point_at(origin.s);
        self.car = CarState {
            x: p[0],
            y: p[1],
            yaw: h,
            speed: 0.0,
            steer: 0.0,
        };
        let pp = self.params_point();
        let new_pos = self.track.nearest_near(pp, origin.segment, FOLLOW_WINDOW_M);
        self.travelled += self.track.arc_delta(self.pos.s, new_pos.s);
        self.prev_travelled = self.travelled;
        self.pos = new_pos;
        self.reversed_count = 0;
        self.immobile_count = 0;
        self.done = None;
        let a = CarAction {
            steering_deg: self.params.steering_angle,
            speed_mps: self.params.speed,
        };
        self.update_params(a);
    }

    /// Starts counting the next lap from here: progress drops by 100 %.
    pub fn rebase_lap(&mut self) {
        self.travelled -= self.track.length();
        self.prev_travelled -= self.track.length();
        if self.done == Some(Termination::LapComplete) {
            self.done = None;
        }
        self.update_progress();
    }

    /// Clears a termination so the car keeps driving (continuous use).
    pub fn clear_termination(&mut self) {
        self.done = None;
        self.reversed_count = 0;
        self.immobile_count = 0;
    }

    fn params_point(&self) -> [f64; 2] {
        let a = self.cfg.car.params_point_ahead_m;
        [
            self.car.x + a * self.car.yaw.cos(),
            self.car.y + a * self.car.yaw.sin(),
        ]
    }

    /// Advances one control step (1/15 s) and returns the new params and
    /// whether the episode ended. Stepping after the end keeps simulating
    /// and reports the same termination again.
    pub fn step(&mut self, action: CarAction) -> StepResult<'_> {
        let car_cfg = self.cfg.car;
        let max_steer = car_cfg.max_steering_deg;
        let steer_cmd_deg = if action.steering_deg.is_finite() {
            action.steering_deg.clamp(-max_steer, max_steer)
        } else {
            0.0
        };
        let steer_cmd = steer_cmd_deg.to_radians();
        let speed_cmd = if action.speed_mps.is_finite() {
            action.speed_mps.clamp(0.0, car_cfg.max_speed_mps)
        } else {
            0.0
        };
        let n = car_cfg.substeps.max(1);
        let dt = STEP_DT / n as f64;
        let (x0, y0) = (self.car.x, self.car.y);
        let c = &mut self.car;
        for _ in 0..n {
            c.steer += (steer_cmd - c.steer) * self.alpha_steer;
            c.speed += (speed_cmd - c.speed) * self.alpha_speed;
            let yaw_rate = c.speed * c.steer.tan() / car_cfg.wheelbase_m;
            // Midpoint heading: second-order accurate along the arc.
            let mid = c.yaw + 0.5 * yaw_rate * dt;
            c.x += c.speed * mid.cos() * dt;
            c.y += c.speed * mid.sin() * dt;
            c.yaw = wrap_angle(c.yaw + yaw_rate * dt);
        }
        let moved = ((c.x - x0).powi(2) + (c.y - y0).powi(2)).sqrt();
        self.steps += 1;
        let pp = self.params_point();
        let new_pos = self
            .track
            .nearest_near(pp, self.pos.segment, FOLLOW_WINDOW_M);
        self.prev_travelled = self.travelled;
        self.travelled += self.track.arc_delta(self.pos.s, new_pos.s);
        self.pos = new_pos;
        if self.travelled < self.prev_travelled {
            self.reversed_count += 1;
        } else {
            self.reversed_count = 0;
        }
        if moved <= self.cfg.immobile_m {
            self.immobile_count += 1;
        } else {
            self.immobile_count = 0;
        }
        self.update_params(CarAction {
            steering_deg: steer_cmd_deg,
            speed_mps: speed_cmd,
        });
        let p = &self.params;
        let term = if p.is_offtrack {
            Some(Termination::OffTrack)
        } else if self.immobile_count >= self.cfg.immobile_steps {
            Some(Termination::Immobilized)
        } else if self.reversed_count >= self.cfg.reversed_steps {
            Some(Termination::Reversed)
        } else if p.progress >= 100.0 {
            Some(Termination::LapComplete)
        } else if self.steps >= self.cfg.max_steps {
            Some(Termination::StepLimit)
        } else {
            None
        };
        if term.is_some() {
            self.done = term;
        }
        StepResult {
            params: &self.params,
            termination: self.done,
        }
    }

    /// Arc length of the previous step's end, for lap timing.
    pub(crate) fn prev_travelled_m(&self) -> f64 {
        self.prev_travelled
    }

    fn update_progress(&mut self) {
        self.params.progress = (self.travelled / self.track.length() * 100.0).clamp(0.0, 100.0);
    }

    fn update_params(&mut self, action: CarAction) {
        let pp = self.params_point();
        let wheels = self.wheel_points();
        let mut on = 0;
        for w in wheels {
            let wp = self
                .track
                .nearest_near(w, self.pos.segment, FOLLOW_WINDOW_M);
            if self.track.is_on_track(&wp) {
                on += 1;
            }
        }
        let p = &mut self.params;
        p.x = pp[0];
        p.y = pp[1];
        p.heading = heading_deg(self.car.yaw);
        p.distance_from_center = self.pos.distance_from_center();
        p.is_left_of_center = self.pos.is_left_of_center();
        p.steps = self.steps;
        p.speed = action.speed_mps;
        p.steering_angle = action.steering_deg;
        p.closest_waypoints = self.track.closest_waypoints(self.pos.segment);
        p.all_wheels_on_track = on == 4;
        p.is_offtrack = on == 0;
        self.update_progress();
    }

    /// Wheel contact points: rear left, rear right, front left, front right.
    pub fn wheel_points(&self) -> [[f64; 2]; 4] {
        let (s, c) = self.car.yaw.sin_cos();
        let l = self.cfg.car.wheelbase_m;
        let half = self.cfg.car.track_m / 2.0;
        let at = |fwd: f64, left: f64| {
            [
                self.car.x + c * fwd - s * left,
                self.car.y + s * fwd + c * left,
            ]
        };
        [at(0.0, half), at(0.0, -half), at(l, half), at(l, -half)]
    }

    /// Renders the camera view into `out` (row-major, `width * height *
    /// channels` bytes). Allocates only when the size or the episode's camera
    /// pose changes; a steady stream of same-size frames allocates nothing.
    pub fn render_into(
        &mut self,
        out: &mut [u8],
        width: usize,
        height: usize,
        channels: Channels,
    ) -> Result<(), RenderError> {
        if width == 0 || height == 0 || width > 4096 || height > 4096 {
            return Err(RenderError::Size { width, height });
        }
        let need = width * height * channels.bytes_per_pixel();
        if out.len() != need {
            return Err(RenderError::Buffer {
                got: out.len(),
                need,
                width,
                height,
                channels,
            });
        }
        self.tables.ensure(
            width,
            height,
            &self.cfg.camera,
            &self.look,
            self.raster.inv_res,
        );
        let noise_seed = mix64(self.seed ^ self.steps.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as u32;
        render::render(
            &self.raster,
            &mut self.tables,
            &self.look,
            (self.car.x, self.car.y, self.car.yaw),
            noise_seed,
            out,
            channels,
        );
        Ok(())
    }
}

/// Wraps radians into (-pi, pi].
pub fn wrap_angle(a: f64) -> f64 {
    let mut a = a.rem_euclid(std::f64::consts::TAU);
    if a > std::f64::consts::PI {
        a -= std::f64::consts::TAU;
    }
    a
}

/// Yaw in degrees, (-180, 180].
fn heading_deg(yaw: f64) -> f64 {
    let d = wrap_angle(yaw).to_degrees();
    if d <= -180.0 {
        d + 360.0
    } else {
        d
    }
}
