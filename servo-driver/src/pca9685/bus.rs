//! The Linux side of an SMBus device: `/dev/i2c-N`, `I2C_FUNCS` to check
//! the adapter can do byte-data transfers, `I2C_SLAVE` to pick the address,
//! `I2C_SMBUS` for each transfer. The only unsafe code of the PCA9685
//! backend, each ioctl with the reason it is sound.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One SMBus device at a fixed address: byte-data reads and writes.
pub trait SmbusDevice: Send {
    /// Read one register (SMBus read-byte-data).
    fn read_byte_data(&mut self, reg: u8) -> io::Result<u8>;
    /// Write one register (SMBus write-byte-data). An error means the chip did
    /// not acknowledge: cable, power or address.
    fn write_byte_data(&mut self, reg: u8, value: u8) -> io::Result<()>;
    /// For error messages: "/dev/i2c-1 @ 0x40".
    fn describe(&self) -> String;
    /// The descriptor (slave address set) for the signal-safe neutral table
    /// ([`crate::failsafe::raw`]); `None` for devices that are not an
    /// i2c-dev node (the in-memory test model).
    fn into_raw_bus(self: Box<Self>) -> Option<std::os::fd::OwnedFd> {
        None
    }
}

/// One SMBus byte-data write on a raw i2c-dev descriptor, for the signal
/// handler: stack data and one `ioctl`, nothing else. True on success.
pub(crate) fn smbus_write_byte_raw(fd: i32, reg: u8, value: u8) -> bool {
    let mut data = I2cSmbusData { byte: value };
    let mut args = I2cSmbusIoctlData {
        read_write: I2C_SMBUS_WRITE,
        command: reg,
        size: I2C_SMBUS_BYTE_DATA,
        data: &mut data,
    };
    // SAFETY: args and data live on this stack frame for the whole call;
    // ioctl is async-signal-safe.
    unsafe { libc::ioctl(fd, I2C_SMBUS as libc::Ioctl, &mut args) >= 0 }
}

/// Opens a fresh handle on the same device (the emergency path must not
/// share the control thread's handle).
pub type DeviceFactory = Arc<dyn Fn() -> io::Result<Box<dyn SmbusDevice>> + Send + Sync>;

// <linux/i2c-dev.h>, <linux/i2c.h>
const I2C_SLAVE: u32 = 0x0703;
const I2C_FUNCS: u32 = 0x0705;
const I2C_SMBUS: u32 = 0x0720;
const I2C_SMBUS_READ: u8 = 1;
const I2C_SMBUS_WRITE: u8 = 0;
const I2C_SMBUS_BYTE_DATA: u32 = 2;
const I2C_FUNC_SMBUS_READ_BYTE_DATA: libc::c_ulong = 0x0008_0000;
const I2C_FUNC_SMBUS_WRITE_BYTE_DATA: libc::c_ulong = 0x0010_0000;

#[repr(C)]
union I2cSmbusData {
    byte: u8,
    word: u16,
    block: [u8; 34],
}

#[repr(C)]
struct I2cSmbusIoctlData {
    read_write: u8,
    command: u8,
    size: u32,
    data: *mut I2cSmbusData,
}

/// A PCA9685 on a Linux `/dev/i2c-N` bus.
pub struct LinuxI2c {
    file: File,
    bus: PathBuf,
    address: u16,
}

impl LinuxI2c {
    /// Open `bus` read-write, check the adapter can do SMBus byte-data
    /// transfers and select `address`. `ENOENT`: no such bus (I2C disabled);
    /// `EACCES`: not in group `i2c`; `EBUSY`: a kernel driver owns the address;
    /// `Unsupported`: the adapter lacks byte-data transfers.
    pub fn open(bus: &Path, address: u16) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(bus)?;
        let fd = file.as_raw_fd();
        let mut funcs: libc::c_ulong = 0;
        // SAFETY: I2C_FUNCS writes one unsigned long to the pointer we pass.
        if unsafe { libc::ioctl(fd, I2C_FUNCS as libc::Ioctl, &mut funcs) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let need = I2C_FUNC_SMBUS_READ_BYTE_DATA | I2C_FUNC_SMBUS_WRITE_BYTE_DATA;
        if funcs & need != need {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("adapter lacks SMBus byte-data transfers (functionality {funcs:#x})"),
            ));
        }
        // SAFETY: I2C_SLAVE takes the address as the integer argument.
        if unsafe { libc::ioctl(fd, I2C_SLAVE as libc::Ioctl, address as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinuxI2c {
            file,
            bus: bus.to_path_buf(),
            address,
        })
    }

    fn smbus(&mut self, read_write: u8, reg: u8, data: &mut I2cSmbusData) -> io::Result<()> {
        let mut args = I2cSmbusIoctlData {
            read_write,
            command: reg,
            size: I2C_SMBUS_BYTE_DATA,
            data,
        };
        // SAFETY: args and data live on our stack for the duration of the call.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), I2C_SMBUS as libc::Ioctl, &mut args) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl SmbusDevice for LinuxI2c {
    fn read_byte_data(&mut self, reg: u8) -> io::Result<u8> {
        let mut data = I2cSmbusData { block: [0; 34] };
        self.smbus(I2C_SMBUS_READ, reg, &mut data)?;
        // SAFETY: the kernel filled the byte member for a byte-data read.
        Ok(unsafe { data.byte })
    }

    fn write_byte_data(&mut self, reg: u8, value: u8) -> io::Result<()> {
        let mut data = I2cSmbusData { byte: value };
        self.smbus(I2C_SMBUS_WRITE, reg, &mut data)
    }

    fn describe(&self) -> String {
        format!("{} @ {:#04x}", self.bus.display(), self.address)
    }

    fn into_raw_bus(self: Box<Self>) -> Option<std::os::fd::OwnedFd> {
        Some(self.file.into())
    }
}
