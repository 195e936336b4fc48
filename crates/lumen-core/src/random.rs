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

use crate::Device;

/// `count` standard normal values from the host generator seeded with `seed`.
pub fn normal_values(count: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| rand_distr::StandardNormal.sample(&mut rng))
        .collect()
}

/// `count` values uniform in `[low, high)` from the host generator seeded with `seed`.
pub fn uniform_values(count: usize, low: f32, high: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = rand_distr::Uniform::new(low, high.max(low + f32::EPSILON)).expect("low < high");
    (0..count).map(|_| dist.sample(&mut rng)).collect()
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

/// Uniform values in `[low, high)` of `shape`.
pub fn uniform(
    shape: [usize; 4],
    low: f32,
    high: f32,
    seed: Option<u64>,
    device: &Device,
) -> Tensor<4> {
    match seed {
        Some(seed) => {
            let values = uniform_values(shape.iter().product(), low, high, seed);
            Tensor::from_data(TensorData::new(values, shape), device)
        }
        None => Tensor::random(
            shape,
            Distribution::Uniform(low as f64, high as f64),
            device,
        ),
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_values_and_sensible_moments() {
        let device = Device::flex();
        let a = crate::to_host(standard_normal([2, 3, 20, 20], Some(5), &device));
        let b = crate::to_host(standard_normal([2, 3, 20, 20], Some(5), &device));
        let c = crate::to_host(standard_normal([2, 3, 20, 20], Some(6), &device));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1 && (var - 1.0).abs() < 0.1, "{mean} {var}");
        let u = crate::to_host(uniform([1, 1, 10, 10], -2.0, 3.0, Some(1), &device));
        assert!(u.iter().all(|v| (-2.0..3.0).contains(v)));
    }
}
