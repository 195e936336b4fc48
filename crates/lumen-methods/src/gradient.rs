//! Gradient and path methods: Saliency, Input x Gradient and Integrated Gradients, as
//! captum computes them. All images of a batch (and all path steps, up to the
//! internal batch size) share one forward and one backward.

use burn::tensor::{IndexingUpdateOp, Tensor, TensorData};
use lumen_core::profile::stages::{BACKWARD, FORWARD};
use lumen_core::{
    ExplainableModel, Heatmaps, LumenError, Result, Target, index_tensor, row_chunks,
};

use crate::method::{Explanation, Method};

/// Gradient of the summed target scores with respect to the input `[B,3,H,W]`, from one
/// batched forward and backward.
pub fn input_gradients<M: ExplainableModel>(
    model: &M,
    input: Tensor<4>,
    target: &dyn Target<M::Output>,
) -> Result<Tensor<4>> {
    model.check_input(&input)?;
    let x = input.detach().without_autodiff().autodiff().require_grad();
    let device = x.device();
    let score = {
        let _forward = lumen_core::profile::stage_on(FORWARD, &device);
        target.score(&model.forward(x.clone()))?.sum()
    };
    let grads = {
        let _backward = lumen_core::profile::stage_on(BACKWARD, &device);
        lumen_core::backward_if_tracked(&score)
    };
    Ok(grads
        .and_then(|grads| x.grad(&grads))
        .unwrap_or_else(|| x.zeros_like().without_autodiff()))
}

/// The heatmap of a signed attribution `[B,3,H,W]`: the maximum over channels of the
/// absolute value (captum's `visualize_image_attr` "absolute_value", per pixel), then
/// per-image min-max normalisation.
pub fn attribution_heatmaps(attributions: &Tensor<4>) -> Heatmaps {
    let [b, _, h, w] = attributions.dims();
    Heatmaps::new(attributions.clone().abs().max_dim(1).reshape([b, h, w])).normalize()
}

fn gradient_explanation(attributions: Tensor<4>) -> Explanation {
    Explanation::new(attribution_heatmaps(&attributions)).with_attributions(attributions)
}

/// Saliency (Simonyan et al. 2014): the raw input gradient (captum `Saliency` with
/// `abs=False`; the heatmap takes the absolute value).
#[derive(Clone, Copy, Debug, Default)]
pub struct Saliency;

impl<M: ExplainableModel> Method<M> for Saliency {
    fn name(&self) -> String {
        "saliency".into()
    }

    fn scores_the_input_itself(&self) -> bool {
        true
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        Ok(gradient_explanation(input_gradients(model, input, target)?))
    }
}

/// Input x Gradient (Shrikumar et al. 2016).
#[derive(Clone, Copy, Debug, Default)]
pub struct InputXGradient;

impl<M: ExplainableModel> Method<M> for InputXGradient {
    fn name(&self) -> String {
        "inputxgrad".into()
    }

    fn scores_the_input_itself(&self) -> bool {
        true
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let grads = input_gradients(model, input.clone(), target)?;
        Ok(gradient_explanation(input.without_autodiff() * grads))
    }
}

/// The reference input Integrated Gradients integrates from.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// All zeros in the normalised space (captum's default).
    Zeros,
    /// Black pixels: `(0 - mean) / std` per channel.
    Black { mean: [f32; 3], std: [f32; 3] },
    /// White pixels: `(1 - mean) / std` per channel.
    White { mean: [f32; 3], std: [f32; 3] },
    /// The input blurred by a Gaussian of this standard deviation in pixels.
    Blur { sigma: f32 },
    /// Uniform noise over the input's range, reproducible with a seed (seeded: each
    /// image's own range and draws, whatever else is in the batch).
    Uniform { seed: Option<u64> },
    /// Each image's own per-channel mean colour.
    Mean,
    /// A user tensor `[B,3,H,W]` or `[1,3,H,W]`.
    Tensor(Box<Tensor<4>>),
}

/// A baseline by name, before the data it needs (normalisation, seed) is known: what
/// options and the command line carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BaselineKind {
    /// All zeros in the normalised space (captum's default).
    #[default]
    Zeros,
    /// Black pixels.
    Black,
    /// White pixels.
    White,
    /// A Gaussian blur (sigma 5 px) of the input.
    Blur,
    /// Seeded uniform noise over the input's range.
    Uniform,
    /// Each image's mean colour.
    Mean,
}

lumen_core::named_choices!(BaselineKind, "baseline", {
    Zeros => "zeros",
    Black => "black",
    White => "white",
    Blur => "blur",
    Uniform => "uniform",
    Mean => "mean",
});

impl BaselineKind {
    /// The baseline, given the model's normalisation and a seed for the random one.
    pub fn with(self, mean: [f32; 3], std: [f32; 3], seed: Option<u64>) -> Baseline {
        match self {
            Self::Zeros => Baseline::Zeros,
            Self::Black => Baseline::Black { mean, std },
            Self::White => Baseline::White { mean, std },
            Self::Blur => Baseline::Blur { sigma: 5.0 },
            Self::Uniform => Baseline::Uniform { seed },
            Self::Mean => Baseline::Mean,
        }
    }
}

impl Baseline {
    /// The baseline for a batch.
    pub fn build(&self, input: &Tensor<4>) -> Result<Tensor<4>> {
        let [b, c, h, w] = input.dims();
        let device = input.device();
        let per_channel = |values: [f32; 3]| {
            Tensor::<4>::from_data(TensorData::new(values.to_vec(), [1, 3, 1, 1]), &device)
                .expand([b, c, h, w])
        };
        self.validate(c)?;
        Ok(match self {
            Self::Zeros => input.zeros_like(),
            Self::Black { mean, std } => per_channel(std::array::from_fn(|i| -mean[i] / std[i])),
            Self::White { mean, std } => {
                per_channel(std::array::from_fn(|i| (1.0 - mean[i]) / std[i]))
            }
            Self::Blur { sigma } => gaussian_blur(input.clone(), *sigma),
            Self::Uniform { seed: None } => {
                let lo = lumen_core::to_host(input.clone().min())?[0];
                let hi = lumen_core::to_host(input.clone().max())?[0];
                lumen_core::random::uniform([b, c, h, w], lo, hi, None, &device)
                    .map_err(uniform_range_error)?
            }
            // Seeded: each image's own range and its own stream (seeded from its values),
            // so that an image's baseline does not depend on the rest of the batch.
            Self::Uniform { seed: Some(seed) } => {
                let host = lumen_core::to_host(input.clone())?;
                let per_image = c * h * w;
                let seeds = lumen_core::random::image_seeds_of(&host, b, *seed);
                let values: Vec<f32> = (0..b)
                    .map(|i| {
                        let image = &host[i * per_image..(i + 1) * per_image];
                        let lo = image.iter().copied().fold(f32::INFINITY, f32::min);
                        let hi = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        lumen_core::random::uniform_values(per_image, lo, hi, seeds[i])
                            .map_err(uniform_range_error)
                    })
                    .collect::<Result<Vec<Vec<f32>>>>()?
                    .concat();
                Tensor::from_data(TensorData::new(values, [b, c, h, w]), &device)
            }
            Self::Mean => input
                .clone()
                .reshape([b, c, h * w])
                .mean_dim(2)
                .reshape([b, c, 1, 1])
                .expand([b, c, h, w]),
            Self::Tensor(t) => {
                let dims = t.dims();
                if dims == [b, c, h, w] {
                    *t.clone()
                } else if dims == [1, c, h, w] {
                    t.clone().expand([b, c, h, w])
                } else {
                    return Err(LumenError::shape(
                        "baseline",
                        format!("[{b},{c},{h},{w}] or [1,{c},{h},{w}]"),
                        format!("{dims:?}"),
                    ));
                }
            }
        })
    }

    /// Check the settings against an input of `channels` channels: a blur's sigma
    /// finite and > 0, the normalisation of black and white finite with `std != 0`
    /// and one value per channel.
    pub fn validate(&self, channels: usize) -> Result<()> {
        match self {
            Self::Blur { sigma } if !(sigma.is_finite() && *sigma > 0.0) => {
                Err(LumenError::InvalidArgument(format!(
                    "the blur baseline's sigma must be a finite number > 0, got {sigma}"
                )))
            }
            Self::Black { mean, std } | Self::White { mean, std } => {
                if channels != 3 {
                    return Err(LumenError::InvalidArgument(format!(
                        "the black and white baselines carry 3 channels of normalisation; the input has {channels}"
                    )));
                }
                if mean.iter().chain(std).any(|v| !v.is_finite()) || std.contains(&0.0) {
                    return Err(LumenError::InvalidArgument(format!(
                        "the black and white baselines need a finite normalisation with std != 0, got mean {mean:?} and std {std:?}"
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn uniform_range_error(error: LumenError) -> LumenError {
    LumenError::InvalidArgument(format!(
        "the uniform baseline spans the input's values, which must be finite: {error}"
    ))
}

/// Separable Gaussian blur with reflect-free zero padding, kernel radius `3 sigma`.
fn gaussian_blur(x: Tensor<4>, sigma: f32) -> Tensor<4> {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    // Taps farther than the image's longer side only ever meet the zero padding, in
    // the blur and in its normaliser alike: leaving them out changes nothing, and a
    // huge sigma does not become a huge kernel.
    let [_, _, h, w] = x.dims();
    let longest = h.max(w).saturating_sub(1).max(1) as f32;
    let radius = (3.0 * sigma).ceil().clamp(1.0, longest) as usize;
    // In f64: a tiny sigma's square would underflow to 0 in f32 (0 / 0 at the centre).
    let sigma = f64::from(sigma);
    let kernel: Vec<f64> = (0..2 * radius + 1)
        .map(|i| {
            let d = i as f64 - radius as f64;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f64 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| (k / total) as f32).collect();
    let [_, c, _, _] = x.dims();
    let device = x.device();
    let k = kernel.len();
    let horizontal =
        Tensor::<4>::from_data(TensorData::new(kernel.repeat(c), [c, 1, 1, k]), &device);
    let vertical = Tensor::<4>::from_data(TensorData::new(kernel.repeat(c), [c, 1, k, 1]), &device);
    // Normalise by the blurred ones so borders are not darkened by the zero padding.
    let ones = x.ones_like();
    let blur = |t: Tensor<4>| {
        let t = conv2d(
            t,
            horizontal.clone(),
            None,
            ConvOptions::new([1, 1], [0, radius], [1, 1], c),
        );
        conv2d(
            t,
            vertical.clone(),
            None,
            ConvOptions::new([1, 1], [radius, 0], [1, 1], c),
        )
    };
    blur(x) / blur(ones)
}

/// How Integrated Gradients places its steps on the path (captum's `method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IntegrationRule {
    /// Gauss-Legendre quadrature (captum's default).
    #[default]
    GaussLegendre,
    /// Left Riemann sum.
    RiemannLeft,
    /// Right Riemann sum.
    RiemannRight,
    /// Midpoint Riemann sum.
    RiemannMiddle,
    /// Trapezoid rule.
    RiemannTrapezoid,
}

// captum's names for its `method` argument.
lumen_core::named_choices!(IntegrationRule, "integration rule", {
    GaussLegendre => "gausslegendre",
    RiemannLeft => "riemann_left",
    RiemannRight => "riemann_right",
    RiemannMiddle => "riemann_middle",
    RiemannTrapezoid => "riemann_trapezoid",
});

impl IntegrationRule {
    /// Step sizes and positions `alpha` in `[0, 1]`, as captum's
    /// `approximation_parameters`, except the trapezoid rule: captum 0.9.0 spaces its
    /// points `1/(n-1)` apart but weights them `1/n` (the weights sum to `(n-1)/n`);
    /// we use the trapezoid rule's `1/(n-1)` unless `captum_compat`.
    pub fn steps_with(self, n: usize, captum_compat: bool) -> (Vec<f64>, Vec<f64>) {
        let (mut sizes, alphas) = self.steps(n);
        if captum_compat && self == Self::RiemannTrapezoid && n > 1 {
            sizes = vec![1.0 / n as f64; n];
            sizes[0] /= 2.0;
            sizes[n - 1] /= 2.0;
        }
        (sizes, alphas)
    }

    /// Step sizes and positions `alpha` in `[0, 1]` (see [`Self::steps_with`]).
    pub fn steps(self, n: usize) -> (Vec<f64>, Vec<f64>) {
        let n = n.max(1);
        match self {
            Self::GaussLegendre => {
                let (nodes, weights) = gauss_legendre(n);
                (
                    weights.iter().map(|w| w / 2.0).collect(),
                    nodes.iter().map(|x| (x + 1.0) / 2.0).collect(),
                )
            }
            Self::RiemannLeft => (
                vec![1.0 / n as f64; n],
                (0..n).map(|i| i as f64 / n as f64).collect(),
            ),
            Self::RiemannRight => (
                vec![1.0 / n as f64; n],
                (1..=n).map(|i| i as f64 / n as f64).collect(),
            ),
            Self::RiemannMiddle => (
                vec![1.0 / n as f64; n],
                (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect(),
            ),
            Self::RiemannTrapezoid => {
                if n == 1 {
                    return (vec![1.0], vec![0.5]);
                }
                let step = 1.0 / (n - 1) as f64;
                let mut sizes = vec![step; n];
                sizes[0] = step / 2.0;
                sizes[n - 1] = step / 2.0;
                (sizes, (0..n).map(|i| i as f64 * step).collect())
            }
        }
    }
}

/// Gauss-Legendre nodes (ascending) and weights on `[-1, 1]` by Newton iteration on
/// the Legendre polynomial, as numpy's `leggauss`.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n {
        // Chebyshev-like initial guess for the i-th root (descending), refined by Newton.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        for _ in 0..100 {
            let (p, dp) = legendre(n, x);
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let (_, dp) = legendre(n, x);
        nodes[n - 1 - i] = x;
        weights[n - 1 - i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
    (nodes, weights)
}

/// `P_n(x)` and `P_n'(x)` by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
        p0 = p1;
        p1 = p2;
    }
    let dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, dp)
}

/// The most path points Integrated Gradients takes. The method converges within a few
/// hundred (the paper: 20 to 300); past this the step list alone grows without bound
/// (4e9 steps asked for 32 GB and aborted) and the Gauss-Legendre nodes cost O(n^2).
pub const MAX_PATH_STEPS: usize = 10_000;

/// Integrated Gradients (Sundararajan et al. 2017), as captum computes it:
/// `(x - x') * sum_i w_i * grad f(x' + a_i (x - x'))`, with the completeness gap
/// reported per image.
#[derive(Clone, Debug)]
pub struct IntegratedGradients {
    /// Reference input.
    pub baseline: Baseline,
    /// Number of path points.
    pub steps: usize,
    /// Placement of the points.
    pub rule: IntegrationRule,
    /// Path points (over all images) per forward/backward: the memory knob. `None`:
    /// budgets of input and activation values (`lumen_core::default_rows_for`), so
    /// memory stays bounded.
    pub internal_batch_size: Option<usize>,
    /// Use captum's trapezoid weights (see [`IntegrationRule::steps_with`]).
    pub captum_compat: bool,
}

impl Default for IntegratedGradients {
    fn default() -> Self {
        Self {
            baseline: Baseline::Zeros,
            steps: 50,
            rule: IntegrationRule::GaussLegendre,
            internal_batch_size: None,
            captum_compat: false,
        }
    }
}

impl<M: ExplainableModel> Method<M> for IntegratedGradients {
    fn name(&self) -> String {
        "ig".into()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        model.check_input(&input)?;
        if !(1..=MAX_PATH_STEPS).contains(&self.steps) {
            return Err(LumenError::InvalidArgument(format!(
                "Integrated Gradients takes 1 to {MAX_PATH_STEPS} path steps, got {}",
                self.steps
            )));
        }
        let input = input.without_autodiff();
        let [b, _, _, _] = input.dims();
        let device = input.device();
        let baseline = self.baseline.build(&input)?;
        let delta = input.clone() - baseline.clone();
        let (step_sizes, alphas) = self.rule.steps_with(self.steps, self.captum_compat);
        let n = alphas.len();
        // Rows are ordered step-major (all images at alpha_0, then alpha_1, ...), as captum.
        let rows = n * b;
        // Bounded by default: budgets of input and activation values per internal batch.
        let chunk = self
            .internal_batch_size
            .unwrap_or_else(|| lumen_core::default_rows_for(model, &input));
        let mut total_grad = input.zeros_like();
        for range in row_chunks(rows, chunk) {
            let n = range.len();
            let row_images: Vec<usize> = range.clone().map(|r| r % b).collect();
            let row_alphas: Vec<f32> = range.clone().map(|r| alphas[r / b] as f32).collect();
            let row_weights: Vec<f32> = range.map(|r| step_sizes[r / b] as f32).collect();
            let index = index_tensor(&row_images, &device);
            let column =
                |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [n, 1, 1, 1]), &device);
            let scaled = baseline.clone().select(0, index.clone())
                + delta.clone().select(0, index.clone()) * column(row_alphas);
            let grads = input_gradients(model, scaled, target.for_images(&row_images).as_ref())?;
            let weighted = grads * column(row_weights);
            // Accumulate each row's weighted gradient into its image.
            total_grad = total_grad.select_assign(0, index, weighted, IndexingUpdateOp::Add);
        }
        let attributions = delta * total_grad;
        // Completeness gap: sum(attr) - (f(x) - f(x')), one forward for both ends.
        let ends = {
            let _forward = lumen_core::profile::stage_on(FORWARD, &device);
            model.forward(Tensor::cat(vec![input, baseline], 0))
        };
        let ends_target = target.for_images(&(0..2 * b).map(|r| r % b).collect::<Vec<_>>());
        let end_scores = lumen_core::to_host(ends_target.score(&ends)?)?;
        let sums = lumen_core::to_host(attributions.clone().sum_dims(&[1, 2, 3]).reshape([b]))?;
        let convergence_delta = (0..b)
            .map(|i| sums[i] - (end_scores[i] - end_scores[b + i]))
            .collect();
        Ok(gradient_explanation(attributions).with_convergence_delta(convergence_delta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_matches_numpy_leggauss() {
        // numpy.polynomial.legendre.leggauss(3)
        let (x, w) = gauss_legendre(3);
        let expected_x = [-0.7745966692414834, 0.0, 0.7745966692414834];
        let expected_w = [0.5555555555555556, 0.8888888888888888, 0.5555555555555556];
        for i in 0..3 {
            assert!((x[i] - expected_x[i]).abs() < 1e-12, "{x:?}");
            assert!((w[i] - expected_w[i]).abs() < 1e-12, "{w:?}");
        }
        let (_, w) = gauss_legendre(50);
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn captum_trapezoid_weights_sum_short_of_one() {
        let (sizes, _) = IntegrationRule::RiemannTrapezoid.steps_with(5, true);
        assert_eq!(sizes, vec![0.1, 0.2, 0.2, 0.2, 0.1]);
        let (sizes, _) = IntegrationRule::RiemannTrapezoid.steps_with(5, false);
        assert!((sizes.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn riemann_rules_match_captum() {
        let (sizes, alphas) = IntegrationRule::RiemannTrapezoid.steps(5);
        assert_eq!(alphas, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(sizes, vec![0.125, 0.25, 0.25, 0.25, 0.125]);
        let (_, alphas) = IntegrationRule::RiemannMiddle.steps(4);
        assert_eq!(alphas, vec![0.125, 0.375, 0.625, 0.875]);
    }
}
