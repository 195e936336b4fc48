//! Feature visualization for Lumen: what a model's layers compute for an image.
//!
//! - [`FeatureVisualizer`] over any [`ExplainableModel`](lumen_core::ExplainableModel)
//!   (zoo, task models, a user's own Burn model through its taps): feature maps of a
//!   layer with channels chosen by mean activation, spatial variance or a seeded
//!   random pick; statistics per image and over a batch (AutoTimm's definitions);
//!   several layers compared from one forward pass; the top-activating channels.
//! - [`receptive`]: receptive fields three ways: theoretical (from the model's
//!   [`window_ops`](lumen_core::ExplainableModel::window_ops), Araujo et al. 2019),
//!   effective (the input gradient of one activation, Luo et al. 2016) and occlusion.
//!
//! Everything returns plain, serialisable data; drawing stays in `lumen-report`,
//! reached through the facade. Depends on `lumen-core` (and serde) only.
//! - [`maximize`]: activation maximization (lucid-style): an image optimised to
//!   excite a channel, a neuron, a direction or a class logit, from a decorrelated
//!   frequency parameterization under random jitter, scale and rotation.

pub mod maximize;
pub mod receptive;
pub mod statistics;
mod visualizer;

pub use maximize::{
    MAX_RESTARTS, MaximizeOptions, MaximizedImage, Objective, RESTART_FACTOR, SATURATED_SHARE,
};
pub use receptive::{Occlusion, ReceptiveField, ReceptiveMap, theoretical_receptive_fields};
pub use statistics::{
    FeatureStatistics, SortBy, StatisticsOptions, statistics, statistics_of_host,
};
pub use visualizer::{
    ChannelMap, ChannelScore, FeatureVisualizer, LayerStatistics, MapChoice, append_layers,
};
