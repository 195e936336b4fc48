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
use lumen_core::profile::stages::{BACKWARD, FORWARD};
use lumen_core::{
    ExplainableModel, GradientTap, Heatmaps, LayerKind, LumenError, ReplaceTap, Result, TapTensor,
    Target, index_tensor, map_chunks,
};

pub use lumen_core::{as_feature_map, tokens_to_map};

use crate::method::{Explanation, Method};

/// One CAM that needs a single pass: how its raw map `[B,h,w]` (before ReLU) follows
/// from a layer's activations and gradients. Adding a CAM is one unit struct with
/// this impl plus one row in [`ONE_PASS_CAMS`]; the registry, the CLI help, the
/// parity test and the docs read that table.
pub trait CamMap: Sync + std::fmt::Debug {
    /// Command-line name.
    fn name(&self) -> &'static str;

    /// One line for `--help` and the docs.
    fn summary(&self) -> &'static str;

    /// Whether the map needs the backward pass.
    fn needs_gradients(&self) -> bool {
        true
    }

    /// The raw map `[B,h,w]` (before ReLU) from a pass.
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3>;
}

/// `sum_c w[b,c] * A[b,c]` for channel weights `[B,C]`.
fn weighted_sum(weights: Tensor<2>, activations: &Tensor<4>) -> Tensor<3> {
    let [b, c] = weights.dims();
    (weights.reshape([b, c, 1, 1]) * activations.clone())
        .sum_dim(1)
        .squeeze_dim::<3>(1)
}

fn channel_sum(t: Tensor<4>) -> Tensor<3> {
    t.sum_dim(1).squeeze_dim::<3>(1)
}

/// Selvaraju et al. 2017: channel weights are the spatial mean of the gradients.
#[derive(Clone, Copy, Debug)]
pub struct GradCam;

impl CamMap for GradCam {
    fn name(&self) -> &'static str {
        "gradcam"
    }
    fn summary(&self) -> &'static str {
        "channel weights = spatial mean of the gradients (Selvaraju et al. 2017)"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        weighted_sum(
            pass.gradients().mean_dims(&[2, 3]).flatten(1, 3),
            &pass.activations,
        )
    }
}

/// Chattopadhay et al. 2018, eq. 19 (with pytorch-grad-cam's eps 1e-6).
#[derive(Clone, Copy, Debug)]
pub struct GradCamPlusPlus;

impl CamMap for GradCamPlusPlus {
    fn name(&self) -> &'static str {
        "gradcam++"
    }
    fn summary(&self) -> &'static str {
        "second-order weighting of positive gradients (Chattopadhay et al. 2018)"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        let g = pass.gradients();
        let g2 = g.clone().powi_scalar(2);
        let g3 = g2.clone() * g.clone();
        let sum_a = pass.activations.clone().sum_dims(&[2, 3]);
        let aij = g2.clone() / (g2.mul_scalar(2.0) + sum_a * g3 + 1e-6);
        let aij = aij.mask_fill(g.clone().equal_elem(0.0), 0.0);
        weighted_sum(
            (g.clamp_min(0.0) * aij).sum_dims(&[2, 3]).flatten(1, 3),
            &pass.activations,
        )
    }
}

/// Fu et al. 2020: weights `sum(g * A) / (sum(A) + 1e-7)`.
#[derive(Clone, Copy, Debug)]
pub struct XGradCam;

impl CamMap for XGradCam {
    fn name(&self) -> &'static str {
        "xgradcam"
    }
    fn summary(&self) -> &'static str {
        "weights = sum(g*A) / sum(A), axiom-based (Fu et al. 2020)"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        let a = &pass.activations;
        let sum_a = a.clone().sum_dims(&[2, 3]);
        weighted_sum(
            (pass.gradients() * a.clone() / (sum_a + 1e-7))
                .sum_dims(&[2, 3])
                .flatten(1, 3),
            a,
        )
    }
}

/// Jiang et al. 2021: `sum_c relu(g) * A`.
#[derive(Clone, Copy, Debug)]
pub struct LayerCam;

impl CamMap for LayerCam {
    fn name(&self) -> &'static str {
        "layercam"
    }
    fn summary(&self) -> &'static str {
        "sum_c relu(g) * A, per position (Jiang et al. 2021)"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        channel_sum(pass.gradients().clamp_min(0.0) * pass.activations.clone())
    }
}

/// Draelos & Carin 2020: `sum_c g * A`.
#[derive(Clone, Copy, Debug)]
pub struct HiResCam;

impl CamMap for HiResCam {
    fn name(&self) -> &'static str {
        "hirescam"
    }
    fn summary(&self) -> &'static str {
        "sum_c g * A, element-wise (Draelos & Carin 2020)"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        channel_sum(pass.gradients() * pass.activations.clone())
    }
}

/// `sum_c relu(g * A)`.
#[derive(Clone, Copy, Debug)]
pub struct GradCamElementWise;

impl CamMap for GradCamElementWise {
    fn name(&self) -> &'static str {
        "gradcam-elementwise"
    }
    fn summary(&self) -> &'static str {
        "sum_c relu(g * A) (pytorch-grad-cam's GradCAMElementWise)"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        channel_sum((pass.gradients() * pass.activations.clone()).clamp_min(0.0))
    }
}

/// Muhammad & Yeasin 2020: first principal component of the activations.
#[derive(Clone, Copy, Debug)]
pub struct EigenCam;

impl CamMap for EigenCam {
    fn name(&self) -> &'static str {
        "eigencam"
    }
    fn summary(&self) -> &'static str {
        "first principal component of the activations, no gradients (Muhammad & Yeasin 2020)"
    }
    fn needs_gradients(&self) -> bool {
        false
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        first_component_projection(pass.activations.clone())
    }
}

/// First principal component of `g * A`.
#[derive(Clone, Copy, Debug)]
pub struct EigenGradCam;

impl CamMap for EigenGradCam {
    fn name(&self) -> &'static str {
        "eigengradcam"
    }
    fn summary(&self) -> &'static str {
        "first principal component of g * A"
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        first_component_projection(pass.gradients() * pass.activations.clone())
    }
}

/// KPCA-CAM (Karmani et al. 2024): the first kernel principal component of the
/// activations, as pytorch-grad-cam's `KPCA_CAM` with its defaults (scikit-learn's
/// `KernelPCA`, sigmoid kernel `tanh(gamma <x, y> + 1)`, `gamma = 1 / C`, sign made
/// deterministic as scikit-learn does: the largest entry of the eigenvector is
/// positive).
#[derive(Clone, Copy, Debug)]
pub struct KpcaCam;

impl CamMap for KpcaCam {
    fn name(&self) -> &'static str {
        "kpcacam"
    }
    fn summary(&self) -> &'static str {
        "first kernel principal component (sigmoid kernel) of the activations (Karmani et al. 2024)"
    }
    fn needs_gradients(&self) -> bool {
        false
    }
    fn raw_map(&self, pass: &LayerPass) -> Tensor<3> {
        kernel_component_projection(pass.activations.clone())
    }
}

/// Every one-pass CAM, in the order of the CLI help and the docs: the name table the
/// registry reads.
pub static ONE_PASS_CAMS: &[&dyn CamMap] = &[
    &GradCam,
    &GradCamPlusPlus,
    &XGradCam,
    &LayerCam,
    &HiResCam,
    &GradCamElementWise,
    &EigenCam,
    &EigenGradCam,
    &KpcaCam,
];

/// The one-pass CAM of this name.
pub fn one_pass_cam(name: &str) -> Option<&'static dyn CamMap> {
    ONE_PASS_CAMS.iter().copied().find(|c| c.name() == name)
}

/// Activations (and gradients) at one layer for a batch, as feature maps `[B,C,h,w]`
/// (token layers already reshaped to their grid), from one forward and one backward.
#[derive(Clone, Debug)]
pub struct LayerPass {
    /// Activations `[B,C,h,w]`, detached.
    pub activations: Tensor<4>,
    /// Gradients of the summed target scores `[B,C,h,w]`, when asked for.
    pub gradients: Option<Tensor<4>>,
    /// The target score of each image in this pass `[B]`, detached, on the device: read
    /// it back only when needed (a read waits for the device).
    pub scores: Tensor<1>,
    /// The input size `[H,W]`.
    pub input_size: [usize; 2],
}

impl LayerPass {
    /// The gradients of a pass run with gradients.
    ///
    /// # Panics
    /// If the pass ran without gradients: [`cams_from_one_pass`] asks for them
    /// whenever a [`CamMap::needs_gradients`].
    pub fn gradients(&self) -> Tensor<4> {
        self.gradients
            .clone()
            .expect("gradient CAMs are computed from a pass with gradients")
    }

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
        let [_, _, h, w] = input.dims();
        let info = model.layer_at(layer, [h, w])?;
        let tap = GradientTap::new([layer]);
        let device = input.device();
        let output = {
            let _forward = lumen_core::profile::stage_on(FORWARD, &device);
            model.forward_tapped(input, &tap)
        };
        let activation = tap.activation(layer).ok_or_else(|| not_reached(layer))?;
        let score = target.score(&output)?;
        // Kept on the device: a read here, between the forward and the backward, would
        // make a GPU wait, idle, while the host queues the backward and the CAM math.
        let scores = score.clone().detach().without_autodiff();
        let gradients = if with_gradients {
            let _backward = lumen_core::profile::stage_on(BACKWARD, &device);
            let grads = lumen_core::backward_if_tracked(&score.sum());
            let gradient = grads
                .and_then(|grads| tap.gradient(layer, &grads))
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
    // The Gram matrix of raw activations can pass float16's largest value (65504,
    // `--precision f16`); its eigenvectors do not depend on scale, so it is formed
    // from the activations divided by their largest magnitude, and sigma scaled back.
    let scale = x.clone().abs().max_dims(&[1, 2]).clamp_min(1e-6); // [B,1,1]
    let unit = x.clone() / scale.clone();
    let projection = if c <= n {
        // v = top eigenvector of X^T X, projection = X v.
        let gram = unit.clone().swap_dims(1, 2).matmul(unit);
        let v = top_eigenvector(gram);
        x.matmul(v).reshape([b, n])
    } else {
        // u = top eigenvector of X X^T; X v = sigma u, and sigma^2 = u^T X X^T u.
        let gram = unit.clone().matmul(unit.swap_dims(1, 2));
        let u = top_eigenvector(gram.clone());
        let sigma2 = u
            .clone()
            .swap_dims(1, 2)
            .matmul(gram)
            .matmul(u.clone())
            .reshape([b, 1]);
        u.reshape([b, n]) * sigma2.clamp_min(0.0).sqrt() * scale.reshape([b, 1])
    };
    // Sign: correlate positively with the channel-mean activation map. Both sides are
    // divided by their largest magnitude first (a positive factor leaves the sign as
    // it is), so that the sums over channels and positions stay in float16's range.
    let maps_scale = maps.clone().abs().max_dims(&[1, 2, 3]).clamp_min(1e-6);
    let unit_maps = maps / maps_scale;
    let mean_map = unit_maps.mean_dim(1).reshape([b, n]);
    let mean_map = mean_map.clone() - mean_map.mean_dim(1);
    let largest = projection.clone().abs().max_dim(1).clamp_min(1e-6);
    let unit_projection = projection.clone() / largest;
    let centred = unit_projection.clone() - unit_projection.mean_dim(1);
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
    // Every sum of squares below is taken of values divided by their largest magnitude
    // first, so that it stays in float16's range (`--precision f16`).
    let mut power = gram.clone();
    for _ in 0..24 {
        power = unit_max(power, &[1, 2]);
        power = power.clone().matmul(power);
    }
    // The column of largest norm points along the top eigenvector.
    let norms = unit_max(power.clone(), &[1, 2]).powi_scalar(2).sum_dim(1); // [B,1,k]
    let best = norms.argmax(2).reshape([b, 1, 1]).expand([b, k, 1]);
    let mut v = power.gather(2, best);
    for _ in 0..8 {
        v = unit_max(gram.clone().matmul(v), &[1]);
        // At least 1 unless v is zero (then v stays zero).
        let norm = v.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-6);
        v = v / norm;
    }
    v
}

/// `values` divided by their largest magnitude over `dims` (a zero tensor stays zero;
/// the floor is one that float16 can hold).
fn unit_max(values: Tensor<3>, dims: &[usize]) -> Tensor<3> {
    let largest = values.clone().abs().max_dims(dims).clamp_min(1e-6);
    values / largest
}

/// Projection of each position on the first kernel principal component of the
/// centred `[h*w, C]` activation matrix (scikit-learn's `KernelPCA(n_components=1,
/// kernel="sigmoid")`, `fit_transform`): the centred sigmoid kernel's top
/// eigenvector scaled by the square root of its eigenvalue, with scikit-learn's sign
/// rule (the entry of largest magnitude is positive).
pub fn kernel_component_projection(maps: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = maps.dims();
    let n = h * w;
    let x = maps.reshape([b, c, n]).swap_dims(1, 2);
    let x = x.clone() - x.mean_dim(1);
    // gamma = 1/C applied to each factor (sqrt), so that the sums of products stay in
    // float16's range.
    let x = x * (1.0 / c as f32).sqrt();
    let kernel = (x.clone().matmul(x.swap_dims(1, 2)) + 1.0).tanh();
    // Centre in feature space: K - 1K - K1 + 1K1 (1 = ones / n).
    let row_mean = kernel.clone().mean_dim(2); // [B,n,1]
    let col_mean = kernel.clone().mean_dim(1); // [B,1,n]
    let all_mean = row_mean.clone().mean_dim(1); // [B,1,1]
    let centred = kernel - row_mean - col_mean + all_mean;
    // The sigmoid kernel is not positive semi-definite, and repeated squaring finds
    // the eigenvalue of largest magnitude: shift by a Gershgorin bound so that the
    // largest algebraic eigenvalue (scikit-learn's choice) is also the largest.
    let shift = centred.clone().abs().sum_dim(2).max_dim(1); // [B,1,1]
    let eye = Tensor::<2>::eye(n, &centred.device()).reshape([1, n, n]);
    let u = top_eigenvector(centred.clone() + eye * shift); // [B,n,1]
    let lambda = u
        .clone()
        .swap_dims(1, 2)
        .matmul(centred)
        .matmul(u.clone())
        .reshape([b, 1]);
    let u = u.reshape([b, n]);
    // scikit-learn's svd_flip: the entry of largest magnitude becomes positive.
    let largest = u.clone().abs().argmax(1); // [B,1]
    let at_largest = u.clone().gather(1, largest);
    let sign = at_largest
        .ones_like()
        .mask_fill(at_largest.lower_elem(0.0), -1.0);
    (u * lambda.clamp_min(0.0).sqrt() * sign).reshape([b, h, w])
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
    finish_cam(weighted_sum(weights, &pass.activations), pass.input_size)
}

/// Compute several one-pass CAMs from a single forward and backward: what
/// `compare_methods` uses.
pub fn cams_from_one_pass<M: ExplainableModel>(
    model: &M,
    input: Tensor<4>,
    target: &dyn Target<M::Output>,
    layer: &str,
    kinds: &[&dyn CamMap],
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
    /// Which CAM (a row of [`ONE_PASS_CAMS`]).
    pub kind: &'static dyn CamMap,
    /// Target layer.
    pub layer: Option<String>,
}

impl Cam {
    /// A CAM on the model's default layer.
    pub fn new(kind: &'static dyn CamMap) -> Self {
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

/// The one layer of a method that perturbs a single layer (Score-CAM, Ablation-CAM).
fn single_layer<M: ExplainableModel>(
    model: &M,
    layer: &Option<String>,
    method: &str,
) -> Result<String> {
    let spec = resolve_layer(model, layer);
    if lumen_core::layer_list(&spec).len() > 1 {
        return Err(LumenError::InvalidArgument(format!(
            "{method} takes one layer, got `{spec}` (several layers are for the one-pass CAMs)"
        )));
    }
    Ok(spec)
}

impl<M: ExplainableModel> Method<M> for Cam {
    fn name(&self) -> String {
        self.kind.name().to_string()
    }

    fn scores_the_input_itself(&self) -> bool {
        true
    }

    fn layer(&self, model: &M) -> Option<String> {
        Some(resolve_layer(model, &self.layer))
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let spec = resolve_layer(model, &self.layer);
        let layers = lumen_core::layer_list(&spec);
        if let [layer] = layers.as_slice() {
            let mut maps = cams_from_one_pass(model, input, target, layer, &[self.kind])?;
            return Ok(Explanation::new(maps.remove(0)));
        }
        if layers.is_empty() {
            return Err(LumenError::InvalidArgument(format!(
                "no layer in `{spec}`: give one layer or several separated by commas"
            )));
        }
        // Several target layers, as pytorch-grad-cam aggregates them: each layer's map
        // ReLU'd, min-maxed and resized (`scale_cam_image` per layer, no second
        // min-max), their mean, min-maxed.
        let mut sum: Option<Tensor<3>> = None;
        for layer in &layers {
            let pass = LayerPass::run(
                model,
                input.clone(),
                target,
                layer,
                self.kind.needs_gradients(),
            )?;
            let map = Heatmaps::new(self.kind.raw_map(&pass).clamp_min(0.0))
                .normalize()
                .resize(pass.input_size)
                .into_tensor();
            sum = Some(match sum {
                Some(s) => s + map,
                None => map,
            });
        }
        let mean = sum.expect("at least two layers") / layers.len() as f32;
        Ok(Explanation::new(Heatmaps::new(mean).normalize()))
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
    let scores = map_chunks(rows, batch_size, |range| {
        let chunk_target = target.for_images(&images[range.clone()]);
        let output = run_chunk(range)?;
        Ok(chunk_target.score(&output)?.detach().without_autodiff())
    })?;
    Ok(Tensor::cat(scores, 0))
}

/// One target score per row `(image, channel)` of `zero.len()` rows (`c` per image),
/// on the device: the rows whose plane is not zero everywhere are run in chunks of
/// `chunk` by `run(rows, their images)`; the others take their image's entry of
/// `fill()` (`[B]`), which is called only when there are such rows.
fn live_plane_scores<M: ExplainableModel>(
    zero: &[bool],
    c: usize,
    chunk: usize,
    target: &dyn Target<M::Output>,
    device: &lumen_core::Device,
    mut run: impl FnMut(&[usize], &[usize]) -> Result<M::Output>,
    fill: impl FnOnce() -> Result<Tensor<1>>,
) -> Result<Tensor<1>> {
    let live: Vec<usize> = (0..zero.len()).filter(|&r| !zero[r]).collect();
    let images: Vec<usize> = live.iter().map(|r| r / c).collect();
    let mut parts = vec![];
    if !live.is_empty() {
        parts.push(chunked_scores::<M>(
            live.len(),
            chunk,
            &images,
            target,
            |range| run(&live[range.clone()], &images[range]),
        )?);
    }
    if live.len() == zero.len() {
        return Ok(Tensor::cat(parts, 0));
    }
    parts.push(fill()?);
    // Row r's score: its live score, or its image's fill after all live ones.
    let order: Vec<usize> = (0..zero.len())
        .map(|r| match zero[r] {
            false => live.partition_point(|&l| l < r),
            true => live.len() + r / c,
        })
        .collect();
    Ok(Tensor::cat(parts, 0).select(0, index_tensor(&order, device)))
}

/// Score-CAM (Wang et al. 2020): channel weights are the softmax over channels of the
/// target score when the input is masked by each upsampled, min-max normalised
/// activation map. The masked forwards run in batches of `batch_size` (rows mix
/// images and channels).
#[derive(Clone, Debug, Default)]
pub struct ScoreCam {
    /// Target layer (model default when `None`).
    pub layer: Option<String>,
    /// Masked inputs per forward pass.
    pub batch_size: Option<usize>,
}

impl<M: ExplainableModel> Method<M> for ScoreCam {
    fn name(&self) -> String {
        "scorecam".into()
    }

    fn layer(&self, model: &M) -> Option<String> {
        Some(resolve_layer(model, &self.layer))
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let layer = single_layer(model, &self.layer, "Score-CAM")?;
        let pass = LayerPass::run(model, input.clone(), target, &layer, false)?;
        let [b, c, lh, lw] = pass.activations.dims();
        // One row per (image, channel). The masks are made chunk by chunk: all of them
        // at once would be `b * c` input-sized planes (13 GB for 32 images at
        // resnet50's layer4).
        let channels = pass.activations.clone().reshape([b * c, 1, lh, lw]);
        // A plane that is zero everywhere gives an all-zero mask, hence a zero input,
        // whose score is the same for all of an image's such planes: it is computed
        // once per image, not once per plane. After a ReLU many planes are (a third of
        // layer4's in the bundled, trained shapes-cnn).
        let zero = zero_planes(&channels)?;
        let device = input.device();
        let chunk = self
            .batch_size
            .unwrap_or_else(|| lumen_core::default_forward_rows_for(model, &input));
        let scores = live_plane_scores::<M>(
            &zero,
            c,
            chunk,
            target,
            &device,
            |rows, images| {
                let x = input.clone().select(0, index_tensor(images, &device));
                let planes = channels.clone().select(0, index_tensor(rows, &device));
                let m = score_cam_masks(planes, pass.input_size);
                let _forward = lumen_core::profile::stage_on(FORWARD, &device);
                Ok(model.forward(x * m))
            },
            || {
                let blank = input.zeros_like();
                let output = {
                    let _forward = lumen_core::profile::stage_on(FORWARD, &device);
                    model.forward(blank)
                };
                // One row per image, as the target's own rows.
                Ok(target.score(&output)?.detach().without_autodiff())
            },
        )?;
        Ok(Explanation::new(weighted_cam(
            softmax(scores.reshape([b, c]), 1),
            &pass,
        )))
    }
}

/// Which planes `[n,1,h,w]` are zero everywhere (one read of `n` values).
fn zero_planes(planes: &Tensor<4>) -> Result<Vec<bool>> {
    let [n, _, h, w] = planes.dims();
    let largest = planes.clone().abs().reshape([n, h * w]).max_dim(1);
    Ok(lumen_core::to_host(largest)?
        .into_iter()
        .map(|v| v == 0.0)
        .collect())
}

/// Score-CAM's masks `[n,1,H,W]` of activation planes `[n,1,h,w]`: each plane
/// upsampled to the input size and min-max normalised on its own, as pytorch-grad-cam
/// does (`nn.UpsamplingBilinear2d`, i.e. align_corners=True, and `+ 1e-8` in the
/// denominator, so a constant plane gives an all-zero mask).
fn score_cam_masks(planes: Tensor<4>, [h, w]: [usize; 2]) -> Tensor<4> {
    let n = planes.dims()[0];
    let flat = interpolate(
        planes,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(true)
            .with_output_size([h, w]),
    )
    .reshape([n, h * w]);
    let min = flat.clone().min_dim(1);
    let max = flat.clone().max_dim(1);
    ((flat - min.clone()) / (max - min + 1e-8)).reshape([n, 1, h, w])
}

/// Ablation-CAM (Desai & Ramaswamy 2020): channel weights are the relative drop of the
/// target score when the channel is set to zero at the layer,
/// `(score - score_ablated) / score`. Ablated forwards run in batches.
///
/// pytorch-grad-cam 1.5.7 ablates with zero only when the layer's minimum is zero
/// and otherwise with `min - 1e7` (growing with each row); we follow the paper and
/// always ablate with zero, which agrees with the reference on ReLU outputs.
#[derive(Clone, Debug, Default)]
pub struct AblationCam {
    /// Target layer (model default when `None`).
    pub layer: Option<String>,
    /// Ablated copies per forward pass.
    pub batch_size: Option<usize>,
}

impl<M: ExplainableModel> Method<M> for AblationCam {
    fn name(&self) -> String {
        "ablationcam".into()
    }

    fn layer(&self, model: &M) -> Option<String> {
        Some(resolve_layer(model, &self.layer))
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn Target<M::Output>,
    ) -> Result<Explanation> {
        let layer = single_layer(model, &self.layer, "Ablation-CAM")?;
        let [_, _, h, w] = input.dims();
        let info = model.layer_at(&layer, [h, w])?;
        let pass = LayerPass::run(model, input.clone(), target, &layer, false)?;
        let [b, c, lh, lw] = pass.activations.dims();
        let device = input.device();
        let channel_dim = match info.kind {
            LayerKind::Tokens { .. } => 2,
            _ => 1,
        };
        // Ablating a channel of a feature map that is zero everywhere changes nothing:
        // its weight is 0 without a forward pass. (Not so for tokens: the planes leave
        // out the class token.)
        let zero = match info.kind {
            LayerKind::Tokens { .. } => vec![false; b * c],
            _ => zero_planes(&pass.activations.clone().reshape([b * c, 1, lh, lw]))?,
        };
        let chunk = self
            .batch_size
            .unwrap_or_else(|| lumen_core::default_forward_rows_for(model, &input));
        // A skipped row's ablated score is its image's own score (weight 0).
        let ablated = live_plane_scores::<M>(
            &zero,
            c,
            chunk,
            target,
            &device,
            |rows, images| {
                let n = rows.len();
                let x = input.clone().select(0, index_tensor(images, &device));
                // keep[r, ch] = 0 for the ablated channel of row r.
                let mut keep = vec![1.0f32; n * c];
                for (i, &row) in rows.iter().enumerate() {
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
                let _forward = lumen_core::profile::stage_on(FORWARD, &x.device());
                Ok(model.forward_tapped(x, &tap))
            },
            || Ok(pass.scores.clone()),
        )?;
        let original = pass.scores.clone().reshape([b, 1]);
        let weights = (original.clone() - ablated.reshape([b, c])) / original;
        Ok(Explanation::new(weighted_cam(weights, &pass)))
    }
}
