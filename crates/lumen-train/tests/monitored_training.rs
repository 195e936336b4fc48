//! A short burn-train run of a tiny model with both monitors and the TensorBoard and
//! timeline sinks: the strategy calls the monitors at the start, at every step it is
//! asked to and at every epoch's end, forwards burn-train's metrics, and the event
//! file holds exactly those tags at those steps (read back with the checksummed
//! reader; `tools/monitor/read_tensorboard.py` reads the same with TensorBoard itself
//! in CI).

use std::collections::{BTreeMap, BTreeSet};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::AdamConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};
use burn_train::metric::{AccuracyMetric, LossMetric};
use burn_train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use image::{Rgb, RgbImage};
use lumen_core::{DataConfig, Device, ExplainableModel, LayerInfo, LayerKind, Tap};
use lumen_train::tensorboard::{EventKind, ValueKind, read_events};
use lumen_train::{ExplanationMonitor, FeatureMonitor, Monitors, Schedule, TensorBoard, Timeline};

const SIDE: usize = 16;

#[derive(Module, Debug)]
struct Tiny {
    conv: Conv2d,
    head: Linear,
}

impl Tiny {
    fn new(device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([3, 4], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device),
            head: LinearConfig::new(4, 2).init(device),
        }
    }
}

impl ExplainableModel for Tiny {
    type Output = Tensor<2>;
    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        let [b, ..] = input.dims();
        let a = tap.visit("conv", relu(self.conv.forward(input)));
        self.head.forward(a.mean_dim(3).mean_dim(2).reshape([b, 4]))
    }
    fn layers(&self) -> Vec<LayerInfo> {
        vec![LayerInfo::new("conv", LayerKind::FeatureMap)]
    }
    fn default_layer(&self) -> String {
        "conv".into()
    }
    fn input_shape(&self) -> [usize; 3] {
        [3, SIDE, SIDE]
    }
}

#[derive(Clone, Debug)]
struct Batch {
    images: Tensor<4>,
    targets: Tensor<1, Int>,
}

impl Tiny {
    fn classify(&self, batch: Batch) -> ClassificationOutput {
        let output = self.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, output, batch.targets)
    }
}

impl TrainStep for Tiny {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let output = self.classify(batch);
        TrainOutput::new(self, output.loss.backward(), output)
    }
}

impl InferenceStep for Tiny {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// Class 0: a bright square on the left; class 1: on the right.
fn picture(label: usize, shift: u32) -> RgbImage {
    RgbImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
        let left = label == 0;
        let inside = (if left { x < 8 } else { x >= 8 }) && (4 + shift % 3..12).contains(&y);
        if inside {
            Rgb([240, 220, 200])
        } else {
            Rgb([20, 30, 40])
        }
    })
}

fn config() -> DataConfig {
    DataConfig::imagenet(SIDE)
}

#[derive(Clone)]
struct PictureBatcher;

impl Batcher<(usize, u32), Batch> for PictureBatcher {
    fn batch(&self, items: Vec<(usize, u32)>, device: &Device) -> Batch {
        let images: Vec<RgbImage> = items.iter().map(|&(l, s)| picture(l, s)).collect();
        let labels: Vec<i64> = items.iter().map(|&(l, _)| l as i64).collect();
        Batch {
            images: config().to_tensor(&images, device).unwrap(),
            targets: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }
}

fn items(n: usize) -> Vec<(usize, u32)> {
    (0..n).map(|i| (i % 2, i as u32)).collect()
}

#[test]
fn monitors_log_the_expected_tags_at_the_expected_steps() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Device::flex();
    let device = plain.clone().autodiff();
    device.seed(3);
    let train = DataLoaderBuilder::new(PictureBatcher)
        .batch_size(4)
        .shuffle(1)
        .build(InMemDataset::new(items(12)));
    let valid = DataLoaderBuilder::new(PictureBatcher)
        .batch_size(4)
        .build(InMemDataset::new(items(8)));
    let probe: Vec<Tensor<4>> = vec![PictureBatcher.batch(items(4), &plain).images; 3];
    let tb = TensorBoard::create(dir.path().join("tb")).unwrap();
    let event_file = tb.path().to_path_buf();
    let timeline_path = dir.path().join("timeline.html");
    let monitors = Monitors::new()
        .sink(tb)
        .sink(Timeline::create(&timeline_path, "tiny").unwrap())
        .param("lr", 0.01)
        .monitor(
            ExplanationMonitor::new(vec![picture(0, 0), picture(1, 0)], config(), "gradcam")
                .unwrap()
                .labels(vec![0, 1])
                .unwrap(),
        )
        .monitor(
            FeatureMonitor::new(["conv"], probe)
                .unwrap()
                .num_batches(2)
                .unwrap()
                .schedule(Schedule {
                    every_n_epochs: None,
                    every_n_steps: Some(2),
                    at_start: false,
                })
                .unwrap(),
        );
    let model = Tiny::new(&device);
    monitors.check(&model).unwrap();
    let result = SupervisedTraining::new(dir.path().join("artifacts"), train, valid)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_application_logger(None)
        .num_epochs(2)
        .with_training_strategy(monitors.strategy(device))
        .launch(Learner::new(model, AdamConfig::new().init(), 0.01));
    assert!(result.error.is_none(), "{:?}", result.error);
    assert!(monitors.failures().is_empty(), "{:?}", monitors.failures());

    // 12 images in batches of 4: 3 steps per epoch, 6 in all.
    let history = monitors.history();
    assert_eq!(
        history
            .iter()
            .map(|r| (r.epoch, r.step))
            .collect::<Vec<_>>(),
        [(1, 3), (2, 6)]
    );
    for record in &history {
        for key in [
            "train/Loss",
            "valid/Loss",
            "train/Accuracy",
            "valid/Accuracy",
        ] {
            assert!(
                record.metrics.contains_key(key),
                "{key} in {:?}",
                record.metrics
            );
        }
    }

    let events = read_events(&std::fs::read(&event_file).unwrap()).unwrap();
    let mut steps: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut images = 0;
    let mut histograms = 0;
    for event in &events {
        let Some(EventKind::Summary(summary)) = &event.what else {
            continue;
        };
        for value in &summary.value {
            steps
                .entry(value.tag.clone())
                .or_default()
                .insert(event.step);
            match &value.value {
                Some(ValueKind::Image(image)) => {
                    assert_eq!((image.width, image.height), (SIDE as i32, SIDE as i32));
                    images += 1;
                }
                Some(ValueKind::Histo(h)) => {
                    assert_eq!(h.bucket.iter().sum::<f64>(), h.num);
                    // 2 batches of 4 images, 4 channels of 16x16.
                    assert_eq!(h.num, (2 * 4 * 4 * SIDE * SIDE) as f64);
                    histograms += 1;
                }
                _ => {}
            }
        }
    }
    let expect = |tag: &str, at: &[i64]| {
        assert_eq!(
            steps
                .get(tag)
                .map(|s| s.iter().copied().collect::<Vec<_>>()),
            Some(at.to_vec()),
            "{tag}"
        );
    };
    // The explanation monitor: at the start (step 0) and after each epoch.
    for i in 0..2 {
        expect(&format!("interpretation/sample_{i}"), &[0, 3, 6]);
        expect(&format!("interpretation/sample_{i}/confidence"), &[0, 3, 6]);
        expect(&format!("interpretation/sample_{i}/correct"), &[0, 3, 6]);
    }
    // The feature monitor: every second optimizer step, not at the start.
    for stat in ["mean", "std", "sparsity", "max", "activations"] {
        expect(&format!("features/conv/{stat}"), &[2, 4, 6]);
    }
    // burn-train's metrics at each epoch's end.
    for tag in [
        "train/Loss",
        "valid/Loss",
        "train/Accuracy",
        "valid/Accuracy",
    ] {
        expect(tag, &[3, 6]);
    }
    assert_eq!(steps.len(), 6 + 5 + 4, "{:?}", steps.keys());
    assert_eq!(images, 6);
    assert_eq!(histograms, 3);

    let html = std::fs::read_to_string(&timeline_path).unwrap();
    for label in ["epoch 0 · step 0", "epoch 1 · step 3", "epoch 2 · step 6"] {
        assert!(html.contains(label), "{label}");
    }
}

#[test]
fn a_monitor_that_does_not_fit_the_model_is_an_error_before_training() {
    let model = Tiny::new(&Device::flex());
    let wrong_layer =
        Monitors::new().monitor(FeatureMonitor::new(["conv9"], Vec::<Tensor<4>>::new()).unwrap());
    let message = wrong_layer.check(&model).unwrap_err().to_string();
    assert!(
        message.contains("conv9") && message.contains("conv"),
        "{message}"
    );
    let wrong_size = Monitors::new().monitor(
        ExplanationMonitor::new(vec![picture(0, 0)], DataConfig::imagenet(32), "gradcam").unwrap(),
    );
    assert!(wrong_size.check(&model).is_err());
    assert!(
        ExplanationMonitor::new(vec![picture(0, 0)], config(), "gradcam-9")
            .err()
            .unwrap()
            .to_string()
            .contains("gradcam")
    );
}
