//! Feature statistics for reports and figures: the glue between
//! [`lumen_features::FeatureVisualizer`] and `lumen-report`.

use lumen_features::{FeatureStatistics, FeatureVisualizer, LayerStatistics, StatisticsOptions};
use lumen_report::layer_comparison_section;

use crate::Result;
use crate::api::{Inputs, TaskModel};

/// The statistics shown in tables and charts, by name.
pub fn shown_statistics(s: &FeatureStatistics) -> Vec<(String, f64)> {
    vec![
        ("mean".into(), s.mean),
        ("std".into(), s.std),
        ("sparsity".into(), s.sparsity),
        ("active channels".into(), s.active_channels as f64),
    ]
}

/// `(statistic, [(layer, value)])` of the batch statistics: the layer comparison
/// figure's bars.
pub fn comparison_bars(layers: &[LayerStatistics]) -> Vec<(String, Vec<(String, f64)>)> {
    let names: Vec<String> = layers
        .first()
        .map(|l| {
            shown_statistics(&l.batch)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                name.clone(),
                layers
                    .iter()
                    .map(|l| (l.layer.clone(), shown_statistics(&l.batch)[k].1))
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
    let stats = FeatureVisualizer::new(model.model()).compare_layers(
        &inputs.tensor,
        layers,
        &StatisticsOptions::default(),
    )?;
    let images: Vec<(String, Vec<lumen_report::html::LayerStatistics>)> = inputs
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
        .collect();
    Ok(layer_comparison_section(&images))
}
