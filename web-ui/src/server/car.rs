//! The car's own routes: status, commands, the calibration wizard and the
//! tail-light colour.

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

/// `{"available": bool, "colour": {"r", "g", "b"} | null}`: what `GET` and
/// `POST /api/tail-light` answer.
pub(super) fn tail_json(colour: Option<TailLightColour>) -> serde_json::Value {
    json!({ "available": colour.is_some(), "colour": colour })
}

/// The request body `{"r": 0-255, "g": 0-255, "b": 0-255}`, checked field by
/// field so a bad value is named (`g: 300 is not 0-255`) rather than
/// answered with serde's wording.
pub(super) fn check_tail_colour(body: &[u8]) -> Result<TailLightColour, HttpError> {
    let bad = |m: String| HttpError(StatusCode::BAD_REQUEST, m);
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("tail light: {e}")))?;
    let obj = v.as_object().ok_or_else(|| {
        bad("tail light: expected {\"r\": 0-255, \"g\": 0-255, \"b\": 0-255}".into())
    })?;
    let level = |k: &str| -> Result<u8, HttpError> {
        match obj.get(k) {
            None => Err(bad(format!("{k}: missing (need an integer 0-255)"))),
            Some(x) => x
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| bad(format!("{k}: {x} is not 0-255"))),
        }
    };
    Ok(TailLightColour {
        r: level("r")?,
        g: level("g")?,
        b: level("b")?,
    })
}

pub(super) async fn tail_get(State(st): State<AppState>, _a: Authed) -> Json<serde_json::Value> {
    Json(tail_json(st.api.tail_light()))
}

pub(super) async fn tail_set(
    State(st): State<AppState>,
    _a: Authed,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    let colour = check_tail_colour(&body)?;
    // The car persists the colour (a file write and fsync): not on a worker.
    let api = st.api.clone();
    let shown = tokio::task::spawn_blocking(move || api.set_tail_light(colour))
        .await
        .map_err(internal)??;
    Ok(Json(tail_json(Some(shown))))
}
