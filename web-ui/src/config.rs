//! The `[web]` table of the daemon's config file.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[web]` in the daemon's TOML config. Every key is optional.
///
/// ```toml
/// [web]
/// address = "0.0.0.0:8443"   # default "127.0.0.1:8080"
/// tls = true                 # default: off on a loopback address, on otherwise
/// state_dir = "/var/lib/car-runtime/web"
/// models_dir = "/var/lib/car-runtime/models"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Listen address, `host:port`.
    pub address: String,
    /// Serve HTTPS with a self-signed certificate made on first start.
    /// Unset: off when `address` is loopback (the localhost simulation), on
    /// otherwise (a real car on its Wi-Fi). See [`WebConfig::tls_enabled`].
    pub tls: Option<bool>,
    /// Password hash, sessions' secret, race history, TLS certificate.
    /// Unset: `/var/lib/car-runtime/web` when writable (root), else
    /// `$XDG_STATE_HOME/car-runtime/web` or `~/.local/state/car-runtime/web`.
    pub state_dir: Option<PathBuf>,
    /// Where uploaded models are installed, one folder each.
    /// Unset: `<state_dir>/models`.
    pub models_dir: Option<PathBuf>,
    /// PEM certificate and key to use instead of the generated self-signed
    /// pair (both or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A session expires this long after login.
    pub session_ttl_s: u64,
    /// An idle session expires this long after its last request.
    pub session_idle_s: u64,
    /// Failed logins allowed per client address per `login_window_s`.
    pub login_max_failures: u32,
    pub login_window_s: u64,
    /// Largest upload accepted (a model), bytes.
    pub max_upload_bytes: u64,
    /// Camera stream frame rate cap per client.
    pub camera_fps: u32,

    // Limits that keep the server reachable (and the e-stop with it) when
    // some clients are slow, idle or hostile. All added later than the keys
    // above; every one has a default, so older config files stay valid.
    /// Open connections at most (TCP, including WebSockets). When full, a
    /// new connection closes the oldest one that never carried a valid
    /// session cookie; connections of logged-in users are never closed to
    /// make room. Size `LimitNOFILE` in the systemd unit above it.
    pub max_connections: usize,
    /// A new connection (TLS handshake included) must deliver its first
    /// request's headers within this many seconds; so must every request's
    /// headers once started.
    pub header_timeout_s: f64,
    /// A keep-alive connection with no request in flight is closed after
    /// this many seconds.
    pub idle_timeout_s: f64,
    /// A request body (other than a model upload) must arrive in full
    /// within this many seconds.
    pub body_timeout_s: f64,
    /// A model upload's body must arrive in full within this many seconds,
    /// and never stall for longer than `header_timeout_s` between chunks.
    pub upload_timeout_s: f64,
    /// A WebSocket whose peer sends nothing (not even the pong to our ping)
    /// for this many seconds, or that cannot take a message for as long, is
    /// closed.
    pub ws_idle_timeout_s: f64,
    /// Drive WebSockets open at once (each phone needs one).
    pub max_drive_sockets: usize,
    /// Messages per second one drive WebSocket may send (the phone sends
    /// 20); the excess is dropped, never queued for the car.
    pub drive_max_msgs_per_s: u32,
    /// Password checks (argon2, about 19 MiB and tens of milliseconds
    /// each) running at once.
    pub argon2_concurrency: usize,
    /// Password checks allowed to wait for one of those; more get 429.
    pub argon2_queue: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            address: "127.0.0.1:8080".into(),
            tls: None,
            state_dir: None,
            models_dir: None,
            tls_cert: None,
            tls_key: None,
            session_ttl_s: 12 * 3600,
            session_idle_s: 2 * 3600,
            login_max_failures: 5,
            login_window_s: 60,
            max_upload_bytes: 64 * 1024 * 1024,
            camera_fps: 15,
            max_connections: 512,
            header_timeout_s: 10.0,
            idle_timeout_s: 30.0,
            body_timeout_s: 30.0,
            upload_timeout_s: 600.0,
            ws_idle_timeout_s: 30.0,
            max_drive_sockets: 4,
            drive_max_msgs_per_s: 100,
            argon2_concurrency: 2,
            argon2_queue: 8,
        }
    }
}

impl WebConfig {
    /// Whether to serve HTTPS: `tls` when set, else on unless the address is
    /// a loopback one.
    pub fn tls_enabled(&self) -> bool {
        match self.tls {
            Some(t) => t,
            None => !self
                .address
                .parse::<SocketAddr>()
                .map(|a| a.ip().is_loopback())
                .unwrap_or_else(|_| self.address.starts_with("localhost:")),
        }
    }

    /// The state directory after defaults (not created).
    pub fn resolved_state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        let system = PathBuf::from("/var/lib/car-runtime");
        if dir_writable(&system) || (!system.exists() && dir_writable(&PathBuf::from("/var/lib"))) {
            return system.join("web");
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("car-runtime/web")
    }

    pub(crate) fn secs(v: f64) -> std::time::Duration {
        // A bad value (negative, NaN) must not panic the server: it means
        // "as short as possible", which fails safe.
        std::time::Duration::try_from_secs_f64(v).unwrap_or(std::time::Duration::from_millis(1))
    }

    pub fn resolved_models_dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(|| self.resolved_state_dir().join("models"))
    }
}

fn dir_writable(p: &std::path::Path) -> bool {
    // Probing with a real file is the only check that also covers read-only
    // mounts and ACLs.
    let probe = p.join(format!(".web-ui-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}
