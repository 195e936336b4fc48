//! Cost of the training monitors per call on the bundled shapes CNN (128x128), as
//! `train_shapes` runs them once per epoch: GradCAM of 8 sample images with overlays
//! written to a TensorBoard file, and the statistics and histograms of three layers
//! over 2 batches of 64 images. `docs/training.md` relates them to an epoch's time.
//!
//! `cargo bench -p lumen-benches --bench monitors`

use criterion::{Criterion, criterion_group, criterion_main};
use lumen::LoadedModel;
use lumen::core::{Device, device_from_str};
use lumen::models::ZooModel;
use lumen::models::shapes::{VALIDATION_SEED, shape_samples};
use lumen::train::{ExplanationMonitor, FeatureMonitor, Moment, Monitor, Sinks, TensorBoard};

fn device() -> Device {
    device_from_str(&std::env::var("LUMEN_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap()
}

fn monitors(c: &mut Criterion) {
    let device = device();
    let loaded = LoadedModel::bundled("shapes-cnn", &device).unwrap();
    let ZooModel::ResNet(model) = loaded.model else {
        panic!("shapes-cnn is a ResNet")
    };
    let model = *model;
    let config = loaded.data_config.clone();
    let images: Vec<_> = shape_samples(VALIDATION_SEED, 0, 8)
        .into_iter()
        .map(|s| s.image)
        .collect();
    let probe: Vec<_> = (0..2)
        .map(|k| {
            let batch: Vec<_> = shape_samples(VALIDATION_SEED, 64 * k, 64)
                .into_iter()
                .map(|s| s.image)
                .collect();
            config.to_tensor(&batch, &device).unwrap()
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("lumen-bench-monitors-{}", std::process::id()));
    let mut sinks = Sinks::new();
    sinks.push(Box::new(TensorBoard::create(&dir).unwrap()));
    let mut explanation = ExplanationMonitor::new(images, config, "gradcam").unwrap();
    let mut features = FeatureMonitor::new(["layer2", "layer3", "layer4"], probe)
        .unwrap()
        .num_batches(2)
        .unwrap();
    let at = Moment { epoch: 1, step: 1 };
    let mut group = c.benchmark_group("monitors");
    group.sample_size(10);
    group.bench_function("explanation-gradcam/shapes-cnn/8-samples", |b| {
        b.iter(|| explanation.observe(&model, at, &mut sinks).unwrap())
    });
    group.bench_function("features-3-layers/shapes-cnn/2-batches-of-64", |b| {
        b.iter(|| features.observe(&model, at, &mut sinks).unwrap())
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, monitors);
criterion_main!(benches);
