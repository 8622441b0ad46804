//! The aggregated DAgger data set: grey frames exactly as the car's
//! preprocessing produces them (160x120, raw 0-255) with the expert's label
//! for each, kept in memory and appended to disk one chunk per iteration so
//! an interrupted run can resume with everything it had collected.

use std::io::{Read, Write};
use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::actions::{Label, Targets};
use crate::net::{INPUT_H, INPUT_LEN, INPUT_W};

const MAGIC: &[u8; 8] = b"DRDAGv1\n";

#[derive(Debug, Default)]
pub struct Dataset {
    frames: Vec<u8>,
    labels: Vec<Label>,
}

/// One training batch, laid out for the network.
#[derive(Debug, Default)]
pub struct Batch {
    pub n: usize,
    /// `[n, 1, 120, 160]` raw 0-255.
    pub images: Vec<f32>,
    /// Continuous: `[n, 2]` targets. Discrete: empty.
    pub values: Vec<f32>,
    /// Discrete: `[n]` action indices. Continuous: empty.
    pub classes: Vec<i64>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn push(&mut self, frame: &[u8], label: Label) {
        assert_eq!(frame.len(), INPUT_LEN);
        self.frames.extend_from_slice(frame);
        self.labels.push(label);
    }

    pub fn frame(&self, i: usize) -> &[u8] {
        &self.frames[i * INPUT_LEN..(i + 1) * INPUT_LEN]
    }

    pub fn label(&self, i: usize) -> Label {
        self.labels[i]
    }

    /// Draw `n` samples uniformly with replacement. With `mirror`, each is
    /// flipped left-right (and its steering negated) with probability 1/2:
    /// the tracks turn one way more than the other, the real world does not.
    pub fn sample(
        &self,
        n: usize,
        targets: &Targets,
        mirror: bool,
        rng: &mut ChaCha8Rng,
        out: &mut Batch,
    ) {
        assert!(!self.is_empty(), "sampling an empty data set");
        out.n = n;
        out.images.clear();
        out.values.clear();
        out.classes.clear();
        for _ in 0..n {
            let i = rng.random_range(0..self.len());
            let flip = mirror && rng.random_bool(0.5);
            let f = self.frame(i);
            if flip {
                for row in f.chunks_exact(INPUT_W) {
                    out.images.extend(row.iter().rev().map(|&v| v as f32));
                }
            } else {
                out.images.extend(f.iter().map(|&v| v as f32));
            }
            let mut l = self.labels[i];
            if flip {
                l.steer = -l.steer;
            }
            if targets.is_discrete() {
                out.classes.push(targets.class(l) as i64);
            } else {
                out.values.extend_from_slice(&targets.continuous(l));
            }
        }
        debug_assert_eq!(out.images.len(), n * INPUT_H * INPUT_W);
    }

    /// Append samples `from..` to `path` as one chunk (written to a temp
    /// file, synced, renamed, through `safe_io::atomic`: a crash never leaves
    /// half a chunk).
    pub fn save_chunk(&self, from: usize, path: &Path) -> std::io::Result<()> {
        safe_io::atomic::write_with(path, |file| {
            let mut f = std::io::BufWriter::new(file);
            f.write_all(MAGIC)?;
            f.write_all(&((self.len() - from) as u64).to_le_bytes())?;
            for i in from..self.len() {
                let l = self.labels[i];
                f.write_all(&l.steer.to_le_bytes())?;
                f.write_all(&l.throttle.to_le_bytes())?;
                f.write_all(self.frame(i))?;
            }
            f.flush()
        })
    }

    /// Append a chunk written by [`Dataset::save_chunk`].
    pub fn load_chunk(&mut self, path: &Path) -> Result<usize, String> {
        let bad = |m: &str| format!("{}: {m}", path.display());
        let mut f =
            std::io::BufReader::new(std::fs::File::open(path).map_err(|e| bad(&e.to_string()))?);
        let mut head = [0u8; 16];
        f.read_exact(&mut head)
            .map_err(|_| bad("truncated header"))?;
        if &head[..8] != MAGIC {
            return Err(bad("not a data chunk"));
        }
        let n = u64::from_le_bytes(head[8..].try_into().unwrap()) as usize;
        let mut frame = vec![0u8; INPUT_LEN];
        let mut l = [0u8; 8];
        for _ in 0..n {
            f.read_exact(&mut l)
                .and_then(|_| f.read_exact(&mut frame))
                .map_err(|_| bad("truncated sample"))?;
            let label = Label {
                steer: f32::from_le_bytes(l[..4].try_into().unwrap()),
                throttle: f32::from_le_bytes(l[4..].try_into().unwrap()),
            };
            self.push(&frame, label);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn frame(seed: u8) -> Vec<u8> {
        (0..INPUT_LEN).map(|i| (i % INPUT_W) as u8 ^ seed).collect()
    }

    #[test]
    fn chunks_round_trip_and_mirror_flips_image_and_steering() {
        let mut d = Dataset::default();
        d.push(
            &frame(0),
            Label {
                steer: 0.5,
                throttle: 0.9,
            },
        );
        d.push(
            &frame(7),
            Label {
                steer: -0.25,
                throttle: 0.6,
            },
        );
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.bin");
        d.save_chunk(1, &p).unwrap();
        let mut e = Dataset::default();
        assert_eq!(e.load_chunk(&p).unwrap(), 1);
        assert_eq!(e.frame(0), d.frame(1));
        assert_eq!(e.label(0), d.label(1));
        std::fs::write(&p, b"DRDAGv1\n\x05\0\0\0\0\0\0\0abc").unwrap();
        assert!(e.load_chunk(&p).unwrap_err().contains("truncated sample"));

        let space = crate::actions::continuous((-30.0, 30.0), (1.0, 3.0)).unwrap();
        let targets = Targets::new(&space);
        let mut one = Dataset::default();
        one.push(
            &frame(3),
            Label {
                steer: 0.5,
                throttle: 1.0,
            },
        );
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut b = Batch::default();
        let (mut flipped, mut plain) = (0, 0);
        for _ in 0..40 {
            one.sample(1, &targets, true, &mut rng, &mut b);
            let first_row: Vec<u8> = b.images[..INPUT_W].iter().map(|&v| v as u8).collect();
            if b.values[0] < 0.0 {
                flipped += 1;
                let want: Vec<u8> = frame(3)[..INPUT_W].iter().rev().copied().collect();
                assert_eq!(first_row, want);
            } else {
                plain += 1;
                assert_eq!(first_row, frame(3)[..INPUT_W]);
            }
        }
        assert!(flipped > 5 && plain > 5, "{flipped} flipped, {plain} plain");
    }
}
