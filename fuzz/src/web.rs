//! Web request bodies through the real router (`web_ui::router`), logged
//! in with a real session and CSRF token, against an in-memory car that
//! validates calibrations and imports stock files with the daemon's own
//! code (`servo_driver::Calibration`). Everything below the HTTP layer's
//! body extraction is what a phone's request meets on the car.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use car_runtime::web::{from_web_cal as to_driver, to_web_cal as to_web};
use http_body_util::BodyExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;
use web_ui::{
    ApiError, Calibration, CalibrationView, CarApi, CarStatus, Channel, Command, FrameCopy,
    ModelSummary, TelemetrySample,
};

/// The routes that take a body (or a name) from the phone. The first input
/// byte picks one; the rest is the body.
const ROUTES: &[&str] = &[
    "/api/login",
    "/api/command",
    "/api/calibration",
    "/api/calibration/pulse",
    "/api/calibration/import",
    "/api/race/start",
    // The model name goes in the path: `/api/models/{name}/load`.
    "models-load",
];

/// A car that keeps only what the routes read back.
struct Car {
    live: Mutex<Calibration>,
}

impl CarApi for Car {
    fn status(&self) -> CarStatus {
        CarStatus {
            mode: web_ui::Mode::Stopped,
            estop: false,
            max_speed_pct: 0.0,
            model: web_ui::ModelStatus::default(),
            fps: 0.0,
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
            cpu_temp_c: None,
            battery_pct: None,
            battery_level: None,
            battery_low: false,
            last_event: None,
            simulated: true,
            actuator: "fuzz".into(),
        }
    }
    fn command(&self, _cmd: Command) -> Result<(), ApiError> {
        Ok(())
    }
    fn telemetry_since(&self, after_seq: u64, _out: &mut Vec<TelemetrySample>) -> u64 {
        after_seq
    }
    fn latest_frame(&self, _after_seq: u64, _out: &mut FrameCopy) -> bool {
        false
    }
    fn calibration(&self) -> CalibrationView {
        let live = *self.live.lock().unwrap_or_else(|e| e.into_inner());
        CalibrationView { saved: live, live }
    }
    fn calibration_set(&self, cal: Calibration) -> Result<(), ApiError> {
        to_driver(&cal)
            .validate()
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = cal;
        Ok(())
    }
    fn calibration_pulse(&self, _channel: Channel, pulse_ns: u32) -> Result<(), ApiError> {
        let _ = pulse_ns.clamp(
            servo_driver::calibration::SAFE_MIN_NS,
            servo_driver::calibration::SAFE_MAX_NS,
        );
        Ok(())
    }
    fn calibration_save(&self) -> Result<Calibration, ApiError> {
        Ok(self.calibration().live)
    }
    fn calibration_cancel(&self) -> Result<Calibration, ApiError> {
        Ok(self.calibration().live)
    }
    /// As the daemon does it (car-runtime's web glue).
    fn calibration_import_stock(&self, json: &[u8]) -> Result<Calibration, ApiError> {
        let text = std::str::from_utf8(json)
            .map_err(|_| ApiError::Invalid("calibration.json: not UTF-8 text".into()))?;
        let cal =
            servo_driver::Calibration::from_deepracer_json(text, Path::new("calibration.json"))
                .map_err(|e| ApiError::Invalid(e.to_string()))?;
        let web = to_web(&cal);
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = web;
        Ok(web)
    }
    fn validate_model(&self, _dir: &Path) -> Result<ModelSummary, String> {
        Err("the fuzz car loads no models".into())
    }
    fn load_model(&self, _dir: &Path) -> Result<(), ApiError> {
        Ok(())
    }
}

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    cookie: String,
    csrf: String,
    /// Holds the state folder for the life of the process.
    dir: tempfile::TempDir,
}

struct Resp {
    status: StatusCode,
    body: Vec<u8>,
}

impl App {
    fn send(&self, req: Request<Body>) -> Resp {
        self.rt.block_on(async {
            let r = self
                .router
                .clone()
                .oneshot(req)
                .await
                .expect("the router's error type is Infallible");
            let status = r.status();
            let body = r
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            Resp { status, body }
        })
    }
}

fn request(path: &str, auth: Option<(&str, &str)>, json: bool, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, "car.test");
    if let Some((cookie, csrf)) = auth {
        b = b
            .header(header::COOKIE, cookie)
            .header("x-csrf-token", csrf);
    }
    if json {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(Body::from(body))
        .expect("a request from fixed parts")
}

/// The server, made once per process: the state folder (password, race
/// history) and models folder live in a temporary folder.
fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("car-fuzz-web-")
            .tempdir()
            .expect("a temporary state folder");
        let cfg = web_ui::WebConfig {
            state_dir: Some(dir.path().join("state")),
            models_dir: Some(dir.path().join("models")),
            // Every input may be a login; the limiter then answers 429
            // at once instead of an argon2 verification per input.
            login_max_failures: 3,
            ..web_ui::WebConfig::default()
        };
        let car = Arc::new(Car {
            live: Mutex::new(to_web(&servo_driver::Calibration::stock())),
        });
        let state = web_ui::AppState::new(cfg, car).expect("web state in a temporary folder");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut app = App {
            rt,
            router: web_ui::router(state),
            cookie: String::new(),
            csrf: String::new(),
            dir,
        };
        let pw = std::fs::read_to_string(app.dir.path().join("state/initial-password"))
            .expect("the initial password");
        let body = serde_json::to_vec(&serde_json::json!({ "password": pw.trim() }))
            .expect("JSON of a string");
        let req = request("/api/login", None, true, body);
        let r = app
            .rt
            .block_on(app.router.clone().oneshot(req))
            .expect("login");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "login with the initial password"
        );
        let cookie = r
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_string();
        let body = app
            .rt
            .block_on(r.into_body().collect())
            .expect("login body")
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("login answer is JSON");
        app.csrf = v["csrf"].as_str().expect("a CSRF token").to_string();
        app.cookie = cookie;
        app
    })
}

/// Every byte, percent-encoded: any name becomes a valid path segment, and
/// the router decodes it back to exactly these bytes.
fn path_segment(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Send `body` to `ROUTES[route]` (modulo their number), logged in, as
/// JSON or not; returns the status and the answer's text.
pub fn post(route: usize, json: bool, body: &[u8]) -> (StatusCode, String) {
    let app = app();
    let route = ROUTES[route % ROUTES.len()];
    let auth = Some((app.cookie.as_str(), app.csrf.as_str()));
    let r = match route {
        "models-load" => {
            let uri = format!("/api/models/{}/load", path_segment(body));
            app.send(request(&uri, auth, json, Vec::new()))
        }
        "/api/login" => app.send(request(route, None, json, body.to_vec())),
        _ => app.send(request(route, auth, json, body.to_vec())),
    };
    if route == "/api/race/start" && r.status == StatusCode::OK {
        // Back to no race, so the next start is judged on its body alone.
        let stop = app.send(request("/api/race/stop", auth, false, Vec::new()));
        assert_eq!(stop.status, StatusCode::OK, "race stop after a start");
    }
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Index of a route in `ROUTES`, for [`post`].
pub fn route_index(route: &str) -> Option<usize> {
    ROUTES.iter().position(|r| *r == route)
}

/// Byte 0: route (`ROUTES`, modulo their number); bit 7 of byte 0 sends
/// the body without `content-type: application/json`. The rest: the body
/// (for the model route, the model's name). Property: no answer is a
/// server error (5xx) or a panic; whatever the phone sends is either done
/// or refused with a 4xx that says why.
pub fn web(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let route = (sel & 0x7f) as usize;
    let (status, text) = post(route, sel & 0x80 == 0, body);
    assert!(
        !status.is_server_error(),
        "{}: {status} {text}",
        ROUTES[route % ROUTES.len()]
    );
}
