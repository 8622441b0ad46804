//! Race control: the timer, laps and off-track events.

use super::*;

pub(super) fn race_lock(st: &AppState) -> std::sync::MutexGuard<'_, Race> {
    st.race.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn race_json(r: &mut Race) -> serde_json::Value {
    let view = r.view(race::now_ms());
    let hist: Vec<_> = r.history().iter().rev().take(50).cloned().collect();
    json!({ "race": view, "history": hist })
}

pub(super) fn race_err(e: race::RaceError) -> HttpError {
    match e {
        race::RaceError::Io(m) => HttpError(StatusCode::INTERNAL_SERVER_ERROR, m),
        race::RaceError::NotRunning => HttpError(StatusCode::CONFLICT, e.to_string()),
        e => HttpError(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub(super) async fn race_get(State(st): State<AppState>, _a: Authed) -> Json<serde_json::Value> {
    Json(race_json(&mut race_lock(&st)))
}

#[derive(Deserialize, Default)]
pub(super) struct RaceStart {
    duration_s: Option<u32>,
}

pub(super) async fn race_start(
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

pub(super) async fn race_lap(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<serde_json::Value>, HttpError> {
    let mut r = race_lock(&st);
    r.lap(race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}

pub(super) async fn race_offtrack(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<serde_json::Value>, HttpError> {
    let mut r = race_lock(&st);
    r.offtrack(race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}

pub(super) async fn race_stop(
    State(st): State<AppState>,
    _a: Authed,
) -> Result<Json<serde_json::Value>, HttpError> {
    let mut r = race_lock(&st);
    r.finish(race::now_ms()).map_err(race_err)?;
    Ok(Json(race_json(&mut r)))
}
