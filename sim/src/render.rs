//! Camera renderer. The camera is fixed to the car and the world is flat,
//! so each pixel always sees the same ground point in the car's frame: those
//! points are computed once per image size and camera pose ("ray tables").
//! A frame is then a rotation + translation per pixel and one lookup in a
//! raster of the track built when the simulator is created.

use crate::rng::{hash32, Rng};
use crate::track::Track;

/// Surface classes stored in the raster; indices into the palette.
pub(crate) const FLOOR: u8 = 0;
pub(crate) const ROAD: u8 = 1;
pub(crate) const BORDER: u8 = 2;
pub(crate) const DASH: u8 = 3;
pub(crate) const CLUTTER0: u8 = 4;
pub(crate) const CLUTTER_KINDS: u8 = 4;
pub(crate) const SKY: u8 = 8;
const CLASSES: usize = 9;

/// Width of the white border lines (3 in), metres; DeepRacer's border
/// coordinates are the lines' outer edges.
pub const BORDER_LINE_M: f64 = 0.0762;
/// Width of the dashed centre line, metres.
pub const CENTER_LINE_M: f64 = 0.05;
/// Dash length and period of the centre line, metres.
pub const DASH_LEN_M: f64 = 0.05;
pub const DASH_PERIOD_M: f64 = 0.10;

/// Output pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// One byte per pixel, luma.
    #[default]
    Gray,
    /// Three bytes per pixel, R G B.
    Rgb,
}

impl Channels {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Channels::Gray => 1,
            Channels::Rgb => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("image size {width}x{height} is invalid (each side 1..=4096)")]
    Size { width: usize, height: usize },
    #[error("output buffer is {got} bytes, {width}x{height} {channels:?} needs {need}")]
    Buffer {
        got: usize,
        need: usize,
        width: usize,
        height: usize,
        channels: Channels,
    },
}

/// Camera mounting on the car.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CameraConfig {
    /// Lens height above the ground, metres.
    pub height_m: f64,
    /// Downward pitch, degrees.
    pub pitch_deg: f64,
    /// Horizontal field of view, radians.
    pub hfov_rad: f64,
    /// Lens position ahead of the car's origin (rear axle), metres.
    pub forward_m: f64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            height_m: 0.13,
            pitch_deg: 15.0,
            hfov_rad: 1.13,
            forward_m: 0.14,
        }
    }
}

/// Domain randomisation for sim-to-real. Each amount is the half-range of a
/// uniform draw made at `reset(seed)` (noise is drawn per frame). All zero
/// (the default) renders the clean track.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Randomization {
    /// Added to intensity, fraction of full scale (0.2 = +/-20 %).
    pub brightness: f32,
    /// Contrast factor spread around 1 (0.3 = 0.7..1.3).
    pub contrast: f32,
    /// Gamma spread around 1 (0.3 = 0.7..1.3).
    pub gamma: f32,
    /// Largest per-pixel noise, grey levels (triangular distribution).
    pub noise: f32,
    /// Probability that an episode's frames are blurred (3x3 binomial).
    pub blur_prob: f32,
    /// Camera height jitter, metres.
    pub camera_height_m: f64,
    /// Camera pitch jitter, degrees.
    pub camera_pitch_deg: f64,
    /// Per-channel colour variation of road, lines and floor, fraction.
    pub color: f32,
    /// Largest number of flat objects scattered on the floor.
    pub clutter: u32,
}

impl Default for Randomization {
    fn default() -> Self {
        Randomization::none()
    }
}

impl Randomization {
    pub const fn none() -> Randomization {
        Randomization {
            brightness: 0.0,
            contrast: 0.0,
            gamma: 0.0,
            noise: 0.0,
            blur_prob: 0.0,
            camera_height_m: 0.0,
            camera_pitch_deg: 0.0,
            color: 0.0,
            clutter: 0,
        }
    }

    /// Amounts that cover a real car's cameras and rooms.
    pub const fn standard() -> Randomization {
        Randomization {
            brightness: 0.2,
            contrast: 0.3,
            gamma: 0.3,
            noise: 10.0,
            blur_prob: 0.3,
            camera_height_m: 0.01,
            camera_pitch_deg: 3.0,
            color: 0.15,
            clutter: 40,
        }
    }
}

const BASE_COLORS: [[f32; 3]; CLASSES] = [
    [72.0, 96.0, 70.0],    // floor
    [64.0, 63.0, 61.0],    // road
    [214.0, 214.0, 208.0], // border lines
    [210.0, 130.0, 0.0],   // centre dashes
    [150.0, 40.0, 40.0],   // clutter
    [40.0, 60.0, 140.0],
    [200.0, 200.0, 200.0],
    [20.0, 20.0, 20.0],
    [170.0, 180.0, 195.0], // above the horizon
];

/// What one episode looks like: palette after colour, brightness, contrast
/// and gamma randomisation, plus blur and noise settings.
#[derive(Debug, Clone)]
pub(crate) struct Look {
    pub gray: [u8; 16],
    pub rgb: [[u8; 3]; 16],
    pub noise: u32,
    pub blur: bool,
    pub cam_height: f64,
    pub cam_pitch_deg: f64,
}

impl Look {
    pub fn sample(rng: &mut Rng, r: &Randomization, cam: &CameraConfig) -> Look {
        let brightness = rng.sym(r.brightness as f64) as f32;
        let contrast = 1.0 + rng.sym(r.contrast as f64) as f32;
        let gamma = 1.0 + rng.sym(r.gamma as f64) as f32;
        let blur = r.blur_prob > 0.0 && (rng.unit() as f32) < r.blur_prob;
        let cam_height = cam.height_m + rng.sym(r.camera_height_m);
        let cam_pitch_deg = cam.pitch_deg + rng.sym(r.camera_pitch_deg);
        let mut gray = [0u8; 16];
        let mut rgb = [[0u8; 3]; 16];
        for (k, base) in BASE_COLORS.iter().enumerate() {
            let mut c = [0u8; 3];
            let mut col = [0f32; 3];
            for ch in 0..3 {
                let v = base[ch] * (1.0 + rng.sym(r.color as f64) as f32);
                let v = (v / 255.0).clamp(0.0, 1.0);
                let v = v.powf(gamma) * contrast + (0.5 - 0.5 * contrast) + brightness;
                col[ch] = (v * 255.0).clamp(0.0, 255.0);
                c[ch] = col[ch].round() as u8;
            }
            rgb[k] = c;
            gray[k] = (0.299 * col[0] + 0.587 * col[1] + 0.114 * col[2])
                .round()
                .clamp(0.0, 255.0) as u8;
        }
        Look {
            gray,
            rgb,
            noise: r.noise.max(0.0).round() as u32,
            blur,
            cam_height,
            cam_pitch_deg,
        }
    }
}

/// The track drawn from above into a grid of surface classes.
#[derive(Debug, Clone)]
pub(crate) struct Raster {
    pub x0: f64,
    pub y0: f64,
    pub inv_res: f64,
    pub w: usize,
    pub h: usize,
    pub cells: Vec<u8>,
    /// Cell rectangles (x0, y0, x1, y1) where clutter was stamped.
    stamps: Vec<[usize; 4]>,
}

impl Raster {
    /// Largest raster, cells; the resolution coarsens beyond it.
    const MAX_CELLS: f64 = 16.0e6;
    const MARGIN_M: f64 = 1.5;

    pub fn build(track: &Track) -> Raster {
        let b = track.bounds();
        let (x0, y0) = (b[0] - Self::MARGIN_M, b[1] - Self::MARGIN_M);
        let (wm, hm) = (
            b[2] - b[0] + 2.0 * Self::MARGIN_M,
            b[3] - b[1] + 2.0 * Self::MARGIN_M,
        );
        let res = 0.01f64.max((wm * hm / Self::MAX_CELLS).sqrt());
        let inv_res = 1.0 / res;
        let w = (wm * inv_res).ceil() as usize + 1;
        let h = (hm * inv_res).ceil() as usize + 1;
        let mut cells = vec![FLOOR; w * h];
        // Where two stretches of road overlap (a figure eight, a tight
        // hairpin) the road surface wins over the other's border line, and
        // centre dashes win over everything, as on a painted crossing.
        const PRIO: [u8; 4] = [0, 2, 1, 3];
        let wps = track.waypoints();
        for seg in 0..track.segment_count() {
            let len = track.segment_len(seg);
            if len == 0.0 {
                continue;
            }
            let a = wps[seg];
            let bpt = wps[(seg + 1) % wps.len()];
            let (l0, r0) = track.half_widths(seg, 0.0);
            let (l1, r1) = track.half_widths(seg, len);
            let reach = l0.max(r0).max(l1).max(r1) + res;
            let cx0 = (((a[0].min(bpt[0]) - reach - x0) * inv_res).floor().max(0.0)) as usize;
            let cy0 = (((a[1].min(bpt[1]) - reach - y0) * inv_res).floor().max(0.0)) as usize;
            let cx1 = ((((a[0].max(bpt[0]) + reach - x0) * inv_res).ceil()) as usize).min(w - 1);
            let cy1 = ((((a[1].max(bpt[1]) + reach - y0) * inv_res).ceil()) as usize).min(h - 1);
            let d = [(bpt[0] - a[0]) / len, (bpt[1] - a[1]) / len];
            let s0 = track.segment_start_s(seg);
            for cy in cy0..=cy1 {
                let py = y0 + (cy as f64 + 0.5) * res;
                for cx in cx0..=cx1 {
                    let px = x0 + (cx as f64 + 0.5) * res;
                    let v = [px - a[0], py - a[1]];
                    let t = v[0] * d[0] + v[1] * d[1];
                    // Beyond the segment's ends only the round cap counts
                    // (it closes gaps on the outside of bends); dashes come
                    // from the segment whose span holds the point, so their
                    // phase runs on smoothly from one segment to the next.
                    let in_span = (0.0..=len).contains(&t);
                    let along = t.clamp(0.0, len);
                    let q = [v[0] - d[0] * along, v[1] - d[1] * along];
                    let dist = (q[0] * q[0] + q[1] * q[1]).sqrt();
                    let left = d[0] * v[1] - d[1] * v[0] >= 0.0;
                    let f = along / len;
                    let hw = if left {
                        l0 + (l1 - l0) * f
                    } else {
                        r0 + (r1 - r0) * f
                    };
                    let class = if dist > hw {
                        continue;
                    } else if dist > hw - BORDER_LINE_M {
                        BORDER
                    } else if in_span
                        && dist <= CENTER_LINE_M / 2.0
                        && (s0 + along).rem_euclid(DASH_PERIOD_M) < DASH_LEN_M
                    {
                        DASH
                    } else {
                        ROAD
                    };
                    let cell = &mut cells[cy * w + cx];
                    if PRIO[class as usize] > PRIO[*cell as usize] {
                        *cell = class;
                    }
                }
            }
        }
        Raster {
            x0,
            y0,
            inv_res,
            w,
            h,
            cells,
            stamps: Vec::new(),
        }
    }

    /// Removes the previous episode's clutter and scatters new flat objects
    /// on the floor (never on the road).
    pub fn scatter_clutter(&mut self, rng: &mut Rng, max: u32) {
        for r in self.stamps.drain(..) {
            for cy in r[1]..r[3] {
                for c in &mut self.cells[cy * self.w + r[0]..cy * self.w + r[2]] {
                    if *c >= CLUTTER0 {
                        *c = FLOOR;
                    }
                }
            }
        }
        if max == 0 {
            return;
        }
        let n = rng.below(max + 1);
        for _ in 0..n {
            let kind = CLUTTER0 + rng.below(CLUTTER_KINDS as u32) as u8;
            let sw = (rng.range(0.05, 0.5) * self.inv_res) as usize + 1;
            let sh = (rng.range(0.05, 0.5) * self.inv_res) as usize + 1;
            let round = rng.unit() < 0.5;
            let cx = rng.below(self.w.saturating_sub(sw).max(1) as u32) as usize;
            let cy = rng.below(self.h.saturating_sub(sh).max(1) as u32) as usize;
            let r = [cx, cy, (cx + sw).min(self.w), (cy + sh).min(self.h)];
            let (mx, my) = ((r[0] + r[2]) as f64 / 2.0, (r[1] + r[3]) as f64 / 2.0);
            let (rx, ry) = (sw as f64 / 2.0, sh as f64 / 2.0);
            for y in r[1]..r[3] {
                for x in r[0]..r[2] {
                    if round {
                        let u = (x as f64 + 0.5 - mx) / rx;
                        let v = (y as f64 + 0.5 - my) / ry;
                        if u * u + v * v > 1.0 {
                            continue;
                        }
                    }
                    let c = &mut self.cells[y * self.w + x];
                    if *c == FLOOR {
                        *c = kind;
                    }
                }
            }
            self.stamps.push(r);
        }
    }
}

/// Per-pixel ground points in the car frame, in raster cells.
#[derive(Debug, Clone, Default)]
pub(crate) struct RayTables {
    pub key: Option<(usize, usize, u64, u64, u64, u64)>,
    pub width: usize,
    pub height: usize,
    /// Rows above this see no ground (sky).
    pub first_ground_row: usize,
    /// Ground point forward / left of the car origin, in cells, for rows
    /// `first_ground_row..height`.
    pub gx: Vec<f32>,
    pub gy: Vec<f32>,
    /// Per-pixel scratch: raster indices, then blur.
    pub idx: Vec<u32>,
    pub scratch: Vec<u8>,
}

impl RayTables {
    pub fn ensure(
        &mut self,
        width: usize,
        height: usize,
        cam: &CameraConfig,
        look: &Look,
        inv_res: f64,
    ) {
        let key = (
            width,
            height,
            look.cam_height.to_bits(),
            look.cam_pitch_deg.to_bits(),
            cam.hfov_rad.to_bits(),
            cam.forward_m.to_bits() ^ inv_res.to_bits().rotate_left(17),
        );
        if self.key == Some(key) {
            return;
        }
        self.key = Some(key);
        self.width = width;
        self.height = height;
        let fx = (width as f64 / 2.0) / (cam.hfov_rad / 2.0).tan();
        let (cxp, cyp) = (width as f64 / 2.0, height as f64 / 2.0);
        let p = look.cam_pitch_deg.to_radians();
        let (sp, cp) = p.sin_cos();
        // Rows whose ray points at or above the horizon see sky; rays that
        // hit the ground very far away would all land on the raster's edge
        // anyway, so they are treated the same way.
        let mut first = height;
        for v in 0..height {
            let yd = (v as f64 + 0.5 - cyp) / fx;
            let dz = -sp - yd * cp;
            if dz < -1e-3 {
                first = v;
                break;
            }
        }
        self.first_ground_row = first;
        self.gx.clear();
        self.gy.clear();
        for v in first..height {
            let yd = (v as f64 + 0.5 - cyp) / fx;
            let dz = -sp - yd * cp;
            let dxf = cp - yd * sp;
            let t = look.cam_height / -dz;
            for u in 0..width {
                let xr = (u as f64 + 0.5 - cxp) / fx;
                self.gx.push(((cam.forward_m + t * dxf) * inv_res) as f32);
                self.gy.push((t * -xr * inv_res) as f32);
            }
        }
        self.idx.clear();
        self.idx.resize(width * height, 0);
        self.scratch.clear();
        self.scratch.resize(width * height * 3, 0);
    }
}

/// Renders one frame. `pose` is the car origin (x, y) and yaw.
#[allow(clippy::too_many_arguments)]
pub(crate) fn render(
    raster: &Raster,
    tables: &mut RayTables,
    look: &Look,
    pose: (f64, f64, f64),
    noise_seed: u32,
    out: &mut [u8],
    channels: Channels,
) {
    let (w, h) = (tables.width, tables.height);
    let first = tables.first_ground_row;
    let (s, c) = pose.2.sin_cos();
    let (s, c) = (s as f32, c as f32);
    let ox = ((pose.0 - raster.x0) * raster.inv_res) as f32;
    let oy = ((pose.1 - raster.y0) * raster.inv_res) as f32;
    let maxx = (raster.w - 1) as f32;
    let maxy = (raster.h - 1) as f32;
    let rw = raster.w as u32;
    let n_ground = (h - first) * w;
    let idx = &mut tables.idx[..n_ground];
    // Pass 1 (vectorisable): raster index of every ground pixel.
    for ((i, &gx), &gy) in idx.iter_mut().zip(&tables.gx).zip(&tables.gy) {
        // max/min (not clamp) map NaN to 0, so the values are finite and in
        // [0, max]: the unchecked conversion is sound and, unlike `as`
        // (saturating), compiles to one vector instruction.
        let x = (ox + c * gx - s * gy).max(0.0).min(maxx);
        let y = (oy + s * gx + c * gy).max(0.0).min(maxy);
        // SAFETY: x and y are finite, >= 0 and below 2^24 (raster size).
        let (xi, yi) = unsafe { (x.to_int_unchecked::<i32>(), y.to_int_unchecked::<i32>()) };
        *i = (yi as u32) * rw + xi as u32;
    }
    let cells = &raster.cells[..];
    match channels {
        Channels::Gray => {
            let (sky, ground) = out[..w * h].split_at_mut(first * w);
            sky.fill(look.gray[SKY as usize]);
            // Pass 2: gather.
            for (o, &i) in ground.iter_mut().zip(idx.iter()) {
                *o = look.gray[(cells[i as usize] & 15) as usize];
            }
        }
        Channels::Rgb => {
            let (sky, ground) = out[..w * h * 3].split_at_mut(first * w * 3);
            let skyc = look.rgb[SKY as usize];
            for px in sky.chunks_exact_mut(3) {
                px.copy_from_slice(&skyc);
            }
            for (o, &i) in ground.chunks_exact_mut(3).zip(idx.iter()) {
                o.copy_from_slice(&look.rgb[(cells[i as usize] & 15) as usize]);
            }
        }
    }
    let nbytes = w * h * channels.bytes_per_pixel();
    if look.blur {
        blur3(
            &mut out[..nbytes],
            &mut tables.scratch[..nbytes],
            w,
            h,
            channels.bytes_per_pixel(),
        );
    }
    if look.noise > 0 {
        let a = look.noise.min(127) as i32;
        let span = (a + 1) as u32;
        for (k, o) in out[..nbytes].iter_mut().enumerate() {
            let r = hash32(k as u32, noise_seed);
            // Sum of two uniforms: triangular noise in [-a, a].
            let n = ((r & 0xFFFF) % span) as i32 + ((r >> 16) % span) as i32 - a;
            *o = (*o as i32 + n).clamp(0, 255) as u8;
        }
    }
}

/// 3x3 binomial blur (1 2 1) in place, edges clamped.
fn blur3(img: &mut [u8], tmp: &mut [u8], w: usize, h: usize, ch: usize) {
    let stride = w * ch;
    // Horizontal pass into tmp.
    for y in 0..h {
        let row = &img[y * stride..(y + 1) * stride];
        let trow = &mut tmp[y * stride..(y + 1) * stride];
        for x in 0..w {
            let xl = x.saturating_sub(1);
            let xr = (x + 1).min(w - 1);
            for k in 0..ch {
                let v =
                    row[xl * ch + k] as u16 + 2 * row[x * ch + k] as u16 + row[xr * ch + k] as u16;
                trow[x * ch + k] = ((v + 2) / 4) as u8;
            }
        }
    }
    // Vertical pass back into img.
    for y in 0..h {
        let yu = y.saturating_sub(1);
        let yd = (y + 1).min(h - 1);
        for i in 0..stride {
            let v = tmp[yu * stride + i] as u16
                + 2 * tmp[y * stride + i] as u16
                + tmp[yd * stride + i] as u16;
            img[y * stride + i] = ((v + 2) / 4) as u8;
        }
    }
}
