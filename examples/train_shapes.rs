//! Train the bundled shapes models (`shapes-cnn`, `shapes-vit`, `shapes-seg`) on the
//! procedural shapes data and write their weights to crates/lumen-models/weights/.
//!
//!     cargo run --release -p lumen-examples --example train_shapes -- cnn|vit|seg|both \
//!         [--epochs N] [--steps-per-epoch N] [--lr X] [--warmup-steps N] [--seed S] \
//!         [--train-images fixed|fresh] [--tensorboard DIR] [--mlflow URL] \
//!         [--timeline FILE.html] [--out FILE]
//!
//! The classifiers train with burn-train's `Learner` (Adam, cosine-annealed learning
//! rate after a linear warm-up for the ViT, cross-entropy, batches of 32) with Lumen's
//! monitors on (`lumen::train`): GradCAM of eight fixed validation images, the
//! pointing game of those maps against the shapes' masks, and the statistics of three
//! layers, logged at the start and
//! after every epoch to TensorBoard (`--tensorboard`), MLflow (`--mlflow`) and an
//! HTML timeline (`--timeline`). The data are seeded by split (training, validation,
//! test: disjoint seeds) and the initial weights by `--seed`. The ViT sees new training
//! images every epoch (`--train-images fresh`: epoch `e` draws items `e*n..(e+1)*n` of
//! the training seed), because on one fixed set it overfits (train 96%, validation
//! 90%); the CNN and the segmentor keep the fixed set they were bundled from. The
//! checkpoint with the best validation accuracy (512 images) is kept by burn-train's
//! checkpointer, and the accuracy on 512 held-out test images (never used to pick) is
//! printed at the end; `crates/lumen/tests/bundled_accuracy.rs` keeps a floor on the
//! bundled models' test accuracy. A short run (`--epochs 2 --steps-per-epoch 10`) takes
//! a few minutes on 2 cores.
//!
//! `seg` trains the DeepLabV3+ segmentor on multi-object scenes (1-4 shapes, overlaps)
//! on the same `Learner`: pixel cross-entropy on logits upsampled to the mask (as
//! AutoTimm's training; burn-train's accuracy is then pixel accuracy), with the
//! explanation monitor (GradCAM of each validation sample's dominant class over its
//! predicted region, at `head.decoder`), the feature monitor and the validation mIoU
//! (`valid/mIoU`) logged every epoch; the checkpoint with the best validation mIoU
//! is kept, then the mIoU of the held-out test split printed.
//!
//! `LUMEN_TRAIN_DEVICE=tch:cuda:0` (with `--features tch`) trains on a GPU.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::{Dataset, DatasetError};
use burn::module::{Module, ModuleDisplay};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::tensor::{Int, Tensor, TensorData};
use burn_train::checkpoint::{
    Checkpointer, FileCheckpointer, KeepLastNCheckpoints, MetricCheckpointingStrategy,
};
use burn_train::metric::store::{Aggregate, Direction, Split};
use burn_train::metric::{AccuracyMetric, LossMetric};
use burn_train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use clap::Parser;
use lumen::core::ClassLogit;
use lumen::core::{
    ConvOp, DataConfig, Device, ExplainableModel, LayerInfo, Region, Tap, predicted_classes,
};
use lumen::methods::MethodOptions;
use lumen::train::{
    ExplanationMonitor, FeatureMonitor, LineRenderer, LoaderBatches, Mlflow, Moment, Monitor,
    Monitors, Schedule, Sinks, TensorBoard, Timeline,
};
use lumen_models::shapes::{
    SCENE_CLASSES, SHAPE_CLASSES, ShapeSample, ShapeScene, TEST_SEED, TRAIN_SEED, VALIDATION_SEED,
    shape_samples, shape_scenes,
};
use lumen_models::{LoadedModel, LoadedSegmentor, Segmentor, ZooModel, weights::save_burn};

const BATCH: usize = 32;
const VALIDATION: usize = 512;
/// Held-out test images, scored once on the checkpoint validation picked.
const TEST: u64 = 512;
/// Default seed of the initial weights (the data are seeded by their split).
const INIT_SEED: u64 = 17;
/// Linear warm-up steps of `shapes-vit`'s learning rate.
const WARMUP_VIT: usize = 500;
/// Validation images explained by the monitors.
const MONITOR_SAMPLES: u64 = 8;

#[derive(Parser, Debug)]
#[command(about = "Train the bundled shapes models with burn-train and Lumen's monitors")]
struct Args {
    /// Which model: cnn, vit, seg, or both (cnn then vit).
    #[arg(default_value = "both", value_parser = ["cnn", "vit", "seg", "both"])]
    which: String,
    /// Epochs (default: cnn 6, vit 40, seg 8).
    #[arg(long)]
    epochs: Option<usize>,
    /// Optimizer steps per epoch (default: cnn 100, vit 200, seg 150).
    #[arg(long)]
    steps_per_epoch: Option<usize>,
    /// Peak learning rate (default: cnn 2e-3, vit 1e-3, seg 3e-3).
    #[arg(long)]
    lr: Option<f64>,
    /// Optimizer steps of linear warm-up from lr/100 to the peak before the cosine
    /// decay (default: vit WARMUP_VIT, cnn and seg none).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Training images: `fixed` (the same steps x batch images every epoch) or `fresh`
    /// (new ones every epoch). Default: vit fresh, cnn and seg fixed.
    #[arg(long, value_parser = ["fixed", "fresh"])]
    train_images: Option<String>,
    /// Seed of the initial weights and of the shuffling.
    #[arg(long, default_value_t = INIT_SEED)]
    seed: u64,
    /// Write TensorBoard event files into this folder.
    #[arg(long)]
    tensorboard: Option<PathBuf>,
    /// Log to the MLflow tracking server at this URL (http://127.0.0.1:5000).
    #[arg(long)]
    mlflow: Option<String>,
    /// Write the HTML timeline to this file.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Where to write the weights (default: the zoo's weights folder, or
    /// LUMEN_WEIGHTS_DIR).
    #[arg(long)]
    out: Option<PathBuf>,
    /// burn-train's folder (checkpoints, logs); default: a folder next to the weights.
    #[arg(long)]
    artifacts: Option<PathBuf>,
}

impl Args {
    /// The training images model `name` draws: `--train-images`, else `fresh` for the
    /// ViT (it overfits one fixed set) and `fixed` for the models bundled from one.
    fn train_images(&self, name: &str) -> &str {
        self.train_images
            .as_deref()
            .unwrap_or(if name == "shapes-vit" {
                "fresh"
            } else {
                "fixed"
            })
    }
}

/// What the trainer wraps: a zoo classifier (ResNet, ViT).
trait Net: Module + ModuleDisplay + ExplainableModel<Output = Tensor<2>> + 'static {}
impl<T: Module + ModuleDisplay + ExplainableModel<Output = Tensor<2>> + 'static> Net for T {}

/// A classifier of the zoo as burn-train sees it: one step is a batch of images
/// and labels, its output the loss and logits that the accuracy and loss metrics read.
#[derive(Module, Debug)]
struct Trainer<M: Net> {
    net: M,
}

#[derive(Clone, Debug)]
struct ShapesBatch {
    images: Tensor<4>,
    targets: Tensor<1, Int>,
}

impl<M: Net> Trainer<M> {
    fn classify(&self, batch: ShapesBatch) -> ClassificationOutput {
        let output = self.net.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, output, batch.targets)
    }
}

impl<M: Net> TrainStep for Trainer<M> {
    type Input = ShapesBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ShapesBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl<M: Net> InferenceStep for Trainer<M> {
    type Input = ShapesBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ShapesBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// `ExplainableModel` for a burn-train wrapper, delegated to the network it wraps in
/// `net`: the monitors explain the network.
macro_rules! explain_the_wrapped_net {
    ([$($generics:tt)*] $wrapper:ty, $output:ty) => {
        impl<$($generics)*> ExplainableModel for $wrapper {
            type Output = $output;

            fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> $output {
                self.net.forward_tapped(input, tap)
            }
            fn layers(&self) -> Vec<LayerInfo> {
                self.net.layers()
            }
            fn layers_at(&self, size: [usize; 2]) -> Vec<LayerInfo> {
                self.net.layers_at(size)
            }
            fn default_layer(&self) -> String {
                self.net.default_layer()
            }
            fn input_shape(&self) -> [usize; 3] {
                self.net.input_shape()
            }
            fn min_input_side(&self) -> Option<usize> {
                self.net.min_input_side()
            }
            fn window_ops(&self) -> Vec<(String, Vec<ConvOp>)> {
                self.net.window_ops()
            }
        }
    };
}

explain_the_wrapped_net!([M: Net] Trainer<M>, Tensor<2>);

/// One split of the procedural data (shapes or scenes), drawn on demand: item `i` is
/// `draw(seed, i)`, or with `fresh` `draw(seed, pass * len + i)` on the loader's
/// `pass`-th pass over the split (new images every epoch).
struct Drawn<T> {
    seed: u64,
    len: usize,
    draw: fn(u64, u64) -> T,
    fresh: bool,
    /// Items served so far: a pass fetches each index once, so `served / len` is the
    /// pass whichever worker thread asks (deterministic for a seed).
    served: AtomicUsize,
}

impl<T> Drawn<T> {
    fn new(seed: u64, len: usize, draw: fn(u64, u64) -> T) -> Self {
        Self {
            seed,
            len,
            draw,
            fresh: false,
            served: AtomicUsize::new(0),
        }
    }

    fn fresh(self, fresh: bool) -> Self {
        Self { fresh, ..self }
    }
}

impl<T: Send + Sync> Dataset<T> for Drawn<T> {
    fn get(&self, index: usize) -> Result<T, DatasetError> {
        if index >= self.len {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "index {index} past the {} items of the split",
                self.len
            ))));
        }
        let item = if self.fresh {
            let pass = self.served.fetch_add(1, Ordering::Relaxed) / self.len;
            pass * self.len + index
        } else {
            index
        };
        Ok((self.draw)(self.seed, item as u64))
    }
    fn len(&self) -> usize {
        self.len
    }
}

fn shape(seed: u64, index: u64) -> ShapeSample {
    shape_samples(seed, index, 1).remove(0)
}

fn scene(seed: u64, index: u64) -> ShapeScene {
    shape_scenes(seed, index, 1).remove(0)
}

#[derive(Clone)]
struct ShapesBatcher {
    config: DataConfig,
}

impl Batcher<ShapeSample, ShapesBatch> for ShapesBatcher {
    fn batch(&self, items: Vec<ShapeSample>, device: &Device) -> ShapesBatch {
        let images: Vec<_> = items.iter().map(|s| s.image.clone()).collect();
        let labels: Vec<i64> = items.iter().map(|s| s.label as i64).collect();
        ShapesBatch {
            images: self
                .config
                .to_tensor(&images, device)
                .expect("generated at input size"),
            targets: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }
}

fn loader<T: Send + Sync + Clone + std::fmt::Debug + 'static>(
    split: Drawn<T>,
    batch: usize,
    shuffle: Option<u64>,
    config: &DataConfig,
    device: &Device,
) -> Arc<dyn DataLoader<ShapesBatch>>
where
    ShapesBatcher: Batcher<T, ShapesBatch>,
{
    let mut builder = DataLoaderBuilder::new(ShapesBatcher {
        config: config.clone(),
    })
    .batch_size(batch)
    .num_workers(2)
    .set_device(device.clone());
    if let Some(seed) = shuffle {
        builder = builder.shuffle(seed);
    }
    builder.build(split)
}

/// The share of sample images whose map peaks inside the shape (the pointing game of
/// `lumen::metrics`, at the tolerance scaled to the image size), as
/// `interpretation/pointing_game`: a monitor of this example's own, next to the
/// library's.
struct PointingMonitor {
    samples: Vec<ShapeSample>,
    config: DataConfig,
}

impl<M: ExplainableModel<Output = Tensor<2>> + Module + 'static> Monitor<M> for PointingMonitor {
    fn name(&self) -> String {
        "pointing game".into()
    }
    fn schedule(&self) -> Schedule {
        Schedule::default()
    }
    fn check(&self, model: &M) -> lumen::Result<()> {
        model.check_layers(&model.default_layer()).map(drop)
    }
    fn observe(&mut self, model: &M, at: Moment, sinks: &mut Sinks) -> lumen::Result<()> {
        let device = model.devices().into_iter().next().unwrap_or_default();
        let images: Vec<_> = self.samples.iter().map(|s| s.image.clone()).collect();
        let input = self.config.to_tensor(&images, &device)?;
        let predicted = predicted_classes(&model.forward(input.clone()))?;
        let method = lumen::methods::by_name::<M>("gradcam", &MethodOptions::default())?;
        let maps = method.explain(model, input, &ClassLogit(predicted))?;
        let [_, h, w] = maps.heatmaps.dims();
        let values = maps.heatmaps.to_vec()?;
        let mut hits = 0;
        for (i, sample) in self.samples.iter().enumerate() {
            let region = Region::from_mask(h, w, sample.mask.clone())?;
            let tolerance = lumen::metrics::LocalizationConfig::default().scaled_tolerance(&region);
            let map = &values[i * h * w..(i + 1) * h * w];
            hits += lumen::metrics::localization::pointing_game(map, &region, tolerance)? as usize;
        }
        sinks.scalar(
            "interpretation/pointing_game",
            at,
            hits as f64 / self.samples.len() as f64,
        );
        Ok(())
    }
}

/// Accuracy of a `valid()` model on `count` images of a split.
fn accuracy<M: ExplainableModel<Output = Tensor<2>>>(
    model: &M,
    seed: u64,
    count: u64,
    config: &DataConfig,
    device: &Device,
) -> f32 {
    let mut correct = 0;
    for start in (0..count).step_by(64) {
        let samples = shape_samples(seed, start, 64.min(count - start));
        let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
        let x = config.to_tensor(&images, device).expect("input size");
        let predicted = predicted_classes(&model.forward(x)).expect("read the predictions");
        correct += predicted
            .iter()
            .zip(&samples)
            .filter(|(p, s)| **p == s.label)
            .count();
    }
    correct as f32 / count as f32
}

/// The sinks the command line asks for; a sink that cannot start is an error now,
/// before any training (one that fails later is a warning).
fn monitors<M>(args: &Args, name: &str) -> Result<Monitors<M>, String> {
    let mut monitors = Monitors::new();
    if let Some(dir) = &args.tensorboard {
        monitors = monitors.sink(TensorBoard::create(dir.join(name)).map_err(|e| e.0)?);
    }
    if let Some(url) = &args.mlflow {
        let run = format!("{name} seed {}", args.seed);
        monitors = monitors.sink(Mlflow::start(url, "lumen-shapes", &run).map_err(|e| e.0)?);
    }
    if let Some(path) = &args.timeline {
        monitors = monitors.sink(
            Timeline::create(path, &format!("Training {name}: explanations over time"))
                .map_err(|e| e.0)?,
        );
    }
    Ok(monitors)
}

/// Cosine annealing from `lr` over `total` steps, after `warmup` steps of linear
/// warm-up from lr/100 (a small ViT trained from scratch without warm-up sits at
/// chance for thousands of steps).
fn schedule(lr: f64, total: usize, warmup: usize) -> Result<ModuleLrScheduler, String> {
    if warmup >= total {
        return Err(format!(
            "--warmup-steps {warmup} must be fewer than the {total} steps of the run"
        ));
    }
    let cosine = CosineAnnealingLrSchedulerConfig::new(lr, total - warmup);
    if warmup == 0 {
        return cosine.init();
    }
    SequentialLrSchedulerConfig::new(
        vec![
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(lr / 100.0, lr, warmup)),
            LrSchedulerConfig::Cosine(cosine),
        ],
        vec![warmup],
    )
    .init()
}

/// Restore the model of `epoch` from burn-train's checkpoints.
fn restore<M: Module>(model: M, dir: &Path, epoch: usize) -> Result<M, String> {
    let checkpointer = FileCheckpointer::new(dir.join("checkpoint"), "model");
    let record = Checkpointer::restore(&checkpointer, epoch).map_err(|e| {
        format!(
            "cannot restore the checkpoint of epoch {epoch} from {}: {e}",
            dir.display()
        )
    })?;
    Ok(model.load_record(record))
}

#[allow(clippy::too_many_arguments)]
fn train<M>(
    name: &str,
    args: &Args,
    net: M,
    epochs: usize,
    steps: usize,
    lr: f64,
    warmup: usize,
    config: &DataConfig,
    out: &Path,
) -> Result<(M, f32, f32), String>
where
    M: Net,
{
    let train_images = args.train_images(name);
    let plain = training_device();
    let device = plain.clone().autodiff();
    let artifacts = args
        .artifacts
        .clone()
        .unwrap_or_else(|| out.with_extension("training"));
    let train = loader(
        Drawn::new(TRAIN_SEED, steps * BATCH, shape).fresh(train_images == "fresh"),
        BATCH,
        Some(args.seed),
        config,
        &device,
    );
    let valid = loader(
        Drawn::new(VALIDATION_SEED, VALIDATION, shape),
        64,
        None,
        config,
        &plain,
    );
    let samples = shape_samples(VALIDATION_SEED, 0, MONITOR_SAMPLES);
    let probe = LoaderBatches::new(valid.clone(), |b: &ShapesBatch| b.images.clone());
    let monitors = monitors::<Trainer<M>>(args, name)?
        .param("model", name)
        .param("epochs", epochs)
        .param("steps_per_epoch", steps)
        .param("batch_size", BATCH)
        .param("lr", lr)
        .param("warmup_steps", warmup)
        .param("train_images", train_images)
        .param("seed", args.seed)
        .monitor(
            ExplanationMonitor::new(
                samples.iter().map(|s| s.image.clone()).collect(),
                config.clone(),
                "gradcam",
            )
            .and_then(|m| m.labels(samples.iter().map(|s| s.label).collect()))
            .map_err(|e| e.to_string())?,
        )
        .monitor(PointingMonitor {
            samples: samples.clone(),
            config: config.clone(),
        });
    let model = Trainer { net };
    let layers = monitored_layers(&model);
    let monitors = monitors.monitor(
        FeatureMonitor::new(layers, probe)
            .and_then(|m| m.num_batches(2))
            .map_err(|e| e.to_string())?,
    );
    monitors.check(&model).map_err(|e| e.to_string())?;

    let training = SupervisedTraining::new(&artifacts, train, valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_default_checkpointers()
        .with_checkpointing_strategy(MetricCheckpointingStrategy::new(
            &AccuracyMetric::new(),
            Aggregate::Mean,
            Direction::Highest,
            Split::Valid,
        ))
        .renderer(Box::new(LineRenderer::new()))
        .with_application_logger(None)
        .num_epochs(epochs)
        .with_training_strategy(monitors.strategy(device.clone()));
    let scheduler = schedule(lr, epochs * steps, warmup)?;
    let started = Instant::now();
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), scheduler));
    if let Some(error) = result.error {
        return Err(format!("training failed: {error}"));
    }
    print_history(name, &monitors);
    let history = monitors.history();
    // The first epoch with the best validation accuracy: burn-train's metric
    // checkpointing keeps that one (a later tie does not replace it).
    let best = history
        .iter()
        .filter_map(|r| {
            r.metrics
                .get("valid/Accuracy")
                .map(|a| (r.epoch, *a / 100.0))
        })
        .fold(None, first_best)
        .ok_or("no validation accuracy was recorded")?;
    let picked = restore(result.model, &artifacts, best.0)?.valid();
    println!(
        "{name}: trained in {:.0}s; picked epoch {} (validation accuracy {:.1}%)",
        started.elapsed().as_secs_f32(),
        best.0,
        100.0 * best.1
    );
    let net = picked.net;
    let test = accuracy(&net, TEST_SEED, TEST, config, &plain);
    Ok((net, best.1 as f32, test))
}

/// The monitored layers: the model's default CAM layer and the two listed before it
/// at the same depth of naming (`layer2, layer3, layer4`; `blocks.{n-2..n}.norm1`),
/// attention matrices and vectors left out.
fn monitored_layers<M: ExplainableModel>(model: &M) -> Vec<String> {
    use lumen::core::LayerKind;
    let default = model.default_layer();
    let depth = default.matches('.').count();
    let names: Vec<String> = model
        .layers()
        .into_iter()
        .filter(|l| !matches!(l.kind, LayerKind::Attention { .. } | LayerKind::Vector))
        .map(|l| l.name)
        .filter(|n| n.matches('.').count() == depth)
        .collect();
    let last = names
        .iter()
        .position(|n| *n == default)
        .unwrap_or(names.len() - 1);
    names[last.saturating_sub(2)..=last].to_vec()
}

/// `--out`, else `LUMEN_WEIGHTS_DIR`, else the zoo's `weights/` folder in this checkout.
fn weights_path(args: &Args, name: &str) -> PathBuf {
    if let Some(out) = &args.out {
        return out.clone();
    }
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

fn run(
    name: &str,
    args: &Args,
    epochs: usize,
    steps: usize,
    lr: f64,
    warmup: usize,
) -> Result<(), String> {
    let device = training_device().autodiff();
    device.seed(args.seed);
    let loaded =
        LoadedModel::init(name, SHAPE_CLASSES.len(), &device).map_err(|e| e.to_string())?;
    let config = loaded.data_config.clone();
    let path = weights_path(args, name);
    let (best, test) = match loaded.model {
        ZooModel::ResNet(model) => {
            let (net, best, test) = train(
                name, args, *model, epochs, steps, lr, warmup, &config, &path,
            )?;
            save_burn(&net, &path).map_err(|e| e.to_string())?;
            (best, test)
        }
        ZooModel::Vit(model) => {
            let (net, best, test) = train(
                name, args, *model, epochs, steps, lr, warmup, &config, &path,
            )?;
            save_burn(&net, &path).map_err(|e| e.to_string())?;
            (best, test)
        }
    };
    println!(
        "{name}: best validation accuracy {:.1}% on {VALIDATION} images; test accuracy {:.1}% on {TEST} held-out images; wrote {}",
        100.0 * best,
        100.0 * test,
        path.display()
    );
    Ok(())
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
            .expect("read the class maps")
            .into_iter()
            .flatten()
            .collect();
        iou.add(&predicted, &truth);
    }
    (iou.mean(), iou.per_class())
}

/// The segmentor as burn-train sees it: a step scores every pixel's logits (upsampled
/// to the mask, as AutoTimm trains) against its class, as one row per pixel, so
/// burn-train's loss and accuracy metrics read it as they read a classifier (the
/// accuracy is then pixel accuracy). The monitors explain the segmentor itself.
#[derive(Module, Debug)]
struct SegTrainer {
    net: Segmentor,
}

impl SegTrainer {
    fn score(&self, batch: ShapesBatch) -> ClassificationOutput {
        let [_, _, h, _] = batch.images.dims();
        let logits = full_resolution(self.net.forward(batch.images), h);
        let [b, c, h, w] = logits.dims();
        let rows = logits.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
        let loss = CrossEntropyLossConfig::new()
            .init(&rows.device())
            .forward(rows.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, rows, batch.targets)
    }
}

impl TrainStep for SegTrainer {
    type Input = ShapesBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ShapesBatch) -> TrainOutput<ClassificationOutput> {
        let output = self.score(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for SegTrainer {
    type Input = ShapesBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ShapesBatch) -> ClassificationOutput {
        self.score(batch)
    }
}

explain_the_wrapped_net!([] SegTrainer, Tensor<4>);

impl Batcher<ShapeScene, ShapesBatch> for ShapesBatcher {
    fn batch(&self, items: Vec<ShapeScene>, device: &Device) -> ShapesBatch {
        let images: Vec<_> = items.iter().map(|s| s.image.clone()).collect();
        let classes: Vec<i64> = items
            .iter()
            .flat_map(|s| s.classes.iter().map(|&c| c as i64))
            .collect();
        let pixels = classes.len();
        ShapesBatch {
            images: self
                .config
                .to_tensor(&images, device)
                .expect("generated at input size"),
            targets: Tensor::from_data(TensorData::new(classes, [pixels]), device),
        }
    }
}

/// The validation split's mIoU after every epoch, logged as `valid/mIoU` (TensorBoard,
/// MLflow, the timeline) and kept to pick the checkpoint.
struct MiouMonitor {
    config: DataConfig,
    scenes: u64,
    measured: Arc<std::sync::Mutex<Vec<(usize, f64)>>>,
}

impl Monitor<SegTrainer> for MiouMonitor {
    fn name(&self) -> String {
        "validation mIoU".into()
    }
    fn schedule(&self) -> Schedule {
        Schedule {
            at_start: false,
            ..Schedule::default()
        }
    }
    fn check(&self, _model: &SegTrainer) -> lumen::Result<()> {
        Ok(())
    }
    fn observe(&mut self, model: &SegTrainer, at: Moment, sinks: &mut Sinks) -> lumen::Result<()> {
        let device = model.devices().into_iter().next().unwrap_or_default();
        let (miou, _) = scene_miou(
            &model.net,
            VALIDATION_SEED,
            self.scenes,
            &self.config,
            &device,
        );
        sinks.scalar("valid/mIoU", at, miou);
        self.measured
            .lock()
            .expect("not poisoned")
            .push((at.epoch, miou));
        Ok(())
    }
}

/// The segmentor on burn-train's `Learner`, with the explanation monitor (GradCAM of
/// the dominant class of 8 validation scenes at `head.decoder`), the feature monitor
/// and the validation mIoU; the checkpoint with the best validation mIoU is kept, and
/// the mIoU of the held-out test split printed.
fn train_segmentor(
    args: &Args,
    epochs: usize,
    steps_per_epoch: usize,
    lr: f64,
) -> Result<(), String> {
    const SEG_BATCH: usize = 16;
    const SEG_VALIDATION: u64 = 256;
    const SEG_TEST: u64 = 512;
    let name = "shapes-seg";
    let warmup = args.warmup_steps.unwrap_or(0);
    let plain = training_device();
    let device = plain.clone().autodiff();
    device.seed(args.seed);
    let loaded =
        LoadedSegmentor::init(name, SCENE_CLASSES.len(), &device).map_err(|e| e.to_string())?;
    let config = loaded.data_config.clone();
    let path = weights_path(args, name);
    let artifacts = args
        .artifacts
        .clone()
        .unwrap_or_else(|| path.with_extension("training"));
    let train = loader(
        Drawn::new(TRAIN_SEED, steps_per_epoch * SEG_BATCH, scene)
            .fresh(args.train_images(name) == "fresh"),
        SEG_BATCH,
        Some(args.seed),
        &config,
        &device,
    );
    let valid = loader(
        Drawn::new(VALIDATION_SEED, SEG_VALIDATION as usize, scene),
        32,
        None,
        &config,
        &plain,
    );
    let samples = shape_scenes(VALIDATION_SEED, 0, MONITOR_SAMPLES);
    let measured = Arc::new(std::sync::Mutex::new(vec![]));
    let model = SegTrainer { net: loaded.model };
    let probe = LoaderBatches::new(valid.clone(), |b: &ShapesBatch| b.images.clone());
    let monitors = monitors::<SegTrainer>(args, name)?
        .param("model", name)
        .param("epochs", epochs)
        .param("steps_per_epoch", steps_per_epoch)
        .param("batch_size", SEG_BATCH)
        .param("lr", lr)
        .param("warmup_steps", warmup)
        .param("train_images", args.train_images(name))
        .param("seed", args.seed)
        .monitor(
            ExplanationMonitor::new(
                samples.iter().map(|s| s.image.clone()).collect(),
                config.clone(),
                "gradcam",
            )
            .and_then(|m| {
                m.method_options(MethodOptions {
                    layer: Some("head.decoder".into()),
                    ..MethodOptions::default()
                })
            })
            .map_err(|e| e.to_string())?,
        )
        .monitor(
            FeatureMonitor::new(["backbone.layer4", "head.aspp", "head.decoder"], probe)
                .and_then(|m| m.num_batches(2))
                .map_err(|e| e.to_string())?,
        )
        .monitor(MiouMonitor {
            config: config.clone(),
            scenes: SEG_VALIDATION,
            measured: measured.clone(),
        });
    monitors.check(&model).map_err(|e| e.to_string())?;
    let training = SupervisedTraining::new(&artifacts, train, valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_default_checkpointers()
        // Every epoch's checkpoint is kept: the pick is by validation mIoU, which
        // burn-train's metric strategy does not see.
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(epochs))
        .renderer(Box::new(LineRenderer::new()))
        .with_application_logger(None)
        .num_epochs(epochs)
        .with_training_strategy(monitors.strategy(device.clone()));
    let scheduler = schedule(lr, epochs * steps_per_epoch, warmup)?;
    let started = Instant::now();
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), scheduler));
    if let Some(error) = result.error {
        return Err(format!("training failed: {error}"));
    }
    print_history(name, &monitors);
    // The first epoch with the best validation mIoU.
    let (epoch, best) = measured
        .lock()
        .expect("not poisoned")
        .iter()
        .copied()
        .fold(None, first_best)
        .ok_or("no validation mIoU was measured")?;
    let picked = restore(result.model, &artifacts, epoch)?.valid().net;
    save_burn(&picked, &path).map_err(|e| e.to_string())?;
    let (test, per_class) = scene_miou(&picked, TEST_SEED, SEG_TEST, &config, &plain);
    println!(
        "{name}: trained in {:.0}s; picked epoch {epoch} (validation mIoU {best:.3}); test mIoU {test:.3} on {SEG_TEST} held-out scenes (per class {per_class:?}); wrote {}",
        started.elapsed().as_secs_f32(),
        path.display()
    );
    Ok(())
}

/// Folds `(epoch, value)` into the first epoch with the highest value.
fn first_best(best: Option<(usize, f64)>, (epoch, value): (usize, f64)) -> Option<(usize, f64)> {
    match best {
        Some((_, b)) if b >= value => best,
        _ => Some((epoch, value)),
    }
}

/// burn-train's metrics and the monitors' time per epoch, and any sink's warnings.
fn print_history<M>(name: &str, monitors: &Monitors<M>) {
    for record in &monitors.history() {
        println!(
            "{name} epoch {}: {} (monitors {:.1}s of {:.1}s)",
            record.epoch,
            record
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            record.monitor_seconds,
            record.epoch_seconds
        );
    }
    for failure in monitors.failures() {
        eprintln!("warning: {failure}");
    }
}

fn main() {
    let args = Args::parse();
    let which = args.which.as_str();
    let result = (|| {
        if which == "cnn" || which == "both" {
            run(
                "shapes-cnn",
                &args,
                args.epochs.unwrap_or(6),
                args.steps_per_epoch.unwrap_or(100),
                args.lr.unwrap_or(2e-3),
                args.warmup_steps.unwrap_or(0),
            )?;
        }
        if which == "seg" {
            train_segmentor(
                &args,
                args.epochs.unwrap_or(8),
                args.steps_per_epoch.unwrap_or(150),
                args.lr.unwrap_or(3e-3),
            )?;
        }
        if which == "vit" || which == "both" {
            run(
                "shapes-vit",
                &args,
                args.epochs.unwrap_or(40),
                args.steps_per_epoch.unwrap_or(200),
                args.lr.unwrap_or(1e-3),
                args.warmup_steps.unwrap_or(WARMUP_VIT),
            )?;
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
