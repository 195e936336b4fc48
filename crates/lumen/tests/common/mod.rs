//! Shared by the parity tests: the test device and the fixture readers.

use std::path::PathBuf;

use lumen::core::{Device, device_from_str};

/// `LUMEN_TEST_DEVICE` (e.g. `tch:cpu`, `tch:cuda:0`, `wgpu`), else the CPU.
pub fn device() -> Device {
    let spec = std::env::var("LUMEN_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    device_from_str(&spec).unwrap()
}

/// A file of the model zoo's fixtures (timm weights and inputs).
pub fn models_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../lumen-models/tests/fixtures")
        .join(name)
}

/// A float32 tensor of a safetensors file: values and shape.
pub fn read(path: PathBuf, key: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    // float16 where a fixture's tolerance allows it (the generators say which), and
    // bytes for pixels and masks.
    let values = match view.dtype() {
        safetensors::Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        safetensors::Dtype::F16 => view
            .data()
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        safetensors::Dtype::U8 => view.data().iter().map(|&b| b as f32).collect(),
        other => panic!("{key}: fixture dtype {other:?}, expected F32, F16 or U8"),
    };
    (values, view.shape().to_vec())
}

/// A zoo architecture with its timm fixture weights (10 classes) and the fixture's
/// input batch, on the test device.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn zoo_fixture(name: &str) -> (lumen::ZooModel, lumen::core::Tensor<4>) {
    use lumen::core::burn::tensor::TensorData;
    let device = device();
    let model = lumen::LoadedModel::load(
        name,
        10,
        models_fixture(&format!("{name}.safetensors")),
        &device,
    )
    .unwrap()
    .model;
    let (values, shape) = read(models_fixture(&format!("{name}_io.safetensors")), "input");
    let input = lumen::core::Tensor::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    (model, input)
}

/// Largest absolute difference of two equally long arrays.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "sizes differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// An int64 tensor of a zoo fixture file, as indices.
#[allow(dead_code)]
pub fn read_i64(name: &str, key: &str) -> Vec<usize> {
    let path = models_fixture(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensor(key)
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

/// A key of the trained shapes-cnn fixture (`shapes_cnn_metrics.safetensors`, written
/// by tools/reference/metric_fixtures.py).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn trained_fixture(key: &str) -> Vec<f32> {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/shapes_cnn_metrics.safetensors"),
        key,
    )
    .0
}

/// The bundled shapes-cnn on the test device, the trained fixture's first `count`
/// test-split shapes as its input, and their labels.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn trained_shapes_cnn(
    images: std::ops::Range<usize>,
) -> (lumen::LoadedModel, lumen::core::Tensor<4>, Vec<usize>) {
    const SIDE: usize = 128;
    let loaded = lumen::LoadedModel::bundled("shapes-cnn", &device()).unwrap();
    let pixels: Vec<u8> = trained_fixture("images").iter().map(|&v| v as u8).collect();
    let picked: Vec<image::RgbImage> = pixels
        .chunks(SIDE * SIDE * 3)
        .skip(images.start)
        .take(images.len())
        .map(|p| image::RgbImage::from_raw(SIDE as u32, SIDE as u32, p.to_vec()).unwrap())
        .collect();
    assert_eq!(picked.len(), images.len(), "the fixture has fewer images");
    let input = loaded.data_config.to_tensor(&picked, &device()).unwrap();
    let labels = trained_fixture("labels")[images]
        .iter()
        .map(|&l| l as usize)
        .collect();
    (loaded, input, labels)
}

/// Every other row and column of attributions `[b, c, h, w]`, on the host: what the
/// method fixtures keep of maps at input size (tools/reference/method_fixtures.py's
/// `compact`).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn every_other_pixel(attributions: lumen::core::Tensor<4>) -> Vec<f32> {
    let [b, c, h, w] = attributions.dims();
    let values = lumen::core::to_host(attributions).unwrap();
    let mut kept = Vec::with_capacity(b * c * h.div_ceil(2) * w.div_ceil(2));
    for plane in values.chunks(h * w).take(b * c) {
        for row in plane.chunks(w).step_by(2) {
            kept.extend(row.iter().step_by(2));
        }
    }
    kept
}

/// The generators' `hashed_normal` (tools/reference/method_fixtures.py): N(0, stdev)
/// from SplitMix64 of (seed, index) and Box-Muller, so a fixture need not store it.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn hashed_normal(shape: [usize; 4], seed: u64, stdev: f64) -> Vec<f32> {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let count: usize = shape.iter().product();
    (0..count as u64)
        .map(|i| {
            let a = mix(seed ^ mix(2 * i));
            let b = mix(seed ^ mix(2 * i + 1));
            let u1 = ((a >> 11) as f64 + 0.5) / 2f64.powi(53);
            let u2 = (b >> 11) as f64 / 2f64.powi(53);
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (z * stdev) as f32
        })
        .collect()
}
