//! Setting up a DAgger run: the devices, the network and optimiser (fresh
//! or a checkpoint's, with the data collected so far), the random stream
//! and the cars. Cut here because everything before the first iteration
//! happens once, and the order of its seeded draws decides every number
//! that follows: the devices are seeded before the network is built, and
//! the random stream only once the first iteration is known.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::prelude::*;
use policy::ActionMapper;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::collect::cars;
use super::{
    seeded_devices, CheckpointState, IterStats, Run, RunClock, TrainConfig, TrainError, ALGO,
};
use crate::actions::Targets;
use crate::checkpoint::{read_state, STATE_FILE};
use crate::dataset::{Batch, Dataset};
use crate::net::{Net, INPUT_LEN};

/// What a run takes over from its earlier runs (nothing on a fresh one).
struct Carried {
    optim: ModuleOptimizer,
    data: Dataset,
    history: Vec<IterStats>,
    chunks: Vec<String>,
    first_iteration: usize,
    elapsed_before: f64,
    best: Option<(f64, usize, Net)>,
}

impl<'c> Run<'c> {
    /// A fresh run, or with `resume` the one whose checkpoint is in
    /// `cfg.checkpoint_dir`, ready for its next iteration; with the network
    /// to train.
    pub(super) fn start(cfg: &'c TrainConfig, resume: bool) -> Result<(Run<'c>, Net), TrainError> {
        let mut clock = RunClock::start();
        let (device, train_device) = seeded_devices(cfg.seed);
        let targets = Targets::new(&cfg.space);
        let mapper = ActionMapper::new(&cfg.space);
        let mirror = cfg.mirror && targets.symmetric();

        let net = Net::new(cfg.net, targets.outputs(), &train_device);
        let (net, carried) = if resume {
            Carried::load(cfg, targets.outputs(), net, &device)?
        } else {
            (net, Carried::fresh())
        };
        // Seeded by the first iteration: a resumed run draws afresh rather
        // than replaying the stream of the iterations before it.
        let rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (carried.first_iteration as u64).wrapping_mul(0x9E37_79B9),
        );
        clock.before = carried.elapsed_before;
        let cars = cars(cfg);
        let run = Run {
            cfg,
            clock,
            device,
            train_device,
            targets,
            mapper,
            mirror,
            optim: carried.optim,
            data: carried.data,
            history: carried.history,
            chunks: carried.chunks,
            first_iteration: carried.first_iteration,
            best: carried.best,
            rng,
            frames: vec![0u8; cars.len() * INPUT_LEN],
            cars,
            batch: Batch::default(),
            last_iter_s: None,
            episode: (carried.first_iteration as u64) << 32,
        };
        Ok((run, net))
    }
}

impl Carried {
    fn fresh() -> Carried {
        Carried {
            optim: AdamConfig::new().init(),
            data: Dataset::default(),
            history: Vec::new(),
            chunks: Vec::new(),
            first_iteration: 0,
            elapsed_before: 0.0,
            best: None,
        }
    }

    /// The checkpoint's network (loaded into `net`), optimiser, data, best
    /// network and history. `device` builds the best network for inference.
    fn load(
        cfg: &TrainConfig,
        outputs: usize,
        net: Net,
        device: &Device,
    ) -> Result<(Net, Carried), TrainError> {
        let dir = cfg
            .checkpoint_dir
            .as_deref()
            .ok_or_else(|| TrainError::Checkpoint("--resume needs a checkpoint folder".into()))?;
        let st = load_state(dir)?;
        if st.net != cfg.net || st.outputs != outputs {
            return Err(TrainError::Checkpoint(format!(
                "{}: the checkpoint is a {} network with {} outputs; this run asks for {} with {}",
                dir.join(STATE_FILE).display(),
                st.net.as_str(),
                st.outputs,
                cfg.net.as_str(),
                outputs
            )));
        }
        let net = net.try_load_file(dir.join("model.bpk")).map_err(|e| {
            TrainError::Checkpoint(format!("{}: {e}", dir.join("model.bpk").display()))
        })?;
        let optim = match AdamConfig::new().init().load(dir.join("optim.bpk")) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("optimiser state not restored ({e}); Adam restarts its moments");
                AdamConfig::new().init()
            }
        };
        let mut data = Dataset::default();
        for c in &st.chunks {
            data.load_chunk(&dir.join(c))
                .map_err(TrainError::Checkpoint)?;
        }
        let mut best = None;
        if let Some(b) = st.best_iteration {
            let p = dir.join("best.bpk");
            let best_net = Net::new(cfg.net, outputs, device)
                .try_load_file(&p)
                .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", p.display())))?;
            let score = st
                .history
                .iter()
                .find(|s| s.iteration == b)
                .map_or(f64::MIN, |s| s.score());
            best = Some((score, b, best_net));
        }
        let carried = Carried {
            optim,
            data,
            first_iteration: st.iteration + 1,
            elapsed_before: st.history.last().map_or(0.0, |s| s.elapsed_s),
            chunks: st.chunks,
            history: st.history,
            best,
        };
        Ok((net, carried))
    }
}

fn load_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    read_state(dir, ALGO).map_err(TrainError::Checkpoint)
}
