//! Load and inference time of a model on one backend, single thread,
//! release build: `cargo run --release -p policy --example bench_infer --
//! [--backend tract|onnxruntime] [--model DIR] [--iters N]`. Without --model it
//! benchmarks the DeepRacer shallow CNN (seeded weights). Prints JSON.

use policy::export::{self, Head, NetSpec, ShallowWeights};
use policy::metadata::{ActionSpace, DiscreteAction, ModelMetadata};
use policy::preprocess::InputSpec;
use policy::{Backend, BackendChoice, Model};
use std::time::Instant;

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((q / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut backend, mut model, mut iters) = ("tract".to_string(), None, 300usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--backend" => backend = args.next().expect("--backend value"),
            "--model" => model = args.next(),
            "--iters" => {
                iters = args
                    .next()
                    .expect("--iters value")
                    .parse()
                    .expect("--iters number")
            }
            o => panic!("unknown argument {o}"),
        }
    }
    let choice: BackendChoice = backend.parse().unwrap();
    let b = Backend::init(choice, None).unwrap_or_else(|e| {
        eprintln!("bench_infer: {e}");
        std::process::exit(77)
    });
    let tmp;
    let dir = match model {
        Some(m) => std::path::PathBuf::from(m),
        None => {
            tmp = std::env::temp_dir().join(format!("bench-shallow-{}", std::process::id()));
            let spec = NetSpec {
                input: InputSpec::deepracer(),
                outputs: 9,
                head: Head::Softmax,
            };
            let bytes =
                export::shallow_cnn(&spec, &ShallowWeights::random(&spec, 1).unwrap()).unwrap();
            let space = ActionSpace::Discrete(
                (0..9)
                    .map(|i| DiscreteAction {
                        steering_angle: -30.0 + 7.5 * i as f64,
                        speed: 1.0,
                    })
                    .collect(),
            );
            export::write_model_dir(&tmp, &bytes, &ModelMetadata::new(space)).unwrap();
            tmp.clone()
        }
    };
    let t = Instant::now();
    let mut m = Model::load(&dir, &b).unwrap();
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let input: Vec<f32> = (0..m.policy.input_spec().len())
        .map(|i| (i % 251) as f32)
        .collect();
    let mut out = vec![0f32; m.policy.output_len()];
    for _ in 0..20 {
        m.policy.infer(&input, &mut out).unwrap();
    }
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            m.policy.infer(&input, &mut out).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "backend": m.policy.backend_name(),
            "version": b.version(),
            "model": dir.display().to_string(),
            "load_ms": load_ms,
            "inference_ms": {"p50": pct(&mut times, 50.0), "p99": pct(&mut times, 99.0)},
            "iters": iters,
        })
    );
}
