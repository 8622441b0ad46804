//! Password, sessions, CSRF tokens and login rate limiting.
//!
//! The password is stored only as an argon2 PHC string in
//! `<state_dir>/password.argon2` (mode 0600). A password generated at first
//! start is also written once to `<state_dir>/initial-password` (0600) so the
//! owner can read it as root; changing the password deletes that file.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const HASH_FILE: &str = "password.argon2";
pub const INITIAL_PASSWORD_FILE: &str = "initial-password";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an argon2 password hash: {reason}")]
    BadHash { path: PathBuf, reason: String },
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("new password: {0}")]
    WeakPassword(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generate a password if none is set yet. Returns `Some(password)` only
/// when it made a new one: print it once. Creates `state_dir` (0700).
pub fn ensure_password(state_dir: &Path) -> Result<Option<String>, AuthError> {
    create_private_dir(state_dir)?;
    let hash_path = state_dir.join(HASH_FILE);
    if hash_path.exists() {
        // Refuse to run with a corrupt hash rather than silently replacing it.
        load_hash(state_dir)?;
        return Ok(None);
    }
    let password = generate_password();
    let phc = hash_password(&password)?;
    write_private_atomic(
        &state_dir.join(INITIAL_PASSWORD_FILE),
        format!("{password}\n").as_bytes(),
    )?;
    write_private_atomic(&hash_path, phc.as_bytes())?;
    Ok(Some(password))
}

/// Read the stored PHC string and check it parses as argon2.
pub fn load_hash(state_dir: &Path) -> Result<String, AuthError> {
    let path = state_dir.join(HASH_FILE);
    let s = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let s = s.trim().to_string();
    let parsed = PasswordHash::new(&s).map_err(|e| AuthError::BadHash {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(AuthError::BadHash {
            path,
            reason: format!("algorithm {} is not argon2", parsed.algorithm),
        });
    }
    Ok(s)
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Constant-time (argon2) check of `password` against a PHC string.
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Replace the password: store the new hash, delete the initial-password file.
pub fn set_password(state_dir: &Path, new_password: &str) -> Result<String, AuthError> {
    if new_password.chars().count() < 8 {
        return Err(AuthError::WeakPassword(
            "must be at least 8 characters".into(),
        ));
    }
    if new_password.len() > 256 {
        return Err(AuthError::WeakPassword("must be at most 256 bytes".into()));
    }
    let phc = hash_password(new_password)?;
    write_private_atomic(&state_dir.join(HASH_FILE), phc.as_bytes())?;
    let initial = state_dir.join(INITIAL_PASSWORD_FILE);
    match std::fs::remove_file(&initial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&initial)(e)),
    }
    Ok(phc)
}

/// Four groups of four from an alphabet without look-alikes (0/O, 1/l/I):
/// about 80 bits, and easy to type on a phone.
fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let mut s = String::with_capacity(19);
    for i in 0..16 {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    s
}

/// 32 random bytes, URL-safe base64: session ids and CSRF tokens.
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), AuthError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// Temp file (0600 from creation), fsync, rename, fsync the directory.
pub(crate) fn write_private_atomic(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    #[cfg(unix)]
    {
        // `mode` is masked by the umask and ignored for an existing file.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&tmp))?;
    }
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// In-memory sessions (a restart logs everyone out, which is fine on a car).
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    idle: Duration,
}

impl Sessions {
    pub fn new(ttl: Duration, idle: Duration) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
            idle,
        }
    }

    /// Returns (session id, csrf token).
    pub fn create(&self) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, s| !self.expired(s, now));
        // Bound memory: a car has a handful of phones, not thousands.
        if m.len() >= 256 {
            let oldest = m
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                m.remove(&oldest);
            }
        }
        m.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                created: now,
                last_seen: now,
            },
        );
        (id, csrf)
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.created) > self.ttl || now.duration_since(s.last_seen) > self.idle
    }

    /// Look up and touch a session; `None` when unknown or expired.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let expired = match m.get(id) {
            None => return None,
            Some(s) => self.expired(s, now),
        };
        if expired {
            m.remove(id);
            return None;
        }
        let s = m.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Log out every session but `keep` (after a password change).
    pub fn remove_all_except(&self, keep: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k == keep);
    }
}

/// Failed logins per client address in a sliding window.
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    max: u32,
    window: Duration,
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        LoginLimiter {
            failures: Mutex::new(HashMap::new()),
            max,
            window,
        }
    }

    /// `Err(retry_after)` when this address must wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let v = m.entry(ip).or_default();
        v.retain(|t| now.duration_since(*t) < self.window);
        if v.len() as u32 >= self.max {
            let oldest = v[0];
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    pub fn fail(&self, ip: IpAddr) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 4096 {
            m.clear();
        }
        m.entry(ip).or_default().push(Instant::now());
    }

    pub fn succeed(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

/// Compare secrets without an early exit on the first differing byte.
pub fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
