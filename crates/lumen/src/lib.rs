//! Lumen: explain what vision models see.
//!
//! The facade over the Lumen crates: [`core`] (devices, taps, targets, heatmaps,
//! inputs), [`methods`] (attribution methods), [`models`] (the timm model zoo) and
//! [`report`] (colormaps and figures), with the high-level calls of [`api`].
//! Backends are chosen by cargo feature (`flex` default, `wgpu`, `tch`, `cuda`) and
//! the device at run time with [`core::device_from_str`].

pub mod api;
pub mod evaluate;

pub use lumen_core as core;
pub use lumen_methods as methods;
pub use lumen_metrics as metrics;
pub use lumen_models as models;
pub use lumen_report as report;

pub use api::{
    ComparisonResult, ExplainOptions, ExplanationResult, Inputs, compare_methods, explain_batch,
    explain_prediction, quick_explain, visualize_batch, write_report,
};
pub use lumen_core::{
    ClassLogit, Device, ExplainableModel, Heatmaps, LumenError, Result, Target, device_from_str,
};
pub use lumen_models::{ARCHITECTURES, LoadedModel, ZooModel};
