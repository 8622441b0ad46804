//! The checkpoint written after every iteration: this iteration's samples
//! as one more data file, the network, the optimiser, the best network,
//! then `state.json` (last, as `crate::checkpoint` has it). Cut here because
//! this is the whole of what a resumed run reads back in `setup`, so the
//! two read side by side.

use std::path::Path;

use burn::module::Module;
use burn::optim::ModuleOptimizer;

use super::{CheckpointState, IterStats, Run, TrainError, ALGO};
use crate::checkpoint::{save_atomic, write_state};
use crate::dataset::Dataset;
use crate::net::Net;

impl Run<'_> {
    /// Write the checkpoint of `iteration`, whose figures are `stats` and
    /// whose samples start at `from`, into `cfg.checkpoint_dir`, if any.
    pub(super) fn save(
        &mut self,
        iteration: usize,
        net: &Net,
        from: usize,
        stats: &IterStats,
    ) -> Result<(), TrainError> {
        let cfg = self.cfg;
        let Some(dir) = &cfg.checkpoint_dir else {
            return Ok(());
        };
        let chunk = format!("data-{iteration:04}.bin");
        save_checkpoint(
            dir,
            net,
            &self.optim,
            &self.data,
            from,
            &chunk,
            self.best.as_ref().map(|b| (b.1, &b.2)),
        )
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", dir.display())))?;
        self.chunks.push(chunk);
        let st = CheckpointState {
            net: cfg.net,
            outputs: self.targets.outputs(),
            seed: cfg.seed,
            iteration,
            samples: self.data.len(),
            chunks: self.chunks.clone(),
            best_iteration: self.best.as_ref().map(|b| b.1),
            history: self
                .history
                .iter()
                .cloned()
                .chain([stats.clone()])
                .collect(),
        };
        write_state(dir, ALGO, &st).map_err(TrainError::Checkpoint)
    }
}

fn save_checkpoint(
    dir: &Path,
    net: &Net,
    optim: &ModuleOptimizer,
    data: &Dataset,
    from: usize,
    chunk: &str,
    best: Option<(usize, &Net)>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    data.save_chunk(from, &dir.join(chunk))
        .map_err(|e| format!("{chunk}: {e}"))?;
    save_atomic(dir, "model.bpk", |p| {
        net.clone().save_file(p).map_err(|e| e.to_string())
    })?;
    save_atomic(dir, "optim.bpk", |p| {
        optim.save(p).map_err(|e| e.to_string())
    })?;
    if let Some((_, b)) = best {
        save_atomic(dir, "best.bpk", |p| {
            b.clone().save_file(p).map_err(|e| e.to_string())
        })?;
    }
    Ok(())
}
