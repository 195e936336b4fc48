//! The evaluation bench: every method x metric over generated images with known
//! ground truth, measured against two floors (`random`, `center`), with a
//! recommendation per use case derived from the numbers.

use std::collections::BTreeMap;
use std::time::Instant;

use lumen_core::burn::module::Module;
use lumen_core::{
    ClassLogit, ClassProbability, Classifier, DataConfig, Device, LumenError, Result, Tensor,
    predicted_classes,
};
use lumen_methods::{Baseline, METHOD_NAMES, Method, MethodOptions, by_name};
use lumen_metrics::{
    CenterPrior, CurveConfig, CurveKind, LocalizationConfig, RandomMap, RandomizationConfig,
    RandomizationCurve, Region, RoadConfig, RoadOrder, SensitivityConfig, confidence_change, gini,
    localization, mean_rows, model_randomization, perturbation_curve, road, sensitivity,
};
use lumen_models::shapes::ShapeSample;
use lumen_report::{escape, line_plot, table};
use serde::Serialize;

/// Metric keys, in report order.
pub const METRIC_NAMES: &[&str] = &[
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
    "average_drop",
    "increase_rate",
    "pointing_game",
    "energy_pointing_game",
    "iou",
    "relevance_mass",
    "relevance_rank",
    "max_sensitivity",
    "avg_sensitivity",
    "randomization_spearman",
    "randomization_pass",
    "gini",
    "completeness_gap",
];

/// The floors every method is measured against.
pub const FLOOR_NAMES: [&str; 2] = ["random", "center"];

/// Metrics where a lower value is better.
const LOWER_IS_BETTER: &[&str] = &[
    "deletion_auc",
    "road_morf",
    "average_drop",
    "max_sensitivity",
    "avg_sensitivity",
    "randomization_spearman",
    "completeness_gap",
];

/// What a metric measures, for the report.
fn describe(metric: &str) -> &'static str {
    match metric {
        "deletion_auc" => "area under the deletion curve / original score (lower: more faithful)",
        "insertion_auc" => {
            "area under the insertion curve / original score (higher: more faithful)"
        }
        "road_morf" => "ROAD accuracy, most relevant removed first (lower: more faithful)",
        "road_lerf" => "ROAD accuracy, least relevant removed first (higher: more faithful)",
        "average_drop" => "average drop in confidence through the map, % (lower is better)",
        "increase_rate" => "share of images whose confidence rises through the map",
        "pointing_game" => "share of maxima on the object (15 px tolerance)",
        "energy_pointing_game" => "share of the map's energy inside the box",
        "iou" => "IoU of the map above half its maximum with the mask",
        "relevance_mass" => "share of relevance inside the mask",
        "relevance_rank" => "share of the top-K pixels on the mask (K = mask size)",
        "max_sensitivity" => {
            "largest relative map change under small input noise (lower: more stable)"
        }
        "avg_sensitivity" => {
            "mean relative map change under small input noise (lower: more stable)"
        }
        "randomization_spearman" => {
            "Spearman correlation with the map of a fully randomised model (lower: passes)"
        }
        "randomization_pass" => "cascading randomisation sanity check passed",
        "gini" => "sparseness of the map (Gini index)",
        "completeness_gap" => "|sum of attributions - output change| (Integrated Gradients)",
        _ => "",
    }
}

/// Settings of the bench.
#[derive(Clone, Debug)]
pub struct EvaluationConfig {
    /// Method names (`METHOD_NAMES`, `random`, `center`).
    pub methods: Vec<String>,
    /// Metric keys (`METRIC_NAMES`).
    pub metrics: Vec<String>,
    /// Images per explanation batch.
    pub batch_size: usize,
    /// Steps of the deletion and insertion curves.
    pub curve_steps: usize,
    /// What deleted pixels become. RISE uses black; the default is each image's mean
    /// colour, because black pixels scattered over an image destroy it whatever their
    /// order (on the shapes data a random order then deletes as well as GradCAM).
    pub deletion_baseline: Baseline,
    /// What the insertion curve starts from. RISE uses a blurred copy; the default is
    /// the mean colour, because a blurred large shape is still recognised (every
    /// insertion curve then starts near 1).
    pub insertion_baseline: Baseline,
    /// Images (the first ones) used by the metrics that re-explain many times:
    /// sensitivity and the randomisation check.
    pub detail_samples: usize,
    /// Sensitivity settings.
    pub sensitivity: SensitivityConfig,
    /// ROAD settings.
    pub road: RoadConfig,
    /// Localization settings.
    pub localization: LocalizationConfig,
    /// Randomisation check settings.
    pub randomization: RandomizationConfig,
    /// Options of the methods (layer, steps, ...).
    pub method_options: MethodOptions,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        Self {
            methods: [
                "gradcam",
                "gradcam++",
                "layercam",
                "eigencam",
                "saliency",
                "ig",
            ]
            .iter()
            .chain(FLOOR_NAMES.iter())
            .map(|s| s.to_string())
            .collect(),
            metrics: METRIC_NAMES.iter().map(|s| s.to_string()).collect(),
            batch_size: 16,
            curve_steps: 32,
            deletion_baseline: Baseline::Mean,
            insertion_baseline: Baseline::Mean,
            detail_samples: 16,
            sensitivity: SensitivityConfig {
                samples: 5,
                ..SensitivityConfig::default()
            },
            road: RoadConfig::default(),
            localization: LocalizationConfig::default(),
            randomization: RandomizationConfig::default(),
            method_options: MethodOptions::default(),
        }
    }
}

/// A metric value: a number, or a pass/fail verdict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Score {
    /// A number.
    Value(f64),
    /// A verdict.
    Pass(bool),
}

impl Score {
    /// The value as a number (a verdict is 1 or 0).
    pub fn number(self) -> f64 {
        match self {
            Self::Value(v) => v,
            Self::Pass(p) => p as u8 as f64,
        }
    }
}

/// One method's results.
#[derive(Clone, Debug, Serialize)]
pub struct MethodEvaluation {
    /// Method name.
    pub name: String,
    /// Whether this is a floor (`random`, `center`).
    pub floor: bool,
    /// Metric values, averaged over images.
    pub scores: BTreeMap<String, Score>,
    /// Explanation time per image, seconds.
    pub seconds_per_image: f64,
    /// Mean deletion curve.
    pub deletion_curve: Vec<f32>,
    /// Mean insertion curve.
    pub insertion_curve: Vec<f32>,
    /// ROAD accuracy per percentage, most relevant first.
    pub road_morf_curve: Vec<f32>,
    /// ROAD accuracy per percentage, least relevant first.
    pub road_lerf_curve: Vec<f32>,
    /// The cascading randomisation curve.
    pub randomization: Option<RandomizationCurve>,
}

/// A recommendation for a use case.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    /// The use case (`faithful`, `localized`, `stable`, `cheapest`) or `caution`.
    pub use_case: String,
    /// The method recommended (or cautioned against).
    pub method: String,
    /// Why, with the numbers.
    pub reason: String,
}

/// The bench's results.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Model name.
    pub model: String,
    /// Images evaluated.
    pub samples: usize,
    /// Images used for sensitivity and randomisation.
    pub detail_samples: usize,
    /// The model's accuracy on the images.
    pub accuracy: f32,
    /// Fractions of pixels at the points of the deletion and insertion curves.
    pub fractions: Vec<f32>,
    /// ROAD percentages.
    pub road_percentages: Vec<f32>,
    /// Per method, in the order asked.
    pub methods: Vec<MethodEvaluation>,
    /// Derived from the numbers.
    pub recommendations: Vec<Recommendation>,
}

/// Where the bench is, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The method being evaluated.
    pub method: String,
    /// Units done.
    pub done: usize,
    /// Units in all.
    pub total: usize,
}

/// A method by name: the attribution methods and the two floors.
pub fn method_by_name<M: Classifier + 'static>(
    name: &str,
    options: &MethodOptions,
) -> Result<Box<dyn Method<M>>> {
    match name {
        "random" => Ok(Box::new(RandomMap {
            seed: options.seed.unwrap_or(0),
        })),
        "center" => Ok(Box::new(CenterPrior::default())),
        other => by_name::<M>(other, options).map_err(|e| match e {
            LumenError::InvalidArgument(message) if message.contains("unknown method") => {
                LumenError::InvalidArgument(format!("{message}, random, center"))
            }
            e => e,
        }),
    }
}

fn check_names(kind: &str, names: &[String], valid: &[&str]) -> Result<()> {
    if let Some(bad) = names.iter().find(|n| !valid.contains(&n.as_str())) {
        return Err(LumenError::InvalidArgument(format!(
            "unknown {kind} `{bad}`; valid {kind}s: {}",
            valid.join(", ")
        )));
    }
    if names.is_empty() {
        return Err(LumenError::InvalidArgument(format!("no {kind} given")));
    }
    Ok(())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Run the bench on `samples` (generated images with masks and boxes).
pub fn evaluate<M>(
    model: &M,
    model_name: &str,
    samples: &[ShapeSample],
    data_config: &DataConfig,
    config: &EvaluationConfig,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation>
where
    M: Classifier + Module + Clone + 'static,
{
    let mut valid_methods: Vec<&str> = METHOD_NAMES.to_vec();
    valid_methods.extend(FLOOR_NAMES);
    check_names("method", &config.methods, &valid_methods)?;
    check_names("metric", &config.metrics, METRIC_NAMES)?;
    if samples.is_empty() {
        return Err(LumenError::InvalidArgument(
            "--samples must be at least 1".into(),
        ));
    }
    let wants = |m: &str| config.metrics.iter().any(|x| x == m);
    let [_, h, w] = model.input_shape();
    let regions: Vec<Region> = samples
        .iter()
        .map(|s| {
            let (sw, sh) = s.image.dimensions();
            if [sh as usize, sw as usize] != [h, w] {
                return Err(LumenError::shape(
                    "evaluation images",
                    format!("the model's input size {h}x{w}"),
                    format!("{sh}x{sw}"),
                ));
            }
            Region::from_mask(h, w, s.mask.clone())
        })
        .collect::<Result<_>>()?;

    // Inputs and predictions once for all methods.
    let batch_size = config.batch_size.max(1);
    let mut batches: Vec<(Tensor<4>, Vec<usize>, std::ops::Range<usize>)> = Vec::new();
    let mut correct = 0;
    for start in (0..samples.len()).step_by(batch_size) {
        let range = start..(start + batch_size).min(samples.len());
        let images: Vec<_> = samples[range.clone()]
            .iter()
            .map(|s| s.image.clone())
            .collect();
        let input = data_config.to_tensor(&images, device)?;
        let predicted = predicted_classes(&model.forward(input.clone()));
        correct += predicted
            .iter()
            .zip(&samples[range.clone()])
            .filter(|(p, s)| **p == s.label)
            .count();
        batches.push((input, predicted, range));
    }
    let detail = config.detail_samples.clamp(1, samples.len());
    let detail_images: Vec<_> = samples[..detail].iter().map(|s| s.image.clone()).collect();
    let detail_input = data_config.to_tensor(&detail_images, device)?;
    let detail_classes = predicted_classes(&model.forward(detail_input.clone()));

    let black = Baseline::Black {
        mean: data_config.mean,
        std: data_config.std,
    };
    let deletion = CurveConfig {
        steps: config.curve_steps,
        baseline: config.deletion_baseline.clone(),
        batch_size: 64,
    };
    let insertion = CurveConfig {
        steps: config.curve_steps,
        baseline: config.insertion_baseline.clone(),
        batch_size: 64,
    };
    let needs_detail = wants("max_sensitivity")
        || wants("avg_sensitivity")
        || wants("randomization_spearman")
        || wants("randomization_pass");
    let units_per_method = batches.len() + needs_detail as usize;
    let total = units_per_method * config.methods.len();
    let mut fractions = Vec::new();
    let mut results = Vec::new();
    for (m, name) in config.methods.iter().enumerate() {
        let method = method_by_name::<M>(name, &config.method_options)?;
        let mut per_image: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut push =
            |key: &'static str, value: f64| per_image.entry(key).or_default().push(value);
        let (mut deletion_rows, mut insertion_rows) = (Vec::new(), Vec::new());
        let (mut morf, mut lerf) = (Vec::new(), Vec::new());
        let mut seconds = 0.0;
        for (b, (input, classes, range)) in batches.iter().enumerate() {
            let started = Instant::now();
            let explanation = method.explain(model, input.clone(), &ClassLogit(classes.clone()))?;
            let heatmaps = explanation.heatmaps.clone().resize([h, w]);
            let maps = heatmaps.to_vec();
            seconds += started.elapsed().as_secs_f64();
            let probability = ClassProbability(classes.clone());
            for (map, region) in maps.chunks(h * w).zip(&regions[range.clone()]) {
                let l = localization(map, region, &config.localization)?;
                push("pointing_game", l.pointing_game as u8 as f64);
                push("energy_pointing_game", l.energy_pointing_game as f64);
                push("iou", l.iou as f64);
                push("relevance_mass", l.relevance_mass as f64);
                push("relevance_rank", l.relevance_rank as f64);
                push("gini", gini(map) as f64);
            }
            if wants("deletion_auc") {
                let curve = perturbation_curve(
                    model,
                    input,
                    &heatmaps,
                    &probability,
                    CurveKind::Deletion,
                    &deletion,
                )?;
                curve
                    .normalized_auc
                    .iter()
                    .for_each(|&a| push("deletion_auc", a as f64));
                fractions = curve.fractions.clone();
                deletion_rows.extend(curve.scores);
            }
            if wants("insertion_auc") {
                let curve = perturbation_curve(
                    model,
                    input,
                    &heatmaps,
                    &probability,
                    CurveKind::Insertion,
                    &insertion,
                )?;
                curve
                    .normalized_auc
                    .iter()
                    .for_each(|&a| push("insertion_auc", a as f64));
                fractions = curve.fractions.clone();
                insertion_rows.extend(curve.scores);
            }
            for (order, key, rows) in [
                (RoadOrder::MoRF, "road_morf", &mut morf),
                (RoadOrder::LeRF, "road_lerf", &mut lerf),
            ] {
                if wants(key) {
                    let result = road(model, input, &heatmaps, classes, order, &config.road)?;
                    for kept in &result.kept {
                        let accuracy =
                            kept.iter().filter(|&&k| k).count() as f64 / kept.len() as f64;
                        push(key, accuracy);
                        rows.push(kept.iter().map(|&k| k as u8 as f32).collect::<Vec<_>>());
                    }
                }
            }
            if wants("average_drop") || wants("increase_rate") {
                let change = confidence_change(model, input, &heatmaps, &probability, &black)?;
                change
                    .drop
                    .iter()
                    .for_each(|&d| push("average_drop", d as f64));
                change
                    .increase
                    .iter()
                    .for_each(|&i| push("increase_rate", i as u8 as f64));
            }
            if let Some(deltas) = &explanation.convergence_delta {
                deltas
                    .iter()
                    .for_each(|&d| push("completeness_gap", d.abs() as f64));
            }
            progress(Progress {
                method: name.clone(),
                done: m * units_per_method + b + 1,
                total,
            });
        }
        let mut randomization = None;
        if needs_detail {
            let target = ClassLogit(detail_classes.clone());
            if wants("max_sensitivity") || wants("avg_sensitivity") {
                let s = sensitivity(
                    model,
                    method.as_ref(),
                    &detail_input,
                    &target,
                    &config.sensitivity,
                )?;
                s.max
                    .iter()
                    .for_each(|&v| push("max_sensitivity", v as f64));
                s.average
                    .iter()
                    .for_each(|&v| push("avg_sensitivity", v as f64));
            }
            if wants("randomization_spearman") || wants("randomization_pass") {
                randomization = Some(model_randomization(
                    model,
                    method.as_ref(),
                    &detail_input,
                    &target,
                    &config.randomization,
                )?);
            }
            progress(Progress {
                method: name.clone(),
                done: (m + 1) * units_per_method,
                total,
            });
        }
        let mut scores: BTreeMap<String, Score> = per_image
            .iter()
            .filter(|(k, _)| wants(k))
            .map(|(k, v)| (k.to_string(), Score::Value(mean(v))))
            .collect();
        if let Some(curve) = &randomization {
            if wants("randomization_spearman") {
                scores.insert(
                    "randomization_spearman".into(),
                    Score::Value(curve.score as f64),
                );
            }
            if wants("randomization_pass") {
                scores.insert("randomization_pass".into(), Score::Pass(curve.passed));
            }
        }
        results.push(MethodEvaluation {
            name: name.clone(),
            floor: FLOOR_NAMES.contains(&name.as_str()),
            scores,
            seconds_per_image: seconds / samples.len() as f64,
            deletion_curve: mean_rows(&deletion_rows),
            insertion_curve: mean_rows(&insertion_rows),
            road_morf_curve: mean_rows(&morf),
            road_lerf_curve: mean_rows(&lerf),
            randomization,
        });
    }
    let recommendations = recommend(&results);
    Ok(Evaluation {
        model: model_name.to_string(),
        samples: samples.len(),
        detail_samples: detail,
        accuracy: correct as f32 / samples.len() as f32,
        fractions,
        road_percentages: config.road.percentages.clone(),
        methods: results,
        recommendations,
    })
}

fn score(m: &MethodEvaluation, key: &str) -> Option<f64> {
    m.scores.get(key).map(|s| s.number())
}

/// Winners per use case among the real methods, and cautions where a method does not
/// beat a floor or fails the sanity check. Everything comes from the numbers.
fn recommend(results: &[MethodEvaluation]) -> Vec<Recommendation> {
    let real: Vec<&MethodEvaluation> = results.iter().filter(|m| !m.floor).collect();
    let floors: Vec<&MethodEvaluation> = results.iter().filter(|m| m.floor).collect();
    let mut out = Vec::new();
    let best = |value: &dyn Fn(&MethodEvaluation) -> Option<f64>| {
        real.iter()
            .filter_map(|m| value(m).map(|v| (*m, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let faithfulness =
        |m: &MethodEvaluation| Some(score(m, "insertion_auc")? - score(m, "deletion_auc")?);
    if let Some((m, v)) = best(&faithfulness) {
        out.push(Recommendation {
            use_case: "faithful".into(),
            method: m.name.clone(),
            reason: format!(
                "largest insertion - deletion AUC gap ({v:.3}: insertion {:.3}, deletion {:.3})",
                score(m, "insertion_auc").unwrap_or_default(),
                score(m, "deletion_auc").unwrap_or_default()
            ),
        });
    }
    let localized = |m: &MethodEvaluation| {
        Some(score(m, "pointing_game")? + 1e-3 * score(m, "energy_pointing_game").unwrap_or(0.0))
    };
    if let Some((m, _)) = best(&localized) {
        out.push(Recommendation {
            use_case: "localized".into(),
            method: m.name.clone(),
            reason: format!(
                "highest pointing game ({:.3}; energy pointing game {:.3})",
                score(m, "pointing_game").unwrap_or_default(),
                score(m, "energy_pointing_game").unwrap_or_default()
            ),
        });
    }
    if let Some((m, v)) = best(&|m: &MethodEvaluation| score(m, "max_sensitivity").map(|s| -s)) {
        out.push(Recommendation {
            use_case: "stable".into(),
            method: m.name.clone(),
            reason: format!("lowest max-sensitivity ({:.3})", -v),
        });
    }
    if let Some((m, v)) = best(&|m: &MethodEvaluation| Some(-m.seconds_per_image)) {
        out.push(Recommendation {
            use_case: "cheapest".into(),
            method: m.name.clone(),
            reason: format!("fastest: {:.1} ms per image", -v * 1e3),
        });
    }
    for m in &real {
        if let Some(Score::Pass(false)) = m.scores.get("randomization_pass") {
            out.push(Recommendation {
                use_case: "caution".into(),
                method: m.name.clone(),
                reason: format!(
                    "fails the randomisation sanity check (Spearman {:.2} with the map of a randomised model)",
                    score(m, "randomization_spearman").unwrap_or_default()
                ),
            });
        }
        for floor in &floors {
            for (key, label) in [
                ("pointing_game", "pointing game"),
                ("insertion_auc", "insertion AUC"),
            ] {
                if let (Some(v), Some(f)) = (score(m, key), score(floor, key))
                    && v <= f
                {
                    out.push(Recommendation {
                        use_case: "caution".into(),
                        method: m.name.clone(),
                        reason: format!(
                            "{label} {v:.3} does not beat the `{}` floor ({f:.3})",
                            floor.name
                        ),
                    });
                }
            }
        }
    }
    out
}

impl Evaluation {
    /// `{"methods": {NAME: {METRIC: value}}, "model": ..., "samples": N}`.
    pub fn summary_json(&self) -> serde_json::Value {
        let methods: serde_json::Map<String, serde_json::Value> = self
            .methods
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    serde_json::to_value(&m.scores).expect("scores serialise"),
                )
            })
            .collect();
        serde_json::json!({
            "methods": methods,
            "model": self.model,
            "samples": self.samples,
        })
    }

    /// Metrics present in the results, in report order.
    pub fn metric_keys(&self) -> Vec<&'static str> {
        METRIC_NAMES
            .iter()
            .copied()
            .filter(|k| self.methods.iter().any(|m| m.scores.contains_key(*k)))
            .collect()
    }

    /// The evaluation as an HTML section: recommendations, a table per metric
    /// (best first), deletion/insertion and ROAD curves and the randomisation curves
    /// as plotly charts. Needs a page with plotly.js (`lumen_report::page`).
    pub fn html_section(&self) -> String {
        let mut html = format!(
            "<section><h2>Evaluation of {} on {} generated images</h2><p>model accuracy on these images: {:.1}%; sensitivity and randomisation on the first {} images.</p>",
            escape(&self.model),
            self.samples,
            100.0 * self.accuracy,
            self.detail_samples
        );
        html.push_str("<h3>Recommendations</h3><ul class=advice>");
        for r in &self.recommendations {
            html.push_str(&format!(
                "<li><b>{}</b>: {} — {}</li>",
                escape(&r.use_case),
                escape(&r.method),
                escape(&r.reason)
            ));
        }
        html.push_str("</ul><h3>Metrics</h3><div class=row>");
        for key in self.metric_keys() {
            let lower = LOWER_IS_BETTER.contains(&key);
            let mut rows: Vec<&MethodEvaluation> = self
                .methods
                .iter()
                .filter(|m| m.scores.contains_key(key))
                .collect();
            rows.sort_by(|a, b| {
                let (x, y) = (score(a, key).unwrap_or(0.0), score(b, key).unwrap_or(0.0));
                if lower {
                    x.total_cmp(&y)
                } else {
                    y.total_cmp(&x)
                }
            });
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|m| {
                    let value = match m.scores[key] {
                        Score::Value(v) => format!("{v:.3}"),
                        Score::Pass(p) => if p { "pass" } else { "fail" }.to_string(),
                    };
                    let name = if m.floor {
                        format!("{} (floor)", m.name)
                    } else {
                        m.name.clone()
                    };
                    vec![name, value]
                })
                .collect();
            html.push_str(&format!(
                "<div title=\"{}\">{}</div>",
                escape(describe(key)),
                table(
                    key,
                    &[
                        "method",
                        if lower {
                            "value (lower better)"
                        } else {
                            "value"
                        }
                    ],
                    &cells
                )
            ));
        }
        html.push_str("</div><h3>Cost</h3>");
        let cost: Vec<Vec<String>> = self
            .methods
            .iter()
            .map(|m| vec![m.name.clone(), format!("{:.1}", m.seconds_per_image * 1e3)])
            .collect();
        html.push_str(&table(
            "explanation time",
            &["method", "ms per image"],
            &cost,
        ));
        html.push_str("<h3>Curves</h3><div class=row>");
        let fractions: Vec<f64> = self.fractions.iter().map(|&f| f as f64).collect();
        let percentages: Vec<f64> = self.road_percentages.iter().map(|&p| p as f64).collect();
        let series = |curve: &dyn Fn(&MethodEvaluation) -> &Vec<f32>, x: &[f64]| {
            self.methods
                .iter()
                .filter(|m| !curve(m).is_empty())
                .map(|m| {
                    (
                        m.name.clone(),
                        x.to_vec(),
                        curve(m).iter().map(|&v| v as f64).collect(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let charts = [
            (
                "deletion",
                "fraction of pixels removed",
                "target probability",
                series(&|m| &m.deletion_curve, &fractions),
            ),
            (
                "insertion",
                "fraction of pixels inserted",
                "target probability",
                series(&|m| &m.insertion_curve, &fractions),
            ),
            (
                "ROAD, most relevant first",
                "% of pixels imputed",
                "accuracy",
                series(&|m| &m.road_morf_curve, &percentages),
            ),
            (
                "ROAD, least relevant first",
                "% of pixels imputed",
                "accuracy",
                series(&|m| &m.road_lerf_curve, &percentages),
            ),
        ];
        for (i, (title, x, y, data)) in charts.iter().enumerate() {
            if !data.is_empty() {
                html.push_str(&format!(
                    "<div class=plot>{}</div>",
                    line_plot(title, x, y, data).to_inline_html(Some(&format!("curve-{i}")))
                ));
            }
        }
        let sanity: Vec<(String, Vec<f64>, Vec<f64>)> = self
            .methods
            .iter()
            .filter_map(|m| {
                let curve = m.randomization.as_ref()?;
                Some((
                    m.name.clone(),
                    (1..=curve.spearman.len()).map(|i| i as f64).collect(),
                    curve.spearman.iter().map(|&v| v as f64).collect(),
                ))
            })
            .collect();
        if let Some(layers) = self.methods.iter().find_map(|m| m.randomization.as_ref()) {
            html.push_str(&format!(
                "<div class=plot>{}</div>",
                line_plot(
                    "cascading randomisation (Spearman with the original map)",
                    "groups randomised, from the top",
                    "Spearman",
                    &sanity
                )
                .to_inline_html(Some("sanity-spearman"))
            ));
            html.push_str(&format!(
                "</div><p>randomisation steps, from the top: {}</p>",
                escape(&layers.layers.join(" → "))
            ));
        } else {
            html.push_str("</div>");
        }
        html.push_str("</section>");
        html
    }
}
