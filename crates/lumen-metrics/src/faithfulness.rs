//! Faithfulness: does removing what the heatmap calls important change the output?
//! Deletion and insertion curves (RISE), ROAD, and average drop / increase in
//! confidence. Every perturbed copy of every image is scored in batches.

use burn::tensor::{Bool, Tensor, TensorData};
use lumen_core::profile::{self, stages};
use lumen_core::{
    ExplainableModel, Heatmaps, LumenError, Result, Target, default_forward_rows_for, index_tensor,
    row_chunks, to_host,
};
use lumen_methods::Baseline;
use rayon::prelude::*;
use serde::Serialize;

use crate::imputation::{imputations_at_once, noisy_linear_imputation};
use crate::localization::descending_order;

/// Deletion removes the most important pixels first; insertion adds them first to a
/// baseline image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CurveKind {
    /// Start from the image and replace pixels by the baseline, most important first.
    Deletion,
    /// Start from the baseline and restore pixels of the image, most important first.
    Insertion,
}

/// Settings of a deletion or insertion curve.
#[derive(Clone, Debug)]
pub struct CurveConfig {
    /// Number of steps from no pixel to all pixels (the curve has `steps + 1` points
    /// when the pixel count divides evenly).
    pub steps: usize,
    /// What removed pixels become: RISE uses black (zeros) for deletion and a blurred
    /// image for insertion; `Mean` is each image's mean colour.
    pub baseline: Baseline,
    /// Perturbed images per forward pass; `None` sizes them to the input and model
    /// ([`default_forward_rows_for`]: 64 at 3x224x224, 32 on a ResNet whose stem
    /// binds, fewer on larger inputs), so memory stays bounded.
    pub batch_size: Option<usize>,
}

impl CurveConfig {
    /// The RISE deletion setting: black pixels.
    pub fn deletion(mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            steps: 64,
            baseline: Baseline::Black { mean, std },
            batch_size: None,
        }
    }

    /// The RISE insertion setting: a blurred copy (Gaussian, sigma 5 px).
    pub fn insertion() -> Self {
        Self {
            steps: 64,
            baseline: Baseline::Blur { sigma: 5.0 },
            batch_size: None,
        }
    }

    /// Check the counts: at least 1 step and 1 image per forward pass (the
    /// baseline is checked against the input when it is built).
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(LumenError::InvalidArgument(
                "a perturbation curve needs at least one step".into(),
            ));
        }
        check_at_most("a perturbation curve's steps", self.steps)?;
        check_batch_size(self.batch_size)
    }
}

/// The most curve steps or sensitivity perturbations a metric takes: each is a forward
/// (or an explanation) per image, so 4294967297 (a typo) ran for days in bounded memory.
/// RISE draws its curves in 224 steps; Quantus perturbs 200 times.
pub const MAX_METRIC_COUNT: usize = 10_000;

/// `count` is at most [`MAX_METRIC_COUNT`].
pub(crate) fn check_at_most(what: &str, count: usize) -> Result<()> {
    if count > MAX_METRIC_COUNT {
        return Err(LumenError::InvalidArgument(format!(
            "{what} must be at most {MAX_METRIC_COUNT}, got {count}"
        )));
    }
    Ok(())
}

/// Internal batches of at least one image, when one is given.
pub(crate) fn check_batch_size(batch_size: Option<usize>) -> Result<()> {
    if batch_size == Some(0) {
        return Err(LumenError::InvalidArgument(
            "the internal batch size must be at least 1".into(),
        ));
    }
    Ok(())
}

/// A deletion or insertion curve per image.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    /// Deletion or insertion.
    pub kind: CurveKind,
    /// Fraction of pixels removed (deletion) or inserted (insertion) at each point.
    pub fractions: Vec<f32>,
    /// Target score at each point, one row per image.
    pub scores: Vec<Vec<f32>>,
    /// Area under each image's curve (trapezoid over the fraction axis).
    pub auc: Vec<f32>,
    /// The area divided by the image's unperturbed score.
    pub normalized_auc: Vec<f32>,
}

impl Curve {
    /// The mean curve over images.
    pub fn mean_scores(&self) -> Vec<f32> {
        mean_rows(&self.scores)
    }
}

/// The mean over rows of equally long rows (per-image curves to one curve).
///
/// # Panics
///
/// When the rows differ in length (curves of different step counts do not average).
pub fn mean_rows(rows: &[Vec<f32>]) -> Vec<f32> {
    let n = rows.len().max(1) as f32;
    let width = rows.first().map_or(0, Vec::len);
    assert!(
        rows.iter().all(|r| r.len() == width),
        "mean_rows needs rows of one length"
    );
    (0..width)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / n)
        .collect()
}

/// Area under a curve sampled at even steps on [0, 1] (RISE's `auc`).
pub fn trapezoid_auc(values: &[f32]) -> f32 {
    match values.len() {
        0 => 0.0,
        1 => values[0],
        n => {
            let sum: f32 = values.iter().sum();
            (sum - values[0] / 2.0 - values[n - 1] / 2.0) / (n - 1) as f32
        }
    }
}

/// Heatmaps at the input size, to the host, one `Vec` per image.
pub(crate) fn host_maps(heatmaps: &Heatmaps, input: &Tensor<4>) -> Result<Vec<Vec<f32>>> {
    let [b, _, h, w] = input.dims();
    let [mb, _, _] = heatmaps.dims();
    if mb != b {
        return Err(LumenError::shape(
            "heatmaps",
            format!("one per image ({b})"),
            mb,
        ));
    }
    let values = heatmaps.clone().resize([h, w]).to_vec()?;
    Ok(values.chunks(h * w).map(<[f32]>::to_vec).collect())
}

/// Each pixel's position in the descending order of its map, as a float tensor
/// `[B,1,H,W]` (0 = most important).
fn rank_tensor(maps: &[Vec<f32>], h: usize, w: usize, device: &burn::tensor::Device) -> Tensor<4> {
    let mut ranks = vec![0f32; maps.len() * h * w];
    for (map, out) in maps.iter().zip(ranks.chunks_mut(h * w)) {
        for (rank, &pixel) in descending_order(map).iter().enumerate() {
            out[pixel] = rank as f32;
        }
    }
    Tensor::from_data(TensorData::new(ranks, [maps.len(), 1, h, w]), device)
}

/// Score rows `(image, perturbed input)` in chunks of `batch_size`; `build` makes the
/// inputs for a chunk of row indices and returns the image each row comes from.
pub(crate) fn score_rows<M: ExplainableModel>(
    model: &M,
    target: &dyn Target<M::Output>,
    rows: usize,
    batch_size: usize,
    mut build: impl FnMut(std::ops::Range<usize>) -> Result<(Tensor<4>, Vec<usize>)>,
) -> Result<Vec<f32>> {
    let mut scores = Vec::with_capacity(rows);
    for range in row_chunks(rows, batch_size) {
        let (input, images) = build(range)?;
        let _forward = profile::stage_on(stages::FORWARD, &input.device());
        let output = model.forward(input);
        scores.extend(to_host(target.for_images(&images).score(&output)?)?);
    }
    Ok(scores)
}

/// A deletion or insertion curve for each image of `input` `[B,3,H,W]`, ordering
/// pixels by `heatmaps` (resized to the input; ties keep pixel order).
///
/// Pixels are removed `ceil(H*W / steps)` at a time, as in RISE; channels of a pixel
/// go together. Use a [`ClassProbability`](lumen_core::ClassProbability) target for
/// the paper's setting.
pub fn perturbation_curve<M: ExplainableModel>(
    model: &M,
    input: &Tensor<4>,
    heatmaps: &Heatmaps,
    target: &dyn Target<M::Output>,
    kind: CurveKind,
    config: &CurveConfig,
) -> Result<Curve> {
    model.check_input(input)?;
    config.validate()?;
    let [b, c, h, w] = input.dims();
    let device = input.device();
    let maps = host_maps(heatmaps, input)?;
    let ranks = rank_tensor(&maps, h, w, &device);
    let baseline = config.baseline.build(input)?;
    let pixels = h * w;
    let per_step = pixels.div_ceil(config.steps);
    let points = pixels.div_ceil(per_step) + 1;
    let cuts: Vec<usize> = (0..points).map(|k| (k * per_step).min(pixels)).collect();

    let chunk = config
        .batch_size
        .unwrap_or_else(|| default_forward_rows_for(model, input));
    let scores = score_rows(model, target, b * points, chunk, |range| {
        let images: Vec<usize> = range.clone().map(|r| r / points).collect();
        let thresholds: Vec<f32> = range.clone().map(|r| cuts[r % points] as f32).collect();
        let n = images.len();
        let index = index_tensor(&images, &device);
        let thresholds = Tensor::<4>::from_data(TensorData::new(thresholds, [n, 1, 1, 1]), &device);
        let changed: Tensor<4, Bool> = ranks
            .clone()
            .select(0, index.clone())
            .lower(thresholds.expand([n, 1, h, w]))
            .expand([n, c, h, w]);
        let image = input.clone().select(0, index.clone());
        let base = baseline.clone().select(0, index);
        let perturbed = match kind {
            CurveKind::Deletion => image.mask_where(changed, base),
            CurveKind::Insertion => base.mask_where(changed, image),
        };
        Ok((perturbed, images))
    })?;

    let scores: Vec<Vec<f32>> = scores.chunks(points).map(<[f32]>::to_vec).collect();
    let auc: Vec<f32> = scores.iter().map(|s| trapezoid_auc(s)).collect();
    let normalized_auc = scores
        .iter()
        .zip(&auc)
        .map(|(s, a)| {
            let original = match kind {
                CurveKind::Deletion => s[0],
                CurveKind::Insertion => s[points - 1],
            };
            a / original
        })
        .collect();
    Ok(Curve {
        kind,
        fractions: cuts.iter().map(|&k| k as f32 / pixels as f32).collect(),
        scores,
        auc,
        normalized_auc,
    })
}

/// Average drop and increase in confidence (Chattopadhyay et al., Grad-CAM++).
#[derive(Clone, Debug, Serialize)]
pub struct ConfidenceChange {
    /// Per image: `max(0, Y - O) / Y * 100`, with `Y` the score of the image and `O`
    /// the score of the image seen through its heatmap.
    pub drop: Vec<f32>,
    /// Per image: whether `O > Y`.
    pub increase: Vec<bool>,
}

impl ConfidenceChange {
    /// Average drop in percent (lower is better).
    pub fn average_drop(&self) -> f32 {
        self.drop.iter().sum::<f32>() / self.drop.len().max(1) as f32
    }

    /// Share of images whose score rises (higher is better).
    pub fn increase_rate(&self) -> f32 {
        self.increase.iter().filter(|&&i| i).count() as f32 / self.increase.len().max(1) as f32
    }
}

/// Average drop / increase: the image is shown through its min-max normalised heatmap,
/// `x * m + baseline * (1 - m)` (the paper's `x * m` is the black baseline).
pub fn confidence_change<M: ExplainableModel>(
    model: &M,
    input: &Tensor<4>,
    heatmaps: &Heatmaps,
    target: &dyn Target<M::Output>,
    baseline: &Baseline,
) -> Result<ConfidenceChange> {
    model.check_input(input)?;
    let [b, c, h, w] = input.dims();
    if heatmaps.dims()[0] != b {
        return Err(LumenError::shape(
            "heatmaps",
            format!("one per image ({b})"),
            heatmaps.dims()[0],
        ));
    }
    let normalized = heatmaps
        .clone()
        .resize([h, w])
        .normalize()
        .into_tensor()
        .reshape([b, 1, h, w])
        .expand([b, c, h, w]);
    let base = baseline.build(input)?;
    let masked = input.clone() * normalized.clone() + base * (normalized.neg() + 1.0);
    let batch = Tensor::cat(vec![input.clone(), masked], 0);
    let images: Vec<usize> = (0..b).chain(0..b).collect();
    let output = {
        let _forward = profile::stage_on(stages::FORWARD, &batch.device());
        model.forward(batch)
    };
    let scores = to_host(target.for_images(&images).score(&output)?)?;
    let (original, masked) = scores.split_at(b);
    Ok(ConfidenceChange {
        drop: original
            .iter()
            .zip(masked)
            .map(|(y, o)| (y - o).max(0.0) / y * 100.0)
            .collect(),
        increase: original.iter().zip(masked).map(|(y, o)| o > y).collect(),
    })
}

/// Which pixels ROAD removes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RoadOrder {
    /// Most relevant first: a faithful map makes accuracy fall fast (lower is better).
    MoRF,
    /// Least relevant first: a faithful map keeps accuracy (higher is better).
    LeRF,
}

/// Settings of ROAD.
#[derive(Clone, Debug)]
pub struct RoadConfig {
    /// Percentages of pixels removed, each in (0, 100).
    pub percentages: Vec<f32>,
    /// Standard deviation of the noise added to imputed values (the paper's 0.01).
    pub noise: f32,
    /// Seed of that noise.
    pub seed: u64,
    /// Imputed images per forward pass; `None` sizes them to the input and model
    /// ([`default_forward_rows_for`]).
    pub batch_size: Option<usize>,
}

impl Default for RoadConfig {
    fn default() -> Self {
        Self {
            percentages: (1..10).map(|p| p as f32 * 10.0).collect(),
            noise: 0.01,
            seed: 0,
            batch_size: None,
        }
    }
}

impl RoadConfig {
    /// Check the settings: at least one percentage, each in (0, 100); the noise
    /// finite and not negative; at least 1 image per forward pass.
    pub fn validate(&self) -> Result<()> {
        if self.percentages.is_empty() {
            return Err(LumenError::InvalidArgument(
                "ROAD needs at least one percentage".into(),
            ));
        }
        if let Some(p) = self
            .percentages
            .iter()
            .find(|p| !(**p > 0.0 && **p < 100.0))
        {
            return Err(LumenError::InvalidArgument(format!(
                "ROAD percentages must be in (0, 100), got {p}"
            )));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return Err(LumenError::InvalidArgument(format!(
                "ROAD's imputation noise must be a finite number >= 0, got {}",
                self.noise
            )));
        }
        check_batch_size(self.batch_size)
    }
}

/// ROAD results for a batch: per image and percentage.
#[derive(Clone, Debug, Serialize)]
pub struct Road {
    /// Removal order.
    pub order: RoadOrder,
    /// Percentages of pixels removed.
    pub percentages: Vec<f32>,
    /// Whether the model still predicts the target class, `[image][percentage]`.
    pub kept: Vec<Vec<bool>>,
    /// The target class's softmax probability, `[image][percentage]`.
    pub probability: Vec<Vec<f32>>,
}

impl Road {
    /// Accuracy at each percentage (the ROAD curve).
    pub fn accuracy_curve(&self) -> Vec<f32> {
        let rows: Vec<Vec<f32>> = self
            .kept
            .iter()
            .map(|r| r.iter().map(|&k| k as u8 as f32).collect())
            .collect();
        mean_rows(&rows)
    }

    /// Mean accuracy over the percentages (area under the ROAD curve).
    pub fn score(&self) -> f32 {
        let curve = self.accuracy_curve();
        curve.iter().sum::<f32>() / curve.len().max(1) as f32
    }
}

/// ROAD (Rong et al., 2022): remove a percentage of pixels in heatmap order, fill them
/// by noisy linear imputation from their neighbours (so the removal itself leaks no
/// shape), and record whether the classifier still predicts `classes`.
pub fn road<M: ExplainableModel<Output = Tensor<2>>>(
    model: &M,
    input: &Tensor<4>,
    heatmaps: &Heatmaps,
    classes: &[usize],
    order: RoadOrder,
    config: &RoadConfig,
) -> Result<Road> {
    model.check_input(input)?;
    let [b, c, h, w] = input.dims();
    if classes.len() != b {
        return Err(LumenError::shape(
            "ROAD classes",
            format!("one per image ({b})"),
            classes.len(),
        ));
    }
    config.validate()?;
    let device = input.device();
    let maps = host_maps(heatmaps, input)?;
    let pixels_in = to_host(input.clone())?;
    let size = c * h * w;
    let points = config.percentages.len();
    let orders: Vec<Vec<usize>> = maps
        .iter()
        .map(|m| {
            let mut o = descending_order(m);
            if order == RoadOrder::LeRF {
                o.reverse();
            }
            o
        })
        .collect();
    let mut probability = Vec::with_capacity(b * points);
    let mut kept = Vec::with_capacity(b * points);
    let chunk = config
        .batch_size
        .unwrap_or_else(|| default_forward_rows_for(model, input));
    let removed_at = |p: usize| ((h * w) as f32 * config.percentages[p] / 100.0) as usize;
    let impute = |row: usize| {
        let (image, p) = (row / points, row % points);
        let mut removed = vec![false; h * w];
        for &pixel in &orders[image][..removed_at(p)] {
            removed[pixel] = true;
        }
        noisy_linear_imputation(
            &pixels_in[image * size..(image + 1) * size],
            [c, h, w],
            &removed,
            config.noise,
            config.seed.wrapping_add(row as u64),
        )
    };
    // In parallel, but no more at once than their factors' memory budget allows.
    let most_removed = (0..points).map(removed_at).max().unwrap_or(0);
    let at_once = imputations_at_once(most_removed);
    for range in row_chunks(b * points, chunk) {
        let rows: Vec<usize> = range.collect();
        let imputed: Vec<Vec<f32>> = rows
            .chunks(at_once)
            .flat_map(|group| group.par_iter().map(|&row| impute(row)).collect::<Vec<_>>())
            .collect();
        let n = rows.len();
        let batch =
            Tensor::<4>::from_data(TensorData::new(imputed.concat(), [n, c, h, w]), &device);
        let logits = {
            let _forward = profile::stage_on(stages::FORWARD, &batch.device());
            model.forward(batch)
        };
        let predicted = lumen_core::predicted_classes(&logits)?;
        let probs = to_host(burn::tensor::activation::softmax(logits, 1))?;
        let classes_of = probs.len() / n;
        for (i, &row) in rows.iter().enumerate() {
            let class = classes[row / points];
            if class >= classes_of {
                return Err(LumenError::ClassOutOfRange {
                    class,
                    num_classes: classes_of,
                });
            }
            probability.push(probs[i * classes_of + class]);
            kept.push(predicted[i] == class);
        }
    }
    Ok(Road {
        order,
        percentages: config.percentages.clone(),
        kept: kept.chunks(points).map(<[bool]>::to_vec).collect(),
        probability: probability.chunks(points).map(<[f32]>::to_vec).collect(),
    })
}
