//! Feature statistics for reports and figures: the glue between
//! [`lumen_features::FeatureVisualizer`] and `lumen-report`.

use lumen_features::{FeatureStatistics, FeatureVisualizer, LayerStatistics, StatisticsOptions};
use lumen_report::layer_comparison_section;

use crate::Result;
use crate::api::{Inputs, TaskModel};

const ACTIVE_CHANNELS: &str = "active channels";

/// The statistics shown in tables and charts, by name.
pub fn shown_statistics(s: &FeatureStatistics) -> Vec<(String, f64)> {
    vec![
        ("mean".into(), s.mean),
        ("std".into(), s.std),
        ("sparsity".into(), s.sparsity),
        (ACTIVE_CHANNELS.into(), s.active_channels as f64),
    ]
}

/// `(statistic, [(layer, value)])` of the batch statistics: the layer comparison
/// figure's bars. Mean, std and sparsity are pooled over the images' values; the active
/// channels (counted over `(image, channel)` pairs in the batch statistics, as
/// AutoTimm's) are shown per image, so that a bar reads against the layer's channels
/// whatever the number of images (one image: AutoTimm's figure).
pub fn comparison_bars(layers: &[LayerStatistics]) -> Vec<(String, Vec<(String, f64)>)> {
    let per_layer: Vec<Vec<(String, f64)>> = layers
        .iter()
        .map(|l| {
            let images = l.per_image.len().max(1) as f64;
            shown_statistics(&l.batch)
                .into_iter()
                .map(|(name, value)| match name.as_str() {
                    ACTIVE_CHANNELS => (format!("{name} per image"), value / images),
                    _ => (name, value),
                })
                .collect()
        })
        .collect();
    let names: Vec<String> = per_layer
        .first()
        .map(|l| l.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                name.clone(),
                layers
                    .iter()
                    .zip(&per_layer)
                    .map(|(l, values)| (l.layer.clone(), values[k].1))
                    .collect(),
            )
        })
        .collect()
}

/// A report section comparing `layers` on every image of `inputs` (tables and plotly
/// bar charts), for `write_report`'s extra sections.
pub fn feature_section<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    layers: &[String],
) -> Result<String> {
    Ok(layer_comparison_section(&feature_rows(
        model, inputs, layers,
    )?))
}

/// Each image's rows of a [`feature_section`] (its name and per layer the statistics
/// shown): a folder read in chunks gathers them chunk by chunk (an image's
/// statistics are its own), then draws the section once
/// ([`lumen_report::layer_comparison_section`]).
pub fn feature_rows<T: TaskModel>(
    model: &T,
    inputs: &Inputs,
    layers: &[String],
) -> Result<Vec<(String, Vec<lumen_report::html::LayerStatistics>)>> {
    let stats = FeatureVisualizer::new(model.model()).compare_layers(
        &inputs.tensor,
        layers,
        &StatisticsOptions::default(),
    )?;
    Ok(inputs
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.clone(),
                stats
                    .iter()
                    .map(|l| (l.layer.clone(), shown_statistics(&l.per_image[i])))
                    .collect(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(active_channels: usize) -> FeatureStatistics {
        FeatureStatistics {
            mean: 0.5,
            std: 1.0,
            min: 0.0,
            max: 2.0,
            sparsity: 0.25,
            near_zero: 0.25,
            active_channels,
            num_channels: 8,
            spatial_size: [4, 4],
        }
    }

    #[test]
    fn the_comparison_shows_active_channels_per_image() {
        let layer = |name: &str, per_image: &[usize]| LayerStatistics {
            layer: name.into(),
            per_image: per_image.iter().map(|&a| stats(a)).collect(),
            batch: stats(per_image.iter().sum()),
        };
        let bars = comparison_bars(&[layer("a", &[6, 8]), layer("b", &[3, 3])]);
        let names: Vec<&str> = bars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["mean", "std", "sparsity", "active channels per image"]
        );
        // The batch counts (image, channel) pairs: 14 over 2 images is 7 per image.
        assert_eq!(bars[3].1, vec![("a".into(), 7.0), ("b".into(), 3.0)]);
        assert_eq!(bars[0].1, vec![("a".into(), 0.5), ("b".into(), 0.5)]);
    }
}
