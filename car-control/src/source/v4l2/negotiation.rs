//! The pure half of the camera: which format to ask for, what a driver's
//! frame interval and timestamp flags mean, and how its per-stream buffer
//! numbers become one rising frame sequence. No device, no unsafe: every
//! rule here is unit-tested on plain values.

use super::FormatPreference;
use crate::frame::PixelFormat;

const BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
const BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;

/// Whether a buffer's flags say its timestamp is CLOCK_MONOTONIC.
pub fn has_monotonic_timestamp(flags: u32) -> bool {
    flags & BUF_FLAG_TIMESTAMP_MASK == BUF_FLAG_TIMESTAMP_MONOTONIC
}

/// Picks the fourcc to request from those the device lists.
pub fn choose_format(pref: FormatPreference, offered: &[[u8; 4]]) -> Option<PixelFormat> {
    let has = |code: &[u8; 4]| offered.iter().any(|o| o == code);
    match pref {
        FormatPreference::Auto if has(b"MJPG") => Some(PixelFormat::Jpeg),
        FormatPreference::Auto if has(b"JPEG") => Some(PixelFormat::Jpeg),
        FormatPreference::Auto if has(b"YUYV") => Some(PixelFormat::Yuyv),
        FormatPreference::Mjpeg if has(b"MJPG") || has(b"JPEG") => Some(PixelFormat::Jpeg),
        FormatPreference::Yuyv if has(b"YUYV") => Some(PixelFormat::Yuyv),
        _ => None,
    }
}

/// Frames per second from a `timeperframe` fraction.
pub fn fps_from_interval(numerator: u32, denominator: u32) -> Option<f64> {
    (numerator > 0 && denominator > 0).then(|| f64::from(denominator) / f64::from(numerator))
}

/// Capture time in ns on CLOCK_MONOTONIC: the driver's when it says its
/// timestamps are monotonic, else `now_ns` (taken right after dequeue).
pub fn capture_timestamp_ns(flags: u32, tv_sec: i64, tv_usec: i64, now_ns: u64) -> u64 {
    if has_monotonic_timestamp(flags) && tv_sec >= 0 {
        (tv_sec as u64) * 1_000_000_000 + (tv_usec.max(0) as u64) * 1_000
    } else {
        now_ns
    }
}

/// Turns the driver's per-stream buffer sequence numbers into one
/// sequence that keeps rising across reconnects, and counts every frame
/// that never reached the caller (skipped for a newer one, dropped by the
/// driver for lack of a free buffer, or delivered with the error flag).
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Driver sequence of the last frame handed out in this stream.
    last: Option<u32>,
    /// Our sequence of the last frame handed out.
    last_global: Option<u64>,
    dropped: u64,
    delivered: u64,
}

impl SeqTracker {
    /// A new stream starts (open or reopen); its sequence restarts at 0.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// Records a delivered frame, returns its global sequence number.
    pub fn deliver(&mut self, driver_seq: u32) -> u64 {
        let global = match (self.last, self.last_global) {
            (Some(last), Some(g)) if driver_seq > last => {
                self.dropped += u64::from(driver_seq - last - 1);
                g + u64::from(driver_seq - last)
            }
            // Backwards mid-stream: the driver restarted its numbering;
            // carry on from here without inventing drops.
            (Some(_), Some(g)) => g + 1,
            // First frame of a (re)started stream: the frames it numbered
            // before this one never reached us.
            (_, Some(g)) => {
                self.dropped += u64::from(driver_seq);
                g + 1 + u64::from(driver_seq)
            }
            (_, None) => {
                self.dropped += u64::from(driver_seq);
                u64::from(driver_seq)
            }
        };
        self.last = Some(driver_seq);
        self.last_global = Some(global);
        self.delivered += 1;
        global
    }

    /// Frames that never reached the caller, across reconnects.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Frames handed out.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_mjpeg_then_yuyv() {
        assert_eq!(
            choose_format(FormatPreference::Auto, &[*b"YUYV", *b"MJPG"]),
            Some(PixelFormat::Jpeg)
        );
        assert_eq!(
            choose_format(FormatPreference::Auto, &[*b"NV12", *b"YUYV"]),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(choose_format(FormatPreference::Auto, &[*b"NV12"]), None);
    }

    #[test]
    fn explicit_preference_is_honoured_or_refused() {
        assert_eq!(
            choose_format(FormatPreference::Yuyv, &[*b"MJPG", *b"YUYV"]),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(choose_format(FormatPreference::Mjpeg, &[*b"YUYV"]), None);
        assert_eq!(choose_format(FormatPreference::Yuyv, &[*b"MJPG"]), None);
    }

    #[test]
    fn fps_from_timeperframe() {
        assert_eq!(fps_from_interval(1, 15), Some(15.0));
        assert_eq!(
            fps_from_interval(1001, 30000).map(|f| (f * 100.0).round()),
            Some(2997.0)
        );
        assert_eq!(fps_from_interval(0, 15), None);
        assert_eq!(fps_from_interval(1, 0), None);
    }

    #[test]
    fn monotonic_driver_timestamps_are_used_others_replaced() {
        assert_eq!(
            capture_timestamp_ns(BUF_FLAG_TIMESTAMP_MONOTONIC, 12, 345_678, 99),
            12_345_678_000
        );
        // Unknown clock (flags 0) and copy timestamps (0x4000): use now.
        assert_eq!(capture_timestamp_ns(0, 12, 345_678, 99), 99);
        assert_eq!(capture_timestamp_ns(0x4000, 12, 345_678, 99), 99);
    }

    #[test]
    fn sequence_gaps_count_as_drops() {
        let mut t = SeqTracker::default();
        t.restart();
        assert_eq!(t.deliver(0), 0);
        assert_eq!(t.deliver(1), 1);
        assert_eq!(t.deliver(4), 4); // 2 and 3 skipped for the newest
        assert_eq!(t.dropped(), 2);
        assert_eq!(t.delivered(), 3);
    }

    #[test]
    fn reconnect_keeps_sequence_rising_and_counts_lost_start() {
        let mut t = SeqTracker::default();
        t.restart();
        t.deliver(0);
        t.deliver(1);
        t.restart(); // device came back; driver numbering restarts at 0
        let a = t.deliver(0);
        assert!(a > 1, "sequence must keep rising after reconnect, got {a}");
        let b = t.deliver(3);
        assert_eq!(b, a + 3);
        assert_eq!(t.dropped(), 2);
        t.restart();
        let c = t.deliver(5); // five frames lost before the first one we saw
        assert!(c > b);
        assert_eq!(t.dropped(), 7);
    }

    #[test]
    fn sequence_reset_mid_stream_is_not_a_drop() {
        let mut t = SeqTracker::default();
        t.restart();
        t.deliver(10);
        let before = t.dropped();
        let x = t.deliver(2);
        assert!(x > 10);
        assert_eq!(t.dropped(), before);
        assert_eq!(t.deliver(3), x + 1);
    }
}
