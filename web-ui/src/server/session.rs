//! Log-in, log-out, the session's facts and password changes, with the
//! per-address limiter counted before the (bounded) argon2 verification.

use super::*;

#[derive(Deserialize)]
pub(super) struct LoginReq {
    password: String,
}

pub(super) fn too_many(text: String, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = HttpError(StatusCode::TOO_MANY_REQUESTS, text).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

pub(super) fn limited(wait: Duration) -> Response {
    too_many(
        format!("too many failed logins; wait {} s", wait.as_secs().max(1)),
        wait,
    )
}

pub(super) fn gate_refused(e: GateError) -> Response {
    match e {
        GateError::Busy => too_many(e.to_string(), Duration::from_secs(1)),
        GateError::Internal(m) => internal(m).into_response(),
    }
}

pub(super) async fn login(
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

pub(super) async fn logout(State(st): State<AppState>, a: Authed) -> Response {
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

pub(super) async fn session_info(State(st): State<AppState>, a: Authed) -> Json<serde_json::Value> {
    Json(json!({
        "csrf": a.csrf,
        "tls": st.tls,
        "initial_password": st.state_dir.join(auth::INITIAL_PASSWORD_FILE).exists(),
    }))
}

#[derive(Deserialize)]
pub(super) struct PasswordReq {
    current: String,
    new: String,
}

pub(super) async fn change_password(
    State(st): State<AppState>,
    a: Authed,
    ClientIp(ip): ClientIp,
    Json(body): Json<PasswordReq>,
) -> Result<Response, HttpError> {
    change_password_inner(st, a, ip, body).await
}

pub(super) async fn change_password_inner(
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
