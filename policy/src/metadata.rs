//! `model_metadata.json`, the DeepRacer description of a model's action space
//! and sensors. Parsed by hand from a `serde_json::Value` rather than derived,
//! because racers' files come from many tool versions and a bad one must be
//! reported with the exact field path and the offending value.

use serde_json::{json, Map, Value};
use std::fmt;
use std::path::Path;

/// Largest `model_metadata.json`: a console action space of a few hundred
/// entries is a few tens of KB.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// A problem in a metadata file, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{file}: {field}: {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: not valid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// One entry of a discrete action space.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteAction {
    /// Degrees; positive steers left, as in DeepRacer.
    pub steering_angle: f64,
    /// Metres per second.
    pub speed: f64,
}

/// A closed interval of a continuous action space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionSpace {
    /// The policy outputs one score per entry, in list order.
    Discrete(Vec<DiscreteAction>),
    /// The policy outputs two values in [-1, 1]: steering, then speed.
    Continuous { steering_angle: Range, speed: Range },
}

impl ActionSpace {
    /// Number of values the policy must output for this action space.
    pub fn output_len(&self) -> usize {
        match self {
            ActionSpace::Discrete(a) => a.len(),
            ActionSpace::Continuous { .. } => 2,
        }
    }

    /// Largest |steering angle| the space can command (degrees).
    pub fn max_abs_steering(&self) -> f64 {
        match self {
            ActionSpace::Discrete(a) => a.iter().fold(0.0, |m, x| m.max(x.steering_angle.abs())),
            ActionSpace::Continuous { steering_angle, .. } => {
                steering_angle.low.abs().max(steering_angle.high.abs())
            }
        }
    }

    /// Largest speed the space can command (m/s).
    pub fn max_speed(&self) -> f64 {
        match self {
            ActionSpace::Discrete(a) => a.iter().fold(0.0, |m, x| m.max(x.speed)),
            ActionSpace::Continuous { speed, .. } => speed.high.max(speed.low),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            ActionSpace::Discrete(_) => "discrete",
            ActionSpace::Continuous { .. } => "continuous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sensor {
    FrontFacingCamera,
    StereoCameras,
    LeftCamera,
    Lidar,
    SectorLidar,
    /// Legacy single-camera models, before the sensor list existed.
    Observation,
}

impl Sensor {
    const ALL: [(Sensor, &'static str); 6] = [
        (Sensor::FrontFacingCamera, "FRONT_FACING_CAMERA"),
        (Sensor::StereoCameras, "STEREO_CAMERAS"),
        (Sensor::LeftCamera, "LEFT_CAMERA"),
        (Sensor::Lidar, "LIDAR"),
        (Sensor::SectorLidar, "SECTOR_LIDAR"),
        (Sensor::Observation, "observation"),
    ];

    pub fn as_str(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| s == self)
            .map(|(_, n)| *n)
            .unwrap_or("observation")
    }

    fn parse(s: &str) -> Option<Sensor> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(sensor, _)| sensor.clone())
    }

    /// True for sensors that feed a camera image to the network.
    pub fn is_camera(&self) -> bool {
        matches!(
            self,
            Sensor::FrontFacingCamera
                | Sensor::StereoCameras
                | Sensor::LeftCamera
                | Sensor::Observation
        )
    }
}

impl fmt::Display for Sensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeuralNetwork {
    Shallow,
    Standard,
    Deep,
    /// A name we do not know; kept so that writing the file back loses nothing.
    /// The graph itself decides what runs, so this is not an error.
    Other(String),
}

impl NeuralNetwork {
    pub fn as_str(&self) -> &str {
        match self {
            NeuralNetwork::Shallow => "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
            NeuralNetwork::Standard => "DEEP_CONVOLUTIONAL_NETWORK",
            NeuralNetwork::Deep => "DEEP_CONVOLUTIONAL_NETWORK_DEEP",
            NeuralNetwork::Other(s) => s,
        }
    }

    fn parse(s: &str) -> NeuralNetwork {
        match s {
            "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW" => NeuralNetwork::Shallow,
            "DEEP_CONVOLUTIONAL_NETWORK" => NeuralNetwork::Standard,
            "DEEP_CONVOLUTIONAL_NETWORK_DEEP" => NeuralNetwork::Deep,
            other => NeuralNetwork::Other(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingAlgorithm {
    ClippedPpo,
    Sac,
}

impl TrainingAlgorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            TrainingAlgorithm::ClippedPpo => "clipped_ppo",
            TrainingAlgorithm::Sac => "sac",
        }
    }
}

/// Everything `model_metadata.json` says. Defaults follow DeepRacer:
/// discrete actions, `["observation"]`, the shallow network, clipped PPO.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    pub action_space: ActionSpace,
    pub sensor: Vec<Sensor>,
    pub neural_network: NeuralNetwork,
    pub training_algorithm: TrainingAlgorithm,
    /// The file's `version`, normalised to a string (some tools write a number).
    pub version: Option<String>,
    /// Kept verbatim: only lidar models use it, and we do not run those.
    pub lidar_config: Option<Value>,
}

pub const METADATA_FILE: &str = "model_metadata.json";

/// Steering angles the car accepts, in degrees: DeepRacer's +/-30.
pub const STEERING_RANGE_DEG: (f64, f64) = (-30.0, 30.0);
/// Speeds the car accepts, in m/s. DeepRacer's top speed setting is
/// 0.1-4, but a discrete space's slower entries go below that (max 0.1 at
/// speed granularity 3 gives 0.033, as the console and the trainer build
/// it), so the floor is just above zero: a speed at or below zero would map
/// to reverse or to a standing start through the throttle curve, and one
/// far beyond 4 would overflow it.
pub const SPEED_RANGE_MPS: (f64, f64) = (0.01, 4.0);
const STEERING_SHOWN: &str = "+/-30 degrees";
const SPEED_SHOWN: &str = "0.01-4 m/s";
/// Most entries a discrete action space may have. The console builds at
/// most 21 (7 angles x 3 speeds); hand-written files rarely reach 100. The
/// cap bounds the policy's output buffer and the mapper's tables.
pub const MAX_DISCRETE_ACTIONS: usize = 1024;
/// Rounding slack on the range ends, so that 30.000000000000004 (a radians
/// round trip) is still 30 degrees. The mapper clamps anyway.
const RANGE_SLACK: f64 = 1e-6;

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> MetadataError {
        MetadataError::Field {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn number(&self, v: Option<&Value>, field: &str) -> Result<f64, MetadataError> {
        match v {
            None | Some(Value::Null) => Err(self.err(field, "missing (expected a number)")),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if x.is_finite() {
                    Ok(x)
                } else {
                    Err(self.err(field, format!("expected a finite number, got {n}")))
                }
            }
            Some(other) => Err(self.err(field, format!("expected a number, got {}", short(other)))),
        }
    }

    /// A number inside `[lo, hi]`; `shown` is the range as the message
    /// gives it ("0.01-4 m/s").
    fn in_range(
        &self,
        v: Option<&Value>,
        field: &str,
        (lo, hi): (f64, f64),
        shown: &str,
    ) -> Result<f64, MetadataError> {
        let x = self.number(v, field)?;
        if x < lo - RANGE_SLACK || x > hi + RANGE_SLACK {
            // As the file writes it: 1e300, not three hundred digits.
            let as_written = v.map_or_else(|| x.to_string(), short);
            return Err(self.err(field, format!("{as_written} is outside {shown}")));
        }
        Ok(x)
    }

    fn string<'v>(&self, v: &'v Value, field: &str) -> Result<&'v str, MetadataError> {
        v.as_str()
            .ok_or_else(|| self.err(field, format!("expected a string, got {}", short(v))))
    }
}

/// A JSON value as it appears in the file, cut short for error messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        let cut: String = s.chars().take(37).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn parse_range(
    ctx: &Ctx,
    v: Option<&Value>,
    field: &str,
    bounds: (f64, f64),
    shown: &str,
) -> Result<Range, MetadataError> {
    let obj = match v {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => {
            return Err(ctx.err(field, "missing (expected {\"low\": .., \"high\": ..})"))
        }
        Some(other) => {
            return Err(ctx.err(
                field,
                format!(
                    "expected {{\"low\": .., \"high\": ..}}, got {}",
                    short(other)
                ),
            ))
        }
    };
    let low = ctx.in_range(obj.get("low"), &format!("{field}.low"), bounds, shown)?;
    let high = ctx.in_range(obj.get("high"), &format!("{field}.high"), bounds, shown)?;
    if high <= low {
        return Err(ctx.err(
            field,
            format!("high ({high}) must be greater than low ({low})"),
        ));
    }
    Ok(Range { low, high })
}

impl ModelMetadata {
    /// Parse the text of a metadata file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<ModelMetadata, MetadataError> {
        let root: Value = serde_json::from_str(text).map_err(|source| MetadataError::Json {
            file: file.to_string(),
            source,
        })?;
        Self::from_value(&root, file)
    }

    /// Read and parse a metadata file from disk.
    pub fn load(path: &Path) -> Result<ModelMetadata, MetadataError> {
        let file = path.display().to_string();
        let text = safe_io::read_limited_to_string(path, MAX_METADATA_BYTES).map_err(|e| {
            MetadataError::Io {
                file: file.clone(),
                source: std::io::Error::other(e.reason()),
            }
        })?;
        Self::parse(&text, &file)
    }

    pub fn from_value(root: &Value, file: &str) -> Result<ModelMetadata, MetadataError> {
        let ctx = Ctx { file };
        let obj = root.as_object().ok_or_else(|| {
            ctx.err(
                "(top level)",
                format!("expected an object, got {}", short(root)),
            )
        })?;

        let space_type = match obj.get("action_space_type") {
            None | Some(Value::Null) => "discrete",
            Some(v) => ctx.string(v, "action_space_type")?,
        };
        let action_space = match space_type {
            "discrete" => {
                let list = match obj.get("action_space") {
                    Some(Value::Array(a)) => a,
                    None | Some(Value::Null) => {
                        return Err(ctx.err("action_space", "missing (expected a list of actions)"))
                    }
                    Some(other) => {
                        return Err(ctx.err(
                            "action_space",
                            format!(
                                "expected a list of {{\"steering_angle\", \"speed\"}} for a discrete action space, got {}",
                                short(other)
                            ),
                        ))
                    }
                };
                if list.is_empty() {
                    return Err(ctx.err(
                        "action_space",
                        "a discrete action space needs at least one action",
                    ));
                }
                if list.len() > MAX_DISCRETE_ACTIONS {
                    return Err(ctx.err(
                        "action_space",
                        format!(
                            "{} actions is more than the {MAX_DISCRETE_ACTIONS} this car accepts",
                            list.len()
                        ),
                    ));
                }
                let mut actions = Vec::with_capacity(list.len());
                for (i, a) in list.iter().enumerate() {
                    let f = format!("action_space[{i}]");
                    let o = a.as_object().ok_or_else(|| {
                        ctx.err(&f, format!("expected an object, got {}", short(a)))
                    })?;
                    let steering_angle = ctx.in_range(
                        o.get("steering_angle"),
                        &format!("{f}.steering_angle"),
                        STEERING_RANGE_DEG,
                        STEERING_SHOWN,
                    )?;
                    let speed = ctx.in_range(
                        o.get("speed"),
                        &format!("{f}.speed"),
                        SPEED_RANGE_MPS,
                        SPEED_SHOWN,
                    )?;
                    // `index`, when present, must agree with the position: the
                    // network's outputs are in list order, and a file whose
                    // indices disagree was written by something confused.
                    if let Some(ix) = o.get("index") {
                        let n = ctx.number(Some(ix), &format!("{f}.index"))?;
                        if n != i as f64 {
                            return Err(ctx.err(
                                format!("{f}.index"),
                                format!("is {n} but the entry is at position {i} (outputs follow list order)"),
                            ));
                        }
                    }
                    actions.push(DiscreteAction {
                        steering_angle,
                        speed,
                    });
                }
                ActionSpace::Discrete(actions)
            }
            "continuous" => {
                let o = match obj.get("action_space") {
                    Some(Value::Object(o)) => o,
                    None | Some(Value::Null) => {
                        return Err(ctx.err("action_space", "missing (expected {\"steering_angle\": {..}, \"speed\": {..}})"))
                    }
                    Some(other) => {
                        return Err(ctx.err(
                            "action_space",
                            format!(
                                "expected {{\"steering_angle\": {{\"low\", \"high\"}}, \"speed\": {{\"low\", \"high\"}}}} for a continuous action space, got {}",
                                short(other)
                            ),
                        ))
                    }
                };
                ActionSpace::Continuous {
                    steering_angle: parse_range(
                        &ctx,
                        o.get("steering_angle"),
                        "action_space.steering_angle",
                        STEERING_RANGE_DEG,
                        STEERING_SHOWN,
                    )?,
                    speed: parse_range(
                        &ctx,
                        o.get("speed"),
                        "action_space.speed",
                        SPEED_RANGE_MPS,
                        SPEED_SHOWN,
                    )?,
                }
            }
            other => {
                return Err(ctx.err(
                    "action_space_type",
                    format!("expected \"discrete\" or \"continuous\", got \"{other}\""),
                ))
            }
        };

        let sensor = match obj.get("sensor") {
            None | Some(Value::Null) => vec![Sensor::Observation],
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, s) in a.iter().enumerate() {
                    let f = format!("sensor[{i}]");
                    let name = ctx.string(s, &f)?;
                    let sensor = Sensor::parse(name).ok_or_else(|| {
                        ctx.err(
                            &f,
                            format!(
                                "unknown sensor \"{name}\" (known: {})",
                                Sensor::ALL
                                    .iter()
                                    .map(|(_, n)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?;
                    out.push(sensor);
                }
                if out.is_empty() {
                    vec![Sensor::Observation]
                } else {
                    out
                }
            }
            Some(other) => {
                return Err(ctx.err(
                    "sensor",
                    format!("expected a list of sensor names, got {}", short(other)),
                ))
            }
        };

        let neural_network = match obj.get("neural_network") {
            None | Some(Value::Null) => NeuralNetwork::Shallow,
            Some(v) => NeuralNetwork::parse(ctx.string(v, "neural_network")?),
        };

        let training_algorithm = match obj.get("training_algorithm") {
            None | Some(Value::Null) => TrainingAlgorithm::ClippedPpo,
            Some(v) => match ctx.string(v, "training_algorithm")? {
                "clipped_ppo" => TrainingAlgorithm::ClippedPpo,
                "sac" => TrainingAlgorithm::Sac,
                other => {
                    return Err(ctx.err(
                        "training_algorithm",
                        format!("expected \"clipped_ppo\" or \"sac\", got \"{other}\""),
                    ))
                }
            },
        };

        let version = match obj.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(ctx.err(
                    "version",
                    format!("expected a string such as \"4\", got {}", short(other)),
                ))
            }
        };

        Ok(ModelMetadata {
            action_space,
            sensor,
            neural_network,
            training_algorithm,
            version,
            lidar_config: obj.get("lidar_config").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// The file as DeepRacer writes it.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        match &self.action_space {
            ActionSpace::Discrete(actions) => {
                let list: Vec<Value> = actions
                    .iter()
                    .enumerate()
                    .map(|(i, a)| json!({"steering_angle": a.steering_angle, "speed": a.speed, "index": i}))
                    .collect();
                m.insert("action_space".into(), Value::Array(list));
            }
            ActionSpace::Continuous {
                steering_angle,
                speed,
            } => {
                m.insert(
                    "action_space".into(),
                    json!({
                        "steering_angle": {"low": steering_angle.low, "high": steering_angle.high},
                        "speed": {"low": speed.low, "high": speed.high},
                    }),
                );
            }
        }
        m.insert(
            "sensor".into(),
            Value::Array(
                self.sensor
                    .iter()
                    .map(|s| Value::from(s.as_str()))
                    .collect(),
            ),
        );
        m.insert(
            "neural_network".into(),
            Value::from(self.neural_network.as_str()),
        );
        m.insert(
            "training_algorithm".into(),
            Value::from(self.training_algorithm.as_str()),
        );
        m.insert(
            "action_space_type".into(),
            Value::from(self.action_space.type_name()),
        );
        if let Some(v) = &self.version {
            m.insert("version".into(), Value::from(v.as_str()));
        }
        if let Some(l) = &self.lidar_config {
            m.insert("lidar_config".into(), l.clone());
        }
        Value::Object(m)
    }

    pub fn to_json_pretty(&self) -> String {
        // Serialising a Value built above cannot fail.
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    /// Write the file atomically (temp file, fsync, rename) so that a crash
    /// never leaves a half-written metadata file next to a model.
    pub fn save(&self, path: &Path) -> Result<(), MetadataError> {
        safe_io::atomic::write(path, self.to_json_pretty().as_bytes()).map_err(|source| {
            MetadataError::Io {
                file: path.display().to_string(),
                source,
            }
        })
    }

    /// A metadata for a stock-like camera model with the given action space.
    pub fn new(action_space: ActionSpace) -> ModelMetadata {
        ModelMetadata {
            action_space,
            sensor: vec![Sensor::FrontFacingCamera],
            neural_network: NeuralNetwork::Shallow,
            training_algorithm: TrainingAlgorithm::ClippedPpo,
            version: Some("5".into()),
            lidar_config: None,
        }
    }

    /// The one camera sensor this model reads, or an error for models we
    /// cannot feed (lidar, several cameras).
    pub fn camera_sensor(&self, file: &str) -> Result<Sensor, MetadataError> {
        let cams: Vec<&Sensor> = self.sensor.iter().filter(|s| s.is_camera()).collect();
        let others: Vec<&Sensor> = self.sensor.iter().filter(|s| !s.is_camera()).collect();
        if !others.is_empty() || cams.len() != 1 || *cams[0] == Sensor::StereoCameras {
            return Err(MetadataError::Field {
                file: file.to_string(),
                field: "sensor".into(),
                message: format!(
                    "[{}] is not supported: only single-camera models (FRONT_FACING_CAMERA, LEFT_CAMERA or observation) run on this car",
                    self.sensor.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(cams[0].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "model_metadata.json";

    fn err_text(text: &str) -> String {
        ModelMetadata::parse(text, F).unwrap_err().to_string()
    }

    #[test]
    fn parses_discrete_console_file() {
        let m = ModelMetadata::parse(
            r#"{"action_space": [{"steering_angle": -30, "speed": 0.5, "index": 0},
                                 {"steering_angle": 30.0, "speed": 1.5, "index": 1}],
                "sensor": ["FRONT_FACING_CAMERA"], "neural_network": "DEEP_CONVOLUTIONAL_NETWORK_SHALLOW",
                "training_algorithm": "clipped_ppo", "action_space_type": "discrete", "version": "4",
                "some_future_field": {"x": 1}}"#,
            F,
        )
        .unwrap();
        assert_eq!(m.action_space.output_len(), 2);
        assert_eq!(m.action_space.max_abs_steering(), 30.0);
        assert_eq!(m.action_space.max_speed(), 1.5);
        assert_eq!(m.sensor, vec![Sensor::FrontFacingCamera]);
        assert_eq!(m.version.as_deref(), Some("4"));
    }

    #[test]
    fn missing_fields_take_deepracer_defaults() {
        let m = ModelMetadata::parse(
            r#"{"action_space": [{"steering_angle": 0, "speed": 1}]}"#,
            F,
        )
        .unwrap();
        assert_eq!(m.sensor, vec![Sensor::Observation]);
        assert_eq!(m.neural_network, NeuralNetwork::Shallow);
        assert_eq!(m.training_algorithm, TrainingAlgorithm::ClippedPpo);
        assert_eq!(m.version, None);
        assert!(matches!(m.action_space, ActionSpace::Discrete(ref a) if a.len() == 1));
    }

    #[test]
    fn wrong_types_name_file_and_field() {
        assert_eq!(
            err_text(
                r#"{"action_space": [{"steering_angle": 0, "speed": 1}, {"steering_angle": 0, "speed": 1}, {"steering_angle": 10, "speed": "fast"}]}"#
            ),
            r#"model_metadata.json: action_space[2].speed: expected a number, got "fast""#
        );
        assert_eq!(
            err_text(r#"{"action_space": [{"speed": 1}]}"#),
            "model_metadata.json: action_space[0].steering_angle: missing (expected a number)"
        );
        assert!(err_text(r#"{"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": "FRONT_FACING_CAMERA"}"#)
            .starts_with("model_metadata.json: sensor: expected a list"));
        assert!(err_text(
            r#"{"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": ["CAMERA_X"]}"#
        )
        .starts_with("model_metadata.json: sensor[0]: unknown sensor \"CAMERA_X\""));
        assert!(err_text(
            r#"{"action_space": [{"steering_angle": 0, "speed": 1}], "training_algorithm": "dqn"}"#
        )
        .starts_with("model_metadata.json: training_algorithm:"));
        assert!(err_text(r#"{"action_space_type": "discrete", "action_space": {"steering_angle": {"low": -1, "high": 1}}}"#)
            .starts_with("model_metadata.json: action_space: expected a list"));
        assert!(err_text("{\"action_space\": [").starts_with("model_metadata.json: not valid JSON"));
        assert_eq!(
            err_text("{}"),
            "model_metadata.json: action_space: missing (expected a list of actions)"
        );
        assert!(
            err_text(r#"{"action_space": [{"steering_angle": 0, "speed": 1, "index": 3}]}"#)
                .starts_with("model_metadata.json: action_space[0].index: is 3")
        );
    }

    #[test]
    fn continuous_requires_high_above_low() {
        let ok = ModelMetadata::parse(
            r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 0.5, "high": 2}}}"#,
            F,
        )
        .unwrap();
        assert_eq!(ok.action_space.output_len(), 2);
        assert_eq!(ok.action_space.max_speed(), 2.0);
        assert_eq!(
            err_text(
                r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 1, "high": 1}}}"#
            ),
            "model_metadata.json: action_space.speed: high (1) must be greater than low (1)"
        );
        assert_eq!(
            err_text(r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": 30, "high": -30}, "speed": {"low": 1, "high": 2}}}"#),
            "model_metadata.json: action_space.steering_angle: high (-30) must be greater than low (30)"
        );
        assert_eq!(
            err_text(
                r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": -30, "high": 30}, "speed": {"low": 1}}}"#
            ),
            "model_metadata.json: action_space.speed.high: missing (expected a number)"
        );
    }

    #[test]
    fn writes_back_what_it_reads() {
        for text in [
            r#"{"action_space": [{"steering_angle": -30, "speed": 0.5}, {"steering_angle": 15, "speed": 2}], "version": 4, "lidar_config": {"num_sectors": 8}}"#,
            r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": -20, "high": 30}, "speed": {"low": 0.5, "high": 2}}, "sensor": ["LEFT_CAMERA"], "training_algorithm": "sac", "neural_network": "MY_NET"}"#,
        ] {
            let m = ModelMetadata::parse(text, F).unwrap();
            let again = ModelMetadata::parse(&m.to_json_pretty(), F).unwrap();
            assert_eq!(m, again);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(METADATA_FILE);
        let m = ModelMetadata::new(ActionSpace::Discrete(vec![DiscreteAction {
            steering_angle: 10.0,
            speed: 1.0,
        }]));
        m.save(&p).unwrap();
        assert_eq!(ModelMetadata::load(&p).unwrap(), m);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["action_space"][0]["index"], 0);
        assert_eq!(v["action_space_type"], "discrete");
        assert_eq!(v["sensor"][0], "FRONT_FACING_CAMERA");
    }

    #[test]
    fn speeds_and_angles_outside_deepracer_ranges_are_refused_by_field() {
        let four = r#"{"steering_angle": 0, "speed": 1}, {"steering_angle": 0, "speed": 1}, {"steering_angle": 0, "speed": 1}"#;
        assert_eq!(
            err_text(&format!(
                r#"{{"action_space": [{four}, {{"steering_angle": 0, "speed": -1}}]}}"#
            )),
            "model_metadata.json: action_space[3].speed: -1 is outside 0.01-4 m/s"
        );
        assert_eq!(
            err_text(r#"{"action_space": [{"steering_angle": 0, "speed": 0}]}"#),
            "model_metadata.json: action_space[0].speed: 0 is outside 0.01-4 m/s"
        );
        // Finite as f64 but infinite as the f32 the mapper works in.
        assert_eq!(
            err_text(r#"{"action_space": [{"steering_angle": 1e300, "speed": 1}]}"#),
            "model_metadata.json: action_space[0].steering_angle: 1e+300 is outside +/-30 degrees"
        );
        assert_eq!(
            err_text(r#"{"action_space": [{"steering_angle": -31, "speed": 4.5}]}"#),
            "model_metadata.json: action_space[0].steering_angle: -31 is outside +/-30 degrees"
        );
        assert_eq!(
            err_text(
                r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": -30, "high": 30}, "speed": {"low": -4, "high": 2}}}"#
            ),
            "model_metadata.json: action_space.speed.low: -4 is outside 0.01-4 m/s"
        );
        assert_eq!(
            err_text(
                r#"{"action_space_type": "continuous", "action_space": {"steering_angle": {"low": -30, "high": 90}, "speed": {"low": 1, "high": 2}}}"#
            ),
            "model_metadata.json: action_space.steering_angle.high: 90 is outside +/-30 degrees"
        );
        // The range ends themselves are fine.
        ModelMetadata::parse(
            r#"{"action_space": [{"steering_angle": -30, "speed": 0.1}, {"steering_angle": 30, "speed": 4}]}"#,
            F,
        )
        .unwrap();
        // A console space with top speed 0.1 m/s at speed granularity 3 has
        // entries of 0.033 and 0.067 m/s: a real model, accepted.
        ModelMetadata::parse(
            r#"{"action_space": [{"steering_angle": 0, "speed": 0.033}, {"steering_angle": 0, "speed": 0.067}, {"steering_angle": 0, "speed": 0.1}]}"#,
            F,
        )
        .unwrap();
        let many: Vec<String> = (0..=MAX_DISCRETE_ACTIONS)
            .map(|_| r#"{"steering_angle": 0, "speed": 1}"#.to_string())
            .collect();
        assert!(
            err_text(&format!(r#"{{"action_space": [{}]}}"#, many.join(",")))
                .starts_with("model_metadata.json: action_space: 1025 actions is more than")
        );
    }

    #[test]
    fn lidar_models_are_refused_by_name() {
        let m = ModelMetadata::parse(
            r#"{"action_space": [{"steering_angle": 0, "speed": 1}], "sensor": ["FRONT_FACING_CAMERA", "LIDAR"]}"#,
            F,
        )
        .unwrap();
        let e = m.camera_sensor(F).unwrap_err().to_string();
        assert!(e.contains("sensor") && e.contains("LIDAR"), "{e}");
    }
}
