//! The monitors: what is measured on the model during training. Each runs on a
//! `valid()` copy of the model (BatchNorm uses its running statistics and they are
//! not updated; dropout is off) and sends what it measures to the [`Sinks`].

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::module::Module;
use burn::tensor::activation::softmax;
use image::RgbImage;
use lumen_core::{
    ClassLogit, ClassRegionScore, DataConfig, Device, ExplainableModel, LumenError, Result, Target,
    Tensor, predicted_classes, to_host,
};
use lumen_features::statistics::combine;
use lumen_features::{FeatureStatistics, FeatureVisualizer, StatisticsOptions, statistics_of_host};
use lumen_methods::{MethodOptions, by_name};
use lumen_report::overlay::Map;
use lumen_report::{Colormap, overlay};

use crate::sink::{Histogram, Moment, Sinks};

/// When a monitor runs: every `n` epochs (at the epoch's end), every `n` optimizer
/// steps, and/or once before the first step (the untrained model, the start of the
/// timeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Run at the end of every `n`-th epoch.
    pub every_n_epochs: Option<usize>,
    /// Run after every `n`-th optimizer step.
    pub every_n_steps: Option<u64>,
    /// Run once before training.
    pub at_start: bool,
}

impl Default for Schedule {
    /// Every epoch, and before training.
    fn default() -> Self {
        Self {
            every_n_epochs: Some(1),
            every_n_steps: None,
            at_start: true,
        }
    }
}

/// The points of a run at which monitors may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Before the first step.
    Start,
    /// After an optimizer step (the global step count).
    Step(u64),
    /// At the end of an epoch (after validation).
    EpochEnd(usize),
}

impl Schedule {
    /// Whether to run at `point`.
    pub fn due(&self, point: Point) -> bool {
        match point {
            Point::Start => self.at_start,
            Point::Step(step) => self.every_n_steps.is_some_and(|n| step % n == 0),
            Point::EpochEnd(epoch) => self.every_n_epochs.is_some_and(|n| epoch % n == 0),
        }
    }

    fn validate(&self, monitor: &str) -> Result<()> {
        if self.every_n_epochs == Some(0) || self.every_n_steps == Some(0) {
            return Err(LumenError::InvalidArgument(format!(
                "{monitor}: every_n_epochs and every_n_steps must be at least 1"
            )));
        }
        Ok(())
    }
}

/// Something measured on the model during training.
pub trait Monitor<M>: Send {
    /// Shown in warnings.
    fn name(&self) -> String;

    /// When it runs.
    fn schedule(&self) -> Schedule;

    /// Check the monitor against the model before training (layer names, the method,
    /// the sample size), so a mistake is an error at the start, not a warning later.
    fn check(&self, model: &M) -> Result<()>;

    /// Measure `model` (a `valid()` copy) and send the results to `sinks`.
    fn observe(&mut self, model: &M, at: Moment, sinks: &mut Sinks) -> Result<()>;
}

/// Explains fixed sample images with any registered method, for the class the model
/// predicts now, and logs one overlay per sample (`interpretation/sample_{i}`) and
/// the prediction's softmax confidence (`interpretation/sample_{i}/confidence`); with
/// labels, also whether the prediction is right (`interpretation/sample_{i}/correct`).
/// The seed's `InterpretationCallback`. Classifiers and segmentors alike (see
/// [`MonitoredOutput`]: a segmentor's sample explains its dominant class over the
/// predicted region, and a label is the class expected to dominate).
pub struct ExplanationMonitor {
    images: Vec<RgbImage>,
    labels: Option<Vec<usize>>,
    data_config: DataConfig,
    method: String,
    options: MethodOptions,
    colormap: Colormap,
    alpha: f32,
    num_samples: usize,
    schedule: Schedule,
}

impl ExplanationMonitor {
    /// Explain `images` (resized and cropped by `data_config`, as the model sees
    /// them) with `method` (a name of the method registry: `gradcam`, `ig`, ...).
    /// Defaults: every epoch and before training, all samples, the `jet` colormap.
    pub fn new(images: Vec<RgbImage>, data_config: DataConfig, method: &str) -> Result<Self> {
        lumen_methods::method_info(method)?;
        if images.is_empty() {
            return Err(LumenError::InvalidArgument(
                "the explanation monitor needs at least one sample image".into(),
            ));
        }
        let images: Vec<RgbImage> = images
            .iter()
            .map(|i| data_config.resize_and_crop(i))
            .collect::<Result<_>>()?;
        Ok(Self {
            num_samples: images.len(),
            images,
            labels: None,
            data_config,
            method: method.to_string(),
            options: MethodOptions::default(),
            colormap: Colormap::Jet,
            alpha: 0.5,
            schedule: Schedule::default(),
        })
    }

    /// The samples' true classes (one per image).
    pub fn labels(mut self, labels: Vec<usize>) -> Result<Self> {
        if labels.len() != self.images.len() {
            return Err(LumenError::InvalidArgument(format!(
                "{} labels for {} sample images",
                labels.len(),
                self.images.len()
            )));
        }
        self.labels = Some(labels);
        Ok(self)
    }

    /// Options of the method (layer, steps, noise...); validated here.
    pub fn method_options(mut self, options: MethodOptions) -> Result<Self> {
        options.validate()?;
        self.options = options;
        Ok(self)
    }

    /// Explain only the first `n` samples (at least 1, at most the images given).
    pub fn num_samples(mut self, n: usize) -> Result<Self> {
        if n == 0 || n > self.images.len() {
            return Err(LumenError::InvalidArgument(format!(
                "num_samples must be in 1..={}, got {n}",
                self.images.len()
            )));
        }
        self.num_samples = n;
        Ok(self)
    }

    /// The colormap of the overlays.
    pub fn colormap(mut self, colormap: Colormap) -> Self {
        self.colormap = colormap;
        self
    }

    /// Heatmap opacity over the image, in `[0, 1]`.
    pub fn alpha(mut self, alpha: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(LumenError::InvalidArgument(format!(
                "alpha must be in [0, 1], got {alpha}"
            )));
        }
        self.alpha = alpha;
        Ok(self)
    }

    /// When to run.
    pub fn schedule(mut self, schedule: Schedule) -> Result<Self> {
        schedule.validate("explanation monitor")?;
        self.schedule = schedule;
        Ok(self)
    }
}

fn model_device<M: Module>(model: &M) -> Device {
    model.devices().into_iter().next().unwrap_or_default()
}

/// What the explanation monitor explains in one batch of a model's output: per image,
/// the class, the model's confidence in it, and the target the methods differentiate.
pub struct Explained<O> {
    /// The explained class per image.
    pub classes: Vec<usize>,
    /// The model's confidence in it, in `[0, 1]`.
    pub confidences: Vec<f64>,
    /// The differentiable score of each image's explained class.
    pub target: Box<dyn Target<O>>,
}

/// The outputs the explanation monitor reads. Classifier logits `[B, C]`: the predicted
/// class, its softmax probability, its logit. Segmentation logits `[B, C, h, w]`: the
/// most frequent predicted class other than class 0 (the background; class 0 when
/// nothing else is predicted), the mean softmax probability over its predicted pixels,
/// and its logits summed over those pixels (pytorch-grad-cam's
/// `SemanticSegmentationTarget` over the predicted mask, as `lumen explain` on a
/// segmentor).
pub trait MonitoredOutput: Sized + 'static {
    /// What to explain in `self`.
    fn explained(&self) -> Result<Explained<Self>>;
}

impl MonitoredOutput for Tensor<2> {
    fn explained(&self) -> Result<Explained<Self>> {
        let classes = predicted_classes(self)?;
        let probabilities = to_host(softmax(self.clone(), 1))?;
        let width = probabilities.len() / classes.len().max(1);
        let confidences = classes
            .iter()
            .enumerate()
            .map(|(i, &c)| probabilities[i * width + c] as f64)
            .collect();
        Ok(Explained {
            target: Box::new(ClassLogit(classes.clone())),
            classes,
            confidences,
        })
    }
}

impl MonitoredOutput for Tensor<4> {
    fn explained(&self) -> Result<Explained<Self>> {
        let [batch, num_classes, h, w] = self.dims();
        let plane = h * w;
        let probabilities = to_host(softmax(self.clone(), 1))?;
        let (mut classes, mut confidences, mut masks) = (vec![], vec![], vec![]);
        for b in 0..batch {
            let image = &probabilities[b * num_classes * plane..(b + 1) * num_classes * plane];
            // Per pixel, the most probable class (the lower index on ties).
            let argmax: Vec<usize> = (0..plane)
                .map(|p| {
                    (0..num_classes).fold(0, |best, c| {
                        if image[c * plane + p] > image[best * plane + p] {
                            c
                        } else {
                            best
                        }
                    })
                })
                .collect();
            let mut counts = vec![0usize; num_classes];
            argmax.iter().for_each(|&c| counts[c] += 1);
            let class = (1..num_classes)
                .filter(|&c| counts[c] > 0)
                .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
                .unwrap_or(0);
            let mask: Vec<f32> = argmax.iter().map(|&c| (c == class) as u8 as f32).collect();
            let inside: f64 = (0..plane)
                .filter(|&p| argmax[p] == class)
                .map(|p| image[class * plane + p] as f64)
                .sum();
            confidences.push(inside / counts[class].max(1) as f64);
            classes.push(class);
            masks.push(Some(mask));
        }
        Ok(Explained {
            target: Box::new(ClassRegionScore {
                classes: classes.clone(),
                masks,
            }),
            classes,
            confidences,
        })
    }
}

impl<M> Monitor<M> for ExplanationMonitor
where
    M: ExplainableModel + Module + 'static,
    M::Output: MonitoredOutput,
{
    fn name(&self) -> String {
        format!("explanation monitor ({})", self.method)
    }

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    fn check(&self, model: &M) -> Result<()> {
        let method = by_name::<M>(&self.method, &self.options)?;
        if let Some(layer) = method.layer(model) {
            model.check_layers(&layer)?;
        }
        let input = self
            .data_config
            .to_tensor(&self.images[..1], &model_device(model))?;
        model.check_input(&input)
    }

    fn observe(&mut self, model: &M, at: Moment, sinks: &mut Sinks) -> Result<()> {
        let images = &self.images[..self.num_samples];
        let input = self.data_config.to_tensor(images, &model_device(model))?;
        let explained = model.forward(input.clone()).explained()?;
        let method = by_name::<M>(&self.method, &self.options)?;
        let explanation = method.explain(model, input, explained.target.as_ref())?;
        let [_, h, w] = explanation.heatmaps.dims();
        let values = explanation.heatmaps.to_vec()?;
        for (i, image) in images.iter().enumerate() {
            let raw = &values[i * h * w..(i + 1) * h * w];
            let tag = format!("interpretation/sample_{i}");
            // A model that diverged (or overflowed on this sample) explains nothing: its
            // overlay would be a blank, plausible picture. The confidence is still
            // logged (NaN in TensorBoard shows the divergence) and the image skipped.
            if raw.iter().all(|v| v.is_finite()) && explained.confidences[i].is_finite() {
                let map = Map::new(raw.to_vec(), w as u32, h as u32).normalized();
                sinks.image(&tag, at, &overlay(image, &map, self.colormap, self.alpha));
            } else {
                log::warn!(
                    "{}: {tag} at epoch {} step {} is NaN or infinite (the model diverged or \
                     overflowed): no overlay logged",
                    Monitor::<M>::name(self),
                    at.epoch,
                    at.step
                );
            }
            sinks.scalar(&format!("{tag}/confidence"), at, explained.confidences[i]);
            if let Some(labels) = &self.labels {
                let correct = (labels[i] == explained.classes[i]) as u8 as f64;
                sinks.scalar(&format!("{tag}/correct"), at, correct);
            }
        }
        Ok(())
    }
}

/// Where the feature monitor takes its input batches from.
pub trait ProbeBatches: Send {
    /// Up to `n` batches `[B,3,H,W]` on `device`.
    fn batches(&mut self, n: usize, device: &Device) -> Result<Vec<Tensor<4>>>;
}

/// Fixed batches, the same at every run of the monitor.
impl ProbeBatches for Vec<Tensor<4>> {
    fn batches(&mut self, n: usize, device: &Device) -> Result<Vec<Tensor<4>>> {
        Ok(self
            .iter()
            .take(n)
            .map(|b| b.clone().to_device(device))
            .collect())
    }
}

/// The first batches of a burn data loader (the validation loader, as AutoTimm uses),
/// with a function that takes the images out of a batch.
pub struct LoaderBatches<I> {
    loader: Arc<dyn DataLoader<I>>,
    images: fn(&I) -> Tensor<4>,
}

impl<I> LoaderBatches<I> {
    /// `images` returns the input tensor of a batch item.
    pub fn new(loader: Arc<dyn DataLoader<I>>, images: fn(&I) -> Tensor<4>) -> Self {
        Self { loader, images }
    }
}

impl<I: Send> ProbeBatches for LoaderBatches<I> {
    fn batches(&mut self, n: usize, device: &Device) -> Result<Vec<Tensor<4>>> {
        self.loader
            .iter()
            .take(n)
            .map(|item| {
                let item = item.map_err(|e| {
                    LumenError::InvalidArgument(format!("reading a probe batch: {e}"))
                })?;
                Ok((self.images)(&item).detach().to_device(device))
            })
            .collect()
    }
}

/// At most this many values per layer and batch go into the histogram (a uniform
/// stride sample); the scalar statistics use every value.
pub const HISTOGRAM_SAMPLE: usize = 1 << 16;

/// Statistics of chosen layers' activations over `num_batches` probe batches: mean,
/// std, sparsity and max as scalars (`features/{layer}/{stat}`) and the distribution
/// as a histogram (`features/{layer}/activations`). The seed's
/// `FeatureMonitorCallback`, with `num_batches` honoured (AutoTimm's ignores it).
/// The statistics are `lumen-features`' definitions per batch, combined exactly.
pub struct FeatureMonitor {
    layers: Vec<String>,
    source: Box<dyn ProbeBatches>,
    num_batches: usize,
    schedule: Schedule,
    options: StatisticsOptions,
}

impl FeatureMonitor {
    /// Monitor `layers` on batches from `source`; defaults: one batch, every epoch and
    /// before training.
    pub fn new<S: Into<String>>(
        layers: impl IntoIterator<Item = S>,
        source: impl ProbeBatches + 'static,
    ) -> Result<Self> {
        let layers: Vec<String> = layers.into_iter().map(Into::into).collect();
        if layers.is_empty() {
            return Err(LumenError::InvalidArgument(
                "the feature monitor needs at least one layer".into(),
            ));
        }
        Ok(Self {
            layers,
            source: Box::new(source),
            num_batches: 1,
            schedule: Schedule::default(),
            options: StatisticsOptions::default(),
        })
    }

    /// How many batches each run reads (at least 1).
    pub fn num_batches(mut self, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(LumenError::InvalidArgument(
                "num_batches must be at least 1".into(),
            ));
        }
        self.num_batches = n;
        Ok(self)
    }

    /// When to run.
    pub fn schedule(mut self, schedule: Schedule) -> Result<Self> {
        schedule.validate("feature monitor")?;
        self.schedule = schedule;
        Ok(self)
    }
}

impl<M: ExplainableModel + Module> Monitor<M> for FeatureMonitor {
    fn name(&self) -> String {
        format!("feature monitor ({})", self.layers.join(", "))
    }

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    fn check(&self, model: &M) -> Result<()> {
        for layer in &self.layers {
            model.layer(layer)?;
        }
        Ok(())
    }

    fn observe(&mut self, model: &M, at: Moment, sinks: &mut Sinks) -> Result<()> {
        let batches = self
            .source
            .batches(self.num_batches, &model_device(model))?;
        if batches.is_empty() {
            return Err(LumenError::InvalidArgument(
                "the probe batches are empty".into(),
            ));
        }
        let visualizer = FeatureVisualizer::new(model);
        let mut totals: Vec<Option<(FeatureStatistics, f64)>> = vec![None; self.layers.len()];
        let mut samples: Vec<Vec<f32>> = vec![vec![]; self.layers.len()];
        for batch in &batches {
            let features = visualizer.features_of(batch, &self.layers)?;
            for (k, feature) in features.into_iter().enumerate() {
                let dims = feature.dims();
                let values = to_host(feature)?;
                let stats = statistics_of_host(&values, dims, &self.options);
                let count = values.len() as f64;
                totals[k] = Some(match totals[k].take() {
                    None => (stats, count),
                    Some((total, n)) => (combine(&total, n, &stats, count), n + count),
                });
                let stride = values.len().div_ceil(HISTOGRAM_SAMPLE).max(1);
                samples[k].extend(values.iter().step_by(stride));
            }
        }
        for ((layer, total), sample) in self.layers.iter().zip(totals).zip(samples) {
            let (stats, _) = total.expect("at least one batch");
            for (name, value) in [
                ("mean", stats.mean),
                ("std", stats.std),
                ("sparsity", stats.sparsity),
                ("max", stats.max),
            ] {
                sinks.scalar(&format!("features/{layer}/{name}"), at, value);
            }
            sinks.histogram(
                &format!("features/{layer}/activations"),
                at,
                &Histogram::of(&sample),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Sink, SinkResult};
    use burn::nn::conv::Conv2d;
    use burn::tensor::TensorData;
    use lumen_core::{LayerInfo, LayerKind, Tap};
    use std::sync::Mutex;

    fn logits(values: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
        Tensor::<4>::from_data(TensorData::new(values, shape), &Device::flex())
    }

    /// A segmentation output explains, per image, its most frequent predicted class
    /// other than the background (ties to the lower index), with the mean probability
    /// over that class's pixels and its logits summed over them.
    #[test]
    fn segmentation_outputs_explain_the_dominant_class_over_its_region() {
        // 2 images, 3 classes, 1x4 pixels. Image 0: background on 3 pixels, class 2 on
        // one. Image 1: classes 1 and 2 on two pixels each.
        #[rustfmt::skip]
        let values = vec![
            // image 0: class 0, 1, 2 over the 4 pixels
            5.0, 5.0, 5.0, 0.0,
            0.0, 1.0, 0.0, 1.0,
            0.0, 0.0, 0.0, 3.0,
            // image 1
            0.0, 0.0, 0.0, 0.0,
            2.0, 4.0, 0.0, 0.0,
            0.0, 0.0, 1.0, 2.0,
        ];
        let output = logits(values.clone(), [2, 3, 1, 4]);
        let explained = output.explained().unwrap();
        assert_eq!(explained.classes, [2, 1]);
        let softmax = |image: usize, class: usize, pixel: usize| {
            let at = |c: usize| values[(image * 3 + c) * 4 + pixel].exp();
            (at(class) / (at(0) + at(1) + at(2))) as f64
        };
        let expected = [
            softmax(0, 2, 3),
            (softmax(1, 1, 0) + softmax(1, 1, 1)) / 2.0,
        ];
        for (got, want) in explained.confidences.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let scores = to_host(explained.target.score(&output).unwrap()).unwrap();
        assert_eq!(scores, [3.0, 6.0]);
        // Only background predicted: the background is explained.
        let background = logits(vec![1.0, 1.0, 0.0, 0.0], [1, 2, 1, 2]);
        assert_eq!(background.explained().unwrap().classes, [0]);
    }

    /// A tiny segmentor: one 3x3 convolution to 3 classes, at the input's resolution.
    #[derive(Module, Debug)]
    struct TinySegmentor {
        conv: Conv2d,
    }

    impl ExplainableModel for TinySegmentor {
        type Output = Tensor<4>;
        fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<4> {
            tap.visit("conv", self.conv.forward(input))
        }
        fn layers(&self) -> Vec<LayerInfo> {
            vec![LayerInfo::new("conv", LayerKind::FeatureMap)]
        }
        fn default_layer(&self) -> String {
            "conv".into()
        }
        fn input_shape(&self) -> [usize; 3] {
            [3, 8, 8]
        }
    }

    #[derive(Clone, Default)]
    struct Recorded(std::sync::Arc<Mutex<Vec<(String, String)>>>);

    impl Sink for Recorded {
        fn name(&self) -> String {
            "recorded".into()
        }
        fn scalar(&mut self, tag: &str, _at: Moment, value: f64) -> SinkResult {
            self.0
                .lock()
                .unwrap()
                .push((tag.into(), format!("{value}")));
            Ok(())
        }
        fn image(&mut self, tag: &str, _at: Moment, image: &RgbImage) -> SinkResult {
            let size = format!("{}x{}", image.width(), image.height());
            self.0.lock().unwrap().push((tag.into(), size));
            Ok(())
        }
        fn histogram(&mut self, _tag: &str, _at: Moment, _h: &Histogram) -> SinkResult {
            Ok(())
        }
    }

    /// The explanation monitor takes a segmentor as it takes a classifier: an overlay
    /// and a confidence per sample, and whether the dominant class is the label.
    #[test]
    fn the_explanation_monitor_observes_a_segmentor() {
        let device = Device::flex().autodiff();
        let model = TinySegmentor {
            conv: burn::nn::conv::Conv2dConfig::new([3, 3], [3, 3])
                .with_padding(burn::nn::PaddingConfig2d::Same)
                .init(&device),
        };
        let image = |v: u8| RgbImage::from_fn(8, 8, |x, _| image::Rgb([v, 30 * x as u8, 90]));
        let mut monitor = ExplanationMonitor::new(
            vec![image(10), image(200)],
            DataConfig::imagenet(8),
            "gradcam",
        )
        .unwrap()
        .labels(vec![1, 2])
        .unwrap();
        Monitor::<TinySegmentor>::check(&monitor, &model).unwrap();
        let recorded = Recorded::default();
        let mut sinks = Sinks::new();
        sinks.push(Box::new(recorded.clone()));
        let at = Moment { epoch: 1, step: 4 };
        monitor.observe(&model, at, &mut sinks).unwrap();
        let entries = recorded.0.lock().unwrap().clone();
        let tags: Vec<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tags,
            [
                "interpretation/sample_0",
                "interpretation/sample_0/confidence",
                "interpretation/sample_0/correct",
                "interpretation/sample_1",
                "interpretation/sample_1/confidence",
                "interpretation/sample_1/correct",
            ]
        );
        assert_eq!(entries[0].1, "8x8");
        let confidence: f64 = entries[1].1.parse().unwrap();
        assert!((0.0..=1.0).contains(&confidence) && confidence > 0.0);
        assert!(sinks.failures().is_empty());

        // A diverged model (NaN weights): the confidences are logged as NaN, the
        // overlays, which would be blank, are not.
        let diverged = TinySegmentor {
            conv: burn::nn::conv::Conv2d {
                weight: model.conv.weight.clone().map(|w| w.mul_scalar(f32::NAN)),
                ..model.conv.clone()
            },
        };
        let recorded = Recorded::default();
        let mut sinks = Sinks::new();
        sinks.push(Box::new(recorded.clone()));
        monitor.observe(&diverged, at, &mut sinks).unwrap();
        let entries = recorded.0.lock().unwrap().clone();
        let tags: Vec<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tags,
            [
                "interpretation/sample_0/confidence",
                "interpretation/sample_0/correct",
                "interpretation/sample_1/confidence",
                "interpretation/sample_1/correct",
            ]
        );
        assert_eq!(entries[0].1, "NaN");
    }

    #[test]
    fn schedules() {
        let s = Schedule {
            every_n_epochs: Some(2),
            every_n_steps: Some(5),
            at_start: false,
        };
        assert!(!s.due(Point::Start));
        assert!(s.due(Point::EpochEnd(4)) && !s.due(Point::EpochEnd(3)));
        assert!(s.due(Point::Step(10)) && !s.due(Point::Step(11)));
        assert!(
            Schedule {
                every_n_epochs: Some(0),
                ..s
            }
            .validate("m")
            .is_err()
        );
    }
}
