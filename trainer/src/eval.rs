//! Evaluation as the DeepRacer console does it, but through the car's own
//! code: the exported model is loaded by `policy` exactly as the daemon loads
//! it, every simulated camera frame goes through the same `Preprocessor` and
//! `ActionMapper`, and the normalised commands move the simulated car as the
//! daemon's sim mode does (full lock = the car's steering limit, full
//! throttle = its top speed).

use std::path::Path;

use policy::{Backend, Frame, Model, PixelFormat, Preprocessor};
use serde::Serialize;
use sim::{CarAction, Channels, LapRunner, Sim, SimConfig, Track};

/// What `car-trainer eval --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub track: String,
    pub laps_completed: usize,
    pub lap_times_s: Vec<f64>,
    pub offtrack_events: u32,
    /// Mean progress (0-100) reached per lap attempt: completed laps count
    /// 100, the unfinished last lap its progress.
    pub progress_mean: f64,
    pub steps: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] policy::ModelError),
    #[error(transparent)]
    Preprocess(#[from] policy::PreprocessError),
    #[error("{0}")]
    Policy(#[from] policy::PolicyError),
}

/// Drive `laps` laps of `track` with the model in `dir` at the given
/// max-speed setting (0-1), with a step budget of three times the lap time
/// at 0.5 m/s so a car that stalls cannot run forever.
pub fn evaluate(
    dir: &Path,
    backend: &Backend,
    track: &Track,
    laps: usize,
    max_speed_scale: f32,
    seed: u64,
) -> Result<EvalReport, EvalError> {
    let Model {
        mut policy,
        metadata,
        ..
    } = Model::load(dir, backend)?;
    let spec = *policy.input_spec();
    let (w, h) = (spec.width, spec.height);
    let channels = if spec.channels == 1 {
        Channels::Gray
    } else {
        Channels::Rgb
    };
    let format = if spec.channels == 1 {
        PixelFormat::Gray8
    } else {
        PixelFormat::Rgb8
    };
    let mut pre = Preprocessor::new(w as u32, h as u32, format, spec)?;
    let mapper = policy::ActionMapper::new(&metadata.action_space);
    let mut image = vec![0u8; w * h * channels.bytes_per_pixel()];
    let mut input = vec![0.0f32; spec.len()];
    let mut output = vec![0.0f32; policy.output_len()];

    let mut runner = LapRunner::new(Sim::new(track.clone(), SimConfig::default()));
    runner.reset(seed);
    let budget = (laps.max(1) as f64 * track.length() / 0.5 * sim::STEP_HZ * 3.0) as u64;
    let car = runner.sim().config().car;
    while runner.laps_completed() < laps && runner.steps() < budget {
        runner
            .sim_mut()
            .render_into(&mut image, w, h, channels)
            .expect("buffer sized for the model input");
        let frame = Frame {
            data: &image,
            format,
            width: w as u32,
            height: h as u32,
            timestamp_ns: (runner.time_s() * 1e9) as u64,
            seq: runner.steps(),
        };
        pre.run(&frame, &mut input)?;
        policy.infer(&input, &mut output)?;
        let a = mapper.map(&output, max_speed_scale);
        runner.step(CarAction::from_commands(
            a.steering as f64,
            a.throttle as f64,
            &car,
        ));
    }
    Ok(report(&runner, laps))
}

/// The expert's own laps, for comparison: it drives exactly the labels the
/// network learns (pure-pursuit steering, throttle eased before bends) at
/// the same max-speed setting, so the gap is what imitation loses.
pub fn evaluate_expert(track: &Track, laps: usize, max_speed_scale: f32, seed: u64) -> EvalReport {
    let mut runner = LapRunner::new(Sim::new(track.clone(), SimConfig::default()));
    runner.reset(seed);
    let budget = (laps.max(1) as f64 * track.length() / 0.5 * sim::STEP_HZ * 3.0) as u64;
    let car = runner.sim().config().car;
    while runner.laps_completed() < laps && runner.steps() < budget {
        let (label, _) = crate::dagger::expert_label(runner.sim(), max_speed_scale as f64);
        runner.step(CarAction::from_commands(
            label.steer as f64,
            (label.throttle * max_speed_scale) as f64,
            &car,
        ));
    }
    report(&runner, laps)
}

fn report(runner: &LapRunner, laps: usize) -> EvalReport {
    let done = runner.laps_completed();
    let partial = if done < laps {
        runner.lap_progress()
    } else {
        0.0
    };
    let attempts = if done < laps { done + 1 } else { done };
    let progress_mean = (done as f64 * 100.0 + partial) / attempts.max(1) as f64;
    let r = runner.report();
    EvalReport {
        track: r.track,
        laps_completed: r.laps_completed,
        lap_times_s: r.lap_times_s,
        offtrack_events: r.offtrack_events,
        progress_mean,
        steps: r.steps,
    }
}
