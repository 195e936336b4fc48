//! Explanation quality metrics for Lumen: how faithful, how stable, how well localised
//! is a heatmap, and does it pass the sanity checks?
//!
//! - [`faithfulness`]: deletion / insertion curves (RISE), ROAD, average drop and
//!   increase in confidence; perturbed copies scored in batches.
//! - [`sensitivity`]: max- and avg-sensitivity (Yeh et al.).
//! - [`localization`]: pointing game (with the 15 px tolerance), energy pointing game,
//!   IoU, relevance mass and rank accuracy, against a [`Region`].
//! - [`sanity`]: cascading and independent model-parameter randomisation, data
//!   randomisation, with Spearman and SSIM.
//! - [`axioms`]: Gini sparseness, Integrated Gradients completeness.
//! - [`complexity`]: entropy of the map (Bhatt et al. 2020).
//! - [`baselines`]: the `random` and `center` floors, as [`Method`](lumen_methods::Method)s.
//! - [`bench`]: every metric behind one [`Metric`] trait, and [`recommend`], which
//!   reads a results table against the floors.
//!
//! Metrics take a model, an input batch, targets and heatmaps (or a method that makes
//! them), work on any backend, and return plain numbers in structs that serialise to
//! JSON. Depends on `lumen-core` and `lumen-methods`, never on plotting or the zoo.

pub mod axioms;
pub mod baselines;
pub mod bench;
pub mod complexity;
pub mod detection;
pub mod faithfulness;
mod imputation;
pub mod localization;
pub mod sanity;
pub mod segmentation;
pub mod sensitivity;

pub use axioms::{gini, relative_completeness_gap};
pub use baselines::{CenterPrior, RandomMap};
pub use bench::{
    MethodRow, Metric, MetricCurve, MetricInput, MetricKey, MetricSettings, MetricValues,
    Recommendation, Scope, Score, recommend, standard_metrics,
};
pub use complexity::complexity;
pub use detection::{
    AveragePrecision, BoxLocalization, ScoredBox, TruthBox, average_precision, box_localization,
};
pub use faithfulness::{
    ConfidenceChange, Curve, CurveConfig, CurveKind, MAX_METRIC_COUNT, Road, RoadConfig, RoadOrder,
    confidence_change, mean_rows, perturbation_curve, road, trapezoid_auc,
};
pub use imputation::noisy_linear_imputation;
pub use localization::{Localization, LocalizationConfig, Region, localization};
pub use sanity::{
    RandomizationConfig, RandomizationCurve, RandomizationOrder, Similarity, data_randomization,
    model_randomization, parameter_groups, randomize_groups, spearman, ssim,
};
pub use segmentation::IouAccumulator;
pub use sensitivity::{Sensitivity, SensitivityConfig, sensitivity, sensitivity_with};
