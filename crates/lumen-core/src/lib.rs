//! Backend selection and the shared vocabulary of Lumen: [`Tap`] hook points,
//! the [`ExplainableModel`] trait, [`Target`] scores, [`Heatmaps`], the input
//! pipeline and one error type.
//!
//! Depends on `burn` and `image` (for reading inputs) only; it must never pull in
//! plotting, the model zoo or a GPU backend that the user did not enable by feature.

pub mod batching;
mod choice;
pub mod device;
pub mod error;
pub mod heatmap;
pub mod input;
pub mod model;
pub mod profile;
pub mod random;
pub mod region;
pub mod tap;
pub mod target;

pub use burn;

/// Copy a float tensor's values to the host, row-major.
///
/// Lazy backends (cubecl's wgpu and CUDA) run the queued work here, so this is where
/// a device failure surfaces: out of memory, a buffer larger than the device allows
/// (lavapipe's 128 MiB), a lost GPU. It is an error ([`LumenError::Device`]), not a
/// panic: too large a batch is the caller's to change.
pub fn to_host<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor.try_into_vec_as::<f32>().map_err(LumenError::device)
}
pub use batching::{
    DEFAULT_ACTIVATION_VALUES, DEFAULT_BATCH_VALUES, UNPROBED_BATCH_ROWS, activation_rows,
    default_batch_rows_for, default_chunk_rows, default_forward_rows_for, default_rows_for,
    index_tensor, map_chunks, row_chunks, unprobed_forward_rows,
};
pub use burn::tensor::{Device, Tensor};
pub use device::{
    DeviceSpec, Precision, compiled_features, default_device, device_from_str,
    device_with_precision, seed, set_precision, with_gradients,
};
pub use error::{LumenError, Result};
pub use heatmap::{Heatmaps, Polarity};
pub use input::{
    DEFAULT_MAX_IMAGE_MB, DataConfig, Interpolation, ReadImage, load_batch, load_image, read_image,
};
pub use model::{
    Classifier, ConvOp, DetectorOutput, ExplainableModel, LayerInfo, LayerKind, as_feature_map,
    layer_list, tokens_to_map,
};
pub use region::Region;
pub use tap::{
    CountingTap, GradientTap, NoTap, Prefixed, Recorder, ReplaceTap, Tap, TapChain, TapTensor,
    Tappable, backward_if_tracked,
};
pub use target::{
    ClassLogit, ClassProbability, ClassRegionScore, Target, predicted_classes, target_for_rows,
};
