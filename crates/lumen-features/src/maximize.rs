//! Activation maximization, as lucid/lucent do for PyTorch: an image optimised to
//! excite a channel, a neuron or a direction of a layer (or a class: the logits are a
//! layer too), from a decorrelated parameterization under random transformations.
//!
//! - Parameterization: per colour channel, coefficients of the orthonormal 2-D DCT
//!   scaled by `1 / frequency` (lucid's `fft_image` spectrum scaling, with the DCT as
//!   the real Fourier basis: no FFT op is needed), then lucid's colour decorrelation
//!   matrix, then a sigmoid to `[0, 1]`, then the model's normalisation.
//! - Robustness (lucid's `standard_transforms`): each step the image is jittered
//!   (shift), scaled and rotated by a seeded random draw, in one nearest-neighbour
//!   resampling.
//! - Optimiser: Adam on the coefficients; objectives are optimised together in
//!   internal batches (one image per objective, one forward and backward per step),
//!   at most [`MaximizeOptions::batch_size`] at a time so that memory stays bounded.
//!   Every batch replays the same seeded transformations and draws its initial
//!   coefficients from one seeded stream in objective order, so an image does not
//!   depend on the batch size.
//! - Restarts: lucid's near-grey start (`0.01 x N(0, 1)`) leaves many ReLU channels at
//!   exactly 0, where no gradient flows and the image never moves (on shapes-cnn's
//!   `layer4`, 6 of channels 0-7, although every one of them fires on real images).
//!   Such objectives are run again from the same draw scaled 10x, up to
//!   [`MaximizeOptions::restarts`] times (lucid would need a model edit instead: its
//!   ReLU gradient override).

use lumen_core::burn::tensor::activation::sigmoid;
use lumen_core::burn::tensor::{Int, TensorData};
use lumen_core::profile::{self, stages};
use lumen_core::{
    Device, ExplainableModel, LayerInfo, LayerKind, LumenError, Recorder, Result, TapTensor,
    Tensor, as_feature_map, default_rows_for, row_chunks, to_host,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::Distribution;
use serde::Serialize;

use crate::visualizer::FeatureVisualizer;

/// What to maximise.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// The mean of one channel over the layer's positions (a vector layer's entry).
    Channel {
        /// Layer.
        layer: String,
        /// Channel.
        channel: usize,
    },
    /// One unit `[channel, y, x]` of a feature map.
    Neuron {
        /// Layer.
        layer: String,
        /// Channel.
        channel: usize,
        /// Row and column.
        at: [usize; 2],
    },
    /// The mean over positions of the projection of the channel vector on a direction.
    Direction {
        /// Layer.
        layer: String,
        /// One weight per channel.
        weights: Vec<f32>,
    },
}

impl Objective {
    fn layer(&self) -> &str {
        match self {
            Self::Channel { layer, .. }
            | Self::Neuron { layer, .. }
            | Self::Direction { layer, .. } => layer,
        }
    }

    /// Refuse an objective that does not fit a layer of `channels` channels and an
    /// `[h, w]` map.
    fn check(&self, layer: &str, channels: usize, [h, w]: [usize; 2]) -> Result<()> {
        let channel = match self {
            Self::Channel { channel, .. } | Self::Neuron { channel, .. } => *channel,
            Self::Direction { weights, .. } => {
                if weights.len() != channels {
                    return Err(LumenError::shape(
                        "direction",
                        format!("{channels} weights (the layer's channels)"),
                        weights.len(),
                    ));
                }
                return Ok(());
            }
        };
        if channel >= channels {
            return Err(LumenError::InvalidArgument(format!(
                "channel {channel} is out of range: layer `{layer}` has {channels} channels (0..{channels})"
            )));
        }
        if let Self::Neuron { at, .. } = self
            && (at[0] >= h || at[1] >= w)
        {
            return Err(LumenError::InvalidArgument(format!(
                "position {at:?} is outside layer `{layer}`'s {h}x{w} map"
            )));
        }
        Ok(())
    }

    /// The objective's value `[1]` on one image's layer map `[1, C, h, w]` (checked).
    fn value(&self, map: Tensor<4>) -> Tensor<1> {
        match self {
            Self::Channel { channel, .. } => map.narrow(1, *channel, 1).mean().reshape([1]),
            Self::Neuron { channel, at, .. } => map
                .narrow(1, *channel, 1)
                .narrow(2, at[0], 1)
                .narrow(3, at[1], 1)
                .reshape([1]),
            Self::Direction { weights, .. } => {
                let c = weights.len();
                let direction = Tensor::<4>::from_data(
                    TensorData::new(weights.clone(), [1, c, 1, 1]),
                    &map.device(),
                );
                (map * direction).sum_dim(1).mean().reshape([1])
            }
        }
    }

    /// A short description for titles.
    pub fn describe(&self) -> String {
        match self {
            Self::Channel { layer, channel } => format!("{layer} #{channel}"),
            Self::Neuron { layer, channel, at } => format!("{layer} #{channel} at {at:?}"),
            Self::Direction { layer, .. } => format!("{layer} direction"),
        }
    }
}

/// Settings of the optimisation.
#[derive(Clone, Debug, PartialEq)]
pub struct MaximizeOptions {
    /// Optimisation steps.
    pub steps: usize,
    /// Adam's learning rate.
    pub learning_rate: f32,
    /// Seed of the initial coefficients and of the transformations.
    pub seed: u64,
    /// Largest shift in pixels (each axis, each step).
    pub jitter: usize,
    /// Range of the random scale factor.
    pub scale: [f32; 2],
    /// Largest rotation in degrees.
    pub rotation: f32,
    /// The model's input normalisation.
    pub mean: [f32; 3],
    /// The model's input normalisation.
    pub std: [f32; 3],
    /// Objectives optimised together per internal batch (the memory knob); `None`:
    /// [`default_rows_for`] the model's input (32 at 224x224 on ResNets, fewer where a
    /// layer is large next to the input). It changes no image.
    pub batch_size: Option<usize>,
    /// How many times an objective that stayed at exactly 0 through every step (its
    /// image never moved from the start) is run again from a start [`RESTART_FACTOR`]
    /// times noisier; at most [`MAX_RESTARTS`]. [`maximize`](FeatureVisualizer::maximize)
    /// only: `maximize_from` keeps the start it is given.
    pub restarts: usize,
}

/// How much noisier each restart's start is than the previous one.
pub const RESTART_FACTOR: f32 = 10.0;

/// The most restarts of [`MaximizeOptions::restarts`]: the fourth starts at
/// `100 x N(0, 1)`, which the sigmoid turns into saturated noise.
pub const MAX_RESTARTS: usize = 4;

impl Default for MaximizeOptions {
    fn default() -> Self {
        Self {
            steps: 256,
            learning_rate: 0.05,
            seed: 0,
            jitter: 8,
            scale: [0.9, 1.1],
            rotation: 10.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            batch_size: None,
            restarts: 2,
        }
    }
}

/// The most optimisation steps of [`MaximizeOptions::steps`].
pub const MAX_STEPS: usize = 10_000;

impl MaximizeOptions {
    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(LumenError::InvalidArgument(what.into()));
        if self.steps == 0 {
            return bad("activation maximization needs at least 1 step");
        }
        // Each step's objective is kept per image (the trajectory): 1e10 steps asked
        // for 40 GB and aborted. lucid's default is 512.
        if self.steps > MAX_STEPS {
            return Err(LumenError::InvalidArgument(format!(
                "activation maximization takes at most {MAX_STEPS} steps, got {}",
                self.steps
            )));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("the learning rate must be a finite number > 0");
        }
        let [lo, hi] = self.scale;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return bad("the scale range must be two numbers 0 < low <= high");
        }
        // Up to a full turn: beyond it no angle is new, and a huge range (3e38) left
        // the random draw without a finite width (a panic).
        if !(0.0..=360.0).contains(&self.rotation) {
            return bad("the rotation must be a number of degrees in [0, 360]");
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad("the normalisation's standard deviations must be > 0");
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad("the normalisation's means must be finite numbers");
        }
        if self.restarts > MAX_RESTARTS {
            return Err(LumenError::InvalidArgument(format!(
                "at most {MAX_RESTARTS} restarts (the last starts {}x noisier than the \
                 first), got {}",
                RESTART_FACTOR.powi(MAX_RESTARTS as i32),
                self.restarts
            )));
        }
        if self.batch_size == Some(0) {
            return bad("the internal batch size must be at least 1");
        }
        Ok(())
    }

    /// Objectives per internal batch for `model` on `device`: the given size, or
    /// [`default_rows_for`] an input of the model's shape (which measures its layers
    /// with one forward pass of one blank image).
    pub fn rows_per_batch<M: ExplainableModel>(&self, model: &M, device: &Device) -> usize {
        self.batch_size
            .unwrap_or_else(|| {
                let [c, h, w] = model.input_shape();
                default_rows_for(model, &Tensor::<4>::zeros([1, c, h, w], device))
            })
            .max(1)
    }
}

/// One optimised image.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct MaximizedImage {
    /// What was maximised.
    pub objective: String,
    /// The objective's value at each step (under that step's transformation).
    pub trajectory: Vec<f32>,
    /// The objective's value on the final, untransformed image.
    pub value: f32,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// How many noisier starts were tried after the first stayed at 0 (0: the first
    /// start moved). An image still at 0 after every restart is the first start's.
    pub restarts: usize,
    /// RGB in `[0, 1]`, row-major `[3, H, W]`.
    #[serde(skip)]
    pub pixels: Vec<f32>,
}

impl MaximizedImage {
    /// The objective was exactly 0 at every step and at the end: no gradient reached
    /// the image, which is still its start.
    pub fn stayed_at_zero(&self) -> bool {
        self.value == 0.0 && self.trajectory.iter().all(|&v| v == 0.0)
    }

    /// The share of pixel values an 8-bit picture draws at 0 or 255: where the sigmoid
    /// has clipped. Above [`SATURATED_SHARE`] the image is black, white and pure
    /// colours, and shows the clipping rather than what the objective likes.
    pub fn saturation(&self) -> f32 {
        if self.pixels.is_empty() {
            return 0.0;
        }
        let (low, high) = (0.5 / 255.0, 254.5 / 255.0);
        let clipped = self
            .pixels
            .iter()
            .filter(|&&v| v < low || v >= high)
            .count();
        clipped as f32 / self.pixels.len() as f32
    }
}

/// The [`MaximizedImage::saturation`] above which an image is mostly clipped. Measured
/// on shapes-cnn `layer4`, channels 0-3, 32 steps: 0.01-0.26 at the default learning
/// rate (the 0.2s from 100x noisier restarts), 0.90-0.92 at 1, 0.99 at 10.
pub const SATURATED_SHARE: f32 = 0.75;

/// lucid's colour correlation (square root of the ImageNet colour covariance).
const COLOR_CORRELATION: [[f32; 3]; 3] =
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// The orthonormal DCT-II matrix `[n, n]` (rows: frequencies).
fn dct_matrix(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    for k in 0..n {
        let a = if k == 0 {
            (1.0 / n as f64).sqrt()
        } else {
            (2.0 / n as f64).sqrt()
        };
        for i in 0..n {
            m[k * n + i] =
                (a * (std::f64::consts::PI * (i as f64 + 0.5) * k as f64 / n as f64).cos()) as f32;
        }
    }
    m
}

/// `1 / max(frequency, 1 / max(h, w))` per DCT coefficient (lucid's spectrum scale).
fn spectrum_scale(h: usize, w: usize) -> Vec<f32> {
    let floor = 1.0 / h.max(w) as f32;
    (0..h * w)
        .map(|i| {
            let (k, l) = (
                (i / w) as f32 / (2 * h) as f32,
                (i % w) as f32 / (2 * w) as f32,
            );
            1.0 / (k * k + l * l).sqrt().max(floor)
        })
        .collect()
}

/// Source pixel of each output pixel for a random shift, scale and rotation about the
/// centre (nearest neighbour, clamped to the border), as flat indices.
fn transform_indices(h: usize, w: usize, rng: &mut StdRng, options: &MaximizeOptions) -> Vec<i64> {
    let uniform = |rng: &mut StdRng, lo: f32, hi: f32| {
        if hi > lo {
            rand_distr::Uniform::new(lo, hi)
                .expect("lo < hi")
                .sample(rng)
        } else {
            lo
        }
    };
    let j = options.jitter as f32;
    let (dy, dx) = (uniform(rng, -j, j).round(), uniform(rng, -j, j).round());
    let scale = uniform(rng, options.scale[0], options.scale[1]);
    let angle = uniform(rng, -options.rotation, options.rotation).to_radians();
    let (sin, cos) = angle.sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let mut indices = Vec::with_capacity(h * w);
    for y in 0..h {
        for x in 0..w {
            // Inverse map: undo the shift, then the rotation and scale about the centre.
            let (u, v) = (y as f32 - cy - dy, x as f32 - cx - dx);
            let sy = (cos * u + sin * v) / scale + cy;
            let sx = (-sin * u + cos * v) / scale + cx;
            let sy = sy.round().clamp(0.0, h as f32 - 1.0) as usize;
            let sx = sx.round().clamp(0.0, w as f32 - 1.0) as usize;
            indices.push((sy * w + sx) as i64);
        }
    }
    indices
}

impl<M: ExplainableModel> FeatureVisualizer<'_, M> {
    /// Optimise one image per objective (in internal batches of
    /// [`MaximizeOptions::rows_per_batch`]) and return them with their trajectories.
    /// The initial coefficients are small seeded normal draws (`0.01 x N(0, 1)`, one
    /// stream in objective order, as lucid's `fft_image` starts), drawn a batch at a
    /// time. Objectives that stay at 0 are restarted ([`MaximizeOptions::restarts`]).
    /// `progress` is called with the steps done over all batches (`steps` per batch and
    /// per restart).
    pub fn maximize(
        &self,
        objectives: &[Objective],
        options: &MaximizeOptions,
        device: &Device,
        progress: impl FnMut(usize),
    ) -> Result<Vec<MaximizedImage>> {
        let mut initial_rng = StdRng::seed_from_u64(options.seed);
        let restarts = options.restarts;
        self.maximize_with(objectives, options, restarts, device, progress, |values| {
            (0..values)
                .map(|_| {
                    let v: f32 = rand_distr::StandardNormal.sample(&mut initial_rng);
                    0.01 * v
                })
                .collect()
        })
    }

    /// [`maximize`](Self::maximize) from given initial coefficients: per objective, the
    /// `[3, H, W]` scaled DCT coefficients of each colour channel (before the
    /// decorrelation and the sigmoid), row-major, objectives one after another. To
    /// resume an optimisation, or to start where another implementation starts. The
    /// start is kept as given: no restarts.
    pub fn maximize_from(
        &self,
        objectives: &[Objective],
        initial: &[f32],
        options: &MaximizeOptions,
        device: &Device,
        progress: impl FnMut(usize),
    ) -> Result<Vec<MaximizedImage>> {
        let [_, h, w] = self.model.input_shape();
        if initial.len() != objectives.len() * 3 * h * w {
            return Err(LumenError::shape(
                "initial coefficients",
                format!("{} x 3 x {h} x {w}", objectives.len()),
                initial.len(),
            ));
        }
        if initial.iter().any(|v| !v.is_finite()) {
            return Err(LumenError::InvalidArgument(
                "the initial coefficients must be finite numbers".into(),
            ));
        }
        let mut taken = 0;
        self.maximize_with(objectives, options, 0, device, progress, |values| {
            taken += values;
            initial[taken - values..taken].to_vec()
        })
    }

    /// Both entry points: `next_initial(n)` gives the next `n` initial coefficients in
    /// objective order, called once per internal batch after every check has passed.
    /// `restarts` is how often an objective stuck at 0 runs again from its start
    /// scaled by [`RESTART_FACTOR`], right after its batch (memory stays one batch).
    fn maximize_with(
        &self,
        objectives: &[Objective],
        options: &MaximizeOptions,
        restarts: usize,
        device: &Device,
        mut progress: impl FnMut(usize),
        mut next_initial: impl FnMut(usize) -> Vec<f32>,
    ) -> Result<Vec<MaximizedImage>> {
        options.validate()?;
        if objectives.is_empty() {
            return Err(LumenError::InvalidArgument(
                "no objective to maximise".into(),
            ));
        }
        let layer = objectives[0].layer().to_string();
        if objectives.iter().any(|o| o.layer() != layer) {
            return Err(LumenError::InvalidArgument(
                "objectives optimised together must share one layer".into(),
            ));
        }
        let info = self.model.layer(&layer)?;
        let input_shape = self.model.input_shape();
        let [channels, h, w] = input_shape;
        if channels != 3 {
            return Err(LumenError::InvalidArgument(format!(
                "activation maximization draws RGB images; the model takes {channels} channels"
            )));
        }
        if options.jitter >= h.min(w) {
            return Err(LumenError::InvalidArgument(format!(
                "a jitter of {} px is not smaller than the {h}x{w} image: most shifts would \
                 only repeat its border",
                options.jitter
            )));
        }
        // Every objective is checked against the layer before any batch runs, so a bad
        // one late in the list fails at once, not after the batches before it.
        // The normalisation, made on the device once: not two uploads per step.
        let host = |values: [f32; 3]| {
            Tensor::<4>::from_data(TensorData::new(values.to_vec(), [1, 3, 1, 1]), device)
        };
        let normalize = [host(options.mean), host(options.std)];
        let probe = Tensor::<4>::zeros([1, 3, h, w], device);
        let map = self.layer_map(probe, &info, &normalize)?;
        let [_, c, mh, mw] = map.dims();
        for objective in objectives {
            objective.check(&layer, c, [mh, mw])?;
        }
        let rows = options.rows_per_batch(self.model, device);
        let per_image = 3 * h * w;
        let mut images = Vec::with_capacity(objectives.len());
        let mut done = 0;
        for range in row_chunks(objectives.len(), rows) {
            let initial = next_initial(range.len() * per_image);
            let batch = &objectives[range];
            let mut run = |objectives: &[Objective], start: Vec<f32>| {
                let result =
                    self.maximize_batch(objectives, &info, &normalize, start, options, |step| {
                        progress(done + step)
                    });
                done += options.steps;
                result
            };
            let mut batch_images = run(batch, initial.clone())?;
            let mut scale = 1.0f32;
            for restart in 1..=restarts {
                let stuck: Vec<usize> = (0..batch.len())
                    .filter(|&i| batch_images[i].stayed_at_zero())
                    .collect();
                if stuck.is_empty() {
                    break;
                }
                scale *= RESTART_FACTOR;
                let start: Vec<f32> = stuck
                    .iter()
                    .flat_map(|&i| initial[i * per_image..(i + 1) * per_image].iter())
                    .map(|v| v * scale)
                    .collect();
                let again: Vec<Objective> = stuck.iter().map(|&i| batch[i].clone()).collect();
                for (&i, image) in stuck.iter().zip(run(&again, start)?) {
                    batch_images[i].restarts = restart;
                    // Still at 0: keep the first start's (near-grey) image, not noise
                    // that would look like a pattern.
                    if !image.stayed_at_zero() {
                        batch_images[i] = MaximizedImage {
                            restarts: restart,
                            ..image
                        };
                    }
                }
            }
            images.extend(batch_images);
        }
        Ok(images)
    }

    /// The layer's activation of `image` (pixels in `[0, 1]`, normalised by `[mean,
    /// std]` of shape `[1, 3, 1, 1]`) as `[B, C, h, w]` (a vector layer as
    /// `[B, D, 1, 1]`).
    fn layer_map(
        &self,
        image: Tensor<4>,
        info: &LayerInfo,
        [mean, std]: &[Tensor<4>; 2],
    ) -> Result<Tensor<4>> {
        let recorder = Recorder::new([info.name.as_str()]);
        let _forward = profile::stage_on(stages::FORWARD, &image.device());
        self.model
            .forward_tapped((image - mean.clone()) / std.clone(), &recorder);
        let recorded = recorder.get(&info.name).ok_or_else(|| {
            LumenError::InvalidArgument(format!("layer `{}` was never visited", info.name))
        })?;
        match (&info.kind, &recorded) {
            (LayerKind::Vector, TapTensor::Rank2(v)) => {
                let [n, d] = v.dims();
                Ok(v.clone().reshape([n, d, 1, 1]))
            }
            (kind, t) => as_feature_map(t.clone(), kind, &info.name),
        }
    }

    /// One internal batch of [`maximize`](Self::maximize), from its initial
    /// coefficients `[B, 3, H, W]` (flat); `progress` gets this batch's steps done.
    fn maximize_batch(
        &self,
        objectives: &[Objective],
        info: &LayerInfo,
        normalize: &[Tensor<4>; 2],
        initial: Vec<f32>,
        options: &MaximizeOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<MaximizedImage>> {
        let [_, h, w] = self.model.input_shape();
        let b = objectives.len();
        // The device the normalisation was made on.
        let device = normalize[0].device();
        let host = |values: Vec<f32>, shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(values, shape), &device)
        };
        // Fixed parts of the parameterization.
        let dct_h = host(dct_matrix(h), [1, 1, h, h]);
        let dct_w = host(dct_matrix(w), [1, 1, w, w]);
        let scale = host(spectrum_scale(h, w), [1, 1, h, w]);
        let max_norm = (0..3)
            .map(|c| {
                COLOR_CORRELATION
                    .iter()
                    .map(|r| r[c] * r[c])
                    .sum::<f32>()
                    .sqrt()
            })
            .fold(0f32, f32::max);
        let color: Vec<f32> = COLOR_CORRELATION
            .iter()
            .flatten()
            .map(|v| v / max_norm)
            .collect();
        let color = Tensor::<2>::from_data(TensorData::new(color, [3, 3]), &device);
        let to_image = |p: Tensor<4>| {
            // [B,3,H,W] coefficients -> pixels in [0, 1].
            let spatial = dct_h
                .clone()
                .swap_dims(2, 3)
                .expand([b, 3, h, h])
                .matmul(p * scale.clone())
                .matmul(dct_w.clone().expand([b, 3, w, w]));
            // Colour decorrelation: mix the three channels.
            let flat = spatial.reshape([b, 3, h * w]).swap_dims(1, 2); // [B,HW,3]
            let mixed = flat.matmul(color.clone().transpose().unsqueeze::<3>().expand([b, 3, 3]));
            sigmoid(mixed.swap_dims(1, 2).reshape([b, 3, h, w]))
        };
        let forward = |image: Tensor<4>| -> Result<Tensor<1>> {
            let map = self.layer_map(image, info, normalize)?;
            let values = objectives
                .iter()
                .enumerate()
                .map(|(i, o)| o.value(map.clone().narrow(0, i, 1)))
                .collect();
            Ok(Tensor::cat(values, 0))
        };

        let mut rng = StdRng::seed_from_u64(options.seed);
        let mut params = host(initial, [b, 3, h, w]);
        let (mut m, mut v) = (params.zeros_like(), params.zeros_like());
        let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut trajectories = vec![Vec::with_capacity(options.steps); b];
        for step in 1..=options.steps {
            // The step's own arithmetic (parametrisation, transforms, Adam); its passes
            // are stages of their own.
            let _step = profile::stage(stages::METHOD);
            let leaf = params.clone().autodiff().require_grad();
            let image = to_image(leaf.clone()).reshape([b, 3, h * w]);
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(transform_indices(h, w, &mut rng, options), [h * w]),
                &image.device(),
            );
            let transformed = image.select(2, index).reshape([b, 3, h, w]);
            let values = forward(transformed)?;
            for (t, value) in trajectories
                .iter_mut()
                .zip(to_host(values.clone().detach().without_autodiff())?)
            {
                t.push(value);
            }
            let grads = {
                let _backward = profile::stage_on(stages::BACKWARD, &leaf.device());
                values.sum().backward()
            };
            // Ascent: Adam on the negated objective.
            let g = -leaf.grad(&grads).unwrap_or_else(|| params.zeros_like());
            m = m * beta1 + g.clone() * (1.0 - beta1);
            v = v * beta2 + g.powi_scalar(2) * (1.0 - beta2);
            let m_hat = m.clone() / (1.0 - beta1.powi(step as i32));
            let v_hat = v.clone() / (1.0 - beta2.powi(step as i32));
            params = params - m_hat * options.learning_rate / (v_hat.sqrt() + eps);
            progress(step);
        }
        let image = to_image(params);
        let finals = to_host(forward(image.clone())?)?;
        let pixels = to_host(image)?;
        Ok(objectives
            .iter()
            .enumerate()
            .map(|(i, o)| MaximizedImage {
                objective: o.describe(),
                trajectory: trajectories[i].clone(),
                value: finals[i],
                height: h,
                width: w,
                restarts: 0,
                pixels: pixels[i * 3 * h * w..(i + 1) * 3 * h * w].to_vec(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_counts_the_values_drawn_at_0_or_255() {
        let image = |pixels: Vec<f32>| MaximizedImage {
            objective: "c".into(),
            trajectory: vec![],
            value: 0.0,
            height: 1,
            width: pixels.len() / 3,
            restarts: 0,
            pixels,
        };
        // 0, 0.001 and 0.999 are drawn 0, 0 and 255; 0.003 and 0.997 are drawn 1 and 254.
        let values = vec![0.0, 0.001, 0.003, 0.5, 0.997, 0.999];
        assert_eq!(image(values).saturation(), 0.5);
        assert_eq!(image(vec![1.0; 6]).saturation(), 1.0);
        assert_eq!(image(vec![0.5; 6]).saturation(), 0.0);
        assert_eq!(image(vec![]).saturation(), 0.0);
    }

    #[test]
    fn the_dct_basis_is_orthonormal() {
        let n = 8;
        let d = dct_matrix(n);
        for a in 0..n {
            for b in 0..n {
                let dot: f32 = (0..n).map(|i| d[a * n + i] * d[b * n + i]).sum();
                let expected = if a == b { 1.0 } else { 0.0 };
                assert!((dot - expected).abs() < 1e-5, "{a} {b}: {dot}");
            }
        }
    }

    #[test]
    fn the_identity_transform_keeps_every_pixel() {
        let options = MaximizeOptions {
            jitter: 0,
            scale: [1.0, 1.0],
            rotation: 0.0,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(0);
        let indices = transform_indices(5, 7, &mut rng, &options);
        assert_eq!(indices, (0..35).collect::<Vec<i64>>());
        let shifted = MaximizeOptions {
            jitter: 3,
            ..options
        };
        let moved = transform_indices(5, 7, &mut rng, &shifted);
        assert!(moved.iter().all(|&i| (0..35).contains(&i)));
    }

    #[test]
    fn bad_settings_are_errors() {
        for options in [
            MaximizeOptions {
                steps: 0,
                ..Default::default()
            },
            MaximizeOptions {
                learning_rate: f32::NAN,
                ..Default::default()
            },
            MaximizeOptions {
                scale: [1.2, 1.1],
                ..Default::default()
            },
            MaximizeOptions {
                rotation: -1.0,
                ..Default::default()
            },
            MaximizeOptions {
                rotation: 3e38,
                ..Default::default()
            },
            MaximizeOptions {
                rotation: f32::NAN,
                ..Default::default()
            },
            MaximizeOptions {
                mean: [0.5, f32::NAN, 0.5],
                ..Default::default()
            },
            MaximizeOptions {
                restarts: MAX_RESTARTS + 1,
                ..Default::default()
            },
        ] {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
