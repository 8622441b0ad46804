//! The router, the shared state, the session/CSRF extractor and the
//! pages; one file per route area beside it: `session` (log-in, password),
//! `car` (status, commands, calibration, tail light), `models_api`, `race_api`,
//! `sockets` (telemetry, camera, drive).
//!
//! Rules every route follows:
//! - pages and assets are public (they hold no data); `/api/*` and `/ws/*`
//!   answer 401 without a valid session, except `POST /api/login`;
//! - every request with a method other than GET/HEAD needs the session's
//!   CSRF token in `X-CSRF-Token` (403 otherwise); the drive WebSocket,
//!   which moves the car, needs it as `?csrf=` since browsers cannot set
//!   headers on a WebSocket;
//! - nothing here waits on the control loop: [`CarApi`] calls are queue
//!   pushes or ring/slot copies, and model validation runs on a blocking
//!   thread.

use crate::api::*;
use crate::auth::{self, Argon2Gate, GateError, LoginLimiter, Sessions};
use crate::camera::{self, JpegFrame};
use crate::models::{self, ModelError, UploadKind};
use crate::race::{self, Race};
use crate::{assets, WebConfig, WebError};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Multipart, Path as UrlPath, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod car;
mod models_api;
mod race_api;
mod session;
mod sockets;
use car::*;
use models_api::*;
use race_api::*;
use session::*;
use sockets::*;

pub const SESSION_COOKIE: &str = "car_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub struct Inner {
    pub api: Arc<dyn CarApi>,
    pub config: WebConfig,
    pub state_dir: PathBuf,
    pub models_dir: PathBuf,
    pub tls: bool,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    /// Every argon2 run (login, password change) goes through it.
    pub argon2: Argon2Gate,
    /// Drive WebSockets open now.
    pub drive_sockets: AtomicUsize,
    pub password_hash: RwLock<String>,
    pub race: Mutex<Race>,
    pub frames: watch::Sender<Arc<JpegFrame>>,
    pub stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Shared server state; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Creates the state folder, the password (logged once when new), the
    /// models folder, loads race history and starts the JPEG encoder thread.
    pub fn new(config: WebConfig, api: Arc<dyn CarApi>) -> Result<AppState, WebError> {
        let state_dir = config.resolved_state_dir();
        let models_dir = config.resolved_models_dir();
        if let Some(pw) = auth::ensure_password(&state_dir)? {
            tracing::warn!(
                "web UI password (shown once; also in {}): {pw}",
                state_dir.join(auth::INITIAL_PASSWORD_FILE).display()
            );
        }
        let hash = auth::load_hash(&state_dir)?;
        std::fs::create_dir_all(&models_dir).map_err(|source| WebError::Io {
            path: models_dir.clone(),
            source,
        })?;
        // Leftovers of an upload interrupted by a crash or power cut.
        if let Ok(rd) = std::fs::read_dir(&models_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(".staging-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (frames, thread) = camera::spawn_encoder(api.clone(), config.camera_fps, stop.clone());
        thread.map_err(|e| WebError::Server(format!("camera encoder thread: {e}")))?;
        Ok(AppState(Arc::new(Inner {
            sessions: Sessions::new(
                Duration::from_secs(config.session_ttl_s),
                Duration::from_secs(config.session_idle_s),
            ),
            limiter: LoginLimiter::new(
                config.login_max_failures,
                Duration::from_secs(config.login_window_s),
            ),
            argon2: Argon2Gate::new(config.argon2_concurrency, config.argon2_queue),
            drive_sockets: AtomicUsize::new(0),
            password_hash: RwLock::new(hash),
            race: Mutex::new(Race::open(&state_dir)),
            tls: config.tls_enabled(),
            api,
            config,
            state_dir,
            models_dir,
            frames,
            stop,
        })))
    }
}

/// An error answer: status and a JSON `{"error": text}` body.
#[derive(Debug)]
pub struct HttpError(pub StatusCode, pub String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        let code = match e {
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Refused(_) => StatusCode::CONFLICT,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError(code, e.to_string())
    }
}

impl From<ModelError> for HttpError {
    fn from(e: ModelError) -> Self {
        let code = match e {
            ModelError::BadName(_) => StatusCode::BAD_REQUEST,
            ModelError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ModelError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ModelError::Exists(_) | ModelError::InUse(_) => StatusCode::CONFLICT,
            ModelError::NotFound(_) => StatusCode::NOT_FOUND,
            ModelError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError(code, e.to_string())
    }
}

fn internal(e: impl std::fmt::Display) -> HttpError {
    HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A request from a logged-in user. For any method but GET/HEAD it also
/// proves the CSRF token and, when the browser sent one, a same-origin
/// `Origin`.
pub struct Authed {
    pub session_id: String,
    pub csrf: String,
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, HttpError> {
        let unauth = || HttpError(StatusCode::UNAUTHORIZED, "log in first".into());
        let id = cookie_value(&parts.headers, SESSION_COOKIE).ok_or_else(unauth)?;
        let s = st.sessions.get(id).ok_or_else(unauth)?;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let tok = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !auth::ct_eq(tok, &s.csrf) {
                return Err(HttpError(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token; reload the page".into(),
                ));
            }
            check_origin(&parts.headers)?;
        }
        Ok(Authed {
            session_id: id.to_string(),
            csrf: s.csrf,
        })
    }
}

fn check_origin(headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
    if origin_host != host {
        return Err(HttpError(
            StatusCode::FORBIDDEN,
            "cross-origin request refused".into(),
        ));
    }
    Ok(())
}

fn client_ip(parts_ext: &axum::http::Extensions) -> IpAddr {
    parts_ext
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The peer address (0.0.0.0 when served without connect info, in tests).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions)))
    }
}

/// Every route. `/api/*` and `/ws/*` are listed in [`API_ROUTES`] for the
/// route tests.
pub fn router(st: AppState) -> Router {
    let upload_limit = st.config.max_upload_bytes as usize + 1024 * 1024;
    Router::new()
        .route("/", get(|| async { Redirect::to("/drive") }))
        .route("/login", get(page_login))
        .route("/drive", get(page))
        .route("/calibrate", get(page))
        .route("/models", get(page))
        .route("/race", get(page))
        .route("/settings", get(page))
        .route("/manifest.webmanifest", get(assets::manifest))
        .route("/sw.js", get(assets::service_worker))
        .route("/assets/{file}", get(assets::asset))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session_info))
        .route("/api/password", post(change_password))
        .route("/api/status", get(status))
        .route("/api/command", post(command))
        .route("/api/calibration", get(cal_get).post(cal_set))
        .route("/api/calibration/pulse", post(cal_pulse))
        .route("/api/calibration/save", post(cal_save))
        .route("/api/calibration/cancel", post(cal_cancel))
        .route(
            "/api/calibration/import",
            post(cal_import).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .route("/api/tail-light", get(tail_get).post(tail_set))
        .route(
            "/api/models",
            get(models_list)
                .post(models_upload)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/models/{name}/load", post(models_load))
        .route("/api/models/{name}", axum::routing::delete(models_delete))
        .route("/api/race", get(race_get))
        .route("/api/race/start", post(race_start))
        .route("/api/race/lap", post(race_lap))
        .route("/api/race/offtrack", post(race_offtrack))
        .route("/api/race/stop", post(race_stop))
        .route("/ws/telemetry", get(ws_telemetry))
        .route("/ws/camera", get(ws_camera))
        .route("/ws/drive", get(ws_drive))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(st)
}

/// (method, path) of every state-reading or state-changing route; the route
/// tests walk this list, so a new route cannot be left out of them.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/logout"),
    ("GET", "/api/session"),
    ("POST", "/api/password"),
    ("GET", "/api/status"),
    ("POST", "/api/command"),
    ("GET", "/api/calibration"),
    ("POST", "/api/calibration"),
    ("POST", "/api/calibration/pulse"),
    ("POST", "/api/calibration/save"),
    ("POST", "/api/calibration/cancel"),
    ("POST", "/api/calibration/import"),
    ("GET", "/api/tail-light"),
    ("POST", "/api/tail-light"),
    ("GET", "/api/models"),
    ("POST", "/api/models"),
    ("POST", "/api/models/{name}/load"),
    ("DELETE", "/api/models/{name}"),
    ("GET", "/api/race"),
    ("POST", "/api/race/start"),
    ("POST", "/api/race/lap"),
    ("POST", "/api/race/offtrack"),
    ("POST", "/api/race/stop"),
    ("GET", "/ws/telemetry"),
    ("GET", "/ws/camera"),
    ("GET", "/ws/drive"),
];

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; \
         style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(h, "cache-control", "no-store");
    r
}

fn has_session(st: &AppState, headers: &HeaderMap) -> bool {
    cookie_value(headers, SESSION_COOKIE)
        .map(|id| st.sessions.get(id).is_some())
        .unwrap_or(false)
}

async fn page(State(st): State<AppState>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    if !has_session(&st, &headers) {
        return Redirect::to(&format!("/login?next={}", uri.path())).into_response();
    }
    assets::app_html()
}

async fn page_login() -> Response {
    assets::app_html()
}

/// For tests and the bench: the models folder in use.
pub fn models_dir(st: &AppState) -> &Path {
    &st.models_dir
}
