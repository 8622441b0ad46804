//! Training: Adam steps on minibatches drawn from everything collected so
//! far (DAgger's aggregate, not just this iteration's states), optionally
//! mirrored. Cut here because it is the only phase that changes the
//! network; it takes the network by value because burn's optimiser step
//! does.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::{Progress, Run};
use crate::actions::Targets;
use crate::dataset::Batch;
use crate::net::{Net, INPUT_H, INPUT_W};

impl Run<'_> {
    /// `steps` optimiser steps; returns the trained network and the mean
    /// loss over the steps.
    pub(super) fn fit(
        &mut self,
        mut net: Net,
        iteration: usize,
        steps: usize,
        progress: &mut impl FnMut(Progress<'_>),
    ) -> (Net, f64) {
        let cfg = self.cfg;
        let mut loss_sum = 0.0;
        for step in 0..steps {
            self.data.sample(
                cfg.batch,
                &self.targets,
                self.mirror,
                &mut self.rng,
                &mut self.batch,
            );
            let (model, loss) = train_step(
                net,
                &mut self.optim,
                &self.batch,
                &self.targets,
                cfg.learning_rate,
                &self.train_device,
            );
            net = model;
            loss_sum += loss;
            progress(Progress::Training {
                iteration,
                step,
                steps,
                loss,
            });
        }
        (net, loss_sum / steps.max(1) as f64)
    }
}

/// One Adam step on one batch; returns the updated network and the loss.
fn train_step(
    net: Net,
    optim: &mut ModuleOptimizer,
    batch: &Batch,
    targets: &Targets,
    lr: f64,
    device: &Device,
) -> (Net, f64) {
    let x = Tensor::<4>::from_data(
        TensorData::new(batch.images.clone(), [batch.n, 1, INPUT_H, INPUT_W]),
        device,
    );
    let y = net.forward(x);
    let loss = if targets.is_discrete() {
        let t =
            Tensor::<1, Int>::from_data(TensorData::new(batch.classes.clone(), [batch.n]), device);
        CrossEntropyLossConfig::new().init(device).forward(y, t)
    } else {
        // Steering error costs the car the track; speed error only time.
        let t = Tensor::<2>::from_data(TensorData::new(batch.values.clone(), [batch.n, 2]), device);
        let w: Vec<f32> = (0..batch.n).flat_map(|_| [1.0f32, 0.25]).collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [batch.n, 2]), device);
        (y - t).powi_scalar(2).mul(w).mean()
    };
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    (optim.step(lr, net, grads), value)
}
