//! Action spaces as the DeepRacer console builds them, and the training
//! targets for each: what the network must output so that the car's own
//! action mapping (`policy::ActionMapper`) turns it into the expert's command.

use std::path::Path;

use policy::{ActionMapper, ActionSpace, DiscreteAction, ModelMetadata, Range};

#[derive(Debug, thiserror::Error)]
pub enum ActionSpaceError {
    #[error("--action-space {spec}: {message}")]
    Spec { spec: String, message: String },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

/// The console's discrete space: `steering_granularity` angles evenly from
/// `-max_steering` to `+max_steering`, each with `speed_granularity` speeds
/// `max_speed * k / speed_granularity`, steering-major, ascending.
pub fn discrete(
    max_steering_deg: f64,
    steering_granularity: usize,
    max_speed: f64,
    speed_granularity: usize,
) -> Result<ActionSpace, String> {
    if ![3, 5, 7].contains(&steering_granularity) {
        return Err(format!(
            "steering granularity {steering_granularity}: the console offers 3, 5 or 7"
        ));
    }
    if ![1, 2, 3].contains(&speed_granularity) {
        return Err(format!(
            "speed granularity {speed_granularity}: the console offers 1, 2 or 3"
        ));
    }
    if !(1.0..=30.0).contains(&max_steering_deg) {
        return Err(format!(
            "max steering {max_steering_deg} deg: expected 1-30"
        ));
    }
    if !(0.1..=4.0).contains(&max_speed) {
        return Err(format!("max speed {max_speed} m/s: expected 0.1-4"));
    }
    let half = (steering_granularity - 1) as f64 / 2.0;
    let mut actions = Vec::new();
    for i in 0..steering_granularity {
        let angle = max_steering_deg * (i as f64 - half) / half;
        for k in 1..=speed_granularity {
            actions.push(DiscreteAction {
                steering_angle: round3(angle),
                speed: round3(max_speed * k as f64 / speed_granularity as f64),
            });
        }
    }
    Ok(ActionSpace::Discrete(actions))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The console's continuous space.
pub fn continuous(steering: (f64, f64), speed: (f64, f64)) -> Result<ActionSpace, String> {
    if !(steering.0 < steering.1 && steering.0 >= -30.0 && steering.1 <= 30.0) {
        return Err(format!(
            "steering {}:{}: expected -30 <= low < high <= 30 degrees",
            steering.0, steering.1
        ));
    }
    if !(speed.0 < speed.1 && speed.0 >= 0.1 && speed.1 <= 4.0) {
        return Err(format!(
            "speed {}:{}: expected 0.1 <= low < high <= 4 m/s",
            speed.0, speed.1
        ));
    }
    Ok(ActionSpace::Continuous {
        steering_angle: Range {
            low: steering.0,
            high: steering.1,
        },
        speed: Range {
            low: speed.0,
            high: speed.1,
        },
    })
}

/// Parse `--action-space`:
/// - `continuous[,steering=LOW:HIGH][,speed=LOW:HIGH]` (default -30:30, 1:3 m/s);
/// - `discrete[,steering=MAX][,steering-granularity=3|5|7][,speed=MAX][,speed-granularity=1|2|3]`
///   (default 30 deg x 5, 3 m/s x 2: ten actions);
/// - a path to a `model_metadata.json` (its action space) or to a JSON list of
///   `{"steering_angle": deg, "speed": m/s}` (an explicit discrete list).
pub fn parse(spec: &str) -> Result<ActionSpace, ActionSpaceError> {
    let err = |message: String| ActionSpaceError::Spec {
        spec: spec.to_string(),
        message,
    };
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default().trim();
    let mut kv = Vec::new();
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| err(format!("`{p}`: expected key=value")))?;
        kv.push((k.trim(), v.trim()));
    }
    let num = |k: &str, v: &str| -> Result<f64, ActionSpaceError> {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| err(format!("{k}={v}: not a number")))
    };
    let pair = |k: &str, v: &str| -> Result<(f64, f64), ActionSpaceError> {
        let (a, b) = v
            .split_once(':')
            .ok_or_else(|| err(format!("{k}={v}: expected LOW:HIGH")))?;
        Ok((num(k, a)?, num(k, b)?))
    };
    match kind {
        "continuous" => {
            let (mut steering, mut speed) = ((-30.0, 30.0), (1.0, 3.0));
            for (k, v) in kv {
                match k {
                    "steering" => steering = pair(k, v)?,
                    "speed" => speed = pair(k, v)?,
                    _ => return Err(err(format!("unknown key `{k}` (steering, speed)"))),
                }
            }
            continuous(steering, speed).map_err(err)
        }
        "discrete" => {
            let (mut steer, mut sg, mut speed, mut vg) = (30.0, 5usize, 3.0, 2usize);
            for (k, v) in kv {
                match k {
                    "steering" => steer = num(k, v)?,
                    "speed" => speed = num(k, v)?,
                    "steering-granularity" => sg = num(k, v)? as usize,
                    "speed-granularity" => vg = num(k, v)? as usize,
                    _ => {
                        return Err(err(format!(
                            "unknown key `{k}` (steering, steering-granularity, speed, speed-granularity)"
                        )))
                    }
                }
            }
            discrete(steer, sg, speed, vg).map_err(err)
        }
        _ if spec.ends_with(".json") => from_file(Path::new(spec)),
        _ => Err(err(
            "expected `continuous[,...]`, `discrete[,...]` or a .json file".into(),
        )),
    }
}

/// An action space from a `model_metadata.json`, or from a JSON list of
/// discrete actions.
pub fn from_file(path: &Path) -> Result<ActionSpace, ActionSpaceError> {
    let file = path.display().to_string();
    let err = |message: String| ActionSpaceError::File {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    let root = if value.is_array() {
        serde_json::json!({ "action_space": value })
    } else {
        value
    };
    ModelMetadata::from_value(&root, &file)
        .map(|m| m.action_space)
        .map_err(|e| err(e.to_string()))
}

/// What the expert wants: a steering command in [-1, 1] (full lock of the
/// car at +/-1) and a throttle as a fraction (0-1) of the max-speed setting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Label {
    pub steer: f32,
    pub throttle: f32,
}

/// Turns labels into training targets for one action space.
#[derive(Debug, Clone)]
pub struct Targets {
    space: ActionSpace,
    /// Discrete: each action's (steering, throttle) command as the car maps it.
    commands: Vec<(f32, f32)>,
}

/// Inverse of the stock throttle curve `-1.2 r^2 + 2.2 r` (r = v / vmax):
/// the speed ratio that gives throttle `t` (0-1).
pub fn speed_ratio_for_throttle(t: f32) -> f32 {
    let t = t.clamp(0.0, 1.0);
    (2.2 - (4.84 - 4.8 * t).max(0.0).sqrt()) / 2.4
}

impl Targets {
    pub fn new(space: &ActionSpace) -> Targets {
        let mapper = ActionMapper::new(space);
        let commands = match space {
            ActionSpace::Discrete(a) => (0..a.len())
                .map(|i| {
                    let mut onehot = vec![0.0f32; a.len()];
                    onehot[i] = 1.0;
                    let m = mapper.map(&onehot, 1.0);
                    (m.steering, m.throttle)
                })
                .collect(),
            ActionSpace::Continuous { .. } => Vec::new(),
        };
        Targets {
            space: space.clone(),
            commands,
        }
    }

    pub fn outputs(&self) -> usize {
        self.space.output_len()
    }

    pub fn is_discrete(&self) -> bool {
        matches!(self.space, ActionSpace::Discrete(_))
    }

    /// Whether mirroring an image and negating the steering gives another
    /// valid sample: true when every action has its mirror image.
    pub fn symmetric(&self) -> bool {
        match &self.space {
            ActionSpace::Continuous { steering_angle, .. } => {
                (steering_angle.low + steering_angle.high).abs() < 1e-6
            }
            ActionSpace::Discrete(a) => a.iter().all(|x| {
                a.iter().any(|y| {
                    (y.steering_angle + x.steering_angle).abs() < 1e-6
                        && (y.speed - x.speed).abs() < 1e-6
                })
            }),
        }
    }

    /// Continuous: the two outputs (before the car's clip) that map to `l`.
    pub fn continuous(&self, l: Label) -> [f32; 2] {
        let ActionSpace::Continuous {
            steering_angle: s,
            speed: v,
        } = &self.space
        else {
            panic!("continuous targets for a discrete space");
        };
        let max_abs = s.low.abs().max(s.high.abs());
        let angle = l.steer as f64 * max_abs;
        let steer = 2.0 * (angle - s.low) / (s.high - s.low) - 1.0;
        let speed = speed_ratio_for_throttle(l.throttle) as f64 * v.high;
        let speed = 2.0 * (speed - v.low) / (v.high - v.low) - 1.0;
        [steer.clamp(-1.0, 1.0) as f32, speed.clamp(-1.0, 1.0) as f32]
    }

    /// Discrete: the action closest to `l`. Steering matters most: a wrong
    /// angle leaves the track, a wrong speed only costs time.
    pub fn class(&self, l: Label) -> usize {
        let mut best = (0, f32::INFINITY);
        for (i, &(s, t)) in self.commands.iter().enumerate() {
            let d = (s - l.steer).powi(2) + 0.25 * (t - l.throttle).powi(2);
            if d < best.1 {
                best = (i, d);
            }
        }
        best.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_discrete_space() {
        let ActionSpace::Discrete(a) = discrete(30.0, 5, 3.0, 2).unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 10);
        let angles: Vec<f64> = a.iter().step_by(2).map(|x| x.steering_angle).collect();
        assert_eq!(angles, [-30.0, -15.0, 0.0, 15.0, 30.0]);
        assert_eq!((a[0].speed, a[1].speed), (1.5, 3.0));
        let ActionSpace::Discrete(a) = discrete(20.0, 7, 1.0, 3).unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 21);
        assert_eq!(a[3].steering_angle, -13.333);
        assert_eq!(a[2].speed, 1.0);
        assert!(discrete(30.0, 4, 1.0, 1).unwrap_err().contains("3, 5 or 7"));
        assert!(discrete(30.0, 3, 1.0, 4).unwrap_err().contains("1, 2 or 3"));
    }

    #[test]
    fn parse_specs_and_errors() {
        assert_eq!(parse("continuous").unwrap().output_len(), 2);
        assert_eq!(
            parse("discrete,steering-granularity=3,speed-granularity=3")
                .unwrap()
                .output_len(),
            9
        );
        let e = parse("continuous,speed=3:1").unwrap_err().to_string();
        assert!(e.contains("--action-space continuous,speed=3:1") && e.contains("low < high"));
        let e = parse("discrete,foo=1").unwrap_err().to_string();
        assert!(e.contains("unknown key `foo`"), "{e}");
        let e = parse("wiggly").unwrap_err().to_string();
        assert!(e.contains("expected `continuous"), "{e}");
    }

    #[test]
    fn explicit_list_from_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("actions.json");
        std::fs::write(
            &p,
            r#"[{"steering_angle": -20, "speed": 1}, {"steering_angle": 0, "speed": 2}, {"steering_angle": 20, "speed": 1}]"#,
        )
        .unwrap();
        let s = parse(p.to_str().unwrap()).unwrap();
        assert_eq!(s.output_len(), 3);
        std::fs::write(&p, r#"[{"steering_angle": "left", "speed": 1}]"#).unwrap();
        let e = parse(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("actions.json") && e.contains("steering_angle"),
            "{e}"
        );
    }

    /// The targets, mapped by the car's own mapper, give back the label.
    #[test]
    fn continuous_targets_round_trip_through_the_car_mapping() {
        for space in [
            continuous((-30.0, 30.0), (1.0, 3.0)).unwrap(),
            continuous((-20.0, 25.0), (0.5, 2.0)).unwrap(),
        ] {
            let t = Targets::new(&space);
            let mapper = ActionMapper::new(&space);
            for (steer, throttle) in [(0.0, 1.0), (-0.5, 0.7), (0.3, 0.85)] {
                let l = Label { steer, throttle };
                let m = mapper.map(&t.continuous(l), 0.6);
                assert!(
                    (m.steering - steer).abs() < 1e-4,
                    "{space:?} {l:?} -> {m:?}"
                );
                assert!((m.throttle - 0.6 * throttle).abs() < 1e-4, "{l:?} -> {m:?}");
            }
        }
    }

    #[test]
    fn discrete_targets_pick_the_nearest_command() {
        let space = discrete(30.0, 5, 3.0, 2).unwrap();
        let t = Targets::new(&space);
        assert!(t.symmetric());
        let ActionSpace::Discrete(a) = &space else {
            panic!()
        };
        // Half left, fast: -15 deg? No: positive steers left, so +15 at 3 m/s.
        let i = t.class(Label {
            steer: 0.45,
            throttle: 1.0,
        });
        assert_eq!((a[i].steering_angle, a[i].speed), (15.0, 3.0));
        // Full right, slow: -30 deg at 1.5 m/s (throttle curve 0.8).
        let i = t.class(Label {
            steer: -1.0,
            throttle: 0.75,
        });
        assert_eq!((a[i].steering_angle, a[i].speed), (-30.0, 1.5));
        let lopsided = continuous((-10.0, 30.0), (1.0, 2.0)).unwrap();
        assert!(!Targets::new(&lopsided).symmetric());
    }
}
