//! The one batching loop: run work over `rows` derived inputs (path points, noisy
//! copies, masked or perturbed images) in chunks of at most `chunk` rows, so that
//! memory stays bounded (captum's `_batched_operator` plays this role).

use std::ops::Range;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::Result;

/// Input values per internal batch when the caller sets no size: 32 rows of a
/// 3x224x224 image. Rows scale inversely with the input's size, so memory stays about
/// the same on any input (ResNet-18 with gradients: about 20 MB a row at 224x224).
pub const DEFAULT_BATCH_VALUES: usize = 32 * 3 * 224 * 224;

/// Rows per internal batch for inputs of `[channels, height, width]` when the caller
/// gives none: [`DEFAULT_BATCH_VALUES`] worth of values, at least one row.
pub fn default_chunk_rows([channels, height, width]: [usize; 3]) -> usize {
    (DEFAULT_BATCH_VALUES / (channels * height * width).max(1)).max(1)
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

    #[test]
    fn default_rows_scale_with_the_input_size() {
        assert_eq!(default_chunk_rows([3, 224, 224]), 32);
        assert_eq!(default_chunk_rows([3, 112, 112]), 128);
        assert_eq!(default_chunk_rows([3, 2048, 2048]), 1);
    }
}
