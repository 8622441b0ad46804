//! The car's own routes: status, commands and the calibration wizard.

use super::*;

pub(super) async fn status(State(st): State<AppState>, _a: Authed) -> Json<CarStatus> {
    Json(st.api.status())
}

pub(super) fn check_command(cmd: &Command) -> Result<(), HttpError> {
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

pub(super) async fn command(
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

pub(super) async fn cal_get(State(st): State<AppState>, _a: Authed) -> Json<CalibrationView> {
    Json(st.api.calibration())
}

pub(super) async fn cal_set(
    State(st): State<AppState>,
    _a: Authed,
    Json(cal): Json<Calibration>,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_set(cal)?;
    Ok(Json(st.api.calibration()))
}

#[derive(Deserialize)]
pub(super) struct PulseReq {
    channel: Channel,
    pulse_ns: u32,
}

pub(super) async fn cal_pulse(
    State(st): State<AppState>,
    _a: Authed,
    Json(p): Json<PulseReq>,
) -> Result<Json<serde_json::Value>, HttpError> {
    st.api.calibration_pulse(p.channel, p.pulse_ns)?;
    Ok(Json(json!({ "ok": true })))
}

pub(super) async fn cal_save(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_save()?;
    Ok(Json(st.api.calibration()))
}

pub(super) async fn cal_cancel(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_cancel()?;
    Ok(Json(st.api.calibration()))
}

pub(super) async fn cal_import(
    State(st): State<AppState>,
    _a: Authed,
    body: axum::body::Bytes,
) -> Result<Json<CalibrationView>, HttpError> {
    st.api.calibration_import_stock(&body)?;
    Ok(Json(st.api.calibration()))
}
