//! Write a test model folder (model.onnx + model_metadata.json) for the other
//! crates' tests and the VM test.
//!
//! cargo run -p policy --example make_model -- OUT_DIR [--kind shallow|linear]
//!     [--layout nhwc|nchw] [--action-space discrete|continuous] [--seed N]

use policy::export::{self, Head, LinearWeights, NetSpec, ShallowWeights};
use policy::metadata::{ActionSpace, DiscreteAction, ModelMetadata, NeuralNetwork, Range};
use policy::preprocess::{InputSpec, Layout};

fn main() {
    if let Err(e) = run() {
        eprintln!("make_model: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let (mut kind, mut layout, mut space, mut seed) = (
        "shallow".to_string(),
        "nhwc".to_string(),
        "discrete".to_string(),
        1u64,
    );
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--kind" => kind = val("--kind")?,
            "--layout" => layout = val("--layout")?,
            "--action-space" => space = val("--action-space")?,
            "--seed" => seed = val("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "-h" | "--help" => {
                println!("make_model OUT_DIR [--kind shallow|linear] [--layout nhwc|nchw] [--action-space discrete|continuous] [--seed N]");
                return Ok(());
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => out = Some(std::path::PathBuf::from(s)),
        }
    }
    let out = out.ok_or("missing OUT_DIR")?;
    let layout = match layout.as_str() {
        "nhwc" => Layout::Nhwc,
        "nchw" => Layout::Nchw,
        o => return Err(format!("--layout: expected nhwc or nchw, got {o}")),
    };
    let action_space = match space.as_str() {
        // The console's default-like grid: 5 angles x 2 speeds.
        "discrete" => ActionSpace::Discrete(
            [-30.0, -15.0, 0.0, 15.0, 30.0]
                .iter()
                .flat_map(|&a| {
                    [1.0, 2.0].map(|s| DiscreteAction {
                        steering_angle: a,
                        speed: s,
                    })
                })
                .collect(),
        ),
        "continuous" => ActionSpace::Continuous {
            steering_angle: Range {
                low: -30.0,
                high: 30.0,
            },
            speed: Range {
                low: 0.5,
                high: 2.0,
            },
        },
        o => {
            return Err(format!(
                "--action-space: expected discrete or continuous, got {o}"
            ))
        }
    };
    let spec = NetSpec {
        input: InputSpec {
            layout,
            ..InputSpec::deepracer()
        },
        outputs: action_space.output_len(),
        head: if matches!(action_space, ActionSpace::Discrete(_)) {
            Head::Softmax
        } else {
            Head::Tanh
        },
    };
    let mut meta = ModelMetadata::new(action_space);
    let bytes = match kind.as_str() {
        "shallow" => export::shallow_cnn(
            &spec,
            &ShallowWeights::random(&spec, seed).map_err(|e| e.to_string())?,
        ),
        "linear" => {
            meta.neural_network = NeuralNetwork::Other("LINEAR_POOL8_MLP32".into());
            export::linear_policy(&spec, &LinearWeights::random(&spec, 8, 32, seed))
        }
        o => return Err(format!("--kind: expected shallow or linear, got {o}")),
    }
    .map_err(|e| e.to_string())?;
    export::write_model_dir(&out, &bytes, &meta).map_err(|e| e.to_string())?;
    println!("{}", out.display());
    Ok(())
}
