//! The CAM family on a named layer, as pytorch-grad-cam computes it.
//!
//! One batched forward and backward ([`LayerPass`]) yields the activations and
//! gradients at the layer; each method is then a few lines of tensor math on the
//! device. Token layers `[B,N,D]` are reshaped to their patch grid with the prefix
//! tokens dropped, so ViTs work. Output convention (pytorch-grad-cam): ReLU, per-image
//! min-max, bilinear resize to the input (align_corners = false), min-max again.

use burn::tensor::activation::softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use lumen_core::{
    ExplainableModel, GradientTap, Heatmaps, LayerKind, LumenError, ReplaceTap, Result, TapTensor,
    Target,
};

use crate::{Explanation, Method};

/// The gradient-based and gradient-free CAMs that need one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CamKind {
    /// Selvaraju et al. 2017: channel weights are the spatial mean of the gradients.
    GradCam,
    /// Chattopadhay et al. 2018, eq. 19 (with pytorch-grad-cam's eps 1e-6).
    GradCamPlusPlus,
    /// Fu et al. 2020: weights `sum(g * A) / (sum(A) + 1e-7)`.
    XGradCam,
    /// Jiang et al. 2021: `sum_c relu(g) * A`.
    LayerCam,
    /// Draelos & Carin 2020: `sum_c g * A`.
    HiResCam,
    /// `sum_c relu(g * A)`.
    GradCamElementWise,
    /// Muhammad & Yeasin 2020: first principal component of the activations.
    EigenCam,
    /// First principal component of `g * A`.
    EigenGradCam,
}

impl CamKind {
    /// Every one-pass CAM.
    pub const ALL: [CamKind; 8] = [
        Self::GradCam,
        Self::GradCamPlusPlus,
        Self::XGradCam,
        Self::LayerCam,
        Self::HiResCam,
        Self::GradCamElementWise,
        Self::EigenCam,
        Self::EigenGradCam,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::GradCam => "gradcam",
            Self::GradCamPlusPlus => "gradcam++",
            Self::XGradCam => "xgradcam",
            Self::LayerCam => "layercam",
            Self::HiResCam => "hirescam",
            Self::GradCamElementWise => "gradcam-elementwise",
            Self::EigenCam => "eigencam",
            Self::EigenGradCam => "eigengradcam",
        }
    }

    /// Whether the method needs the backward pass.
    pub fn needs_gradients(self) -> bool {
        !matches!(self, Self::EigenCam)
    }

    /// The raw map `[B,h,w]` (before ReLU) from a pass.
    pub fn raw_map(self, pass: &LayerPass) -> Tensor<3> {
        let a = pass.activations.clone();
        let grads = || {
            pass.gradients
                .clone()
                .expect("gradient CAMs are computed from a pass with gradients")
        };
        let weighted = |w: Tensor<2>| {
            let [b, c] = w.dims();
            (w.reshape([b, c, 1, 1]) * a.clone())
                .sum_dim(1)
                .squeeze_dim::<3>(1)
        };
        let channel_sum = |t: Tensor<4>| t.sum_dim(1).squeeze_dim::<3>(1);
        match self {
            Self::GradCam => weighted(grads().mean_dims(&[2, 3]).flatten(1, 3)),
            Self::GradCamPlusPlus => {
                let g = grads();
                let g2 = g.clone().powi_scalar(2);
                let g3 = g2.clone() * g.clone();
                let sum_a = a.clone().sum_dims(&[2, 3]);
                let aij = g2.clone() / (g2.mul_scalar(2.0) + sum_a * g3 + 1e-6);
                let aij = aij.mask_fill(g.clone().equal_elem(0.0), 0.0);
                weighted((g.clamp_min(0.0) * aij).sum_dims(&[2, 3]).flatten(1, 3))
            }
            Self::XGradCam => {
                let sum_a = a.clone().sum_dims(&[2, 3]);
                weighted(
                    (grads() * a.clone() / (sum_a + 1e-7))
                        .sum_dims(&[2, 3])
                        .flatten(1, 3),
                )
            }
            Self::LayerCam => channel_sum(grads().clamp_min(0.0) * a),
            Self::HiResCam => channel_sum(grads() * a),
            Self::GradCamElementWise => channel_sum((grads() * a).clamp_min(0.0)),
            Self::EigenCam => first_component_projection(a),
            Self::EigenGradCam => first_component_projection(grads() * a),
        }
    }
}

/// Activations (and gradients) at one layer for a batch, as feature maps `[B,C,h,w]`
/// (token layers already reshaped to their grid), from one forward and one backward.
#[derive(Clone, Debug)]
pub struct LayerPass {
    /// Activations `[B,C,h,w]`, detached.
    pub activations: Tensor<4>,
    /// Gradients of the summed target scores `[B,C,h,w]`, when asked for.
    pub gradients: Option<Tensor<4>>,
    /// The target score of each image in this pass.
    pub scores: Vec<f32>,
    /// The input size `[H,W]`.
    pub input_size: [usize; 2],
}

impl LayerPass {
    /// Run the model once (and backward once when `with_gradients`), batched: the
    /// targets of all images are summed into one score, and since the images of a
    /// batch do not interact in eval mode, each image's gradient is its own.
    pub fn run<M: ExplainableModel>(
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
        layer: &str,
        with_gradients: bool,
    ) -> Result<Self> {
        model.check_input(&input)?;
        let info = model.layer(layer)?;
        let [_, _, h, w] = input.dims();
        let tap = GradientTap::new([layer]);
        let output = model.forward_tapped(input, &tap);
        let activation = tap.activation(layer).ok_or_else(|| not_reached(layer))?;
        let score = target.score(&output)?;
        let scores = lumen_core::to_host(score.clone().detach().without_autodiff());
        let gradients = if with_gradients {
            let grads = score.sum().backward();
            let gradient = tap
                .gradient(layer, &grads)
                .unwrap_or_else(|| zeros_like_tap(&activation));
            Some(as_feature_map(gradient, &info.kind, layer)?)
        } else {
            None
        };
        Ok(Self {
            activations: as_feature_map(activation, &info.kind, layer)?,
            gradients,
            scores,
            input_size: [h, w],
        })
    }
}

fn not_reached(layer: &str) -> LumenError {
    LumenError::InvalidArgument(format!(
        "layer `{layer}` is listed by the model but its forward pass never visited it"
    ))
}

fn zeros_like_tap(t: &TapTensor) -> TapTensor {
    match t {
        TapTensor::Rank4(t) => TapTensor::Rank4(t.zeros_like()),
        TapTensor::Rank3(t) => TapTensor::Rank3(t.zeros_like()),
        TapTensor::Rank2(t) => TapTensor::Rank2(t.zeros_like()),
    }
}

/// A layer's tensor as a `[B,C,h,w]` map: feature maps as they are, tokens with the
/// prefix tokens dropped and the patch tokens laid on their grid (the
/// `reshape_transform` pytorch-grad-cam documents for ViTs).
pub fn as_feature_map(t: TapTensor, kind: &LayerKind, layer: &str) -> Result<Tensor<4>> {
    let wrong = |found: &LayerKind| LumenError::WrongLayerKind {
        name: layer.to_string(),
        expected: "a feature map [B,C,H,W] or tokens [B,N,D]",
        found: found.to_string(),
    };
    match (t, kind) {
        (TapTensor::Rank4(t), LayerKind::FeatureMap) => Ok(t),
        (
            TapTensor::Rank3(t),
            LayerKind::Tokens {
                grid,
                prefix_tokens,
            },
        ) => Ok(tokens_to_map(t, *grid, *prefix_tokens)),
        (_, kind) => Err(wrong(kind)),
    }
}

/// `[B,N,D]` tokens to a `[B,D,gh,gw]` map, dropping `prefix` leading tokens.
pub fn tokens_to_map(tokens: Tensor<3>, grid: [usize; 2], prefix: usize) -> Tensor<4> {
    let [b, _, d] = tokens.dims();
    tokens
        .narrow(1, prefix, grid[0] * grid[1])
        .reshape([b, grid[0], grid[1], d])
        .permute([0, 3, 1, 2])
}

/// Projection of each position on the first principal component of the centred
/// `[h*w, C]` activation matrix (pytorch-grad-cam's `get_2d_projection`), with the sign
/// fixed so that the projection correlates positively with the channel-mean map.
///
/// Computed on the device without an SVD: the top eigenvector of the smaller Gram
/// matrix (`C x C` or `hw x hw`) by repeated squaring, then a few power steps.
pub fn first_component_projection(maps: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = maps.dims();
    let n = h * w;
    // X: [B, n, C], centred over positions.
    let x = maps.clone().reshape([b, c, n]).swap_dims(1, 2);
    let x = x.clone() - x.mean_dim(1);
    let projection = if c <= n {
        // v = top eigenvector of X^T X, projection = X v.
        let gram = x.clone().swap_dims(1, 2).matmul(x.clone());
        let v = top_eigenvector(gram);
        x.matmul(v).reshape([b, n])
    } else {
        // u = top eigenvector of X X^T; X v = sigma u, and sigma^2 = u^T X X^T u.
        let gram = x.clone().matmul(x.swap_dims(1, 2));
        let u = top_eigenvector(gram.clone());
        let sigma2 = u
            .clone()
            .swap_dims(1, 2)
            .matmul(gram)
            .matmul(u.clone())
            .reshape([b, 1]);
        u.reshape([b, n]) * sigma2.clamp_min(0.0).sqrt()
    };
    // Sign: correlate positively with the channel-mean activation map.
    let mean_map = maps.mean_dim(1).reshape([b, n]);
    let mean_map = mean_map.clone() - mean_map.mean_dim(1);
    let centred = projection.clone() - projection.clone().mean_dim(1);
    let correlation = (centred * mean_map).sum_dim(1);
    // A zero correlation (constant mean map) keeps +1 rather than zeroing the map.
    let sign = correlation
        .ones_like()
        .mask_fill(correlation.lower_elem(0.0), -1.0);
    (projection * sign).reshape([b, h, w])
}

/// Top eigenvector `[B,k,1]` of symmetric positive semi-definite matrices `[B,k,k]`.
fn top_eigenvector(gram: Tensor<3>) -> Tensor<3> {
    let [b, k, _] = gram.dims();
    // Repeated squaring: G^(2^s) is dominated by the top eigenpair after a few steps
    // even when the eigengap is small; normalise to stay in range.
    let mut power = gram.clone();
    for _ in 0..24 {
        let scale = power.clone().abs().max_dims(&[1, 2]) + 1e-30;
        power = power.clone() / scale;
        power = power.clone().matmul(power);
    }
    // The column of largest norm points along the top eigenvector.
    let norms = power.clone().powi_scalar(2).sum_dim(1); // [B,1,k]
    let best = norms.argmax(2).reshape([b, 1, 1]).expand([b, k, 1]);
    let mut v = power.gather(2, best);
    for _ in 0..8 {
        v = gram.clone().matmul(v);
        let norm = v.clone().powi_scalar(2).sum_dim(1).sqrt() + 1e-30;
        v = v / norm;
    }
    v
}

/// Apply the output convention to raw maps `[B,h,w]`: ReLU, per-image min-max,
/// resize to the input, min-max again (pytorch-grad-cam's `scale_cam_image` per layer
/// and once more after aggregating layers).
pub fn finish_cam(raw: Tensor<3>, input_size: [usize; 2]) -> Heatmaps {
    Heatmaps::new(raw.clamp_min(0.0))
        .normalize()
        .resize(input_size)
        .normalize()
}

/// `finish_cam(sum_c w[b,c] * A[b,c])` for channel weights `[B,C]` (Score-CAM,
/// Ablation-CAM).
fn weighted_cam(weights: Tensor<2>, pass: &LayerPass) -> Heatmaps {
    let [b, c] = weights.dims();
    let raw = (weights.reshape([b, c, 1, 1]) * pass.activations.clone())
        .sum_dim(1)
        .squeeze_dim::<3>(1);
    finish_cam(raw, pass.input_size)
}

/// Compute several one-pass CAMs from a single forward and backward: what
/// `compare_methods` uses.
pub fn cams_from_one_pass<M: ExplainableModel>(
    model: &M,
    input: Tensor<4>,
    target: &dyn Target<M::Output>,
    layer: &str,
    kinds: &[CamKind],
) -> Result<Vec<Heatmaps>> {
    let with_gradients = kinds.iter().any(|k| k.needs_gradients());
    let pass = LayerPass::run(model, input, target, layer, with_gradients)?;
    Ok(kinds
        .iter()
        .map(|kind| finish_cam(kind.raw_map(&pass), pass.input_size))
        .collect())
}

/// A one-pass CAM on a layer (the model's default layer when `None`).
#[derive(Clone, Debug)]
pub struct Cam {
    /// Which CAM.
    pub kind: CamKind,
    /// Target layer.
    pub layer: Option<String>,
}

impl Cam {
    /// A CAM on the model's default layer.
    pub fn new(kind: CamKind) -> Self {
        Self { kind, layer: None }
    }

    /// Use this layer.
    pub fn with_layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = Some(layer.into());
        self
    }
}

fn resolve_layer<M: ExplainableModel>(model: &M, layer: &Option<String>) -> String {
    layer.clone().unwrap_or_else(|| model.default_layer())
}

impl<M: ExplainableModel> Method<M> for Cam {
    fn name(&self) -> String {
        self.kind.name().to_string()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let layer = resolve_layer(model, &self.layer);
        let mut maps = cams_from_one_pass(model, input, target, &layer, &[self.kind])?;
        Ok(Explanation::maps(maps.remove(0)))
    }
}

/// Run `rows` derived forward passes in chunks of `batch_size` and collect one target
/// score per row `[rows]`, kept on the device: `run_chunk(range)` runs the forward of a
/// chunk of rows, and `images[r]` is the original image of row `r`.
fn chunked_scores<M: ExplainableModel>(
    rows: usize,
    batch_size: usize,
    images: &[usize],
    target: &dyn Target<M::Output>,
    mut run_chunk: impl FnMut(std::ops::Range<usize>) -> Result<M::Output>,
) -> Result<Tensor<1>> {
    let mut scores = Vec::with_capacity(rows.div_ceil(batch_size.max(1)));
    let mut start = 0;
    while start < rows {
        let end = (start + batch_size.max(1)).min(rows);
        let output = run_chunk(start..end)?;
        let chunk_target = target.for_images(&images[start..end]);
        scores.push(chunk_target.score(&output)?.detach().without_autodiff());
        start = end;
    }
    Ok(Tensor::cat(scores, 0))
}

/// Score-CAM (Wang et al. 2020): channel weights are the softmax over channels of the
/// target score when the input is masked by each upsampled, min-max normalised
/// activation map. The masked forwards run in batches of `batch_size` (rows mix
/// images and channels).
#[derive(Clone, Debug)]
pub struct ScoreCam {
    /// Target layer (model default when `None`).
    pub layer: Option<String>,
    /// Masked inputs per forward pass.
    pub batch_size: usize,
}

impl Default for ScoreCam {
    fn default() -> Self {
        Self {
            layer: None,
            batch_size: 64,
        }
    }
}

impl<M: ExplainableModel> Method<M> for ScoreCam {
    fn name(&self) -> String {
        "scorecam".into()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let layer = resolve_layer(model, &self.layer);
        let pass = LayerPass::run(model, input.clone(), target, &layer, false)?;
        let [b, c, _, _] = pass.activations.dims();
        let [h, w] = pass.input_size;
        // pytorch-grad-cam upsamples with nn.UpsamplingBilinear2d, i.e. align_corners=True.
        let upsampled = interpolate(
            pass.activations.clone(),
            InterpolateOptions::new(InterpolateMode::Bilinear)
                .with_align_corners(true)
                .with_output_size([h, w]),
        );
        let flat = upsampled.reshape([b * c, h * w]);
        let min = flat.clone().min_dim(1);
        let max = flat.clone().max_dim(1);
        let masks = ((flat - min.clone()) / (max - min + 1e-8)).reshape([b * c, 1, h, w]);
        let images: Vec<usize> = (0..b * c).map(|r| r / c).collect();
        let device = input.device();
        let scores = chunked_scores::<M>(b * c, self.batch_size, &images, target, |rows| {
            let index = index_tensor(&images[rows.clone()], &device);
            let x = input.clone().select(0, index);
            let m = masks.clone().narrow(0, rows.start, rows.len());
            Ok(model.forward(x * m))
        })?;
        Ok(Explanation::maps(weighted_cam(
            softmax(scores.reshape([b, c]), 1),
            &pass,
        )))
    }
}

fn index_tensor(indices: &[usize], device: &lumen_core::Device) -> Tensor<1, burn::tensor::Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// Ablation-CAM (Desai & Ramaswamy 2020): channel weights are the relative drop of the
/// target score when the channel is set to zero at the layer,
/// `(score - score_ablated) / score`. Ablated forwards run in batches.
///
/// pytorch-grad-cam 1.5.7 ablates with zero only when the layer's minimum is zero
/// and otherwise with `min - 1e7` (growing with each row); we follow the paper and
/// always ablate with zero, which agrees with the reference on ReLU outputs.
#[derive(Clone, Debug)]
pub struct AblationCam {
    /// Target layer (model default when `None`).
    pub layer: Option<String>,
    /// Ablated copies per forward pass.
    pub batch_size: usize,
}

impl Default for AblationCam {
    fn default() -> Self {
        Self {
            layer: None,
            batch_size: 64,
        }
    }
}

impl<M: ExplainableModel> Method<M> for AblationCam {
    fn name(&self) -> String {
        "ablationcam".into()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let layer = resolve_layer(model, &self.layer);
        let info = model.layer(&layer)?;
        let pass = LayerPass::run(model, input.clone(), target, &layer, false)?;
        let [b, c, _, _] = pass.activations.dims();
        let device = input.device();
        let original = pass.scores.clone();
        let images: Vec<usize> = (0..b * c).map(|r| r / c).collect();
        let channel_dim = match info.kind {
            LayerKind::Tokens { .. } => 2,
            _ => 1,
        };
        let ablated = chunked_scores::<M>(b * c, self.batch_size, &images, target, |rows| {
            let n = rows.len();
            let x = input
                .clone()
                .select(0, index_tensor(&images[rows.clone()], &device));
            // keep[r, ch] = 0 for the ablated channel of row r.
            let mut keep = vec![1.0f32; n * c];
            for (i, row) in rows.clone().enumerate() {
                keep[i * c + row % c] = 0.0;
            }
            let keep = Tensor::<2>::from_data(TensorData::new(keep, [n, c]), &device);
            let tap = ReplaceTap::new(layer.clone(), move |t| match t {
                TapTensor::Rank4(a) => TapTensor::Rank4(a * keep.clone().reshape([n, c, 1, 1])),
                TapTensor::Rank3(a) if channel_dim == 2 => {
                    TapTensor::Rank3(a * keep.clone().reshape([n, 1, c]))
                }
                other => other,
            });
            Ok(model.forward_tapped(x, &tap))
        })?;
        let original = Tensor::<2>::from_data(TensorData::new(original, [b, 1]), &device);
        let weights = (original.clone() - ablated.reshape([b, c])) / original;
        Ok(Explanation::maps(weighted_cam(weights, &pass)))
    }
}
