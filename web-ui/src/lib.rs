//! The web UI: an axum server with embedded phone-first pages.
//!
//! Owns: HTTP(S), login and sessions, CSRF, TLS, pages and assets, model
//! uploads (staging, safe extraction, install into the models folder), race
//! timing and its history.
//!
//! Must not: hold anything the control loop waits on. It reaches the car only
//! through the [`CarApi`] trait the daemon implements over its bounded queues
//! and ring buffers; a slow client loses frames, it never queues them.
//!
//! The daemon calls [`start`] (own thread, own tokio runtime) with the
//! `[web]` table ([`WebConfig`]) and an `Arc<dyn CarApi>`.

pub mod api;
pub mod assets;
pub mod auth;
pub mod camera;
pub mod config;
pub mod conn;
pub mod models;
pub mod race;
pub mod server;
pub mod tls;

pub use api::*;
pub use config::WebConfig;
pub use server::{router, AppState};

use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("[web] address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("web server: {0}")]
    Server(String),
}

/// A running web server. Dropping it shuts the server down and joins its
/// thread (within about a second: open WebSockets are closed).
pub struct WebHandle {
    addr: SocketAddr,
    tls: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    conns: Arc<conn::ConnTable>,
}

impl WebHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:8080/` or `https://...`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}/",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Open connections and what the connection cap did so far.
    pub fn connections(&self) -> conn::ConnStats {
        self.conns.stats()
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WebHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prepare the state folder (password, certificate), bind the address and
/// serve on a new thread with its own two-worker tokio runtime. Errors
/// (address in use, unwritable state folder) come back before anything runs.
/// A password generated now is logged once at WARN level and written to
/// `<state_dir>/initial-password`.
pub fn start(config: WebConfig, api: Arc<dyn CarApi>) -> Result<WebHandle, WebError> {
    let state = AppState::new(config.clone(), api)?;
    let tls = config.tls_enabled();
    let rustls_config = if tls {
        Some(tls::server_config(&config, &state.state_dir)?)
    } else {
        None
    };
    let listener = std::net::TcpListener::bind(&config.address).map_err(|e| WebError::Address {
        address: config.address.clone(),
        reason: e.to_string(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| WebError::Server(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| WebError::Server(e.to_string()))?;
    let conns = conn::ConnTable::new(conn_limits(&config));
    let table = conns.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("web-ui")
        .on_thread_start(yield_to_control_loop)
        .enable_all()
        .build()
        .map_err(|e| WebError::Server(e.to_string()))?;
    let thread = std::thread::Builder::new()
        .name("web-ui-main".into())
        .spawn(move || {
            yield_to_control_loop();
            runtime.block_on(async move {
                if let Err(e) = serve_listener(listener, rustls_config, state, table, async {
                    let _ = rx.await;
                })
                .await
                {
                    tracing::error!("web server stopped: {e}");
                }
            });
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        })
        .map_err(|e| WebError::Server(e.to_string()))?;
    tracing::info!("web UI on {}://{addr}/", if tls { "https" } else { "http" });
    Ok(WebHandle {
        addr,
        tls,
        shutdown: Some(tx),
        thread: Some(thread),
        conns,
    })
}

/// Serve until `shutdown` resolves, on the caller's tokio runtime.
pub async fn serve(
    config: WebConfig,
    api: Arc<dyn CarApi>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let state = AppState::new(config.clone(), api)?;
    let rustls_config = if config.tls_enabled() {
        Some(tls::server_config(&config, &state.state_dir)?)
    } else {
        None
    };
    let listener = std::net::TcpListener::bind(&config.address).map_err(|e| WebError::Address {
        address: config.address.clone(),
        reason: e.to_string(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| WebError::Server(e.to_string()))?;
    let table = conn::ConnTable::new(conn_limits(&config));
    serve_listener(listener, rustls_config, state, table, shutdown).await
}

/// The connection limits from `[web]`, with the cap kept under the
/// process's open-file limit: past it `accept` fails and nobody, the phone
/// included, gets in. 64 descriptors stay for the daemon itself (camera,
/// PWM, I2C, logs, model and upload files).
fn conn_limits(config: &WebConfig) -> conn::ConnLimits {
    let mut max = config.max_connections.max(1);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
    {
        let room = (lim.rlim_cur as usize).saturating_sub(64).max(16);
        if room < max {
            tracing::warn!(
                "[web] max_connections {max} does not fit the open-file limit {}; using {room}",
                lim.rlim_cur
            );
            max = room;
        }
    }
    conn::ConnLimits {
        max_connections: max,
        header_timeout: WebConfig::secs(config.header_timeout_s),
        idle_timeout: WebConfig::secs(config.idle_timeout_s),
        body_timeout: WebConfig::secs(config.body_timeout_s),
        upload_timeout: WebConfig::secs(config.upload_timeout_s),
    }
}

async fn serve_listener(
    listener: std::net::TcpListener,
    rustls_config: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    table: Arc<conn::ConnTable>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| WebError::Server(e.to_string()))?;
    let stop = state.stop.clone();
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tx.send(true);
    });
    conn::serve(listener, rustls_config, app, state, table, rx).await;
    Ok(())
}

/// Every web UI thread runs at nice 10, so on a car's two or four cores a
/// burst of page loads or camera viewers loses the CPU to the control loop,
/// never the other way round. Raising one's own nice value needs no
/// privilege (the service has no capabilities). Linux: per-thread nice.
pub(crate) fn yield_to_control_loop() {
    // SAFETY: gettid and setpriority on the calling thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

#[cfg(test)]
mod priority_tests {
    #[test]
    fn web_threads_run_below_the_control_loop() {
        let (mine, other) = std::thread::spawn(|| {
            super::yield_to_control_loop();
            // SAFETY: reads the calling thread's nice value.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                (
                    libc::getpriority(libc::PRIO_PROCESS, tid),
                    libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t),
                )
            }
        })
        .join()
        .unwrap();
        assert_eq!(mine, 10, "the web thread is at nice 10");
        // The process (main thread: where the control thread comes from)
        // keeps its own priority.
        assert!(other < 10, "main thread nice {other}");
    }
}
