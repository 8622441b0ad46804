//! The stock DeepRacer's battery gauge: what the stock `battery_node` did
//! and `systemctl disable deepracer-core` switched off.
//!
//! The compute battery's charge is one byte in register 0x03 of an SMBus
//! device at 0x3f, on the I2C bus of the board's PCI function
//! `0000:00:17.3` (the bus number differs between boards and kernels, so it
//! is found through `/sys/class/i2c-dev/i2c-N`, whose link names the PCI
//! device). The byte maps to a level 0-11 by the board maker's table
//! ([`LEVELS`]); below the table's last entry the level is unknown.
//!
//! A [`BatteryMonitor`] thread reads it every `poll_seconds` (20 by
//! default) and stores the level in a [`BatteryState`] atomic, which the
//! web adapter reads. Never on the control thread: an I2C transfer can take
//! milliseconds, and a bus error must not touch the loop. A read that fails
//! makes the level unknown (the phone hides the figure, it never shows a
//! stale one as current) and the bus is opened again on the next poll.
//!
//! `[battery] backend = "none"` (the default, and what a Raspberry Pi
//! without a gauge wants) starts nothing and the phone shows no battery.
//!
//! Errors: "no I2C bus of the battery gauge" means no `/sys/class/i2c-dev`
//! link names `0000:00:17.3`: load `i2c-dev` (`modprobe i2c-dev`) or set
//! `[battery] bus`. A permission error opening `/dev/i2c-N`: run as root
//! (the packaged service does) or add the user to group `i2c`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servo_driver::pca9685::{LinuxI2c, SmbusDevice};

/// The gauge's PCI function on the stock board.
pub const GAUGE_PCI_DEVICE: &str = "0000:00:17.3";
/// The gauge's SMBus address.
pub const GAUGE_ADDRESS: u16 = 0x3f;
/// The register holding the charge byte.
pub const LEVEL_REGISTER: u8 = 0x03;
/// Highest level: a full battery.
pub const MAX_LEVEL: u8 = 11;

/// Charge byte -> level, the board maker's table as the stock software
/// uses it: the first entry whose byte the reading reaches gives the level.
pub const LEVELS: [(u8, u8); 12] = [
    (0xec, 11),
    (0xe0, 10),
    (0xd9, 9),
    (0xd3, 8),
    (0xcf, 7),
    (0xcb, 6),
    (0xc8, 5),
    (0xc5, 4),
    (0xc3, 3),
    (0xc0, 2),
    (0xb4, 1),
    (0x8c, 0),
];

/// The level for a charge byte; `None` below the table (no battery, a
/// gauge that is not answering sensibly).
pub fn level_from_byte(byte: u8) -> Option<u8> {
    LEVELS.iter().find(|(b, _)| byte >= *b).map(|&(_, l)| l)
}

/// Which gauge to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatteryBackend {
    /// No gauge: the phone shows no battery figure.
    #[default]
    None,
    /// The stock DeepRacer board's gauge.
    Deepracer,
}

/// The `[battery]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatteryConfig {
    /// `none` or `deepracer`.
    pub backend: BatteryBackend,
    /// `/dev/i2c-N` of the gauge; unset: found through `/sys/class/i2c-dev`.
    pub bus: Option<PathBuf>,
    /// How often the gauge is read, seconds (5-600).
    pub poll_seconds: u64,
    /// At or below this level (0-11) the phone warns that the battery is low.
    pub low_level: u8,
    /// Where `class/i2c-dev` is looked for (tests point it at a fake tree).
    pub sysfs_root: PathBuf,
}

impl Default for BatteryConfig {
    fn default() -> Self {
        BatteryConfig {
            backend: BatteryBackend::None,
            bus: None,
            poll_seconds: 20,
            low_level: 2,
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

impl BatteryConfig {
    /// Field checks: Err(key, what is wrong).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(5..=600).contains(&self.poll_seconds) {
            return Err((
                "battery.poll_seconds",
                format!("{} is not 5-600", self.poll_seconds),
            ));
        }
        if self.low_level > MAX_LEVEL {
            return Err((
                "battery.low_level",
                format!("{} is not 0-{MAX_LEVEL}", self.low_level),
            ));
        }
        Ok(())
    }
}

/// The gauge's bus: the `i2c-N` entry of `<sysfs_root>/class/i2c-dev`
/// whose link target names [`GAUGE_PCI_DEVICE`], as `/dev/i2c-N`.
pub fn find_gauge_bus(sysfs_root: &Path) -> Result<PathBuf, String> {
    let class = sysfs_root.join("class/i2c-dev");
    let rd = std::fs::read_dir(&class).map_err(|e| {
        format!(
            "no I2C bus of the battery gauge: {}: {e} (modprobe i2c-dev, or set [battery] bus)",
            class.display()
        )
    })?;
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|t| t.to_string_lossy().contains(GAUGE_PCI_DEVICE))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("i2c-")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    names.sort();
    match names.first() {
        Some(n) => Ok(PathBuf::from("/dev").join(n)),
        None => Err(format!(
            "no I2C bus of the battery gauge: no link in {} names {GAUGE_PCI_DEVICE} (set [battery] bus)",
            class.display()
        )),
    }
}

/// The last level read, shared with the web adapter.
#[derive(Debug)]
pub struct BatteryState {
    /// 0-11, or [`UNKNOWN`].
    level: AtomicU8,
    low_level: u8,
    /// Whether a gauge is configured at all.
    present: bool,
}

/// [`BatteryState`]'s level when there is none to show.
const UNKNOWN: u8 = u8::MAX;

impl BatteryState {
    /// No gauge configured: nothing is ever shown.
    pub fn absent() -> Arc<BatteryState> {
        Arc::new(BatteryState {
            level: AtomicU8::new(UNKNOWN),
            low_level: 0,
            present: false,
        })
    }

    fn new(low_level: u8) -> Arc<BatteryState> {
        Arc::new(BatteryState {
            level: AtomicU8::new(UNKNOWN),
            low_level,
            present: true,
        })
    }

    /// The last level read, 0-11; `None` before the first good read, after
    /// a failed one, or without a gauge.
    pub fn level(&self) -> Option<u8> {
        let l = self.level.load(Ordering::Relaxed);
        (self.present && l <= MAX_LEVEL).then_some(l)
    }

    /// The level as a percentage of full (level 11 = 100 %).
    pub fn percent(&self) -> Option<f32> {
        self.level()
            .map(|l| f32::from(l) * 100.0 / f32::from(MAX_LEVEL))
    }

    /// At or below the configured low level.
    pub fn low(&self) -> bool {
        self.level().is_some_and(|l| l <= self.low_level)
    }

    fn set(&self, level: Option<u8>) {
        self.level
            .store(level.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }
}

/// Opens the gauge's bus (a fresh handle after a failure).
pub type GaugeOpener = Box<dyn FnMut() -> std::io::Result<Box<dyn SmbusDevice>> + Send>;

/// The thread that reads the gauge. Dropping it stops the thread.
pub struct BatteryMonitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BatteryMonitor {
    /// Start reading the gauge `cfg` names; `(None, absent state)` for
    /// backend `none`. A missing bus is an error here, at start, so the
    /// racer reads it in the log at once rather than never seeing a level.
    pub fn start(
        cfg: &BatteryConfig,
    ) -> Result<(Option<BatteryMonitor>, Arc<BatteryState>), String> {
        cfg.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        if cfg.backend == BatteryBackend::None {
            return Ok((None, BatteryState::absent()));
        }
        let bus = match &cfg.bus {
            Some(b) => b.clone(),
            None => find_gauge_bus(&cfg.sysfs_root)?,
        };
        tracing::info!(bus = %bus.display(), "battery gauge");
        let opener: GaugeOpener = Box::new(move || {
            LinuxI2c::open(&bus, GAUGE_ADDRESS).map(|d| Box::new(d) as Box<dyn SmbusDevice>)
        });
        let state = BatteryState::new(cfg.low_level);
        let m = Self::with_opener(opener, Duration::from_secs(cfg.poll_seconds), state.clone())
            .map_err(|e| format!("battery: cannot start the monitor thread: {e}"))?;
        Ok((Some(m), state))
    }

    /// The monitor on any SMBus device (tests: an in-memory register file).
    pub fn with_opener(
        mut open: GaugeOpener,
        every: Duration,
        state: Arc<BatteryState>,
    ) -> std::io::Result<BatteryMonitor> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_t = stop.clone();
        let thread = std::thread::Builder::new()
            .name("battery".into())
            .spawn(move || {
                let mut dev: Option<Box<dyn SmbusDevice>> = None;
                let mut last_logged: Option<Option<u8>> = None;
                while !stop_t.load(Ordering::Relaxed) {
                    let level = read_level(&mut dev, &mut open);
                    state.set(level);
                    if last_logged != Some(level) {
                        match level {
                            Some(l) => tracing::info!(level = l, "battery level {l}/{MAX_LEVEL}"),
                            None => tracing::warn!("battery level unknown"),
                        }
                        last_logged = Some(level);
                    }
                    // Sleep in short steps so a stop is prompt.
                    let mut slept = Duration::ZERO;
                    while slept < every && !stop_t.load(Ordering::Relaxed) {
                        let step = Duration::from_millis(50).min(every - slept);
                        std::thread::sleep(step);
                        slept += step;
                    }
                }
            })?;
        Ok(BatteryMonitor {
            stop,
            thread: Some(thread),
        })
    }
}

/// One read; a failure drops the handle so the next poll reopens the bus.
fn read_level(dev: &mut Option<Box<dyn SmbusDevice>>, open: &mut GaugeOpener) -> Option<u8> {
    if dev.is_none() {
        match open() {
            Ok(d) => *dev = Some(d),
            Err(e) => {
                tracing::debug!(error = %e, "battery gauge: cannot open the bus");
                return None;
            }
        }
    }
    let d = dev.as_mut()?;
    match d.read_byte_data(LEVEL_REGISTER) {
        Ok(b) => level_from_byte(b),
        Err(e) => {
            tracing::debug!(error = %e, device = d.describe(), "battery gauge: read failed");
            *dev = None;
            None
        }
    }
}

impl Drop for BatteryMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn the_stock_table_maps_bytes_to_levels() {
        assert_eq!(level_from_byte(0xff), Some(11));
        assert_eq!(level_from_byte(0xec), Some(11));
        assert_eq!(level_from_byte(0xeb), Some(10));
        assert_eq!(level_from_byte(0xd9), Some(9));
        assert_eq!(level_from_byte(0xc4), Some(3));
        assert_eq!(level_from_byte(0xb4), Some(1));
        assert_eq!(level_from_byte(0xb3), Some(0));
        assert_eq!(level_from_byte(0x8c), Some(0));
        assert_eq!(level_from_byte(0x8b), None);
        assert_eq!(level_from_byte(0), None);
        // Every byte maps to a level no higher than the one above it.
        let mut last = Some(0);
        for b in 0x8c..=0xffu8 {
            let l = level_from_byte(b);
            assert!(l >= last, "{b:#x}");
            last = l;
        }
    }

    /// A gauge's register file: what a read of 0x03 returns (None: the
    /// transfer fails, as on an unplugged or hung bus).
    #[derive(Clone, Default)]
    struct Gauge(Arc<Mutex<Option<u8>>>);

    impl SmbusDevice for Gauge {
        fn read_byte_data(&mut self, reg: u8) -> std::io::Result<u8> {
            assert_eq!(reg, LEVEL_REGISTER);
            (*self.0.lock().unwrap()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EIO))
        }
        fn write_byte_data(&mut self, _: u8, _: u8) -> std::io::Result<()> {
            panic!("the battery monitor never writes to the gauge")
        }
        fn describe(&self) -> String {
            "test gauge".into()
        }
    }

    fn wait_for(state: &BatteryState, want: Option<u8>) {
        let t = std::time::Instant::now();
        while state.level() != want {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "level {:?}, want {want:?}",
                state.level()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_monitor_follows_the_gauge_forgets_a_failed_read_and_reopens() {
        let gauge = Gauge::default();
        *gauge.0.lock().unwrap() = Some(0xd9);
        let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, o) = (gauge.clone(), opens.clone());
        let opener: GaugeOpener = Box::new(move || {
            o.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(g.clone()) as Box<dyn SmbusDevice>)
        });
        let state = BatteryState::new(2);
        let m =
            BatteryMonitor::with_opener(opener, Duration::from_millis(10), state.clone()).unwrap();
        wait_for(&state, Some(9));
        assert_eq!(state.percent().map(|p| p.round()), Some(82.0));
        assert!(!state.low());
        // The bus fails: the level is unknown, not the stale 9.
        *gauge.0.lock().unwrap() = None;
        wait_for(&state, None);
        assert_eq!(state.percent(), None);
        // It answers again (reopened), with a low battery.
        *gauge.0.lock().unwrap() = Some(0xc0);
        wait_for(&state, Some(2));
        assert!(state.low());
        assert!(
            opens.load(Ordering::Relaxed) >= 2,
            "reopened after the failure"
        );
        let t = std::time::Instant::now();
        drop(m);
        assert!(t.elapsed() < Duration::from_secs(1), "stops promptly");
    }

    #[test]
    fn the_bus_is_found_by_the_gauges_pci_device() {
        let d = tempfile::tempdir().unwrap();
        let class = d.path().join("class/i2c-dev");
        std::fs::create_dir_all(&class).unwrap();
        let link =
            |n: &str, target: &str| std::os::unix::fs::symlink(target, class.join(n)).unwrap();
        // As on the stock board: several adapters, the gauge's on 17.3.
        link(
            "i2c-0",
            "../../devices/pci0000:00/0000:00:02.0/i2c-0/i2c-dev/i2c-0",
        );
        link(
            "i2c-7",
            "../../devices/pci0000:00/0000:00:17.3/i2c_designware.3/i2c-7/i2c-dev/i2c-7",
        );
        link(
            "i2c-8",
            "../../devices/pci0000:00/0000:00:17.4/i2c_designware.4/i2c-8/i2c-dev/i2c-8",
        );
        assert_eq!(
            find_gauge_bus(d.path()).unwrap(),
            PathBuf::from("/dev/i2c-7")
        );
        std::fs::remove_file(class.join("i2c-7")).unwrap();
        let e = find_gauge_bus(d.path()).unwrap_err();
        assert!(
            e.contains("names 0000:00:17.3") && e.contains("[battery] bus"),
            "{e}"
        );
        let e = find_gauge_bus(&d.path().join("nowhere")).unwrap_err();
        assert!(e.contains("modprobe i2c-dev"), "{e}");
    }

    #[test]
    fn no_gauge_shows_nothing_and_a_missing_bus_is_named() {
        let (m, state) = BatteryMonitor::start(&BatteryConfig::default()).unwrap();
        assert!(m.is_none());
        assert_eq!(
            (state.level(), state.percent(), state.low()),
            (None, None, false)
        );
        let d = tempfile::tempdir().unwrap();
        let cfg = BatteryConfig {
            backend: BatteryBackend::Deepracer,
            sysfs_root: d.path().to_path_buf(),
            ..BatteryConfig::default()
        };
        let e = BatteryMonitor::start(&cfg).err().expect("no bus");
        assert!(e.contains("no I2C bus of the battery gauge"), "{e}");
        let cfg = BatteryConfig {
            poll_seconds: 1,
            ..BatteryConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().0, "battery.poll_seconds");
    }
}
