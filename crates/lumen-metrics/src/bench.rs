//! Metrics as one trait, so that an evaluation bench is a loop over boxed metrics and
//! adding a metric touches one place: a [`Metric`] reports one or more named keys
//! ([`MetricKey`]: lower or higher is better, what it measures) from a batch of
//! explained images ([`MetricInput`]); [`recommend`] reads a finished table.

use std::collections::BTreeMap;

use burn::module::Module;
use lumen_core::{ClassLogit, ClassProbability, Classifier, Heatmaps, Region, Result, Tensor};
use lumen_methods::{Baseline, Explanation, Method};
use serde::{Deserialize, Serialize};

use crate::axioms::gini;
use crate::complexity::complexity;
use crate::faithfulness::{
    CurveConfig, CurveKind, RoadConfig, RoadOrder, confidence_change, perturbation_curve, road,
};
use crate::localization::{LocalizationConfig, localization};
use crate::sanity::{RandomizationConfig, model_randomization};
use crate::sensitivity::{SensitivityConfig, sensitivity};

/// A number a metric reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricKey {
    /// Key in tables and JSON.
    pub name: &'static str,
    /// Whether a lower value is better.
    pub lower_is_better: bool,
    /// A pass/fail verdict rather than a number.
    pub verdict: bool,
    /// What it measures, for reports.
    pub description: &'static str,
    /// A map that ignores the input scores best on it (stability under input noise):
    /// comparing a method with such a floor (`center`) says nothing, so it is not.
    pub rewards_ignoring_input: bool,
}

const fn key(name: &'static str, lower_is_better: bool, description: &'static str) -> MetricKey {
    MetricKey {
        name,
        lower_is_better,
        verdict: false,
        description,
        rewards_ignoring_input: false,
    }
}

const fn stability_key(name: &'static str, description: &'static str) -> MetricKey {
    MetricKey {
        rewards_ignoring_input: true,
        ..key(name, true, description)
    }
}

/// Where a metric runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// On every batch of explained images.
    Batch,
    /// Once, on the first few images: it re-explains many times (sensitivity,
    /// randomisation).
    Detail,
}

/// A batch of explained images with its ground truth.
pub struct MetricInput<'a, M: Classifier> {
    /// The model.
    pub model: &'a M,
    /// The method that made the explanation (re-run by detail metrics).
    pub method: &'a dyn Method<M>,
    /// The batch `[B,3,H,W]`.
    pub input: &'a Tensor<4>,
    /// The class explained per image.
    pub classes: &'a [usize],
    /// The method's output.
    pub explanation: &'a Explanation,
    /// The maps at input size.
    pub heatmaps: &'a Heatmaps,
    /// The same maps on the host, `B * H * W`.
    pub maps: &'a [f32],
    /// Ground truth per image, at input size.
    pub regions: &'a [Region],
}

/// A curve per image, with its x axis (and names of its points, when they have any).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricCurve {
    /// Positions of the points.
    pub x: Vec<f32>,
    /// One row per image.
    pub rows: Vec<Vec<f32>>,
    /// Names of the points (randomised layer groups), or empty.
    pub labels: Vec<String>,
}

/// What a metric computed for a batch.
#[derive(Clone, Debug, Default)]
pub struct MetricValues {
    /// Per key, one value per image (or one for the whole set).
    pub values: Vec<(&'static str, Vec<f64>)>,
    /// Per verdict key, pass or fail.
    pub verdicts: Vec<(&'static str, bool)>,
    /// Per key, its curves.
    pub curves: Vec<(&'static str, MetricCurve)>,
}

impl MetricValues {
    /// One key's per-image values and its curve rows over `x`.
    pub fn with_curve(
        name: &'static str,
        values: Vec<f64>,
        x: Vec<f32>,
        rows: Vec<Vec<f32>>,
    ) -> Self {
        Self {
            values: vec![(name, values)],
            verdicts: vec![],
            curves: vec![(
                name,
                MetricCurve {
                    x,
                    rows,
                    labels: vec![],
                },
            )],
        }
    }
}

/// A quality metric of explanations.
pub trait Metric<M: Classifier> {
    /// The keys it reports.
    fn keys(&self) -> &'static [MetricKey];

    /// Where it runs.
    fn scope(&self) -> Scope {
        Scope::Batch
    }

    /// Compute its keys for a batch.
    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues>;
}

fn per_map<'a, M: Classifier>(
    input: &'a MetricInput<'a, M>,
) -> impl Iterator<Item = (&'a [f32], &'a Region)> {
    let [_, _, h, w] = input.input.dims();
    input.maps.chunks(h * w).zip(input.regions)
}

/// Pointing game, energy pointing game, IoU, relevance mass and rank.
pub struct LocalizationMetric(pub LocalizationConfig);

impl<M: Classifier> Metric<M> for LocalizationMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const KEYS: &[MetricKey] = &[
            key(
                "pointing_game",
                false,
                "share of maxima on the object (15 px tolerance at 224 px, scaled with the image)",
            ),
            key(
                "energy_pointing_game",
                false,
                "share of the map's energy inside the box",
            ),
            key(
                "iou",
                false,
                "IoU of the map above half its maximum with the mask",
            ),
            key(
                "relevance_mass",
                false,
                "share of relevance inside the mask",
            ),
            key(
                "relevance_rank",
                false,
                "share of the top-K pixels on the mask (K = mask size)",
            ),
        ];
        KEYS
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let mut columns: [Vec<f64>; 5] = Default::default();
        for (map, region) in per_map(input) {
            let l = localization(map, region, &self.0)?;
            for (column, value) in columns.iter_mut().zip([
                l.pointing_game as u8 as f64,
                l.energy_pointing_game as f64,
                l.iou as f64,
                l.relevance_mass as f64,
                l.relevance_rank as f64,
            ]) {
                column.push(value);
            }
        }
        let names = <Self as Metric<M>>::keys(self).iter().map(|k| k.name);
        Ok(MetricValues {
            values: names.zip(columns).collect(),
            ..MetricValues::default()
        })
    }
}

/// A per-map score computed on the host.
pub struct MapMetric {
    /// The key.
    pub key: &'static [MetricKey; 1],
    /// The score of one map.
    pub score: fn(&[f32]) -> f32,
}

/// Gini sparseness (higher: sparser).
pub const GINI: MapMetric = MapMetric {
    key: &[key("gini", false, "sparseness of the map (Gini index)")],
    score: gini,
};

/// Complexity, Bhatt et al. 2020 (lower: more concise).
pub const COMPLEXITY: MapMetric = MapMetric {
    key: &[key(
        "complexity",
        true,
        "entropy of the map's fractional contributions (Bhatt et al. 2020; lower: more concise)",
    )],
    score: complexity,
};

impl<M: Classifier> Metric<M> for MapMetric {
    fn keys(&self) -> &'static [MetricKey] {
        self.key
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let values = per_map(input)
            .map(|(m, _)| (self.score)(m) as f64)
            .collect();
        Ok(MetricValues {
            values: vec![(self.key[0].name, values)],
            ..MetricValues::default()
        })
    }
}

/// The deletion or insertion curve (RISE) of the target probability, with its
/// normalised area.
pub struct PerturbationMetric {
    /// Deletion or insertion.
    pub kind: CurveKind,
    /// Steps and baseline.
    pub config: CurveConfig,
}

impl<M: Classifier> Metric<M> for PerturbationMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const DELETION: &[MetricKey] = &[key(
            "deletion_auc",
            true,
            "area under the deletion curve / original score (lower: more faithful)",
        )];
        const INSERTION: &[MetricKey] = &[key(
            "insertion_auc",
            false,
            "area under the insertion curve / original score (higher: more faithful)",
        )];
        match self.kind {
            CurveKind::Deletion => DELETION,
            CurveKind::Insertion => INSERTION,
        }
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let name = <Self as Metric<M>>::keys(self)[0].name;
        let curve = perturbation_curve(
            input.model,
            input.input,
            input.heatmaps,
            &ClassProbability(input.classes.to_vec()),
            self.kind,
            &self.config,
        )?;
        let auc = curve.normalized_auc.iter().map(|&a| a as f64).collect();
        Ok(MetricValues::with_curve(
            name,
            auc,
            curve.fractions,
            curve.scores,
        ))
    }
}

/// ROAD accuracy with most or least relevant pixels imputed first.
pub struct RoadMetric {
    /// Which pixels go first.
    pub order: RoadOrder,
    /// Percentages, noise, seed.
    pub config: RoadConfig,
}

impl<M: Classifier> Metric<M> for RoadMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const MORF: &[MetricKey] = &[key(
            "road_morf",
            true,
            "ROAD accuracy, most relevant removed first (lower: more faithful)",
        )];
        const LERF: &[MetricKey] = &[key(
            "road_lerf",
            false,
            "ROAD accuracy, least relevant removed first (higher: more faithful)",
        )];
        match self.order {
            RoadOrder::MoRF => MORF,
            RoadOrder::LeRF => LERF,
        }
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let name = <Self as Metric<M>>::keys(self)[0].name;
        let result = road(
            input.model,
            input.input,
            input.heatmaps,
            input.classes,
            self.order,
            &self.config,
        )?;
        let rows: Vec<Vec<f32>> = result
            .kept
            .iter()
            .map(|kept| kept.iter().map(|&k| k as u8 as f32).collect())
            .collect();
        let accuracy = rows
            .iter()
            .map(|r| r.iter().sum::<f32>() as f64 / r.len().max(1) as f64)
            .collect();
        Ok(MetricValues::with_curve(
            name,
            accuracy,
            self.config.percentages.clone(),
            rows,
        ))
    }
}

/// Average drop and increase in confidence through the map (Grad-CAM++).
pub struct ConfidenceMetric {
    /// What the hidden part of the image becomes (black in the paper).
    pub baseline: Baseline,
}

impl<M: Classifier> Metric<M> for ConfidenceMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const KEYS: &[MetricKey] = &[
            key(
                "average_drop",
                true,
                "average drop in confidence through the map, % (lower is better)",
            ),
            key(
                "increase_rate",
                false,
                "share of images whose confidence rises through the map",
            ),
        ];
        KEYS
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let change = confidence_change(
            input.model,
            input.input,
            input.heatmaps,
            &ClassProbability(input.classes.to_vec()),
            &self.baseline,
        )?;
        Ok(MetricValues {
            values: vec![
                (
                    "average_drop",
                    change.drop.iter().map(|&d| d as f64).collect(),
                ),
                (
                    "increase_rate",
                    change.increase.iter().map(|&i| i as u8 as f64).collect(),
                ),
            ],
            ..MetricValues::default()
        })
    }
}

/// Integrated Gradients' completeness gap `|sum attr - (f(x) - f(x'))|` (only for
/// methods that report it).
pub struct CompletenessMetric;

impl<M: Classifier> Metric<M> for CompletenessMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const KEYS: &[MetricKey] = &[key(
            "completeness_gap",
            true,
            "|sum of attributions - output change| (Integrated Gradients)",
        )];
        KEYS
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let values = match &input.explanation.convergence_delta {
            Some(deltas) => vec![(
                "completeness_gap",
                deltas.iter().map(|d| d.abs() as f64).collect(),
            )],
            None => vec![],
        };
        Ok(MetricValues {
            values,
            ..MetricValues::default()
        })
    }
}

/// Max- and avg-sensitivity (Yeh et al. 2019) on the detail images.
pub struct SensitivityMetric(pub SensitivityConfig);

impl<M: Classifier> Metric<M> for SensitivityMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const KEYS: &[MetricKey] = &[
            stability_key(
                "max_sensitivity",
                "largest relative map change under small input noise (lower: more stable)",
            ),
            stability_key(
                "avg_sensitivity",
                "mean relative map change under small input noise (lower: more stable)",
            ),
        ];
        KEYS
    }

    fn scope(&self) -> Scope {
        Scope::Detail
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let s = sensitivity(
            input.model,
            input.method,
            input.input,
            &ClassLogit(input.classes.to_vec()),
            &self.0,
        )?;
        Ok(MetricValues {
            values: vec![
                ("max_sensitivity", s.max.iter().map(|&v| v as f64).collect()),
                (
                    "avg_sensitivity",
                    s.average.iter().map(|&v| v as f64).collect(),
                ),
            ],
            ..MetricValues::default()
        })
    }
}

/// The cascading model-parameter randomisation check (Adebayo et al. 2018) on the
/// detail images: needs a model whose parameters can be randomised.
pub struct RandomizationMetric(pub RandomizationConfig);

impl<M: Classifier + Module + Clone> Metric<M> for RandomizationMetric {
    fn keys(&self) -> &'static [MetricKey] {
        const KEYS: &[MetricKey] = &[
            key(
                "randomization_spearman",
                true,
                "absolute Spearman correlation with the map of a fully randomised model (lower: passes)",
            ),
            MetricKey {
                name: "randomization_pass",
                lower_is_better: false,
                verdict: true,
                description: "cascading randomisation sanity check",
                rewards_ignoring_input: false,
            },
        ];
        KEYS
    }

    fn scope(&self) -> Scope {
        Scope::Detail
    }

    fn compute(&self, input: &MetricInput<M>) -> Result<MetricValues> {
        let curve = model_randomization(
            input.model,
            input.method,
            input.input,
            &ClassLogit(input.classes.to_vec()),
            &self.0,
        )?;
        Ok(MetricValues {
            values: vec![("randomization_spearman", vec![curve.score as f64])],
            verdicts: vec![("randomization_pass", curve.passed)],
            curves: vec![(
                "randomization_spearman",
                MetricCurve {
                    x: (1..=curve.spearman.len()).map(|i| i as f32).collect(),
                    rows: vec![curve.abs_spearman.clone()],
                    labels: curve.layers.clone(),
                },
            )],
        })
    }
}

/// Settings of the standard metrics.
#[derive(Clone, Debug)]
pub struct MetricSettings {
    /// Deletion curve.
    pub deletion: CurveConfig,
    /// Insertion curve.
    pub insertion: CurveConfig,
    /// ROAD.
    pub road: RoadConfig,
    /// Localization.
    pub localization: LocalizationConfig,
    /// Sensitivity.
    pub sensitivity: SensitivityConfig,
    /// Randomisation.
    pub randomization: RandomizationConfig,
    /// Average drop's hidden part (the paper's black).
    pub confidence_baseline: Baseline,
}

/// Every standard metric, in report order.
pub fn standard_metrics<M: Classifier + Module + Clone + 'static>(
    settings: &MetricSettings,
) -> Vec<Box<dyn Metric<M>>> {
    vec![
        Box::new(PerturbationMetric {
            kind: CurveKind::Deletion,
            config: settings.deletion.clone(),
        }),
        Box::new(PerturbationMetric {
            kind: CurveKind::Insertion,
            config: settings.insertion.clone(),
        }),
        Box::new(RoadMetric {
            order: RoadOrder::MoRF,
            config: settings.road.clone(),
        }),
        Box::new(RoadMetric {
            order: RoadOrder::LeRF,
            config: settings.road.clone(),
        }),
        Box::new(ConfidenceMetric {
            baseline: settings.confidence_baseline.clone(),
        }),
        Box::new(LocalizationMetric(settings.localization.clone())),
        Box::new(SensitivityMetric(settings.sensitivity.clone())),
        Box::new(RandomizationMetric(settings.randomization.clone())),
        Box::new(GINI),
        Box::new(COMPLEXITY),
        Box::new(CompletenessMetric),
    ]
}

/// A metric value: a number, or a pass/fail verdict.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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

/// One method's row of a results table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodRow {
    /// Method name.
    pub name: String,
    /// Whether this is a floor (`random`, `center`).
    pub floor: bool,
    /// Whether its map is the same whatever the input (the `center` floor).
    pub ignores_input: bool,
    /// The layer its maps come from (CAMs), what its verdicts hold for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Metric values, averaged over images.
    pub scores: BTreeMap<String, Score>,
    /// Explanation time per image, seconds.
    pub seconds_per_image: f64,
    /// Mean curve per metric key.
    pub curves: BTreeMap<String, MetricCurve>,
    /// Per score and curve key, the number of images behind its mean (what a merge of
    /// a split run weighs it by; a verdict counts the images it was judged on).
    #[serde(default)]
    pub counts: BTreeMap<String, usize>,
}

impl MethodRow {
    fn score(&self, key: &str) -> Option<f64> {
        self.scores.get(key).map(|s| s.number())
    }
}

/// A recommendation for a use case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The use case (`faithful`, `localized`, `stable`, `cheapest`) or `caution`.
    pub use_case: String,
    /// The method recommended (or cautioned against).
    pub method: String,
    /// Why, with the numbers.
    pub reason: String,
}

/// Winners per use case among the real methods, and a caution for every number of a
/// real method that does not beat a floor (in the key's direction; stability keys
/// only against floors that depend on the input) and every failed verdict.
/// Everything comes from the table.
pub fn recommend(rows: &[MethodRow], keys: &[MetricKey]) -> Vec<Recommendation> {
    let real: Vec<&MethodRow> = rows.iter().filter(|m| !m.floor).collect();
    let floors: Vec<&MethodRow> = rows.iter().filter(|m| m.floor).collect();
    let mut out = Vec::new();
    let best = |value: &dyn Fn(&MethodRow) -> Option<f64>| {
        real.iter()
            .filter_map(|m| value(m).map(|v| (*m, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mut recommend = |use_case: &str, m: &MethodRow, reason: String| {
        out.push(Recommendation {
            use_case: use_case.into(),
            method: m.name.clone(),
            reason,
        })
    };
    if let Some((m, v)) = best(&|m| Some(m.score("insertion_auc")? - m.score("deletion_auc")?)) {
        recommend(
            "faithful",
            m,
            format!(
                "largest insertion - deletion AUC gap ({v:.3}: insertion {:.3}, deletion {:.3})",
                m.score("insertion_auc").unwrap_or_default(),
                m.score("deletion_auc").unwrap_or_default()
            ),
        );
    }
    // Pointing game first, energy pointing game breaks ties.
    if let Some((m, _)) = best(&|m| {
        Some(m.score("pointing_game")? + 1e-3 * m.score("energy_pointing_game").unwrap_or(0.0))
    }) {
        // The energy pointing game is named only when it was measured.
        let energy = m
            .score("energy_pointing_game")
            .map_or(String::new(), |e| format!("; energy pointing game {e:.3}"));
        recommend(
            "localized",
            m,
            format!(
                "highest pointing game ({:.3}{energy})",
                m.score("pointing_game").unwrap_or_default(),
            ),
        );
    }
    if let Some((m, v)) = best(&|m| m.score("max_sensitivity").map(|s| -s)) {
        recommend("stable", m, format!("lowest max-sensitivity ({:.3})", -v));
    }
    if let Some((m, v)) = best(&|m| Some(-m.seconds_per_image)) {
        recommend(
            "cheapest",
            m,
            format!("fastest: {:.1} ms per image", -v * 1e3),
        );
    }
    // The number a verdict was decided on (`randomization_spearman` for
    // `randomization_pass`), so that a caution says by how much.
    fn companion_value(keys: &[MetricKey], verdict: &MetricKey, row: &MethodRow) -> String {
        let family = verdict.name.split('_').next();
        keys.iter()
            .filter(|k| !k.verdict && k.name.split('_').next() == family)
            .find_map(|k| match row.scores.get(k.name) {
                Some(Score::Value(v)) => Some(format!("; {} {v:.3}", k.name)),
                _ => None,
            })
            .unwrap_or_default()
    }
    // A metric on which every row scores the same (e.g. increase rate on a model
    // already at 100% confidence) says nothing about any method: no caution from it.
    let informative = |key: &MetricKey| {
        let values: Vec<f64> = rows.iter().filter_map(|r| r.score(key.name)).collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        hi - lo > 1e-12
    };
    for m in &real {
        for key in keys.iter().filter(|k| k.verdict || informative(k)) {
            match (key.verdict, m.scores.get(key.name)) {
                (true, Some(Score::Pass(false))) => recommend(
                    "caution",
                    m,
                    format!(
                        "fails the check `{}` ({}{})",
                        key.name,
                        key.description,
                        companion_value(keys, key, m)
                    ),
                ),
                (false, Some(Score::Value(v))) => {
                    for floor in &floors {
                        let Some(f) = floor.score(key.name) else {
                            continue;
                        };
                        if key.rewards_ignoring_input && floor.ignores_input {
                            continue;
                        }
                        let beaten = if key.lower_is_better { *v < f } else { *v > f };
                        if !beaten {
                            recommend(
                                "caution",
                                m,
                                format!(
                                    "{} {v:.3} does not beat the `{}` floor ({f:.3}; {} is better)",
                                    key.name,
                                    floor.name,
                                    if key.lower_is_better {
                                        "lower"
                                    } else {
                                        "higher"
                                    }
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, floor: bool, scores: &[(&str, Score)], seconds: f64) -> MethodRow {
        MethodRow {
            name: name.into(),
            floor,
            ignores_input: name == "center",
            layer: None,
            scores: scores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            seconds_per_image: seconds,
            curves: BTreeMap::new(),
            counts: BTreeMap::new(),
        }
    }

    const KEYS: &[MetricKey] = &[
        key("increase_rate", false, ""),
        key("deletion_auc", true, ""),
        key("insertion_auc", false, ""),
        key("pointing_game", false, ""),
        key("energy_pointing_game", false, ""),
        stability_key("max_sensitivity", ""),
        key("randomization_spearman", true, ""),
        MetricKey {
            name: "randomization_pass",
            lower_is_better: false,
            verdict: true,
            description: "sanity",
            rewards_ignoring_input: false,
        },
    ];

    fn table() -> Vec<MethodRow> {
        use Score::{Pass, Value};
        vec![
            row(
                "good",
                false,
                &[
                    ("increase_rate", Value(0.0)),
                    ("deletion_auc", Value(0.2)),
                    ("insertion_auc", Value(0.9)),
                    ("pointing_game", Value(1.0)),
                    ("energy_pointing_game", Value(0.5)),
                    ("max_sensitivity", Value(0.3)),
                    ("randomization_spearman", Value(0.1)),
                    ("randomization_pass", Pass(true)),
                ],
                0.010,
            ),
            row(
                "weak",
                false,
                &[
                    ("increase_rate", Value(0.0)),
                    ("deletion_auc", Value(0.5)),
                    ("insertion_auc", Value(0.6)),
                    ("pointing_game", Value(1.0)),
                    ("energy_pointing_game", Value(0.4)),
                    ("max_sensitivity", Value(0.1)),
                    ("randomization_spearman", Value(0.8)),
                    ("randomization_pass", Pass(false)),
                ],
                0.001,
            ),
            row(
                "random",
                true,
                &[
                    ("increase_rate", Value(0.0)),
                    ("deletion_auc", Value(0.45)),
                    ("insertion_auc", Value(0.5)),
                    ("pointing_game", Value(0.2)),
                    ("max_sensitivity", Value(0.7)),
                ],
                0.0,
            ),
            row(
                "center",
                true,
                &[
                    ("deletion_auc", Value(0.4)),
                    ("insertion_auc", Value(0.8)),
                    ("pointing_game", Value(0.7)),
                    ("max_sensitivity", Value(0.0)),
                ],
                0.0,
            ),
        ]
    }

    fn picked<'a>(out: &'a [Recommendation], use_case: &str) -> Vec<&'a str> {
        out.iter()
            .filter(|r| r.use_case == use_case)
            .map(|r| r.method.as_str())
            .collect()
    }

    #[test]
    fn winners_come_from_the_numbers() {
        let out = recommend(&table(), KEYS);
        assert_eq!(picked(&out, "faithful"), ["good"]);
        // Pointing game ties at 1.0; energy decides.
        assert_eq!(picked(&out, "localized"), ["good"]);
        let localized = out.iter().find(|r| r.use_case == "localized").unwrap();
        assert!(
            localized.reason.contains("energy pointing game"),
            "{localized:?}"
        );
        // Without the energy pointing game in the table, the reason does not invent one.
        let mut rows = table();
        for row in &mut rows {
            row.scores.remove("energy_pointing_game");
        }
        let out = recommend(&rows, KEYS);
        let localized = out.iter().find(|r| r.use_case == "localized").unwrap();
        assert!(!localized.reason.contains("energy"), "{localized:?}");
        assert_eq!(picked(&out, "stable"), ["weak"]);
        assert_eq!(picked(&out, "cheapest"), ["weak"]);
    }

    #[test]
    fn every_metric_is_checked_against_both_floors_in_its_direction() {
        let out = recommend(&table(), KEYS);
        let cautions: Vec<String> = out
            .iter()
            .filter(|r| r.use_case == "caution")
            .map(|r| format!("{} {}", r.method, r.reason))
            .collect();
        let has = |method: &str, key: &str, floor: &str| {
            cautions.iter().any(|c| {
                c.starts_with(&format!("{method} {key} "))
                    && c.contains(&format!("`{floor}` floor"))
            })
        };
        // weak: deletion 0.5 is worse (higher) than both floors; insertion 0.6 only
        // loses to center.
        assert!(has("weak", "deletion_auc", "random"));
        assert!(has("weak", "deletion_auc", "center"));
        assert!(has("weak", "insertion_auc", "center"));
        assert!(!has("weak", "insertion_auc", "random"));
        // Stability is compared with the random floor (0.7, an input-dependent map)
        // but not with the centre (0.0: a constant map is trivially stable).
        assert!(!has("weak", "max_sensitivity", "center"));
        assert!(!has("good", "max_sensitivity", "center"));
        let mut unstable = table();
        unstable[0]
            .scores
            .insert("max_sensitivity".into(), Score::Value(0.9));
        let out = recommend(&unstable, KEYS);
        assert!(out.iter().any(|r| {
            r.use_case == "caution"
                && r.method == "good"
                && r.reason
                    .starts_with("max_sensitivity 0.900 does not beat the `random` floor")
        }));
        // good beats both floors on faithfulness and localization.
        assert!(!has("good", "deletion_auc", "random") && !has("good", "insertion_auc", "center"));
        assert!(!has("good", "pointing_game", "center"));
        // Failed verdicts are cautions; passed ones are not.
        // A failed check says the number it was decided on.
        assert!(
            cautions.iter().any(|c| c
                == "weak fails the check `randomization_pass` (sanity; randomization_spearman 0.800)"),
            "{cautions:?}"
        );
        assert!(!cautions.iter().any(|c| c.starts_with("good fails")));
        // A metric equal on every row (increase rate 0 everywhere) gives no caution.
        assert!(!cautions.iter().any(|c| c.contains("increase_rate")));
        // A floor missing a key (energy) is not compared.
        assert!(!cautions.iter().any(|c| c.contains("energy_pointing_game")));
        // Floors are never recommended nor cautioned.
        assert!(
            out.iter()
                .all(|r| r.method != "random" && r.method != "center")
        );
    }
}
