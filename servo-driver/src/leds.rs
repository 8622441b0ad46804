//! The stock DeepRacer board's lights: three RGB status LEDs on sysfs GPIO
//! and the RGB tail light on PWM channels 2-4 of the servos' pwmchip.
//!
//! Hardware: each status LED is three GPIO lines (red, green, blue), on when
//! its `value` is `1`. On the stock Ubuntu 20.04 image they are GPIO
//! (448, 447, 437), (446, 445, 443) and (450, 457, 458); newer kernels number
//! the same lines higher (as with the servo power gate, 436 -> 514), so the
//! numbers are configuration. The tail light is three more outputs of the
//! PCA9685 that drives the servos, at the servos' period; its brightness is
//! the pulse's high time, 0 (off) to 10 ms (full), as the stock software
//! drives it.
//!
//! What these writers promise the control loop: nothing here is ever called
//! from it, every write is skipped when the value is unchanged, and opening
//! never touches the steering and throttle channels. A PCA9685 has one
//! period for all of its outputs, so the tail light is opened at the
//! servos' period and never writes another.
//!
//! Errors: the same [`SysfsError`] as the servo backend. `Permission` means
//! the package's udev rule has not run for these lines; `ExportTimeout`
//! that this board has no such GPIO (wrong numbers for this kernel). The
//! daemon logs either once and goes on without lights.

use crate::config::SysfsConfig;
use crate::sysfs::{export, find_chip, io_err, setup_channel, write_attr, DutyFile, SysfsError};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The stock board's status LEDs, (red, green, blue) GPIO numbers each.
pub const STOCK_STATUS_GPIOS: [[u32; 3]; 3] = [[448, 447, 437], [446, 445, 443], [450, 457, 458]];

/// The stock board's tail-light channels (red, green, blue) on the servos' pwmchip.
pub const STOCK_TAIL_CHANNELS: [u32; 3] = [2, 3, 4];

/// A tail-light channel's high time at full brightness (the stock value).
pub const TAIL_FULL_NS: u32 = 10_000_000;

/// An on/off colour of a status LED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OnOff {
    /// Red line on.
    pub r: bool,
    /// Green line on.
    pub g: bool,
    /// Blue line on.
    pub b: bool,
}

impl OnOff {
    /// All three lines off.
    pub const OFF: OnOff = OnOff::new(false, false, false);
    /// Red.
    pub const RED: OnOff = OnOff::new(true, false, false);
    /// Green.
    pub const GREEN: OnOff = OnOff::new(false, true, false);
    /// Blue.
    pub const BLUE: OnOff = OnOff::new(false, false, true);
    /// Red and green.
    pub const YELLOW: OnOff = OnOff::new(true, true, false);
    /// Green and blue.
    pub const CYAN: OnOff = OnOff::new(false, true, true);
    /// Red and blue.
    pub const MAGENTA: OnOff = OnOff::new(true, false, true);
    /// All three.
    pub const WHITE: OnOff = OnOff::new(true, true, true);

    /// A colour from its three lines.
    pub const fn new(r: bool, g: bool, b: bool) -> OnOff {
        OnOff { r, g, b }
    }
}

/// One GPIO output whose `value` stays open, written only on change.
struct GpioOut {
    file: File,
    path: PathBuf,
    /// `None` until the first write: the line may hold anything at open.
    last: Option<bool>,
}

impl GpioOut {
    fn open(gpio_dir: &Path, n: u32) -> Result<GpioOut, SysfsError> {
        let dir = export(gpio_dir, "gpio", n, "value")?;
        // "low" sets the direction and drives 0 in one write: the LED never
        // flashes with whatever the line held before.
        write_attr(&dir.join("direction"), "low")
            .or_else(|_| write_attr(&dir.join("direction"), "out"))?;
        let path = dir.join("value");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(GpioOut {
            file,
            path,
            last: None,
        })
    }

    fn set(&mut self, on: bool) -> Result<(), SysfsError> {
        if self.last == Some(on) {
            return Ok(());
        }
        // One byte at offset 0: the whole attribute, on sysfs and on a
        // regular file alike.
        let byte: &[u8] = if on { b"1" } else { b"0" };
        match self.file.write_at(byte, 0) {
            Ok(1) => {
                self.last = Some(on);
                Ok(())
            }
            Ok(_) => {
                self.last = None;
                Err(io_err(&self.path, std::io::ErrorKind::WriteZero.into()))
            }
            Err(e) => {
                self.last = None;
                Err(io_err(&self.path, e))
            }
        }
    }
}

/// The three status LEDs.
pub struct StatusLeds {
    leds: Vec<[GpioOut; 3]>,
}

impl StatusLeds {
    /// Export and open every line of `gpios` (one (r, g, b) triple per LED)
    /// under `<root>/class/gpio`, each set to output, off.
    pub fn open(root: &Path, gpios: &[[u32; 3]]) -> Result<StatusLeds, SysfsError> {
        let gpio_dir = root.join("class/gpio");
        let mut leds = Vec::with_capacity(gpios.len());
        for &[r, g, b] in gpios {
            leds.push([
                GpioOut::open(&gpio_dir, r)?,
                GpioOut::open(&gpio_dir, g)?,
                GpioOut::open(&gpio_dir, b)?,
            ]);
        }
        Ok(StatusLeds { leds })
    }

    /// How many LEDs were opened.
    pub fn len(&self) -> usize {
        self.leds.len()
    }

    /// True when no LED was configured.
    pub fn is_empty(&self) -> bool {
        self.leds.is_empty()
    }

    /// Show `colour` on LED `index` (ignored past the last one). Lines that
    /// already show it are not written.
    pub fn set(&mut self, index: usize, colour: OnOff) -> Result<(), SysfsError> {
        let Some([r, g, b]) = self.leds.get_mut(index) else {
            return Ok(());
        };
        // Every line is tried even if one fails: a single broken line
        // leaves the other two showing what they should.
        let rr = r.set(colour.r);
        let rg = g.set(colour.g);
        let rb = b.set(colour.b);
        rr.and(rg).and(rb)
    }

    /// Every LED off (best effort; the first error is returned).
    pub fn all_off(&mut self) -> Result<(), SysfsError> {
        let mut first = Ok(());
        for i in 0..self.leds.len() {
            if let Err(e) = self.set(i, OnOff::OFF) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// A tail-light colour, 0-255 per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgb {
    /// Red, 0-255.
    pub r: u8,
    /// Green, 0-255.
    pub g: u8,
    /// Blue, 0-255.
    pub b: u8,
}

impl Rgb {
    /// The high time that shows `level` (0-255): linear from 0 to [`TAIL_FULL_NS`].
    pub fn duty_ns(level: u8) -> u32 {
        (u64::from(level) * u64::from(TAIL_FULL_NS) / 255) as u32
    }
}

/// The tail light: three PWM outputs beside the servos'.
pub struct TailLight {
    channels: [DutyFile; 3],
}

impl TailLight {
    /// Find the servos' pwmchip as the servo backend does (`cfg.root`,
    /// `cfg.chip_match`), export `channels` (r, g, b) and set each to
    /// `period_ns` (the servos' period: the chip has only one) with the
    /// light off. Refuses channels that are the steering or throttle ones.
    pub fn open(
        cfg: &SysfsConfig,
        channels: [u32; 3],
        period_ns: u32,
    ) -> Result<TailLight, SysfsError> {
        let chip = find_chip(&cfg.root, &cfg.chip_match)?;
        for c in channels {
            if c == cfg.steering_channel || c == cfg.throttle_channel {
                return Err(SysfsError::Io {
                    path: chip.join(format!("pwm{c}")),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a tail-light channel is also the steering or throttle channel",
                    ),
                });
            }
        }
        let open = |c: u32| -> Result<DutyFile, SysfsError> {
            let dir = export(&chip, "pwm", c, "duty_cycle")?;
            setup_channel(&dir, period_ns, 0)
        };
        Ok(TailLight {
            channels: [open(channels[0])?, open(channels[1])?, open(channels[2])?],
        })
    }

    /// Show `colour`; channels already showing their level are not written.
    pub fn set(&mut self, colour: Rgb) -> Result<(), SysfsError> {
        let mut first = Ok(());
        for (ch, level) in self.channels.iter_mut().zip([colour.r, colour.g, colour.b]) {
            if let Err(e) = ch.write(Rgb::duty_ns(level)) {
                if first.is_ok() {
                    first = Err(SysfsError::Io {
                        path: ch.path().to_path_buf(),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }
        first
    }
}
