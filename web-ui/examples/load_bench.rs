//! Load bench: does the web UI disturb the control loop?
//!
//! Against a running daemon (`car-runtime run --sim --config FILE`), it
//! measures the control loop's capture->PWM latency from the daemon's own
//! telemetry, first with one telemetry reader only (baseline), then with 8
//! clients watching the camera and one driving in manual mode (50 ms
//! heartbeats), and prints the figures as JSON.
//!
//! ```text
//! cargo run --release -p web-ui --example load_bench -- \
//!     http://127.0.0.1:8080 /path/to/state/initial-password [seconds]
//! ```
//!
//! Plain std networking (HTTP/1.1 and a minimal WebSocket client) so the
//! bench adds no dependency to the crate. Loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: load_bench URL PASSWORD_FILE [SECONDS]");
        std::process::exit(2);
    }
    let host = args[1]
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let password = std::fs::read_to_string(&args[2]).expect("password file");
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let (cookie, csrf) = login(&host, password.trim());

    post(
        &host,
        &cookie,
        &csrf,
        "/api/command",
        r#"{"cmd":"set_mode","mode":"stopped"}"#,
    );
    post(
        &host,
        &cookie,
        &csrf,
        "/api/command",
        r#"{"cmd":"set_max_speed","percent":30}"#,
    );
    post(
        &host,
        &cookie,
        &csrf,
        "/api/command",
        r#"{"cmd":"set_mode","mode":"manual"}"#,
    );

    // Baseline: the loop runs (manual mode, driven by one client as in
    // the loaded phase) with nobody watching the camera.
    let stop = Arc::new(AtomicBool::new(false));
    let driver = spawn_driver(&host, &cookie, &csrf, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let base = collect(&host, &cookie, Duration::from_secs(secs));

    let frames = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut viewers = Vec::new();
    for _ in 0..8 {
        let (h, c, s, f, b) = (
            host.clone(),
            cookie.clone(),
            stop.clone(),
            frames.clone(),
            bytes.clone(),
        );
        viewers.push(std::thread::spawn(move || {
            let mut ws = ws_connect(&h, "/ws/camera", &c);
            ws.set_read_timeout(Some(Duration::from_millis(500))).ok();
            while !s.load(Ordering::Relaxed) {
                match read_frame(&mut ws) {
                    Some((2, payload)) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        b.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => {}
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(1));
    let f0 = frames.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let loaded = collect(&host, &cookie, Duration::from_secs(secs));
    let fps_per_viewer =
        (frames.load(Ordering::Relaxed) - f0) as f64 / t0.elapsed().as_secs_f64() / 8.0;
    stop.store(true, Ordering::SeqCst);
    for v in viewers {
        let _ = v.join();
    }
    let _ = driver.join();
    post(
        &host,
        &cookie,
        &csrf,
        "/api/command",
        r#"{"cmd":"set_mode","mode":"stopped"}"#,
    );

    let (b99, l99) = (base.p99_ms(), loaded.p99_ms());
    let change = if b99 > 0.0 {
        (l99 - b99) / b99 * 100.0
    } else {
        0.0
    };
    println!(
        "{}",
        serde_json::json!({
            "seconds_per_phase": secs,
            "baseline": base.json(),
            "loaded_8_viewers_1_driver": loaded.json(),
            "p99_change_pct": (change * 10.0).round() / 10.0,
            "camera_fps_per_viewer": (fps_per_viewer * 10.0).round() / 10.0,
            "camera_mb_total": bytes.load(Ordering::Relaxed) as f64 / 1e6,
        })
    );
}

struct Phase {
    lat_us: Vec<u32>,
    missed: u64,
    lost: u64,
}

impl Phase {
    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let mut v = self.lat_us.clone();
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "steps": self.lat_us.len(),
            "latency_ms": {"p50": self.pct(0.5), "p99": self.pct(0.99), "max": self.pct(1.0)},
            "deadline_missed": self.missed,
            "samples_lost_by_reader": self.lost,
        })
    }
    fn p99_ms(&self) -> f64 {
        self.pct(0.99)
    }
}

/// Every telemetry sample of one phase, read from `/ws/telemetry`.
fn collect(host: &str, cookie: &str, dur: Duration) -> Phase {
    let mut ws = ws_connect(host, "/ws/telemetry", cookie);
    ws.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let t0 = Instant::now();
    let mut ph = Phase {
        lat_us: vec![],
        missed: 0,
        lost: 0,
    };
    let mut last_seq = 0u64;
    while t0.elapsed() < dur {
        let Some((1, payload)) = read_frame(&mut ws) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) else {
            continue;
        };
        for s in v["samples"].as_array().into_iter().flatten() {
            let seq = s["seq"].as_u64().unwrap_or(0);
            if seq <= last_seq {
                continue;
            }
            if last_seq > 0 && seq > last_seq + 1 {
                ph.lost += seq - last_seq - 1;
            }
            last_seq = seq;
            let us = s["total_us"].as_u64().unwrap_or(0) as u32;
            if us > 0 {
                ph.lat_us.push(us);
            }
            if s["deadline_missed"].as_bool().unwrap_or(false) {
                ph.missed += 1;
            }
        }
    }
    ph
}

fn spawn_driver(
    host: &str,
    cookie: &str,
    csrf: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let path = format!("/ws/drive?csrf={csrf}");
    let mut ws = ws_connect(host, &path, cookie);
    std::thread::spawn(move || {
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            // Gentle weave at 30 % of max speed.
            let s = ((i as f32) * 0.05).sin() * 0.5;
            let msg = format!(r#"{{"s":{s:.3},"t":0.3}}"#);
            if write_frame(&mut ws, 1, msg.as_bytes()).is_err() {
                break;
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = write_frame(&mut ws, 8, &[]);
    })
}

fn http(host: &str, req: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(host).expect("connect to the daemon");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let code: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut headers = vec![];
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    (code, headers, String::from_utf8_lossy(&body).into_owned())
}

fn login(host: &str, password: &str) -> (String, String) {
    let body = serde_json::json!({ "password": password }).to_string();
    let req = format!(
        "POST /api/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (code, headers, body) = http(host, &req);
    assert_eq!(code, 200, "login failed: {body}");
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .expect("session cookie");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    (cookie, v["csrf"].as_str().unwrap().to_string())
}

fn post(host: &str, cookie: &str, csrf: &str, path: &str, body: &str) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (code, _, body) = http(host, &req);
    if code != 200 {
        eprintln!("{path}: {code} {body}");
    }
}

fn ws_connect(host: &str, path: &str, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_nodelay(true).ok();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    // Read the 101 response headers byte by byte so no frame bytes are lost.
    let mut hdr = Vec::new();
    let mut b = [0u8; 1];
    while !hdr.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("upgrade response");
        hdr.push(b[0]);
    }
    assert!(
        hdr.starts_with(b"HTTP/1.1 101"),
        "{path}: {}",
        String::from_utf8_lossy(&hdr)
    );
    s
}

/// (opcode, payload) of the next frame; None on timeout or error.
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let op = h[0] & 0x0f;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut e = [0u8; 2];
        s.read_exact(&mut e).ok()?;
        len = u16::from_be_bytes(e) as u64;
    } else if len == 127 {
        let mut e = [0u8; 8];
        s.read_exact(&mut e).ok()?;
        len = u64::from_be_bytes(e);
    }
    let mut p = vec![0u8; len as usize];
    // Once a header is read the payload must follow; wait for it.
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let r = s.read_exact(&mut p);
    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
    r.ok()?;
    Some((op, p))
}

fn write_frame(s: &mut TcpStream, op: u8, payload: &[u8]) -> std::io::Result<()> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | op];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f)
}
