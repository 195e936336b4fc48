//! Lumen: explain what vision models see.
//!
//! The facade over the Lumen crates: [`core`] (devices, taps, targets, heatmaps,
//! inputs), [`methods`] (attribution methods), [`features`] (feature maps,
//! statistics, receptive fields), [`tasks`] (what a model predicts and
//! what can be explained), [`models`] (the timm model zoo), [`metrics`] (quality
//! metrics), [`report`] (colormaps, figures, HTML) and [`train`] (monitors for
//! burn-train: explanations and feature statistics to TensorBoard, MLflow and an
//! HTML timeline), with the high-level calls of
//! [`api`] and the evaluation bench of [`evaluate`]. Backends are chosen by cargo
//! feature (`flex` default, `wgpu`, `tch`, `cuda`) and the device at run time with
//! [`device_from_str`].
//!
//! ```
//! use lumen::{ExplainOptions, Inputs, LoadedModel, device_from_str, explain_prediction};
//!
//! let device = device_from_str("cpu")?;
//! let model = LoadedModel::bundled("shapes-cnn", &device)?;
//! let sample = lumen::models::shapes::shape_sample(1, 0);
//! let inputs = Inputs::from_images(vec![sample.image], vec!["shape".into()], &model.data_config, &device)?;
//! let options = ExplainOptions { method: "gradcam++".into(), ..Default::default() };
//! let (explanation, results) = explain_prediction(&model, &inputs, &options)?;
//! assert_eq!(explanation.heatmaps.dims(), [1, 128, 128]);
//! assert_eq!(results[0].target, results[0].prediction.class);
//! # Ok::<(), lumen::LumenError>(())
//! ```

pub mod api;
pub mod cache;
mod cached;
pub mod detection;
pub mod evaluate;
pub mod feature_report;
mod figures;
pub mod inputs;
pub mod npy_input;
pub mod output;
pub mod scale;
pub mod segmentation;
pub mod task_evaluation;
pub mod verdicts;

pub use lumen_core as core;
pub use lumen_features as features;
pub use lumen_methods as methods;
pub use lumen_metrics as metrics;
pub use lumen_models as models;
pub use lumen_report as report;
pub use lumen_tasks as tasks;
pub use lumen_train as train;

pub use api::{
    BatchOutcome, BatchRun, ComparisonOf, ComparisonResult, ExplainOptions, Explained,
    ExplanationResult, PredictionOf, ReportWriter, RequestOf, ResultOf, TaskModel, compare_methods,
    explain_batch, explain_batch_with, explain_prediction, explain_with, quick_explain,
    report_title_of, visualize_batch, write_report,
};
pub use cache::{CacheRecord, ExplanationCache, model_fingerprint};
pub use detection::{
    DetectionExplanation, DetectionOptions, Drise, ExplainedDetections, drise_config,
    explain_detection,
};
pub use inputs::{InputFailure, Inputs, ReadInputs, no_readable_input, unique_names};
pub use lumen_core::{
    ClassLogit, Device, ExplainableModel, Heatmaps, LumenError, Precision, Result, Target,
    device_from_str, device_with_precision, set_precision,
};
pub use lumen_core::{named_choices, to_host};
pub use lumen_methods::{
    BaselineKind, HeadFusion, IntegrationRule, Method, MethodOptions, Noise, method_info,
    method_names,
};
pub use lumen_models::{
    ARCHITECTURES, BUNDLED, Detector, LoadedDetector, LoadedModel, LoadedSegmentor, Segmentor,
    ZooModel, bundled_weights_present, check_model_name, is_detection_architecture,
    is_segmentation_architecture, segmentation_architectures, shapes,
};
pub use lumen_report::{
    Colormap, Layout, Map, explanation_figure, feature_grid, image_grid, layer_comparison_figure,
};
pub use lumen_tasks::{
    BoxRequest, ClassPrediction, Classification, DecodeConfig, Detection, DetectionPrediction,
    DetectionScoreKind, ObjectDetection, SegmentRegion, Segmentation, SegmentationPrediction,
    SegmentationRequest, Task, Uncertainty, UncertaintyScale,
};
pub use npy_input::{NpyBatch, read_npy_batch};
pub use output::{AtomicFile, NpyRowWriter, save_png, write_atomically, write_npy};
pub use scale::{MergeSummary, Shard, merge_shards};
pub use segmentation::{SegmentationExplanation, SegmentationOptions, explain_segmentation};

/// The README's Rust examples compile as doc tests, so the README cannot drift from
/// the API.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
