//! Random tensors for noise and random baselines.
//!
//! With a seed, values come from a host generator (ChaCha-based `StdRng`), so a seed
//! gives the same numbers on every backend and whatever else shares the device's
//! generator (the device RNG is global state: a concurrent `Tensor::random` elsewhere
//! would change seeded results). Without a seed, the device generates them.

use burn::tensor::{Distribution, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::Distribution as _;

use crate::{Device, LumenError, Result};

/// `count` standard normal values from the host generator seeded with `seed`.
pub fn normal_values(count: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| rand_distr::StandardNormal.sample(&mut rng))
        .collect()
}

/// `count` values uniform in `[low, high)` from the host generator seeded with `seed`
/// (see [`UniformStream::new`] for the bounds it takes).
pub fn uniform_values(count: usize, low: f32, high: f32, seed: u64) -> Result<Vec<f32>> {
    Ok(UniformStream::new(low, high, seed)?.take(count))
}

/// `count` values uniform in `[0, 1)` from the host generator seeded with `seed`.
pub fn unit_values(count: usize, seed: u64) -> Vec<f32> {
    UniformStream::unit(seed).take(count)
}

/// The stream of [`uniform_values`], drawn a part at a time: `take(a)` then `take(b)`
/// gives what `uniform_values(a + b, ..)` gives, so work done in chunks can draw each
/// chunk's values when it needs them instead of all of them up front.
pub struct UniformStream {
    rng: StdRng,
    dist: rand_distr::Uniform<f32>,
}

impl UniformStream {
    /// The stream of values uniform in `[low, high)` seeded with `seed`. The bounds
    /// must be finite with `low <= high` (`low == high`: that one value; a range
    /// narrower than `f32::EPSILON` is widened to it, as it always was), and their
    /// distance finite.
    pub fn new(low: f32, high: f32, seed: u64) -> Result<Self> {
        if !(low.is_finite() && high.is_finite() && low <= high) {
            return Err(LumenError::InvalidArgument(format!(
                "a uniform range needs finite bounds low <= high, got [{low}, {high})"
            )));
        }
        let widened = high.max(low + f32::EPSILON);
        // A bound so large that `low + EPSILON` rounds back to `low`: the one value.
        let dist = if widened > low {
            rand_distr::Uniform::new(low, widened)
        } else {
            rand_distr::Uniform::new_inclusive(low, low)
        }
        .map_err(|e| {
            LumenError::InvalidArgument(format!(
                "no uniform distribution over [{low}, {high}): {e}"
            ))
        })?;
        Ok(Self {
            rng: StdRng::seed_from_u64(seed),
            dist,
        })
    }

    /// The stream of values uniform in `[0, 1)` seeded with `seed`.
    pub fn unit(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            dist: rand_distr::Uniform::new(0.0, 1.0).expect("[0, 1) is a valid range"),
        }
    }

    /// The next `count` values.
    pub fn take(&mut self, count: usize) -> Vec<f32> {
        (0..count)
            .map(|_| self.dist.sample(&mut self.rng))
            .collect()
    }
}

/// Standard normal values `N(0, 1)` of `shape`.
pub fn standard_normal(shape: [usize; 4], seed: Option<u64>, device: &Device) -> Tensor<4> {
    match seed {
        Some(seed) => {
            let values = normal_values(shape.iter().product(), seed);
            Tensor::from_data(TensorData::new(values, shape), device)
        }
        None => Tensor::random(shape, Distribution::Normal(0.0, 1.0), device),
    }
}

/// One SplitMix64 step: a well-mixed 64-bit value of `z`.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed seed for row `row` of the stream `seed`.
fn row_seed(seed: u64, row: usize) -> u64 {
    mix(seed ^ mix(row as u64))
}

/// A seed per image of a batch `[B, ...]` under `seed`, mixed from the image's own
/// values: an image gets the same random draws wherever it sits in a batch, and alone,
/// so that results do not depend on what else was explained with it (the cache and
/// the shards rely on that).
pub fn image_seeds<const D: usize>(images: &Tensor<D>, seed: u64) -> crate::Result<Vec<u64>> {
    Ok(image_seeds_of(
        &crate::to_host(images.clone())?,
        images.dims()[0],
        seed,
    ))
}

/// [`image_seeds`] of `images` images already on the host, row-major.
pub fn image_seeds_of(values: &[f32], images: usize, seed: u64) -> Vec<u64> {
    let per_image = values.len() / images.max(1);
    (0..images)
        .map(|i| {
            values[i * per_image..(i + 1) * per_image]
                .iter()
                .fold(mix(seed), |h, v| mix(h ^ u64::from(v.to_bits())))
        })
        .collect()
}

/// Standard normal rows `[rows.len(), c, h, w]`, row `k` drawn from its own generator
/// seeded from `rows[k] = (stream, index)`: what a row holds depends on its stream and
/// index alone, not on its place in the tensor. Rows are drawn in parallel.
pub fn standard_normal_keyed(
    rows: &[(u64, usize)],
    [c, h, w]: [usize; 3],
    device: &Device,
) -> Tensor<4> {
    use rayon::prelude::*;
    let per_row = c * h * w;
    let mut values = vec![0f32; rows.len() * per_row];
    values
        .par_chunks_mut(per_row.max(1))
        .zip(rows)
        .for_each(|(row, &(stream, index))| {
            let mut rng = StdRng::seed_from_u64(row_seed(stream, index));
            for value in row {
                *value = rand_distr::StandardNormal.sample(&mut rng);
            }
        });
    Tensor::from_data(TensorData::new(values, [rows.len(), c, h, w]), device)
}

/// Uniform values in `[low, high)` of `shape` (the bounds as [`UniformStream::new`]
/// takes them, seeded or not).
pub fn uniform(
    shape: [usize; 4],
    low: f32,
    high: f32,
    seed: Option<u64>,
    device: &Device,
) -> Result<Tensor<4>> {
    // Checked on both paths: unseeded, the device would draw from a NaN or infinite
    // range without a word.
    let mut stream = UniformStream::new(low, high, seed.unwrap_or(0))?;
    Ok(match seed {
        Some(_) => {
            let values = stream.take(shape.iter().product());
            Tensor::from_data(TensorData::new(values, shape), device)
        }
        None => Tensor::random(
            shape,
            Distribution::Uniform(low as f64, high as f64),
            device,
        ),
    })
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    #[test]
    fn a_uniform_stream_drawn_in_parts_is_the_whole_stream() {
        let whole = uniform_values(10, 0.0, 1.0, 4).unwrap();
        let mut stream = UniformStream::new(0.0, 1.0, 4).unwrap();
        let mut parts = stream.take(3);
        parts.extend(stream.take(7));
        assert_eq!(parts, whole);
        // Not a constant: another seed gives other values.
        assert_ne!(uniform_values(10, 0.0, 1.0, 5).unwrap(), whole);
        // The unit stream is the same stream.
        assert_eq!(unit_values(10, 4), whole);
    }

    #[test]
    fn bad_uniform_ranges_are_errors_and_a_point_range_is_its_value() {
        for (low, high) in [
            (f32::NAN, 1.0),
            (0.0, f32::NAN),
            (f32::NEG_INFINITY, 0.0),
            (0.0, f32::INFINITY),
            (1.0, 0.0),
            (-3e38, 3e38),
        ] {
            let error = UniformStream::new(low, high, 1).err();
            assert!(
                matches!(error, Some(LumenError::InvalidArgument(_))),
                "[{low}, {high}) gave {error:?}"
            );
        }
        // At 3e7, low + EPSILON rounds back to low: the stream is that value.
        assert_eq!(uniform_values(3, 3e7, 3e7, 1).unwrap(), vec![3e7; 3]);
        let near = uniform_values(100, 2.0, 2.0, 1).unwrap();
        assert!(
            near.iter()
                .all(|v| (2.0..=2.0 + 2.0 * f32::EPSILON).contains(v))
        );
        assert!(uniform([1, 1, 2, 2], f32::NAN, 1.0, None, &Device::flex()).is_err());
    }

    #[test]
    fn keyed_rows_do_not_depend_on_their_place() {
        let device = Device::flex();
        let keys: Vec<(u64, usize)> = (0..7).map(|r| (9, r)).collect();
        let whole = crate::to_host(standard_normal_keyed(&keys, [3, 5, 4], &device)).unwrap();
        let mut chunked = vec![];
        for range in [0..2, 2..6, 6..7] {
            chunked.extend(
                crate::to_host(standard_normal_keyed(&keys[range], [3, 5, 4], &device)).unwrap(),
            );
        }
        assert_eq!(whole, chunked);
        // A row alone, or first, holds what it holds among the others.
        let alone = crate::to_host(standard_normal_keyed(&[(9, 3)], [3, 5, 4], &device)).unwrap();
        assert_eq!(alone, whole[180..240]);
        let other: Vec<(u64, usize)> = (0..7).map(|r| (10, r)).collect();
        assert_ne!(
            whole,
            crate::to_host(standard_normal_keyed(&other, [3, 5, 4], &device)).unwrap()
        );
        // Rows are not copies of each other, and the values are standard normal.
        assert_ne!(whole[..60], whole[60..120]);
        let n = whole.len() as f32;
        let mean = whole.iter().sum::<f32>() / n;
        let var = whole.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
        assert!(mean.abs() < 0.15 && (var - 1.0).abs() < 0.2, "{mean} {var}");
    }

    #[test]
    fn a_seed_gives_the_same_values_and_sensible_moments() {
        let device = Device::flex();
        let a = crate::to_host(standard_normal([2, 3, 20, 20], Some(5), &device)).unwrap();
        let b = crate::to_host(standard_normal([2, 3, 20, 20], Some(5), &device)).unwrap();
        let c = crate::to_host(standard_normal([2, 3, 20, 20], Some(6), &device)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
        let u =
            crate::to_host(uniform([1, 1, 10, 10], -2.0, 3.0, Some(1), &device).unwrap()).unwrap();
        assert!(u.iter().all(|v| (-2.0..3.0).contains(v)));
    }
}
