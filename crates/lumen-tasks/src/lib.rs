//! Task adapters for Lumen: what a model of a task predicts, what a user can ask to
//! have explained, and the [`Target`](lumen_core::Target) that turns that request into
//! one differentiable score per image.
//!
//! A [`Task`] is the seam between attribution methods (which only see targets) and
//! everything a person sees: predictions in figure titles, JSON and reports. The
//! high-level API of the `lumen` facade is generic over it. [`Classification`] and
//! [`Segmentation`] implement it; detection is next.
//!
//! Depends on `lumen-core` (and serde) only: never on methods, the zoo or plotting.
//!
//! ```
//! use lumen_core::{Device, Tensor};
//! use lumen_tasks::{Classification, Task};
//!
//! let device = Device::default();
//! let logits = Tensor::<2>::from_floats([[0.1, 2.0, -1.0]], &device);
//! let task = Classification::new(3, Some(vec!["cat".into(), "dog".into(), "fox".into()]));
//! let predictions = task.predict(&logits)?;
//! assert_eq!(predictions[0].class, 1);
//! assert_eq!(task.describe_request(&task.default_request(&predictions[0])), "dog (1)");
//! # Ok::<(), lumen_core::LumenError>(())
//! ```

mod classification;
mod detection;
mod drise;
mod segmentation;
mod task;

pub use classification::{ClassPrediction, Classification};
pub use detection::{
    BoxRequest, BoxScore, DecodeConfig, Detection, DetectionPrediction, DetectionScoreKind,
    ObjectDetection, box_iou, decode_detections, dense_candidates, dense_logits,
    renormalize_in_boxes,
};
pub use drise::{
    DriseConfig, MAX_DRISE_MASKS, drise, drise_boxes, drise_masks, drise_with_masks, rise_masks,
};
/// The segmentation target lives in `lumen-core` (the training monitors use it too).
pub use lumen_core::ClassRegionScore;
pub use segmentation::{
    ClassShare, SegmentRegion, Segmentation, SegmentationPrediction, SegmentationRequest,
    Uncertainty, UncertaintyScale, class_maps_of, uncertainty_map,
};
pub use task::{Outline, Task};
