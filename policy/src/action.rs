//! Policy outputs -> steering and throttle, with the stock DeepRacer
//! navigation node's formulas, so a model drives our car as it drives theirs.

use crate::metadata::ActionSpace;

/// What the policy asked for, and the normalised commands for the servo driver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MappedAction {
    /// Chosen entry of a discrete action space (None for continuous spaces,
    /// and when the outputs were not finite).
    pub index: Option<usize>,
    /// The model's steering angle in degrees (positive = left).
    pub steering_angle_deg: f32,
    /// The model's speed in m/s.
    pub speed_mps: f32,
    /// Steering command in [-1, 1]: angle / largest |angle| of the action space.
    pub steering: f32,
    /// Throttle command in [-1, 1] (the stock speed curve times max_speed_scale).
    pub throttle: f32,
}

impl MappedAction {
    /// Centred steering, no throttle.
    pub const NEUTRAL: MappedAction = MappedAction {
        index: None,
        steering_angle_deg: 0.0,
        speed_mps: 0.0,
        steering: 0.0,
        throttle: 0.0,
    };
}

#[derive(Debug, Clone)]
enum Space {
    Discrete {
        angles: Vec<f32>,
        speeds: Vec<f32>,
    },
    Continuous {
        steer_low: f32,
        steer_high: f32,
        speed_low: f32,
        speed_high: f32,
    },
}

/// Maps outputs to actions. Built once per model; `map` does not allocate.
#[derive(Debug, Clone)]
pub struct ActionMapper {
    space: Space,
    inv_max_angle: f32,
    /// Coefficients of the stock throttle curve a*v^2 + b*v.
    a: f32,
    b: f32,
}

impl ActionMapper {
    pub fn new(space: &ActionSpace) -> ActionMapper {
        let max_angle = space.max_abs_steering() as f32;
        let vmax = space.max_speed() as f32;
        let (a, b) = if vmax > 0.0 {
            (-1.2 / (vmax * vmax), 2.2 / vmax)
        } else {
            (0.0, 0.0)
        };
        let space = match space {
            ActionSpace::Discrete(actions) => Space::Discrete {
                angles: actions.iter().map(|x| x.steering_angle as f32).collect(),
                speeds: actions.iter().map(|x| x.speed as f32).collect(),
            },
            ActionSpace::Continuous {
                steering_angle,
                speed,
            } => Space::Continuous {
                steer_low: steering_angle.low as f32,
                steer_high: steering_angle.high as f32,
                speed_low: speed.low as f32,
                speed_high: speed.high as f32,
            },
        };
        ActionMapper {
            space,
            inv_max_angle: if max_angle > 0.0 {
                1.0 / max_angle
            } else {
                0.0
            },
            a,
            b,
        }
    }

    /// Number of outputs the mapper reads.
    pub fn output_len(&self) -> usize {
        match &self.space {
            Space::Discrete { angles, .. } => angles.len(),
            Space::Continuous { .. } => 2,
        }
    }

    /// Map policy outputs to an action. `max_speed_scale` is the racer's
    /// max-speed setting in [0, 1] (clamped). Non-finite outputs (a broken
    /// model) map to `NEUTRAL` rather than to a guess.
    pub fn map(&self, outputs: &[f32], max_speed_scale: f32) -> MappedAction {
        let (index, angle, speed) = match &self.space {
            Space::Discrete { angles, speeds } => {
                let mut best: Option<(usize, f32)> = None;
                for (i, &p) in outputs.iter().take(angles.len()).enumerate() {
                    if !p.is_finite() {
                        continue;
                    }
                    // Strictly greater: ties go to the first entry, as numpy's argmax.
                    if best.is_none_or(|(_, bp)| p > bp) {
                        best = Some((i, p));
                    }
                }
                match best {
                    Some((i, _)) => (Some(i), angles[i], speeds[i]),
                    None => return MappedAction::NEUTRAL,
                }
            }
            Space::Continuous {
                steer_low,
                steer_high,
                speed_low,
                speed_high,
            } => {
                let (Some(&s), Some(&v)) = (outputs.first(), outputs.get(1)) else {
                    return MappedAction::NEUTRAL;
                };
                if !s.is_finite() || !v.is_finite() {
                    return MappedAction::NEUTRAL;
                }
                (
                    None,
                    scale(s, *steer_low, *steer_high),
                    scale(v, *speed_low, *speed_high),
                )
            }
        };
        let scale_setting = if max_speed_scale.is_finite() {
            max_speed_scale.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // The stock curve clamps to [-1, 1]; we clamp to [0, 1]: an
        // autonomous car never reverses, whatever an action space built in
        // code (parsed metadata is already 0.01-4 m/s) says.
        let curve = (self.a * speed * speed + self.b * speed).clamp(0.0, 1.0);
        let m = MappedAction {
            index,
            steering_angle_deg: angle,
            speed_mps: speed,
            steering: (angle * self.inv_max_angle).clamp(-1.0, 1.0),
            throttle: scale_setting * curve,
        };
        // `clamp` passes NaN through: an action space with angles or speeds
        // beyond f32 (inf * 0) must still never reach the wheels as NaN.
        if m.steering.is_finite()
            && m.throttle.is_finite()
            && m.steering_angle_deg.is_finite()
            && m.speed_mps.is_finite()
        {
            m
        } else {
            MappedAction::NEUTRAL
        }
    }
}

/// Clip to [-1, 1], then map linearly onto [low, high].
fn scale(x: f32, low: f32, high: f32) -> f32 {
    let x = x.clamp(-1.0, 1.0);
    low + (x + 1.0) * 0.5 * (high - low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{DiscreteAction, Range};

    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-5, "{a} != {b}");
    }

    fn nine() -> ActionSpace {
        let mut v = Vec::new();
        for angle in [-30.0, 0.0, 30.0] {
            for speed in [1.0 / 3.0, 2.0 / 3.0, 1.0] {
                v.push(DiscreteAction {
                    steering_angle: angle,
                    speed,
                });
            }
        }
        ActionSpace::Discrete(v)
    }

    #[test]
    fn discrete_argmax_and_stock_throttle_curve() {
        let m = ActionMapper::new(&nine());
        // Entry 7: 30 deg, 2/3 m/s. vmax = 1: a = -1.2, b = 2.2.
        // throttle = -1.2 * (4/9) + 2.2 * (2/3) = -0.533333 + 1.466667 = 0.933333
        let out = [0.0, 0.1, 0.0, 0.0, 0.1, 0.0, 0.0, 0.7, 0.1];
        let a = m.map(&out, 1.0);
        assert_eq!(a.index, Some(7));
        close(a.steering_angle_deg, 30.0);
        close(a.speed_mps, 2.0 / 3.0);
        close(a.steering, 1.0);
        close(a.throttle, 0.933_333);
        // Half the max-speed setting halves the throttle.
        close(m.map(&out, 0.5).throttle, 0.466_667);
        // The max-speed setting starts at 0: no motion.
        assert_eq!(m.map(&out, 0.0).throttle, 0.0);
        // Entry 0: -30 deg, 1/3 m/s: -1.2/9 + 2.2/3 = 0.6.
        let a = m.map(&[0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 1.0);
        assert_eq!(a.index, Some(0));
        close(a.steering, -1.0);
        close(a.throttle, 0.6);
        // Ties go to the first, like numpy.argmax.
        assert_eq!(
            m.map(&[0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 1.0)
                .index,
            Some(0)
        );
    }

    #[test]
    fn curve_passes_through_stock_points() {
        // vmax = 4: (2, 0.8) and (4, 1.0) as the compat notes say.
        let s = ActionSpace::Discrete(vec![
            DiscreteAction {
                steering_angle: -20.0,
                speed: 2.0,
            },
            DiscreteAction {
                steering_angle: 10.0,
                speed: 4.0,
            },
        ]);
        let m = ActionMapper::new(&s);
        let a = m.map(&[1.0, 0.0], 1.0);
        close(a.throttle, 0.8);
        close(a.steering, -1.0);
        let a = m.map(&[0.0, 1.0], 0.75);
        close(a.throttle, 0.75);
        // Steering normalised by the model's own max angle (20), not by 30.
        close(a.steering, 0.5);
    }

    #[test]
    fn continuous_clip_and_scale() {
        let s = ActionSpace::Continuous {
            steering_angle: Range {
                low: -30.0,
                high: 30.0,
            },
            speed: Range {
                low: 0.5,
                high: 2.0,
            },
        };
        let m = ActionMapper::new(&s);
        // steer 0.5 -> 15 deg, steering 0.5; speed 0 -> 1.25 m/s.
        // vmax 2: a = -0.3, b = 1.1: -0.3*1.5625 + 1.1*1.25 = -0.46875 + 1.375 = 0.90625
        let a = m.map(&[0.5, 0.0], 1.0);
        assert_eq!(a.index, None);
        close(a.steering_angle_deg, 15.0);
        close(a.steering, 0.5);
        close(a.speed_mps, 1.25);
        close(a.throttle, 0.90625);
        // Outputs beyond [-1, 1] are clipped: 3 -> high, -7 -> low.
        let a = m.map(&[-7.0, 3.0], 1.0);
        close(a.steering_angle_deg, -30.0);
        close(a.speed_mps, 2.0);
        close(a.throttle, 1.0);
        // Asymmetric steering range: max |angle| is 30, low -10.
        let s2 = ActionSpace::Continuous {
            steering_angle: Range {
                low: -10.0,
                high: 30.0,
            },
            speed: Range {
                low: 1.0,
                high: 2.0,
            },
        };
        let a = ActionMapper::new(&s2).map(&[-1.0, -1.0], 1.0);
        close(a.steering_angle_deg, -10.0);
        close(a.steering, -1.0 / 3.0);
        // v = 1, vmax = 2: -0.3 + 1.1 = 0.8
        close(a.throttle, 0.8);
    }

    #[test]
    fn hostile_action_spaces_never_give_nan_or_reverse() {
        // Built in code, so the metadata ranges did not apply.
        let reverse = ActionSpace::Discrete(vec![DiscreteAction {
            steering_angle: 0.0,
            speed: -1.0,
        }]);
        let a = ActionMapper::new(&reverse).map(&[1.0], 1.0);
        assert_eq!(a.throttle, 0.0, "{a:?}");
        let huge = ActionSpace::Discrete(vec![
            DiscreteAction {
                steering_angle: 1e300,
                speed: 1e300,
            },
            DiscreteAction {
                steering_angle: f64::NAN,
                speed: f64::INFINITY,
            },
        ]);
        let m = ActionMapper::new(&huge);
        for out in [[1.0, 0.0], [0.0, 1.0]] {
            let a = m.map(&out, 1.0);
            assert!(a.steering.is_finite() && a.throttle.is_finite(), "{a:?}");
            assert!((-1.0..=1.0).contains(&a.steering) && (0.0..=1.0).contains(&a.throttle));
        }
        let c = ActionMapper::new(&ActionSpace::Continuous {
            steering_angle: Range {
                low: -1e300,
                high: 1e300,
            },
            speed: Range {
                low: -5.0,
                high: -1.0,
            },
        });
        for out in [[-1.0, -1.0], [0.3, 1.0], [1.0, 0.0]] {
            let a = c.map(&out, 1.0);
            assert!(
                a.steering.is_finite() && (0.0..=1.0).contains(&a.throttle),
                "{a:?}"
            );
        }
    }

    #[test]
    fn non_finite_outputs_are_neutral() {
        let m = ActionMapper::new(&nine());
        assert_eq!(m.map(&[f32::NAN; 9], 1.0), MappedAction::NEUTRAL);
        let mut out = [f32::NAN; 9];
        out[4] = 0.2;
        assert_eq!(m.map(&out, 1.0).index, Some(4));
        let c = ActionMapper::new(&ActionSpace::Continuous {
            steering_angle: Range {
                low: -30.0,
                high: 30.0,
            },
            speed: Range {
                low: 0.5,
                high: 2.0,
            },
        });
        assert_eq!(c.map(&[f32::NAN, 0.0], 1.0), MappedAction::NEUTRAL);
        assert_eq!(c.map(&[0.0], 1.0), MappedAction::NEUTRAL);
        assert_eq!(m.map(&[0.0; 9], f32::NAN).throttle, 0.0);
    }
}
