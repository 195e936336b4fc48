//! Noise tunnels wrapping any method: SmoothGrad, SmoothGrad² and VarGrad
//! (Smilkov et al. 2017; Adebayo et al. 2018), as captum's `NoiseTunnel`. All noisy
//! samples of all images go through the wrapped method in batches.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};
use lumen_core::profile::stages::METHOD;
use lumen_core::random::{image_seeds, standard_normal_keyed};
use lumen_core::{
    ExplainableModel, Heatmaps, LumenError, Result, Target, index_tensor, row_chunks,
};

use crate::gradient::attribution_heatmaps;
use crate::method::{Explanation, Method};

/// How samples are aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseKind {
    /// Mean of the attributions.
    SmoothGrad,
    /// Mean of the squared attributions.
    SmoothGradSq,
    /// Variance of the attributions.
    VarGrad,
}

impl NoiseKind {
    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SmoothGrad => "smoothgrad",
            Self::SmoothGradSq => "smoothgrad-sq",
            Self::VarGrad => "vargrad",
        }
    }
}

/// The noise added to each sample.
#[derive(Clone, Debug)]
pub enum Noise {
    /// Gaussian with standard deviation `level * (max - min)` of each image (the
    /// SmoothGrad paper's noise level; 0.15 by default).
    Relative(f32),
    /// Gaussian with this absolute standard deviation (captum's `stdevs`).
    Absolute(f32),
    /// These exact noise tensors, `[B * samples, 3, H, W]`, image-major (row
    /// `i * samples + s` is sample `s` of image `i`): for reproducing a reference.
    Given(Box<Tensor<4>>),
}

/// Wrap a method: explain `samples` noisy copies of each image and aggregate.
pub struct NoiseTunnel<M: ExplainableModel> {
    /// The wrapped method.
    pub inner: Box<dyn Method<M>>,
    /// Aggregation.
    pub kind: NoiseKind,
    /// Noisy samples per image.
    pub samples: usize,
    /// Noise.
    pub noise: Noise,
    /// Seed for the noise: the same noise on every backend (see `lumen_core::random`).
    /// Each image's noise comes from a stream of its own, seeded from this seed and the
    /// image's values, so an image gets the same noise in any batch, at any place.
    pub seed: Option<u64>,
    /// Noisy inputs per call of the wrapped method; `None`: budgets of input and
    /// activation values (`lumen_core::default_rows_for`), so memory stays bounded.
    pub batch_size: Option<usize>,
}

impl<M: ExplainableModel> NoiseTunnel<M> {
    /// The noise's standard deviation per image: relative noise scales with each
    /// image's value range. `None` for given noise.
    fn deviations(&self, input: &Tensor<4>) -> Result<Option<Vec<f32>>> {
        let [b, c, h, w] = input.dims();
        Ok(match &self.noise {
            Noise::Given(noise) => {
                if noise.dims() != [b * self.samples, c, h, w] {
                    return Err(LumenError::shape(
                        "noise",
                        format!("[{},{c},{h},{w}]", b * self.samples),
                        format!("{:?}", noise.dims()),
                    ));
                }
                None
            }
            Noise::Absolute(std) => Some(vec![*std; b]),
            Noise::Relative(level) => {
                let flat = input.clone().reshape([b, c * h * w]);
                let range = flat.clone().max_dim(1) - flat.min_dim(1);
                Some(
                    lumen_core::to_host(range.reshape([b]))?
                        .into_iter()
                        .map(|r| r * level)
                        .collect(),
                )
            }
        })
    }

    /// Rows `rows` of the image-major noisy batch (row `i * samples + s` is sample `s`
    /// of image `i`, as captum's `repeat_interleave`), made one chunk at a time so
    /// that memory stays bounded; seeded noise is the same however it is chunked.
    fn noisy_rows(
        &self,
        input: &Tensor<4>,
        rows: Range<usize>,
        deviations: &Option<Vec<f32>>,
        streams: &Option<Vec<u64>>,
    ) -> Tensor<4> {
        let [_, c, h, w] = input.dims();
        let device = input.device();
        let count = rows.len();
        let images: Vec<usize> = rows.clone().map(|r| r / self.samples).collect();
        // The host's share first: drawing seeded noise takes milliseconds, and an upload
        // (the deviations, the row indices) can wait for the device to finish what is
        // queued (libtorch's copies from pageable memory do). Drawn before any upload,
        // the noise of this chunk is made while a GPU still computes the previous one.
        let noise = match (&self.noise, deviations) {
            (Noise::Given(noise), _) => noise.clone().narrow(0, rows.start, count),
            (_, Some(deviations)) => {
                let standard = match streams {
                    // Sample s of image i: row s of the image's own stream.
                    Some(streams) => {
                        let keyed: Vec<(u64, usize)> = rows
                            .map(|r| (streams[r / self.samples], r % self.samples))
                            .collect();
                        standard_normal_keyed(&keyed, [c, h, w], &device)
                    }
                    None => Tensor::random(
                        [count, c, h, w],
                        burn::tensor::Distribution::Normal(0.0, 1.0),
                        &device,
                    ),
                };
                let column: Vec<f32> = images.iter().map(|&i| deviations[i]).collect();
                let column =
                    Tensor::<4>::from_data(TensorData::new(column, [count, 1, 1, 1]), &device);
                standard * column
            }
            (_, None) => unreachable!("deviations are given for generated noise"),
        };
        let repeated = input.clone().select(0, index_tensor(&images, &device));
        repeated + noise
    }
}

/// Mean over the samples of each image (rows image-major).
fn mean_over_samples(values: Tensor<2>, b: usize, n: usize) -> Tensor<2> {
    let [_, d] = values.dims();
    values.reshape([b, n, d]).mean_dim(1).reshape([b, d])
}

fn combine(kind: NoiseKind, flat: Tensor<2>, b: usize, n: usize) -> Tensor<2> {
    match kind {
        NoiseKind::SmoothGrad => mean_over_samples(flat, b, n),
        NoiseKind::SmoothGradSq => mean_over_samples(flat.powi_scalar(2), b, n),
        NoiseKind::VarGrad => {
            // Two passes, E[(g - E[g])^2]: E[g^2] - E[g]^2 cancels badly in float32.
            let [_, d] = flat.dims();
            let samples = flat.reshape([b, n, d]);
            let mean = samples.clone().mean_dim(1);
            (samples - mean).powi_scalar(2).mean_dim(1).reshape([b, d])
        }
    }
}

/// Some of one image's samples, folded: their count, the mean of what the kind
/// averages (the gradient, or its square for SmoothGrad-SQ) and, for VarGrad, the sum of
/// squared deviations from that mean. Merged with Chan et al.'s pairwise update, which
/// keeps VarGrad's two-pass accuracy (no E[g^2] - E[g]^2).
struct Partial {
    count: usize,
    mean: Tensor<2>,
    squared_deviations: Option<Tensor<2>>,
}

impl Partial {
    /// The partial of `rows` `[k, d]` samples of one image.
    fn of(kind: NoiseKind, rows: Tensor<2>) -> Self {
        let [count, _] = rows.dims();
        let values = match kind {
            NoiseKind::SmoothGradSq => rows.powi_scalar(2),
            NoiseKind::SmoothGrad | NoiseKind::VarGrad => rows,
        };
        let mean = values.clone().mean_dim(0);
        let squared_deviations =
            (kind == NoiseKind::VarGrad).then(|| (values - mean.clone()).powi_scalar(2).sum_dim(0));
        Self {
            count,
            mean,
            squared_deviations,
        }
    }

    fn merge(self, other: Self) -> Self {
        let count = self.count + other.count;
        let delta = other.mean - self.mean.clone();
        let weight = other.count as f32 / count as f32;
        let squared_deviations = match (self.squared_deviations, other.squared_deviations) {
            (Some(a), Some(b)) => {
                let cross = (self.count * other.count) as f32 / count as f32;
                Some(a + b + delta.clone().powi_scalar(2) * cross)
            }
            _ => None,
        };
        Self {
            count,
            mean: self.mean + delta * weight,
            squared_deviations,
        }
    }

    /// The image's combined row `[1, d]`, once all its samples are in.
    fn finish(self, kind: NoiseKind) -> Tensor<2> {
        match (kind, self.squared_deviations) {
            (NoiseKind::VarGrad, Some(m2)) => m2 / self.count as f32,
            _ => self.mean,
        }
    }
}

impl<M: ExplainableModel> Method<M> for NoiseTunnel<M> {
    fn name(&self) -> String {
        self.kind.name().to_string()
    }

    fn check(&self, model: &M) -> Result<()> {
        self.inner.check(model)
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        if self.samples == 0 {
            return Err(LumenError::InvalidArgument(
                "a noise tunnel needs at least 1 noisy sample per image (samples = 0)".into(),
            ));
        }
        model.check_input(&input)?;
        let input = input.without_autodiff();
        let [b, _, _, _] = input.dims();
        let n = self.samples;
        let deviations = self.deviations(&input)?;
        // A noise level times a value range can overflow (3e38 x 4 = inf): the noisy
        // inputs would be infinite. Library callers can also set NaN directly.
        if let Some((image, deviation)) = deviations
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, d)| !(d.is_finite() && **d >= 0.0))
        {
            return Err(LumenError::InvalidArgument(format!(
                "the noise's standard deviation for image {image} is {deviation}: it must be a \
                 finite number >= 0 (a relative level is multiplied by the image's value range)"
            )));
        }
        let streams = match (&self.noise, self.seed) {
            (Noise::Given(_), _) | (_, None) => None,
            (_, Some(seed)) => Some(image_seeds(&input, seed)?),
        };
        let rows = b * n;
        // Bounded by default: budgets of input and activation values per internal batch.
        let chunk = self
            .batch_size
            .unwrap_or_else(|| lumen_core::default_rows_for(model, &input));
        // Each image's samples are combined chunk by chunk (an image split across
        // chunks is folded as it goes), so that one chunk and one row per image are
        // held, not all `b * n` results.
        let mut combiner = SampleCombiner::new(self.kind, n);
        for range in row_chunks(rows, chunk) {
            let images: Vec<usize> = range.clone().map(|r| r / n).collect();
            let part = {
                // The noise is the tunnel's own work (host-drawn when seeded, then copied
                // to the device): timed apart so that `--profile` shows what it costs.
                let _noise = lumen_core::profile::stage_on(METHOD, &input.device());
                self.noisy_rows(&input, range.clone(), &deviations, &streams)
            };
            let explanation =
                self.inner
                    .explain(model, part, target.for_images(&images).as_ref())?;
            combiner.push(match explanation.attributions {
                Some(a) => Sampled::Attributions(a),
                None => Sampled::Maps(explanation.heatmaps.into_tensor()),
            })?;
        }
        match combiner.finish(b)? {
            Sampled::Attributions(combined) => {
                Ok(Explanation::new(attribution_heatmaps(&combined)).with_attributions(combined))
            }
            Sampled::Maps(combined) => Ok(Explanation::new(Heatmaps::new(combined).normalize())),
        }
    }
}

/// What the inner method gave for a chunk of noisy rows: input attributions
/// `[rows,C,H,W]` (gradient methods) or maps `[rows,h,w]` (CAMs).
enum Sampled {
    Attributions(Tensor<4>),
    Maps(Tensor<3>),
}

impl Sampled {
    /// Rows flattened `[rows, d]`, and the shape of one row (`[C,H,W]` for
    /// attributions, `[h,w]` for maps).
    fn flatten(self) -> (Tensor<2>, Vec<usize>) {
        match self {
            Sampled::Attributions(a) => {
                let [rows, c, h, w] = a.dims();
                (a.reshape([rows, c * h * w]), vec![c, h, w])
            }
            Sampled::Maps(m) => {
                let [rows, h, w] = m.dims();
                (m.reshape([rows, h * w]), vec![h, w])
            }
        }
    }
}

/// Combines the image-major rows of a noise tunnel image by image as they arrive.
/// Memory is one chunk and one row per image: the samples of an image that spans
/// chunks are folded into a running [`Partial`], not kept (1024 samples of a 3x128x128
/// image were 192 MiB, more than lavapipe's buffer limit).
struct SampleCombiner {
    kind: NoiseKind,
    samples: usize,
    /// The image whose samples began in an earlier chunk and are not all in yet (rows
    /// are image-major, so there is at most one).
    open: Option<Partial>,
    /// One combined row `[images, d]` per completed group of images.
    combined: Vec<Tensor<2>>,
    /// The shape of one row, which also says what the rows are.
    row_shape: Option<Vec<usize>>,
}

impl SampleCombiner {
    fn new(kind: NoiseKind, samples: usize) -> Self {
        Self {
            kind,
            samples,
            open: None,
            combined: vec![],
            row_shape: None,
        }
    }

    fn push(&mut self, part: Sampled) -> Result<()> {
        let (flat, shape) = part.flatten();
        match &self.row_shape {
            None => self.row_shape = Some(shape),
            Some(known) if *known == shape => {}
            Some(known) => {
                return Err(LumenError::InvalidArgument(format!(
                    "the noise tunnel's inner method gave rows of shape {shape:?} after {known:?}"
                )));
            }
        }
        let [rows, _] = flat.dims();
        let n = self.samples;
        let mut start = 0;
        // The open image's remaining samples come first.
        if let Some(open) = self.open.take() {
            start = (n - open.count).min(rows);
            let merged = open.merge(Partial::of(self.kind, flat.clone().narrow(0, 0, start)));
            if merged.count < n {
                self.open = Some(merged);
                return Ok(());
            }
            self.combined.push(merged.finish(self.kind));
        }
        // Then whole images, combined at once.
        let whole = (rows - start) / n;
        if whole > 0 {
            let rows_of_whole = flat.clone().narrow(0, start, whole * n);
            self.combined
                .push(combine(self.kind, rows_of_whole, whole, n));
            start += whole * n;
        }
        // The rest begins the next image.
        if start < rows {
            self.open = Some(Partial::of(self.kind, flat.narrow(0, start, rows - start)));
        }
        Ok(())
    }

    /// The combined rows of all `images` images.
    fn finish(self, images: usize) -> Result<Sampled> {
        let (Some(shape), None) = (self.row_shape, self.open) else {
            return Err(LumenError::InvalidArgument(
                "the noise tunnel's samples do not fill whole images".into(),
            ));
        };
        let all = Tensor::cat(self.combined, 0);
        Ok(match *shape.as_slice() {
            [c, h, w] => Sampled::Attributions(all.reshape([images, c, h, w])),
            [h, w] => Sampled::Maps(all.reshape([images, h, w])),
            _ => unreachable!("`flatten` gives 3 or 2 sides"),
        })
    }
}
