//! An in-memory car for the route tests: the arbiter's visible rules (e-stop
//! latch refuses modes, pulses only in calibration mode, bad calibrations
//! rejected by field, failed model loads keep the old model, a tail light
//! that keeps its colour or no tail light at all) so the tests check what a
//! user would see through the web UI.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use web_ui::*;

pub struct FakeState {
    pub mode: Mode,
    pub estop: bool,
    pub max_speed: f32,
    pub model: ModelStatus,
    pub saved: Calibration,
    pub live: Calibration,
    pub commands: Vec<Command>,
    pub pulses: Vec<(Channel, u32)>,
    pub frame_seq: u64,
    /// Simulates a full command queue: `command` answers `Busy`.
    pub queue_full: bool,
    /// E-stops that came through `CarApi::estop`.
    pub estops: u32,
    /// The tail light's colour; `None`: this car has no tail light.
    pub tail_light: Option<TailLightColour>,
    /// Every colour `CarApi::set_tail_light` was called with, in order.
    pub tail_sets: Vec<TailLightColour>,
}

/// The colour the fake car's tail light starts with.
pub const FAKE_TAIL: TailLightColour = TailLightColour { r: 255, g: 0, b: 0 };

pub struct FakeCar(pub Mutex<FakeState>);

pub fn stock_cal() -> Calibration {
    Calibration {
        steering: ChannelCalibration {
            min: 1_200_000,
            mid: 1_450_000,
            max: 1_700_000,
            polarity: 1,
        },
        throttle: ChannelCalibration {
            min: 1_311_000,
            mid: 1_446_000,
            max: 1_603_500,
            polarity: -1,
        },
        period_ns: 20_000_000,
    }
}

impl FakeCar {
    pub fn new() -> Arc<FakeCar> {
        Arc::new(FakeCar(Mutex::new(FakeState {
            mode: Mode::Stopped,
            estop: false,
            max_speed: 0.0,
            model: ModelStatus::default(),
            saved: stock_cal(),
            live: stock_cal(),
            commands: vec![],
            pulses: vec![],
            frame_seq: 0,
            queue_full: false,
            estops: 0,
            tail_light: Some(FAKE_TAIL),
            tail_sets: vec![],
        })))
    }
    pub fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.0.lock().unwrap()
    }
}

fn validate(c: &Calibration) -> Result<(), ApiError> {
    for (n, ch) in [("steering", c.steering), ("throttle", c.throttle)] {
        for (f, v) in [("min", ch.min), ("mid", ch.mid), ("max", ch.max)] {
            if !(500_000..=2_500_000).contains(&v) {
                return Err(ApiError::Invalid(format!(
                    "{n}.{f}: {v} ns is outside 500000..=2500000"
                )));
            }
        }
        if !(ch.min < ch.mid && ch.mid < ch.max) {
            return Err(ApiError::Invalid(format!("{n}: need min < mid < max")));
        }
    }
    Ok(())
}

impl CarApi for FakeCar {
    fn status(&self) -> CarStatus {
        let s = self.st();
        CarStatus {
            mode: s.mode,
            estop: s.estop,
            max_speed_pct: s.max_speed,
            model: s.model.clone(),
            fps: 15.0,
            latency_p50_ms: 1.0,
            latency_p99_ms: 2.0,
            cpu_temp_c: Some(50.0),
            battery_pct: None,
            battery_level: None,
            battery_low: false,
            last_event: None,
            simulated: true,
            actuator: "fake".into(),
        }
    }
    fn command(&self, cmd: Command) -> Result<(), ApiError> {
        let mut s = self.st();
        if s.queue_full {
            return Err(ApiError::Busy);
        }
        s.commands.push(cmd);
        match cmd {
            Command::SetMode { mode } => {
                if s.estop && mode != Mode::Stopped {
                    return Err(ApiError::Refused("e-stop latched: reset it first".into()));
                }
                s.mode = mode;
            }
            Command::EStop => {
                s.estop = true;
                s.mode = Mode::Stopped;
            }
            Command::ResetEStop => s.estop = false,
            Command::SetMaxSpeed { percent } => s.max_speed = percent.clamp(0.0, 100.0),
            Command::Manual { .. } => {}
        }
        Ok(())
    }
    /// Like the daemon's dedicated e-stop flag: never behind the queue.
    fn estop(&self) -> Result<(), ApiError> {
        let mut s = self.st();
        s.estops += 1;
        s.commands.push(Command::EStop);
        s.estop = true;
        s.mode = Mode::Stopped;
        Ok(())
    }
    fn telemetry_since(&self, after_seq: u64, out: &mut Vec<TelemetrySample>) -> u64 {
        out.push(TelemetrySample {
            seq: after_seq + 1,
            ..Default::default()
        });
        after_seq + 1
    }
    fn latest_frame(&self, after_seq: u64, out: &mut FrameCopy) -> bool {
        let mut s = self.st();
        s.frame_seq += 1;
        if s.frame_seq <= after_seq {
            return false;
        }
        out.seq = s.frame_seq;
        out.width = 16;
        out.height = 12;
        out.format = PixelFormat::Gray8;
        out.data.clear();
        out.data.extend((0..16 * 12).map(|i| i as u8));
        true
    }
    fn calibration(&self) -> CalibrationView {
        let s = self.st();
        CalibrationView {
            saved: s.saved,
            live: s.live,
        }
    }
    fn calibration_set(&self, cal: Calibration) -> Result<(), ApiError> {
        validate(&cal)?;
        let mut s = self.st();
        if matches!(s.mode, Mode::Manual | Mode::Autonomous) {
            return Err(ApiError::Refused("stop the car first".into()));
        }
        s.live = cal;
        Ok(())
    }
    fn calibration_pulse(&self, channel: Channel, pulse_ns: u32) -> Result<(), ApiError> {
        let mut s = self.st();
        if s.mode != Mode::Calibration {
            return Err(ApiError::Refused("not in calibration mode".into()));
        }
        s.pulses.push((channel, pulse_ns.clamp(500_000, 2_500_000)));
        Ok(())
    }
    fn calibration_save(&self) -> Result<Calibration, ApiError> {
        let mut s = self.st();
        s.saved = s.live;
        Ok(s.saved)
    }
    fn calibration_cancel(&self) -> Result<Calibration, ApiError> {
        let mut s = self.st();
        s.live = s.saved;
        Ok(s.live)
    }
    fn calibration_import_stock(&self, json: &[u8]) -> Result<Calibration, ApiError> {
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| ApiError::Invalid(format!("calibration.json: {e}")))?;
        let ch = |k: &str| -> Result<ChannelCalibration, ApiError> {
            let c = &v["Calibration"][k];
            let g = |f: &str| {
                c[f].as_i64().ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "calibration.json: Calibration.{k}.{f}: missing or not a number"
                    ))
                })
            };
            Ok(ChannelCalibration {
                min: g("min")? as u32,
                mid: g("mid")? as u32,
                max: g("max")? as u32,
                polarity: g("polarity")? as i8,
            })
        };
        let cal = Calibration {
            steering: ch("Servo")?,
            throttle: ch("Motor")?,
            period_ns: 20_000_000,
        };
        validate(&cal)?;
        self.st().live = cal;
        Ok(cal)
    }
    fn validate_model(&self, dir: &Path) -> Result<ModelSummary, String> {
        let meta = std::fs::read(dir.join("model_metadata.json"))
            .map_err(|e| format!("model_metadata.json: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&meta).map_err(|e| format!("model_metadata.json: {e}"))?;
        let n = v["action_space"]
            .as_array()
            .ok_or("model_metadata.json: action_space: missing")?
            .len();
        let onnx = std::fs::read(dir.join("model.onnx")).map_err(|e| format!("model.onnx: {e}"))?;
        if onnx.starts_with(b"bad") {
            return Err(format!(
                "model.onnx: output has 3 values but model_metadata.json action_space has {n} actions"
            ));
        }
        Ok(ModelSummary {
            action_space: format!("discrete, {n} actions"),
            input: "[1,1,120,160] NCHW".into(),
            sensors: vec![],
        })
    }
    fn load_model(&self, dir: &Path) -> Result<(), ApiError> {
        let mut s = self.st();
        let p = dir.display().to_string();
        s.model.requested = Some(p.clone());
        if std::fs::read(dir.join("model.onnx"))
            .map(|b| b.starts_with(b"bad"))
            .unwrap_or(true)
        {
            s.model.state = ModelState::Error;
            s.model.error = Some("model.onnx: cannot load".into());
        } else {
            s.model.state = ModelState::Loaded;
            s.model.active = Some(p);
            s.model.error = None;
        }
        Ok(())
    }
    fn tail_light(&self) -> Option<TailLightColour> {
        self.st().tail_light
    }
    /// Like the daemon: refused without a tail light, else shown and kept.
    fn set_tail_light(&self, colour: TailLightColour) -> Result<TailLightColour, ApiError> {
        let mut s = self.st();
        s.tail_sets.push(colour);
        if s.tail_light.is_none() {
            return Err(ApiError::Refused("this car has no tail light".into()));
        }
        s.tail_light = Some(colour);
        Ok(colour)
    }
}

/// A car that implements only the required [`CarApi`] methods (delegated to
/// a [`FakeCar`]): every method with a default body keeps it, as an
/// implementor written before that method was added would.
pub struct DefaultsCar(pub Arc<FakeCar>);

impl CarApi for DefaultsCar {
    fn status(&self) -> CarStatus {
        self.0.status()
    }
    fn command(&self, cmd: Command) -> Result<(), ApiError> {
        self.0.command(cmd)
    }
    fn telemetry_since(&self, after_seq: u64, out: &mut Vec<TelemetrySample>) -> u64 {
        self.0.telemetry_since(after_seq, out)
    }
    fn latest_frame(&self, after_seq: u64, out: &mut FrameCopy) -> bool {
        self.0.latest_frame(after_seq, out)
    }
    fn calibration(&self) -> CalibrationView {
        self.0.calibration()
    }
    fn calibration_set(&self, cal: Calibration) -> Result<(), ApiError> {
        self.0.calibration_set(cal)
    }
    fn calibration_pulse(&self, channel: Channel, pulse_ns: u32) -> Result<(), ApiError> {
        self.0.calibration_pulse(channel, pulse_ns)
    }
    fn calibration_save(&self) -> Result<Calibration, ApiError> {
        self.0.calibration_save()
    }
    fn calibration_cancel(&self) -> Result<Calibration, ApiError> {
        self.0.calibration_cancel()
    }
    fn calibration_import_stock(&self, json: &[u8]) -> Result<Calibration, ApiError> {
        self.0.calibration_import_stock(json)
    }
    fn validate_model(&self, dir: &Path) -> Result<ModelSummary, String> {
        self.0.validate_model(dir)
    }
    fn load_model(&self, dir: &Path) -> Result<(), ApiError> {
        self.0.load_model(dir)
    }
}

pub struct TestApp {
    pub app: Router,
    pub car: Arc<FakeCar>,
    pub dir: tempfile::TempDir,
    pub state: AppState,
}

impl TestApp {
    pub fn new() -> TestApp {
        Self::with(|_| {})
    }
    pub fn with(f: impl FnOnce(&mut WebConfig)) -> TestApp {
        Self::with_car(f, |car| car)
    }
    /// The web UI in front of `wrap(fake car)`: e.g. [`DefaultsCar`]. `car`
    /// is still the fake underneath, for checking what reached it.
    pub fn with_car(
        f: impl FnOnce(&mut WebConfig),
        wrap: impl FnOnce(Arc<FakeCar>) -> Arc<dyn CarApi>,
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WebConfig {
            state_dir: Some(dir.path().join("state")),
            ..WebConfig::default()
        };
        f(&mut cfg);
        let car = FakeCar::new();
        let state = AppState::new(cfg, wrap(car.clone())).unwrap();
        TestApp {
            app: router(state.clone()),
            car,
            dir,
            state,
        }
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn password(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("initial-password"))
            .unwrap()
            .trim()
            .to_string()
    }
    pub async fn send(&self, req: Request<Body>) -> Resp {
        let r = self.app.clone().oneshot(req).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }
    /// Logs in; returns (cookie header value, csrf token).
    pub async fn login(&self) -> (String, String) {
        let pw = self.password();
        let r = self
            .send(json_req(
                "POST",
                "/api/login",
                None,
                None,
                &serde_json::json!({ "password": pw }),
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let set = r
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        let csrf = r.json()["csrf"].as_str().unwrap().to_string();
        (cookie, csrf)
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}
impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub fn req(
    method: &str,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    ctype: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "car.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(t) = csrf {
        b = b.header("x-csrf-token", t);
    }
    if let Some(ct) = ctype {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(Body::from(body)).unwrap()
}

pub fn json_req(
    method: &str,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    v: &serde_json::Value,
) -> Request<Body> {
    req(
        method,
        path,
        cookie,
        csrf,
        Some("application/json"),
        serde_json::to_vec(v).unwrap(),
    )
}

pub const BOUNDARY: &str = "----webuitestboundary";

/// A multipart body: (field name, file name, bytes).
pub fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let mut out = Vec::new();
    for (name, file, data) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), out)
}

pub const GOOD_META: &[u8] = br#"{"action_space":[{"steering_angle":-30,"speed":1},{"steering_angle":0,"speed":1},{"steering_angle":30,"speed":1}],"sensor":["FRONT_FACING_CAMERA"]}"#;

pub fn upload_req(
    cookie: &str,
    csrf: &str,
    name: Option<&str>,
    files: &[(&str, &[u8])],
) -> Request<Body> {
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![];
    if let Some(n) = name {
        parts.push(("name", None, n.as_bytes()));
    }
    for (f, d) in files {
        parts.push(("files", Some(f), d));
    }
    let (ct, body) = multipart(&parts);
    req(
        "POST",
        "/api/models",
        Some(cookie),
        Some(csrf),
        Some(&ct),
        body,
    )
}

/// A .tar.gz with raw entry names (so `..` and absolute names can be made).
pub fn targz(entries: &[(&str, &[u8], u8)]) -> Vec<u8> {
    let mut tarbuf = Vec::new();
    for (name, data, kind) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = *kind;
        if *kind == b'2' {
            h[157..157 + 11].copy_from_slice(b"/etc/passwd");
        }
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tarbuf.extend_from_slice(&h);
        tarbuf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        tarbuf.extend(std::iter::repeat_n(0u8, pad));
    }
    tarbuf.extend(std::iter::repeat_n(0u8, 1024));
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarbuf).unwrap();
    gz.finish().unwrap()
}
