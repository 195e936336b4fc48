//! Object detection through the facade: FCOS detectors from the zoo as [`TaskModel`]s,
//! so that every method explains a detection with the box-score target.

use std::ops::Range;
use std::path::PathBuf;

use lumen_core::burn::tensor::TensorData;
use lumen_core::profile::{self, stages};
use lumen_core::{
    DataConfig, DetectorOutput, Device, ExplainableModel, Heatmaps, LumenError, Result, Tensor,
    index_tensor,
};
use lumen_methods::{Method, MethodOptions};
use lumen_models::{Detector, LoadedDetector};
use lumen_report::{DrawnBox, detection_figure};
use lumen_tasks::{
    BoxRequest, BoxScore, Detection, DetectionPrediction, DetectionScoreKind, DriseConfig,
    ObjectDetection, Task, drise_boxes, renormalize_in_boxes,
};

use crate::api::{ExplainOptions, Inputs, TaskModel, check_predictions_finite, method_options};
use crate::output::save_png;

impl TaskModel for LoadedDetector {
    type Model = Detector;
    type Task = ObjectDetection;

    fn name(&self) -> &str {
        &self.name
    }
    fn model(&self) -> &Detector {
        &self.model
    }
    fn task(&self) -> ObjectDetection {
        ObjectDetection::new(self.model.num_classes(), self.class_names.clone())
    }
    fn data_config(&self) -> &DataConfig {
        &self.data_config
    }
    fn device(&self) -> &Device {
        &self.device
    }
    /// D-RISE ([`DRISE`]) besides the registry's methods.
    fn method(&self, name: &str, options: &MethodOptions) -> Result<Box<dyn Method<Detector>>> {
        match name {
            DRISE => Ok(Box::new(Drise::new(drise_config(options))?)),
            _ => lumen_methods::by_name(name, options),
        }
    }

    /// Every detection, boxed with its index (score order), label and score.
    fn prediction_picture(
        &self,
        prediction: &DetectionPrediction,
        original: &image::RgbImage,
    ) -> Option<image::RgbImage> {
        let boxes: Vec<DrawnBox> = prediction
            .detections
            .iter()
            .enumerate()
            .map(|(k, d)| DrawnBox {
                bbox: d.bbox,
                class: d.label,
                caption: format!("{k}: {} {:.2}", caption_name(d), d.score),
            })
            .collect();
        Some(lumen_report::outline_boxes(original, &boxes))
    }
}

/// A detection's class name, or its index when the model has no names.
fn caption_name(d: &Detection) -> String {
    d.name.clone().unwrap_or_else(|| d.label.to_string())
}

/// Which detections [`explain_detection`] explains, and how.
#[derive(Clone, Debug)]
pub struct DetectionOptions {
    /// Method, its options, figures (`targets` is ignored: the boxes come from the
    /// detections).
    pub explain: ExplainOptions<Vec<BoxRequest>>,
    /// Detections scoring at least this are explained (the seed's
    /// `detection_threshold`).
    pub score_threshold: f32,
    /// Explain these detections (indices in score order) instead.
    pub boxes: Option<Vec<usize>>,
    /// At most this many boxes per image (memory: one row per box).
    pub max_boxes: usize,
    /// D-RISE's settings, when `explain.method` is `drise` (a black-box method of
    /// this task, not in the method registry). `None` (the default): [`drise_config`]
    /// of `explain.method_options` (masks, seed, internal batch), as in every other
    /// call; `Some` for the settings the method options do not carry (grid, keep
    /// probability, decoding).
    pub drise: Option<DriseConfig>,
    /// Min-max each map inside its own box and zero it outside (pytorch-grad-cam's
    /// `renormalize_cam_in_bounding_boxes`): shows where in the box the evidence is.
    pub renormalize: bool,
    /// What the gradient and CAM methods explain of each box's detection: IoU + score
    /// (pytorch-grad-cam's box score), its class logit, or its centerness logit.
    pub target: DetectionScoreKind,
}

/// The method name that selects D-RISE in [`explain_detection`] (and, through
/// [`TaskModel::method`], in every high-level call on a zoo detector).
pub const DRISE: &str = "drise";

/// D-RISE's settings from the method options: `masks`, `seed` (0 when none) and
/// `internal_batch_size` (masked images per pass); the rest D-RISE's defaults.
pub fn drise_config(options: &MethodOptions) -> DriseConfig {
    DriseConfig {
        masks: options.masks,
        seed: options.seed.unwrap_or(0),
        batch_size: options.internal_batch_size,
        ..DriseConfig::default()
    }
}

/// D-RISE as a [`Method`] of any detector, for the calls that take methods
/// ([`crate::compare_methods`], [`crate::explain_batch`], reports, [`crate::explain_with`]
/// with a user's own detector): the boxes come from the target, which must be the
/// detection task's [`BoxScore`]. A row's map is the sum of its boxes' D-RISE maps
/// (the box score sums over its boxes too); a row without a box gets a zero map.
/// [`explain_detection`] runs D-RISE its own way, each image once for all its boxes.
#[derive(Clone, Debug)]
pub struct Drise {
    config: DriseConfig,
}

impl Drise {
    /// D-RISE with `config`, checked now.
    pub fn new(config: DriseConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }
}

impl<M: ExplainableModel<Output = DetectorOutput>> Method<M> for Drise {
    fn name(&self) -> String {
        DRISE.to_string()
    }

    fn explain(
        &self,
        model: &M,
        input: Tensor<4>,
        target: &dyn lumen_core::Target<DetectorOutput>,
    ) -> Result<lumen_methods::Explanation> {
        let boxes = &target
            .as_any()
            .and_then(|any| any.downcast_ref::<BoxScore>())
            .ok_or_else(|| {
                LumenError::InvalidArgument(
                    "D-RISE compares a detector's boxes with the target's: it takes the \
                     detection task's box targets (BoxScore) only"
                        .into(),
                )
            })?
            .boxes;
        let [batch, _, h, w] = input.dims();
        if boxes.len() != batch {
            return Err(LumenError::shape(
                "D-RISE targets",
                format!("the boxes of each image ({batch})"),
                boxes.len(),
            ));
        }
        let device = input.device();
        let per_box = match boxes.iter().any(|b| !b.is_empty()) {
            true => Some(drise_boxes(model, &input, boxes, &self.config)?.into_tensor()),
            false => None,
        };
        let mut first = 0;
        let rows: Vec<Tensor<3>> = boxes
            .iter()
            .map(|own| {
                let rows = first..first + own.len();
                first = rows.end;
                match &per_box {
                    Some(maps) if !rows.is_empty() => {
                        maps.clone().narrow(0, rows.start, rows.len()).sum_dim(0)
                    }
                    _ => Tensor::<3>::zeros([1, h, w], &device),
                }
            })
            .collect();
        Ok(lumen_methods::Explanation::new(Heatmaps::new(Tensor::cat(
            rows, 0,
        ))))
    }
}

impl Default for DetectionOptions {
    fn default() -> Self {
        Self {
            explain: ExplainOptions {
                method: "gradcam".into(),
                ..ExplainOptions::default()
            },
            score_threshold: 0.5,
            boxes: None,
            max_boxes: 16,
            drise: None,
            renormalize: false,
            target: DetectionScoreKind::BoxScore,
        }
    }
}

/// One image of a detection explanation.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExplainedDetections {
    /// Input name.
    pub image: String,
    /// Every detection, best first.
    pub detections: Vec<Detection>,
    /// The detections explained (indices into `detections`).
    pub explained: Vec<usize>,
    /// Their rows in [`DetectionExplanation::maps`].
    pub rows: Range<usize>,
    /// Figures written.
    pub paths: Vec<PathBuf>,
}

/// The explanation of the detections of a batch.
pub struct DetectionExplanation {
    /// One map per explained box `[N, H, W]`, image by image in score order; `None`
    /// when nothing was explained.
    pub maps: Option<Heatmaps>,
    /// The method's raw output for those rows (attributions of gradient methods).
    pub explanation: Option<lumen_methods::Explanation>,
    /// Per image: detections, which were explained, their rows, figures.
    pub images: Vec<ExplainedDetections>,
    /// The method's name.
    pub method: String,
    /// The layer it used (CAMs).
    pub layer: Option<String>,
}

/// What one image's detection figure shows: the explained boxes, their maps (by
/// their order among the explained) and the title.
type DetectionFigure = (Vec<DrawnBox>, Vec<(usize, lumen_report::Map)>, String);

/// Explain detections (the seed's `explain_detection`): one map per detection scoring
/// at least the threshold (or per chosen box), each with pytorch-grad-cam's box-score
/// target, by any method, in one batched call over the boxes; with `save_dir`, a figure
/// per image: the detections, then each explained box's map.
pub fn explain_detection<T>(
    model: &T,
    inputs: &Inputs,
    options: &DetectionOptions,
) -> Result<DetectionExplanation>
where
    T: TaskModel<Task = ObjectDetection>,
    T::Model: ExplainableModel<Output = lumen_core::DetectorOutput>,
{
    options.explain.validate()?;
    // D-RISE's settings are checked before the prediction's pass, like the others.
    let is_drise = options.explain.method == DRISE;
    let drise = options
        .drise
        .unwrap_or_else(|| drise_config(&options.explain.method_options));
    if is_drise {
        drise.validate()?;
    }
    if !(0.0..=1.0).contains(&options.score_threshold) {
        return Err(LumenError::InvalidArgument(format!(
            "the score threshold must be in [0, 1], got {}",
            options.score_threshold
        )));
    }
    if options.max_boxes == 0 {
        return Err(LumenError::InvalidArgument(
            "at least 1 box per image must be explained".into(),
        ));
    }
    if let Some(boxes) = &options.boxes {
        if boxes.is_empty() {
            return Err(LumenError::InvalidArgument(
                "no box given: name detections by index, or leave the boxes unset to pick them by score".into(),
            ));
        }
        // A repeated index would be explained and drawn twice: a typo.
        let mut seen = std::collections::HashSet::new();
        if let Some(box_index) = boxes.iter().find(|&&b| !seen.insert(b)) {
            return Err(LumenError::InvalidArgument(format!(
                "box {box_index} is given twice"
            )));
        }
    }
    model.model().check_input_shape(&inputs.tensor)?;
    let task = model.task();
    // Images (or explained boxes, one image copy each) per pass through the model.
    let pass_rows =
        crate::api::images_per_pass(model.model(), &inputs.tensor, options.explain.batch_size);
    let predictions = lumen_core::map_chunks(inputs.len(), pass_rows, |range| {
        let chunk = inputs.tensor.clone().narrow(0, range.start, range.len());
        let output = {
            let _forward = profile::stage_on(stages::FORWARD, model.device());
            model.model().forward(chunk)
        };
        let _decode = profile::stage(stages::POSTPROCESS);
        task.predict(&output)
    })?
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    // A broken output would otherwise read as "nothing detected" (its NaN scores fail
    // every threshold), or draw boxes at infinity.
    check_predictions_finite(&task, &predictions, &inputs.names)?;
    let mut rows: Vec<usize> = vec![];
    let mut requests: Vec<Vec<BoxRequest>> = vec![];
    let mut images = Vec::with_capacity(inputs.len());
    for (i, prediction) in predictions.into_iter().enumerate() {
        let found = prediction.detections.len();
        let chosen: Vec<usize> = match &options.boxes {
            Some(boxes) => {
                if let Some(bad) = boxes.iter().find(|&&b| b >= found) {
                    return Err(LumenError::InvalidArgument(format!(
                        "{}: box {bad} does not exist ({found} detections, indices 0..{found})",
                        inputs.names[i]
                    )));
                }
                boxes.clone()
            }
            None => (0..found)
                .filter(|&k| prediction.detections[k].score >= options.score_threshold)
                .collect(),
        };
        let chosen: Vec<usize> = chosen.into_iter().take(options.max_boxes).collect();
        let start = rows.len();
        for &k in &chosen {
            let d = &prediction.detections[k];
            rows.push(i);
            requests.push(vec![BoxRequest {
                bbox: d.bbox,
                label: d.label,
            }]);
        }
        images.push(ExplainedDetections {
            image: inputs.names[i].clone(),
            detections: prediction.detections,
            explained: chosen,
            rows: start..rows.len(),
            paths: vec![],
        });
    }
    let method = if is_drise {
        None
    } else {
        Some(lumen_methods::by_name::<T::Model>(
            &options.explain.method,
            &method_options(model, &options.explain.method_options),
        )?)
    };
    let method_name = method
        .as_ref()
        .map_or_else(|| DRISE.to_string(), |m| m.name());
    let layer = method.as_ref().and_then(|m| m.layer(model.model()));
    // Before the early return: no box to explain must not let a method that could
    // not explain this model (an attention method on a CNN, an unknown layer) pass.
    if let Some(method) = &method {
        method.check(model.model())?;
    }
    if rows.is_empty() {
        return Ok(DetectionExplanation {
            maps: None,
            explanation: None,
            images,
            method: method_name,
            layer,
        });
    }
    // One row per explained box: the image repeated, its box as the target.
    let repeated = inputs
        .tensor
        .clone()
        .select(0, index_tensor(&rows, &inputs.tensor.device()));
    // Box rows per pass: the images' pass when it bounded them (chunked, or a size
    // given); else sized from the box rows themselves, which can outnumber the images
    // several times (a batch of up to 8 images is not a bound on its boxes).
    let box_rows = match pass_rows < inputs.len() {
        true => pass_rows,
        false => crate::api::images_per_pass(model.model(), &repeated, options.explain.batch_size),
    };
    // The rows' explanations: one box of one image each, independent of the others.
    // A method's rows go through the model a pass at a time; D-RISE bounds its own
    // memory (a chunk of masks serves every row), its masks are drawn once per call,
    // and it takes each image once with all its boxes (`images_of_rows`: the image of
    // each row), so that a masked image goes through the model once, not once a box.
    let explain_rows = |repeated: Tensor<4>,
                        requests: Vec<Vec<BoxRequest>>,
                        images_of_rows: Vec<usize>| match &method {
        Some(method) => {
            let total = requests.len();
            let parts = lumen_core::map_chunks(total, box_rows, |range| {
                let chunk = match range.len() == total {
                    true => repeated.clone(),
                    false => repeated.clone().narrow(0, range.start, range.len()),
                };
                let target = BoxScore {
                    boxes: requests[range].to_vec(),
                    match_threshold: task.match_threshold,
                    decode: task.decode,
                    kind: options.target,
                };
                method.explain(model.model(), chunk, &target)
            })?;
            lumen_methods::Explanation::concat(parts)
        }
        None => {
            // Rows of one image are consecutive: one group of boxes per run.
            let rows: Vec<(usize, Vec<BoxRequest>)> =
                images_of_rows.into_iter().zip(requests).collect();
            let (images, boxes): (Vec<usize>, Vec<Vec<BoxRequest>>) = rows
                .chunk_by(|a, b| a.0 == b.0)
                .map(|run| (run[0].0, run.iter().flat_map(|r| r.1.clone()).collect()))
                .unzip();
            let index = index_tensor(&images, &inputs.tensor.device());
            let unique = inputs.tensor.clone().select(0, index);
            let maps = drise_boxes(model.model(), &unique, &boxes, &drise)?;
            Ok(lumen_methods::Explanation::new(maps))
        }
    };
    let explanation = match options.explain.cache.as_deref() {
        None => explain_rows(repeated, requests, rows.clone())?,
        Some(cache) => {
            let settings = format!(
                "detection\nmethod {method_name}\nlayer {layer:?}\noptions {:?}\ntarget {:?}\n\
                 match {} decode {:?}\ndrise {:?}\npreprocessing {:?}",
                method_options(model, &options.explain.method_options),
                options.target,
                task.match_threshold,
                task.decode,
                is_drise.then_some(&drise),
                model.data_config()
            );
            let image_keys = cache.image_keys(&settings, &inputs.tensor)?;
            let keys: Vec<String> = rows
                .iter()
                .zip(&requests)
                .map(|(&image, request)| {
                    let mut key = image_keys[image].clone();
                    key.push_str(&serde_json::to_string(request).unwrap_or_default());
                    cache.key(&key, b"")
                })
                .collect();
            crate::cached::rows_through_cache(cache, &keys, &inputs.tensor.device(), |missing| {
                let index = index_tensor(missing, &inputs.tensor.device());
                explain_rows(
                    repeated.clone().select(0, index),
                    missing.iter().map(|&r| requests[r].clone()).collect(),
                    missing.iter().map(|&r| rows[r]).collect(),
                )
            })?
        }
    };
    let explanation = if options.renormalize {
        let [n, h, w] = explanation.heatmaps.dims();
        let values = explanation.heatmaps.to_vec()?;
        let boxes: Vec<[f32; 4]> = images
            .iter()
            .flat_map(|image| image.explained.iter().map(|&k| image.detections[k].bbox))
            .collect();
        // The boxes are in input pixels; maps of other sizes (attention grids) scale.
        let (sy, sx) = (
            h as f32 / inputs.tensor.dims()[2] as f32,
            w as f32 / inputs.tensor.dims()[3] as f32,
        );
        let renormalized: Vec<f32> = (0..n)
            .flat_map(|row| {
                let b = boxes[row];
                let scaled = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
                renormalize_in_boxes(&values[row * h * w..(row + 1) * h * w], [h, w], &[scaled])
            })
            .collect();
        let maps = Tensor::<3>::from_data(
            TensorData::new(renormalized, [n, h, w]),
            &inputs.tensor.device(),
        );
        lumen_methods::Explanation {
            heatmaps: Heatmaps::new(maps),
            ..explanation
        }
    } else {
        explanation
    };
    let host = explanation.heatmaps.clone().normalize().to_vec()?;
    let [_, mh, mw] = explanation.heatmaps.dims();
    // Before any figure: a NaN map draws as a blank, plausible figure.
    let non_finite: Vec<String> = images
        .iter()
        .filter(|image| {
            host[image.rows.start * mh * mw..image.rows.end * mh * mw]
                .iter()
                .any(|v| !v.is_finite())
        })
        .map(|image| image.image.clone())
        .collect();
    if !non_finite.is_empty() {
        return Err(LumenError::NonFinite { images: non_finite });
    }
    let map_of = |row: usize| {
        lumen_report::Map::new(
            host[row * mh * mw..(row + 1) * mh * mw].to_vec(),
            mw as u32,
            mh as u32,
        )
    };
    if let Some(dir) = &options.explain.save_dir {
        // What each figure shows, gathered here (a task is not shared across threads);
        // the figures are drawn and encoded on every core.
        let figures: Vec<DetectionFigure> = images
            .iter()
            .map(|image| {
                // Only the explained boxes are drawn on the overview too, with their index.
                let shown: Vec<DrawnBox> = image
                    .explained
                    .iter()
                    .map(|&k| {
                        let d = &image.detections[k];
                        DrawnBox {
                            bbox: d.bbox,
                            class: d.label,
                            caption: format!("{k}: {} {:.2}", caption_name(d), d.score),
                        }
                    })
                    .collect();
                let maps = image
                    .rows
                    .clone()
                    .enumerate()
                    .map(|(j, row)| (j, map_of(row)))
                    .collect();
                // The layer of a CAM, as in the classifiers' figures.
                let method = match &layer {
                    Some(layer) => format!("{method_name} | {layer}"),
                    None => method_name.clone(),
                };
                let title = format!(
                    "{method} | {} | {} explained",
                    task.describe_prediction(&DetectionPrediction {
                        detections: image.detections.clone()
                    }),
                    image.explained.len()
                );
                (shown, maps, title)
            })
            .collect();
        let cautions =
            crate::api::caution_lines(&options.explain.cautions, &[method_name.to_string()]);
        use rayon::prelude::*;
        let paths: Vec<PathBuf> = figures
            .into_par_iter()
            .zip(images.par_iter())
            .enumerate()
            .map(|(i, ((shown, maps, title), image))| {
                let _stage = profile::stage(stages::ENCODE);
                let mut notes = cautions.clone();
                notes.extend(maps.iter().filter_map(|(j, map)| {
                    crate::figures::flat_map_note(map, &format!(" for box {}", image.explained[*j]))
                }));
                let figure = lumen_report::with_notes(
                    &detection_figure(
                        &inputs.originals[i],
                        &shown,
                        &maps,
                        options.explain.colormap,
                        options.explain.alpha,
                        &title,
                    ),
                    &notes,
                );
                let stem = format!("{}_{}", image.image, method_name.replace('+', "p"));
                save_png(&figure, dir, &format!("{stem}.png"))
            })
            .collect::<Result<_>>()?;
        for (image, path) in images.iter_mut().zip(paths) {
            image.paths.push(path);
        }
    }
    Ok(DetectionExplanation {
        maps: Some(explanation.heatmaps.clone()),
        explanation: Some(explanation),
        images,
        method: method_name,
        layer,
    })
}
