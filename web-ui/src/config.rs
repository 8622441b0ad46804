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
