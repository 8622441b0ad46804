//! systemd readiness and watchdog notifications (`sd_notify`), written by
//! hand: one datagram to the unix socket named in `NOTIFY_SOCKET`.
//!
//! `WATCHDOG=1` is sent from the control loop itself, so a hung loop stops
//! feeding the watchdog and systemd restarts the service (and runs
//! `ExecStopPost=car-runtime neutral`).

use std::os::unix::net::UnixDatagram;

/// A handle on systemd's notification socket. Sends never block.
pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// Send WATCHDOG=1 at most this often (half of WATCHDOG_USEC when set).
    pub watchdog_interval_ns: u64,
    last_watchdog_ns: u64,
}

impl Notifier {
    /// From the environment; None when not run by systemd with `Type=notify`.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy().into_owned();
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
        };
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        let watchdog_interval_ns = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|us| us * 1000 / 2)
            .unwrap_or(1_000_000_000);
        Some(Notifier {
            sock,
            addr,
            watchdog_interval_ns,
            last_watchdog_ns: 0,
        })
    }

    /// Send one raw notification (`READY=1`, `STATUS=...`); fails if the socket
    /// is gone or its queue is full.
    pub fn send(&self, msg: &str) -> std::io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }

    /// Tell systemd start-up is done (`READY=1`); a failure is logged, not returned.
    pub fn ready(&self) {
        if let Err(e) = self.send("READY=1") {
            tracing::warn!(error = %e, "sd_notify READY=1 failed");
        }
    }

    /// From the loop, each tick; sends at most once per interval. No allocation.
    pub fn watchdog(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_watchdog_ns) >= self.watchdog_interval_ns {
            self.last_watchdog_ns = now_ns;
            let _ = self.send("WATCHDOG=1");
        }
    }

    /// Tell systemd the service is stopping (`STOPPING=1`); errors are ignored.
    pub fn stopping(&self) {
        let _ = self.send("STOPPING=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_and_rate_limited_watchdog_to_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let mut n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            watchdog_interval_ns: 1_000,
            last_watchdog_ns: 0,
        };
        n.ready();
        n.watchdog(5_000);
        n.watchdog(5_500); // within the interval: not sent
        n.watchdog(7_000);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(len) = server.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(got, vec!["READY=1", "WATCHDOG=1", "WATCHDOG=1"]);
    }
}
