//! Routes, the session/CSRF extractor and the WebSockets.
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

#[derive(Deserialize)]
struct LoginReq {
    password: String,
}

fn too_many(text: String, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = HttpError(StatusCode::TOO_MANY_REQUESTS, text).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn limited(wait: Duration) -> Response {
    too_many(
        format!("too many failed logins; wait {} s", wait.as_secs().max(1)),
        wait,
    )
}

fn gate_refused(e: GateError) -> Response {
    match e {
        GateError::Busy => too_many(e.to_string(), Duration::from_secs(1)),
        GateError::Internal(m) => internal(m).into_response(),
    }
}

async fn login(
    State(st): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, HttpError> {
    let ip = client_ip(req.extensions());
    let Json(body) =
        <Json<LoginReq> as axum::extract::FromRequest<AppState>>::from_request(req, &st)
            .await
            .map_err(|e: axum::extract::rejection::JsonRejection| {
                HttpError(e.status(), e.body_text())
            })?;
    // Counted before the password is checked (and uncounted only by a
    // success), so concurrent guesses cannot all slip past the limit.
    let attempt = match st.limiter.begin(ip) {
        Ok(a) => a,
        Err(wait) => return Ok(limited(wait)),
    };
    if body.password.len() > 256 {
        return Err(HttpError(StatusCode::UNAUTHORIZED, "wrong password".into()));
    }
    let hash = st
        .password_hash
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ok = match st
        .argon2
        .run(move || auth::verify_password(&hash, &body.password))
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            // Not checked, so not a failed guess either.
            attempt.release();
            return Ok(gate_refused(e));
        }
    };
    if !ok {
        tracing::warn!("failed web login from {ip}");
        return Err(HttpError(StatusCode::UNAUTHORIZED, "wrong password".into()));
    }
    attempt.succeed();
    let (id, csrf) = st.sessions.create();
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        st.config.session_ttl_s,
        if st.tls { "; Secure" } else { "" }
    );
    let mut r = Json(json!({ "csrf": csrf })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(internal)?,
    );
    Ok(r)
}

async fn logout(State(st): State<AppState>, a: Authed) -> Response {
    st.sessions.remove(&a.session_id);
    let cookie = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if st.tls { "; Secure" } else { "" }
    );
    let mut r = Json(json!({ "ok": true })).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn session_info(State(st): State<AppState>, a: Authed) -> Json<serde_json::Value> {
    Json(json!({
        "csrf": a.csrf,
        "tls": st.tls,
        "initial_password": st.state_dir.join(auth::INITIAL_PASSWORD_FILE).exists(),
    }))
}

#[derive(Deserialize)]
struct PasswordReq {
    current: String,
    new: String,
}

async fn change_password(
    State(st): State<AppState>,
    a: Authed,
    ClientIp(ip): ClientIp,
    Json(body): Json<PasswordReq>,
) -> Result<Response, HttpError> {
    change_password_inner(st, a, ip, body).await
}

async fn change_password_inner(
    st: AppState,
    a: Authed,
    ip: IpAddr,
    body: PasswordReq,
) -> Result<Response, HttpError> {
    let attempt = match st.limiter.begin(ip) {
        Ok(a) => a,
        Err(wait) => {
            return Ok(too_many(
                format!("too many failed attempts; wait {} s", wait.as_secs().max(1)),
                wait,
            ))
        }
    };
    let hash = st
        .password_hash
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let dir = st.state_dir.clone();
    // Check and re-hash in one argon2 slot.
    let r = st
        .argon2
        .run(move || {
            if !auth::verify_password(&hash, &body.current) {
                return None;
            }
            Some(auth::set_password(&dir, &body.new))
        })
        .await;
    let phc = match r {
        Err(e) => {
            attempt.release();
            return Ok(gate_refused(e));
        }
        Ok(None) => {
            return Err(HttpError(
                StatusCode::FORBIDDEN,
                "current password: wrong password".into(),
            ))
        }
        Ok(Some(r)) => {
            attempt.succeed();
            r.map_err(|e| match e {
                auth::AuthError::WeakPassword(_) => {
                    HttpError(StatusCode::BAD_REQUEST, e.to_string())
                }
                e => internal(e),
            })?
        }
    };
    *st.password_hash.write().unwrap_or_else(|e| e.into_inner()) = phc;
    st.sessions.remove_all_except(&a.session_id);
    tracing::info!("web UI password changed; other sessions logged out");
    Ok(Json(json!({ "ok": true })).into_response())
}

async fn status(State(st): State<AppState>, _a: Authed) -> Json<CarStatus> {
    Json(st.api.status())
}

fn check_command(cmd: &Command) -> Result<(), HttpError> {
    let bad = |m: &str| Err(HttpError(StatusCode::BAD_REQUEST, m.to_string()));
    match *cmd {
        Command::SetMaxSpeed { percent } if !(0.0..=100.0).contains(&percent) => {
            bad("percent: must be 0..=100")
        }
        Command::Manual { steering, throttle }
            if !(-1.0..=1.0).contains(&steering) || !(-1.0..=1.0).contains(&throttle) =>
        {
            bad("steering, throttle: must be in -1..=1")
        }
        _ => Ok(()),
    }
}

async fn command(
    State(st): State<AppState>,
    _a: Authed,
    Json(cmd): Json<Command>,
) -> Result<Json<CarStatus>, HttpError> {
    check_command(&cmd)?;
    match cmd {
        // Its own path on the car side: never behind the command queue that
        // drive sockets fill.
        Command::EStop => st.api.estop()?,
        cmd => st.api.command(cmd)?,
    }
    Ok(Json(st.api.status()))
}

async fn cal_get(State(st): State<AppState>, _a: Authed) -> Json<CalibrationView> {
    Json(st.api.calibration())
}

async fn cal_set(
    State(st): State<AppState>,
    _a: Authed,
    Json(cal): Json<Calibration>,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_set(cal)?;
    Ok(Json(st.api.calibration()))
}

#[derive(Deserialize)]
struct PulseReq {
    channel: Channel,
    pulse_ns: u32,
}

async fn cal_pulse(
    State(st): State<AppState>,
    _a: Authed,
    Json(p): Json<PulseReq>,
) -> Result<Json<serde_json::Value>, HttpError> {
    st.api.calibration_pulse(p.channel, p.pulse_ns)?;
    Ok(Json(json!({ "ok": true })))
}

async fn cal_save(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_save()?;
    Ok(Json(st.api.calibration()))
}

async fn cal_cancel(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_cancel()?;
    Ok(Json(st.api.calibration()))
}

async fn cal_import(
    State(st): State<AppState>,
    _a: Authed,
    body: axum::body::Bytes,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_import_stock(&body)?;
    Ok(Json(st.api.calibration()))
}

async fn models_list(State(st): State<AppState>, _a: Authed) -> Json<serde_json::Value> {
    let status = st.api.status().model;
    let dir = st.models_dir.clone();
    let active = status.active.clone();
    let list = tokio::task::spawn_blocking(move || models::list(&dir, active.as_deref()))
        .await
        .unwrap_or_default();
    Json(
        json!({ "models": list, "status": status, "max_upload_bytes": st.config.max_upload_bytes }),
    )
}

/// Removes the staging folder unless the upload was installed.
struct Staging(Option<PathBuf>);
impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

async fn models_upload(
    State(st): State<AppState>,
    _a: Authed,
    mut mp: Multipart,
) -> Result<Json<serde_json::Value>, HttpError> {
    use tokio::io::AsyncWriteExt;
    let limit = st.config.max_upload_bytes;
    let token = auth::random_token();
    let staging_path = st.models_dir.join(format!(".staging-{}", &token[..16]));
    tokio::fs::create_dir_all(&staging_path)
        .await
        .map_err(internal)?;
    let staging = Staging(Some(staging_path.clone()));
    let mut name: Option<String> = None;
    let mut archive: Option<(PathBuf, String)> = None;
    let mut total = 0u64;
    let mp_err = |e: axum::extract::multipart::MultipartError| {
        let code = e.status();
        if code == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError(
                code,
                ModelError::TooLarge {
                    limit_mb: limit / (1024 * 1024),
                }
                .to_string(),
            )
        } else {
            HttpError(code, e.body_text())
        }
    };
    while let Some(mut field) = mp.next_field().await.map_err(mp_err)? {
        let field_name = field.name().unwrap_or("").to_string();
        if field_name == "name" {
            let n = field.text().await.map_err(mp_err)?;
            let n = n.trim();
            if !n.is_empty() {
                name = Some(models::check_name(n)?.to_string());
            }
            continue;
        }
        let Some(filename) = field.file_name().map(str::to_string) else {
            continue;
        };
        if filename.is_empty() {
            continue;
        }
        let target = match models::upload_kind(&filename)? {
            UploadKind::File(base) => staging_path.join(base),
            UploadKind::Archive => {
                if archive.is_some() {
                    return Err(HttpError(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "upload one .tar.gz at a time".into(),
                    ));
                }
                let p = staging_path.join(".upload.tar.gz");
                archive = Some((p.clone(), filename.clone()));
                p
            }
        };
        let mut f = tokio::fs::File::create(&target).await.map_err(internal)?;
        while let Some(chunk) = field.chunk().await.map_err(mp_err)? {
            total += chunk.len() as u64;
            if total > limit {
                return Err(ModelError::TooLarge {
                    limit_mb: limit / (1024 * 1024),
                }
                .into());
            }
            f.write_all(&chunk).await.map_err(internal)?;
        }
        f.sync_all().await.map_err(internal)?;
    }
    if let Some((path, filename)) = &archive {
        let (p, dest) = (path.clone(), staging_path.clone());
        let fname = filename.clone();
        tokio::task::spawn_blocking(move || {
            let r = models::extract_archive(&p, &dest, limit).map_err(|e| match e {
                ModelError::Rejected { reason, .. } => ModelError::Rejected {
                    file: fname,
                    reason,
                },
                e => e,
            });
            let _ = std::fs::remove_file(&p);
            r
        })
        .await
        .map_err(internal)??;
    }
    let has = |p: &str| staging_path.join(p).is_file();
    if !has("model_metadata.json") {
        return Err(ModelError::Rejected {
            file: "model_metadata.json".into(),
            reason: "missing from the upload".into(),
        }
        .into());
    }
    if !has("model.onnx") && !has("model.pb") && !has("agent/model.pb") {
        return Err(ModelError::Rejected {
            file: "model.onnx".into(),
            reason: "missing from the upload (or agent/model.pb in a console export)".into(),
        }
        .into());
    }
    let name = match name {
        Some(n) => n,
        None => {
            let from_archive = archive.as_ref().map(|(_, f)| {
                f.trim_end_matches(".tar.gz")
                    .trim_end_matches(".tgz")
                    .to_string()
            });
            match from_archive.filter(|n| models::check_name(n).is_ok()) {
                Some(n) => n,
                None => format!("model-{}", models::now_unix()),
            }
        }
    };
    let dest = st.models_dir.join(&name);
    if dest.exists() {
        return Err(ModelError::Exists(name).into());
    }
    let api = st.api.clone();
    let sp = staging_path.clone();
    let summary = tokio::task::spawn_blocking(move || api.validate_model(&sp))
        .await
        .map_err(internal)?
        .map_err(|e| HttpError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    models::write_info(&staging_path, &summary)?;
    std::fs::rename(&staging_path, &dest).map_err(internal)?;
    std::mem::forget(staging);
    tracing::info!("installed model {name} ({})", summary.action_space);
    Ok(Json(
        json!({ "name": name, "path": dest, "summary": summary }),
    ))
}

fn model_path(st: &AppState, name: &str) -> Result<PathBuf, HttpError> {
    let name = models::check_name(name)?;
    let p = st.models_dir.join(name);
    if !p.is_dir() {
        return Err(ModelError::NotFound(name.to_string()).into());
    }
    Ok(p)
}

async fn models_load(
    State(st): State<AppState>,
    _a: Authed,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let p = model_path(&st, &name)?;
    st.api.load_model(&p)?;
    Ok(Json(json!({ "ok": true, "status": st.api.status().model })))
}

async fn models_delete(
    State(st): State<AppState>,
    _a: Authed,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let p = model_path(&st, &name)?;
    let m = st.api.status().model;
    let in_use = |x: &Option<String>| x.as_deref().is_some_and(|a| models::same_path(a, &p));
    if in_use(&m.active) || (m.state == ModelState::Loading && in_use(&m.requested)) {
        return Err(ModelError::InUse(name).into());
    }
    tokio::fs::remove_dir_all(&p).await.map_err(internal)?;
    Ok(Json(json!({ "ok": true })))
}

fn race_lock(st: &AppState) -> std::sync::MutexGuard<'_, Race> {
    st.race.lock().unwrap_or_else(|e| e.into_inner())
}

fn race_json(r: &mut Race) -> serde_json::Value {
    let view = r.view(race::now_ms());
    let hist: Vec<_> = r.history().iter().rev().take(50).cloned().collect();
    json!({ "race": view, "history": hist })
}

fn race_err(e: race::RaceError) -> HttpError {
    match e {
        race::RaceError::Io(m) => HttpError(StatusCode::INTERNAL_SERVER_ERROR, m),
        race::RaceError::NotRunning => HttpError(StatusCode::CONFLICT, e.to_string()),
        e => HttpError(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn race_get(State(st): State<AppState>, _a: Authed) -> Json<serde_json::Value> {
    Json(race_json(&mut race_lock(&st)))
}

#[derive(Deserialize, Default)]
struct RaceStart {
    duration_s: Option<u32>,
}

async fn race_start(
    State(st): State<AppState>,
    _a: Authed,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    // The body is optional: empty means the default 4 minutes.
    let d = if body.is_empty() {
        None
    } else {
        serde_json::from_slice::<RaceStart>(&body)
            .map_err(|e| HttpError(StatusCode::BAD_REQUEST, format!("race start: {e}")))?
            .duration_s
    };
    let mut r = race_lock(&st);
    r.start(d, race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}

async fn race_lap(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<serde_json::Value>, HttpError> {
    let mut r = race_lock(&st);
    r.lap(race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}

async fn race_offtrack(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<serde_json::Value>, HttpError> {
    let mut r = race_lock(&st);
    r.offtrack(race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}

async fn race_stop(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<serde_json::Value>, HttpError> {
    let mut r = race_lock(&st);
    r.finish(race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}

/// When a WebSocket's peer last sent anything (a pong counts), shared
/// between its reader and writer halves.
struct Liveness {
    start: Instant,
    last_rx_ms: AtomicU64,
}

impl Liveness {
    fn new() -> Arc<Liveness> {
        Arc::new(Liveness {
            start: Instant::now(),
            last_rx_ms: AtomicU64::new(0),
        })
    }
    fn heard(&self) {
        self.last_rx_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn silent_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_rx_ms.load(Ordering::Relaxed)))
    }
}

/// Reads (and drops) what the peer sends, noting that it is alive. Browsers
/// answer our pings by themselves.
fn spawn_ws_reader(
    mut rx: futures_util::stream::SplitStream<WebSocket>,
    live: Arc<Liveness>,
) -> tokio::task::JoinHandle<()> {
    use futures_util::StreamExt;
    tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            live.heard();
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
}

/// Send one message, or `false` when the peer cannot take it within the
/// idle timeout (a dead link fills the socket buffer, then this waits).
async fn ws_send(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    msg: Message,
    timeout: Duration,
) -> bool {
    use futures_util::SinkExt;
    matches!(
        tokio::time::timeout(timeout, tx.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Ping every third of the idle timeout; `false` when the peer has been
/// silent for the whole timeout (gone without closing).
async fn ws_keepalive(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    live: &Liveness,
    last_ping: &mut Instant,
    idle: Duration,
) -> bool {
    if live.silent_for() > idle {
        return false;
    }
    if last_ping.elapsed() >= idle / 3 {
        *last_ping = Instant::now();
        return ws_send(tx, Message::Ping(Vec::new().into()), idle).await;
    }
    true
}

fn ws_idle(st: &AppState) -> Duration {
    WebConfig::secs(st.config.ws_idle_timeout_s)
}

/// Status plus new telemetry samples five times a second.
async fn ws_telemetry(State(st): State<AppState>, _a: Authed, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| telemetry_loop(st, socket))
}

async fn telemetry_loop(st: AppState, socket: WebSocket) {
    use futures_util::StreamExt;
    let (mut tx, rx) = socket.split();
    let live = Liveness::new();
    let reader = spawn_ws_reader(rx, live.clone());
    let idle = ws_idle(&st);
    let mut last_ping = Instant::now();
    let mut last = 0u64;
    let mut buf = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while !st.stop.load(Ordering::Relaxed) && !reader.is_finished() {
        tick.tick().await;
        if !ws_keepalive(&mut tx, &live, &mut last_ping, idle).await {
            break;
        }
        buf.clear();
        let newest = st.api.telemetry_since(last, &mut buf);
        if newest < last {
            // The daemon restarted its ring; start over.
            last = 0;
        } else {
            last = newest;
        }
        // A phone needs the recent trace, not every sample at 100 Hz.
        let skip = buf.len().saturating_sub(64);
        let msg = json!({ "status": st.api.status(), "samples": &buf[skip..] });
        if !ws_send(&mut tx, Message::Text(msg.to_string().into()), idle).await {
            break;
        }
    }
    reader.abort();
}

/// The newest JPEG whenever one is ready; binary messages laid out as
/// `[u32 LE header length][JSON header][JPEG bytes]`.
async fn ws_camera(State(st): State<AppState>, _a: Authed, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| camera_loop(st, socket))
}

async fn camera_loop(st: AppState, socket: WebSocket) {
    use futures_util::StreamExt;
    let (mut tx, rx) = socket.split();
    let live = Liveness::new();
    let reader = spawn_ws_reader(rx, live.clone());
    let idle = ws_idle(&st);
    let mut last_ping = Instant::now();
    let mut frames = st.frames.subscribe();
    let mut hdr = Vec::with_capacity(256);
    while !st.stop.load(Ordering::Relaxed) && !reader.is_finished() {
        if !ws_keepalive(&mut tx, &live, &mut last_ping, idle).await {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), frames.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => continue,
        }
        let f = frames.borrow_and_update().clone();
        if f.jpeg.is_empty() {
            continue;
        }
        hdr.clear();
        let h = json!({ "seq": f.seq, "w": f.width, "h": f.height, "action": f.action, "encode_us": f.encode_us });
        let _ = serde_json::to_writer(&mut hdr, &h);
        let mut msg = Vec::with_capacity(4 + hdr.len() + f.jpeg.len());
        msg.extend_from_slice(&(hdr.len() as u32).to_le_bytes());
        msg.extend_from_slice(&hdr);
        msg.extend_from_slice(&f.jpeg);
        // Sending waits for this client only; meanwhile newer frames replace
        // older ones in the watch channel, so a slow phone skips frames.
        if !ws_send(&mut tx, Message::Binary(msg.into()), idle).await {
            break;
        }
    }
    reader.abort();
}

#[derive(Deserialize)]
struct DriveQuery {
    csrf: Option<String>,
}

/// One open drive WebSocket, counted against `max_drive_sockets`.
struct DriveSlot(AppState);
impl Drop for DriveSlot {
    fn drop(&mut self) {
        self.0.drive_sockets.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Manual driving: `{"s": steering, "t": throttle}` heartbeats (~every 50 ms)
/// and calibration test pulses `{"pulse": "throttle", "ns": 1500000}`.
async fn ws_drive(
    State(st): State<AppState>,
    a: Authed,
    Query(q): Query<DriveQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, HttpError> {
    // Checked before the upgrade is even looked at, so a request without the
    // token learns nothing else.
    if !auth::ct_eq(q.csrf.as_deref().unwrap_or(""), &a.csrf) {
        return Err(HttpError(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token".into(),
        ));
    }
    check_origin(&headers)?;
    let ws = ws.map_err(|e| HttpError(e.status(), e.body_text()))?;
    // Reserved before the upgrade so concurrent upgrades cannot overshoot.
    if st.drive_sockets.fetch_add(1, Ordering::SeqCst) >= st.config.max_drive_sockets {
        st.drive_sockets.fetch_sub(1, Ordering::SeqCst);
        return Err(HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} drive connections are open already; close another page",
                st.config.max_drive_sockets
            ),
        ));
    }
    let slot = DriveSlot(st.clone());
    Ok(ws.on_upgrade(move |socket| drive_loop(st, socket, slot)))
}

#[derive(Deserialize)]
struct DriveMsg {
    s: Option<f32>,
    t: Option<f32>,
    pulse: Option<Channel>,
    ns: Option<u32>,
}

/// Messages a drive socket may pass on to the car: a token bucket holding a
/// quarter second's worth, refilled at the configured rate. What is over is
/// dropped, so one socket cannot fill the car's command queue.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_s: u32) -> Bucket {
        let rate = f64::from(per_s.max(1));
        let burst = (rate / 4.0).max(1.0);
        Bucket {
            tokens: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn drive_loop(st: AppState, socket: WebSocket, _slot: DriveSlot) {
    use futures_util::StreamExt;
    let (mut tx, mut rx) = socket.split();
    let idle = ws_idle(&st);
    let mut bucket = Bucket::new(st.config.drive_max_msgs_per_s);
    let mut dropped = 0u64;
    let mut drove = false;
    let mut last_err = String::new();
    let mut last_heard = Instant::now();
    // The arbiter's 250 ms dead-man stops the car when these messages stop,
    // whatever happened to the phone or the link; the idle timeout here only
    // frees the socket of a phone that is gone.
    loop {
        if st.stop.load(Ordering::Relaxed) {
            break;
        }
        let next = tokio::time::timeout(idle / 3, rx.next()).await;
        let msg = match next {
            Ok(Some(Ok(m))) => {
                last_heard = Instant::now();
                m
            }
            Ok(_) => break,
            Err(_) => {
                // Quiet for a third of the timeout: ping (browsers answer by
                // themselves); a peer quiet for the whole timeout has gone.
                if last_heard.elapsed() >= idle {
                    break;
                }
                if !ws_send(&mut tx, Message::Ping(Vec::new().into()), idle).await {
                    break;
                }
                continue;
            }
        };
        let Message::Text(text) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        if !bucket.take() {
            dropped += 1;
            if dropped == 1 || dropped.is_power_of_two() {
                tracing::warn!("drive socket over {} msg/s: dropped {dropped}", bucket.rate);
            }
            let err = "too many drive messages; some were dropped".to_string();
            if err != last_err {
                let reply = json!({ "error": err });
                if !ws_send(&mut tx, Message::Text(reply.to_string().into()), idle).await {
                    break;
                }
                last_err = err;
            }
            continue;
        }
        let Ok(m) = serde_json::from_str::<DriveMsg>(text.as_str()) else {
            continue;
        };
        let r = match (m.pulse, m.ns, m.s, m.t) {
            (Some(ch), Some(ns), _, _) => st.api.calibration_pulse(ch, ns),
            (None, _, Some(s), Some(t)) => {
                let c = |v: f32| {
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                };
                drove = true;
                st.api.command(Command::Manual {
                    steering: c(s),
                    throttle: c(t),
                })
            }
            _ => continue,
        };
        let err = r.err().map(|e| e.to_string()).unwrap_or_default();
        if err != last_err {
            let reply = if err.is_empty() {
                json!({ "ok": true })
            } else {
                json!({ "error": err })
            };
            if !ws_send(&mut tx, Message::Text(reply.to_string().into()), idle).await {
                break;
            }
            last_err = err;
        }
    }
    if drove {
        // Stop at once rather than after the dead-man's 250 ms.
        let _ = st.api.command(Command::Manual {
            steering: 0.0,
            throttle: 0.0,
        });
    }
}

/// For tests and the bench: the models folder in use.
pub fn models_dir(st: &AppState) -> &Path {
    &st.models_dir
}
