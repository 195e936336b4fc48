//! The ground-truth bench of the dense tasks: a detector or segmentor on generated
//! scenes with exact boxes and masks. It measures the model (mAP@0.5 or mIoU) and,
//! for each method and the two floors (`random`, `center`), whether the maps point at
//! the object explained: for detection, at that detection's own object rather than at
//! its neighbours; for segmentation, inside the explained class's true pixels.

use std::collections::BTreeMap;
use std::time::Instant;

use lumen_core::ExplainableModel;
use lumen_core::burn::tensor::{Int, TensorData};
use lumen_core::profile::{self, stages};
use lumen_core::random::unit_values;
use lumen_core::{Heatmaps, LumenError, Region, Result, Tensor};
use lumen_methods::{Method, MethodOptions};
use lumen_metrics::localization::{pointing_game, relevance_mass, relevance_rank};
use lumen_metrics::{
    CenterPrior, CurveConfig, CurveKind, IouAccumulator, RandomMap, Recommendation, ScoredBox,
    TruthBox, average_precision, box_localization, perturbation_curve,
};
use lumen_models::shapes::{SCENE_CLASSES, SHAPE_CLASSES, SHAPE_IMAGE_SIZE, ShapeScene};
use lumen_models::{LoadedDetector, LoadedSegmentor, Segmentor};
use lumen_report::{CurveChart, EvaluationView, MetricColumn};
use lumen_tasks::{BoxRequest, SegmentationRequest, Task, box_iou};
use serde::{Deserialize, Serialize};

use crate::api::{RequestOf, TaskModel, check_predictions_finite};
use crate::detection::{DetectionOptions, explain_detection};
use crate::evaluate::{FLOOR_NAMES, Progress, check_same_runs};
use crate::{ExplainOptions, Inputs, explain_with};

/// A detection explains an object when it overlaps it at least this much (and has
/// its class): the usual detection criterion, mAP@0.5's.
pub const MATCH_IOU: f32 = 0.5;

/// Settings of the dense-task bench.
#[derive(Clone, Debug)]
pub struct TaskEvaluationConfig {
    /// Method names (the registry's; `drise` on detectors); the floors are added.
    pub methods: Vec<String>,
    /// Options of the methods (layer, steps, seed, ...).
    pub method_options: MethodOptions,
    /// Scenes per batch.
    pub batch_size: usize,
    /// Detection: detections scoring at least this are explained.
    pub score_threshold: f32,
    /// Seed of the random floor.
    pub seed: u64,
    /// Deletion and insertion curves of the explained score (IoU + score of the box's
    /// detection; the class logits summed over the region), when set: each costs one
    /// forward pass per step and explained item.
    pub curves: Option<DenseCurves>,
    /// Where `scenes[0]` stands in the whole split (0 for one run): a part of a split
    /// run draws its random floor's maps as the whole run does.
    pub first_scene: usize,
}

/// The deletion and insertion settings of the dense bench.
#[derive(Clone, Debug)]
pub struct DenseCurves {
    /// What deleted pixels become, and the steps.
    pub deletion: CurveConfig,
    /// What the insertion starts from, and the steps.
    pub insertion: CurveConfig,
}

impl Default for TaskEvaluationConfig {
    fn default() -> Self {
        Self {
            methods: vec!["gradcam".into()],
            method_options: MethodOptions::default(),
            batch_size: 16,
            score_threshold: 0.5,
            seed: 0,
            curves: None,
            first_scene: 0,
        }
    }
}

impl TaskEvaluationConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(LumenError::InvalidArgument(
                "the batch size must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return Err(LumenError::InvalidArgument(format!(
                "the score threshold must be in [0, 1], got {}",
                self.score_threshold
            )));
        }
        if self.methods.is_empty() {
            return Err(LumenError::InvalidArgument(
                "at least one method to evaluate".into(),
            ));
        }
        Ok(())
    }

    /// The methods, then the floors not already listed.
    fn methods_and_floors(&self) -> Vec<String> {
        let mut names = self.methods.clone();
        for floor in FLOOR_NAMES {
            if !names.iter().any(|m| m == floor) {
                names.push(floor.to_string());
            }
        }
        names
    }
}

/// One method's row: metric name to mean value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskMethodRow {
    /// Method name.
    pub method: String,
    /// The layer its maps come from (CAMs).
    pub layer: Option<String>,
    /// Metric means, by name ([`TaskEvaluation::metric_names`]).
    pub scores: BTreeMap<String, f64>,
    /// The mean deletion and insertion curves, by name (`deletion`, `insertion`),
    /// when curves were measured.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub curves: BTreeMap<String, MeanCurve>,
    /// Wall time per scene of the explanations alone (the metrics and the scenes'
    /// generation not included), as the classification evaluation times it.
    pub seconds_per_image: f64,
    /// Per score and curve, the number of items behind its mean (what a merge of a
    /// split run weighs it by).
    #[serde(default)]
    pub counts: BTreeMap<String, usize>,
}

/// The dense-task bench's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskEvaluation {
    /// Model name.
    pub model: String,
    /// `detection` or `segmentation`.
    pub task: String,
    /// Scenes measured.
    pub images: usize,
    /// The model's accuracy on the scenes: `map50` and `ap50/<class>` (detection), or
    /// `miou` and `iou/<class>` (segmentation).
    pub accuracy: BTreeMap<String, f64>,
    /// What was explained: detection, boxes matched to an object (of all explained),
    /// and those in scenes with other objects; segmentation, one class per scene.
    pub explained: BTreeMap<String, usize>,
    /// Methods, then the floors.
    pub methods: Vec<TaskMethodRow>,
    /// What the accuracy is computed from, for [`merge_task_evaluations`] (a split
    /// run's parts keep it; `lumen evaluate` leaves it out of a whole run's file).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accuracy_counts: Option<AccuracyCounts>,
    /// A whole run's cautions ([`TaskEvaluation::cautions`]), which `--verdicts`
    /// writes under each method's maps; a split run's parts leave them to the merge.
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
}

/// The raw material of a dense model's accuracy: mAP needs every detection, mIoU the
/// intersections and unions per class.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracyCounts {
    /// Every scene's detections and objects.
    Detection {
        /// Per scene, its detections.
        detections: Vec<Vec<ScoredBox>>,
        /// Per scene, its objects.
        truths: Vec<Vec<TruthBox>>,
    },
    /// Intersections and unions per class.
    Segmentation(IouAccumulator),
}

impl TaskEvaluation {
    /// The metric columns, in table order.
    pub fn metric_names(&self) -> Vec<&'static str> {
        match self.task.as_str() {
            "detection" => DETECTION_METRICS.to_vec(),
            _ => SEGMENTATION_METRICS.to_vec(),
        }
    }

    /// A caution for every number of a method that does not beat a floor (in the
    /// metric's direction), as the classification bench words them: `pointing_game
    /// 0.210 does not beat the `center` floor (0.300; higher is better)`. A metric on
    /// which every row scores the same says nothing about any method and gives none.
    pub fn cautions(&self) -> Vec<Recommendation> {
        let floor = |name: &str| FLOOR_NAMES.contains(&name);
        let mut out = vec![];
        for key in self.metric_names() {
            let values: Vec<f64> = self
                .methods
                .iter()
                .filter_map(|m| m.scores.get(key).copied())
                .collect();
            let informative = values.iter().any(|v| (v - values[0]).abs() > 1e-12);
            if !informative {
                continue;
            }
            let lower = dense_metric(key).1;
            for m in self.methods.iter().filter(|m| !floor(&m.method)) {
                let Some(&v) = m.scores.get(key) else {
                    continue;
                };
                for f in self.methods.iter().filter(|f| floor(&f.method)) {
                    let Some(&fv) = f.scores.get(key) else {
                        continue;
                    };
                    let beaten = if lower { v < fv } else { v > fv };
                    if !beaten {
                        out.push(Recommendation {
                            use_case: "caution".into(),
                            method: m.method.clone(),
                            reason: format!(
                                "{key} {v:.3} does not beat the `{}` floor ({fv:.3}; {} is better)",
                                f.method,
                                if lower { "lower" } else { "higher" }
                            ),
                        });
                    }
                }
            }
        }
        out
    }

    /// The data of the page's section: the model's accuracy and what was explained,
    /// one table per metric with the floors, the best method per use, the cost and the
    /// mean deletion and insertion curves.
    pub fn view(&self) -> EvaluationView {
        let floor = |name: &str| FLOOR_NAMES.contains(&name);
        let label = |name: &str| {
            if floor(name) {
                format!("{name} (floor)")
            } else {
                name.to_string()
            }
        };
        let metrics: Vec<MetricColumn> = self
            .metric_names()
            .into_iter()
            .filter(|k| self.methods.iter().any(|m| m.scores.contains_key(*k)))
            .map(|k| {
                let (description, lower_is_better) = dense_metric(k);
                MetricColumn {
                    name: k.to_string(),
                    description: description.to_string(),
                    lower_is_better,
                    rows: self
                        .methods
                        .iter()
                        .filter_map(|m| {
                            let v = *m.scores.get(k)?;
                            Some((label(&m.method), format!("{v:.3}"), v))
                        })
                        .collect(),
                }
            })
            .collect();
        let uses: &[(&str, &str)] = match self.task.as_str() {
            "detection" => &[
                (
                    "telling the explained box from the others",
                    "beats_other_boxes",
                ),
                ("pointing at the explained object", "pointing_game"),
                ("faithful to the box's score (deletion)", "deletion_auc"),
            ],
            _ => &[
                ("concentrating on the class's pixels", "relevance_mass"),
                ("pointing at the class", "pointing_game"),
                ("faithful to the class's score (deletion)", "deletion_auc"),
            ],
        };
        let recommendations = uses
            .iter()
            .filter_map(|&(use_case, key)| {
                let lower = dense_metric(key).1;
                let better = |a: f64, b: f64| if lower { a < b } else { a > b };
                let best_of = |floors: bool| {
                    self.methods
                        .iter()
                        .filter(|m| floor(&m.method) == floors)
                        .filter_map(|m| Some((m.method.as_str(), *m.scores.get(key)?)))
                        .reduce(|a, b| if better(b.1, a.1) { b } else { a })
                };
                let (method, value) = best_of(false)?;
                let reason = match best_of(true) {
                    Some((f, floor_value)) => {
                        format!("{key} {value:.3}, against {floor_value:.3} for the {f} floor")
                    }
                    None => format!("{key} {value:.3}"),
                };
                Some((use_case.to_string(), method.to_string(), reason))
            })
            .chain(
                self.cautions()
                    .into_iter()
                    .map(|r| (r.use_case, r.method, r.reason)),
            )
            .collect();
        let chart = |curve: &str, done: &str, title: &str| CurveChart {
            title: title.into(),
            x_label: format!("fraction of pixels {done}"),
            y_label: "score / unperturbed score".into(),
            series: self
                .methods
                .iter()
                .filter_map(|m| {
                    let curve = m.curves.get(curve)?;
                    Some((
                        label(&m.method),
                        curve.fractions.iter().map(|&f| f as f64).collect(),
                        curve.mean.clone(),
                    ))
                })
                .collect(),
            note: None,
        };
        let accuracy: Vec<String> = self
            .accuracy
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        let explained: Vec<String> = self
            .explained
            .iter()
            .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
            .collect();
        EvaluationView {
            heading: format!(
                "{} evaluation of {} on {} generated scenes",
                self.task, self.model, self.images
            ),
            summary: format!(
                "Model accuracy on the scenes: {}. Explained: {}. The floors are maps that know nothing of the model: a seeded random map and a centred Gaussian.",
                accuracy.join(", "),
                explained.join(", ")
            ),
            recommendations,
            metrics,
            cost: self
                .methods
                .iter()
                .filter(|m| !floor(&m.method))
                .map(|m| (m.method.clone(), m.seconds_per_image * 1e3))
                .collect(),
            charts: vec![
                chart("deletion", "removed", "deletion (lower is better)"),
                chart("insertion", "inserted", "insertion (higher is better)"),
            ],
        }
    }

    /// The evaluation as a full offline HTML page.
    pub fn html_page(&self) -> String {
        lumen_report::page(
            &format!("Lumen evaluation: {}", self.model),
            &lumen_report::evaluation_section(&self.view()),
        )
    }
}

/// What a dense-bench metric measures, and whether lower is better.
fn dense_metric(key: &str) -> (&'static str, bool) {
    match key {
        "pointing_game" => ("the map's maximum lies in the explained object", false),
        "energy_in_box" => (
            "share of the map's positive mass inside the explained box",
            false,
        ),
        "share_among_boxes" => (
            "of the mass inside any object's box, the share in the explained one",
            false,
        ),
        "beats_other_boxes" => (
            "the explained box holds more mass than the other boxes together",
            false,
        ),
        "relevance_mass" => ("share of the map's mass in the class's true pixels", false),
        "relevance_rank" => (
            "with K the class's pixel count, the share of the map's top K pixels in the class",
            false,
        ),
        "deletion_auc" => (
            "area under the score as the most relevant pixels are removed, divided by the unperturbed score",
            true,
        ),
        "insertion_auc" => (
            "area under the score as the most relevant pixels are inserted, divided by the unperturbed score",
            false,
        ),
        _ => ("", false),
    }
}

/// Detection columns: the map's maximum in the object's box; its share of positive
/// mass in that box; of the mass inside any object's box, the share in the explained
/// one's; how often that beats the other boxes together; and, with curves, the areas
/// under the deletion and insertion curves of the box's score divided by its
/// unperturbed score (lower is better for deletion, higher for insertion).
const DETECTION_METRICS: [&str; 6] = [
    "pointing_game",
    "energy_in_box",
    "share_among_boxes",
    "beats_other_boxes",
    "deletion_auc",
    "insertion_auc",
];

/// Segmentation columns: pointing game, relevance mass and rank on the class's true
/// pixels; with curves, as for detection, of the class-region score.
const SEGMENTATION_METRICS: [&str; 5] = [
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "deletion_auc",
    "insertion_auc",
];

/// Sums of a metric, for the mean.
#[derive(Default)]
struct Means {
    scores: BTreeMap<String, (f64, usize)>,
    /// Per curve: its fractions, the sum of the items' divided scores per point, items.
    curves: BTreeMap<String, (Vec<f32>, Vec<f64>, usize)>,
}

impl Means {
    fn add(&mut self, key: &str, value: f64) {
        let entry = self.scores.entry(key.to_string()).or_default();
        entry.0 += value;
        entry.1 += 1;
    }

    /// One item's curve, divided by its unperturbed score. Every batch runs the same
    /// steps on the same image size, so the fractions agree; a curve that does not is
    /// left out rather than averaged point by point with others.
    fn add_curve(&mut self, key: &str, fractions: &[f32], divided: impl Iterator<Item = f64>) {
        let entry = self
            .curves
            .entry(key.to_string())
            .or_insert_with(|| (fractions.to_vec(), vec![0.0; fractions.len()], 0));
        if entry.0 != fractions {
            return;
        }
        for (sum, value) in entry.1.iter_mut().zip(divided) {
            *sum += value;
        }
        entry.2 += 1;
    }

    /// The method's row: the means, the mean curves and the time per scene.
    fn into_row(
        self,
        method: &str,
        layer: Option<String>,
        seconds_per_image: f64,
    ) -> TaskMethodRow {
        let counts = self
            .scores
            .iter()
            .map(|(k, (_, n))| (k.clone(), *n))
            .chain(self.curves.iter().map(|(k, (_, _, n))| (k.clone(), *n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let (scores, curves) = self.finish();
        TaskMethodRow {
            method: method.to_string(),
            layer,
            scores,
            curves,
            seconds_per_image,
            counts,
        }
    }

    /// A row's means and counts back as sums, to add another part's.
    fn add_row(&mut self, row: &TaskMethodRow) -> Result<()> {
        let count = |key: &str| -> Result<usize> {
            row.counts.get(key).copied().ok_or_else(|| {
                LumenError::InvalidArgument(format!(
                    "{}: `{key}` has no item count: was this part written by `lumen evaluate --shard`?",
                    row.method
                ))
            })
        };
        for (key, mean) in &row.scores {
            let n = count(key)?;
            let entry = self.scores.entry(key.clone()).or_default();
            entry.0 += mean * n as f64;
            entry.1 += n;
        }
        for (key, curve) in &row.curves {
            let n = count(key)?;
            let entry = self
                .curves
                .entry(key.clone())
                .or_insert_with(|| (curve.fractions.clone(), vec![0.0; curve.fractions.len()], 0));
            if entry.0 != curve.fractions || curve.mean.len() != entry.1.len() {
                return Err(LumenError::InvalidArgument(format!(
                    "{}: the parts' `{key}` curves have different points: were they run with the same settings?",
                    row.method
                )));
            }
            for (sum, mean) in entry.1.iter_mut().zip(&curve.mean) {
                *sum += mean * n as f64;
            }
            entry.2 += n;
        }
        Ok(())
    }

    fn finish(self) -> (BTreeMap<String, f64>, BTreeMap<String, MeanCurve>) {
        let scores = self
            .scores
            .into_iter()
            .map(|(k, (sum, n))| (k, sum / n.max(1) as f64))
            .collect();
        let curves = self
            .curves
            .into_iter()
            .filter(|(_, (_, _, n))| *n > 0)
            .map(|(k, (fractions, sums, n))| {
                let mean = sums.iter().map(|s| s / n as f64).collect();
                (k, MeanCurve { fractions, mean })
            })
            .collect();
        (scores, curves)
    }
}

/// The model's accuracy: the mean under `key`, each class's value under
/// `{prefix}/{class name}` (classes without a value left out).
fn accuracy_table(
    key: &str,
    mean: f64,
    prefix: &str,
    per_class: &[Option<f64>],
    names: &[&str],
) -> BTreeMap<String, f64> {
    let mut table = BTreeMap::from([(key.to_string(), mean)]);
    for (value, name) in per_class.iter().zip(names) {
        if let Some(v) = value {
            table.insert(format!("{prefix}/{name}"), *v);
        }
    }
    table
}

/// mAP@0.5 and AP@0.5 per class.
fn detection_accuracy(
    detections: &[Vec<ScoredBox>],
    truths: &[Vec<TruthBox>],
) -> Result<BTreeMap<String, f64>> {
    let ap = average_precision(detections, truths, SHAPE_CLASSES.len(), MATCH_IOU)?;
    Ok(accuracy_table(
        "map50",
        ap.mean,
        "ap50",
        &ap.per_class,
        &SHAPE_CLASSES,
    ))
}

/// mIoU and IoU per class.
fn segmentation_accuracy(iou: &IouAccumulator) -> BTreeMap<String, f64> {
    accuracy_table("miou", iou.mean(), "iou", &iou.per_class(), &SCENE_CLASSES)
}

/// Join the dense evaluations of a split run's parts, each on its own scenes, into
/// what one run gives: the accuracy computed again from the parts' detections or IoU
/// counts, every mean weighted by the number of items behind it, the counts of what
/// was explained added, the time per scene weighted by scenes.
pub fn merge_task_evaluations(parts: &[TaskEvaluation]) -> Result<TaskEvaluation> {
    check_same_runs(parts, |e| {
        let methods = e.methods.iter().map(|m| m.method.clone()).collect();
        (format!("{} ({})", e.model, e.task), methods)
    })?;
    let first = &parts[0];
    let missing = || {
        LumenError::InvalidArgument(format!(
            "a part of the {} evaluation has no accuracy counts: was it written by `lumen evaluate --shard`?",
            first.model
        ))
    };
    let counts = parts
        .iter()
        .map(|p| p.accuracy_counts.as_ref().ok_or_else(missing))
        .collect::<Result<Vec<_>>>()?;
    let (accuracy, accuracy_counts) = match counts[0] {
        AccuracyCounts::Detection { .. } => {
            let (mut all_detections, mut all_truths) = (vec![], vec![]);
            for part in &counts {
                let AccuracyCounts::Detection { detections, truths } = part else {
                    return Err(missing());
                };
                all_detections.extend(detections.iter().cloned());
                all_truths.extend(truths.iter().cloned());
            }
            let accuracy = detection_accuracy(&all_detections, &all_truths)?;
            let counts = AccuracyCounts::Detection {
                detections: all_detections,
                truths: all_truths,
            };
            (accuracy, counts)
        }
        AccuracyCounts::Segmentation(iou) => {
            let mut total = IouAccumulator::new(iou.classes());
            for part in &counts {
                let AccuracyCounts::Segmentation(iou) = part else {
                    return Err(missing());
                };
                total.merge(iou)?;
            }
            (
                segmentation_accuracy(&total),
                AccuracyCounts::Segmentation(total),
            )
        }
    };
    let images: usize = parts.iter().map(|p| p.images).sum();
    let mut explained: BTreeMap<String, usize> = BTreeMap::new();
    for part in parts {
        for (key, n) in &part.explained {
            *explained.entry(key.clone()).or_default() += n;
        }
    }
    let methods = (0..first.methods.len())
        .map(|m| {
            let mut means = Means::default();
            let mut seconds = 0.0;
            for part in parts {
                let row = &part.methods[m];
                means.add_row(row)?;
                seconds += row.seconds_per_image * part.images as f64;
            }
            let row = &first.methods[m];
            let seconds_per_image = seconds / images.max(1) as f64;
            Ok(means.into_row(&row.method, row.layer.clone(), seconds_per_image))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TaskEvaluation {
        recommendations: vec![],
        model: first.model.clone(),
        task: first.task.clone(),
        images,
        accuracy,
        explained,
        methods,
        accuracy_counts: Some(accuracy_counts),
    })
}

/// A perturbation curve averaged over the explained items, each divided by its
/// unperturbed score.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MeanCurve {
    /// Fraction of pixels removed (deletion) or inserted (insertion) at each point.
    pub fractions: Vec<f32>,
    /// The mean divided score at each point.
    pub mean: Vec<f64>,
}

/// The scenes as a batch at their own size, whatever size the model's data config
/// names (detectors and segmentors are fully convolutional): boxes, masks, maps and
/// predictions then share the scenes' pixel grid.
fn scene_inputs(
    scenes: &[ShapeScene],
    start: usize,
    config: &lumen_core::DataConfig,
    device: &lumen_core::Device,
) -> Result<Inputs> {
    let side = SHAPE_IMAGE_SIZE as usize;
    let config = lumen_core::DataConfig {
        input_size: [3, side, side],
        crop_pct: 1.0,
        ..config.clone()
    };
    let images = scenes.iter().map(|s| s.image.clone()).collect();
    let names = (0..scenes.len())
        .map(|i| format!("scene{:04}", start + i))
        .collect();
    Inputs::from_images(images, names, &config, device)
}

/// A floor's map for one explained item (the random one seeded per item).
fn floor_map(name: &str, size: [usize; 2], seed: u64, item: u64) -> Vec<f32> {
    match name {
        "random" => unit_values(
            size[0] * size[1],
            seed ^ item.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        _ => CenterPrior::default().map(size),
    }
}

/// The detections as the metrics take them.
pub fn scored_boxes(detections: &[lumen_tasks::Detection]) -> Vec<ScoredBox> {
    detections
        .iter()
        .map(|d| ScoredBox {
            bbox: d.bbox,
            label: d.label,
            score: d.score,
        })
        .collect()
}

/// A scene's objects as ground-truth boxes.
pub fn truth_boxes(scene: &ShapeScene) -> Vec<TruthBox> {
    scene
        .objects
        .iter()
        .map(|o| TruthBox {
            bbox: o.bbox.map(|v| v as f32),
            label: o.label,
        })
        .collect()
}

/// The object a detection explains: same class, the highest IoU, at least
/// [`MATCH_IOU`].
fn matched_object(detection: &ScoredBox, truths: &[TruthBox]) -> Option<usize> {
    truths
        .iter()
        .enumerate()
        .filter(|(_, t)| t.label == detection.label)
        .map(|(j, t)| (j, box_iou(&detection.bbox, &t.bbox)))
        .filter(|(_, iou)| *iou >= MATCH_IOU)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(j, _)| j)
}

/// Add one map's detection metrics against object `own` of `truths`.
fn add_box_metrics(
    means: &mut Means,
    map: &[f32],
    size: [usize; 2],
    own: usize,
    truths: &[TruthBox],
) -> Result<()> {
    let _metrics = profile::stage(stages::METRICS);
    let others: Vec<[f32; 4]> = truths
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != own)
        .map(|(_, t)| t.bbox)
        .collect();
    let m = box_localization(map, size, &truths[own].bbox, &others)?;
    means.add("pointing_game", m.pointing as u8 as f64);
    means.add("energy_in_box", m.energy_in_box as f64);
    if let (Some(share), Some(beats)) = (m.share_among_boxes, m.beats_other_boxes) {
        means.add("share_among_boxes", share as f64);
        means.add("beats_other_boxes", beats as u8 as f64);
    }
    Ok(())
}

/// Add the normalised deletion and insertion areas of `maps` (`[n*h*w]`, one per row
/// of `input`) for the task's targets of `requests` (resolved, one per row).
fn add_curves<T: TaskModel>(
    means: &mut Means,
    model: &T,
    input: Tensor<4>,
    maps: Vec<f32>,
    requests: &[RequestOf<T>],
    curves: &DenseCurves,
) -> Result<()> {
    let _metrics = profile::stage(stages::METRICS);
    let [n, _, h, w] = input.dims();
    if n == 0 {
        return Ok(());
    }
    let maps = Heatmaps::new(Tensor::<3>::from_data(
        TensorData::new(maps, [n, h, w]),
        &input.device(),
    ));
    let target = model.task().target(requests);
    for (kind, config, key) in [
        (CurveKind::Deletion, &curves.deletion, "deletion_auc"),
        (CurveKind::Insertion, &curves.insertion, "insertion_auc"),
    ] {
        let curve =
            perturbation_curve(model.model(), &input, &maps, target.as_ref(), kind, config)?;
        // Divided by the unperturbed score: meaningful only where that is positive (a
        // segmentation's summed logits need not be).
        for (scores, auc) in curve.scores.iter().zip(&curve.normalized_auc) {
            let original = match kind {
                CurveKind::Deletion => scores[0],
                CurveKind::Insertion => scores[scores.len() - 1],
            };
            if original > 0.0 && auc.is_finite() {
                means.add(key, *auc as f64);
                let name = key.trim_end_matches("_auc");
                let divided = scores.iter().map(|&v| (v / original) as f64);
                means.add_curve(name, &curve.fractions, divided);
            }
        }
    }
    Ok(())
}

/// Rows `rows` (indices into the batch) of a batch's input tensor.
fn select_rows(input: &Tensor<4>, rows: &[usize]) -> Tensor<4> {
    let index = Tensor::<1, Int>::from_data(
        TensorData::new(
            rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
            [rows.len()],
        ),
        &input.device(),
    );
    input.clone().select(0, index)
}

/// The scenes' ground truth speaks of `classes`: a model must predict those.
fn same_classes(model: usize, classes: &[&str]) -> Result<()> {
    if model == classes.len() {
        return Ok(());
    }
    Err(LumenError::InvalidArgument(format!(
        "the generated scenes have {} classes ({}); this model predicts {model}",
        classes.len(),
        classes.join(", ")
    )))
}

/// The methods with the floors, the batches (first scene index, scenes) and the
/// number of progress units, after checking the settings.
#[allow(clippy::type_complexity)]
fn plan<'a>(
    scenes: &'a [ShapeScene],
    config: &TaskEvaluationConfig,
) -> Result<(Vec<String>, Vec<(usize, &'a [ShapeScene])>, usize)> {
    config.validate()?;
    if scenes.is_empty() {
        return Err(LumenError::InvalidArgument("no scenes to evaluate".into()));
    }
    let names = config.methods_and_floors();
    let batches: Vec<(usize, &[ShapeScene])> = scenes
        .chunks(config.batch_size)
        .enumerate()
        .map(|(i, c)| (i * config.batch_size, c))
        .collect();
    let total = names.len() * batches.len();
    Ok((names, batches, total))
}

/// The detection bench: mAP@0.5 of the detector on `scenes`, and for each method
/// and floor, where the map of every confident detection that matches an object puts
/// its evidence (`DETECTION_METRICS`).
pub fn evaluate_detector(
    model: &LoadedDetector,
    scenes: &[ShapeScene],
    config: &TaskEvaluationConfig,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TaskEvaluation> {
    let (names, batches, total) = plan(scenes, config)?;
    same_classes(model.model.num_classes(), &SHAPE_CLASSES)?;
    let truths: Vec<Vec<TruthBox>> = scenes.iter().map(truth_boxes).collect();
    // The detections, and the confident ones that match an object (scene, detection,
    // object): the same for every method, so measured once.
    let task = model.task();
    let mut detections: Vec<Vec<ScoredBox>> = Vec::with_capacity(scenes.len());
    for &(start, batch) in &batches {
        let inputs = scene_inputs(batch, start, &model.data_config, &model.device)?;
        let output = {
            let _forward = profile::stage_on(stages::FORWARD, &model.device);
            model.model.forward(inputs.tensor)
        };
        let predictions = task.predict(&output)?;
        // A NaN detection would rank first in the precision-recall curve.
        check_predictions_finite(&task, &predictions, &inputs.names)?;
        for prediction in predictions {
            detections.push(scored_boxes(&prediction.detections));
        }
    }
    let mut matched: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut confident = 0;
    for (scene, found) in detections.iter().enumerate() {
        for (k, d) in found.iter().enumerate() {
            if d.score >= config.score_threshold {
                confident += 1;
                if let Some(own) = matched_object(d, &truths[scene]) {
                    matched.insert((scene, k), own);
                }
            }
        }
    }
    let crowded = matched.keys().filter(|(s, _)| truths[*s].len() > 1).count();
    let mut rows = vec![];
    for (m, name) in names.iter().enumerate() {
        // The explanations' time alone, as the classification evaluation times it.
        let mut seconds = 0.0;
        let mut means = Means::default();
        let mut layer = None;
        let floor = FLOOR_NAMES.contains(&name.as_str());
        for (b, &(start, batch)) in batches.iter().enumerate() {
            on_progress(Progress {
                method: name.to_string(),
                done: m * batches.len() + b,
                total,
            });
            let inputs = scene_inputs(batch, start, &model.data_config, &model.device)?;
            // The matched boxes of this batch with their maps, for the curves: row in
            // the batch, map, the box's request.
            let mut curve_rows: Vec<usize> = vec![];
            let mut curve_maps: Vec<f32> = vec![];
            let mut requests: Vec<Vec<BoxRequest>> = vec![];
            let mut keep = |scene: usize, k: usize, map: &[f32]| {
                let d = &detections[scene][k];
                curve_rows.push(scene - start);
                curve_maps.extend_from_slice(map);
                requests.push(vec![BoxRequest {
                    bbox: d.bbox,
                    label: d.label,
                }]);
            };
            let in_batch = start..start + batch.len();
            if floor {
                let size = [SHAPE_IMAGE_SIZE as usize; 2];
                for (&(scene, k), &own) in &matched {
                    if in_batch.contains(&scene) {
                        // Seeded by the detection's place in the whole split.
                        let item = ((config.first_scene + scene) as u64) << 16 | k as u64;
                        let started = Instant::now();
                        let map = floor_map(name, size, config.seed, item);
                        seconds += started.elapsed().as_secs_f64();
                        add_box_metrics(&mut means, &map, size, own, &truths[scene])?;
                        keep(scene, k, &map);
                    }
                }
            } else {
                let options = DetectionOptions {
                    explain: ExplainOptions {
                        method: name.to_string(),
                        method_options: config.method_options.clone(),
                        ..ExplainOptions::default()
                    },
                    score_threshold: config.score_threshold,
                    max_boxes: usize::MAX,
                    ..DetectionOptions::default()
                };
                let started = Instant::now();
                let result = explain_detection(model, &inputs, &options)?;
                let values = result.maps.as_ref().map(|maps| maps.to_vec()).transpose()?;
                seconds += started.elapsed().as_secs_f64();
                layer = result.layer.clone();
                if let (Some(maps), Some(values)) = (&result.maps, values) {
                    let [_, h, w] = maps.dims();
                    if [h, w] != [SHAPE_IMAGE_SIZE as usize; 2] {
                        return Err(LumenError::InvalidArgument(format!(
                            "{name}: {h}x{w} maps for {0}x{0} scenes",
                            SHAPE_IMAGE_SIZE
                        )));
                    }
                    for (i, image) in result.images.iter().enumerate() {
                        let scene = start + i;
                        for (&k, row) in image.explained.iter().zip(image.rows.clone()) {
                            if let Some(&own) = matched.get(&(scene, k)) {
                                let map = &values[row * h * w..(row + 1) * h * w];
                                add_box_metrics(&mut means, map, [h, w], own, &truths[scene])?;
                                keep(scene, k, map);
                            }
                        }
                    }
                }
            }
            if let Some(curves) = &config.curves {
                let input = select_rows(&inputs.tensor, &curve_rows);
                add_curves(&mut means, model, input, curve_maps, &requests, curves)?;
            }
        }
        rows.push(means.into_row(name, layer, seconds / scenes.len() as f64));
    }
    on_progress(Progress {
        method: String::new(),
        done: total,
        total,
    });
    let accuracy = detection_accuracy(&detections, &truths)?;
    Ok(TaskEvaluation {
        recommendations: vec![],
        model: model.name.clone(),
        task: "detection".into(),
        images: scenes.len(),
        accuracy,
        explained: BTreeMap::from([
            ("confident_detections".to_string(), confident),
            ("matched_to_an_object".to_string(), matched.len()),
            ("matched_among_other_objects".to_string(), crowded),
        ]),
        methods: rows,
        accuracy_counts: Some(AccuracyCounts::Detection { detections, truths }),
    })
}

/// The segmentation bench: mIoU of the segmentor on `scenes`, and for each method and
/// floor, where the map of each scene's largest object's class (over its predicted
/// region) puts its evidence against that class's true pixels
/// (`SEGMENTATION_METRICS`).
pub fn evaluate_segmentor(
    model: &LoadedSegmentor,
    scenes: &[ShapeScene],
    config: &TaskEvaluationConfig,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TaskEvaluation> {
    let (names, batches, total) = plan(scenes, config)?;
    same_classes(model.num_classes(), &SCENE_CLASSES)?;
    // Each scene's class to explain: its largest object's.
    let classes: Vec<usize> = scenes
        .iter()
        .map(|s| {
            let largest = s
                .objects
                .iter()
                .max_by_key(|o| o.mask.iter().filter(|&&m| m).count());
            largest.map_or(1, |o| o.label + 1)
        })
        .collect();
    let requests_of = |start: usize, len: usize| -> Vec<SegmentationRequest> {
        classes[start..start + len]
            .iter()
            .map(|&c| SegmentationRequest::predicted(c))
            .collect()
    };
    // One forward per batch: the class maps for the mIoU, and the requests resolved
    // against the prediction for the curves' targets (the same for every method).
    let task = model.task();
    let mut iou = IouAccumulator::new(SCENE_CLASSES.len());
    let mut resolved: Vec<Vec<SegmentationRequest>> = Vec::with_capacity(batches.len());
    for &(start, batch) in &batches {
        let inputs = scene_inputs(batch, start, &model.data_config, &model.device)?;
        let output = {
            let _forward = profile::stage_on(stages::FORWARD, &model.device);
            model.model.forward(inputs.tensor)
        };
        let predictions = task.predict(&output)?;
        check_predictions_finite(&task, &predictions, &inputs.names)?;
        resolved.push(
            requests_of(start, batch.len())
                .into_iter()
                .zip(&predictions)
                .map(|(request, prediction)| task.resolve(request, prediction))
                .collect::<Result<Vec<_>>>()?,
        );
        for (prediction, scene) in predictions.iter().zip(batch) {
            let truth: Vec<usize> = scene.classes.iter().map(|&c| c as usize).collect();
            iou.add(&prediction.pixel_classes, &truth);
        }
    }
    let mut rows = vec![];
    for (m, name) in names.iter().enumerate() {
        // The explanations' time alone, as the classification evaluation times it.
        let mut seconds = 0.0;
        let mut means = Means::default();
        let method: Box<dyn Method<Segmentor>> = match name.as_str() {
            "random" => Box::new(RandomMap { seed: config.seed }),
            "center" => Box::new(CenterPrior::default()),
            other => lumen_methods::by_name::<Segmentor>(
                other,
                &crate::api::method_options(model, &config.method_options),
            )?,
        };
        let layer = method.layer(&model.model);
        for (b, &(start, batch)) in batches.iter().enumerate() {
            on_progress(Progress {
                method: name.to_string(),
                done: m * batches.len() + b,
                total,
            });
            let inputs = scene_inputs(batch, start, &model.data_config, &model.device)?;
            let options = ExplainOptions {
                method: name.to_string(),
                targets: Some(requests_of(start, batch.len())),
                method_options: config.method_options.clone(),
                ..ExplainOptions::default()
            };
            let started = Instant::now();
            let (_, results) = explain_with(model, &inputs, method.as_ref(), &options)?;
            seconds += started.elapsed().as_secs_f64();
            let _metrics = profile::stage(stages::METRICS);
            for ((result, scene), &class) in results.iter().zip(batch).zip(&classes[start..]) {
                let map = &result.heatmap.values;
                let (h, w) = (
                    result.heatmap.height as usize,
                    result.heatmap.width as usize,
                );
                let mask: Vec<bool> = scene.classes.iter().map(|&c| c as usize == class).collect();
                let side = SHAPE_IMAGE_SIZE as usize;
                if (h, w) != (side, side) {
                    return Err(LumenError::InvalidArgument(format!(
                        "{name}: a {h}x{w} map for a {side}x{side} scene"
                    )));
                }
                let region = Region::from_mask(side, side, mask)?;
                means.add(
                    "pointing_game",
                    pointing_game(map, &region, 0.0)? as u8 as f64,
                );
                means.add("relevance_mass", relevance_mass(map, &region)? as f64);
                means.add("relevance_rank", relevance_rank(map, &region)? as f64);
            }
            if let Some(curves) = &config.curves {
                let maps: Vec<f32> = results
                    .iter()
                    .flat_map(|r| r.heatmap.values.iter().copied())
                    .collect();
                add_curves(
                    &mut means,
                    model,
                    inputs.tensor.clone(),
                    maps,
                    &resolved[b],
                    curves,
                )?;
            }
        }
        rows.push(means.into_row(name, layer, seconds / scenes.len() as f64));
    }
    on_progress(Progress {
        method: String::new(),
        done: total,
        total,
    });
    Ok(TaskEvaluation {
        recommendations: vec![],
        model: model.name.clone(),
        task: "segmentation".into(),
        images: scenes.len(),
        accuracy: segmentation_accuracy(&iou),
        explained: BTreeMap::from([("scenes".to_string(), scenes.len())]),
        methods: rows,
        accuracy_counts: Some(AccuracyCounts::Segmentation(iou)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(method: &str, scores: &[(&str, f64)]) -> TaskMethodRow {
        TaskMethodRow {
            method: method.into(),
            layer: None,
            scores: scores.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            curves: BTreeMap::new(),
            seconds_per_image: 0.01,
            counts: BTreeMap::new(),
        }
    }

    /// A caution per number that does not beat a floor, in the metric's direction (a
    /// tie does not beat it), none for the floors themselves, and none from a metric
    /// on which every row scores the same.
    #[test]
    fn cautions_name_each_number_a_floor_matches_or_beats() {
        let evaluation = TaskEvaluation {
            model: "shapes-det".into(),
            task: "detection".into(),
            images: 4,
            accuracy: BTreeMap::new(),
            explained: BTreeMap::new(),
            methods: vec![
                row(
                    "gradcam",
                    &[
                        ("pointing_game", 0.5),
                        ("deletion_auc", 0.3),
                        ("energy_in_box", 0.2),
                    ],
                ),
                row(
                    "eigencam",
                    &[
                        ("pointing_game", 0.9),
                        ("deletion_auc", 0.1),
                        ("energy_in_box", 0.2),
                    ],
                ),
                row(
                    "random",
                    &[
                        ("pointing_game", 0.2),
                        ("deletion_auc", 0.2),
                        ("energy_in_box", 0.2),
                    ],
                ),
                row(
                    "center",
                    &[
                        ("pointing_game", 0.5),
                        ("deletion_auc", 0.4),
                        ("energy_in_box", 0.2),
                    ],
                ),
            ],
            accuracy_counts: None,
            recommendations: vec![],
        };
        let cautions: Vec<(String, String)> = evaluation
            .cautions()
            .into_iter()
            .inspect(|r| assert_eq!(r.use_case, "caution"))
            .map(|r| (r.method, r.reason))
            .collect();
        let expected = [
            (
                "gradcam",
                "pointing_game 0.500 does not beat the `center` floor (0.500; higher is better)",
            ),
            (
                "gradcam",
                "deletion_auc 0.300 does not beat the `random` floor (0.200; lower is better)",
            ),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(m, r)| (m.to_string(), r.to_string()))
            .collect();
        assert_eq!(cautions, expected);
    }
}
