//! The networks: DeepRacer's shallow CNN and a smaller one that trains and
//! runs about six times faster. Both take the car's input unchanged, a
//! 160x120 grey image of raw 0-255 values in NCHW, and divide by 255 inside
//! the network as DeepRacer models do, so the car needs no extra scaling.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Camera input the networks take (the DeepRacer camera after the car's
/// resize and grey conversion).
pub const INPUT_W: usize = 160;
pub const INPUT_H: usize = 120;
pub const INPUT_LEN: usize = INPUT_W * INPUT_H;

/// Which network to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetKind {
    /// DEEP_CONVOLUTIONAL_NETWORK_SHALLOW: conv 32x8/4, 64x4/2, 64x3/1,
    /// dense 512 (5.8 M parameters, 22 M multiply-adds).
    Shallow,
    /// Conv 16x8/4, 32x4/2, 32x3/2, dense 64 (0.13 M parameters, 3.5 M
    /// multiply-adds): same receptive field, a fraction of the cost.
    Small,
}

impl NetKind {
    pub fn parse(s: &str) -> Option<NetKind> {
        match s {
            "shallow" => Some(NetKind::Shallow),
            "small" => Some(NetKind::Small),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetKind::Shallow => "shallow",
            NetKind::Small => "small",
        }
    }

    /// The `neural_network` value written to `model_metadata.json`.
    pub fn metadata_name(self) -> policy::metadata::NeuralNetwork {
        match self {
            NetKind::Shallow => policy::metadata::NeuralNetwork::Shallow,
            NetKind::Small => policy::metadata::NeuralNetwork::Other("SMALL_CNN".into()),
        }
    }

    /// (channels, kernel, stride) of the three convolutions, then the
    /// dense layer's width.
    fn layers(self) -> ([(usize, usize, usize); 3], usize) {
        match self {
            NetKind::Shallow => ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512),
            NetKind::Small => ([(16, 8, 4), (32, 4, 2), (32, 3, 2)], 64),
        }
    }
}

/// Output side of a valid (unpadded) convolution.
fn conv_out(n: usize, k: usize, s: usize) -> usize {
    (n - k) / s + 1
}

#[derive(Module, Debug)]
pub struct Net {
    c1: Conv2d,
    c2: Conv2d,
    c3: Conv2d,
    fc: Linear,
    head: Linear,
}

impl Net {
    pub fn new(kind: NetKind, outputs: usize, device: &Device) -> Net {
        let (convs, dense) = kind.layers();
        let conv = |cin: usize, (cout, k, s): (usize, usize, usize)| {
            Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([s, s])
                .init(device)
        };
        let (mut w, mut h) = (INPUT_W, INPUT_H);
        for &(_, k, s) in &convs {
            w = conv_out(w, k, s);
            h = conv_out(h, k, s);
        }
        let flat = convs[2].0 * w * h;
        Net {
            c1: conv(1, convs[0]),
            c2: conv(convs[0].0, convs[1]),
            c3: conv(convs[1].0, convs[2]),
            fc: LinearConfig::new(flat, dense).init(device),
            head: LinearConfig::new(dense, outputs).init(device),
        }
    }

    /// `[n, 1, 120, 160]` raw 0-255 -> `[n, outputs]` (continuous: means in
    /// [-1, 1] before the car's clip; discrete: logits, whose argmax is the
    /// action, as the car takes it).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = x.div_scalar(255.0);
        let x = relu(self.c1.forward(x));
        let x = relu(self.c2.forward(x));
        let x = relu(self.c3.forward(x));
        let [n, c, h, w] = x.dims();
        let x = x.reshape([n, c * h * w]);
        let x = relu(self.fc.forward(x));
        self.head.forward(x)
    }
}

impl Net {
    /// The forward pass exported for continuous action spaces: the means
    /// clipped to [-1, 1], the range the car maps onto the action space
    /// (it clips again, so a model exported either way drives the same).
    pub fn forward_clipped(&self, x: Tensor<4>) -> Tensor<2> {
        // clip(y) = relu(y + 1) - relu(y - 1) - 1: burn-onnx 0.22 cannot
        // export `clamp`, and these operations it can.
        let y = self.forward(x);
        relu(y.clone().add_scalar(1.0))
            .sub(relu(y.sub_scalar(1.0)))
            .sub_scalar(1.0)
    }
}

/// Render the simulated camera as the networks see it (160x120 grey) into
/// `out` (`INPUT_LEN` bytes).
pub fn render(sim: &mut sim::Sim, out: &mut [u8]) {
    sim.render_into(out, INPUT_W, INPUT_H, sim::Channels::Gray)
        .expect("frame buffer sized for the network input");
}

/// Run `net` on `n` grey frames (`n * INPUT_LEN` raw bytes) and return the
/// outputs row-major.
pub fn infer(net: &Net, frames: &[u8], n: usize, device: &Device) -> Vec<f32> {
    debug_assert_eq!(frames.len(), n * INPUT_LEN);
    let data: Vec<f32> = frames.iter().map(|&v| v as f32).collect();
    let x = Tensor::<4>::from_data(TensorData::new(data, [n, 1, INPUT_H, INPUT_W]), device);
    net.forward(x)
        .into_data()
        .try_into_vec::<f32>()
        .expect("network outputs are f32")
}
