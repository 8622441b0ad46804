//! The WebSockets: telemetry and camera streams out, manual drive in
//! (rate-limited, with keep-alives and idle cut-offs).

use super::*;

/// When a WebSocket's peer last sent anything (a pong counts), shared
/// between its reader and writer halves.
pub(super) struct Liveness {
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
pub(super) fn spawn_ws_reader(
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
pub(super) async fn ws_send(
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
pub(super) async fn ws_keepalive(
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

pub(super) fn ws_idle(st: &AppState) -> Duration {
    WebConfig::secs(st.config.ws_idle_timeout_s)
}

/// Status plus new telemetry samples five times a second.
pub(super) async fn ws_telemetry(
    State(st): State<AppState>,
    _a: Authed,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| telemetry_loop(st, socket))
}

pub(super) async fn telemetry_loop(st: AppState, socket: WebSocket) {
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
pub(super) async fn ws_camera(
    State(st): State<AppState>,
    _a: Authed,
    ws: WebSocketUpgrade,
) -> Response {
    ws.on_upgrade(move |socket| camera_loop(st, socket))
}

pub(super) async fn camera_loop(st: AppState, socket: WebSocket) {
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
pub(super) struct DriveQuery {
    csrf: Option<String>,
}

/// One open drive WebSocket, counted against `max_drive_sockets`.
pub(super) struct DriveSlot(AppState);
impl Drop for DriveSlot {
    fn drop(&mut self) {
        self.0.drive_sockets.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Manual driving: `{"s": steering, "t": throttle}` heartbeats (~every 50 ms)
/// and calibration test pulses `{"pulse": "throttle", "ns": 1500000}`.
pub(super) async fn ws_drive(
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
pub(super) struct DriveMsg {
    s: Option<f32>,
    t: Option<f32>,
    pulse: Option<Channel>,
    ns: Option<u32>,
}

/// Messages a drive socket may pass on to the car: a token bucket holding a
/// quarter second's worth, refilled at the configured rate. What is over is
/// dropped, so one socket cannot fill the car's command queue.
pub(super) struct Bucket {
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

pub(super) async fn drive_loop(st: AppState, socket: WebSocket, _slot: DriveSlot) {
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
