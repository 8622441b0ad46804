//! Entropy decoding: the bit reader over the entropy-coded segment and the
//! Huffman tables, including the JPEG spec's Annex K tables for MJPEG frames
//! that carry no DHT segment.

use super::JpegError;

/// Codes up to this length decode with one table lookup; longer ones (rare
/// in practice: long codes are the improbable symbols) take a short loop.
const FAST_BITS: u32 = 9;

/// Annex K.3 tables: (code-length counts, symbols). Index 0 is luminance,
/// 1 chrominance, which is what UVC MJPEG cameras assume for table slots
/// 0 and 1 when they leave DHT out.
pub(super) const STD_DC: [([u8; 16], &[u8]); 2] = [
    (
        [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ),
    (
        [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    ),
];

#[rustfmt::skip]
pub(super) const STD_AC: [([u8; 16], &[u8]); 2] = [
    (
        [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d],
        &[
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
            0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
            0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
            0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
            0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
            0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
            0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
            0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
            0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
            0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
            0xf9, 0xfa,
        ],
    ),
    (
        [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
        &[
            0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
            0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
            0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
            0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
            0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
            0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
            0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
            0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
            0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
            0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
            0xf9, 0xfa,
        ],
    ),
];

/// A canonical Huffman table ready for decoding.
#[derive(Clone)]
pub(super) struct HuffTable {
    /// Indexed by the next FAST_BITS bits: `len << 8 | symbol`, or 0 when
    /// the code is longer than FAST_BITS (or invalid).
    fast: [u16; 1 << FAST_BITS],
    /// Same index, for blocks that are only moved past (chroma): the bits
    /// the symbol and its magnitude take together `<< 8 |` how far the
    /// coefficient index advances (run + 1; 16 for ZRL; 64 for EOB, which
    /// ends the block). One lookup and one shift per coefficient. 0 =
    /// take the slow path.
    skip: [u16; 1 << FAST_BITS],
    /// AC table (run/size symbols) or DC table (magnitude categories):
    /// decides what `skip` holds.
    ac: bool,
    /// `maxcode[l]`: one past the last code of length `l`, left-aligned to 16
    /// bits, so a 16-bit peek below it has a code of length <= l. Index 17 is
    /// a sentinel that stops the search.
    maxcode: [u32; 18],
    /// Symbol index = code + `valoffset[l]` for a code of length `l`.
    valoffset: [i32; 17],
    vals: [u8; 256],
    /// The raw spec, kept so a frame that repeats the previous frame's DHT
    /// (every frame of a recording does) skips the rebuild.
    counts: [u8; 16],
    nvals: usize,
}

impl HuffTable {
    pub(super) fn empty(ac: bool) -> Self {
        HuffTable {
            fast: [0; 1 << FAST_BITS],
            skip: [0; 1 << FAST_BITS],
            ac,
            maxcode: [0; 18],
            valoffset: [0; 17],
            vals: [0; 256],
            counts: [0; 16],
            nvals: 0,
        }
    }

    /// True when this table was built from exactly this spec.
    pub(super) fn same_spec(&self, counts: &[u8; 16], vals: &[u8]) -> bool {
        self.nvals > 0 && &self.counts == counts && &self.vals[..self.nvals] == vals
    }

    /// (Re)builds the table in place from a DHT spec (Annex C).
    pub(super) fn build(&mut self, counts: &[u8; 16], vals: &[u8]) -> Result<(), JpegError> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total == 0 || total > 256 || total != vals.len() {
            return Err(JpegError::Corrupt("DHT: bad symbol count"));
        }
        // Check the code space before touching the table: a length with
        // more codes than it has room for (three 1-bit codes) would index
        // past the lookup tables below, and a table left half-built with
        // the new spec recorded would pass `same_spec` on the next frame.
        let mut room: u32 = 0;
        for l in 1..=16u32 {
            room += counts[l as usize - 1] as u32;
            if room > 1 << l {
                return Err(JpegError::Corrupt("DHT: code lengths overflow"));
            }
            room <<= 1;
        }
        self.fast.fill(0);
        self.skip.fill(0);
        self.counts = *counts;
        self.vals[..total].copy_from_slice(vals);
        self.nvals = total;
        let mut code: u32 = 0;
        let mut k: usize = 0;
        for l in 1..=16u32 {
            let n = counts[l as usize - 1] as usize;
            self.valoffset[l as usize] = k as i32 - code as i32;
            for _ in 0..n {
                if l <= FAST_BITS {
                    // Every FAST_BITS-bit word that starts with this code.
                    let shift = FAST_BITS - l;
                    let first = (code << shift) as usize;
                    let entry = (l as u16) << 8 | vals[k] as u16;
                    self.fast[first..first + (1 << shift)].fill(entry);
                    if let Some(e) = self.skip_entry(l, vals[k]) {
                        self.skip[first..first + (1 << shift)].fill(e);
                    }
                }
                code += 1;
                k += 1;
            }
            debug_assert!(code <= 1 << l, "checked above");
            self.maxcode[l as usize] = code << (16 - l);
            code <<= 1;
        }
        self.maxcode[17] = u32::MAX;
        Ok(())
    }

    /// The `skip` entry for a code of length `l` and its symbol; None for
    /// symbols the slow path must judge (a DC category above 11).
    fn skip_entry(&self, l: u32, sym: u8) -> Option<u16> {
        let (bits, adv) = if self.ac {
            let (r, s) = (sym >> 4, sym & 15);
            let adv = match (r, s) {
                (_, 1..) => r + 1,
                (15, 0) => 16,
                _ => 64,
            };
            (l + s as u32, adv)
        } else if sym <= 11 {
            (l + sym as u32, 0)
        } else {
            return None;
        };
        Some((bits as u16) << 8 | adv as u16)
    }
}

/// Reads bits from an entropy-coded segment: removes 0xFF00 stuffing, stops
/// at a marker or the end of the input (then feeds zeros, as decoders
/// conventionally do) and counts the zero bytes it fed. A valid scan never
/// needs them (its last byte is padded with 1-bits, F.1.2.3), so a decoder
/// that used one has run past the scan's data: see `overran`.
///
/// `Copy`, and every out-of-line (cold) method takes and returns the reader
/// by value: a `&mut self` passed to a function that is not inlined lets
/// the reader's address escape, and the compiler then keeps the bit buffer
/// in memory, adding a store-to-load round trip to every symbol.
#[derive(Clone, Copy)]
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pub(super) pos: usize,
    /// Unread bits, MSB first.
    buf: u64,
    nbits: u32,
    /// A marker was reached at `pos`; no more data bytes until it is handled.
    marker: bool,
    /// Zero bytes fed that are not in the scan (at a marker or the end of
    /// the input).
    pad: u32,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            buf: 0,
            nbits: 0,
            marker: false,
            pad: 0,
        }
    }

    /// Tops the buffer up to at least 57 bits. Callers refill when fewer than
    /// 32 remain: that covers one symbol (<= 16 bits) plus its value (<= 15).
    #[inline(always)]
    pub(super) fn refill(&mut self) {
        // Fast path: copy whole bytes at once when none of them is 0xFF
        // (no stuffing, no marker), which is nearly always the case.
        if !self.marker && self.pos + 8 <= self.data.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.data[self.pos..self.pos + 8]);
            let w = u64::from_be_bytes(w);
            let n = (63 - self.nbits) >> 3; // bytes that fit, 1..=7
            let take = w & !(u64::MAX >> (8 * n));
            // A byte of `take` is 0xFF iff that byte of !take is zero; the
            // classic has-zero-byte test on !take (bytes not taken are 0x00
            // in take, hence 0xFF in !take, and never flag).
            let inv = !take;
            let has_ff = inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080;
            if has_ff == 0 {
                self.buf |= take >> self.nbits;
                self.nbits += 8 * n;
                self.pos += n as usize;
                return;
            }
        }
        *self = self.refill_slow();
    }

    #[cold]
    #[inline(never)]
    fn refill_slow(mut self) -> Self {
        while self.nbits <= 56 {
            let byte = if self.marker {
                self.pad += 1;
                0
            } else if let Some(&b) = self.data.get(self.pos) {
                if b != 0xFF {
                    self.pos += 1;
                    b
                } else {
                    match self.data.get(self.pos + 1) {
                        Some(0) => {
                            self.pos += 2;
                            0xFF
                        }
                        Some(_) => {
                            self.marker = true;
                            self.pad += 1;
                            0
                        }
                        None => {
                            self.pos = self.data.len();
                            self.pad += 1;
                            0
                        }
                    }
                }
            } else {
                self.pad += 1;
                0
            };
            self.buf |= (byte as u64) << (56 - self.nbits);
            self.nbits += 8;
        }
        self
    }

    #[inline(always)]
    pub(super) fn ensure(&mut self) {
        if self.nbits < 32 {
            self.refill();
        }
    }

    /// Decodes one Huffman symbol. Needs `ensure()` first.
    #[inline(always)]
    pub(super) fn symbol(&mut self, t: &HuffTable) -> Result<u8, JpegError> {
        let e = t.fast[(self.buf >> (64 - FAST_BITS)) as usize];
        if e != 0 {
            self.consume((e >> 8) as u32);
            return Ok(e as u8);
        }
        let (r, sym) = self.symbol_slow(t);
        *self = r;
        sym
    }

    /// Moves past one symbol and its magnitude bits; returns how far the
    /// coefficient index advances (see `HuffTable::skip`). Needs `ensure()`
    /// first.
    #[inline(always)]
    pub(super) fn skip_coefficient(&mut self, t: &HuffTable) -> Result<u32, JpegError> {
        let e = t.skip[(self.buf >> (64 - FAST_BITS)) as usize];
        if e != 0 {
            self.consume((e >> 8) as u32);
            return Ok((e & 0xFF) as u32);
        }
        let (r, adv) = self.skip_slow(t);
        *self = r;
        adv
    }

    #[cold]
    #[inline(never)]
    fn skip_slow(self, t: &HuffTable) -> (Self, Result<u32, JpegError>) {
        let (mut r, sym) = self.symbol_slow(t);
        let sym = match sym {
            Ok(s) => s,
            Err(e) => return (r, Err(e)),
        };
        if !t.ac {
            if sym > 11 {
                let e = JpegError::Corrupt("entropy data: DC magnitude above 11 bits");
                return (r, Err(e));
            }
            r.consume(sym as u32);
            return (r, Ok(0));
        }
        r.consume((sym & 15) as u32);
        let adv = match (sym >> 4, sym & 15) {
            (run, 1..) => run as u32 + 1,
            (15, 0) => 16,
            _ => 64,
        };
        (r, Ok(adv))
    }

    #[cold]
    #[inline(never)]
    fn symbol_slow(mut self, t: &HuffTable) -> (Self, Result<u8, JpegError>) {
        let c = (self.buf >> 48) as u32;
        let mut l = FAST_BITS as usize + 1;
        while c >= t.maxcode[l] {
            l += 1;
        }
        if l > 16 {
            let e = JpegError::Corrupt("entropy data: invalid Huffman code");
            return (self, Err(e));
        }
        let idx = (c >> (16 - l)) as i32 + t.valoffset[l];
        self.consume(l as u32);
        (self, Ok(t.vals[(idx as usize) & 255]))
    }

    #[inline(always)]
    pub(super) fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.nbits -= n;
    }

    /// Reads an `s`-bit magnitude and sign-extends it (F.2.2.1 EXTEND).
    /// `s` is 1..=15; needs `ensure()` first.
    #[inline(always)]
    pub(super) fn extend(&mut self, s: u32) -> i32 {
        let v = (self.buf >> (64 - s)) as i32;
        self.consume(s);
        // Codes with a leading 0 bit are negative: v - (2^s - 1).
        if v < 1 << (s - 1) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    /// True when the decoder used bits that were never in the scan. The
    /// fed zeros sit behind every real bit in `buf`, so they have been
    /// consumed exactly when fewer bits than they add up to remain.
    #[inline(always)]
    pub(super) fn overran(&self) -> bool {
        self.pad * 8 > self.nbits
    }

    /// True when reading stopped at a marker (rather than the end of the input).
    pub(super) fn at_marker(&self) -> bool {
        self.marker
    }

    /// Drops buffered bits and moves to the next marker, which must be RSTn
    /// (a restart interval ends byte-aligned right before it).
    #[inline(never)]
    pub(super) fn restart(mut self) -> Result<Self, JpegError> {
        let d = self.data;
        let mut i = self.pos;
        loop {
            if i + 1 >= d.len() {
                return Err(JpegError::Truncated("entropy data before RST marker"));
            }
            if d[i] == 0xFF && d[i + 1] != 0 && d[i + 1] != 0xFF {
                break;
            }
            i += 1;
        }
        if !(0xD0..=0xD7).contains(&d[i + 1]) {
            return Err(JpegError::Corrupt(
                "entropy data: expected an RST marker at the end of a restart interval",
            ));
        }
        self.pos = i + 2;
        self.buf = 0;
        self.nbits = 0;
        self.marker = false;
        // The zeros fed at this RST were dropped with the buffer; counting
        // them on would call a long run of valid intervals an overrun.
        self.pad = 0;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (fuzz/regressions/jpeg/
    /// dht-codes-overflow-after-a-full-length: counts 2, 0, 3, the two
    /// 1-bit codes already fill the code space): a DHT with more codes than
    /// fit indexed past the fast lookup table and panicked.
    #[test]
    fn a_dht_with_more_codes_than_fit_is_refused_not_a_panic() {
        for (len, n) in [(1usize, 3u8), (2, 5), (3, 9)] {
            // One code more than a length holds: three 1-bit codes, five
            // 2-bit ones, nine 3-bit ones.
            let mut counts = [0u8; 16];
            counts[len - 1] = n;
            let vals = vec![0u8; n as usize];
            let mut t = HuffTable::empty(true);
            assert!(
                matches!(t.build(&counts, &vals), Err(JpegError::Corrupt(_))),
                "{n} codes of length {len}"
            );
            // Nothing of the refused spec is kept: the next frame with the
            // same DHT is refused again, not decoded with a broken table.
            assert!(!t.same_spec(&counts, &vals));
        }
        // The fuzzer's counts, and an overflow past the fast lookup's reach.
        let mut counts = [0u8; 16];
        counts[..3].copy_from_slice(&[2, 0, 3]);
        assert!(HuffTable::empty(true).build(&counts, &[0; 5]).is_err());
        // Two 1-bit codes fill the space; one more 12-bit code (longer than
        // the fast lookup) does not fit.
        let mut counts = [0u8; 16];
        counts[0] = 2;
        counts[11] = 1;
        let vals = vec![0u8; 3];
        let mut t = HuffTable::empty(false);
        assert!(t.build(&counts, &vals).is_err());
        assert!(!t.same_spec(&counts, &vals));
    }

    #[test]
    fn a_full_code_space_is_accepted() {
        // Two 1-bit codes fill the space exactly.
        let mut counts = [0u8; 16];
        counts[0] = 2;
        let mut t = HuffTable::empty(false);
        t.build(&counts, &[0, 1]).unwrap();
        assert!(t.same_spec(&counts, &[0, 1]));
        for (c, v) in STD_DC.iter().chain(STD_AC.iter()) {
            HuffTable::empty(false).build(c, v).unwrap();
        }
    }
}
