//! Training-time monitors for Lumen, for burn-train 0.22: watch how a model's
//! explanations of fixed sample images and its feature statistics evolve during
//! training, logged to TensorBoard event files, an MLflow server and an offline HTML
//! timeline (the seed's `InterpretationCallback` and `FeatureMonitorCallback`).
//!
//! - [`ExplanationMonitor`] and [`FeatureMonitor`] measure a `valid()` copy of the
//!   model; any [`Monitor`] of your own works too.
//! - [`TensorBoard`], [`Mlflow`] and [`Timeline`] are the [`Sink`]s; a sink that fails
//!   (server down, disk full) is a warning and training goes on.
//! - [`Monitors::strategy`] is the hook: burn-train's `Learner` has no callbacks, so
//!   the monitors ride on a training strategy (why, in [`strategy`]).
//!
//! W&B users point `wandb sync` (or `wandb.init(sync_tensorboard=True)`) at the
//! TensorBoard folder. See `docs/training.md`.

pub mod mlflow;
pub mod monitor;
pub mod render;
pub mod sink;
pub mod strategy;
pub mod tensorboard;
pub mod timeline;

pub use mlflow::Mlflow;
pub use monitor::{
    Explained, ExplanationMonitor, FeatureMonitor, LoaderBatches, Monitor, MonitoredOutput, Point,
    ProbeBatches, Schedule,
};
pub use render::LineRenderer;
pub use sink::{Histogram, Moment, Sink, SinkError, SinkResult, Sinks};
pub use strategy::{EpochRecord, MonitoredStrategy, Monitors, sink_error};
pub use tensorboard::TensorBoard;
pub use timeline::Timeline;
