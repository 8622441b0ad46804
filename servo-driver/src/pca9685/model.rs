//! An in-memory PCA9685 for tests (feature `test-model`): the register
//! file, MODE1's sleep and restart rules, PRE_SCALE writable only while
//! asleep, and hooks to read what a driver did (writes, outputs, pulse
//! widths) or to make writes fail.

use super::*;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// In-memory PCA9685: the register file and the parts of the datasheet
/// that matter to a driver. Clone it to get another handle on the same chip
/// (as a second `open` of the bus would).
#[derive(Clone)]
pub struct Pca9685Model {
    inner: Arc<Mutex<ModelState>>,
}

struct ModelState {
    regs: [u8; 256],
    oscillator_hz: u32,
    /// When SLEEP was last cleared (oscillator start).
    woke_at: Option<Instant>,
    /// RESTART written 1 before the oscillator had its 500 us.
    early_restarts: u32,
    /// PRE_SCALE writes the chip ignored because it was awake.
    ignored_prescale_writes: u32,
    writes: Vec<(u8, u8)>,
    fail_writes: bool,
}

/// What a channel's output pin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Oscillator asleep, or waiting for RESTART after sleep: no pulses.
    Stopped,
    /// Constantly high (the full-on bit in LEDn_ON_H).
    FullOn,
    /// Constantly low (the full-off bit in LEDn_OFF_H, the power-on state);
    /// wins over full-on.
    FullOff,
    /// High from count `on` to count `off` of every 4096-count period.
    Pulse {
        /// Count (0..=4095) at which the pin goes high.
        on: u16,
        /// Count at which it goes low.
        off: u16,
    },
}

impl Default for Pca9685Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Pca9685Model {
    /// A chip just after power-on reset.
    pub fn new() -> Self {
        let mut regs = [0u8; 256];
        regs[MODE1 as usize] = MODE1_SLEEP | MODE1_ALLCALL; // 0x11
        regs[MODE2 as usize] = MODE2_OUTDRV; // 0x04
        regs[0x02] = 0xE2;
        regs[0x03] = 0xE4;
        regs[0x04] = 0xE8;
        regs[0x05] = 0xE0;
        for ch in 0..16u8 {
            regs[channel_base(ch) as usize + 3] = 0x10; // LEDn_OFF_H: full off
        }
        regs[PRE_SCALE as usize] = 0x1E;
        Pca9685Model {
            inner: Arc::new(Mutex::new(ModelState {
                regs,
                oscillator_hz: DEFAULT_OSCILLATOR_HZ,
                woke_at: None,
                early_restarts: 0,
                ignored_prescale_writes: 0,
                writes: Vec::new(),
                fail_writes: false,
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ModelState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A device handle on this chip.
    pub fn device(&self) -> Box<dyn SmbusDevice> {
        Box::new(self.clone())
    }

    /// A factory for `Pca9685::open_with`.
    pub fn factory(&self) -> DeviceFactory {
        let m = self.clone();
        Arc::new(move || Ok(m.device()))
    }

    /// Register `reg` straight from the register file (no bus transfer, not
    /// recorded in [`Self::writes`]).
    pub fn reg(&self, reg: u8) -> u8 {
        self.state().regs[reg as usize]
    }

    /// Every byte-data write so far, in order.
    pub fn writes(&self) -> Vec<(u8, u8)> {
        self.state().writes.clone()
    }

    /// Forget the writes recorded so far, so a test checks only what follows.
    pub fn clear_writes(&self) {
        self.state().writes.clear();
    }

    /// Make every later write fail with EIO (a pulled cable).
    pub fn set_fail_writes(&self, fail: bool) {
        self.state().fail_writes = fail;
    }

    /// How often RESTART was written before the oscillator's 500 µs start-up
    /// had passed; a correct driver keeps this at 0.
    pub fn early_restarts(&self) -> u32 {
        self.state().early_restarts
    }

    /// PRE_SCALE writes ignored because the chip was awake; non-zero means the
    /// driver forgot to sleep first.
    pub fn ignored_prescale_writes(&self) -> u32 {
        self.state().ignored_prescale_writes
    }

    /// What channel `ch`'s pin does now.
    pub fn output(&self, ch: u8) -> Output {
        let s = self.state();
        let mode1 = s.regs[MODE1 as usize];
        if mode1 & MODE1_SLEEP != 0 || mode1 & MODE1_RESTART != 0 {
            return Output::Stopped;
        }
        let b = channel_base(ch) as usize;
        let (on_l, on_h, off_l, off_h) = (s.regs[b], s.regs[b + 1], s.regs[b + 2], s.regs[b + 3]);
        if off_h & 0x10 != 0 {
            Output::FullOff
        } else if on_h & 0x10 != 0 {
            Output::FullOn
        } else {
            Output::Pulse {
                on: u16::from(on_h & 0x0F) << 8 | u16::from(on_l),
                off: u16::from(off_h & 0x0F) << 8 | u16::from(off_l),
            }
        }
    }

    /// The pulse width a scope would measure on channel `ch`, in ns.
    pub fn pulse_ns(&self, ch: u8) -> Option<f64> {
        let prescale = self.reg(PRE_SCALE);
        let osc = self.state().oscillator_hz;
        match self.output(ch) {
            Output::Pulse { on, off } => {
                let counts = (off as i32 - on as i32).rem_euclid(4096);
                Some(counts as f64 * tick_ns(osc, prescale))
            }
            _ => None,
        }
    }

    /// The output frequency the PRE_SCALE register gives.
    pub fn frequency_hz(&self) -> f64 {
        let osc = self.state().oscillator_hz as f64;
        osc / (4096.0 * (self.reg(PRE_SCALE) as f64 + 1.0))
    }

    fn any_channel_active(s: &ModelState) -> bool {
        (0..16u8).any(|ch| s.regs[channel_base(ch) as usize + 3] & 0x10 == 0)
    }
}

impl SmbusDevice for Pca9685Model {
    fn read_byte_data(&mut self, reg: u8) -> io::Result<u8> {
        let s = self.state();
        // ALL_LED registers are write-only and read back as zero.
        Ok(if (ALL_LED_ON_L..PRE_SCALE).contains(&reg) {
            0
        } else {
            s.regs[reg as usize]
        })
    }

    fn write_byte_data(&mut self, reg: u8, value: u8) -> io::Result<()> {
        let mut s = self.state();
        if s.fail_writes {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        s.writes.push((reg, value));
        match reg {
            MODE1 => {
                let old = s.regs[MODE1 as usize];
                let was_asleep = old & MODE1_SLEEP != 0;
                let asleep = value & MODE1_SLEEP != 0;
                let mut restart = old & MODE1_RESTART;
                if !was_asleep && asleep && Self::any_channel_active(&s) {
                    // Sleeping with PWM running: RESTART reads 1 and the
                    // outputs stay off until it is written 1 after wake-up.
                    restart = MODE1_RESTART;
                }
                if was_asleep && !asleep {
                    s.woke_at = Some(Instant::now());
                }
                if value & MODE1_RESTART != 0 && !asleep {
                    if s.woke_at.is_some_and(|t| t.elapsed() < OSC_STARTUP) {
                        s.early_restarts += 1;
                    }
                    restart = 0;
                }
                s.regs[MODE1 as usize] = (value & !MODE1_RESTART) | restart;
            }
            PRE_SCALE => {
                if s.regs[MODE1 as usize] & MODE1_SLEEP != 0 {
                    s.regs[PRE_SCALE as usize] = value;
                } else {
                    s.ignored_prescale_writes += 1;
                }
            }
            r if (ALL_LED_ON_L..PRE_SCALE).contains(&r) => {
                let off = r - ALL_LED_ON_L;
                for ch in 0..16u8 {
                    s.regs[(channel_base(ch) + off) as usize] = value;
                }
            }
            // 0x46..=0xF9 are reserved.
            r if r >= channel_base(16) && r < ALL_LED_ON_L => {}
            r => s.regs[r as usize] = value,
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "pca9685-model @ 0x40".into()
    }
}
