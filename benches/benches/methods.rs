//! Method cost on realistic models with random weights (speed does not depend on the
//! weights): GradCAM and a CAM comparison on resnet18 and resnet50 (batch 8, 224x224),
//! Integrated Gradients (50 steps, internal batch 32) on resnet18, attention rollout
//! (plain and with a 0.9 discard) and flow on vit_tiny_patch16_224; the input check
//! every method makes, beside a forward.
//!
//! `cargo bench -p lumen-benches` (CPU); `LUMEN_BENCH_DEVICE=tch:cuda:0 cargo bench -p
//! lumen-benches --features tch` on a GPU.

use criterion::{Criterion, criterion_group, criterion_main};
use lumen::core::burn::tensor::{Distribution, Tensor};
use lumen::core::{ClassLogit, Device, ExplainableModel, device_from_str};
use lumen::methods::{
    AttentionFlow, AttentionRollout, GradCam, IntegratedGradients, Method, ONE_PASS_CAMS,
    cams_from_one_pass,
};
use lumen::methods::{Cam, Saliency};
use lumen::{LoadedModel, ZooModel};

fn device() -> Device {
    device_from_str(&std::env::var("LUMEN_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into())).unwrap()
}

fn setup(arch: &str, batch: usize) -> (ZooModel, Tensor<4>, ClassLogit, Device) {
    let device = device();
    let loaded = LoadedModel::init(arch, 1000, &device).unwrap();
    let model = loaded.model.valid();
    let [c, h, w] = model.input_shape();
    let input = Tensor::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    (
        model,
        input,
        ClassLogit((0..batch).map(|i| i * 7).collect()),
        device,
    )
}

fn sync(device: &Device, values: Tensor<3>) {
    let _ = values.into_data();
    device.sync().ok();
}

fn cams(c: &mut Criterion) {
    let mut group = c.benchmark_group("cam");
    group.sample_size(10);
    for arch in ["resnet18", "resnet50"] {
        let (model, input, target, device) = setup(arch, 8);
        group.bench_function(format!("gradcam/{arch}/batch8"), |b| {
            b.iter(|| {
                let e = Cam::new(&GradCam)
                    .explain(&model, input.clone(), &target)
                    .unwrap();
                sync(&device, e.heatmaps.into_tensor());
            })
        });
        // Every one-pass CAM of the table (9 with KPCA-CAM; the 8 of earlier numbers
        // plus KPCA-CAM's 49x49 kernel at layer4).
        group.bench_function(format!("all-one-pass-cams/{arch}/batch8"), |b| {
            b.iter(|| {
                let maps =
                    cams_from_one_pass(&model, input.clone(), &target, "layer4", ONE_PASS_CAMS)
                        .unwrap();
                for m in maps {
                    sync(&device, m.into_tensor());
                }
            })
        });
    }
    group.finish();
}

fn gradients(c: &mut Criterion) {
    let mut group = c.benchmark_group("gradient");
    group.sample_size(10);
    let (model, input, target, device) = setup("resnet18", 2);
    group.bench_function("saliency/resnet18/batch2", |b| {
        b.iter(|| {
            sync(
                &device,
                Saliency
                    .explain(&model, input.clone(), &target)
                    .unwrap()
                    .heatmaps
                    .into_tensor(),
            )
        })
    });
    let ig = IntegratedGradients {
        internal_batch_size: Some(32),
        ..Default::default()
    };
    group.bench_function("ig50/resnet18/batch2", |b| {
        b.iter(|| {
            sync(
                &device,
                ig.explain(&model, input.clone(), &target)
                    .unwrap()
                    .heatmaps
                    .into_tensor(),
            )
        })
    });
    group.finish();
}

fn attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    let (model, input, target, device) = setup("vit_tiny_patch16_224", 1);
    group.bench_function("rollout/vit_tiny/batch1", |b| {
        b.iter(|| {
            let e = AttentionRollout::default()
                .explain(&model, input.clone(), &target)
                .unwrap();
            sync(&device, e.heatmaps.into_tensor());
        })
    });
    // The discard sorts each layer's fused attention (197² entries on vit_tiny).
    group.bench_function("rollout-discard0.9/vit_tiny/batch1", |b| {
        b.iter(|| {
            let e = AttentionRollout {
                discard_ratio: 0.9,
                ..Default::default()
            }
            .explain(&model, input.clone(), &target)
            .unwrap();
            sync(&device, e.heatmaps.into_tensor());
        })
    });
    group.bench_function("attention-flow/vit_tiny/batch1", |b| {
        b.iter(|| {
            let e = AttentionFlow::default()
                .explain(&model, input.clone(), &target)
                .unwrap();
            sync(&device, e.heatmaps.into_tensor());
        })
    });
    group.finish();
}

/// What the input check every method makes costs beside the forward it guards: the
/// shape, and one finiteness reduction read back as a bool (a device synchronisation).
fn input_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("input-check");
    group.sample_size(10);
    let (model, input, _, device) = setup("resnet18", 8);
    group.bench_function("check_input/resnet18/batch8", |b| {
        b.iter(|| model.check_input(&input).unwrap())
    });
    group.bench_function("forward/resnet18/batch8", |b| {
        b.iter(|| {
            let _ = model.forward(input.clone()).into_data();
            device.sync().ok();
        })
    });
    group.finish();
}

criterion_group!(benches, cams, gradients, attention, input_check);
criterion_main!(benches);
