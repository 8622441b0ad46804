//! Setting up a PPO run: the devices, the networks (fresh, warm-started from
//! an imitation network, or a checkpoint's), the random stream and the cars.
//! Cut here because everything before the first update happens once, and
//! the order of its seeded draws decides every number that follows: the
//! devices are seeded before any network is built, the networks are built
//! in the same order on a fresh and a resumed run.

use std::fmt::Display;
use std::path::Path;

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::prelude::*;
use policy::{ActionMapper, ActionSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sim::{Sim, SimConfig, StartPolicy};

use super::rollout::{Env, Traj};
use super::{Actor, Learner, PpoConfig, PpoError, PpoState, Run, UpdateStats, ALGO};
use crate::checkpoint::{read_state, STATE_FILE};
use crate::dagger::{seeded_devices, RunClock};
use crate::net::{Net, NetKind, INPUT_LEN};

impl<'c> Run<'c> {
    /// A fresh run, or with `resume` the one whose checkpoint is in
    /// `cfg.checkpoint_dir`, ready for its next update.
    pub(super) fn start(cfg: &'c PpoConfig, resume: bool) -> Result<(Run<'c>, Learner), PpoError> {
        let clock = RunClock::start();
        let (device, train_device) = seeded_devices(cfg.seed);
        let mapper = ActionMapper::new(&cfg.space);
        let mut learner = Learner::new(cfg, resume, train_device)?;
        let mut run = Run {
            cfg,
            clock,
            device,
            mapper,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            history: Vec::new(),
            best: None,
            first_lap_s: None,
            episodes_total: 0,
            episode_seed: cfg.seed << 20,
            first_update: 0,
            envs: Vec::new(),
            frames: Vec::new(),
            last_update_s: 0.0,
        };
        let env_seeds = if resume {
            Some(run.resume(&mut learner)?)
        } else {
            None
        };
        run.clock.before = run.history.last().map_or(0.0, |s| s.elapsed_s);
        run.start_envs(env_seeds);
        Ok((run, learner))
    }

    /// Continue the checkpoint's run: its networks, optimisers, random
    /// stream, counters and best network. Returns the seeds of the episodes
    /// its cars were driving.
    fn resume(&mut self, learner: &mut Learner) -> Result<Vec<u64>, PpoError> {
        let cfg = self.cfg;
        let dir = cfg
            .checkpoint_dir
            .as_deref()
            .ok_or_else(|| PpoError::Checkpoint("resuming needs a checkpoint folder".into()))?;
        let st: PpoState = read_state(dir, ALGO).map_err(PpoError::Checkpoint)?;
        learner.check_shape(cfg.net, &st, dir)?;
        learner.load(cfg.net, dir)?;
        let pos: u128 = st.rng_word_pos.parse().map_err(|_| {
            file_error(
                dir,
                STATE_FILE,
                &format!("rng_word_pos: \"{}\" is not a number", st.rng_word_pos),
            )
        })?;
        // The run's own seed, whatever --seed says now: the stream goes on.
        self.rng = ChaCha8Rng::seed_from_u64(st.seed);
        self.rng.set_word_pos(pos);
        if let Some(b) = st.best_update {
            self.best = Some(self.load_best(dir, b, learner.outputs, &st.history)?);
        }
        self.first_update = st.update + 1;
        self.episodes_total = st.episodes;
        self.episode_seed = st.episode_seed;
        self.first_lap_s = st.first_lap_s;
        self.history = st.history;
        Ok(st.env_seeds)
    }

    /// The checkpoint's best network with the figures of its update.
    fn load_best(
        &self,
        dir: &Path,
        best_update: usize,
        outputs: usize,
        history: &[UpdateStats],
    ) -> Result<(UpdateStats, Net), PpoError> {
        let net = Net::new(self.cfg.net, outputs, &self.device)
            .try_load_file(dir.join("best.bpk"))
            .map_err(|e| file_error(dir, "best.bpk", &e))?;
        let stats = history
            .iter()
            .find(|s| s.update == best_update)
            .cloned()
            .ok_or_else(|| {
                file_error(
                    dir,
                    STATE_FILE,
                    &format!("best_update: {best_update} is not in the history"),
                )
            })?;
        Ok((stats, net))
    }

    /// Build the cars and start each one's episode.
    fn start_envs(&mut self, resume_env_seeds: Option<Vec<u64>>) {
        let cfg = self.cfg;
        let sim_cfg = SimConfig {
            randomization: cfg.randomization,
            start: StartPolicy::Random,
            max_steps: cfg.max_episode_steps as u64,
            ..SimConfig::default()
        };
        self.envs = (0..cfg.envs.max(1))
            .map(|i| Env {
                sim: Sim::new(cfg.tracks[i % cfg.tracks.len()].clone(), sim_cfg),
                traj: Traj::default(),
                seed: 0,
            })
            .collect();
        // A resumed run restarts each car's episode from its start: a car that
        // had just begun one carries on exactly as the uninterrupted run would.
        let restart = resume_env_seeds.filter(|s| s.len() == self.envs.len());
        for (i, e) in self.envs.iter_mut().enumerate() {
            e.seed = match &restart {
                Some(seeds) => seeds[i],
                None => {
                    self.episode_seed += 1;
                    self.episode_seed
                }
            };
            e.sim.reset(e.seed);
        }
        self.frames = vec![0u8; self.envs.len() * INPUT_LEN];
        self.last_update_s = match self.history.as_slice() {
            [.., a, b] => b.elapsed_s - a.elapsed_s,
            [b] => b.elapsed_s,
            [] => 0.0,
        };
    }
}

impl Learner {
    /// Fresh networks (the actor warm-started from `cfg.init` unless
    /// resuming) and fresh optimisers.
    fn new(cfg: &PpoConfig, resume: bool, device: Device) -> Result<Learner, PpoError> {
        let outputs = cfg.space.output_len();
        let discrete = matches!(cfg.space, ActionSpace::Discrete(_));
        let mut actor = Actor::new(cfg.net, outputs, &device);
        // A resumed run continues its own networks (loaded by `load`).
        if let (Some(p), false) = (&cfg.init, resume) {
            let net = Net::new(cfg.net, outputs, &device)
                .try_load_file(p)
                .map_err(|e| {
                    PpoError::Init(format!(
                        "{}: {e} (it must be a {} network with {outputs} outputs)",
                        p.display(),
                        cfg.net.as_str()
                    ))
                })?;
            actor.net = net;
        }
        let critic = Net::new(cfg.net, 1, &device);
        Ok(Learner {
            actor,
            critic,
            actor_opt: AdamConfig::new().init(),
            critic_opt: AdamConfig::new().init(),
            outputs,
            discrete,
            device,
        })
    }

    /// Refuse a checkpoint of another network or action space.
    fn check_shape(&self, net: NetKind, st: &PpoState, dir: &Path) -> Result<(), PpoError> {
        if (st.net, st.outputs, st.discrete) == (net, self.outputs, self.discrete) {
            return Ok(());
        }
        let shape = |n: NetKind, o: usize, d: bool| {
            let kind = if d { "discrete" } else { "continuous" };
            format!("a {} network with {o} outputs ({kind})", n.as_str())
        };
        Err(PpoError::Checkpoint(format!(
            "{}: the checkpoint holds {}; this run asks for {}",
            dir.join(STATE_FILE).display(),
            shape(st.net, st.outputs, st.discrete),
            shape(net, self.outputs, self.discrete)
        )))
    }

    /// The checkpoint's networks and optimisers in place of the fresh ones.
    fn load(&mut self, net: NetKind, dir: &Path) -> Result<(), PpoError> {
        self.actor = Actor::new(net, self.outputs, &self.device)
            .try_load_file(dir.join("actor.bpk"))
            .map_err(|e| file_error(dir, "actor.bpk", &e))?;
        self.critic = Net::new(net, 1, &self.device)
            .try_load_file(dir.join("critic.bpk"))
            .map_err(|e| file_error(dir, "critic.bpk", &e))?;
        // Adam's moments are part of the run: without them the first
        // updates after a resume would take full-size steps.
        self.actor_opt = AdamConfig::new()
            .init()
            .load(dir.join("actor-optim.bpk"))
            .map_err(|e| file_error(dir, "actor-optim.bpk", &e))?;
        self.critic_opt = AdamConfig::new()
            .init()
            .load(dir.join("critic-optim.bpk"))
            .map_err(|e| file_error(dir, "critic-optim.bpk", &e))?;
        Ok(())
    }
}

/// A checkpoint error naming the file it came from.
fn file_error(dir: &Path, name: &str, e: &dyn Display) -> PpoError {
    PpoError::Checkpoint(format!("{}: {e}", dir.join(name).display()))
}
