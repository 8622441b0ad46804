//! Password, sessions, CSRF tokens and login rate limiting.
//!
//! The password is stored only as an argon2 PHC string in
//! `<state_dir>/password.argon2` (mode 0600). A password generated at first
//! start is also written once to `<state_dir>/initial-password` (0600) so the
//! owner can read it as root; changing the password deletes that file.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Secrets and the race history: [`safe_io::atomic::write_private`].
pub(crate) fn write_private_atomic(path: &Path, data: &[u8]) -> Result<(), AuthError> {
    safe_io::atomic::write_private(path, data).map_err(io_err(path))
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

/// Addresses the login limiter remembers at most (bounded memory).
pub const LIMITER_CAPACITY: usize = 4096;

/// Login attempts per client address in a sliding window.
///
/// An attempt is counted when it starts ([`LoginLimiter::begin`]), before
/// the password is checked, and un-counted only by a success. So concurrent
/// wrong passwords from one address cannot all pass the check before any of
/// them is recorded, and a request dropped halfway (client gone, task
/// cancelled) still counts.
///
/// The table holds at most [`LIMITER_CAPACITY`] addresses. It never forgets
/// an address whose window is still open to make room: when it is full of
/// live entries, addresses not in it share one overflow budget of `max`
/// attempts per window. Many addresses thus cannot reset the count of
/// another; during such a flood, new addresses are throttled together,
/// which is the price of bounded memory.
pub struct LoginLimiter {
    table: Mutex<LimiterTable>,
    max: u32,
    window: Duration,
    capacity: usize,
}

struct LimiterTable {
    map: HashMap<IpAddr, VecDeque<Instant>>,
    overflow: VecDeque<Instant>,
}

/// Which budget an attempt was counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Addr(IpAddr),
    Overflow,
}

/// A counted login attempt. Dropping it leaves it counted as a failure;
/// [`LoginAttempt::succeed`] clears the address's count.
pub struct LoginAttempt<'a> {
    limiter: &'a LoginLimiter,
    slot: Slot,
    at: Instant,
}

impl LoginAttempt<'_> {
    /// The password was never checked (server busy): un-count this attempt
    /// only.
    pub fn release(self) {
        let mut t = self.limiter.lock();
        let v = match self.slot {
            Slot::Addr(k) => t.map.get_mut(&k),
            Slot::Overflow => Some(&mut t.overflow),
        };
        if let Some(v) = v {
            if let Some(i) = v.iter().rposition(|x| *x == self.at) {
                v.remove(i);
            }
        }
    }

    /// The right password: the address starts over.
    pub fn succeed(self) {
        let mut t = self.limiter.lock();
        match self.slot {
            Slot::Addr(k) => {
                t.map.remove(&k);
            }
            Slot::Overflow => {
                if let Some(i) = t.overflow.iter().position(|x| *x == self.at) {
                    t.overflow.remove(i);
                }
            }
        }
    }
}

/// One IPv6 host usually owns a whole /64, so it counts as one address.
fn limiter_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl LoginLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self::with_capacity(max, window, LIMITER_CAPACITY)
    }

    pub fn with_capacity(max: u32, window: Duration, capacity: usize) -> Self {
        LoginLimiter {
            table: Mutex::new(LimiterTable {
                map: HashMap::new(),
                overflow: VecDeque::new(),
            }),
            max: max.max(1),
            window,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count an attempt from `ip`, or `Err(retry_after)` when this address
    /// (or, while the table is full, the overflow budget) has none left.
    pub fn begin(&self, ip: IpAddr) -> Result<LoginAttempt<'_>, Duration> {
        let now = Instant::now();
        let window = self.window;
        let live = |t: &Instant| now.duration_since(*t) < window;
        let mut t = self.lock();
        let key = limiter_key(ip);
        if !t.map.contains_key(&key) && t.map.len() >= self.capacity {
            // Only when full: forget addresses whose window has closed.
            t.map.retain(|_, v| v.back().is_some_and(live));
        }
        let slot = if t.map.contains_key(&key) || t.map.len() < self.capacity {
            Slot::Addr(key)
        } else {
            Slot::Overflow
        };
        let max = self.max as usize;
        let v = match slot {
            Slot::Addr(k) => t.map.entry(k).or_default(),
            Slot::Overflow => &mut t.overflow,
        };
        while v.front().is_some_and(|x| !live(x)) {
            v.pop_front();
        }
        if v.len() >= max {
            let oldest = v[0];
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        v.push_back(now);
        Ok(LoginAttempt {
            limiter: self,
            slot,
            at: now,
        })
    }

    /// Attempts still counted against `ip` (tests, logs).
    pub fn attempts(&self, ip: IpAddr) -> usize {
        let now = Instant::now();
        self.lock()
            .map
            .get(&limiter_key(ip))
            .map(|v| {
                v.iter()
                    .filter(|t| now.duration_since(**t) < self.window)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Addresses in the table (never more than the capacity).
    pub fn tracked(&self) -> usize {
        self.lock().map.len()
    }
}

/// The password check is refused because too many are running or waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("too many password checks at once; try again in a moment")]
    Busy,
    #[error("password check failed: {0}")]
    Internal(String),
}

/// Bounds the argon2 work (memory: ~19 MiB each; CPU) the server does at
/// once, whoever asks: at most `concurrency` checks run, at most `queue`
/// wait, the rest are refused at once.
pub struct Argon2Gate(std::sync::Arc<GateInner>);

struct GateInner {
    sem: std::sync::Arc<tokio::sync::Semaphore>,
    queue: usize,
    waiting: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicU64,
}

struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Argon2Gate {
    pub fn new(concurrency: usize, queue: usize) -> Self {
        Argon2Gate(std::sync::Arc::new(GateInner {
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            queue,
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            runs: AtomicU64::new(0),
        }))
    }

    /// Run `f` (argon2 work) on a blocking thread once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateError> {
        let g = &self.0;
        let permit = match g.sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if g.waiting.fetch_add(1, Ordering::SeqCst) >= g.queue {
                    g.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(GateError::Busy);
                }
                let _w = Waiting(&g.waiting);
                g.sem
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| GateError::Internal(e.to_string()))?
            }
        };
        let inner = self.0.clone();
        // The permit moves into the blocking task: if the request is
        // cancelled (client gone), the slot stays taken until argon2 is
        // really done, so cancelled requests cannot pile up work.
        tokio::task::spawn_blocking(move || {
            let n = inner.running.fetch_add(1, Ordering::SeqCst) + 1;
            inner.peak.fetch_max(n, Ordering::SeqCst);
            inner.runs.fetch_add(1, Ordering::SeqCst);
            let out = f();
            inner.running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            out
        })
        .await
        .map_err(|e| GateError::Internal(e.to_string()))
    }

    /// Argon2 runs started so far.
    pub fn runs(&self) -> u64 {
        self.0.runs.load(Ordering::SeqCst)
    }

    /// The most argon2 runs ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.0.peak.load(Ordering::SeqCst)
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
