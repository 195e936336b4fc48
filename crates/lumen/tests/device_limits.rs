//! A device's own limits: a chunk too large for the device is an error that names the
//! memory knob, not a panic, and the default chunk fits where the explicit one did
//! not. On lavapipe (CI's wgpu step) a storage buffer holds at most 128 MiB; the
//! bundled shapes-cnn's stem output on a 256x256 input is 16x128x128 values a row
//! (1 MiB), so 160 rows in one chunk need 160 MiB, and the default bound (24 rows)
//! fits. On the CPU backends both runs succeed and agree.

mod common;

use common::{device, max_abs_diff};
use lumen::core::burn::tensor::Distribution;
use lumen::core::{ClassLogit, Tensor, activation_rows, default_rows_for, to_host};
use lumen::methods::{Noise, NoiseKind, NoiseTunnel, Saliency};
use lumen::{LoadedModel, LumenError, Method, ZooModel};

fn smoothgrad(batch_size: Option<usize>) -> NoiseTunnel<ZooModel> {
    NoiseTunnel {
        inner: Box::new(Saliency),
        kind: NoiseKind::SmoothGrad,
        samples: 80,
        noise: Noise::Absolute(0.2),
        seed: Some(3),
        batch_size,
    }
}

#[test]
fn a_chunk_too_large_for_the_device_is_an_error_and_the_default_chunk_fits() {
    let device = device();
    let loaded = LoadedModel::bundled("shapes-cnn", &device).unwrap();
    let input = Tensor::<4>::random([2, 3, 256, 256], Distribution::Normal(0.0, 1.0), &device);
    let target = ClassLogit(vec![0, 1]);
    // The input's bound (32 rows of 3x224x224) binds: the stem is 1.3x the input.
    assert_eq!(default_rows_for(&loaded.model, &input), 24);
    assert_eq!(activation_rows(&loaded.model, &input), 98);

    // All 160 noisy rows in one chunk: a 160 MiB layer buffer.
    let whole = smoothgrad(Some(160))
        .explain(&loaded.model, input.clone(), &target)
        .and_then(|e| to_host(e.attributions.expect("saliency attributions")));
    let lavapipe = std::env::var("LUMEN_TEST_DEVICE").is_ok_and(|d| d.starts_with("wgpu"));
    let whole = match whole {
        Err(LumenError::Device { message, hint }) if lavapipe => {
            let error = LumenError::Device { message, hint }.to_string();
            assert!(error.contains("can't allocate buffer"), "{error}");
            assert!(error.contains("--internal-batch-size"), "{error}");
            assert_eq!(error.lines().count(), 1, "{error}");
            None
        }
        Ok(values) if !lavapipe => Some(values),
        // On wgpu this expects lavapipe's 128 MiB buffer limit (CI's software Vulkan);
        // a real GPU holds the chunk.
        other => panic!(
            "wgpu (assumed lavapipe): {lavapipe}; got {:?}",
            other.map(|v| v.len())
        ),
    };

    // The default chunks, after the failure (the device still works).
    let chunked = smoothgrad(None)
        .explain(&loaded.model, input, &target)
        .unwrap();
    let chunked = to_host(chunked.attributions.unwrap()).unwrap();
    assert!(chunked.iter().all(|v| v.is_finite()));
    assert!(chunked.iter().any(|v| *v != 0.0));
    if let Some(whole) = whole {
        // Seeded per image: the chunking changes no draw, only the summation order.
        let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&whole, &chunked);
        assert!(diff <= 1e-4 * scale, "{diff} of {scale}");
    }
}
