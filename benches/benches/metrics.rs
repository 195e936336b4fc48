//! Metric cost on the bundled shapes CNN (128x128): a batch of 16 images with its
//! GradCAM maps through deletion (32 steps: 528 scored images), ROAD (9 percentages,
//! imputation included) and max-sensitivity (5 GradCAM re-explanations per image).
//!
//! `cargo bench -p lumen-benches --bench metrics`; `LUMEN_BENCH_DEVICE=tch:cuda:0` with
//! `--features tch` on a GPU (ROAD's imputation stays on the CPU).

use criterion::{Criterion, criterion_group, criterion_main};
use lumen::LoadedModel;
use lumen::core::ExplainableModel;
use lumen::core::{ClassLogit, ClassProbability, Device, device_from_str, predicted_classes};
use lumen::methods::{Baseline, Cam, GradCam, Method};
use lumen::metrics::{
    CurveConfig, CurveKind, RoadConfig, RoadOrder, SensitivityConfig, perturbation_curve, road,
    sensitivity,
};
use lumen::models::shapes::{EVALUATION_SEED, shape_samples};

fn device() -> Device {
    device_from_str(&std::env::var("LUMEN_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap()
}

fn metrics(c: &mut Criterion) {
    let device = device();
    let loaded = LoadedModel::bundled("shapes-cnn", &device).unwrap();
    let model = &loaded.model;
    let images: Vec<_> = shape_samples(EVALUATION_SEED, 0, 16)
        .into_iter()
        .map(|s| s.image)
        .collect();
    let input = loaded.data_config.to_tensor(&images, &device).unwrap();
    let classes = predicted_classes(&model.forward(input.clone())).unwrap();
    let gradcam = Cam::new(&GradCam);
    let maps = gradcam
        .explain(model, input.clone(), &ClassLogit(classes.clone()))
        .unwrap()
        .heatmaps;
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    group.bench_function("deletion32/shapes-cnn/batch16", |b| {
        let config = CurveConfig {
            steps: 32,
            baseline: Baseline::Mean,
            batch_size: Some(64),
        };
        b.iter(|| {
            perturbation_curve(
                model,
                &input,
                &maps,
                &ClassProbability(classes.clone()),
                CurveKind::Deletion,
                &config,
            )
            .unwrap()
        })
    });
    group.bench_function("road-morf9/shapes-cnn/batch16", |b| {
        b.iter(|| {
            road(
                model,
                &input,
                &maps,
                &classes,
                RoadOrder::MoRF,
                &RoadConfig::default(),
            )
            .unwrap()
        })
    });
    group.bench_function("max-sensitivity5-gradcam/shapes-cnn/batch16", |b| {
        let config = SensitivityConfig {
            samples: 5,
            ..SensitivityConfig::default()
        };
        b.iter(|| {
            sensitivity(
                model,
                &gradcam,
                &input,
                &ClassLogit(classes.clone()),
                &config,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
