//! Sensitivity (Yeh et al., 2019): how much does the explanation change when the input
//! moves a little? Max- and avg-sensitivity over perturbations drawn uniformly from an
//! L-infinity ball, every perturbed copy explained in batches.

use burn::tensor::{Tensor, TensorData};
use lumen_core::random::uniform_values;
use lumen_core::{ExplainableModel, LumenError, Result, Target};
use lumen_methods::Method;
use serde::Serialize;

use crate::faithfulness::host_maps;
use lumen_core::index_tensor;

/// Settings of the sensitivity metrics.
#[derive(Clone, Debug)]
pub struct SensitivityConfig {
    /// Radius of the L-infinity ball, in the model's (normalised) input units.
    pub radius: f32,
    /// Perturbations per image.
    pub samples: usize,
    /// Seed of the perturbations.
    pub seed: u64,
    /// Perturbed images per explanation call.
    pub batch_size: usize,
}

impl Default for SensitivityConfig {
    fn default() -> Self {
        Self {
            radius: 0.1,
            samples: 10,
            seed: 0,
            batch_size: 32,
        }
    }
}

/// Sensitivity of each image's explanation.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    /// Largest relative change over the perturbations, per image (lower is better).
    pub max: Vec<f32>,
    /// Mean relative change over the perturbations, per image.
    pub average: Vec<f32>,
}

impl Sensitivity {
    /// Mean over images of the max-sensitivity.
    pub fn mean_max(&self) -> f32 {
        self.max.iter().sum::<f32>() / self.max.len().max(1) as f32
    }

    /// Mean over images of the avg-sensitivity.
    pub fn mean_average(&self) -> f32 {
        self.average.iter().sum::<f32>() / self.average.len().max(1) as f32
    }
}

/// Uniform perturbations in `[-radius, radius]`, one `[B,C,H,W]` tensor per sample.
pub fn uniform_perturbations(
    dims: [usize; 4],
    config: &SensitivityConfig,
    device: &burn::tensor::Device,
) -> Vec<Tensor<4>> {
    (0..config.samples)
        .map(|s| {
            let values = uniform_values(
                dims.iter().product(),
                -config.radius,
                config.radius,
                config.seed.wrapping_add(s as u64),
            );
            Tensor::from_data(TensorData::new(values, dims), device)
        })
        .collect()
}

/// Max- and avg-sensitivity of `method` with random perturbations from `config`.
pub fn sensitivity<M: ExplainableModel>(
    model: &M,
    method: &dyn Method<M>,
    input: &Tensor<4>,
    target: &dyn Target<M::Output>,
    config: &SensitivityConfig,
) -> Result<Sensitivity> {
    let noise = uniform_perturbations(input.dims(), config, &input.device());
    sensitivity_with(model, method, input, target, &noise, config.batch_size)
}

/// Max- and avg-sensitivity for given perturbations (one `[B,C,H,W]` tensor per
/// sample): `||e(x + d) - e(x)|| / ||e(x)||` with each map `e` divided by its largest
/// magnitude (Quantus' `normalise_by_max`), Frobenius norms over the map at input size.
pub fn sensitivity_with<M: ExplainableModel>(
    model: &M,
    method: &dyn Method<M>,
    input: &Tensor<4>,
    target: &dyn Target<M::Output>,
    perturbations: &[Tensor<4>],
    batch_size: usize,
) -> Result<Sensitivity> {
    let dims = input.dims();
    let [b, c, h, w] = dims;
    if perturbations.is_empty() {
        return Err(LumenError::InvalidArgument(
            "sensitivity needs at least one perturbation".into(),
        ));
    }
    if let Some(p) = perturbations.iter().find(|p| p.dims() != dims) {
        return Err(LumenError::shape(
            "perturbation",
            format!("{dims:?}"),
            format!("{:?}", p.dims()),
        ));
    }
    let samples = perturbations.len();
    let device = input.device();
    let original = method.explain(model, input.clone(), target)?.heatmaps;
    let original: Vec<Vec<f32>> = host_maps(&original, input)?
        .into_iter()
        .map(normalise_by_max)
        .collect();
    // Rows image-major: row = image * samples + sample.
    let noise = Tensor::stack::<5>(perturbations.to_vec(), 1).reshape([b * samples, c, h, w]);
    let mut changes = vec![0f32; b * samples];
    let rows = b * samples;
    for rows in lumen_core::row_chunks(rows, batch_size) {
        let range: Vec<usize> = rows.collect();
        let images: Vec<usize> = range.iter().map(|r| r / samples).collect();
        let perturbed = input.clone().select(0, index_tensor(&images, &device))
            + noise.clone().select(0, index_tensor(&range, &device));
        let explained = method
            .explain(
                model,
                perturbed.clone(),
                target.for_images(&images).as_ref(),
            )?
            .heatmaps;
        for (k, map) in host_maps(&explained, &perturbed)?.into_iter().enumerate() {
            let map = normalise_by_max(map);
            let reference = &original[images[k]];
            let diff: f64 = map
                .iter()
                .zip(reference)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = reference
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            changes[range[k]] = if norm > 0.0 {
                (diff / norm) as f32
            } else {
                diff as f32
            };
        }
    }
    let per_image = changes.chunks(samples);
    Ok(Sensitivity {
        max: per_image
            .clone()
            .map(|s| s.iter().copied().fold(0.0, f32::max))
            .collect(),
        average: per_image
            .map(|s| s.iter().sum::<f32>() / samples as f32)
            .collect(),
    })
}

fn normalise_by_max(mut map: Vec<f32>) -> Vec<f32> {
    let max = map.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max > 0.0 {
        map.iter_mut().for_each(|v| *v /= max);
    }
    map
}
