//! Sensitivity (Yeh et al., 2019): how much does the explanation change when the input
//! moves a little? Max- and avg-sensitivity over perturbations drawn uniformly from an
//! L-infinity ball, every perturbed copy explained in batches.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};
use lumen_core::random::UniformStream;
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
    /// Perturbed images per explanation call; `None` sizes them to the input and model
    /// like a gradient method's internal batch (`lumen_core::default_rows_for`: 32 at
    /// 3x224x224 on a ResNet, fewer on larger inputs).
    pub batch_size: Option<usize>,
}

impl Default for SensitivityConfig {
    fn default() -> Self {
        Self {
            radius: 0.1,
            samples: 10,
            seed: 0,
            batch_size: None,
        }
    }
}

impl SensitivityConfig {
    /// Check the settings: the radius finite and > 0, at least 1 sample and 1 image
    /// per explanation call.
    pub fn validate(&self) -> Result<()> {
        if !(self.radius.is_finite() && self.radius > 0.0) {
            return Err(LumenError::InvalidArgument(format!(
                "the sensitivity radius must be a finite number > 0, got {}",
                self.radius
            )));
        }
        check_counts(self.samples, self.batch_size)
    }
}

fn check_counts(samples: usize, batch_size: Option<usize>) -> Result<()> {
    if samples == 0 {
        return Err(LumenError::InvalidArgument(
            "sensitivity needs at least one perturbation".into(),
        ));
    }
    crate::faithfulness::check_at_most("the sensitivity's perturbations", samples)?;
    crate::faithfulness::check_batch_size(batch_size)
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

/// Max- and avg-sensitivity of `method` with random perturbations from `config`:
/// uniform in `[-radius, radius]`, sample `s` being the stream seeded with `seed + s`
/// over the whole batch `[B,C,H,W]`. Each internal batch draws its own rows, so memory
/// is one batch of perturbed images however many samples are asked for.
pub fn sensitivity<M: ExplainableModel>(
    model: &M,
    method: &dyn Method<M>,
    input: &Tensor<4>,
    target: &dyn Target<M::Output>,
    config: &SensitivityConfig,
) -> Result<Sensitivity> {
    config.validate()?;
    let [b, c, h, w] = input.dims();
    let device = input.device();
    let per_image = c * h * w;
    // Rows come in order, sample-major: one sample's stream serves its images in turn.
    let mut stream: Option<(usize, UniformStream)> = None;
    sensitivity_rows(
        model,
        method,
        input,
        target,
        config.samples,
        config.batch_size,
        |rows| {
            let mut values = Vec::with_capacity(rows.len() * per_image);
            for row in rows.clone() {
                let sample = row / b.max(1);
                if stream.as_ref().map(|(s, _)| *s) != Some(sample) {
                    let seed = config.seed.wrapping_add(sample as u64);
                    stream = Some((
                        sample,
                        UniformStream::new(-config.radius, config.radius, seed)?,
                    ));
                }
                if let Some((_, stream)) = stream.as_mut() {
                    values.extend(stream.take(per_image));
                }
            }
            Ok(Tensor::from_data(
                TensorData::new(values, [rows.len(), c, h, w]),
                &device,
            ))
        },
    )
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
    batch_size: Option<usize>,
) -> Result<Sensitivity> {
    let dims = input.dims();
    if let Some(p) = perturbations.iter().find(|p| p.dims() != dims) {
        return Err(LumenError::shape(
            "perturbation",
            format!("{dims:?}"),
            format!("{:?}", p.dims()),
        ));
    }
    let b = dims[0].max(1);
    let samples = perturbations.len();
    sensitivity_rows(model, method, input, target, samples, batch_size, |rows| {
        let parts = rows
            .map(|row| perturbations[row / b].clone().narrow(0, row % b, 1))
            .collect();
        Ok(Tensor::cat(parts, 0))
    })
}

/// The sensitivity loop over `B * samples` perturbed copies, sample-major (row
/// `sample * B + image`), `batch_size` rows per explanation call (`None`:
/// `lumen_core::default_rows_for` the input); `noise_of(rows)`
/// gives those rows' perturbations `[rows, C, H, W]`, called for the rows in order.
fn sensitivity_rows<M: ExplainableModel>(
    model: &M,
    method: &dyn Method<M>,
    input: &Tensor<4>,
    target: &dyn Target<M::Output>,
    samples: usize,
    batch_size: Option<usize>,
    mut noise_of: impl FnMut(Range<usize>) -> Result<Tensor<4>>,
) -> Result<Sensitivity> {
    check_counts(samples, batch_size)?;
    let [b, ..] = input.dims();
    let device = input.device();
    let original = method.explain(model, input.clone(), target)?.heatmaps;
    let original: Vec<Vec<f32>> = host_maps(&original, input)?
        .into_iter()
        .map(normalise_by_max)
        .collect();
    // Running largest and summed change per image: nothing per sample is kept.
    let (mut max, mut sum) = (vec![0f32; b], vec![0f64; b]);
    let chunk = batch_size.unwrap_or_else(|| lumen_core::default_rows_for(model, input));
    for rows in lumen_core::row_chunks(b * samples, chunk) {
        let images: Vec<usize> = rows.clone().map(|r| r % b).collect();
        let noise = noise_of(rows.clone())?;
        let perturbed = input.clone().select(0, index_tensor(&images, &device)) + noise;
        let explained = method
            .explain(
                model,
                perturbed.clone(),
                target.for_images(&images).as_ref(),
            )?
            .heatmaps;
        for (k, map) in host_maps(&explained, &perturbed)?.into_iter().enumerate() {
            let map = normalise_by_max(map);
            let image = images[k];
            let reference = &original[image];
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
            let change = if norm > 0.0 {
                (diff / norm) as f32
            } else {
                diff as f32
            };
            max[image] = max[image].max(change);
            sum[image] += change as f64;
        }
    }
    Ok(Sensitivity {
        max,
        average: sum
            .into_iter()
            .map(|s| (s / samples as f64) as f32)
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
