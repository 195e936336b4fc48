//! Helpers shared by the model tests: the device under test and fixture reading.

#![allow(dead_code)]

use std::path::PathBuf;

use lumen_core::burn::tensor::{Tensor, TensorData};
use lumen_core::{Device, device_from_str};

/// The device the parity tests run on: `LUMEN_TEST_DEVICE` (e.g. `tch:cpu`, `wgpu`),
/// else the CPU. CI runs the same tests once per compiled backend.
pub fn test_device() -> Device {
    let spec = std::env::var("LUMEN_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    device_from_str(&spec).unwrap_or_else(|e| panic!("LUMEN_TEST_DEVICE: {e}"))
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A float32 tensor from a fixture's safetensors file, with its shape.
pub fn read_tensor(file: &str, key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let view = tensors
        .tensor(key)
        .unwrap_or_else(|e| panic!("{file}:{key}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{file}:{key}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (values, view.shape().to_vec())
}

pub fn tensor4(values: Vec<f32>, shape: &[usize], device: &Device) -> Tensor<4> {
    let shape: [usize; 4] = shape.try_into().expect("rank 4");
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    lumen_core::to_host(t).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
