//! A camera frame as the preprocessor sees it. Defined here, not in the
//! daemon, so the trainer's evaluation feeds frames through the same code.

/// Pixel layout of a frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One byte per pixel.
    Gray8,
    /// Three bytes per pixel, R G B.
    Rgb8,
    /// Packed 4:2:2, Y0 U Y1 V (V4L2 YUYV).
    Yuyv,
    /// A whole JPEG image (V4L2 MJPEG, recorded frames).
    Jpeg,
}

/// One captured frame, borrowed from the source's preallocated buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub data: &'a [u8],
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Capture time on the source's clock (monotonic; the simulator's clock
    /// for the sim source), nanoseconds.
    pub timestamp_ns: u64,
    /// Sequence number from the source; gaps are dropped frames.
    pub seq: u64,
}
