//! Race timing as at physical DeepRacer races: a timed session (4 minutes by
//! default), laps marked by a button, and off-tracks counted per lap: the
//! third off-track in one lap makes that lap a DNF (it does not count; the
//! car restarts the lap from the line). Finished sessions are kept in
//! `<state_dir>/race-history.json` (atomic writes) across restarts.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const HISTORY_FILE: &str = "race-history.json";
pub const DEFAULT_DURATION_S: u32 = 240;
pub const STRIKES_FOR_DNF: u32 = 3;
const MAX_HISTORY: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lap {
    pub number: u32,
    pub time_ms: u64,
    pub offtracks: u32,
    /// Three strikes: the lap does not count.
    pub dnf: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RaceSession {
    pub id: u64,
    pub started_unix_ms: u64,
    pub duration_s: u32,
    pub laps: Vec<Lap>,
    /// Off-tracks in the lap being driven.
    pub current_offtracks: u32,
    /// Elapsed session time when the current lap started.
    pub current_lap_start_ms: u64,
    pub finished: bool,
    pub ended_ms: Option<u64>,
    pub best_lap_ms: Option<u64>,
}

impl RaceSession {
    fn elapsed_ms(&self, now_ms: u64) -> u64 {
        let e = now_ms.saturating_sub(self.started_unix_ms);
        e.min(self.duration_s as u64 * 1000)
    }
    fn update_best(&mut self) {
        self.best_lap_ms = self.laps.iter().filter(|l| !l.dnf).map(|l| l.time_ms).min();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RaceView {
    pub current: Option<RaceSession>,
    pub elapsed_ms: u64,
    pub remaining_ms: u64,
    pub server_unix_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RaceError {
    #[error("no race is running")]
    NotRunning,
    #[error("duration_s: must be 10..=3600, got {0}")]
    BadDuration(u32),
    #[error("{0}")]
    Io(String),
}

pub struct Race {
    history_path: PathBuf,
    current: Option<RaceSession>,
    history: Vec<RaceSession>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Race {
    /// Loads the history; an unreadable file is moved aside, not lost.
    pub fn open(state_dir: &Path) -> Race {
        let history_path = state_dir.join(HISTORY_FILE);
        let history = match std::fs::read(&history_path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(h) => h,
                Err(e) => {
                    let aside = history_path.with_extension("json.bad");
                    tracing::warn!(
                        "{}: {e}; kept it as {}",
                        history_path.display(),
                        aside.display()
                    );
                    let _ = std::fs::rename(&history_path, &aside);
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        Race {
            history_path,
            current: None,
            history,
        }
    }

    /// Close the session when its time is up.
    fn tick(&mut self, now: u64) -> Result<(), RaceError> {
        let due = matches!(&self.current, Some(s) if !s.finished && now.saturating_sub(s.started_unix_ms) >= s.duration_s as u64 * 1000);
        if due {
            self.finish(now)?;
        }
        Ok(())
    }

    pub fn view(&mut self, now: u64) -> RaceView {
        let _ = self.tick(now);
        let (elapsed, remaining) = match &self.current {
            Some(s) => {
                let e = s.ended_ms.unwrap_or_else(|| s.elapsed_ms(now));
                (e, (s.duration_s as u64 * 1000).saturating_sub(e))
            }
            None => (0, 0),
        };
        RaceView {
            current: self.current.clone(),
            elapsed_ms: elapsed,
            remaining_ms: if self.current.as_ref().is_some_and(|s| s.finished) {
                0
            } else {
                remaining
            },
            server_unix_ms: now,
        }
    }

    pub fn start(&mut self, duration_s: Option<u32>, now: u64) -> Result<(), RaceError> {
        let d = duration_s.unwrap_or(DEFAULT_DURATION_S);
        if !(10..=3600).contains(&d) {
            return Err(RaceError::BadDuration(d));
        }
        if matches!(&self.current, Some(s) if !s.finished) {
            self.finish(now)?;
        }
        self.current = Some(RaceSession {
            id: now,
            started_unix_ms: now,
            duration_s: d,
            laps: Vec::new(),
            current_offtracks: 0,
            current_lap_start_ms: 0,
            finished: false,
            ended_ms: None,
            best_lap_ms: None,
        });
        Ok(())
    }

    fn running(&mut self, now: u64) -> Result<&mut RaceSession, RaceError> {
        self.tick(now)?;
        match &mut self.current {
            Some(s) if !s.finished => Ok(s),
            _ => Err(RaceError::NotRunning),
        }
    }

    /// The car crossed the line.
    pub fn lap(&mut self, now: u64) -> Result<(), RaceError> {
        let s = self.running(now)?;
        let e = s.elapsed_ms(now);
        let lap = Lap {
            number: s.laps.len() as u32 + 1,
            time_ms: e - s.current_lap_start_ms,
            offtracks: s.current_offtracks,
            dnf: false,
        };
        s.laps.push(lap);
        s.current_lap_start_ms = e;
        s.current_offtracks = 0;
        s.update_best();
        Ok(())
    }

    /// The car left the track. The third in a lap ends that lap as a DNF.
    pub fn offtrack(&mut self, now: u64) -> Result<(), RaceError> {
        let s = self.running(now)?;
        s.current_offtracks += 1;
        if s.current_offtracks >= STRIKES_FOR_DNF {
            let e = s.elapsed_ms(now);
            let lap = Lap {
                number: s.laps.len() as u32 + 1,
                time_ms: e - s.current_lap_start_ms,
                offtracks: s.current_offtracks,
                dnf: true,
            };
            s.laps.push(lap);
            s.current_lap_start_ms = e;
            s.current_offtracks = 0;
            s.update_best();
        }
        Ok(())
    }

    pub fn finish(&mut self, now: u64) -> Result<(), RaceError> {
        let Some(s) = &mut self.current else {
            return Err(RaceError::NotRunning);
        };
        if s.finished {
            return Ok(());
        }
        s.ended_ms = Some(s.elapsed_ms(now));
        s.finished = true;
        s.update_best();
        self.history.push(s.clone());
        if self.history.len() > MAX_HISTORY {
            let n = self.history.len() - MAX_HISTORY;
            self.history.drain(..n);
        }
        self.save()
    }

    pub fn history(&self) -> &[RaceSession] {
        &self.history
    }

    fn save(&self) -> Result<(), RaceError> {
        let data =
            serde_json::to_vec_pretty(&self.history).map_err(|e| RaceError::Io(e.to_string()))?;
        crate::auth::write_private_atomic(&self.history_path, &data)
            .map_err(|e| RaceError::Io(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_offtrack_in_a_lap_is_a_dnf_and_fastest_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Race::open(dir.path());
        let t0 = 1_000_000;
        r.start(None, t0).unwrap();
        r.lap(t0 + 12_000).unwrap();
        r.offtrack(t0 + 13_000).unwrap();
        r.offtrack(t0 + 14_000).unwrap();
        r.offtrack(t0 + 15_000).unwrap();
        r.lap(t0 + 25_000).unwrap();
        let v = r.view(t0 + 26_000);
        let s = v.current.unwrap();
        assert_eq!(s.laps.len(), 3);
        assert!(!s.laps[0].dnf && s.laps[1].dnf && !s.laps[2].dnf);
        assert_eq!(s.laps[1].time_ms, 3_000);
        assert_eq!(s.laps[2].time_ms, 10_000);
        assert_eq!(s.best_lap_ms, Some(10_000));
        assert_eq!(v.remaining_ms, 240_000 - 26_000);
    }

    #[test]
    fn session_ends_at_four_minutes_and_history_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Race::open(dir.path());
        r.start(None, 0).unwrap();
        r.lap(9_000).unwrap();
        assert_eq!(r.lap(240_001), Err(RaceError::NotRunning));
        let r2 = Race::open(dir.path());
        assert_eq!(r2.history().len(), 1);
        assert_eq!(r2.history()[0].best_lap_ms, Some(9_000));
        assert_eq!(r2.history()[0].ended_ms, Some(240_000));
    }
}
