//! Task adapters for Lumen: classification, detection and segmentation targets.
//!
//! Not built yet: this crate will hold the detection-box and segmentation-region [`Target`](lumen_core::Target)s. Depends on `lumen-core` only.
