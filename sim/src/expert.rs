//! Pure-pursuit driver on the centre line: a reference driver for tests,
//! imitation data and lap-time baselines.

use crate::sim::{CarAction, Sim};

/// Steers toward a centre-line point a speed-dependent distance ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expert {
    /// Commanded speed, m/s.
    pub speed_mps: f64,
    /// Look-ahead distance = `lookahead_m + lookahead_s * speed`.
    pub lookahead_m: f64,
    pub lookahead_s: f64,
}

impl Expert {
    pub fn new(speed_mps: f64) -> Expert {
        Expert {
            speed_mps,
            lookahead_m: 0.25,
            lookahead_s: 0.12,
        }
    }

    /// The action for the simulator's current state.
    pub fn act(&self, sim: &Sim) -> CarAction {
        let car = sim.car();
        let track = sim.track();
        let l = sim.config().car.wheelbase_m;
        let ahead = self.lookahead_m + self.lookahead_s * self.speed_mps.max(0.0);
        let (target, _) = track.point_at(sim.track_pos().s + ahead);
        let (s, c) = car.yaw.sin_cos();
        let dx = target[0] - car.x;
        let dy = target[1] - car.y;
        let fwd = c * dx + s * dy;
        let left = -s * dx + c * dy;
        let d2 = fwd * fwd + left * left;
        // Pure pursuit: the arc through the rear axle tangent to the heading
        // that passes through the target has curvature 2*left/d^2.
        let curvature = if d2 > 1e-9 { 2.0 * left / d2 } else { 0.0 };
        let steer = (curvature * l).atan().to_degrees();
        let max = sim.config().car.max_steering_deg;
        CarAction {
            steering_deg: steer.clamp(-max, max),
            speed_mps: self.speed_mps,
        }
    }
}
