//! Linux sysfs PWM, as on the stock DeepRacer board (`/sys/class/pwm`).
//!
//! Open: find the `pwmchipN` whose resolved `device` link contains
//! `chip_match`, export the two channels, set period, neutral duty, enable,
//! then (optionally) switch on the servo power gate GPIO. The write path
//! keeps each channel's `duty_cycle` open and `pwrite`s the decimal value at
//! offset 0: no open, no allocation, no sleep, and no write at all when the
//! value is unchanged.
//!
//! Ordering constraint of real sysfs PWM: the kernel rejects a `period`
//! shorter than the current `duty_cycle` and a `duty_cycle` longer than the
//! current `period`. Open therefore lowers the duty first when the old duty
//! would not fit the new period, then writes the period, then the duty.

use crate::calibration::Calibration;
use crate::config::SysfsConfig;
use crate::{Actuator, ActuatorError, EmergencyNeutral, Pulses};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long open waits for the kernel (and udev) to create an exported
/// channel or GPIO directory. Open may sleep; the write path never does.
const EXPORT_WAIT: Duration = Duration::from_secs(2);

const PERMISSION_HINT: &str = "permission denied; the car-runtime package installs the udev rule \
/lib/udev/rules.d/60-car-runtime.rules that gives group `gpio` write access to the PWM and GPIO \
files: check it is there (`udevadm control --reload && udevadm trigger`, or reboot) and that the \
service user is in group `gpio`; or run as root (see docs/CALIBRATION.md)";

/// Why the sysfs backend could not open; Display says what to check.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// No pwmchip matched `chip_match`: wrong value for this board, or the PWM
    /// driver is not loaded. The message lists what was found.
    #[error("no pwmchip under {} has a device path containing {chip_match:?}; found: {}",
        pwm_dir.display(), describe_found(found))]
    NoChip {
        /// The directory searched (`<root>/class/pwm`).
        pwm_dir: PathBuf,
        /// The configured `chip_match`.
        chip_match: String,
        /// (pwmchip name, resolved device path or the error resolving it)
        found: Vec<(String, String)>,
    },
    /// Writing a PWM or GPIO file was refused (EACCES/EPERM): the udev rule
    /// or the `gpio` group membership is missing.
    #[error("{}: {PERMISSION_HINT}", path.display())]
    Permission {
        /// The file that was refused.
        path: PathBuf,
    },
    /// Any other I/O error on a sysfs file (e.g. `EINVAL` for a period the
    /// chip cannot make).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A channel or GPIO was exported but its directory did not appear within
    /// 2 s.
    #[error("{}: wrote {index} to export but {} did not appear within {EXPORT_WAIT:?}", export.display(), dir.display())]
    ExportTimeout {
        /// The `export` file written.
        export: PathBuf,
        /// The channel or GPIO number written to it.
        index: u32,
        /// The directory that never appeared.
        dir: PathBuf,
    },
}

fn describe_found(found: &[(String, String)]) -> String {
    if found.is_empty() {
        "no pwmchip at all (is the PWM driver loaded?)".into()
    } else {
        found
            .iter()
            .map(|(n, d)| format!("{n} -> {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) fn io_err(path: &Path, source: io::Error) -> SysfsError {
    if matches!(
        source.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM)
    ) {
        SysfsError::Permission {
            path: path.to_path_buf(),
        }
    } else {
        SysfsError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Write a whole attribute the slow, simple way (open paths only).
pub(crate) fn write_attr(path: &Path, value: &str) -> Result<(), SysfsError> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|f| {
            use std::io::Write;
            (&f).write_all(value.as_bytes())
        })
        .map_err(|e| io_err(path, e))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + EXPORT_WAIT;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

const UNKNOWN: u32 = u32::MAX;

/// An open `duty_cycle` attribute written with `pwrite` at offset 0.
pub(crate) struct DutyFile {
    file: File,
    path: PathBuf,
    /// Not on sysfs (a test tree): a regular file keeps old trailing bytes
    /// after a shorter pwrite, so it also needs a truncate. Real sysfs takes
    /// each write whole and gets only the pwrite.
    emulated: bool,
    last: u32,
}

impl DutyFile {
    pub(crate) fn open(path: PathBuf) -> Result<Self, SysfsError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(DutyFile {
            emulated: !is_sysfs(&file),
            file,
            path,
            last: UNKNOWN,
        })
    }

    #[inline]
    pub(crate) fn write(&mut self, ns: u32) -> Result<(), ActuatorError> {
        if ns == self.last {
            return Ok(());
        }
        let mut buf = [0u8; 10];
        let digits = format_u32(ns, &mut buf);
        let r = self.file.write_at(digits, 0).and_then(|n| {
            if n != digits.len() {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
            }
            if self.emulated {
                self.file.set_len(digits.len() as u64)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                self.last = ns;
                Ok(())
            }
            Err(e) => {
                self.last = UNKNOWN;
                Err(ActuatorError::io(self.path.display(), e))
            }
        }
    }

    pub(crate) fn forget(&mut self) {
        self.last = UNKNOWN;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Both attributes opened once more for the signal-safe neutral table
    /// (descriptors of its own: the control thread's stay untouched).
    pub(crate) fn raw_pair(&self, steering: &DutyFile) -> Option<crate::failsafe::raw::RawTarget> {
        let open = |p: &Path| OpenOptions::new().write(true).open(p).ok();
        Some(crate::failsafe::raw::RawTarget::DutyFiles {
            throttle: open(&self.path)?.into(),
            steering: open(&steering.path)?.into(),
            truncate: self.emulated,
        })
    }
}

// The field and constant types differ between libc targets, hence the casts.
#[allow(clippy::unnecessary_cast)]
fn is_sysfs(file: &File) -> bool {
    // SAFETY: fstatfs fills the zeroed struct we own; the fd is valid for
    // the lifetime of `file`.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::fstatfs(file.as_raw_fd(), &mut st) == 0
            && st.f_type as i64 == libc::SYSFS_MAGIC as i64
    }
}

/// Decimal digits of `v` into `buf`, without allocating.
#[inline]
pub(crate) fn format_u32(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Find the pwmchip directory whose resolved `device` path contains
/// `chip_match`.
pub fn find_chip(root: &Path, chip_match: &str) -> Result<PathBuf, SysfsError> {
    let pwm_dir = root.join("class/pwm");
    let entries = fs::read_dir(&pwm_dir).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            SysfsError::NoChip {
                pwm_dir: pwm_dir.clone(),
                chip_match: chip_match.to_string(),
                found: Vec::new(),
            }
        } else {
            io_err(&pwm_dir, e)
        }
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pwmchip"))
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let chip = pwm_dir.join(&name);
        match fs::canonicalize(chip.join("device")) {
            Ok(dev) => {
                let dev_s = dev.to_string_lossy().into_owned();
                if dev_s.contains(chip_match) {
                    return Ok(chip);
                }
                found.push((name, dev_s));
            }
            Err(e) => found.push((name, format!("(no device link: {e})"))),
        }
    }
    Err(SysfsError::NoChip {
        pwm_dir,
        chip_match: chip_match.to_string(),
        found,
    })
}

/// Export `index` under `parent` (writing it to `parent/export`) unless
/// `parent/<prefix><index>` exists; returns that directory.
pub(crate) fn export(
    parent: &Path,
    prefix: &str,
    index: u32,
    probe: &str,
) -> Result<PathBuf, SysfsError> {
    let dir = parent.join(format!("{prefix}{index}"));
    if dir.exists() {
        return Ok(dir);
    }
    let export = parent.join("export");
    write_attr(&export, &index.to_string())?;
    if !wait_for(&dir) {
        return Err(SysfsError::ExportTimeout { export, index, dir });
    }
    // udev fixes the new files' group a moment after they appear; give it
    // the same window before the first write turns into "permission denied".
    let probe = dir.join(probe);
    if let Ok(c) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) {
        let deadline = Instant::now() + EXPORT_WAIT;
        // SAFETY: access() only reads the NUL-terminated path.
        while unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(dir)
}

/// The writes needed before the final `duty_cycle` write, in order, given
/// what the channel holds now. The kernel rejects a period below the
/// current duty and a duty above the current period, so when the old duty
/// would not fit the new period it is lowered first (to the new duty if the
/// old period allows it, else to 0); the period is written only if it
/// differs.
pub fn pre_duty_writes(
    old_period: u64,
    old_duty: u64,
    period_ns: u32,
    duty_ns: u32,
) -> Vec<(&'static str, u64)> {
    let mut steps = Vec::new();
    if old_duty > period_ns as u64 {
        let interim = if duty_ns as u64 <= old_period {
            duty_ns as u64
        } else {
            0
        };
        steps.push(("duty_cycle", interim));
    }
    if old_period != period_ns as u64 {
        steps.push(("period", period_ns as u64));
    }
    steps
}

/// Bring one exported PWM channel to `period_ns` with `duty_ns`, honouring
/// the kernel's duty <= period rule, and enable it. Returns the open duty file.
pub(crate) fn setup_channel(
    chan: &Path,
    period_ns: u32,
    duty_ns: u32,
) -> Result<DutyFile, SysfsError> {
    let period_path = chan.join("period");
    let duty_path = chan.join("duty_cycle");
    let old_period = read_u64(&period_path).unwrap_or(0);
    let old_duty = read_u64(&duty_path).unwrap_or(0);
    for (attr, value) in pre_duty_writes(old_period, old_duty, period_ns, duty_ns) {
        write_attr(&chan.join(attr), &value.to_string())?;
    }
    let mut duty = DutyFile::open(duty_path)?;
    duty.write(duty_ns).map_err(|e| match e {
        ActuatorError::Io { path, source } => io_err(Path::new(&path), source),
        other => SysfsError::Io {
            path: chan.join("duty_cycle"),
            source: io::Error::other(other.to_string()),
        },
    })?;
    write_attr(&chan.join("enable"), "1")?;
    Ok(duty)
}

/// The sysfs PWM backend.
pub struct SysfsPwm {
    throttle: DutyFile,
    steering: DutyFile,
    throttle_period: PathBuf,
    steering_period: PathBuf,
    period_ns: u32,
}

impl SysfsPwm {
    /// Open per the `[actuator.sysfs]` table, put `cal`'s neutral on both
    /// channels and switch on the power gate if one is configured.
    pub fn open(cfg: &SysfsConfig, cal: &Calibration) -> Result<Self, SysfsError> {
        let chip = find_chip(&cfg.root, &cfg.chip_match)?;
        let t_dir = export(&chip, "pwm", cfg.throttle_channel, "duty_cycle")?;
        let s_dir = export(&chip, "pwm", cfg.steering_channel, "duty_cycle")?;
        let throttle = setup_channel(&t_dir, cal.period_ns, cal.throttle.mid)?;
        let steering = setup_channel(&s_dir, cal.period_ns, cal.steering.mid)?;
        if let Some(gpio) = cfg.power_gate_gpio {
            // After the PWM: the servo and ESC get a valid neutral pulse the
            // moment they are powered.
            let gpio_dir = export(&cfg.root.join("class/gpio"), "gpio", gpio, "value")?;
            write_attr(&gpio_dir.join("direction"), "out")?;
            write_attr(&gpio_dir.join("value"), "0")?;
        }
        Ok(SysfsPwm {
            throttle,
            steering,
            throttle_period: t_dir.join("period"),
            steering_period: s_dir.join("period"),
            period_ns: cal.period_ns,
        })
    }

    /// Paths of the two `duty_cycle` files (throttle, steering).
    pub fn duty_paths(&self) -> (&Path, &Path) {
        (self.throttle.path(), self.steering.path())
    }
}

impl Actuator for SysfsPwm {
    #[inline]
    fn write(&mut self, pulses: Pulses) -> Result<(), ActuatorError> {
        self.throttle.write(pulses.throttle_ns)?;
        self.steering.write(pulses.steering_ns)
    }

    fn backend(&self) -> &'static str {
        "sysfs"
    }

    fn emergency_neutral(&self) -> Option<EmergencyNeutral> {
        let t = self.throttle.path().to_path_buf();
        let s = self.steering.path().to_path_buf();
        Some(Arc::new(move |p: Pulses| {
            // Re-open: independent of the control thread's descriptors.
            let rt = write_attr(&t, &p.throttle_ns.to_string());
            let rs = write_attr(&s, &p.steering_ns.to_string());
            rt.and(rs).map_err(|e| ActuatorError::Other(e.to_string()))
        }))
    }

    fn calibration_changed(&mut self, cal: &Calibration) -> Result<(), ActuatorError> {
        if cal.period_ns != self.period_ns {
            // Every valid duty (<= 2.5 ms) fits every valid period (>= 3 ms),
            // so the period can be written directly.
            for p in [&self.throttle_period, &self.steering_period] {
                write_attr(p, &cal.period_ns.to_string())
                    .map_err(|e| ActuatorError::Other(e.to_string()))?;
            }
            self.period_ns = cal.period_ns;
        }
        Ok(())
    }

    fn forget_cache(&mut self) {
        self.throttle.forget();
        self.steering.forget();
    }

    fn raw_target(&self) -> Option<crate::failsafe::raw::RawTarget> {
        self.throttle.raw_pair(&self.steering)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duty_is_lowered_before_a_shorter_period() {
        // Fresh channel: period only.
        assert_eq!(
            pre_duty_writes(0, 0, 20_000_000, 1_450_000),
            vec![("period", 20_000_000)]
        );
        // Already set up: nothing before the duty write.
        assert!(pre_duty_writes(20_000_000, 1_700_000, 20_000_000, 1_450_000).is_empty());
        // Old 30 ms period with a 25 ms duty: the duty must come down first.
        assert_eq!(
            pre_duty_writes(30_000_000, 25_000_000, 20_000_000, 1_450_000),
            vec![("duty_cycle", 1_450_000), ("period", 20_000_000)]
        );
        // Old period too short even for the new duty: go through 0.
        assert_eq!(
            pre_duty_writes(1_000_000, 25_000_000, 20_000_000, 1_450_000),
            vec![("duty_cycle", 0), ("period", 20_000_000)]
        );
        // Longer new period: period first is fine, the duty comes after.
        assert_eq!(
            pre_duty_writes(10_000_000, 1_500_000, 20_000_000, 1_450_000),
            vec![("period", 20_000_000)]
        );
    }

    #[test]
    fn formats_without_allocating() {
        let mut b = [0u8; 10];
        assert_eq!(format_u32(0, &mut b), b"0");
        assert_eq!(format_u32(1_450_000, &mut b), b"1450000");
        assert_eq!(format_u32(u32::MAX, &mut b), b"4294967295");
    }
}
