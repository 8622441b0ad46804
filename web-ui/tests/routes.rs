//! Every route with and without a session and a CSRF token; login rate
//! limiting; session expiry; upload limits and path traversal; the password
//! files on disk; the tail-light colour.

mod common;
use axum::http::{header, StatusCode};
use common::*;
use serde_json::json;
use std::sync::Arc;
use web_ui::server::API_ROUTES;
use web_ui::CarApi;

fn path_of(p: &str) -> String {
    p.replace("{name}", "m1")
}

#[tokio::test]
async fn every_api_route_without_a_session_is_401_and_moves_nothing() {
    let t = TestApp::new();
    for (method, path) in API_ROUTES {
        let r = t
            .send(req(
                method,
                &path_of(path),
                None,
                None,
                Some("application/json"),
                b"{}".to_vec(),
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            r.text()
        );
        // A forged cookie is no better than none.
        let r = t
            .send(req(
                method,
                &path_of(path),
                Some("car_session=forged"),
                Some("x"),
                Some("application/json"),
                b"{}".to_vec(),
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} forged cookie"
        );
    }
    assert!(t.car.st().commands.is_empty());
    assert!(t.car.st().pulses.is_empty());
}

#[tokio::test]
async fn every_state_changing_route_without_or_with_a_wrong_csrf_token_is_403() {
    let t = TestApp::new();
    let (cookie, csrf) = t.login().await;
    let other = TestApp::new();
    let (_, other_csrf) = other.login().await;
    for (method, path) in API_ROUTES {
        if *method == "GET" && *path != "/ws/drive" {
            continue;
        }
        let p = path_of(path);
        let r = t
            .send(req(
                method,
                &p,
                Some(&cookie),
                None,
                Some("application/json"),
                b"{}".to_vec(),
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path} without token: {}",
            r.text()
        );
        // A token from another session does not count either.
        let p2 = if *path == "/ws/drive" {
            format!("{p}?csrf={other_csrf}")
        } else {
            p.clone()
        };
        let r = t
            .send(req(
                method,
                &p2,
                Some(&cookie),
                Some(&other_csrf),
                Some("application/json"),
                b"{}".to_vec(),
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{method} {path} with another session's token"
        );
    }
    // A cross-site page that somehow has the token is still refused.
    let mut rq = json_req(
        "POST",
        "/api/command",
        Some(&cookie),
        Some(&csrf),
        &json!({"cmd": "set_mode", "mode": "manual"}),
    );
    rq.headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(t.send(rq).await.status, StatusCode::FORBIDDEN);
    assert!(t.car.st().commands.is_empty(), "nothing reached the car");
}

#[tokio::test]
async fn every_route_with_session_and_csrf_answers() {
    let t = TestApp::new();
    let (c, x) = t.login().await;
    let (c, x) = (c.as_str(), x.as_str());
    let ok = |r: Resp, what: &str| {
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text());
        r
    };
    let j = |m: &str, p: &str, v: serde_json::Value| json_req(m, p, Some(c), Some(x), &v);
    ok(
        t.send(req("GET", "/api/session", Some(c), None, None, vec![]))
            .await,
        "session",
    );
    let s = ok(
        t.send(req("GET", "/api/status", Some(c), None, None, vec![]))
            .await,
        "status",
    )
    .json();
    assert_eq!(s["mode"], "stopped");
    assert_eq!(s["max_speed_pct"], 0.0);
    ok(
        t.send(j(
            "POST",
            "/api/command",
            json!({"cmd": "set_max_speed", "percent": 40}),
        ))
        .await,
        "max speed",
    );
    ok(
        t.send(j(
            "POST",
            "/api/command",
            json!({"cmd": "set_mode", "mode": "autonomous"}),
        ))
        .await,
        "start",
    );
    ok(
        t.send(j(
            "POST",
            "/api/command",
            json!({"cmd": "set_mode", "mode": "stopped"}),
        ))
        .await,
        "stop",
    );
    ok(
        t.send(j("POST", "/api/command", json!({"cmd": "e_stop"})))
            .await,
        "e-stop",
    );
    let r = t
        .send(j(
            "POST",
            "/api/command",
            json!({"cmd": "set_mode", "mode": "autonomous"}),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "start while e-stopped is refused"
    );
    assert!(r.json()["error"].as_str().unwrap().contains("e-stop"));
    ok(
        t.send(j("POST", "/api/command", json!({"cmd": "reset_e_stop"})))
            .await,
        "reset",
    );
    let r = t
        .send(j(
            "POST",
            "/api/command",
            json!({"cmd": "set_max_speed", "percent": 140}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.car.st().max_speed, 40.0);

    // Calibration wizard path.
    ok(
        t.send(req("GET", "/api/calibration", Some(c), None, None, vec![]))
            .await,
        "cal get",
    );
    let r = t
        .send(j(
            "POST",
            "/api/calibration/pulse",
            json!({"channel": "steering", "pulse_ns": 1_500_000}),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "pulses only in calibration mode"
    );
    ok(
        t.send(j(
            "POST",
            "/api/command",
            json!({"cmd": "set_mode", "mode": "calibration"}),
        ))
        .await,
        "cal mode",
    );
    ok(
        t.send(j(
            "POST",
            "/api/calibration/pulse",
            json!({"channel": "steering", "pulse_ns": 1_500_000}),
        ))
        .await,
        "pulse",
    );
    let mut cal = serde_json::to_value(stock_cal()).unwrap();
    cal["steering"]["mid"] = json!(1_480_000);
    ok(
        t.send(j("POST", "/api/calibration", cal.clone())).await,
        "cal set",
    );
    let mut bad = cal.clone();
    bad["steering"]["min"] = json!(100_000);
    let r = t.send(j("POST", "/api/calibration", bad)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("steering.min"), "{}", r.text());
    ok(
        t.send(j("POST", "/api/calibration/cancel", json!({})))
            .await,
        "cancel",
    );
    assert_eq!(
        t.car.st().live.steering.mid,
        1_450_000,
        "cancel restores saved"
    );
    ok(t.send(j("POST", "/api/calibration", cal)).await, "cal set");
    let v = ok(
        t.send(j("POST", "/api/calibration/save", json!({}))).await,
        "save",
    )
    .json();
    assert_eq!(v["saved"]["steering"]["mid"], 1_480_000);
    let stock = br#"{"Calibration": {"Servo": {"max": 1700000, "mid": 1450000, "min": 1200000, "polarity": 1}, "Motor": {"max": 1603500, "mid": 1446000, "min": 1311000, "polarity": -1}, "version": 1}}"#;
    let v = ok(
        t.send(req(
            "POST",
            "/api/calibration/import",
            Some(c),
            Some(x),
            None,
            stock.to_vec(),
        ))
        .await,
        "import",
    )
    .json();
    assert_eq!(v["live"]["throttle"]["polarity"], -1);
    let r = t
        .send(req(
            "POST",
            "/api/calibration/import",
            Some(c),
            Some(x),
            None,
            b"{\"Calibration\":{}}".to_vec(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("Servo"), "{}", r.text());

    // Models.
    ok(
        t.send(req("GET", "/api/models", Some(c), None, None, vec![]))
            .await,
        "models",
    );
    ok(
        t.send(upload_req(
            c,
            x,
            Some("m1"),
            &[
                ("model.onnx", b"onnx-good"),
                ("model_metadata.json", GOOD_META),
            ],
        ))
        .await,
        "upload m1",
    );
    ok(
        t.send(upload_req(
            c,
            x,
            Some("m2"),
            &[
                ("model.onnx", b"onnx-good"),
                ("model_metadata.json", GOOD_META),
            ],
        ))
        .await,
        "upload m2",
    );
    ok(
        t.send(j("POST", "/api/models/m1/load", json!({}))).await,
        "load m1",
    );
    let r = t.send(j("DELETE", "/api/models/m1", json!({}))).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "the driving model cannot be deleted"
    );
    ok(
        t.send(j("DELETE", "/api/models/m2", json!({}))).await,
        "delete m2",
    );
    assert!(!t.state_dir().join("models/m2").exists());

    // Race.
    ok(
        t.send(req("GET", "/api/race", Some(c), None, None, vec![]))
            .await,
        "race",
    );
    ok(
        t.send(j("POST", "/api/race/start", json!({"duration_s": 240})))
            .await,
        "race start",
    );
    ok(t.send(j("POST", "/api/race/lap", json!({}))).await, "lap");
    ok(
        t.send(j("POST", "/api/race/offtrack", json!({}))).await,
        "offtrack",
    );
    let v = ok(
        t.send(j("POST", "/api/race/stop", json!({}))).await,
        "race stop",
    )
    .json();
    assert_eq!(v["history"].as_array().unwrap().len(), 1);

    // Tail light.
    let v = ok(
        t.send(req("GET", "/api/tail-light", Some(c), None, None, vec![]))
            .await,
        "tail light",
    )
    .json();
    assert_eq!(v["available"], true);
    ok(
        t.send(j(
            "POST",
            "/api/tail-light",
            json!({"r": 0, "g": 0, "b": 255}),
        ))
        .await,
        "tail light set",
    );

    // WebSockets get past auth (the upgrade itself needs a real connection).
    for p in [
        "/ws/telemetry",
        "/ws/camera",
        &format!("/ws/drive?csrf={x}"),
    ] {
        let r = t.send(req("GET", p, Some(c), None, None, vec![])).await;
        assert!(
            r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
            "{p}: {}",
            r.status
        );
    }

    // Password, then logout.
    let pw = t.password();
    ok(
        t.send(j(
            "POST",
            "/api/password",
            json!({"current": pw, "new": "track-side-42"}),
        ))
        .await,
        "password",
    );
    ok(t.send(j("POST", "/api/logout", json!({}))).await, "logout");
    let r = t
        .send(req("GET", "/api/status", Some(c), None, None, vec![]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "logged out");
}

#[tokio::test]
async fn pages_redirect_to_login_and_assets_are_embedded() {
    let t = TestApp::new();
    for p in ["/drive", "/calibrate", "/models", "/race", "/settings"] {
        let r = t.send(req("GET", p, None, None, None, vec![])).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{p}");
        assert!(r.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/login"));
    }
    let r = t.send(req("GET", "/login", None, None, None, vec![])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("E-STOP"));
    assert!(r.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    for (p, ct) in [
        ("/assets/app.js", "javascript"),
        ("/assets/app.css", "css"),
        ("/manifest.webmanifest", "manifest"),
        ("/assets/icon-192.png", "png"),
        ("/assets/icon-512.png", "png"),
    ] {
        let r = t.send(req("GET", p, None, None, None, vec![])).await;
        assert_eq!(r.status, StatusCode::OK, "{p}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains(ct),
            "{p}"
        );
        assert!(r.body.len() > 100, "{p}");
    }
    let png = t
        .send(req("GET", "/assets/icon-512.png", None, None, None, vec![]))
        .await;
    let img = image::load_from_memory(&png.body).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    let (c, _) = t.login().await;
    let r = t
        .send(req("GET", "/drive", Some(&c), None, None, vec![]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn login_cookie_flags_and_wrong_password() {
    let t = TestApp::new();
    let r = t
        .send(json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({"password": "nope"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let pw = t.password();
    let r = t
        .send(json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({"password": pw}),
        ))
        .await;
    let c = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age="),
        "{c}"
    );
    assert!(!c.contains("Secure"), "plain HTTP on loopback: {c}");

    let t = TestApp::with(|c| c.tls = Some(true));
    let pw = t.password();
    let r = t
        .send(json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({"password": pw}),
        ))
        .await;
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

#[tokio::test]
async fn login_is_rate_limited_even_for_the_right_password() {
    let t = TestApp::with(|c| {
        c.login_max_failures = 3;
        c.login_window_s = 60;
    });
    for _ in 0..3 {
        let r = t
            .send(json_req(
                "POST",
                "/api/login",
                None,
                None,
                &json!({"password": "guess"}),
            ))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let pw = t.password();
    let r = t
        .send(json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({"password": pw}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn sessions_expire() {
    let t = TestApp::with(|c| c.session_ttl_s = 1);
    let (c, _) = t.login().await;
    let r = t
        .send(req("GET", "/api/status", Some(&c), None, None, vec![]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = t
        .send(req("GET", "/api/status", Some(&c), None, None, vec![]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_model_shows_the_exact_error_and_the_old_model_stays() {
    let t = TestApp::new();
    let (c, x) = t.login().await;
    assert_eq!(
        t.send(upload_req(
            &c,
            &x,
            Some("good"),
            &[("model.onnx", b"onnx"), ("model_metadata.json", GOOD_META)]
        ))
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        t.send(json_req(
            "POST",
            "/api/models/good/load",
            Some(&c),
            Some(&x),
            &json!({})
        ))
        .await
        .status,
        StatusCode::OK
    );
    let r = t
        .send(upload_req(
            &c,
            &x,
            Some("broken"),
            &[
                ("model.onnx", b"bad-onnx"),
                ("model_metadata.json", GOOD_META),
            ],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        r.json()["error"],
        "model.onnx: output has 3 values but model_metadata.json action_space has 3 actions"
    );
    assert!(
        !t.state_dir().join("models/broken").exists(),
        "a rejected model is not installed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(t.state_dir().join("models"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("good")],
        "no staging folder left behind"
    );
    let st = t.car.status();
    assert!(st.model.active.unwrap().ends_with("/good"));
    // Missing metadata is named.
    let r = t
        .send(upload_req(
            &c,
            &x,
            Some("nometa"),
            &[("model.onnx", b"onnx")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text().contains("model_metadata.json: missing"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn upload_limits_and_types() {
    let t = TestApp::with(|c| c.max_upload_bytes = 2048);
    let (c, x) = t.login().await;
    let big = vec![b'x'; 8192];
    let r = t
        .send(upload_req(
            &c,
            &x,
            Some("big"),
            &[("model.onnx", &big), ("model_metadata.json", GOOD_META)],
        ))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    let r = t
        .send(upload_req(
            &c,
            &x,
            Some("sh"),
            &[("install.sh", b"rm -rf /")],
        ))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().contains("install.sh"), "{}", r.text());
    // A small archive that inflates past the limit (gzip bomb) is refused.
    let zeros = vec![0u8; 64 * 1024];
    let bomb = targz(&[
        ("model.onnx", &zeros, b'0'),
        ("model_metadata.json", GOOD_META, b'0'),
    ]);
    assert!(bomb.len() < 2048, "test archive must fit the upload limit");
    let r = t
        .send(upload_req(&c, &x, Some("bomb"), &[("bomb.tar.gz", &bomb)]))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("unpacks to more than"), "{}", r.text());
}

#[tokio::test]
async fn no_path_traversal_from_any_name() {
    let t = TestApp::new();
    let (c, x) = t.login().await;
    let outside = t.dir.path().join("escaped");
    std::fs::create_dir_all(&outside).unwrap();
    // File names with paths.
    for name in [
        "../model.onnx",
        "../../escaped/model.onnx",
        "/tmp/model.onnx",
        "..\\model.onnx",
    ] {
        let r = t
            .send(upload_req(
                &c,
                &x,
                Some("trav"),
                &[(name, b"onnx"), ("model_metadata.json", GOOD_META)],
            ))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            r.text()
        );
    }
    // Model names with paths.
    for name in ["../escaped", "..", ".hidden", "a/b"] {
        let r = t
            .send(upload_req(
                &c,
                &x,
                Some(name),
                &[("model.onnx", b"onnx"), ("model_metadata.json", GOOD_META)],
            ))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.text());
    }
    for p in [
        "/api/models/..%2F..%2Fescaped/load",
        "/api/models/.staging-x/load",
    ] {
        let r = t
            .send(json_req("POST", p, Some(&c), Some(&x), &json!({})))
            .await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
            "{p}: {}",
            r.status
        );
    }
    let r = t
        .send(json_req(
            "DELETE",
            "/api/models/..",
            Some(&c),
            Some(&x),
            &json!({}),
        ))
        .await;
    assert!(r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND);
    assert!(t.state_dir().exists(), "state folder not deleted");
    // Archive entries.
    for (entry, kind, what) in [
        ("../../escaped/model.onnx", b'0', "outside"),
        ("/tmp/escaped-model.onnx", b'0', "outside"),
        ("model.onnx", b'2', "link"),
    ] {
        let a = targz(&[
            (entry, b"onnx", kind),
            ("model_metadata.json", GOOD_META, b'0'),
        ]);
        let r = t
            .send(upload_req(&c, &x, Some("evil"), &[("evil.tar.gz", &a)]))
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{entry}: {}",
            r.text()
        );
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            e.starts_with("evil.tar.gz: entry") && e.contains(what),
            "{e}"
        );
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing escaped"
    );
    assert!(!std::path::Path::new("/tmp/escaped-model.onnx").exists());
    // A console-style archive with a folder prefix is fine.
    let a = targz(&[
        ("export/model.onnx", b"onnx", b'0'),
        ("export/model_metadata.json", GOOD_META, b'0'),
        ("export/notes.txt", b"hi", b'0'),
    ]);
    let r = t
        .send(upload_req(&c, &x, None, &[("my-model.tar.gz", &a)]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["name"], "my-model");
    let d = t.state_dir().join("models/my-model");
    assert!(d.join("model.onnx").is_file() && d.join("model_metadata.json").is_file());
    assert!(!d.join("notes.txt").exists());
}

#[cfg(unix)]
#[tokio::test]
async fn password_files_are_private_and_hold_only_an_argon2_hash() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestApp::new();
    let dir = t.state_dir();
    let pw = t.password();
    assert!(pw.len() >= 16);
    for f in ["password.argon2", "initial-password"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let hash = std::fs::read_to_string(dir.join("password.argon2")).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(&pw));
    // ensure_password does not regenerate.
    assert_eq!(web_ui::auth::ensure_password(&dir).unwrap(), None);
    // Change it: the initial file goes, only the new hash remains.
    let (c, x) = t.login().await;
    let r = t
        .send(json_req(
            "POST",
            "/api/password",
            Some(&c),
            Some(&x),
            &json!({"current": "wrong", "new": "long-enough-1"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = t
        .send(json_req(
            "POST",
            "/api/password",
            Some(&c),
            Some(&x),
            &json!({"current": pw, "new": "short"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = t
        .send(json_req(
            "POST",
            "/api/password",
            Some(&c),
            Some(&x),
            &json!({"current": pw, "new": "long-enough-1"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(!dir.join("initial-password").exists());
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().is_file() {
            let s = std::fs::read(e.path()).unwrap();
            let s = String::from_utf8_lossy(&s);
            assert!(
                !s.contains("long-enough-1") && !s.contains(&pw),
                "{:?} holds a password",
                e.path()
            );
        }
    }
    let mode = std::fs::metadata(dir.join("password.argon2"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let r = t
        .send(json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({"password": pw}),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "old password no longer works"
    );
    let r = t
        .send(json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({"password": "long-enough-1"}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[test]
fn tls_default_follows_the_address() {
    let mut c = web_ui::WebConfig::default();
    assert!(!c.tls_enabled(), "localhost sim: plain HTTP");
    c.address = "0.0.0.0:8443".into();
    assert!(c.tls_enabled(), "a real car on its Wi-Fi: HTTPS");
    c.tls = Some(false);
    assert!(!c.tls_enabled());
    let parsed: web_ui::WebConfig =
        toml::from_str("address = \"127.0.0.1:9000\"\ntls = true\n").unwrap();
    assert!(parsed.tls_enabled());
    assert!(
        toml::from_str::<web_ui::WebConfig>("adress = \"x\"").is_err(),
        "typos are errors"
    );
}

#[test]
fn https_server_starts_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = web_ui::WebConfig {
        address: "127.0.0.1:0".into(),
        tls: Some(true),
        state_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let h = web_ui::start(cfg, FakeCar::new()).unwrap();
    assert!(h.url().starts_with("https://127.0.0.1:"));
    assert!(dir.path().join("tls-cert.pem").exists());
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("tls-key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    // A TLS client hello gets a server hello back (0x16 handshake record).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut b = [0u8; 8];
    let n = s.read(&mut b).unwrap_or(0);
    assert!(
        n == 0 || b[0] == 0x15,
        "plain HTTP to the TLS port is refused, got {:?}",
        &b[..n]
    );
    drop(h);
}

async fn tail_get(t: &TestApp, cookie: &str) -> serde_json::Value {
    let r = t
        .send(req(
            "GET",
            "/api/tail-light",
            Some(cookie),
            None,
            None,
            vec![],
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

fn tail_post(cookie: &str, csrf: &str, body: &str) -> axum::http::Request<axum::body::Body> {
    req(
        "POST",
        "/api/tail-light",
        Some(cookie),
        Some(csrf),
        Some("application/json"),
        body.as_bytes().to_vec(),
    )
}

#[tokio::test]
async fn tail_light_shows_the_colour_before_and_after_it_is_set() {
    let t = TestApp::new();
    let (c, x) = t.login().await;
    assert_eq!(
        tail_get(&t, &c).await,
        json!({"available": true, "colour": {"r": 255, "g": 0, "b": 0}}),
        "the car's colour before any change"
    );
    let r = t
        .send(tail_post(&c, &x, r#"{"r": 255, "g": 128, "b": 0}"#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let want = json!({"available": true, "colour": {"r": 255, "g": 128, "b": 0}});
    assert_eq!(r.json(), want, "POST answers what is now shown");
    assert_eq!(tail_get(&t, &c).await, want, "GET shows the new colour");
    assert_eq!(
        t.car.st().tail_light,
        Some(web_ui::TailLightColour {
            r: 255,
            g: 128,
            b: 0
        })
    );
    // The extremes are fine; the JSON needs no particular content type.
    let r = t
        .send(req(
            "POST",
            "/api/tail-light",
            Some(&c),
            Some(&x),
            None,
            br#"{"r": 0, "g": 255, "b": 0}"#.to_vec(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        tail_get(&t, &c).await["colour"],
        json!({"r": 0, "g": 255, "b": 0})
    );
    assert_eq!(t.car.st().tail_sets.len(), 2);
    // The Settings page has the controls (hidden until GET says available).
    let page = t
        .send(req("GET", "/settings", Some(&c), None, None, vec![]))
        .await
        .text();
    for id in ["tail-card", "tail-colour", "tail-save", "tail-status"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} on the page");
    }
    assert!(page.contains(r#"<div id="tail-card" class="card" hidden>"#));
    let js = t
        .send(req("GET", "/assets/app.js", None, None, None, vec![]))
        .await
        .text();
    assert!(js.contains("'/api/tail-light'"));
}

#[tokio::test]
async fn a_bad_tail_light_value_is_400_naming_the_field_and_changes_nothing() {
    let t = TestApp::new();
    let (c, x) = t.login().await;
    let before = tail_get(&t, &c).await;
    for (body, want) in [
        (r#"{"r": 255, "g": 300, "b": 0}"#, "g: 300 is not 0-255"),
        (r#"{"r": -1, "g": 0, "b": 0}"#, "r: -1 is not 0-255"),
        (r#"{"r": 1, "g": 2, "b": 2.5}"#, "b: 2.5 is not 0-255"),
        (
            r#"{"r": 1, "g": 2, "b": "blue"}"#,
            "b: \"blue\" is not 0-255",
        ),
        (r#"{"r": 1, "g": null, "b": 3}"#, "g: null is not 0-255"),
        (r#"{"r": 1, "b": 3}"#, "g: missing"),
        (r#"{"g": 1, "b": 3}"#, "r: missing"),
        (r#"{}"#, "r: missing"),
        (r#"[255, 128, 0]"#, "tail light: expected"),
        (r#""#, "tail light: "),
        (r#"{"r": 1,"#, "tail light: "),
    ] {
        let r = t.send(tail_post(&c, &x, body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        let e = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(e.starts_with(want), "{body}: error {e:?}, want {want:?}");
    }
    assert!(
        t.car.st().tail_sets.is_empty(),
        "no bad value reached the car"
    );
    assert_eq!(tail_get(&t, &c).await, before, "colour unchanged");
}

#[tokio::test]
async fn a_car_without_a_tail_light_says_so_and_refuses_a_colour() {
    // Both the fake car's own refusal and the trait's default bodies (a car
    // written before the tail light existed).
    let fake = TestApp::new();
    fake.car.st().tail_light = None;
    let defaults = TestApp::with_car(|_| {}, |car| Arc::new(DefaultsCar(car)));
    for (what, t) in [("fake car", &fake), ("trait defaults", &defaults)] {
        let (c, x) = t.login().await;
        assert_eq!(
            tail_get(t, &c).await,
            json!({"available": false, "colour": null}),
            "{what}"
        );
        let r = t
            .send(tail_post(&c, &x, r#"{"r": 1, "g": 2, "b": 3}"#))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], "this car has no tail light", "{what}");
        // A bad value is still a bad value.
        let r = t
            .send(tail_post(&c, &x, r#"{"r": 1, "g": 256, "b": 3}"#))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text());
        assert_eq!(
            tail_get(t, &c).await["available"],
            false,
            "{what}: still none"
        );
    }
    assert_eq!(
        defaults.car.st().tail_sets,
        vec![],
        "the defaults never reach the fake's own tail light"
    );
}

#[tokio::test]
async fn tail_light_needs_a_session_and_a_csrf_token() {
    let t = TestApp::new();
    for (method, body) in [("GET", ""), ("POST", r#"{"r": 1, "g": 2, "b": 3}"#)] {
        for cookie in [None, Some("car_session=forged")] {
            let r = t
                .send(req(
                    method,
                    "/api/tail-light",
                    cookie,
                    Some("x"),
                    Some("application/json"),
                    body.as_bytes().to_vec(),
                ))
                .await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {cookie:?}");
            assert_eq!(r.json()["error"], "log in first");
        }
    }
    let (c, _) = t.login().await;
    let r = t
        .send(req(
            "POST",
            "/api/tail-light",
            Some(&c),
            None,
            Some("application/json"),
            br#"{"r": 1, "g": 2, "b": 3}"#.to_vec(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no CSRF token");
    assert!(t.car.st().tail_sets.is_empty(), "nothing reached the car");
    assert_eq!(t.car.st().tail_light, Some(FAKE_TAIL));
}
