//! Accepting connections: a cap on how many are open, timeouts for slow and
//! idle ones, and which connection is closed first when the cap is reached.
//!
//! The server must stay reachable for the phone that is driving (its e-stop
//! above all) whatever other clients do. So:
//!
//! - at most `max_connections` are open (WebSockets included), well under
//!   the process's file limit, so `accept` never fails for lack of file
//!   descriptors;
//! - when the cap is reached, a new connection closes the oldest one that
//!   never carried a valid session cookie (idle ones first). Connections of
//!   logged-in users are never closed to make room; a new connection is
//!   refused only when every open one belongs to a logged-in user;
//! - a connection must deliver its first request's headers (TLS handshake
//!   included) within `header_timeout`; a keep-alive connection with no
//!   request in flight is closed after `idle_timeout`;
//! - request bodies must arrive within `body_timeout` (`upload_timeout` for
//!   a model upload) and never stall longer than `header_timeout`.
//!
//! WebSockets time themselves out (see `server.rs`): once upgraded, a
//! connection is no longer reaped here, but it still counts against the cap
//! until its socket is closed.

use crate::server::{AppState, SESSION_COOKIE};
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

/// The limits the accept loop enforces (from [`crate::WebConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub upload_timeout: Duration,
}

/// One open connection, as the table sees it.
struct Conn {
    authed: AtomicBool,
    upgraded: AtomicBool,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When the connection last went quiet (accepted, or its last response
    /// finished), in ms since the table's epoch.
    quiet_since_ms: AtomicU64,
    close: Notify,
}

/// Every open connection. Shared by the accept loop, the connections' tasks
/// and the reaper.
pub struct ConnTable {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    epoch: Instant,
    limits: ConnLimits,
    evicted: AtomicU64,
    refused: AtomicU64,
    reaped: AtomicU64,
}

/// What the table did so far (tests, logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    pub open: usize,
    /// Closed to make room for a new connection.
    pub evicted: u64,
    /// Refused because every open connection belonged to a logged-in user.
    pub refused: u64,
    /// Closed by a header or idle timeout.
    pub reaped: u64,
}

impl ConnTable {
    pub fn new(limits: ConnLimits) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            limits,
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> ConnStats {
        ConnStats {
            open: self.lock().len(),
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            reaped: self.reaped.load(Ordering::Relaxed),
        }
    }

    /// Make room for a new connection if needed; `None` means refuse it.
    fn admit(self: &Arc<Self>) -> Option<(u64, Arc<Conn>)> {
        let now = self.now_ms();
        let mut m = self.lock();
        if m.len() >= self.limits.max_connections.max(1) {
            // Oldest quiet unauthenticated connection first, then the oldest
            // unauthenticated one at all (a slow request in flight).
            let victim = m
                .iter()
                .filter(|(_, c)| !c.authed.load(Ordering::Relaxed))
                .min_by_key(|(_, c)| {
                    (
                        c.in_flight.load(Ordering::Relaxed) > 0,
                        c.quiet_since_ms.load(Ordering::Relaxed),
                    )
                })
                .map(|(id, _)| *id);
            match victim.and_then(|id| m.remove(&id)) {
                Some(c) => {
                    c.close.notify_one();
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn {
            authed: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(now),
            close: Notify::new(),
        });
        m.insert(id, c.clone());
        Some((id, c))
    }

    /// Close connections past their header or idle timeout.
    fn reap(&self) {
        let now = self.now_ms();
        let header = self.limits.header_timeout.as_millis() as u64;
        let idle = self.limits.idle_timeout.as_millis() as u64;
        let mut m = self.lock();
        m.retain(|_, c| {
            if c.upgraded.load(Ordering::Relaxed) || c.in_flight.load(Ordering::Relaxed) > 0 {
                return true;
            }
            // Before its first request a connection gets the header timeout
            // only: a slowloris client never completes one.
            let limit = if c.requests.load(Ordering::Relaxed) == 0 {
                header
            } else {
                idle
            };
            let quiet = now.saturating_sub(c.quiet_since_ms.load(Ordering::Relaxed));
            if quiet > limit {
                c.close.notify_one();
                self.reaped.fetch_add(1, Ordering::Relaxed);
                false
            } else {
                true
            }
        });
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// The socket, which takes its table entry with it when it closes (also
/// after an upgrade to a WebSocket, which keeps the socket).
struct TrackedIo<T> {
    io: T,
    table: Arc<ConnTable>,
    id: u64,
}

impl<T> Drop for TrackedIo<T> {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that must arrive by a deadline and never stall for long.
struct TimeoutBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    total: Duration,
    stall: Duration,
    stall_timer: Pin<Box<tokio::time::Sleep>>,
}

#[derive(Debug, thiserror::Error)]
enum BodyTimeout {
    #[error("request body not received within {0:?}")]
    Total(Duration),
    #[error("request body stalled for {0:?}")]
    Stalled(Duration),
}

impl http_body::Body for TimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                let next = tokio::time::Instant::now() + this.stall;
                this.stall_timer.as_mut().reset(next);
                return Poll::Ready(Some(Ok(f)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout::Total(this.total)))));
        }
        if this.stall_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout::Stalled(this.stall)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Ends the request's "in flight" time when the response body is done (or
/// dropped), so a long response is not mistaken for an idle connection.
struct InFlight(Arc<Conn>, Arc<ConnTable>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .quiet_since_ms
            .store(self.1.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn has_valid_session(st: &AppState, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == SESSION_COOKIE)
        .any(|(_, v)| st.sessions.get(v).is_some())
}

fn logs_in(resp: &axum::http::Response<axum::body::Body>) -> bool {
    resp.status().is_success()
        && resp
            .headers()
            .get_all(axum::http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
            .any(|v| !v.is_empty() && !v.starts_with(';'))
}

fn is_upload(req: &axum::http::Request<Incoming>) -> bool {
    req.method() == axum::http::Method::POST && req.uri().path() == "/api/models"
}

/// Accept on `listener` and serve `router` until `shutdown` flips to true;
/// then give open connections 500 ms to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    state: AppState,
    table: Arc<ConnTable>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = table.limits;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer while a keep-alive connection waits for
        // its next request too, so it must not be shorter than the idle
        // timeout; the reaper enforces the header timeout on new
        // connections and this is the backstop for later requests.
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    let builder = Arc::new(builder);

    let reaper = {
        let table = table.clone();
        let tick = (limits.header_timeout.min(limits.idle_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            loop {
                iv.tick().await;
                table.reap();
            }
        })
    };

    let mut last_warn: Option<Instant> = None;
    let mut warn = |msg: String| {
        // At most one line a second: a flood must not flood the journal too.
        if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
            tracing::warn!("{msg}");
            last_warn = Some(Instant::now());
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut shutdown) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the
                // reaper and closing clients free descriptors meanwhile.
                warn(format!("web server: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, conn)) = table.admit() else {
            warn(format!(
                "web server: {} connections, all logged in; refusing {peer}",
                limits.max_connections
            ));
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = TrackedIo {
            io: tcp,
            table: table.clone(),
            id,
        };
        let (router, state, builder, tls) =
            (router.clone(), state.clone(), builder.clone(), tls.clone());
        let (table, shutdown) = (table.clone(), shutdown.clone());
        tokio::spawn(async move {
            let svc_conn = conn.clone();
            let svc_table = table.clone();
            let svc = hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
                let (conn, table, router, state) = (
                    svc_conn.clone(),
                    svc_table.clone(),
                    router.clone(),
                    state.clone(),
                );
                async move {
                    conn.in_flight.fetch_add(1, Ordering::Relaxed);
                    conn.requests.fetch_add(1, Ordering::Relaxed);
                    let in_flight = InFlight(conn.clone(), table.clone());
                    if !conn.authed.load(Ordering::Relaxed)
                        && has_valid_session(&state, req.headers())
                    {
                        conn.authed.store(true, Ordering::Relaxed);
                    }
                    let total = if is_upload(&req) {
                        limits.upload_timeout
                    } else {
                        limits.body_timeout
                    };
                    let (mut parts, body) = req.into_parts();
                    parts.extensions.insert(ConnectInfo(peer));
                    let body = TimeoutBody {
                        inner: body,
                        deadline: Box::pin(tokio::time::sleep(total)),
                        total,
                        stall: limits.header_timeout,
                        stall_timer: Box::pin(tokio::time::sleep(limits.header_timeout)),
                    };
                    let req = axum::http::Request::from_parts(parts, axum::body::Body::new(body));
                    let mut router = router;
                    let resp = match tower_service::Service::call(&mut router, req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    // A login on this connection makes it the phone's.
                    if logs_in(&resp) {
                        conn.authed.store(true, Ordering::Relaxed);
                    }
                    if resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
                        conn.upgraded.store(true, Ordering::Relaxed);
                    }
                    let resp = resp.map(|b| {
                        axum::body::Body::new(TrackedBody {
                            inner: b,
                            _in_flight: in_flight,
                        })
                    });
                    Ok::<_, Infallible>(resp)
                }
            });
            match tls {
                Some(acc) => {
                    let hs = tokio::select! {
                        r = tokio::time::timeout(limits.header_timeout, acc.accept(io)) => r,
                        _ = conn.close.notified() => return,
                    };
                    match hs {
                        Ok(Ok(stream)) => drive(&builder, stream, svc, &conn, shutdown).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                }
                None => drive(&builder, io, svc, &conn, shutdown).await,
            }
        });
    }
    drop(listener);
    // Give requests in flight a moment, as a graceful shutdown would.
    let t0 = Instant::now();
    while table.stats().open > 0 && t0.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reaper.abort();
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

async fn drive<I, S>(
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    io: I,
    svc: S,
    conn: &Conn,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            axum::http::Request<Incoming>,
            Response = axum::http::Response<axum::body::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let c = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(c);
    tokio::select! {
        _ = c.as_mut() => {}
        // Closed to make room or by a timeout: drop the socket now.
        _ = conn.close.notified() => {}
        _ = stopped(&mut shutdown) => {
            c.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_millis(500), c).await;
        }
    }
}
