//! Statistics of a feature tensor, with AutoTimm's definitions
//! (`FeatureVisualizer.get_feature_statistics`): computed over the whole tensor
//! given (one image, or a batch), in f64 on the host.

use lumen_core::{LumenError, Result, Tensor, to_host};
use serde::{Deserialize, Serialize};

/// How channels are chosen for display.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Highest mean activation first (AutoTimm's default).
    #[default]
    Activation,
    /// Highest spatial variance (unbiased, as torch) first.
    Variance,
    /// A seeded random pick.
    Random,
}

lumen_core::named_choices!(SortBy, "channel order", {
    Activation => "activation",
    Variance => "variance",
    Random => "random",
});

/// Thresholds of the statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatisticsOptions {
    /// A channel is active when its mean activation exceeds this (AutoTimm: 0.01).
    pub active_threshold: f32,
    /// `near_zero` counts values with `|x| <= this`.
    pub zero_threshold: f32,
}

impl Default for StatisticsOptions {
    fn default() -> Self {
        Self {
            active_threshold: 0.01,
            zero_threshold: 1e-3,
        }
    }
}

impl StatisticsOptions {
    /// Check the thresholds: both finite, the near-zero one not negative (a NaN
    /// threshold would count nothing, silently).
    pub fn validate(&self) -> Result<()> {
        if !self.active_threshold.is_finite() {
            return Err(LumenError::InvalidArgument(format!(
                "the active-channel threshold must be a finite number, got {}",
                self.active_threshold
            )));
        }
        if !(self.zero_threshold.is_finite() && self.zero_threshold >= 0.0) {
            return Err(LumenError::InvalidArgument(format!(
                "the near-zero threshold must be a finite number >= 0, got {}",
                self.zero_threshold
            )));
        }
        Ok(())
    }
}

/// Statistics of a feature tensor `[B,C,H,W]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureStatistics {
    /// Mean activation.
    pub mean: f64,
    /// Standard deviation, unbiased (divides by n - 1, as torch's `std`).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Fraction of values exactly zero (AutoTimm's sparsity).
    pub sparsity: f64,
    /// Fraction of values with `|x| <= zero_threshold`.
    pub near_zero: f64,
    /// `(image, channel)` pairs whose spatial mean exceeds `active_threshold` (one
    /// image: the active channels).
    pub active_channels: usize,
    /// Channels.
    pub num_channels: usize,
    /// `[height, width]`.
    pub spatial_size: [usize; 2],
}

/// Statistics of `features` `[B,C,H,W]` as a whole.
pub fn statistics(features: &Tensor<4>, options: &StatisticsOptions) -> Result<FeatureStatistics> {
    Ok(statistics_of_host(
        &to_host(features.clone())?,
        features.dims(),
        options,
    ))
}

/// [`statistics`] of values already on the host, row-major `[B,C,H,W]`.
pub fn statistics_of_host(
    values: &[f32],
    [b, c, h, w]: [usize; 4],
    options: &StatisticsOptions,
) -> FeatureStatistics {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let variance = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut zeros, mut near) = (0usize, 0usize);
    for &v in values {
        min = min.min(v as f64);
        max = max.max(v as f64);
        zeros += (v == 0.0) as usize;
        near += (v.abs() <= options.zero_threshold) as usize;
    }
    let plane = (h * w).max(1);
    let active_channels = values
        .chunks(plane)
        .filter(|p| {
            let m = p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
            m > options.active_threshold as f64
        })
        .count();
    debug_assert_eq!(values.len(), b * c * h * w);
    FeatureStatistics {
        mean,
        std: variance.sqrt(),
        min,
        max,
        sparsity: zeros as f64 / n,
        near_zero: near as f64 / n,
        active_channels,
        num_channels: c,
        spatial_size: [h, w],
    }
}

/// Two batches' statistics as one: counts weight the means, the variances combine
/// with the spread of the means (Chan et al.), extremes and fractions combine exactly.
pub fn combine(
    a: &FeatureStatistics,
    a_count: f64,
    b: &FeatureStatistics,
    b_count: f64,
) -> FeatureStatistics {
    let n = a_count + b_count;
    let mean = (a.mean * a_count + b.mean * b_count) / n;
    let squares = |s: &FeatureStatistics, count: f64| {
        s.std * s.std * (count - 1.0).max(0.0) + count * (s.mean - mean).powi(2)
    };
    let std = ((squares(a, a_count) + squares(b, b_count)) / (n - 1.0).max(1.0)).sqrt();
    FeatureStatistics {
        mean,
        std,
        min: a.min.min(b.min),
        max: a.max.max(b.max),
        sparsity: (a.sparsity * a_count + b.sparsity * b_count) / n,
        near_zero: (a.near_zero * a_count + b.near_zero * b_count) / n,
        active_channels: a.active_channels + b.active_channels,
        num_channels: a.num_channels,
        spatial_size: a.spatial_size,
    }
}

/// Per channel of one image's `[C,H*W]` values: the score used to order channels
/// (mean activation, or unbiased spatial variance).
pub(crate) fn channel_scores(plane_values: &[f32], plane: usize, by: SortBy) -> Vec<f64> {
    plane_values
        .chunks(plane)
        .map(|p| {
            let mean = p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
            match by {
                SortBy::Variance => {
                    p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()
                        / (plane as f64 - 1.0).max(1.0)
                }
                _ => mean,
            }
        })
        .collect()
}

/// Channel indices by descending score (ties: lower index first), at most `k`.
pub(crate) fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_core::Device;

    #[test]
    fn statistics_follow_autotimm_definitions() {
        let device = Device::default();
        // One image, two channels of 2x2: [0, 0, 1, 3] and [-1, 0, 0, 0].
        let x = Tensor::<4>::from_floats(
            [[[[0.0, 0.0], [1.0, 3.0]], [[-1.0, 0.0], [0.0, 0.0]]]],
            &device,
        );
        let s = statistics(&x, &StatisticsOptions::default()).unwrap();
        assert!((s.mean - 3.0 / 8.0).abs() < 1e-12);
        // Unbiased: sum((x - 0.375)^2) / 7.
        let expected: f64 = [0.0, 0.0, 1.0, 3.0, -1.0, 0.0, 0.0, 0.0]
            .iter()
            .map(|v: &f64| (v - 0.375).powi(2))
            .sum::<f64>()
            / 7.0;
        assert!((s.std - expected.sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (-1.0, 3.0));
        assert_eq!(s.sparsity, 5.0 / 8.0);
        assert_eq!(s.active_channels, 1);
        assert_eq!((s.num_channels, s.spatial_size), (2, [2, 2]));
    }

    #[test]
    fn combined_statistics_equal_those_of_the_concatenation() {
        let a: Vec<f32> = (0..2 * 3 * 4 * 4)
            .map(|i| ((i * 7) % 11) as f32 - 3.0)
            .collect();
        let b: Vec<f32> = (0..3 * 4 * 4)
            .map(|i| ((i * 5) % 13) as f32 * 0.5)
            .collect();
        let o = StatisticsOptions::default();
        let sa = statistics_of_host(&a, [2, 3, 4, 4], &o);
        let sb = statistics_of_host(&b, [1, 3, 4, 4], &o);
        let both: Vec<f32> = a.iter().chain(&b).copied().collect();
        let whole = statistics_of_host(&both, [3, 3, 4, 4], &o);
        let combined = combine(&sa, a.len() as f64, &sb, b.len() as f64);
        for (x, y) in [
            (combined.mean, whole.mean),
            (combined.std, whole.std),
            (combined.max, whole.max),
            (combined.min, whole.min),
            (combined.sparsity, whole.sparsity),
        ] {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
        assert_eq!(combined.active_channels, whole.active_channels);
        // The spread of the two means matters: ignoring it would give a smaller std.
        let pooled = ((sa.std.powi(2) * (a.len() - 1) as f64
            + sb.std.powi(2) * (b.len() - 1) as f64)
            / (both.len() - 1) as f64)
            .sqrt();
        assert!((pooled - whole.std).abs() > 1e-3);
    }

    #[test]
    fn channels_order_by_score_then_index() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        let variance = channel_scores(&[1.0, 1.0, 0.0, 2.0], 2, SortBy::Variance);
        assert_eq!(variance, vec![0.0, 2.0]);
    }
}
