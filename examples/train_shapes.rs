//! Train the bundled shapes models (`shapes-cnn`, `shapes-vit`, `shapes-seg`) on the
//! procedural shapes data and write their weights to crates/lumen-models/weights/.
//!
//!     cargo run --release -p lumen-examples --example train_shapes [cnn|vit|seg|both] [EPOCHS STEPS LR]
//!
//! `seg` trains the DeepLabV3+ segmentor on multi-object scenes (1-4 shapes, overlaps):
//! pixel cross-entropy on logits upsampled to the mask (as AutoTimm's training), the
//! checkpoint picked on the validation split's mIoU, then the mIoU of the held-out test
//! split (never used to pick) printed.
//!
//! Adam, cross-entropy, batches of 32 generated on the fly from the training split;
//! initial weights seeded (`INIT_SEED`); validation accuracy on 512 images of the
//! disjoint validation split is printed after each epoch and picks the checkpoint; the
//! held-out test split's accuracy (512 images, never used to pick) is printed at the
//! end, and `crates/lumen/tests/bundled_accuracy.rs` keeps a floor on it. `LUMEN_TRAIN_DEVICE=tch:cuda:0` (with `--features tch`) trains on a GPU. A plain loop with burn's optimiser: burn-train's learner adds a large
//! dependency tree (TUI, metrics) for nothing this needs.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};
use lumen::core::{Device, ExplainableModel, predicted_classes};
use lumen_models::shapes::{
    SCENE_CLASSES, SHAPE_CLASSES, TEST_SEED, TRAIN_SEED, VALIDATION_SEED, shape_samples,
    shape_scenes,
};
use lumen_models::{LoadedModel, LoadedSegmentor, Segmentor, ZooModel, weights::save_burn};

const BATCH: usize = 32;
const VALIDATION: u64 = 512;
/// Held-out test images, scored once on the checkpoint validation picked.
const TEST: u64 = 512;
/// Seed of the initial weights (the data are seeded by their split).
const INIT_SEED: u64 = 17;

fn batch(
    seed: u64,
    start: u64,
    count: u64,
    config: &lumen::core::DataConfig,
    device: &Device,
) -> (Tensor<4>, Vec<usize>) {
    // Generate in parallel: on a GPU the drawing, not the step, is the bottleneck.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let per = count.div_ceil(threads).max(1);
    let samples: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .step_by(per as usize)
            .map(|offset| {
                scope.spawn(move || shape_samples(seed, start + offset, per.min(count - offset)))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("drawing shapes"))
            .collect()
    });
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let labels = samples.iter().map(|s| s.label).collect();
    (
        config
            .to_tensor(&images, device)
            .expect("generated at input size"),
        labels,
    )
}

fn accuracy<M: ExplainableModel<Output = Tensor<2>>>(
    model: &M,
    seed: u64,
    count: u64,
    config: &lumen::core::DataConfig,
    device: &Device,
) -> f32 {
    let mut correct = 0;
    for start in (0..count).step_by(64) {
        let (x, labels) = batch(seed, start, 64.min(count - start), config, device);
        let predicted = predicted_classes(&model.forward(x));
        correct += predicted
            .iter()
            .zip(&labels)
            .filter(|(p, l)| p == l)
            .count();
    }
    correct as f32 / count as f32
}

fn train<M>(
    name: &str,
    path: &std::path::Path,
    mut model: M,
    epochs: usize,
    steps_per_epoch: usize,
    lr: f64,
    config: &lumen::core::DataConfig,
) -> (M, f32)
where
    M: ExplainableModel<Output = Tensor<2>> + Module + Clone + burn::store::ModuleSnapshot,
{
    let plain = training_device();
    let device = plain.clone().autodiff();
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut step = 0u64;
    let mut best = 0.0;
    let mut picked = model.valid();
    for epoch in 0..epochs {
        let started = Instant::now();
        let mut total = 0.0;
        for _ in 0..steps_per_epoch {
            let (x, labels) = batch(
                TRAIN_SEED,
                step * BATCH as u64,
                BATCH as u64,
                config,
                &device,
            );
            step += 1;
            let targets = Tensor::<1, Int>::from_data(
                TensorData::new(
                    labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
                    [BATCH],
                ),
                &device,
            );
            let loss = loss_fn.forward(model.forward(x), targets);
            total += loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let rate = learning_rate(lr, step, epochs * steps_per_epoch);
            model = optimizer.step(rate, model, grads);
        }
        let acc = accuracy(&model.valid(), VALIDATION_SEED, VALIDATION, config, &plain);
        println!(
            "{name} epoch {}: loss {:.3}, validation accuracy {:.1}% ({:.0}s)",
            epoch + 1,
            total / steps_per_epoch as f32,
            100.0 * acc,
            started.elapsed().as_secs_f32()
        );
        // Keep the best epoch on disk, so an interrupted run still leaves weights.
        if acc > best {
            best = acc;
            picked = model.valid();
            save_burn(&picked, path).expect("write weights");
        }
    }
    (picked, best)
}

/// Linear warm-up over 100 steps, then cosine decay over the run's `total` steps.
fn learning_rate(lr: f64, step: u64, total: usize) -> f64 {
    let progress = step as f64 / total as f64;
    let warmup = (step as f64 / 100.0).min(1.0);
    lr * warmup * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// `LUMEN_WEIGHTS_DIR`, else the zoo's `weights/` folder in this checkout.
fn weights_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("LUMEN_WEIGHTS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/lumen-models/weights"),
        PathBuf::from,
    );
    dir.join(format!("{name}.safetensors"))
}

/// `LUMEN_TRAIN_DEVICE` (e.g. `tch:cuda:0` in a `--features tch` build), else flex.
fn training_device() -> Device {
    match std::env::var("LUMEN_TRAIN_DEVICE") {
        Ok(spec) => lumen::core::device_from_str(&spec).expect("LUMEN_TRAIN_DEVICE"),
        Err(_) => Device::flex(),
    }
}

fn run(name: &str, epochs: usize, steps: usize, lr: f64) {
    let device = training_device().autodiff();
    device.seed(INIT_SEED);
    let loaded = LoadedModel::init(name, SHAPE_CLASSES.len(), &device).expect("architecture");
    let config = loaded.data_config.clone();
    let path = weights_path(name);
    let plain = training_device();
    // The held-out test split, scored once on the checkpoint validation picked.
    let (best, test) = match loaded.model {
        ZooModel::ResNet(model) => {
            let (picked, acc) = train(name, &path, *model, epochs, steps, lr, &config);
            (acc, accuracy(&picked, TEST_SEED, TEST, &config, &plain))
        }
        ZooModel::Vit(model) => {
            let (picked, acc) = train(name, &path, *model, epochs, steps, lr, &config);
            (acc, accuracy(&picked, TEST_SEED, TEST, &config, &plain))
        }
    };
    println!(
        "{name}: best validation accuracy {:.1}% on {VALIDATION} images; test accuracy {:.1}% on {TEST} held-out images; wrote {}",
        100.0 * best,
        100.0 * test,
        path.display()
    );
}

/// Scenes as a batch and their per-pixel classes.
fn scene_batch(
    seed: u64,
    start: u64,
    count: u64,
    config: &lumen::core::DataConfig,
    device: &Device,
) -> (Tensor<4>, Vec<usize>) {
    let scenes = shape_scenes(seed, start, count);
    let images: Vec<_> = scenes.iter().map(|s| s.image.clone()).collect();
    let classes = scenes
        .iter()
        .flat_map(|s| s.classes.iter().map(|&c| c as usize))
        .collect();
    (
        config
            .to_tensor(&images, device)
            .expect("generated at input size"),
        classes,
    )
}

/// Logits at the output stride, bilinearly resized to the input (what is scored).
fn full_resolution(logits: Tensor<4>, size: usize) -> Tensor<4> {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    interpolate(
        logits,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([size, size]),
    )
}

/// mIoU of `count` scenes of a split, at full resolution.
fn scene_miou(
    model: &Segmentor,
    seed: u64,
    count: u64,
    config: &lumen::core::DataConfig,
    device: &Device,
) -> (f64, Vec<Option<f64>>) {
    let mut iou = lumen::metrics::IouAccumulator::new(SCENE_CLASSES.len());
    for start in (0..count).step_by(32) {
        let n = 32.min(count - start);
        let (x, truth) = scene_batch(seed, start, n, config, device);
        let predicted: Vec<usize> = lumen::segmentation::class_maps(model, x)
            .into_iter()
            .flatten()
            .collect();
        iou.add(&predicted, &truth);
    }
    (iou.mean(), iou.per_class())
}

fn train_segmentor(epochs: usize, steps_per_epoch: usize, lr: f64) {
    const SEG_BATCH: usize = 16;
    const SEG_VALIDATION: u64 = 256;
    const SEG_TEST: u64 = 512;
    let name = "shapes-seg";
    let plain = training_device();
    let device = plain.clone().autodiff();
    device.seed(INIT_SEED);
    let loaded = LoadedSegmentor::init(name, SCENE_CLASSES.len(), &device).expect("architecture");
    let config = loaded.data_config.clone();
    let size = config.input_size[1];
    let mut model = loaded.model;
    let path = weights_path(name);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut step, mut best) = (0u64, -1.0);
    for epoch in 0..epochs {
        let started = Instant::now();
        let mut total = 0.0;
        for _ in 0..steps_per_epoch {
            let (x, truth) = scene_batch(
                TRAIN_SEED,
                step * SEG_BATCH as u64,
                SEG_BATCH as u64,
                &config,
                &device,
            );
            step += 1;
            let logits = full_resolution(model.forward(x), size);
            let [b, c, h, w] = logits.dims();
            let logits = logits.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
            let targets = Tensor::<1, Int>::from_data(
                TensorData::new(
                    truth.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                    [b * h * w],
                ),
                &device,
            );
            let loss = loss_fn.forward(logits, targets);
            total += loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let rate = learning_rate(lr, step, epochs * steps_per_epoch);
            model = optimizer.step(rate, model, grads);
        }
        let (miou, _) = scene_miou(
            &model.valid(),
            VALIDATION_SEED,
            SEG_VALIDATION,
            &config,
            &plain,
        );
        println!(
            "{name} epoch {}: loss {:.3}, validation mIoU {:.3} ({:.0}s)",
            epoch + 1,
            total / steps_per_epoch as f32,
            miou,
            started.elapsed().as_secs_f32()
        );
        if miou > best {
            best = miou;
            save_burn(&model.valid(), &path).expect("write weights");
        }
    }
    // The held-out test split, on the checkpoint picked by validation.
    let picked = {
        let mut m = LoadedSegmentor::init(name, SCENE_CLASSES.len(), &plain)
            .expect("architecture")
            .model;
        let bytes = std::fs::read(&path).expect("read the picked weights");
        lumen_models::weights::load_burn_bytes(&mut m, &bytes, &path)
            .expect("load the picked weights");
        m.valid()
    };
    let (test, per_class) = scene_miou(&picked, TEST_SEED, SEG_TEST, &config, &plain);
    println!(
        "{name}: best validation mIoU {best:.3}; test mIoU {test:.3} on {SEG_TEST} held-out scenes (per class {per_class:?}); wrote {}",
        path.display()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().cloned().unwrap_or_else(|| "both".into());
    // Optional overrides: epochs, steps per epoch, learning rate.
    let number = |i: usize| args.get(i).map(|s| s.parse::<f64>().expect("a number"));
    let epochs = number(1).map(|v| v as usize);
    let steps = number(2).map(|v| v as usize);
    let lr = number(3);
    if which == "cnn" || which == "both" {
        run(
            "shapes-cnn",
            epochs.unwrap_or(6),
            steps.unwrap_or(100),
            lr.unwrap_or(2e-3),
        );
    }
    if which == "seg" {
        train_segmentor(
            epochs.unwrap_or(8),
            steps.unwrap_or(150),
            lr.unwrap_or(3e-3),
        );
    }
    if which == "vit" || which == "both" {
        run(
            "shapes-vit",
            epochs.unwrap_or(20),
            steps.unwrap_or(200),
            lr.unwrap_or(1e-3),
        );
    }
}
