//! A tiny baseline JPEG encoder for tests: the `image` crate only writes
//! 4:4:4 with DHT and no restart markers, and cameras send 4:2:2 or 4:2:0,
//! often with restart markers and without DHT. Slow (naive float DCT) and
//! simple on purpose.
#![allow(clippy::needless_range_loop)] // index maths reads clearer

use super::huffman::{STD_AC, STD_DC};
use super::ZIGZAG;

#[derive(Clone, Copy, Debug)]
pub struct EncOpts {
    pub quality: u8,
    /// Luma sampling factors; chroma is always 1x1. (2,2) = 4:2:0,
    /// (2,1) = 4:2:2, (1,1) = 4:4:4.
    pub luma_h: u8,
    pub luma_v: u8,
    /// MCUs per restart interval, 0 = no DRI.
    pub restart: u16,
    /// Write DHT segments (false = MJPEG style, Annex K tables implied).
    pub dht: bool,
    /// One scan per component, in the order Cb, Y, Cr (a decoder must skip
    /// a chroma scan to reach luma). Only for 3 components.
    pub separate_scans: bool,
    /// Progressive (SOF2) by spectral selection only: one DC scan of all
    /// components, then one AC scan (1..63) per component. The same
    /// coefficients as baseline, so a general decoder gives the same image.
    pub progressive: bool,
}

impl Default for EncOpts {
    fn default() -> Self {
        EncOpts {
            quality: 85,
            luma_h: 2,
            luma_v: 2,
            restart: 0,
            dht: true,
            separate_scans: false,
            progressive: false,
        }
    }
}

const STD_LUMA_Q: [u8; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
const STD_CHROMA_Q: [u8; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// IJG quality scaling; returns the table in zigzag order.
fn qtable(base: &[u8; 64], quality: u8) -> [u8; 64] {
    let q = quality.clamp(1, 100) as u32;
    let s = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let mut t = [0u8; 64];
    for k in 0..64 {
        let v = (base[ZIGZAG[k] as usize] as u32 * s + 50) / 100;
        t[k] = v.clamp(1, 255) as u8;
    }
    t
}

/// (code, length) per symbol.
fn codes(counts: &[u8; 16], vals: &[u8]) -> [(u16, u8); 256] {
    let mut t = [(0u16, 0u8); 256];
    let (mut code, mut k) = (0u16, 0usize);
    for l in 1..=16u8 {
        for _ in 0..counts[l as usize - 1] {
            t[vals[k] as usize] = (code, l);
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    t
}

struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, code: u32, len: u32) {
        for i in (0..len).rev() {
            self.acc = self.acc << 1 | (code >> i & 1);
            self.n += 1;
            if self.n == 8 {
                let b = self.acc as u8;
                self.out.push(b);
                if b == 0xFF {
                    self.out.push(0);
                }
                self.acc = 0;
                self.n = 0;
            }
        }
    }
    /// Pad the last byte with 1 bits (F.1.2.3).
    fn flush(&mut self) {
        while self.n != 0 {
            self.put(1, 1);
        }
    }
}

struct Plane {
    w: usize,
    h: usize,
    /// Padded (edge-replicated) to whole MCUs.
    pw: usize,
    data: Vec<f32>,
}

impl Plane {
    fn block(&self, bx: usize, by: usize) -> [f32; 64] {
        let mut b = [0f32; 64];
        for y in 0..8 {
            for x in 0..8 {
                b[y * 8 + x] = self.data[(by * 8 + y) * self.pw + bx * 8 + x] - 128.0;
            }
        }
        b
    }
}

fn fdct_quant(b: &[f32; 64], q: &[u8; 64]) -> [i32; 64] {
    let mut out = [0i32; 64];
    for (k, o) in out.iter_mut().enumerate() {
        let z = ZIGZAG[k] as usize;
        let (u, v) = (z >> 3, z & 7);
        let cu = if u == 0 { 0.5f64.sqrt() } else { 1.0 };
        let cv = if v == 0 { 0.5f64.sqrt() } else { 1.0 };
        let mut s = 0f64;
        for y in 0..8 {
            for x in 0..8 {
                s += b[y * 8 + x] as f64
                    * ((2 * y + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                    * ((2 * x + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0).cos();
            }
        }
        *o = (s * cu * cv / 4.0 / q[k] as f64).round() as i32;
    }
    out
}

fn magnitude(v: i32) -> (u32, u32) {
    if v == 0 {
        return (0, 0);
    }
    let s = 32 - v.unsigned_abs().leading_zeros();
    let bits = if v < 0 {
        (v - 1) as u32 & ((1 << s) - 1)
    } else {
        v as u32
    };
    (s, bits)
}

struct Coder {
    dc: [(u16, u8); 256],
    ac: [(u16, u8); 256],
    q: [u8; 64],
    pred: i32,
}

/// Which coefficients a scan carries: both (sequential), or a progressive
/// scan's DC or AC band.
#[derive(Clone, Copy, PartialEq)]
enum Band {
    All,
    Dc,
    Ac,
}

fn encode_block(bits: &mut Bits, c: &mut Coder, block: &[f32; 64], band: Band) {
    let z = fdct_quant(block, &c.q);
    if band != Band::Ac {
        let diff = z[0] - c.pred;
        c.pred = z[0];
        let (s, b) = magnitude(diff);
        let (code, len) = c.dc[s as usize];
        bits.put(code as u32, len as u32);
        bits.put(b, s);
    }
    if band == Band::Dc {
        return;
    }
    let mut run = 0;
    for &v in &z[1..] {
        if v == 0 {
            run += 1;
            continue;
        }
        while run >= 16 {
            let (code, len) = c.ac[0xF0];
            bits.put(code as u32, len as u32);
            run -= 16;
        }
        let (s, b) = magnitude(v);
        let (code, len) = c.ac[(run << 4 | s) as usize];
        bits.put(code as u32, len as u32);
        bits.put(b, s);
        run = 0;
    }
    // EOB (in a progressive AC scan: EOB0, a run of one block).
    if run > 0 {
        let (code, len) = c.ac[0];
        bits.put(code as u32, len as u32);
    }
}

fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Encodes `pixels` (gray if `channels == 1`, else RGB) as baseline JPEG.
pub fn encode(pixels: &[u8], w: usize, h: usize, channels: usize, o: EncOpts) -> Vec<u8> {
    assert!(channels == 1 || channels == 3);
    let ncomp = channels;
    let (hm, vm) = if ncomp == 1 {
        (1, 1)
    } else {
        (o.luma_h as usize, o.luma_v as usize)
    };
    let (mcu_w, mcu_h) = (8 * hm, 8 * vm);
    let (mx, my) = (w.div_ceil(mcu_w), h.div_ceil(mcu_h));

    // Colour conversion (JFIF) and chroma averaging, with edge replication.
    let px = |x: usize, y: usize, c: usize| -> f32 {
        let (x, y) = (x.min(w - 1), y.min(h - 1));
        pixels[(y * w + x) * channels + c] as f32
    };
    let ycc = |x: usize, y: usize| -> [f32; 3] {
        if channels == 1 {
            return [px(x, y, 0), 128.0, 128.0];
        }
        let (r, g, b) = (px(x, y, 0), px(x, y, 1), px(x, y, 2));
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0,
            0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0,
        ]
    };
    let mut planes = Vec::new();
    for c in 0..ncomp {
        let (sx, sy) = if c == 0 { (1, 1) } else { (hm, vm) };
        let (pw, ph) = (mx * mcu_w / sx, my * mcu_h / sy);
        let mut data = vec![0f32; pw * ph];
        for y in 0..ph {
            for x in 0..pw {
                let mut s = 0f32;
                for dy in 0..sy {
                    for dx in 0..sx {
                        s += ycc(x * sx + dx, y * sy + dy)[c];
                    }
                }
                data[y * pw + x] = s / (sx * sy) as f32;
            }
        }
        planes.push(Plane {
            w: w.div_ceil(sx),
            h: h.div_ceil(sy),
            pw,
            data,
        });
    }

    let qy = qtable(&STD_LUMA_Q, o.quality);
    let qc = qtable(&STD_CHROMA_Q, o.quality);
    let mut out = vec![0xFF, 0xD8];
    let mut dqt = vec![0u8];
    dqt.extend_from_slice(&qy);
    if ncomp == 3 {
        dqt.push(1);
        dqt.extend_from_slice(&qc);
    }
    segment(&mut out, 0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend_from_slice(&(h as u16).to_be_bytes());
    sof.extend_from_slice(&(w as u16).to_be_bytes());
    sof.push(ncomp as u8);
    for c in 0..ncomp {
        let (sh, sv) = if c == 0 { (hm, vm) } else { (1, 1) };
        sof.extend_from_slice(&[c as u8 + 1, (sh << 4 | sv) as u8, (c > 0) as u8]);
    }
    segment(&mut out, if o.progressive { 0xC2 } else { 0xC0 }, &sof);
    if o.dht {
        for (class, std) in [(0u8, &STD_DC), (1, &STD_AC)] {
            for (id, (counts, vals)) in std.iter().enumerate().take(if ncomp == 1 { 1 } else { 2 })
            {
                let mut p = vec![class << 4 | id as u8];
                p.extend_from_slice(counts);
                p.extend_from_slice(vals);
                segment(&mut out, 0xC4, &p);
            }
        }
    }
    if o.restart > 0 {
        segment(&mut out, 0xDD, &o.restart.to_be_bytes());
    }
    let coder = |c: usize| {
        let t = (c > 0) as usize;
        Coder {
            dc: codes(&STD_DC[t].0, STD_DC[t].1),
            ac: codes(&STD_AC[t].0, STD_AC[t].1),
            q: if c == 0 { qy } else { qc },
            pred: 0,
        }
    };

    let write_scan = |out: &mut Vec<u8>, comps: &[usize], band: Band| {
        let mut sos = vec![comps.len() as u8];
        for &c in comps {
            sos.extend_from_slice(&[c as u8 + 1, if c == 0 { 0x00 } else { 0x11 }]);
        }
        sos.extend_from_slice(match band {
            Band::All => &[0, 63, 0],
            Band::Dc => &[0, 0, 0],
            Band::Ac => &[1, 63, 0],
        });
        segment(out, 0xDA, &sos);
        let mut coders: Vec<Coder> = comps.iter().map(|&c| coder(c)).collect();
        let mut bits = Bits {
            out: Vec::new(),
            acc: 0,
            n: 0,
        };
        // Units: MCUs when interleaved, blocks of the one component if not.
        let units: Vec<Vec<(usize, usize, usize)>> = if comps.len() == 1 {
            let p = &planes[comps[0]];
            let (bw, bh) = (p.w.div_ceil(8), p.h.div_ceil(8));
            (0..bw * bh).map(|i| vec![(0, i % bw, i / bw)]).collect()
        } else {
            (0..mx * my)
                .map(|i| {
                    let (ux, uy) = (i % mx, i / mx);
                    let mut v = Vec::new();
                    for (si, &c) in comps.iter().enumerate() {
                        let (sh, sv) = if c == 0 { (hm, vm) } else { (1, 1) };
                        for y in 0..sv {
                            for x in 0..sh {
                                v.push((si, ux * sh + x, uy * sv + y));
                            }
                        }
                    }
                    v
                })
                .collect()
        };
        for (i, unit) in units.iter().enumerate() {
            if o.restart > 0 && i > 0 && i % o.restart as usize == 0 {
                bits.flush();
                let n = (i / o.restart as usize - 1) % 8;
                bits.out.extend_from_slice(&[0xFF, 0xD0 + n as u8]);
                coders.iter_mut().for_each(|c| c.pred = 0);
            }
            for &(si, bx, by) in unit {
                let b = planes[comps[si]].block(bx, by);
                encode_block(&mut bits, &mut coders[si], &b, band);
            }
        }
        bits.flush();
        out.extend_from_slice(&bits.out);
    };
    if o.progressive {
        write_scan(&mut out, &(0..ncomp).collect::<Vec<_>>(), Band::Dc);
        for c in 0..ncomp {
            write_scan(&mut out, &[c], Band::Ac);
        }
    } else if ncomp == 3 && o.separate_scans {
        for c in [1, 0, 2] {
            write_scan(&mut out, &[c], Band::All);
        }
    } else {
        write_scan(&mut out, &(0..ncomp).collect::<Vec<_>>(), Band::All);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}
