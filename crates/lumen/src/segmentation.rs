//! Semantic segmentation through the facade: AutoTimm segmentors from the zoo as
//! [`TaskModel`]s, and [`explain_segmentation`] (the seed guide's call): an attribution
//! map for a class over a region, the class map and an uncertainty map per image, and a
//! figure with all of them.

use std::path::PathBuf;

use lumen_core::{DataConfig, Device, ExplainableModel, Heatmaps, Result, Tensor};
use lumen_methods::Explanation;
use lumen_models::{LoadedSegmentor, Segmentor};
use lumen_report::{Map, SegmentationView, segmentation_figure};
pub use lumen_tasks::class_maps_of;
use lumen_tasks::{
    Segmentation, SegmentationPrediction, SegmentationRequest, Task, Uncertainty, UncertaintyScale,
    uncertainty_map,
};

use crate::api::{ExplainOptions, ExplanationResult, Inputs, TaskModel, explain_with};
use crate::output::save_png;

impl TaskModel for LoadedSegmentor {
    type Model = Segmentor;
    type Task = Segmentation;

    fn name(&self) -> &str {
        &self.name
    }
    fn model(&self) -> &Segmentor {
        &self.model
    }
    fn task(&self) -> Segmentation {
        let [_, h, w] = self.data_config.input_size;
        Segmentation::new(self.num_classes(), self.class_names.clone(), [h, w])
    }
    fn data_config(&self) -> &DataConfig {
        &self.data_config
    }
    fn device(&self) -> &Device {
        &self.device
    }
    /// The class map over the image, with a legend of the predicted classes and their
    /// shares.
    fn prediction_picture(
        &self,
        prediction: &SegmentationPrediction,
        original: &image::RgbImage,
    ) -> Option<image::RgbImage> {
        Some(lumen_report::class_map_picture(
            original,
            &prediction.pixel_classes,
            self.task().input_size,
            &legend_of(&self.task(), prediction),
        ))
    }
}

/// The legend of a segmentation: each predicted class with its share of pixels.
fn legend_of(task: &Segmentation, prediction: &SegmentationPrediction) -> Vec<(usize, String)> {
    prediction
        .shares
        .iter()
        .map(|s| {
            (
                s.class,
                format!("{} {:.0}%", task.label(s.class), 100.0 * s.fraction),
            )
        })
        .collect()
}

/// What [`explain_segmentation`] does besides the attribution.
#[derive(Clone, Debug)]
pub struct SegmentationOptions {
    /// Method, targets (`SegmentationRequest` per image; default: the most frequent
    /// predicted non-background class over its predicted region), figures.
    pub explain: ExplainOptions<SegmentationRequest>,
    /// An uncertainty map to compute and draw.
    pub uncertainty: Option<Uncertainty>,
    /// How it is scaled.
    pub scale: UncertaintyScale,
}

impl Default for SegmentationOptions {
    fn default() -> Self {
        Self {
            explain: ExplainOptions {
                method: "gradcam".into(),
                ..ExplainOptions::default()
            },
            uncertainty: None,
            scale: UncertaintyScale::default(),
        }
    }
}

/// The explanation of a batch of segmented images.
pub struct SegmentationExplanation {
    /// The method's output (maps at input size).
    pub explanation: Explanation,
    /// Per image: prediction (class shares, dominant class), request, figure paths.
    pub results: Vec<ExplanationResult<SegmentationPrediction, SegmentationRequest>>,
    /// Uncertainty maps `[B, H, W]` at input size (bilinear from the output grid), when
    /// asked for.
    pub uncertainty: Option<Heatmaps>,
}

/// Explain a segmentation: one map per image for a class over a region (pytorch-grad-cam's
/// `SemanticSegmentationTarget`), by any method; with an uncertainty map, and with
/// `save_dir` a figure per image: original | class map and legend | explanation |
/// uncertainty.
pub fn explain_segmentation<T>(
    model: &T,
    inputs: &Inputs,
    options: &SegmentationOptions,
) -> Result<SegmentationExplanation>
where
    T: TaskModel<Task = Segmentation>,
    T::Model: ExplainableModel<Output = Tensor<4>>,
{
    options.explain.validate()?;
    let method = model.method(
        &options.explain.method,
        &crate::api::method_options(model, &options.explain.method_options),
    )?;
    model.model().check_input_shape(&inputs.tensor)?;
    // Sized once for the explanation's passes and (with a cache) the uncertainty's.
    let rows =
        crate::api::images_per_pass(model.model(), &inputs.tensor, options.explain.batch_size);
    let quiet = ExplainOptions {
        save_dir: None,
        batch_size: Some(rows),
        ..options.explain.clone()
    };
    let [_, _, height, width] = inputs.tensor.dims();
    let task = model.task();
    use lumen_core::profile::{self, stages};
    let uncertainty_of = |logits: &Tensor<4>, kind| {
        profile::timed(stages::POSTPROCESS, || {
            uncertainty_map(logits, kind, options.scale)
        })
    };
    // Without a cache, the maps come from the logits the predictions are read from
    // (the method's own forward, or the one that predicts): no forward of their own.
    let mut tapped = Vec::new();
    let (explanation, mut results) = match (options.uncertainty, &options.explain.cache) {
        (Some(kind), None) => {
            let mut tap = |logits: &Tensor<4>| -> Result<()> {
                tapped.push(uncertainty_of(
                    &logits.clone().detach().without_autodiff(),
                    kind,
                )?);
                Ok(())
            };
            let (explanation, explained) = crate::api::explain_and_draw_uncached(
                model,
                inputs,
                method.as_ref(),
                &quiet,
                Some(&mut tap),
            )?;
            (
                explanation,
                explained.into_iter().map(|e| e.result).collect(),
            )
        }
        _ => explain_with(model, inputs, method.as_ref(), &quiet)?,
    };
    let maps = match options.uncertainty {
        None => None,
        Some(_) if tapped.iter().map(|m| m.dims()[0]).sum::<usize>() == inputs.len() => {
            Some(tapped)
        }
        // A cached image has no forward to read (nor has an image of a user's method
        // that breaks its promise to score the input): the maps get their own, per
        // pixel or per image (min-max), so a pass's maps are its own images'.
        Some(kind) => Some(lumen_core::map_chunks(inputs.len(), rows, |range| {
            let chunk = inputs.tensor.clone().narrow(0, range.start, range.len());
            let logits = profile::timed(stages::FORWARD, || model.model().forward(chunk));
            uncertainty_of(&logits, kind)
        })?),
    };
    let uncertainty = maps.map(|maps| Heatmaps::new(Tensor::cat(maps, 0)).resize([height, width]));
    if let Some(dir) = &options.explain.save_dir {
        let host = uncertainty.as_ref().map(|u| u.to_vec()).transpose()?;
        let kind = options.uncertainty.map(|k| k.name()).unwrap_or_default();
        let range = options
            .uncertainty
            .map(|k| options.scale.range(k, task.num_classes))
            .unwrap_or([0.0, 1.0]);
        let (colormap, alpha) = (options.explain.colormap, options.explain.alpha);
        // What needs the task is described here; the figures are drawn and encoded
        // on every core (a task is not shared across threads).
        let described: Vec<_> = results
            .iter()
            .enumerate()
            .map(|(i, result)| {
                let uncertainty_map = host.as_ref().map(|values| {
                    Map::new(
                        values[i * height * width..(i + 1) * height * width].to_vec(),
                        width as u32,
                        height as u32,
                    )
                });
                // The layer of a CAM, as in the classifiers' figures.
                let method = match &result.layer {
                    Some(layer) => format!("{} | {layer}", result.method),
                    None => result.method.clone(),
                };
                let title = format!(
                    "{method} | {} | explaining {}",
                    task.describe_prediction(&result.prediction),
                    task.describe_request(&result.target)
                );
                let mut cautions = crate::api::caution_lines(
                    &options.explain.cautions,
                    std::slice::from_ref(&result.method),
                );
                cautions.extend(crate::figures::flat_map_note(&result.heatmap, ""));
                (
                    legend_of(&task, &result.prediction),
                    title,
                    uncertainty_map,
                    cautions,
                )
            })
            .collect();
        let (grid, originals, names) = (task.input_size, &inputs.originals, &inputs.names);
        let paths: Vec<PathBuf> = {
            use rayon::prelude::*;
            results
                .par_iter()
                .zip(described.par_iter())
                .enumerate()
                .map(
                    |(i, (result, (legend, title, uncertainty_map, cautions)))| {
                        let _stage =
                            lumen_core::profile::stage(lumen_core::profile::stages::ENCODE);
                        let view = SegmentationView {
                            classes: &result.prediction.pixel_classes,
                            grid,
                            legend,
                            uncertainty: uncertainty_map.as_ref().map(|m| (kind, m, range)),
                        };
                        let figure = lumen_report::with_notes(
                            &segmentation_figure(
                                &originals[i],
                                &view,
                                &result.heatmap,
                                colormap,
                                alpha,
                                title,
                            ),
                            cautions,
                        );
                        let stem = format!("{}_{}", names[i], result.method.replace('+', "p"));
                        save_png(&figure, dir, &format!("{stem}.png"))
                    },
                )
                .collect::<Result<_>>()?
        };
        for (result, path) in results.iter_mut().zip(paths) {
            result.paths.push(path);
        }
    }
    Ok(SegmentationExplanation {
        explanation,
        results,
        uncertainty,
    })
}

/// The class of every input pixel: logits resized bilinearly (`align_corners =
/// false`) from the output grid to the input, then arg-max; one row-major map per
/// image. What mIoU against full-resolution masks is computed from.
pub fn class_maps<M: ExplainableModel<Output = Tensor<4>>>(
    model: &M,
    input: Tensor<4>,
) -> Result<Vec<Vec<usize>>> {
    let [_, _, h, w] = input.dims();
    class_maps_of(model.forward(input), [h, w])
}
