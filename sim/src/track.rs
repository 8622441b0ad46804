//! Tracks: loading DeepRacer `.npy` files and the built-in tracks, and the
//! centre-line geometry every other part of the simulator asks about.

use std::path::{Path, PathBuf};

use crate::npy::{self, NpyError};

/// Largest track file read: a real DeepRacer track is under 10 kB (150
/// rows); 16 MiB is 350,000 rows, far past any track, and keeps a huge or
/// endless file (`/dev/zero`) from eating the car's memory.
pub const MAX_TRACK_FILE_BYTES: u64 = 16 << 20;
/// No coordinate of a DeepRacer track (metres, a few to ~30 m across, near
/// the origin) comes anywhere near this.
pub const MAX_COORDINATE_M: f64 = 1000.0;
/// A centre line whose points all lie within this of each other is not a
/// track (and its segment lengths may underflow to zero).
pub const MIN_EXTENT_M: f64 = 1e-3;

/// Names of the tracks compiled into the crate, in display order.
const BUILTINS: &[(&str, &[u8])] = &[
    ("oval", include_bytes!("../tracks/oval.npy")),
    ("technical", include_bytes!("../tracks/technical.npy")),
    ("speedway", include_bytes!("../tracks/speedway.npy")),
];

/// Why a track could not be loaded. Every variant names the file (or the
/// built-in name) so a user knows which input to fix.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("{path}: cannot read track file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Npy {
        file: String,
        #[source]
        source: NpyError,
    },
    #[error("{file}: wrong shape ({rows}, {cols}): a track needs shape (N, 6) = centre, inner, outer (x, y)")]
    Shape {
        file: String,
        rows: usize,
        cols: usize,
    },
    #[error("{file}: row {row} column {col} is {value} (all coordinates must be finite)")]
    NotFinite {
        file: String,
        row: usize,
        col: usize,
        value: f64,
    },
    #[error("{path}: cannot read track file: {reason}")]
    NotReadable { path: PathBuf, reason: String },
    #[error("{file}: row {row} column {col} is {value} m, absurd for a DeepRacer track (metres, a few to ~30 m across; limit {MAX_COORDINATE_M} m){hint}")]
    Magnitude {
        file: String,
        row: usize,
        col: usize,
        value: f64,
        /// Why it might be so (millimetres), or empty.
        hint: &'static str,
    },
    #[error("{file}: the centre line is degenerate: all its points lie within {extent:e} m of each other (DeepRacer tracks are metres across)")]
    Degenerate { file: String, extent: f64 },
    #[error("{file}: only {distinct} distinct centre-line points (need at least 3)")]
    TooFewPoints { file: String, distinct: usize },
    #[error("unknown track '{name}': not a built-in ({builtins}) and no such file")]
    Unknown { name: String, builtins: String },
}

/// Where a point lies relative to the centre line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackPos {
    /// Index of the centre-line segment (from waypoint `segment` to the next).
    pub segment: usize,
    /// Distance along that segment from its first waypoint, metres.
    pub along: f64,
    /// Arc length from the start line, metres, in `[0, length)`.
    pub s: f64,
    /// Signed distance to the centre line, metres, positive to the left.
    pub offset: f64,
}

impl TrackPos {
    pub fn distance_from_center(&self) -> f64 {
        self.offset.abs()
    }
    pub fn is_left_of_center(&self) -> bool {
        self.offset > 0.0
    }
}

/// A closed race track: centre line with a border on each side.
#[derive(Debug, Clone)]
pub struct Track {
    name: String,
    source: Option<PathBuf>,
    /// Centre-line waypoints exactly as in the file (the DeepRacer `waypoints`).
    waypoints: Vec<[f64; 2]>,
    inner: Vec<[f64; 2]>,
    outer: Vec<[f64; 2]>,
    closed_in_file: bool,
    seg_s0: Vec<f64>,
    seg_len: Vec<f64>,
    seg_dir: Vec<[f64; 2]>,
    /// Distance from centre to the outer edge of the left / right border
    /// line at each waypoint.
    half_left: Vec<f64>,
    half_right: Vec<f64>,
    length: f64,
    width: f64,
}

impl Track {
    /// Loads a DeepRacer `.npy` track file.
    pub fn load(path: impl AsRef<Path>) -> Result<Track, TrackError> {
        let path = path.as_ref();
        // Bounded, regular files only: a FIFO or /dev/zero is refused at once.
        let bytes = safe_io::read_limited(path, MAX_TRACK_FILE_BYTES).map_err(|e| match e {
            safe_io::ReadError::Io { path, source } => TrackError::Io { path, source },
            e => TrackError::NotReadable {
                path: path.to_path_buf(),
                reason: e.reason(),
            },
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let mut t = Track::from_npy_bytes(&name, &path.display().to_string(), &bytes)?;
        t.source = Some(path.to_path_buf());
        Ok(t)
    }

    /// A track compiled into the crate, by name (see [`Track::builtin_names`]).
    pub fn builtin(name: &str) -> Option<Track> {
        BUILTINS.iter().find(|(n, _)| *n == name).map(|(n, bytes)| {
            Track::from_npy_bytes(n, &format!("built-in track '{n}'"), bytes)
                .expect("built-in tracks are checked by tests")
        })
    }

    pub fn builtin_names() -> Vec<&'static str> {
        BUILTINS.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in track name, else a path to a `.npy` file.
    pub fn resolve(name_or_path: &str) -> Result<Track, TrackError> {
        if let Some(t) = Track::builtin(name_or_path) {
            return Ok(t);
        }
        let p = Path::new(name_or_path);
        if p.exists() {
            return Track::load(p);
        }
        Err(TrackError::Unknown {
            name: name_or_path.to_string(),
            builtins: Track::builtin_names().join(", "),
        })
    }

    /// Parses `.npy` bytes; `file` is used in error messages.
    pub fn from_npy_bytes(name: &str, file: &str, bytes: &[u8]) -> Result<Track, TrackError> {
        let a = npy::parse_f64_2d(bytes).map_err(|source| TrackError::Npy {
            file: file.to_string(),
            source,
        })?;
        if a.cols != 6 {
            return Err(TrackError::Shape {
                file: file.to_string(),
                rows: a.rows,
                cols: a.cols,
            });
        }
        let rows: Vec<[f64; 6]> = a
            .data
            .chunks_exact(6)
            .map(|c| c.try_into().expect("chunk of 6"))
            .collect();
        Track::from_rows(name, file, &rows)
    }

    /// Builds a track from rows `[cx, cy, ix, iy, ox, oy]`.
    pub fn from_rows(name: &str, file: &str, rows: &[[f64; 6]]) -> Result<Track, TrackError> {
        for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                if !v.is_finite() {
                    return Err(TrackError::NotFinite {
                        file: file.to_string(),
                        row: r,
                        col: c,
                        value: *v,
                    });
                }
            }
        }
        let mut distinct: Vec<[f64; 2]> = Vec::new();
        for r in rows {
            let p = [r[0], r[1]];
            if !distinct.contains(&p) {
                distinct.push(p);
                if distinct.len() >= 3 {
                    break;
                }
            }
        }
        if distinct.len() < 3 {
            return Err(TrackError::TooFewPoints {
                file: file.to_string(),
                distinct: distinct.len(),
            });
        }
        check_magnitudes(file, rows)?;
        let waypoints: Vec<[f64; 2]> = rows.iter().map(|r| [r[0], r[1]]).collect();
        let inner: Vec<[f64; 2]> = rows.iter().map(|r| [r[2], r[3]]).collect();
        let outer: Vec<[f64; 2]> = rows.iter().map(|r| [r[4], r[5]]).collect();
        let n = waypoints.len();
        let closed_in_file = waypoints[0] == waypoints[n - 1];
        // A file that does not repeat its first row is closed by an implicit
        // segment from the last waypoint back to the first.
        let nseg = if closed_in_file { n - 1 } else { n };
        let mut seg_s0 = Vec::with_capacity(nseg);
        let mut seg_len = Vec::with_capacity(nseg);
        let mut seg_dir = Vec::with_capacity(nseg);
        let mut s = 0.0;
        for i in 0..nseg {
            let a = waypoints[i];
            let b = waypoints[(i + 1) % n];
            let d = [b[0] - a[0], b[1] - a[1]];
            let l = (d[0] * d[0] + d[1] * d[1]).sqrt();
            seg_s0.push(s);
            seg_len.push(l);
            seg_dir.push(if l > 0.0 {
                [d[0] / l, d[1] / l]
            } else {
                [0.0, 0.0]
            });
            s += l;
        }
        // Zero-length segments (repeated waypoints) take their neighbour's
        // direction so every segment has a usable heading. The search is
        // bounded: if every segment were zero-length (coordinates so small
        // their differences underflow, like 1e-200) it used to spin forever.
        for i in 0..nseg {
            if seg_len[i] == 0.0 {
                let next = (1..nseg)
                    .map(|k| (i + k) % nseg)
                    .find(|&j| seg_len[j] > 0.0)
                    .ok_or_else(|| TrackError::Degenerate {
                        file: file.to_string(),
                        extent: 0.0,
                    })?;
                seg_dir[i] = seg_dir[next];
            }
        }
        if !(s.is_finite() && s > 0.0) {
            return Err(TrackError::Degenerate {
                file: file.to_string(),
                extent: s,
            });
        }
        let mut half_left = Vec::with_capacity(n);
        let mut half_right = Vec::with_capacity(n);
        for i in 0..n {
            let si = if i < nseg { i } else { nseg - 1 };
            let sp = if i == 0 {
                nseg - 1
            } else {
                (i - 1).min(nseg - 1)
            };
            let dir = [
                seg_dir[si][0] + seg_dir[sp][0],
                seg_dir[si][1] + seg_dir[sp][1],
            ];
            let c = waypoints[i];
            let side = |p: [f64; 2]| dir[0] * (p[1] - c[1]) - dir[1] * (p[0] - c[0]);
            let dist = |p: [f64; 2]| ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt();
            let (l, r) = if side(inner[i]) >= side(outer[i]) {
                (inner[i], outer[i])
            } else {
                (outer[i], inner[i])
            };
            half_left.push(dist(l));
            half_right.push(dist(r));
        }
        let width = (0..n).map(|i| half_left[i] + half_right[i]).sum::<f64>() / n as f64;
        Ok(Track {
            name: name.to_string(),
            source: None,
            waypoints,
            inner,
            outer,
            closed_in_file,
            seg_s0,
            seg_len,
            seg_dir,
            half_left,
            half_right,
            length: s,
            width,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file the track came from, `None` for a built-in.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
    /// Centre-line waypoints as in the file (DeepRacer `waypoints`).
    pub fn waypoints(&self) -> &[[f64; 2]] {
        &self.waypoints
    }
    pub fn inner_border(&self) -> &[[f64; 2]] {
        &self.inner
    }
    pub fn outer_border(&self) -> &[[f64; 2]] {
        &self.outer
    }
    /// Whether the file repeated its first row as its last.
    pub fn closed_in_file(&self) -> bool {
        self.closed_in_file
    }
    /// Centre-line length, metres.
    pub fn length(&self) -> f64 {
        self.length
    }
    /// Mean distance between the two borders' outer edges, metres
    /// (DeepRacer `track_width`).
    pub fn width(&self) -> f64 {
        self.width
    }
    pub fn segment_count(&self) -> usize {
        self.seg_len.len()
    }
    pub fn segment_len(&self, seg: usize) -> f64 {
        self.seg_len[seg]
    }
    pub fn segment_start_s(&self, seg: usize) -> f64 {
        self.seg_s0[seg]
    }

    /// Progress 0-100 along the lap for an arc length (wraps around).
    pub fn progress_of(&self, s: f64) -> f64 {
        self.wrap_s(s) / self.length * 100.0
    }

    /// Arc length wrapped into `[0, length)`.
    pub fn wrap_s(&self, s: f64) -> f64 {
        let w = s.rem_euclid(self.length);
        if w >= self.length {
            0.0
        } else {
            w
        }
    }

    /// Signed shortest arc distance from `s_from` to `s_to` around the loop,
    /// in `(-length/2, length/2]`.
    pub fn arc_delta(&self, s_from: f64, s_to: f64) -> f64 {
        let mut d = (s_to - s_from).rem_euclid(self.length);
        if d > self.length / 2.0 {
            d -= self.length;
        }
        d
    }

    /// Waypoint indices `[previous, next]` around a segment.
    pub fn closest_waypoints(&self, seg: usize) -> [usize; 2] {
        [seg, (seg + 1) % self.waypoints.len()]
    }

    /// Heading of the centre line on a segment, radians.
    pub fn segment_heading(&self, seg: usize) -> f64 {
        let d = self.seg_dir[seg];
        d[1].atan2(d[0])
    }

    /// Segment containing arc length `s` (wrapped).
    pub fn segment_at(&self, s: f64) -> usize {
        let s = self.wrap_s(s);
        // total_cmp: a NaN position (a car that flew off) must not panic.
        match self.seg_s0.binary_search_by(|v| v.total_cmp(&s)) {
            Ok(i) => {
                // Skip zero-length segments that share this start.
                let mut i = i;
                while i + 1 < self.seg_len.len() && self.seg_len[i] == 0.0 {
                    i += 1;
                }
                i
            }
            // 0 only for -0.0 or a negative NaN, which belong to the start.
            Err(i) => i.saturating_sub(1).min(self.seg_len.len() - 1),
        }
    }

    /// Centre-line point and heading (radians) at arc length `s`.
    pub fn point_at(&self, s: f64) -> ([f64; 2], f64) {
        let seg = self.segment_at(s);
        let along = self.wrap_s(s) - self.seg_s0[seg];
        let a = self.waypoints[seg];
        let d = self.seg_dir[seg];
        ([a[0] + d[0] * along, a[1] + d[1] * along], d[1].atan2(d[0]))
    }

    /// Half-widths (left, right) to the borders' outer edges at a position.
    pub fn half_widths(&self, seg: usize, along: f64) -> (f64, f64) {
        let n = self.waypoints.len();
        let j = (seg + 1) % n;
        let l = self.seg_len[seg];
        let f = if l > 0.0 {
            (along / l).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (
            self.half_left[seg] + (self.half_left[j] - self.half_left[seg]) * f,
            self.half_right[seg] + (self.half_right[j] - self.half_right[seg]) * f,
        )
    }

    fn project(&self, seg: usize, p: [f64; 2]) -> (f64, f64, f64) {
        // Returns (squared distance, along, signed offset).
        let a = self.waypoints[seg];
        let d = self.seg_dir[seg];
        let v = [p[0] - a[0], p[1] - a[1]];
        let along = (v[0] * d[0] + v[1] * d[1]).clamp(0.0, self.seg_len[seg]);
        let q = [a[0] + d[0] * along, a[1] + d[1] * along];
        let w = [p[0] - q[0], p[1] - q[1]];
        let d2 = w[0] * w[0] + w[1] * w[1];
        let cross = d[0] * v[1] - d[1] * v[0];
        let off = d2.sqrt();
        (d2, along, if cross >= 0.0 { off } else { -off })
    }

    fn pos_from(&self, seg: usize, along: f64, offset: f64) -> TrackPos {
        TrackPos {
            segment: seg,
            along,
            s: self.wrap_s(self.seg_s0[seg] + along),
            offset,
        }
    }

    /// Nearest centre-line position to a point, searching the whole track.
    pub fn nearest(&self, p: [f64; 2]) -> TrackPos {
        let mut best = (f64::INFINITY, 0, 0.0, 0.0);
        for seg in 0..self.seg_len.len() {
            let (d2, along, off) = self.project(seg, p);
            if d2 < best.0 {
                best = (d2, seg, along, off);
            }
        }
        self.pos_from(best.1, best.2, best.3)
    }

    /// Nearest centre-line position searching only within `window` metres of
    /// arc length around `hint` (a previous position). Where the track
    /// crosses itself (a figure eight) this keeps following the branch the
    /// car is on; if nothing in the window is closer than the road's width
    /// it falls back to a global search.
    pub fn nearest_near(&self, p: [f64; 2], hint: usize, window: f64) -> TrackPos {
        let nseg = self.seg_len.len();
        let hint = hint % nseg;
        let mut best = (f64::INFINITY, 0, 0.0, 0.0);
        let consider = |seg: usize, best: &mut (f64, usize, f64, f64)| {
            let (d2, along, off) = self.project(seg, p);
            if d2 < best.0 {
                *best = (d2, seg, along, off);
            }
        };
        consider(hint, &mut best);
        let mut acc = 0.0;
        let mut i = hint;
        for _ in 0..nseg {
            i = (i + 1) % nseg;
            if i == hint || acc > window {
                break;
            }
            consider(i, &mut best);
            acc += self.seg_len[i];
        }
        acc = 0.0;
        i = hint;
        for _ in 0..nseg {
            i = (i + nseg - 1) % nseg;
            if i == hint || acc > window {
                break;
            }
            consider(i, &mut best);
            acc += self.seg_len[i];
        }
        if best.0.sqrt() > self.width {
            return self.nearest(p);
        }
        self.pos_from(best.1, best.2, best.3)
    }

    /// Whether a point is on the road (between the borders' outer edges).
    pub fn is_on_track(&self, pos: &TrackPos) -> bool {
        let (l, r) = self.half_widths(pos.segment, pos.along);
        if pos.offset >= 0.0 {
            pos.offset <= l
        } else {
            -pos.offset <= r
        }
    }

    /// Axis-aligned bounds of everything drawn: (min x, min y, max x, max y).
    pub fn bounds(&self) -> [f64; 4] {
        let mut b = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for p in self.waypoints.iter().chain(&self.inner).chain(&self.outer) {
            b[0] = b[0].min(p[0]);
            b[1] = b[1].min(p[1]);
            b[2] = b[2].max(p[0]);
            b[3] = b[3].max(p[1]);
        }
        b
    }
}

/// Refuse coordinates no DeepRacer track has: far too large (a file in
/// millimetres, or garbage like 1e300, whose squares overflow to infinity)
/// or a centre line that is all one point (1e-200, whose segment lengths
/// underflow to zero). Runs after the finite check.
fn check_magnitudes(file: &str, rows: &[[f64; 6]]) -> Result<(), TrackError> {
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    let mut all_lo = [f64::INFINITY; 2];
    let mut all_hi = [f64::NEG_INFINITY; 2];
    let mut worst: Option<(usize, usize, f64)> = None;
    for (r, row) in rows.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            if v.abs() > MAX_COORDINATE_M && worst.is_none_or(|(_, _, w)| v.abs() > w.abs()) {
                worst = Some((r, c, v));
            }
            all_lo[c % 2] = all_lo[c % 2].min(v);
            all_hi[c % 2] = all_hi[c % 2].max(v);
        }
        for k in 0..2 {
            lo[k] = lo[k].min(row[k]);
            hi[k] = hi[k].max(row[k]);
        }
    }
    if let Some((row, col, value)) = worst {
        // Tracks are 1-100 m across: 1,000-100,000 in millimetres.
        let across = (all_hi[0] - all_lo[0]).max(all_hi[1] - all_lo[1]);
        let hint = if (1_000.0..=100_000.0).contains(&across) {
            "; it looks like millimetres: divide the coordinates by 1000"
        } else {
            ""
        };
        return Err(TrackError::Magnitude {
            file: file.to_string(),
            row,
            col,
            value,
            hint,
        });
    }
    if rows.is_empty() {
        return Ok(());
    }
    let extent = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    if extent < MIN_EXTENT_M {
        return Err(TrackError::Degenerate {
            file: file.to_string(),
            extent,
        });
    }
    Ok(())
}
