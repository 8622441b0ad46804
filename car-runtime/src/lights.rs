//! The stock DeepRacer's status LEDs and tail light, driven from what the
//! car is doing: what the stock `status_led_node` and the servo node's
//! `led_mgr` did before `systemctl disable deepracer-core`.
//!
//! The three status LEDs say, without a phone (the README has the table):
//! LED 1 the car (starting, ready, no model, driving, e-stop, fault), LED 2
//! the network (waiting for Wi-Fi, connected, a phone is on the web UI),
//! LED 3 the battery. A [`Lights`] thread works them out every 250 ms from
//! the telemetry ring, the model status, the battery state and
//! `<root>/class/net`, and writes only what changed
//! ([`servo_driver::leds`]).
//!
//! The tail light shows the racer's colour (chosen on the phone, kept in
//! `tail-light.json` beside the calibration; on first start a stock car's
//! `/opt/aws/deepracer/led_values.json` is taken over). It is written when
//! the lights open and when the phone changes it, from the web thread.
//!
//! Never on the control thread, and never in its way: the loop does not
//! know this module exists; every write is best effort (an error is logged
//! once, the lights go on without that LED); the tail light shares the
//! servos' pwmchip but never their channels or period.
//!
//! `[lights] backend = "none"` (the default; a Raspberry Pi without these
//! LEDs) starts nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servo_driver::leds::{OnOff, Rgb, StatusLeds, TailLight};

use crate::arbiter::Mode;
use crate::battery::BatteryState;
use crate::commands::{ModelState, Shared};

/// How often the status LEDs are worked out; blinking is 1 Hz on this grid.
const TICK: Duration = Duration::from_millis(250);

/// A phone whose page asked for the status within this long is "on the web UI".
const PHONE_WINDOW_NS: u64 = 5_000_000_000;

/// A fault (inference error, supervisor trip) shows for this long after it happened.
const FAULT_HOLD_NS: u64 = 5_000_000_000;

/// Where a stock car keeps its tail-light colour.
pub const STOCK_LED_VALUES: &str = "/opt/aws/deepracer/led_values.json";

/// Which lights the board has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LightsBackend {
    /// None: nothing is written.
    #[default]
    None,
    /// The stock DeepRacer board's GPIO status LEDs and PWM tail light.
    Deepracer,
}

/// The `[lights]` table. The sysfs tree, the pwmchip and the servos'
/// channels are `[actuator.sysfs]`'s: the lights are on the same board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LightsConfig {
    /// `none` or `deepracer`.
    pub backend: LightsBackend,
    /// (red, green, blue) GPIO numbers of each status LED; empty: none.
    pub status_gpios: Vec<[u32; 3]>,
    /// (red, green, blue) PWM channels of the tail light.
    pub tail_channels: [u32; 3],
    /// Whether the board has the tail light.
    pub tail_light: bool,
    /// The kept colour; empty: `tail-light.json` beside the calibration file.
    pub tail_file: PathBuf,
    /// A stock car's colour file, taken over when `tail_file` does not exist yet.
    pub stock_led_values: PathBuf,
}

impl Default for LightsConfig {
    fn default() -> Self {
        LightsConfig {
            backend: LightsBackend::None,
            status_gpios: servo_driver::leds::STOCK_STATUS_GPIOS.to_vec(),
            tail_channels: servo_driver::leds::STOCK_TAIL_CHANNELS,
            tail_light: true,
            tail_file: PathBuf::new(),
            stock_led_values: PathBuf::from(STOCK_LED_VALUES),
        }
    }
}

impl LightsConfig {
    /// Field checks: Err(key, what is wrong).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.status_gpios.len() > 8 {
            return Err((
                "lights.status_gpios",
                format!("{} LEDs; at most 8", self.status_gpios.len()),
            ));
        }
        let [r, g, b] = self.tail_channels;
        if r == g || g == b || r == b || [r, g, b].iter().any(|&c| c > 15) {
            return Err((
                "lights.tail_channels",
                format!("{:?}: three different channels 0-15", self.tail_channels),
            ));
        }
        Ok(())
    }

    /// The file the tail-light colour is kept in.
    pub fn tail_file_for(&self, calibration: &Path) -> PathBuf {
        if !self.tail_file.as_os_str().is_empty() {
            return self.tail_file.clone();
        }
        calibration
            .parent()
            .unwrap_or(Path::new("."))
            .join("tail-light.json")
    }
}

/// What a status LED does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Dark.
    Off,
    /// Steadily this colour.
    Solid(OnOff),
    /// This colour half a second, dark half a second.
    Blink(OnOff),
}

impl Show {
    /// The colour at `tick` (250 ms steps).
    pub fn at(self, tick: u64) -> OnOff {
        match self {
            Show::Off => OnOff::OFF,
            Show::Solid(c) => c,
            Show::Blink(c) if tick % 4 < 2 => c,
            Show::Blink(_) => OnOff::OFF,
        }
    }
}

/// What the status LEDs are worked out from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    /// The control loop has not run yet, or a model is being loaded.
    pub starting: bool,
    /// The arbiter's mode.
    pub mode: Mode,
    /// The e-stop is latched.
    pub estop: bool,
    /// Something failed lately: a stall, an inference error, a supervisor trip.
    pub fault: bool,
    /// A model is loaded.
    pub model: bool,
    /// An interface other than loopback is up.
    pub network: bool,
    /// A phone asked for the status lately.
    pub phone: bool,
    /// Battery (level 0-11, low), when there is a gauge and a reading.
    pub battery: Option<(u8, bool)>,
}

/// The three status LEDs for `s`: the README's LED table is this function.
pub fn indicators(s: &Signals) -> [Show; 3] {
    let car = if s.estop {
        Show::Solid(OnOff::RED)
    } else if s.fault {
        Show::Blink(OnOff::RED)
    } else if s.starting {
        Show::Blink(OnOff::BLUE)
    } else {
        match s.mode {
            Mode::Autonomous => Show::Blink(OnOff::GREEN),
            Mode::Manual => Show::Solid(OnOff::CYAN),
            Mode::Calibration => Show::Solid(OnOff::MAGENTA),
            Mode::Stopped if !s.model => Show::Solid(OnOff::YELLOW),
            Mode::Stopped => Show::Solid(OnOff::GREEN),
        }
    };
    let network = if !s.network {
        Show::Blink(OnOff::YELLOW)
    } else if s.phone {
        Show::Solid(OnOff::GREEN)
    } else {
        Show::Solid(OnOff::BLUE)
    };
    let battery = match s.battery {
        None => Show::Off,
        Some((_, true)) => Show::Blink(OnOff::RED),
        Some((level, false)) if level <= 5 => Show::Solid(OnOff::YELLOW),
        Some(_) => Show::Solid(OnOff::GREEN),
    };
    [car, network, battery]
}

/// True when an interface other than `lo` under `<root>/class/net` has
/// `operstate` "up" (a Wi-Fi interface is up once it is associated).
pub fn network_up(sysfs_root: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir(sysfs_root.join("class/net")) else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "lo")
        .any(|e| {
            std::fs::read_to_string(e.path().join("operstate")).is_ok_and(|s| s.trim() == "up")
        })
}

/// The kept tail-light colour file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kept {
    r: u8,
    g: u8,
    b: u8,
}

/// The colour a car starts with: blue, as a stock car out of the box.
pub const DEFAULT_TAIL: Rgb = Rgb { r: 0, g: 0, b: 255 };

/// The kept colour: our file, else a stock car's, else [`DEFAULT_TAIL`].
/// A damaged file is named in the log and the default shown; it is
/// replaced on the next save.
pub fn load_tail_colour(ours: &Path, stock: &Path) -> Rgb {
    match std::fs::read(ours) {
        Ok(bytes) => match serde_json::from_slice::<Kept>(&bytes) {
            Ok(k) => {
                return Rgb {
                    r: k.r,
                    g: k.g,
                    b: k.b,
                }
            }
            Err(e) => {
                tracing::error!(file = %ours.display(), "tail-light colour unreadable ({e}); showing the default");
                return DEFAULT_TAIL;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(file = %ours.display(), "cannot read the tail-light colour ({e}); showing the default");
            return DEFAULT_TAIL;
        }
    }
    match std::fs::read(stock).map(|b| stock_colour(&b)) {
        Ok(Some(c)) => {
            tracing::info!(file = %stock.display(), ?c, "tail-light colour taken over from the stock software");
            c
        }
        _ => DEFAULT_TAIL,
    }
}

/// A stock `led_values.json` (`{"Led Values": {"red_pwm": ns, ...}}`, each
/// 0-10,000,000 ns) as a colour; None when it is not one.
pub fn stock_colour(bytes: &[u8]) -> Option<Rgb> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let vals = v.get("Led Values")?;
    let level = |k: &str| -> Option<u8> {
        let ns = vals.get(k)?.as_i64()?;
        let full = i64::from(servo_driver::leds::TAIL_FULL_NS);
        if !(0..=full).contains(&ns) {
            return None;
        }
        Some(((ns * 255 + full / 2) / full) as u8)
    };
    Some(Rgb {
        r: level("red_pwm")?,
        g: level("green_pwm")?,
        b: level("blue_pwm")?,
    })
}

/// The tail light as the web adapter sees it: the colour shown, and a
/// setter that shows and keeps a new one.
pub struct TailControl {
    light: Mutex<(TailLight, Rgb)>,
    file: PathBuf,
}

impl TailControl {
    /// The colour shown now.
    pub fn colour(&self) -> Rgb {
        self.light.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Show `c`, then keep it (temp file, fsync, rename). Err says which
    /// file failed; a colour that could not be kept is still shown.
    pub fn set(&self, c: Rgb) -> Result<Rgb, String> {
        let mut g = self.light.lock().unwrap_or_else(|e| e.into_inner());
        g.0.set(c).map_err(|e| e.to_string())?;
        g.1 = c;
        drop(g);
        let kept = serde_json::to_vec(&Kept {
            r: c.r,
            g: c.g,
            b: c.b,
        })
        .expect("three integers serialise");
        safe_io::atomic::write(&self.file, &kept).map_err(|e| {
            format!(
                "{}: cannot keep the tail-light colour: {e}",
                self.file.display()
            )
        })?;
        Ok(c)
    }
}

/// When a phone last asked for the status (CLOCK_MONOTONIC ns; 0: never).
/// The web adapter stamps it; the LEDs read it.
#[derive(Default)]
pub struct PhoneSeen(AtomicU64);

impl PhoneSeen {
    /// A phone asked now.
    pub fn stamp(&self) {
        self.0
            .store(crate::clock::monotonic_ns(), Ordering::Relaxed);
    }

    fn recent(&self, now_ns: u64) -> bool {
        let t = self.0.load(Ordering::Relaxed);
        t != 0 && now_ns.saturating_sub(t) < PHONE_WINDOW_NS
    }
}

/// The running lights: the status-LED thread and the tail light.
pub struct Lights {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    tail: Option<Arc<TailControl>>,
}

impl Lights {
    /// Open what `cfg` names (each part on its own: a missing tail light
    /// still leaves the status LEDs, and the reverse), and start the
    /// status-LED thread. `sysfs`: the servos' `[actuator.sysfs]` (its
    /// root, pwmchip and the channels the tail light must not use);
    /// `period_ns`: the servos' PWM period. None for `backend = "none"` or
    /// when nothing could be opened (logged).
    pub fn start(
        cfg: &LightsConfig,
        sysfs: &servo_driver::config::SysfsConfig,
        calibration: &Path,
        period_ns: u32,
        shared: Arc<Shared>,
        battery: Arc<BatteryState>,
        phone: Arc<PhoneSeen>,
    ) -> Option<Lights> {
        if cfg.backend == LightsBackend::None {
            return None;
        }
        let tail = if cfg.tail_light {
            match TailLight::open(sysfs, cfg.tail_channels, period_ns) {
                Ok(mut light) => {
                    let file = cfg.tail_file_for(calibration);
                    let c = load_tail_colour(&file, &cfg.stock_led_values);
                    if let Err(e) = light.set(c) {
                        tracing::error!("tail light: {e}");
                    }
                    Some(Arc::new(TailControl {
                        light: Mutex::new((light, c)),
                        file,
                    }))
                }
                Err(e) => {
                    tracing::error!("no tail light: {e}");
                    None
                }
            }
        } else {
            None
        };
        let leds = if cfg.status_gpios.is_empty() {
            None
        } else {
            match StatusLeds::open(&sysfs.root, &cfg.status_gpios) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!("no status LEDs: {e}");
                    None
                }
            }
        };
        if tail.is_none() && leds.is_none() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match leds {
            Some(leds) => {
                let stop = stop.clone();
                let root = sysfs.root.clone();
                let spawned = std::thread::Builder::new()
                    .name("status-leds".into())
                    .spawn(move || run(leds, &root, &shared, &battery, &phone, &stop));
                match spawned {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::error!("status LEDs: cannot start their thread: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        Some(Lights { stop, thread, tail })
    }

    /// The tail light, for the web adapter; None when the board has none.
    pub fn tail(&self) -> Option<Arc<TailControl>> {
        self.tail.clone()
    }
}

impl Drop for Lights {
    /// The status LEDs go dark when the daemon ends (nothing is reading
    /// the car any more); the tail light stays the racer's colour, as the
    /// hardware keeps it, until the next start.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// The signals now, from what the other threads publish.
fn signals(
    shared: &Shared,
    battery: &BatteryState,
    phone: &PhoneSeen,
    root: &Path,
    faults: &mut FaultWatch,
    now_ns: u64,
) -> Signals {
    let latest = shared.telemetry.latest();
    let (model, loading) = {
        let st = shared
            .model_status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (st.active.is_some(), st.state == ModelState::Loading)
    };
    let fault = faults.update(latest.as_ref(), shared, now_ns);
    Signals {
        starting: latest.is_none() || loading,
        mode: latest.map(|s| s.mode()).unwrap_or(Mode::Stopped),
        estop: latest.is_some_and(|s| s.estop),
        fault,
        model,
        network: network_up(root),
        phone: phone.recent(now_ns),
        battery: battery.level().map(|l| (l, battery.low())),
    }
}

/// Remembers the last fault counters, so a fault shows for a while after
/// it happened rather than for the one tick it was seen in.
#[derive(Default)]
struct FaultWatch {
    inference_errors: u64,
    trips: u64,
    last_fault_ns: Option<u64>,
}

impl FaultWatch {
    fn update(
        &mut self,
        latest: Option<&crate::telemetry::Sample>,
        shared: &Shared,
        now_ns: u64,
    ) -> bool {
        let errors = latest.map(|s| s.inference_errors).unwrap_or(0);
        let trips = shared.supervisor_trips.load(Ordering::Relaxed);
        let stalled = latest.is_some_and(|s| s.stalled);
        if errors > self.inference_errors || trips > self.trips || stalled {
            self.last_fault_ns = Some(now_ns);
        }
        self.inference_errors = errors;
        self.trips = trips;
        self.last_fault_ns
            .is_some_and(|t| now_ns.saturating_sub(t) < FAULT_HOLD_NS)
    }
}

fn run(
    mut leds: StatusLeds,
    root: &Path,
    shared: &Shared,
    battery: &BatteryState,
    phone: &PhoneSeen,
    stop: &AtomicBool,
) {
    let mut faults = FaultWatch::default();
    let mut tick = 0u64;
    // One log line per failing LED, not one per tick.
    let mut reported = vec![false; leds.len()];
    while !stop.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
        let now = crate::clock::monotonic_ns();
        let s = signals(shared, battery, phone, root, &mut faults, now);
        for (i, show) in indicators(&s).iter().enumerate().take(leds.len()) {
            match leds.set(i, show.at(tick)) {
                Ok(()) => reported[i] = false,
                Err(e) if !reported[i] => {
                    tracing::warn!("status LED {}: {e}", i + 1);
                    reported[i] = true;
                }
                Err(_) => {}
            }
        }
        tick += 1;
        std::thread::sleep(TICK);
    }
    if let Err(e) = leds.all_off() {
        tracing::warn!("status LEDs: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Signals {
        Signals {
            starting: false,
            mode: Mode::Stopped,
            estop: false,
            fault: false,
            model: true,
            network: true,
            phone: false,
            battery: Some((9, false)),
        }
    }

    #[test]
    fn the_car_led_puts_estop_over_fault_over_starting_over_the_mode() {
        let s = Signals {
            estop: true,
            fault: true,
            starting: true,
            mode: Mode::Autonomous,
            ..ready()
        };
        assert_eq!(indicators(&s)[0], Show::Solid(OnOff::RED));
        let s = Signals { estop: false, ..s };
        assert_eq!(indicators(&s)[0], Show::Blink(OnOff::RED));
        let s = Signals { fault: false, ..s };
        assert_eq!(indicators(&s)[0], Show::Blink(OnOff::BLUE));
        let s = Signals {
            starting: false,
            ..s
        };
        assert_eq!(indicators(&s)[0], Show::Blink(OnOff::GREEN));
        let s = Signals {
            mode: Mode::Manual,
            ..s
        };
        assert_eq!(indicators(&s)[0], Show::Solid(OnOff::CYAN));
        assert_eq!(indicators(&ready())[0], Show::Solid(OnOff::GREEN));
        let s = Signals {
            model: false,
            ..ready()
        };
        assert_eq!(indicators(&s)[0], Show::Solid(OnOff::YELLOW));
    }

    #[test]
    fn the_network_and_battery_leds() {
        let s = Signals {
            network: false,
            ..ready()
        };
        assert_eq!(indicators(&s)[1], Show::Blink(OnOff::YELLOW));
        assert_eq!(indicators(&ready())[1], Show::Solid(OnOff::BLUE));
        let s = Signals {
            phone: true,
            ..ready()
        };
        assert_eq!(indicators(&s)[1], Show::Solid(OnOff::GREEN));
        assert_eq!(indicators(&ready())[2], Show::Solid(OnOff::GREEN));
        let b = |battery| indicators(&Signals { battery, ..ready() })[2];
        assert_eq!(b(Some((5, false))), Show::Solid(OnOff::YELLOW));
        assert_eq!(b(Some((2, true))), Show::Blink(OnOff::RED));
        assert_eq!(b(None), Show::Off);
    }

    #[test]
    fn blinking_is_half_a_second_on_half_off() {
        let b = Show::Blink(OnOff::GREEN);
        let seen: Vec<OnOff> = (0..8).map(|t| b.at(t)).collect();
        let g = OnOff::GREEN;
        let o = OnOff::OFF;
        assert_eq!(seen, [g, g, o, o, g, g, o, o]);
    }

    #[test]
    fn a_stock_led_values_file_becomes_a_colour_and_bad_ones_do_not() {
        let c = stock_colour(
            br#"{"Led Values": {"red_pwm": 10000000, "green_pwm": 5000000, "blue_pwm": 0}}"#,
        );
        assert_eq!(
            c,
            Some(Rgb {
                r: 255,
                g: 128,
                b: 0
            })
        );
        assert_eq!(
            stock_colour(
                br#"{"Led Values": {"red_pwm": 20000000, "green_pwm": 0, "blue_pwm": 0}}"#
            ),
            None
        );
        assert_eq!(stock_colour(br#"{"Led Values": {"red_pwm": 1}}"#), None);
        assert_eq!(stock_colour(b"not json"), None);
    }

    #[test]
    fn the_kept_colour_wins_then_the_stock_one_then_blue() {
        let t = tempfile::tempdir().unwrap();
        let ours = t.path().join("tail-light.json");
        let stock = t.path().join("led_values.json");
        assert_eq!(load_tail_colour(&ours, &stock), DEFAULT_TAIL);
        std::fs::write(
            &stock,
            r#"{"Led Values": {"red_pwm": 0, "green_pwm": 10000000, "blue_pwm": 0}}"#,
        )
        .unwrap();
        assert_eq!(load_tail_colour(&ours, &stock), Rgb { r: 0, g: 255, b: 0 });
        std::fs::write(&ours, r#"{"r": 1, "g": 2, "b": 3}"#).unwrap();
        assert_eq!(load_tail_colour(&ours, &stock), Rgb { r: 1, g: 2, b: 3 });
        std::fs::write(&ours, r#"{"r": 1, "g": 2"#).unwrap();
        assert_eq!(load_tail_colour(&ours, &stock), DEFAULT_TAIL);
    }

    #[test]
    fn the_network_is_up_when_an_interface_other_than_lo_is() {
        let t = tempfile::tempdir().unwrap();
        let net = t.path().join("class/net");
        assert!(!network_up(t.path()));
        for (i, st) in [("lo", "unknown"), ("wlan0", "down")] {
            std::fs::create_dir_all(net.join(i)).unwrap();
            std::fs::write(net.join(i).join("operstate"), format!("{st}\n")).unwrap();
        }
        assert!(!network_up(t.path()));
        std::fs::write(net.join("lo/operstate"), "up\n").unwrap();
        assert!(!network_up(t.path()), "loopback is not a network");
        std::fs::write(net.join("wlan0/operstate"), "up\n").unwrap();
        assert!(network_up(t.path()));
    }

    #[test]
    fn config_refuses_shared_or_impossible_tail_channels() {
        let c = LightsConfig {
            tail_channels: [2, 2, 4],
            ..LightsConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "lights.tail_channels");
        let c = LightsConfig {
            tail_channels: [2, 3, 16],
            ..LightsConfig::default()
        };
        assert!(c.validate().is_err());
        assert!(LightsConfig::default().validate().is_ok());
        assert_eq!(
            LightsConfig::default()
                .tail_file_for(Path::new("/var/lib/car-runtime/calibration.json")),
            Path::new("/var/lib/car-runtime/tail-light.json")
        );
    }
}
