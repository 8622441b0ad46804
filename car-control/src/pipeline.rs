//! The real brain (policy crate: preprocess, infer, map) and the real wheels
//! (servo-driver), plus model loading: from a path, from the model bundled
//! in the binary, and on a loader thread for swaps at run time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use policy::{ActionMapper, Backend, GraphFormat, Model, ModelFiles, ModelMetadata, Preprocessor};
use servo_driver::{Channel, Pulses, ServoDriver};

use crate::brain::{Brain, BrainError, MappedAction, StageTimes};
use crate::commands::{ModelState, Shared};
use crate::frame::{Frame, PixelFormat};
use crate::wheels::{Wheels, WheelsError};
use policy::BackendChoice;

/// The model shipped inside the binary (models/default/), so `run --sim`
/// works from any directory. See models/default/README.md for what it is.
pub const BUNDLED_ONNX: &[u8] = include_bytes!("../../models/default/model.onnx");
/// The bundled model's `model_metadata.json` (action space and input).
pub const BUNDLED_METADATA: &str = include_str!("../../models/default/model_metadata.json");
/// How the bundled model is named in logs and status.
pub const BUNDLED_NAME: &str = "(bundled model)";

/// Initialise the process's inference engine (once per process).
pub fn init_backend(choice: BackendChoice, library: &str) -> Result<Backend, policy::BackendError> {
    // ONNX Runtime's telemetry is not stopped by the builder's switch.
    // Called at start-up, before the threads that could read the environment.
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let lib = if library.is_empty() {
        None
    } else {
        Some(Path::new(library))
    };
    Backend::init(choice, lib)
}

/// The bundled model's files, as if read from a folder.
pub fn bundled_files() -> Result<ModelFiles, policy::ModelError> {
    let metadata = ModelMetadata::parse(BUNDLED_METADATA, "models/default/model_metadata.json")?;
    Ok(ModelFiles {
        source: PathBuf::from(BUNDLED_NAME),
        metadata,
        format: GraphFormat::Onnx,
        graph_name: "models/default/model.onnx".into(),
        graph: BUNDLED_ONNX.to_vec(),
    })
}

/// Load a model folder/archive, or the bundled one when `path` is None.
pub fn load_model(path: Option<&Path>, backend: &Backend) -> Result<Model, policy::ModelError> {
    match path {
        Some(p) => Model::load(p, backend),
        None => Model::from_files(bundled_files()?, backend, Instant::now()),
    }
}

/// Preprocess + policy + action mapping, with buffers allocated once.
pub struct PolicyBrain {
    model: Model,
    mapper: ActionMapper,
    /// Built for the camera's format. JPEG frames are checked against that
    /// format and decoded inside it (the same code `check-model` runs):
    /// luma at reduced scale without allocation for gray models, the
    /// general decoder for the odd frame that needs it, chosen per frame.
    pre: Option<Preprocessor>,
    /// The (w, h, format) the preprocessor was built for, as the camera sends it.
    built_for: Option<(u32, u32, PixelFormat)>,
    input: Vec<f32>,
    output: Vec<f32>,
    origin: String,
    backend: String,
}

impl PolicyBrain {
    /// Wrap a loaded model; the buffers and action mapper are allocated here,
    /// the preprocessor by [`Self::prepare`] or on the first frame.
    pub fn new(model: Model) -> Self {
        let mapper = ActionMapper::new(&model.metadata.action_space);
        let input = vec![0.0; model.policy.input_spec().len()];
        let output = vec![0.0; model.policy.output_len()];
        let origin = model.source.display().to_string();
        let backend = model.policy.backend_name().to_string();
        PolicyBrain {
            model,
            mapper,
            pre: None,
            built_for: None,
            input,
            output,
            origin,
            backend,
        }
    }

    /// Build the preprocessor for this camera now, so the first frame does
    /// not pay for it.
    pub fn prepare(
        &mut self,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<(), BrainError> {
        let spec = *self.model.policy.input_spec();
        self.pre = Some(
            Preprocessor::new(width, height, format, spec)
                .map_err(|e| BrainError(format!("preprocessor: {e}")))?,
        );
        self.built_for = Some((width, height, format));
        Ok(())
    }

    /// Decode (JPEG frames) and preprocess into `self.input`; returns the
    /// decode time in microseconds (0 without decode).
    pub fn preprocess(&mut self, frame: &Frame<'_>) -> Result<f32, BrainError> {
        if self.built_for != Some((frame.width, frame.height, frame.format)) {
            // Only when the camera's size or format changes (never in steady state).
            self.prepare(frame.width, frame.height, frame.format)?;
        }
        let Some(pre) = self.pre.as_mut() else {
            return Err(BrainError(
                "preprocess: no preprocessor for this frame".into(),
            ));
        };
        pre.run(frame, &mut self.input)
            .map_err(|e| BrainError(format!("preprocess: {e}")))?;
        Ok(pre.last_jpeg().map_or(0.0, |j| j.decode_us))
    }

    /// Inference from the preprocessed input into the output buffer. NaN
    /// or infinite outputs are an error (`policy::Policy::infer` checks
    /// them without allocating), which the loop's stall rule turns into
    /// neutral: a broken model never reaches the wheels as a guess.
    pub fn infer(&mut self) -> Result<(), BrainError> {
        let (policy, input, output) = (&mut self.model.policy, &self.input, &mut self.output);
        crate::arena::scope(|| policy.infer(input, output))
            .map_err(|e| BrainError(format!("inference: {e}")))
    }

    /// One inference on this (loader) thread before the model is handed to
    /// the loop, so that the engine's first-run set-up (tract plans and
    /// sizes its scratch tensors on the first run) is not paid on the
    /// control thread, where it could trip the supervisor. Outside the
    /// frame arena: whatever the engine keeps goes to the heap and is freed
    /// on the loop's first run. The outputs are not looked at (the model
    /// check has already judged them on a real frame); the caller guards
    /// against a panic.
    pub fn warm_up(&mut self) {
        let _ = self.model.policy.infer(&self.input, &mut self.output);
    }

    /// The raw policy outputs of the last inference.
    pub fn outputs(&self) -> &[f32] {
        &self.output
    }

    /// Map the last outputs with the stock formulas.
    pub fn map(&self, max_speed_scale: f32) -> policy::MappedAction {
        self.mapper.map(&self.output, max_speed_scale)
    }

    /// The model it runs.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

impl Brain for PolicyBrain {
    fn decide(
        &mut self,
        frame: &Frame<'_>,
        max_speed_scale: f32,
        t: &mut StageTimes,
    ) -> Result<MappedAction, BrainError> {
        let t0 = Instant::now();
        self.preprocess(frame)?;
        let t1 = Instant::now();
        self.infer()?;
        let t2 = Instant::now();
        let m = self.mapper.map(&self.output, max_speed_scale);
        let t3 = Instant::now();
        t.preprocess_us = (t1 - t0).as_secs_f32() * 1e6;
        t.inference_us = (t2 - t1).as_secs_f32() * 1e6;
        t.mapping_us = (t3 - t2).as_secs_f32() * 1e6;
        Ok(m)
    }

    fn backend(&self) -> &str {
        &self.backend
    }

    fn origin(&self) -> &str {
        &self.origin
    }
}

/// The servo driver as the loop's wheels.
pub struct ServoWheels {
    /// The driver every wheel call goes to.
    pub driver: ServoDriver,
    /// Where `reload_calibration` reads from.
    pub actuator: servo_driver::ActuatorConfig,
}

fn werr(e: impl std::fmt::Display) -> WheelsError {
    WheelsError(e.to_string())
}

impl Wheels for ServoWheels {
    #[inline]
    fn drive(&mut self, steering: f32, throttle: f32) -> Result<Pulses, WheelsError> {
        self.driver.drive(steering, throttle).map_err(werr)
    }

    fn pulses(
        &mut self,
        steering_ns: Option<u32>,
        throttle_ns: Option<u32>,
    ) -> Result<Pulses, WheelsError> {
        let n = self.driver.calibration().neutral();
        self.driver
            .raw_pulse(Channel::Steering, steering_ns.unwrap_or(n.steering_ns))
            .map_err(werr)?;
        self.driver
            .raw_pulse(Channel::Throttle, throttle_ns.unwrap_or(n.throttle_ns))
            .map_err(werr)?;
        Ok(self.driver.last_pulses())
    }

    #[inline]
    fn neutral(&mut self) -> Result<Pulses, WheelsError> {
        self.driver.neutral().map_err(werr)
    }

    fn set_calibration(&mut self, cal: servo_driver::Calibration) -> Result<(), WheelsError> {
        self.driver.set_calibration(cal).map_err(werr)
    }

    fn reload_calibration(&mut self) -> Result<(), WheelsError> {
        let cal = self.actuator.load_calibration().map_err(werr)?;
        self.driver.set_calibration(cal).map_err(werr)
    }

    fn backend(&self) -> &'static str {
        self.driver.backend()
    }

    fn bad_commands(&self) -> u64 {
        let b = self.driver.bad_commands();
        b.nan + b.out_of_range
    }
}

/// Loads models off the control thread and hands them over through the
/// model queue; drops the models the loop hands back. A bad model never
/// reaches the loop: the old one keeps driving and the status says why.
pub struct ModelLoader {
    tx: std::sync::mpsc::Sender<PathBuf>,
    _thread: std::thread::JoinHandle<()>,
}

impl ModelLoader {
    /// `frame_hint`: the camera's (width, height, format), to build the
    /// preprocessor on this thread rather than on the loop's first frame.
    pub fn start(
        shared: Arc<Shared>,
        backend: Backend,
        frame_hint: Option<(u32, u32, PixelFormat)>,
    ) -> std::io::Result<ModelLoader> {
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || loop {
                // Old models handed back by the loop are freed here.
                while shared.models_out.dequeue().is_some() {}
                let path = match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                    Ok(p) => p,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let shown = path.display().to_string();
                update_status(&shared, |s| {
                    s.state = ModelState::Loading;
                    s.requested = Some(shown.clone());
                    s.error = None;
                });
                // The child check first: only a model it passed is loaded
                // here, next to the control loop.
                // Loading, preparing and the warm-up run behind catch_panic:
                // an engine panic here (one the check child did not meet)
                // refuses the model instead of killing this thread and
                // latching the drivers through the panic hook.
                let result = Self::check_first(&path, &backend).and_then(|_| {
                    servo_driver::failsafe::catch_panic(|| {
                        let m = Model::load(&path, &backend).map_err(|e| e.to_string())?;
                        let mut b = PolicyBrain::new(m);
                        if let Some((w, h, f)) = frame_hint {
                            b.prepare(w, h, f).map_err(|e| e.to_string())?;
                        }
                        b.warm_up();
                        Ok(b)
                    })
                    .map_err(|p| format!("the engine panicked while loading the model: {p}"))?
                });
                match result {
                    Ok(b) => {
                        let backend = b.backend().to_string();
                        if shared.models_in.enqueue(Box::new(b)).is_err() {
                            update_status(&shared, |s| {
                                s.state = ModelState::Error;
                                s.error = Some("the control loop is busy swapping models; try again".into());
                            });
                        } else {
                            tracing::info!(path = %shown, backend, "model loaded; swapping in");
                            update_status(&shared, |s| {
                                s.state = ModelState::Loaded;
                                s.active = Some(shown.clone());
                                s.error = None;
                            });
                        }
                    }
                    Err(error) => {
                        tracing::error!(path = %shown, %error, "model rejected; keeping the current one");
                        update_status(&shared, |s| {
                            s.state = ModelState::Error;
                            s.error = Some(error);
                        });
                    }
                }
            })?;
        Ok(ModelLoader {
            tx,
            _thread: thread,
        })
    }

    /// Check the model at `path` in a child `car-runtime check-model`
    /// under `policy::check::ChildLimits::DEFAULT`, on `backend`'s engine,
    /// and return the child's report; Err says why it was refused, or that
    /// the check crashed. Blocks for as long as the check takes (at most
    /// the wall-clock limit); call it off the control thread. Without a
    /// `car-runtime` binary to run (see `policy::check::checker_exe`: set
    /// `CAR_RUNTIME_CHECKER` in programs that are not car-runtime) every
    /// model is refused: nothing is ever loaded unchecked.
    pub fn check_first(path: &Path, backend: &Backend) -> Result<serde_json::Value, String> {
        use policy::check::{check_in_child, checker_exe, ChildLimits, Verdict};
        let exe = checker_exe().map_err(|e| format!("{}: {e}", path.display()))?;
        match check_in_child(&exe, path, backend, &ChildLimits::DEFAULT) {
            Verdict::Passed(report) => Ok(report),
            Verdict::Refused(why) => Err(why),
            Verdict::Crashed(why) => {
                tracing::error!(path = %path.display(), %why, "model check crashed");
                Err(why)
            }
        }
    }

    /// Ask for a model to be loaded; returns at once.
    pub fn request(&self, path: PathBuf) -> bool {
        self.tx.send(path).is_ok()
    }
}

/// Change the shared model status under its lock (poison ignored). Not for
/// the control loop, which never takes this lock.
pub fn update_status(shared: &Shared, f: impl FnOnce(&mut crate::commands::ModelStatus)) {
    f(&mut shared
        .model_status
        .lock()
        .unwrap_or_else(|e| e.into_inner()));
}
