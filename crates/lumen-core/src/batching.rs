//! The one batching loop: run work over `rows` derived inputs (path points, noisy
//! copies, masked or perturbed images) in chunks of at most `chunk` rows, so that
//! memory stays bounded (captum's `_batched_operator` plays this role).

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::Result;
use crate::model::ExplainableModel;
use crate::tap::{Tap, TapTensor};

/// Input values per internal batch when the caller sets no size: 32 rows of a
/// 3x224x224 image. Rows scale inversely with the input's size, so memory stays about
/// the same on any input (ResNet-18 with gradients: about 20 MB a row at 224x224).
pub const DEFAULT_BATCH_VALUES: usize = 32 * 3 * 224 * 224;

/// Rows per internal batch for inputs of `[channels, height, width]` when the caller
/// gives none: [`DEFAULT_BATCH_VALUES`] worth of values, at least one row.
pub fn default_chunk_rows([channels, height, width]: [usize; 3]) -> usize {
    (DEFAULT_BATCH_VALUES / (channels * height * width).max(1)).max(1)
}

/// Values of one layer's activations per internal batch when the caller sets no size:
/// ResNet-18's stem (64x112x112) at 32 rows, about 100 MB in float32. A chunk's
/// activations at a layer (and their gradient) are one device buffer each, and
/// lavapipe's Vulkan refuses buffers over 128 MiB. Models whose layers are large next
/// to their input hit this bound before [`DEFAULT_BATCH_VALUES`]: a 32-channel layer at
/// the input's full resolution is 10.7x a 3-channel input (ResNet's stem: 5.3x).
pub const DEFAULT_ACTIVATION_VALUES: usize = 32 * 64 * 112 * 112;

/// Rows per internal batch for `model` on inputs shaped like `input` when the caller
/// gives none: [`default_chunk_rows`] of the input size, and fewer where a layer's
/// activations would exceed [`DEFAULT_ACTIVATION_VALUES`] ([`activation_rows`]).
pub fn default_rows_for<M: ExplainableModel + ?Sized>(model: &M, input: &Tensor<4>) -> usize {
    let [_, c, h, w] = input.dims();
    default_chunk_rows([c, h, w]).min(activation_rows(model, input))
}

/// Rows per forward-only internal batch (masked, perturbed or occluded copies scored
/// without a backward pass) when the caller gives none: twice [`default_chunk_rows`]
/// of the input size (no activations are kept for a backward pass), 64 at 3x224x224,
/// fewer on larger inputs; and the same bound on one layer's activations as
/// [`default_rows_for`] (32 rows of a ResNet's 64x112x112 stem), which a forward-only
/// pass still holds in one buffer.
pub fn default_forward_rows_for<M: ExplainableModel + ?Sized>(
    model: &M,
    input: &Tensor<4>,
) -> usize {
    let [_, c, h, w] = input.dims();
    (2 * default_chunk_rows([c, h, w])).min(activation_rows(model, input))
}

/// Batches of at most this many images (and within [`default_chunk_rows`] of their
/// size) go through a caller's pass whole, without the one-row probe of
/// [`activation_rows`]: on a CPU a one-image forward costs about two images' time in a
/// batch, which would be a fifth of an 8-image GradCAM. Only a layer more than 5.3
/// times its input's values (a ResNet stem's ratio) can then exceed
/// [`DEFAULT_ACTIVATION_VALUES`], by that excess.
pub const UNPROBED_BATCH_ROWS: usize = 8;

/// Images per pass when a caller splits a batch of `input`'s images (the facade's
/// predictions and explanations): the whole batch when it is small
/// ([`UNPROBED_BATCH_ROWS`]), else [`default_rows_for`] (a pass with gradients).
pub fn default_batch_rows_for<M: ExplainableModel + ?Sized>(model: &M, input: &Tensor<4>) -> usize {
    match unprobed(input, default_chunk_rows) {
        Some(rows) => rows,
        None => default_rows_for(model, input),
    }
}

/// For forward-only passes (feature scans): the whole batch's rows when it is small
/// enough to skip the probe ([`UNPROBED_BATCH_ROWS`], within twice
/// [`default_chunk_rows`]); `None` when [`default_forward_rows_for`] must size it. A
/// caller that scans many batches of one shape probes once and keeps the result.
pub fn unprobed_forward_rows(input: &Tensor<4>) -> Option<usize> {
    unprobed(input, |shape| 2 * default_chunk_rows(shape))
}

/// The whole batch's rows when it is small enough to skip the probe.
fn unprobed(input: &Tensor<4>, input_bound: impl Fn([usize; 3]) -> usize) -> Option<usize> {
    let [b, c, h, w] = input.dims();
    (b <= UNPROBED_BATCH_ROWS.min(input_bound([c, h, w]))).then_some(b.max(1))
}

/// Rows whose activations at the model's largest tapped layer fit
/// [`DEFAULT_ACTIVATION_VALUES`], at least one; measured from one forward pass of the
/// first row of `input` (its shapes: a fraction of the chunked work). A model that taps
/// no layer is not bounded here (`usize::MAX`).
pub fn activation_rows<M: ExplainableModel + ?Sized>(model: &M, input: &Tensor<4>) -> usize {
    let [b, _, _, _] = input.dims();
    if b == 0 {
        return usize::MAX;
    }
    let largest = LargestActivation::default();
    let _ = model.forward_tapped(input.clone().narrow(0, 0, 1).detach(), &largest);
    match largest.values.load(Ordering::Relaxed) {
        0 => usize::MAX,
        per_row => (DEFAULT_ACTIVATION_VALUES / per_row).max(1),
    }
}

/// Records the largest activation per row over the layers a forward pass visits.
#[derive(Default)]
struct LargestActivation {
    values: AtomicUsize,
}

impl Tap for LargestActivation {
    fn visit_tensor(&self, _layer: &str, tensor: TapTensor) -> TapTensor {
        let per_row = tensor.dims()[1..].iter().product::<usize>();
        self.values.fetch_max(per_row, Ordering::Relaxed);
        tensor
    }
}

/// The row ranges `0..chunk, chunk..2*chunk, ...` covering `0..rows`; a `chunk` of 0
/// is read as 1.
pub fn row_chunks(rows: usize, chunk: usize) -> impl Iterator<Item = Range<usize>> {
    let chunk = chunk.max(1);
    (0..rows)
        .step_by(chunk)
        .map(move |start| start..(start + chunk).min(rows))
}

/// Run `work` on each chunk of rows in order and collect its results; the first error
/// stops the loop.
pub fn map_chunks<T>(
    rows: usize,
    chunk: usize,
    work: impl FnMut(Range<usize>) -> Result<T>,
) -> Result<Vec<T>> {
    row_chunks(rows, chunk).map(work).collect()
}

/// Indices as an `Int` tensor `[n]` on `device`, for `select` and `select_assign`.
pub fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_rows_once_in_order() {
        let ranges: Vec<_> = row_chunks(7, 3).collect();
        assert_eq!(ranges, vec![0..3, 3..6, 6..7]);
        assert_eq!(row_chunks(0, 3).count(), 0);
        assert_eq!(row_chunks(2, 0).collect::<Vec<_>>(), vec![0..1, 1..2]);
    }

    #[test]
    fn the_first_error_stops_the_loop() {
        let mut seen = vec![];
        let result = map_chunks(10, 4, |r| {
            seen.push(r.start);
            if r.start == 4 {
                Err(crate::LumenError::InvalidArgument("stop".into()))
            } else {
                Ok(r.len())
            }
        });
        assert!(result.is_err());
        assert_eq!(seen, vec![0, 4]);
        assert_eq!(map_chunks(10, 4, |r| Ok(r.len())).unwrap(), vec![4, 4, 2]);
    }

    /// A model whose one tapped layer has `channels` channels at the input's size.
    struct Wide {
        channels: usize,
    }

    impl ExplainableModel for Wide {
        type Output = Tensor<2>;

        fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
            let [b, _, h, w] = input.dims();
            let wide = input.mean_dim(1).expand([b, self.channels, h, w]);
            let wide = tap.visit("wide", wide);
            wide.mean_dims(&[2, 3]).reshape([b, self.channels])
        }

        fn layers(&self) -> Vec<crate::LayerInfo> {
            vec![crate::LayerInfo::new("wide", crate::LayerKind::FeatureMap)]
        }

        fn default_layer(&self) -> String {
            "wide".into()
        }

        fn input_shape(&self) -> [usize; 3] {
            [3, 8, 8]
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn default_rows_shrink_when_a_layer_is_large_next_to_the_input() {
        let device = Device::flex();
        let input = Tensor::<4>::zeros([2, 3, 128, 128], &device);
        // 32 channels at the full 128x128, 10.7x the input. The input alone allows 98
        // rows; the layer 49 (25.7M / 524288), about 100 MB a buffer.
        assert_eq!(default_chunk_rows([3, 128, 128]), 98);
        let wide = Wide { channels: 32 };
        assert_eq!(activation_rows(&wide, &input), 49);
        assert_eq!(default_rows_for(&wide, &input), 49);
        // A narrow layer leaves the input's bound in force.
        let narrow = Wide { channels: 3 };
        assert_eq!(default_rows_for(&narrow, &input), 98);
        // Forward-only work doubles the input's bound, not the layer's.
        assert_eq!(default_forward_rows_for(&narrow, &input), 196);
        assert_eq!(default_forward_rows_for(&wide, &input), 49);
        // No layer tapped: nothing to bound by.
        struct Untapped;
        impl ExplainableModel for Untapped {
            type Output = Tensor<2>;
            fn forward_tapped(&self, input: Tensor<4>, _: &dyn Tap) -> Tensor<2> {
                input.mean_dims(&[2, 3]).reshape([-1, 3])
            }
            fn layers(&self) -> Vec<crate::LayerInfo> {
                vec![]
            }
            fn default_layer(&self) -> String {
                String::new()
            }
            fn input_shape(&self) -> [usize; 3] {
                [3, 8, 8]
            }
        }
        assert_eq!(activation_rows(&Untapped, &input), usize::MAX);
        assert_eq!(default_rows_for(&Untapped, &input), 98);
        // Each row of the layer alone above the budget: one row at a time.
        let huge = Wide { channels: 2048 };
        assert_eq!(activation_rows(&huge, &input), 1);
    }

    #[test]
    fn default_rows_scale_with_the_input_size() {
        assert_eq!(default_chunk_rows([3, 224, 224]), 32);
        assert_eq!(default_chunk_rows([3, 112, 112]), 128);
        assert_eq!(default_chunk_rows([3, 2048, 2048]), 1);
    }
}
