//! The server stays reachable and the e-stop cannot be lost: the e-stop's
//! own path, drive-socket limits, the login limiter under concurrency, the
//! argon2 bound, and (with real sockets on 127.0.0.1) the connection cap and
//! the header/idle/body timeouts.

mod common;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

fn from_ip(
    mut r: axum::http::Request<axum::body::Body>,
    ip: IpAddr,
) -> axum::http::Request<axum::body::Body> {
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40000)));
    r
}

fn login_req(ip: IpAddr, password: &str) -> axum::http::Request<axum::body::Body> {
    from_ip(
        json_req(
            "POST",
            "/api/login",
            None,
            None,
            &json!({ "password": password }),
        ),
        ip,
    )
}

#[tokio::test]
async fn estop_is_accepted_while_the_command_queue_is_full() {
    let t = TestApp::new();
    let (c, x) = t.login().await;
    t.car.st().queue_full = true;
    let r = t
        .send(json_req(
            "POST",
            "/api/command",
            Some(&c),
            Some(&x),
            &json!({"cmd": "set_mode", "mode": "manual"}),
        ))
        .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "other commands see the full queue"
    );
    for _ in 0..29 {
        let r = t
            .send(json_req(
                "POST",
                "/api/command",
                Some(&c),
                Some(&x),
                &json!({"cmd": "e_stop"}),
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["estop"], true, "the answer shows the latch");
    }
    assert_eq!(
        t.car.st().estops,
        29,
        "every e-stop took the dedicated path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_passwords_from_one_address_are_counted_before_checking() {
    let t = TestApp::with(|c| c.login_max_failures = 5);
    let ip: IpAddr = [10, 0, 0, 7].into();
    let mut tasks = vec![];
    for _ in 0..100 {
        let app = t.app.clone();
        tasks.push(tokio::spawn(async move {
            app.oneshot(login_req(ip, "wrong-password"))
                .await
                .unwrap()
                .status()
        }));
    }
    let mut wrong = 0;
    let mut limited = 0;
    for h in tasks {
        match h.await.unwrap() {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(wrong, 5, "only the allowed attempts were checked");
    assert_eq!(limited, 95);
    assert_eq!(
        t.state.argon2.runs(),
        5,
        "argon2 ran once per allowed attempt"
    );
    // The right password is refused too until the window passes.
    let r = t.send(login_req(ip, &t.password())).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.get("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argon2_work_is_bounded_whoever_asks() {
    let t = TestApp::with(|c| {
        c.argon2_concurrency = 2;
        c.argon2_queue = 8;
    });
    let mut tasks = vec![];
    for i in 0..100u32 {
        let app = t.app.clone();
        let ip: IpAddr = [10, 1, (i / 256) as u8, (i % 256) as u8].into();
        tasks.push(tokio::spawn(async move {
            let r = app.oneshot(login_req(ip, "wrong-password")).await.unwrap();
            r.status()
        }));
    }
    let (mut wrong, mut busy) = (0, 0);
    for h in tasks {
        match h.await.unwrap() {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => busy += 1,
            s => panic!("unexpected {s}"),
        }
    }
    let peak = t.state.argon2.peak_in_flight();
    eprintln!("100 concurrent logins from 100 addresses: {wrong} checked, {busy} busy, peak {peak} argon2 in flight");
    assert!(peak <= 2, "at most 2 argon2 at once, saw {peak}");
    assert!(busy >= 50, "the excess is refused at once ({busy} of 100)");
    assert_eq!(t.state.argon2.runs(), wrong as u64);
    // A refused check was not a failed guess: that address may log in.
    let r = t
        .send(login_req([10, 1, 0, 99].into(), &t.password()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn failures_from_thousands_of_other_addresses_do_not_reset_a_limit() {
    let t = TestApp::with(|c| c.login_max_failures = 5);
    let first: IpAddr = [192, 168, 1, 20].into();
    // Over-long passwords fail without argon2: cheap for an attacker.
    let long = "x".repeat(300);
    for _ in 0..5 {
        assert_eq!(
            t.send(login_req(first, &long)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        t.send(login_req(first, &t.password())).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let t0 = Instant::now();
    for i in 0..4100u32 {
        let ip: IpAddr = [127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8].into();
        let s = t.send(login_req(ip, &long)).await.status;
        assert!(s == StatusCode::UNAUTHORIZED || s == StatusCode::TOO_MANY_REQUESTS);
    }
    eprintln!("4100 failures from other addresses in {:?}", t0.elapsed());
    assert!(
        t.state.limiter.tracked() <= web_ui::auth::LIMITER_CAPACITY,
        "memory stays bounded"
    );
    let r = t.send(login_req(first, &t.password())).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the first address is still limited"
    );
    assert_eq!(t.state.limiter.attempts(first), 5);
    assert_eq!(t.state.argon2.runs(), 0, "no argon2 for any of them");
}

// ---------- real sockets on 127.0.0.1 ----------

struct Server {
    h: web_ui::WebHandle,
    car: Arc<FakeCar>,
    _dir: tempfile::TempDir,
    password: String,
}

fn server(f: impl FnOnce(&mut web_ui::WebConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = web_ui::WebConfig {
        address: "127.0.0.1:0".into(),
        tls: Some(false),
        state_dir: Some(dir.path().join("state")),
        ..Default::default()
    };
    f(&mut cfg);
    let car = FakeCar::new();
    let h = web_ui::start(cfg, car.clone()).unwrap();
    let password = std::fs::read_to_string(dir.path().join("state/initial-password"))
        .unwrap()
        .trim()
        .to_string();
    Server {
        h,
        car,
        _dir: dir,
        password,
    }
}

/// A keep-alive HTTP/1.1 client.
/// Status, headers, body.
type Response = (u16, Vec<(String, String)>, Vec<u8>);

struct Client {
    r: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            r: BufReader::new(s),
            addr,
        }
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(c) = cookie {
            head += &format!("Cookie: {c}\r\n");
        }
        if let Some(x) = csrf {
            head += &format!("X-CSRF-Token: {x}\r\n");
        }
        head += "\r\n";
        let s = self.r.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        self.response()
    }

    fn response(&mut self) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let code: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut headers = vec![];
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.r.read_exact(&mut body)?;
        Ok((code, headers, body))
    }

    /// Logs in on this connection; (cookie, csrf).
    fn login(&mut self, password: &str) -> (String, String) {
        let (code, headers, body) = self
            .request(
                "POST",
                "/api/login",
                None,
                None,
                json!({ "password": password }).to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let cookie = headers
            .iter()
            .find(|(k, _)| k == "set-cookie")
            .unwrap()
            .1
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (cookie, v["csrf"].as_str().unwrap().to_string())
    }

    fn estop(&mut self, cookie: &str, csrf: &str) -> std::io::Result<serde_json::Value> {
        let (code, _, body) = self.request(
            "POST",
            "/api/command",
            Some(cookie),
            Some(csrf),
            br#"{"cmd":"e_stop"}"#,
        )?;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        Ok(serde_json::from_slice(&body).unwrap())
    }
}

/// True when the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine.
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_logged_in_phone_gets_estop_and_status_while_600_idle_connections_are_open() {
    let srv = server(|c| {
        c.max_connections = 200;
        c.header_timeout_s = 20.0;
    });
    let addr = srv.h.local_addr();
    // The phone: logged in on a keep-alive connection before the flood.
    let mut phone = Client::connect(addr);
    let (cookie, csrf) = phone.login(&srv.password);

    // 600 connections that never send a byte, 3x the cap.
    let t0 = Instant::now();
    let idle: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let st = srv.h.connections();
    eprintln!("600 idle connections opened in {:?}: {st:?}", t0.elapsed());
    assert!(st.open <= 200, "the cap holds: {st:?}");
    assert!(
        st.evicted >= 400,
        "the oldest unauthenticated ones were closed: {st:?}"
    );

    // The phone's own connection was kept.
    let t1 = Instant::now();
    let s = phone.estop(&cookie, &csrf).unwrap();
    let on_kept = t1.elapsed();
    assert_eq!(s["estop"], true);
    // A fresh connection from the phone gets in too.
    let t2 = Instant::now();
    let mut fresh = Client::connect(addr);
    let (code, _, body) = fresh
        .request("GET", "/api/status", Some(&cookie), None, b"")
        .unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["estop"], true);
    fresh.estop(&cookie, &csrf).unwrap();
    let on_fresh = t2.elapsed();
    eprintln!("with 600 idle connections: e-stop on the kept connection {on_kept:?}; status + e-stop on a new one {on_fresh:?}");
    assert!(on_kept < Duration::from_secs(1), "{on_kept:?}");
    assert!(on_fresh < Duration::from_secs(1), "{on_fresh:?}");
    assert_eq!(srv.car.st().estops, 2);
    drop(idle);
}

#[test]
fn slowloris_and_idle_connections_are_closed_after_their_timeouts() {
    let srv = server(|c| {
        c.header_timeout_s = 0.5;
        c.idle_timeout_s = 1.0;
    });
    let addr = srv.h.local_addr();
    // 300 clients trickling a header that never ends.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let t0 = Instant::now();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        for s in slow.iter_mut() {
            let _ = s.write_all(b"X-a: b\r\n");
        }
    }
    let mut closed = 0;
    for s in slow.iter_mut() {
        if closed_within(
            s,
            Duration::from_millis(2000)
                .saturating_sub(t0.elapsed())
                .max(Duration::from_millis(10)),
        ) {
            closed += 1;
        }
    }
    eprintln!(
        "slowloris: {closed} of 300 closed {:?} after opening (header timeout 0.5 s)",
        t0.elapsed()
    );
    assert_eq!(closed, 300);
    // A keep-alive connection that goes quiet after a request.
    let mut c = Client::connect(addr);
    let (code, _, _) = c.request("GET", "/login", None, None, b"").unwrap();
    assert_eq!(code, 200);
    let t1 = Instant::now();
    assert!(closed_within(c.r.get_mut(), Duration::from_secs(3)));
    let idle = t1.elapsed();
    eprintln!("idle keep-alive closed after {idle:?} (idle timeout 1 s)");
    assert!(idle >= Duration::from_millis(900), "{idle:?}");
    // A body that stalls.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pass")
        .unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "a stalled body is dropped"
    );
    // The client sees the close before the server's task has counted it
    // out: give the count a moment (a loaded machine delays that task).
    let t2 = Instant::now();
    while srv.h.connections().open != 0 && t2.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(srv.h.connections().open, 0, "{:?}", srv.h.connections());
}

/// A masked client text frame.
fn ws_text(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn drive_socket(addr: SocketAddr, cookie: &str, csrf: &str) -> Result<TcpStream, u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "GET /ws/drive?csrf={csrf} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    // Read the response head byte by byte so no frame bytes are consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let code: u16 = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if code == 101 {
        Ok(s)
    } else {
        Err(code)
    }
}

#[test]
fn a_flooding_drive_socket_is_throttled_and_the_estop_still_gets_through() {
    let srv = server(|c| {
        c.drive_max_msgs_per_s = 100;
        c.max_drive_sockets = 4;
    });
    let addr = srv.h.local_addr();
    let mut phone = Client::connect(addr);
    let (cookie, csrf) = phone.login(&srv.password);
    srv.car.st().mode = web_ui::Mode::Manual;

    let mut socks: Vec<TcpStream> = (0..4)
        .map(|_| drive_socket(addr, &cookie, &csrf).unwrap())
        .collect();
    assert_eq!(
        drive_socket(addr, &cookie, &csrf).err(),
        Some(503),
        "a fifth drive socket is refused"
    );
    // One socket floods 2000 messages as fast as it can for ~0.5 s.
    let msg = ws_text(br#"{"s":0.5,"t":0.3}"#);
    let t0 = Instant::now();
    let mut sent = 0;
    while t0.elapsed() < Duration::from_millis(500) && sent < 2000 {
        socks[0].write_all(&msg).unwrap();
        sent += 1;
    }
    // Meanwhile the e-stop.
    let s = phone.estop(&cookie, &csrf).unwrap();
    assert_eq!(s["estop"], true);
    std::thread::sleep(Duration::from_millis(300));
    let elapsed = t0.elapsed().as_secs_f64();
    let manual = srv
        .car
        .st()
        .commands
        .iter()
        .filter(|c| matches!(c, web_ui::Command::Manual { .. }))
        .count();
    eprintln!("drive flood: {sent} sent in 0.5 s, {manual} reached the car in {elapsed:.2} s");
    // Burst (25) + 100/s over the elapsed time, plus the final neutral.
    let allowed = 25.0 + 100.0 * elapsed + 2.0;
    assert!((manual as f64) <= allowed, "{manual} > {allowed}");
    assert!(manual >= 20, "the socket still drives ({manual})");
    assert_eq!(srv.car.st().estops, 1);
    // Closing sockets frees their slots.
    socks.truncate(1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(drive_socket(addr, &cookie, &csrf).is_ok());
}

#[test]
fn a_quiet_drive_socket_is_closed_after_the_websocket_idle_timeout() {
    let srv = server(|c| c.ws_idle_timeout_s = 0.6);
    let addr = srv.h.local_addr();
    let mut phone = Client::connect(addr);
    let (cookie, csrf) = phone.login(&srv.password);
    // This client never answers pings.
    let mut s = drive_socket(addr, &cookie, &csrf).unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    eprintln!("silent WebSocket closed after {:?}", t0.elapsed());
    assert!(t0.elapsed() >= Duration::from_millis(500));
}

#[test]
fn a_25_mb_model_archive_still_uploads_through_the_timeouts() {
    let srv = server(|_| {});
    let addr = srv.h.local_addr();
    let mut c = Client::connect(addr);
    let (cookie, csrf) = c.login(&srv.password);
    // Incompressible, so the archive really is ~25 MB on the wire.
    let mut x = 0x2545F4914F6CDD1Du64;
    let onnx: Vec<u8> = (0..25 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let archive = targz(&[
        ("model_metadata.json", GOOD_META, b'0'),
        ("model.onnx", onnx.as_slice(), b'0'),
    ]);
    assert!(archive.len() > 25 * 1024 * 1024);
    let (ct, body) = multipart(&[("files", Some("big.tar.gz"), archive.as_slice())]);
    let head = format!(
        "POST /api/models HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.r.get_mut()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let t0 = Instant::now();
    c.r.get_mut().write_all(head.as_bytes()).unwrap();
    c.r.get_mut().write_all(&body).unwrap();
    let (code, _, resp) = c.response().unwrap();
    eprintln!("25 MB upload answered {code} in {:?}", t0.elapsed());
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
}
