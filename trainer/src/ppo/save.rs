//! The checkpoint written after every update: both networks, both
//! optimisers, the best network when it changed, then `state.json` (last,
//! as `crate::checkpoint` has it). Cut here because this is the whole of
//! what a resumed run reads back in `setup`, so the two read side by side.

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;

use super::{Learner, PpoError, PpoState, Run, ALGO};
use crate::checkpoint::{save_atomic, write_state};

impl Run<'_> {
    /// Write the checkpoint of `update` into `cfg.checkpoint_dir`, if any;
    /// `better` says the best network is this update's (and so new on disk).
    pub(super) fn save(
        &self,
        update: usize,
        learner: &Learner,
        better: bool,
    ) -> Result<(), PpoError> {
        let cfg = self.cfg;
        let Some(dir) = &cfg.checkpoint_dir else {
            return Ok(());
        };
        save_module(dir, "actor.bpk", &learner.actor)?;
        save_module(dir, "critic.bpk", &learner.critic)?;
        save_optimiser(dir, "actor-optim.bpk", &learner.actor_opt)?;
        save_optimiser(dir, "critic-optim.bpk", &learner.critic_opt)?;
        if better {
            let (_, net) = self.best.as_ref().expect("just set");
            save_module(dir, "best.bpk", net)?;
        }
        let st = PpoState {
            net: cfg.net,
            outputs: learner.outputs,
            discrete: learner.discrete,
            seed: cfg.seed,
            update,
            episodes: self.episodes_total,
            episode_seed: self.episode_seed,
            env_seeds: self.envs.iter().map(|e| e.seed).collect(),
            rng_word_pos: self.rng.get_word_pos().to_string(),
            best_update: self.best.as_ref().map(|(b, _)| b.update),
            first_lap_s: self.first_lap_s,
            history: self.history.clone(),
        };
        write_state(dir, ALGO, &st).map_err(PpoError::Checkpoint)
    }
}

fn save_module(dir: &Path, name: &str, module: &impl Module) -> Result<(), PpoError> {
    save_atomic(dir, name, |p| {
        module.clone().save_file(p).map_err(|e| e.to_string())
    })
    .map_err(PpoError::Checkpoint)
}

fn save_optimiser(dir: &Path, name: &str, optim: &ModuleOptimizer) -> Result<(), PpoError> {
    save_atomic(dir, name, |p| optim.save(p).map_err(|e| e.to_string()))
        .map_err(PpoError::Checkpoint)
}
