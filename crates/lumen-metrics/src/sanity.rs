//! Sanity checks (Adebayo et al., 2018): an explanation that does not change when the
//! model's weights (or the labels it learnt from) are randomised explains the image,
//! not the model. Similarity is measured by Spearman rank correlation and SSIM between
//! the original and the randomised maps.
//!
//! Randomising works on any Burn [`Module`]: parameters are grouped by their path
//! (`layer4`, `blocks.3`, `fc`, ...), and a randomised copy is built with a
//! [`ModuleMapper`]; the caller's model is never modified, so it is "restored" by
//! construction.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use lumen_core::random::normal_values;
use lumen_core::{ExplainableModel, LumenError, Result, Target};
use lumen_methods::Method;
use serde::Serialize;

use crate::faithfulness::host_maps;

/// Spearman rank correlation (ties get their average rank, as SciPy's `spearmanr`).
/// A constant input has no ranking: the correlation is reported as 0.
///
/// # Panics
///
/// When `a` and `b` differ in length.
pub fn spearman(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "spearman needs equal lengths");
    pearson(&average_ranks(a), &average_ranks(b))
}

fn average_ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0f64; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Ranks start + 1 ..= end share their mean.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

fn pearson(a: &[f64], b: &[f64]) -> f32 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma).powi(2);
        bb += (y - mb).powi(2);
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa * bb).sqrt()) as f32
    }
}

/// Structural similarity of two `[h,w]` maps with scikit-image's defaults: a 7x7
/// uniform window, `K1 = 0.01`, `K2 = 0.03`, sample covariance, averaged over the
/// pixels whose window lies inside the image.
///
/// # Panics
///
/// When a map is not `h * w` values or is smaller than the 7x7 window.
pub fn ssim(a: &[f32], b: &[f32], [h, w]: [usize; 2], data_range: f32) -> f32 {
    const WIN: usize = 7;
    assert!(
        h >= WIN && w >= WIN && a.len() == h * w && b.len() == h * w,
        "ssim needs two maps of at least 7x7"
    );
    let pad = WIN / 2;
    let np = (WIN * WIN) as f64;
    let cov_norm = np / (np - 1.0);
    let c1 = (0.01 * data_range as f64).powi(2);
    let c2 = (0.03 * data_range as f64).powi(2);
    let mut total = 0.0;
    let mut count = 0usize;
    for y in pad..h - pad {
        for x in pad..w - pad {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for yy in y - pad..=y + pad {
                for xx in x - pad..=x + pad {
                    let (p, q) = (a[yy * w + xx] as f64, b[yy * w + xx] as f64);
                    sa += p;
                    sb += q;
                    saa += p * p;
                    sbb += q * q;
                    sab += p * q;
                }
            }
            let (ua, ub) = (sa / np, sb / np);
            let va = cov_norm * (saa / np - ua * ua);
            let vb = cov_norm * (sbb / np - ub * ub);
            let vab = cov_norm * (sab / np - ua * ub);
            total += ((2.0 * ua * ub + c1) * (2.0 * vab + c2))
                / ((ua * ua + ub * ub + c1) * (va + vb + c2));
            count += 1;
        }
    }
    (total / count as f64) as f32
}

/// Spearman and SSIM between two batches of maps, averaged over images; both maps
/// min-max normalised first (SSIM with a data range of 1).
#[derive(Clone, Debug, Serialize)]
pub struct Similarity {
    /// Mean Spearman rank correlation.
    pub spearman: f32,
    /// Mean of each image's absolute Spearman correlation: an inverted map is as
    /// dependent on the original as the original itself (Adebayo et al. report the
    /// absolute rank correlation).
    pub abs_spearman: f32,
    /// Mean SSIM.
    pub ssim: f32,
}

/// Compare maps image by image (`[h*w]` each).
pub fn similarity(original: &[Vec<f32>], other: &[Vec<f32>], size: [usize; 2]) -> Similarity {
    let n = original.len().max(1) as f32;
    let (mut rho, mut abs_rho, mut s) = (0.0, 0.0, 0.0);
    for (a, b) in original.iter().zip(other) {
        let (a, b) = (min_max(a), min_max(b));
        let r = spearman(&a, &b);
        rho += r;
        abs_rho += r.abs();
        s += ssim(&a, &b, size, 1.0);
    }
    Similarity {
        spearman: rho / n,
        abs_spearman: abs_rho / n,
        ssim: s / n,
    }
}

fn min_max(map: &[f32]) -> Vec<f32> {
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    map.iter()
        .map(|v| (v - min) / (max - min + lumen_core::heatmap::NORMALIZE_EPS))
        .collect()
}

/// The name of a parameter's group: its first path component, with the index when
/// that component is a list (`layer4.0.conv1.weight` -> `layer4.0` only when `layer4`
/// is a `Vec`; `blocks.3.attn.qkv.weight` -> `blocks.3`; `fc.weight` -> `fc`).
fn group_of(path: &[(String, String)]) -> String {
    match path {
        [] => String::new(),
        [(first, _)] => first.clone(),
        [(first, _), (second, kind), ..] if kind == "Vec" => format!("{first}.{second}"),
        [(first, _), ..] => first.clone(),
    }
}

#[derive(Default)]
struct GroupCollector {
    path: Vec<(String, String)>,
    groups: Vec<String>,
}

impl ModuleVisitor for GroupCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
        let group = group_of(&self.path);
        if self.groups.last() != Some(&group) && !self.groups.contains(&group) {
            self.groups.push(group);
        }
    }
}

/// The parameter groups of a module, in declaration (normally forward) order.
pub fn parameter_groups<M: Module>(model: &M) -> Vec<String> {
    let mut collector = GroupCollector::default();
    model.visit(&mut collector);
    collector.groups
}

const RUNNING_STATS: [&str; 2] = ["running_mean", "running_var"];

struct Randomizer<'a> {
    path: Vec<(String, String)>,
    groups: &'a [String],
    seed: u64,
    count: u64,
    /// The first parameter the device could not read back (a mapper cannot return
    /// an error: the rest are kept as they are, and the caller gets this).
    failure: Option<LumenError>,
}

impl ModuleMapper for Randomizer<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.count += 1;
        // Running statistics (BatchNorm) are buffers, not weights: a Gaussian draw
        // could make a variance negative. They stay as they are.
        let buffer = self
            .path
            .last()
            .is_some_and(|(name, _)| RUNNING_STATS.contains(&name.as_str()));
        if buffer || !self.groups.contains(&group_of(&self.path)) || self.failure.is_some() {
            return param;
        }
        let seed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(self.count);
        param.map(|tensor| {
            // Gaussian with the parameter's own mean and spread: the scale of each
            // layer is kept, its learnt structure is not. Constant parameters (fresh
            // norm scales and biases) are what a re-initialisation gives anyway.
            let values = match lumen_core::to_host(tensor.clone()) {
                Ok(values) => values,
                Err(error) => {
                    self.failure = Some(error);
                    return tensor;
                }
            };
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let std = (values
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            if std == 0.0 {
                return tensor;
            }
            let random: Vec<f32> = normal_values(values.len(), seed)
                .into_iter()
                .map(|z| (mean + std * z as f64) as f32)
                .collect();
            let shape = tensor.shape();
            Tensor::from_data(TensorData::new(random, shape), &tensor.device())
        })
    }
}

/// A copy of `model` (without autodiff, as explaining needs) whose parameters in
/// `groups` are replaced by Gaussian noise with each parameter's mean and standard
/// deviation.
///
/// # Errors
/// [`LumenError::Device`] when the device cannot read a parameter back.
pub fn randomize_groups<M: Module + Clone>(model: &M, groups: &[String], seed: u64) -> Result<M> {
    let mut randomizer = Randomizer {
        path: Vec::new(),
        groups,
        seed,
        count: 0,
        failure: None,
    };
    // `valid()`, not `clone()`: Burn's running statistics live behind an `Arc` that
    // clones share, so any write through a clone would reach the caller's model;
    // `valid()` rebuilds them.
    let randomized = model.valid().map(&mut randomizer);
    match randomizer.failure {
        Some(error) => Err(error),
        None => Ok(randomized),
    }
}

/// Cascading (from the top layer down, cumulative) or independent (one group at a
/// time) randomisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RandomizationOrder {
    /// Randomise the top group, then also the next one down, and so on.
    Cascading,
    /// Randomise each group alone.
    Independent,
}

/// Settings of the model-parameter randomisation test.
#[derive(Clone, Debug)]
pub struct RandomizationConfig {
    /// Cascading or independent.
    pub order: RandomizationOrder,
    /// Seed of the random weights.
    pub seed: u64,
    /// The test passes when the absolute Spearman correlation falls below this
    /// (cascading: at the fully randomised model; independent: on average over
    /// groups). Absolute, so that an inverted map (rho near -1) fails.
    pub threshold: f32,
    /// Groups to randomise, top first; all of the model's groups when `None`.
    pub groups: Option<Vec<String>>,
}

impl Default for RandomizationConfig {
    fn default() -> Self {
        Self {
            order: RandomizationOrder::Cascading,
            seed: 0,
            threshold: 0.5,
            groups: None,
        }
    }
}

impl RandomizationConfig {
    /// Check the settings: the threshold in [0, 1] (it bounds an absolute
    /// correlation) and, when groups are named, at least one.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(LumenError::InvalidArgument(format!(
                "the randomisation threshold must be in [0, 1] (it bounds an absolute Spearman correlation), got {}",
                self.threshold
            )));
        }
        if self.groups.as_ref().is_some_and(Vec::is_empty) {
            return Err(LumenError::InvalidArgument(
                "the randomisation test needs at least one parameter group".into(),
            ));
        }
        Ok(())
    }
}

/// The randomisation curve and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct RandomizationCurve {
    /// Cascading or independent.
    pub order: RandomizationOrder,
    /// The group randomised at each step (cascading: this one and all above it).
    pub layers: Vec<String>,
    /// Mean Spearman correlation with the original maps at each step.
    pub spearman: Vec<f32>,
    /// Mean absolute Spearman correlation at each step: what the verdict reads.
    pub abs_spearman: Vec<f32>,
    /// Mean SSIM with the original maps at each step.
    pub ssim: Vec<f32>,
    /// The absolute Spearman value the verdict is based on (the last step when
    /// cascading, the mean over steps when independent).
    pub score: f32,
    /// Whether the maps changed enough: `score < threshold`.
    pub passed: bool,
}

/// Model-parameter randomisation test: explain `input` with `model`, then with
/// randomised copies, and compare.
pub fn model_randomization<M>(
    model: &M,
    method: &dyn Method<M>,
    input: &Tensor<4>,
    target: &dyn Target<M::Output>,
    config: &RandomizationConfig,
) -> Result<RandomizationCurve>
where
    M: ExplainableModel + Module + Clone,
{
    config.validate()?;
    let all = parameter_groups(model);
    let layers: Vec<String> = match &config.groups {
        Some(groups) => {
            if let Some(unknown) = groups.iter().find(|g| !all.contains(g)) {
                return Err(LumenError::UnknownLayer {
                    name: unknown.clone(),
                    valid: all,
                });
            }
            groups.clone()
        }
        None => all.iter().rev().cloned().collect(),
    };
    let [_, _, h, w] = input.dims();
    let original = host_maps(
        &method.explain(model, input.clone(), target)?.heatmaps,
        input,
    )?;
    let mut spearman = Vec::with_capacity(layers.len());
    let mut abs_spearman = Vec::with_capacity(layers.len());
    let mut ssim = Vec::with_capacity(layers.len());
    for step in 0..layers.len() {
        let groups = match config.order {
            RandomizationOrder::Cascading => &layers[..=step],
            RandomizationOrder::Independent => &layers[step..=step],
        };
        let randomized = randomize_groups(model, groups, config.seed)?;
        let maps = host_maps(
            &method.explain(&randomized, input.clone(), target)?.heatmaps,
            input,
        )?;
        let s = similarity(&original, &maps, [h, w]);
        spearman.push(s.spearman);
        abs_spearman.push(s.abs_spearman);
        ssim.push(s.ssim);
    }
    let score = match config.order {
        RandomizationOrder::Cascading => abs_spearman.last().copied().unwrap_or(1.0),
        RandomizationOrder::Independent => {
            abs_spearman.iter().sum::<f32>() / abs_spearman.len().max(1) as f32
        }
    };
    Ok(RandomizationCurve {
        order: config.order,
        layers,
        spearman,
        abs_spearman,
        ssim,
        score,
        passed: score < config.threshold,
    })
}

/// Data randomisation test: compare explanations of `model` with those of the same
/// architecture trained on randomly permuted labels (`random_label_model`), for the
/// same inputs and targets. Low similarity is the expected, passing outcome.
pub fn data_randomization<M: ExplainableModel>(
    model: &M,
    random_label_model: &M,
    method: &dyn Method<M>,
    input: &Tensor<4>,
    target: &dyn Target<M::Output>,
) -> Result<Similarity> {
    let [_, _, h, w] = input.dims();
    let original = host_maps(
        &method.explain(model, input.clone(), target)?.heatmaps,
        input,
    )?;
    let other = host_maps(
        &method
            .explain(random_label_model, input.clone(), target)?
            .heatmaps,
        input,
    )?;
    Ok(similarity(&original, &other, [h, w]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_by_hand_with_ties() {
        // scipy.stats.spearmanr([1,2,2,3],[1,3,2,4]) = 0.9486832980505138
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        assert!((r - 0.948_683_3).abs() < 1e-6, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
        assert!((spearman(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn ssim_of_a_map_with_itself_is_one() {
        let a: Vec<f32> = (0..100).map(|i| (i % 7) as f32 / 7.0).collect();
        assert!((ssim(&a, &a, [10, 10], 1.0) - 1.0).abs() < 1e-6);
        let b: Vec<f32> = a.iter().map(|v| 1.0 - v).collect();
        assert!(ssim(&a, &b, [10, 10], 1.0) < 0.0);
    }
}
