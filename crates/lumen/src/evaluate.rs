//! The evaluation bench: every method x metric over generated images with known
//! ground truth, measured against two floors (`random`, `center`), with
//! recommendations derived from the table. The metrics are
//! [`lumen_metrics::Metric`]s: the bench is a loop over them.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::api::name_non_finite;
use lumen_core::burn::module::Module;
use lumen_core::profile::{self, stages};
use lumen_core::{
    Classifier, DataConfig, Device, LumenError, Region, Result, Tensor, predicted_classes,
};
use lumen_methods::{
    Baseline, BaselineKind, Explanation, Method, MethodOptions, by_name, method_names,
};
use lumen_metrics::{
    CenterPrior, CurveConfig, LocalizationConfig, MethodRow, Metric, MetricCurve, MetricInput,
    MetricKey, RandomMap, Recommendation, Scope, Score, mean_rows, recommend, standard_metrics,
};
use lumen_models::shapes::ShapeSample;
use lumen_models::{LoadedModel, ZooModel};
use lumen_report::{CurveChart, EvaluationView, MetricColumn};
use serde::{Deserialize, Serialize};

pub use lumen_metrics::{
    MetricSettings, RandomizationConfig, RoadConfig, Score as MetricScore, SensitivityConfig,
};

/// The floors every method is measured against.
pub const FLOOR_NAMES: [&str; 2] = ["random", "center"];

/// Every metric key the bench knows, in report order.
pub fn metric_keys() -> Vec<MetricKey> {
    // The keys do not depend on the model type: read them off any instantiation.
    standard_metrics::<lumen_models::ResNet>(&EvaluationConfig::default().settings)
        .iter()
        .flat_map(|m| m.keys().iter().copied())
        .collect()
}

/// The names of [`metric_keys`].
pub fn metric_names() -> Vec<&'static str> {
    metric_keys().into_iter().map(|k| k.name).collect()
}

/// Settings of the bench.
#[derive(Clone, Debug)]
pub struct EvaluationConfig {
    /// Method names (the registry's, `random`, `center`).
    pub methods: Vec<String>,
    /// Metric keys ([`metric_names`]).
    pub metrics: Vec<String>,
    /// Images per explanation batch.
    pub batch_size: usize,
    /// Images (the first ones) used by the metrics that re-explain many times:
    /// sensitivity and the randomisation check.
    pub detail_samples: usize,
    /// Settings of the metrics.
    pub settings: MetricSettings,
    /// Options of the methods (layer, steps, ...).
    pub method_options: MethodOptions,
}

/// What deleted pixels become and what insertion starts from, by default: each
/// image's mean colour rather than RISE's black / blur, because black pixels scattered
/// over an image destroy it whatever their order, and a blurred large shape is still
/// recognised (see `docs/metrics.md`).
pub const DEFAULT_CURVE_BASELINE: BaselineKind = BaselineKind::Mean;

impl Default for EvaluationConfig {
    fn default() -> Self {
        let mean_std = ([0.5; 3], [0.5; 3]);
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
            metrics: vec![],
            batch_size: 16,
            detail_samples: 16,
            settings: MetricSettings {
                deletion: CurveConfig {
                    steps: 32,
                    baseline: DEFAULT_CURVE_BASELINE.with(mean_std.0, mean_std.1, None),
                    batch_size: None,
                },
                insertion: CurveConfig {
                    steps: 32,
                    baseline: DEFAULT_CURVE_BASELINE.with(mean_std.0, mean_std.1, None),
                    batch_size: None,
                },
                road: RoadConfig::default(),
                localization: LocalizationConfig::default(),
                sensitivity: SensitivityConfig {
                    samples: 5,
                    ..SensitivityConfig::default()
                },
                randomization: RandomizationConfig::default(),
                confidence_baseline: Baseline::Black {
                    mean: mean_std.0,
                    std: mean_std.1,
                },
            },
            method_options: MethodOptions::default(),
        }
    }
}

/// The bench's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    /// Model name.
    pub model: String,
    /// Images evaluated.
    pub samples: usize,
    /// Images used for sensitivity and randomisation.
    pub detail_samples: usize,
    /// The model's accuracy on the images.
    pub accuracy: f32,
    /// The metric keys evaluated, in report order.
    #[serde(skip)]
    pub keys: Vec<MetricKey>,
    /// Per method, in the order asked.
    pub methods: Vec<MethodRow>,
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
            LumenError::UnknownMethod { name, mut valid } => {
                valid.extend(FLOOR_NAMES.map(String::from));
                LumenError::UnknownMethod { name, valid }
            }
            e => e,
        }),
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Values, verdicts and curve rows of one method, gathered over batches.
#[derive(Default)]
struct Gathered {
    values: BTreeMap<&'static str, Vec<f64>>,
    verdicts: BTreeMap<&'static str, bool>,
    curves: BTreeMap<&'static str, MetricCurve>,
}

impl Gathered {
    fn add(&mut self, computed: lumen_metrics::MetricValues) {
        for (key, values) in computed.values {
            self.values.entry(key).or_default().extend(values);
        }
        self.verdicts.extend(computed.verdicts);
        for (key, curve) in computed.curves {
            let entry = self.curves.entry(key).or_insert_with(|| MetricCurve {
                x: curve.x.clone(),
                rows: vec![],
                labels: curve.labels.clone(),
            });
            entry.rows.extend(curve.rows);
        }
    }
}

/// Run the bench on `samples` (generated images with masks and boxes); the detail
/// metrics (sensitivity, randomisation) on the first `config.detail_samples` of them.
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
    let detail = samples.len().min(config.detail_samples.max(1));
    evaluate_part(
        model,
        model_name,
        samples,
        &samples[..detail],
        data_config,
        config,
        device,
        progress,
    )
}

/// [`evaluate`] with the detail metrics on `detail_samples` (none: not measured):
/// one part of a split run, whose parts [`merge_evaluations`] joins. A split gives the
/// detail images to one part, so that its verdicts are those of one run.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_part<M>(
    model: &M,
    model_name: &str,
    samples: &[ShapeSample],
    detail_samples: &[ShapeSample],
    data_config: &DataConfig,
    config: &EvaluationConfig,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation>
where
    M: Classifier + Module + Clone + 'static,
{
    let metrics = standard_metrics::<M>(&config.settings);
    let known: Vec<&str> = metrics
        .iter()
        .flat_map(|m| m.keys())
        .map(|k| k.name)
        .collect();
    let wanted: Vec<&str> = if config.metrics.is_empty() {
        known.clone()
    } else {
        config.metrics.iter().map(String::as_str).collect()
    };
    if let Some(bad) = wanted.iter().find(|n| !known.contains(n)) {
        return Err(LumenError::unknown_choice("metric", bad, &metric_names()));
    }
    if config.methods.is_empty() {
        return Err(LumenError::InvalidArgument("no method to evaluate".into()));
    }
    if samples.is_empty() {
        return Err(LumenError::InvalidArgument(
            "the evaluation needs at least 1 image".into(),
        ));
    }
    // Every method is built (and so checked) once, before any work.
    let methods: Vec<Box<dyn Method<M>>> = config
        .methods
        .iter()
        .map(|name| method_by_name::<M>(name, &config.method_options))
        .collect::<Result<_>>()?;
    let metrics: Vec<&dyn Metric<M>> = metrics
        .iter()
        .map(|m| m.as_ref())
        .filter(|m| m.keys().iter().any(|k| wanted.contains(&k.name)))
        .collect();
    let keys: Vec<MetricKey> = metrics
        .iter()
        .flat_map(|m| m.keys().iter().copied())
        .filter(|k| wanted.contains(&k.name))
        .collect();
    let [_, h, w] = model.input_shape();
    let region_of = |s: &ShapeSample| {
        let (sw, sh) = s.image.dimensions();
        if [sh as usize, sw as usize] != [h, w] {
            return Err(LumenError::shape(
                "evaluation images",
                format!(
                    "the model's input size {h}x{w} (the generated shapes are {sw}x{sh} with \
                     4 classes: evaluate a model trained on them, such as the bundled \
                     shapes-cnn and shapes-vit, or your own at that size)"
                ),
                format!("{sh}x{sw}"),
            ));
        }
        Region::from_mask(h, w, s.mask.clone())
    };
    let regions: Vec<Region> = samples.iter().map(region_of).collect::<Result<_>>()?;
    let detail_regions: Vec<Region> = detail_samples
        .iter()
        .map(region_of)
        .collect::<Result<_>>()?;

    // Inputs and predictions once for all methods.
    let batch_size = config.batch_size.max(1);
    let mut batches: Vec<(Tensor<4>, Vec<usize>, std::ops::Range<usize>)> = Vec::new();
    let mut correct = 0;
    for range in lumen_core::row_chunks(samples.len(), batch_size) {
        let images: Vec<_> = samples[range.clone()]
            .iter()
            .map(|s| s.image.clone())
            .collect();
        let input = data_config.to_tensor(&images, device)?;
        let logits = {
            let _forward = profile::stage_on(stages::FORWARD, device);
            model.forward(input.clone())
        };
        let predicted = finite_predictions(logits, "image", range.start)?;
        correct += predicted
            .iter()
            .zip(&samples[range.clone()])
            .filter(|(p, s)| **p == s.label)
            .count();
        batches.push((input, predicted, range));
    }
    let detail = detail_samples.len();
    let needs_detail = detail > 0 && metrics.iter().any(|m| m.scope() == Scope::Detail);
    let detail_batch = if needs_detail {
        let images: Vec<_> = detail_samples.iter().map(|s| s.image.clone()).collect();
        let input = data_config.to_tensor(&images, device)?;
        let logits = {
            let _forward = profile::stage_on(stages::FORWARD, device);
            model.forward(input.clone())
        };
        let classes = finite_predictions(logits, "detail image", 0)?;
        Some((input, classes))
    } else {
        None
    };
    let units_per_method = batches.len() + needs_detail as usize;
    let total = units_per_method * methods.len();
    let mut rows = Vec::new();
    for (m, method) in methods.iter().enumerate() {
        let name = &config.methods[m];
        let mut gathered = Gathered::default();
        let mut seconds = 0.0;
        let mut report = |done| {
            progress(Progress {
                method: name.clone(),
                done,
                total,
            })
        };
        for (b, (input, classes, range)) in batches.iter().enumerate() {
            let started = Instant::now();
            let explanation = method.explain(
                model,
                input.clone(),
                &lumen_core::ClassLogit(classes.clone()),
            )?;
            let heatmaps = explanation.heatmaps.clone().resize([h, w]);
            let maps = heatmaps.to_vec()?;
            seconds += started.elapsed().as_secs_f64();
            let batch = MetricInput {
                model,
                method: method.as_ref(),
                input,
                classes,
                explanation: &explanation,
                heatmaps: &heatmaps,
                maps: &maps,
                regions: &regions[range.clone()],
            };
            for metric in metrics.iter().filter(|m| m.scope() == Scope::Batch) {
                gathered.add(profile::timed(stages::METRICS, || metric.compute(&batch))?);
            }
            report(m * units_per_method + b + 1);
        }
        if let Some((detail_input, detail_classes)) = &detail_batch {
            // Detail metrics re-explain themselves; they read the input, the method
            // and the classes.
            let empty = Explanation::new(lumen_core::Heatmaps::new(Tensor::zeros(
                [detail, h, w],
                device,
            )));
            let batch = MetricInput {
                model,
                method: method.as_ref(),
                input: detail_input,
                classes: detail_classes,
                explanation: &empty,
                heatmaps: &empty.heatmaps,
                maps: &[],
                regions: &detail_regions,
            };
            for metric in metrics.iter().filter(|m| m.scope() == Scope::Detail) {
                gathered.add(profile::timed(stages::METRICS, || metric.compute(&batch))?);
            }
            report((m + 1) * units_per_method);
        }
        let mut scores: BTreeMap<String, Score> = BTreeMap::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for key in &keys {
            if key.verdict {
                if let Some(&pass) = gathered.verdicts.get(key.name) {
                    scores.insert(key.name.into(), Score::Pass(pass));
                    counts.insert(key.name.into(), detail);
                }
            } else if let Some(values) = gathered.values.get(key.name) {
                scores.insert(key.name.into(), Score::Value(mean(values)));
                counts.insert(key.name.into(), values.len());
            }
        }
        let curves = gathered
            .curves
            .into_iter()
            .filter(|(k, _)| wanted.contains(k))
            .map(|(k, c)| {
                counts.insert(k.to_string(), c.rows.len());
                let rows = vec![mean_rows(&c.rows)];
                (k.to_string(), MetricCurve { rows, ..c })
            })
            .collect();
        rows.push(MethodRow {
            name: name.clone(),
            floor: FLOOR_NAMES.contains(&name.as_str()),
            ignores_input: name == "center",
            layer: method.layer(model),
            scores,
            seconds_per_image: seconds / samples.len() as f64,
            curves,
            counts,
        });
    }
    let recommendations = recommend(&rows, &keys);
    Ok(Evaluation {
        model: model_name.to_string(),
        samples: samples.len(),
        detail_samples: detail,
        accuracy: correct as f32 / samples.len() as f32,
        keys,
        methods: rows,
        recommendations,
    })
}

/// [`evaluate`] on a zoo model, whatever its architecture.
pub fn evaluate_loaded(
    loaded: &LoadedModel,
    samples: &[ShapeSample],
    config: &EvaluationConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation> {
    let detail = samples.len().min(config.detail_samples.max(1));
    evaluate_loaded_part(loaded, samples, &samples[..detail], config, progress)
}

/// [`evaluate_part`] on a zoo model, whatever its architecture.
pub fn evaluate_loaded_part(
    loaded: &LoadedModel,
    samples: &[ShapeSample],
    detail_samples: &[ShapeSample],
    config: &EvaluationConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation> {
    let (name, data, device) = (&loaded.name, &loaded.data_config, &loaded.device);
    match &loaded.model {
        ZooModel::ResNet(model) => evaluate_part(
            model.as_ref(),
            name,
            samples,
            detail_samples,
            data,
            config,
            device,
            progress,
        ),
        ZooModel::Vit(model) => evaluate_part(
            model.as_ref(),
            name,
            samples,
            detail_samples,
            data,
            config,
            device,
            progress,
        ),
    }
}

/// Join the evaluations of a split run's parts, each on its own images (and the detail
/// metrics on one part, [`evaluate_part`]), into what one run gives: every mean
/// weighted by the number of images behind it, verdicts from the part that judged
/// them, the time per image weighted by images, the recommendations derived again.
/// The parts must come from the same model and methods.
pub fn merge_evaluations(parts: &[Evaluation]) -> Result<Evaluation> {
    check_same_runs(parts, |e| {
        let methods = e.methods.iter().map(|m| m.name.clone()).collect();
        (e.model.clone(), methods)
    })?;
    let first = &parts[0];
    let samples: usize = parts.iter().map(|p| p.samples).sum();
    let correct: f64 = parts
        .iter()
        .map(|p| (p.accuracy as f64 * p.samples as f64).round())
        .sum();
    let methods: Vec<MethodRow> = (0..first.methods.len())
        .map(|m| {
            let rows: Vec<&MethodRow> = parts.iter().map(|p| &p.methods[m]).collect();
            merge_rows(&rows, parts)
        })
        .collect::<Result<_>>()?;
    // The keys in report order, as the parts measured them.
    let keys: Vec<MetricKey> = metric_keys()
        .into_iter()
        .filter(|k| {
            methods
                .iter()
                .any(|m| m.scores.contains_key(k.name) || m.curves.contains_key(k.name))
        })
        .collect();
    let recommendations = recommend(&methods, &keys);
    Ok(Evaluation {
        model: first.model.clone(),
        samples,
        detail_samples: parts.iter().map(|p| p.detail_samples).sum(),
        accuracy: (correct / samples.max(1) as f64) as f32,
        keys,
        methods,
        recommendations,
    })
}

/// Check that there are parts and that each evaluates the same model with the same
/// methods (`identity` gives both).
pub(crate) fn check_same_runs<E>(
    parts: &[E],
    identity: impl Fn(&E) -> (String, Vec<String>),
) -> Result<()> {
    let Some(first) = parts.first() else {
        return Err(LumenError::InvalidArgument("no evaluation to merge".into()));
    };
    let (model, methods) = identity(first);
    for part in parts {
        let (other_model, other_methods) = identity(part);
        if other_model != model || other_methods != methods {
            return Err(LumenError::InvalidArgument(format!(
                "the parts evaluate different models or methods ({model} with {}, {other_model} with {}): merge one split at a time",
                methods.join(","),
                other_methods.join(",")
            )));
        }
    }
    Ok(())
}

/// One method's rows of every part, merged.
fn merge_rows(rows: &[&MethodRow], parts: &[Evaluation]) -> Result<MethodRow> {
    let first = rows[0];
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut verdicts: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    let mut curves: BTreeMap<String, (MetricCurve, Vec<f64>, usize)> = BTreeMap::new();
    let count = |row: &MethodRow, key: &str| -> Result<usize> {
        row.counts.get(key).copied().ok_or_else(|| {
            LumenError::InvalidArgument(format!(
                "{}: `{key}` has no image count: was this part written by `lumen evaluate --shard`?",
                row.name
            ))
        })
    };
    for row in rows {
        for (key, score) in &row.scores {
            let n = count(row, key)?;
            match score {
                Score::Value(v) => {
                    let entry = sums.entry(key.clone()).or_default();
                    entry.0 += v * n as f64;
                    entry.1 += n;
                }
                Score::Pass(pass) => {
                    let entry = verdicts.entry(key.clone()).or_insert((true, 0));
                    entry.0 &= pass;
                    entry.1 += n;
                }
            }
        }
        for (key, curve) in &row.curves {
            let n = count(row, key)?;
            let Some(mean) = curve.rows.first() else {
                continue;
            };
            let entry = curves
                .entry(key.clone())
                .or_insert_with(|| (curve.clone(), vec![0.0; mean.len()], 0));
            if entry.0.x != curve.x || entry.1.len() != mean.len() {
                return Err(LumenError::InvalidArgument(format!(
                    "{}: the parts' `{key}` curves have different points: were they run with the same settings?",
                    row.name
                )));
            }
            for (sum, v) in entry.1.iter_mut().zip(mean) {
                *sum += *v as f64 * n as f64;
            }
            entry.2 += n;
        }
    }
    let mut counts = BTreeMap::new();
    let mut scores = BTreeMap::new();
    for (key, (sum, n)) in sums {
        scores.insert(key.clone(), Score::Value(sum / n.max(1) as f64));
        counts.insert(key, n);
    }
    for (key, (pass, n)) in verdicts {
        scores.insert(key.clone(), Score::Pass(pass));
        counts.insert(key, n);
    }
    let curves = curves
        .into_iter()
        .map(|(key, (curve, sums, n))| {
            counts.insert(key.clone(), n);
            let mean = sums.iter().map(|s| (s / n.max(1) as f64) as f32).collect();
            (
                key,
                MetricCurve {
                    rows: vec![mean],
                    ..curve
                },
            )
        })
        .collect();
    let images: usize = parts.iter().map(|p| p.samples).sum();
    let seconds: f64 = rows
        .iter()
        .zip(parts)
        .map(|(r, p)| r.seconds_per_image * p.samples as f64)
        .sum();
    Ok(MethodRow {
        name: first.name.clone(),
        floor: first.floor,
        ignores_input: first.ignores_input,
        layer: first.layer.clone(),
        scores,
        seconds_per_image: seconds / images.max(1) as f64,
        curves,
        counts,
    })
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

    /// The metric keys present in the results, in report order.
    pub fn metric_keys(&self) -> Vec<&'static str> {
        self.keys
            .iter()
            .map(|k| k.name)
            .filter(|k| self.methods.iter().any(|m| m.scores.contains_key(*k)))
            .collect()
    }

    /// The data of the report's section (see `lumen_report::evaluation_section`).
    pub fn view(&self) -> EvaluationView {
        let label = |m: &MethodRow| {
            if m.floor {
                format!("{} (floor)", m.name)
            } else {
                m.name.clone()
            }
        };
        let metrics = self
            .keys
            .iter()
            .filter(|k| self.methods.iter().any(|m| m.scores.contains_key(k.name)))
            .map(|k| MetricColumn {
                name: k.name.to_string(),
                description: k.description.to_string(),
                lower_is_better: k.lower_is_better,
                rows: self
                    .methods
                    .iter()
                    .filter_map(|m| {
                        let score = *m.scores.get(k.name)?;
                        let shown = match score {
                            Score::Value(v) => format!("{v:.3}"),
                            Score::Pass(p) => if p { "pass" } else { "fail" }.to_string(),
                        };
                        Some((label(m), shown, score.number()))
                    })
                    .collect(),
            })
            .collect();
        let chart = |key: &str, title: &str, x_label: &str, y_label: &str| {
            let series: Vec<(String, Vec<f64>, Vec<f64>)> = self
                .methods
                .iter()
                .filter_map(|m| {
                    let curve = m.curves.get(key)?;
                    Some((
                        m.name.clone(),
                        curve.x.iter().map(|&v| v as f64).collect(),
                        curve.rows.first()?.iter().map(|&v| v as f64).collect(),
                    ))
                })
                .collect();
            let note = self
                .methods
                .iter()
                .filter_map(|m| m.curves.get(key))
                .find(|c| !c.labels.is_empty())
                .map(|c| format!("steps, from the top: {}", c.labels.join(" → ")));
            CurveChart {
                title: title.into(),
                x_label: x_label.into(),
                y_label: y_label.into(),
                series,
                note,
            }
        };
        EvaluationView {
            heading: format!(
                "Evaluation of {} on {} generated images",
                self.model, self.samples
            ),
            summary: format!(
                "model accuracy on these images: {:.1}%; sensitivity and randomisation on the first {} images.",
                100.0 * self.accuracy,
                self.detail_samples
            ),
            recommendations: self
                .recommendations
                .iter()
                .map(|r| (r.use_case.clone(), r.method.clone(), r.reason.clone()))
                .collect(),
            metrics,
            cost: self
                .methods
                .iter()
                .map(|m| (m.name.clone(), m.seconds_per_image * 1e3))
                .collect(),
            charts: vec![
                chart(
                    "deletion_auc",
                    "deletion",
                    "fraction of pixels removed",
                    "target probability",
                ),
                chart(
                    "insertion_auc",
                    "insertion",
                    "fraction of pixels inserted",
                    "target probability",
                ),
                chart(
                    "road_morf",
                    "ROAD, most relevant first",
                    "% of pixels imputed",
                    "accuracy",
                ),
                chart(
                    "road_lerf",
                    "ROAD, least relevant first",
                    "% of pixels imputed",
                    "accuracy",
                ),
                chart(
                    "randomization_spearman",
                    "cascading randomisation (|Spearman| with the original map)",
                    "groups randomised, from the top",
                    "|Spearman|",
                ),
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

/// Curve settings with a baseline kind and the model's normalisation.
pub fn curve(steps: usize, baseline: BaselineKind, data_config: &DataConfig) -> CurveConfig {
    CurveConfig {
        steps,
        baseline: baseline.with(data_config.mean, data_config.std, None),
        batch_size: None,
    }
}

/// The confidence baseline (black) in the model's normalisation.
pub fn black(data_config: &DataConfig) -> Baseline {
    Baseline::Black {
        mean: data_config.mean,
        std: data_config.std,
    }
}

/// Every method name the bench accepts: the registry's and the floors.
pub fn bench_method_names() -> Vec<&'static str> {
    let mut names = method_names();
    names.extend(FLOOR_NAMES);
    names
}

/// The predicted class of every row of `logits`, or an error naming the generated
/// images whose logits are NaN or infinite: a model that overflows on them would
/// otherwise be scored on the argmax of NaN.
fn finite_predictions(logits: Tensor<2>, kind: &str, first: usize) -> Result<Vec<usize>> {
    let [batch, classes] = logits.dims();
    let host = lumen_core::to_host(logits.clone())?;
    let names: Vec<String> = (0..batch)
        .map(|row| format!("generated {kind} {}", first + row))
        .collect();
    name_non_finite(&names, |row| {
        host[row * classes..(row + 1) * classes]
            .iter()
            .any(|v| !v.is_finite())
    })?;
    predicted_classes(&logits)
}

#[cfg(test)]
mod tests {
    use lumen_core::burn::tensor::TensorData;

    use super::*;

    #[test]
    fn non_finite_logits_name_their_generated_images() {
        let device = Device::default();
        let logits =
            |values: Vec<f32>| Tensor::<2>::from_data(TensorData::new(values, [3, 2]), &device);
        let fine = logits(vec![0.0, 1.0, 2.0, -1.0, 0.5, 0.25]);
        assert_eq!(finite_predictions(fine, "image", 10).unwrap(), [1, 0, 0]);
        let broken = logits(vec![0.0, 1.0, f32::NAN, 0.0, 0.5, f32::INFINITY]);
        match finite_predictions(broken, "image", 10) {
            Err(LumenError::NonFinite { images }) => {
                assert_eq!(images, ["generated image 11", "generated image 12"])
            }
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
}
