//! Internal batches sized by default: every chunked metric and feature tool (deletion
//! and insertion curves, ROAD, sensitivity, the occlusion receptive field, D-RISE, the
//! feature visualizer's scans, the facade's explain and compare calls)
//! picks its rows from the input and the model when the caller sets none, as the
//! methods do, instead of a fixed count that overflows memory on large inputs or wide
//! layers. A model that counts the rows of each forward pass shows the chunks.

use std::sync::Mutex;

use lumen::core::DataConfig;
use lumen::core::burn::tensor::Distribution;
use lumen::core::{
    ClassProbability, Device, ExplainableModel, Heatmaps, LayerInfo, LayerKind, Tap, Tensor,
    default_forward_rows_for, default_rows_for,
};
use lumen::features::{FeatureVisualizer, MapChoice, Occlusion, SortBy, StatisticsOptions};
use lumen::methods::Saliency;
use lumen::metrics::{
    CurveConfig, CurveKind, RoadConfig, RoadOrder, SensitivityConfig, perturbation_curve, road,
    sensitivity,
};
use lumen::models::detector_config;
use lumen::report::Layout;
use lumen::tasks::{BoxRequest, DriseConfig, drise};
use lumen::tasks::{Classification, ObjectDetection};
use lumen::{
    DetectionOptions, ExplainOptions, Explained, Inputs, compare_methods, device_from_str,
    explain_detection, explain_with,
};

/// Wraps a model and records the rows of every forward pass.
struct Counted<M> {
    inner: M,
    rows: Mutex<Vec<usize>>,
}

impl<M> Counted<M> {
    fn new(inner: M) -> Self {
        Self {
            inner,
            rows: Mutex::default(),
        }
    }

    /// The largest forward pass since the last call.
    fn largest(&self) -> usize {
        let rows = std::mem::take(&mut *self.rows.lock().unwrap());
        rows.into_iter().max().unwrap_or(0)
    }
}

impl<M: ExplainableModel> ExplainableModel for Counted<M> {
    type Output = M::Output;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> M::Output {
        self.rows.lock().unwrap().push(input.dims()[0]);
        self.inner.forward_tapped(input, tap)
    }

    fn layers(&self) -> Vec<LayerInfo> {
        self.inner.layers()
    }

    fn default_layer(&self) -> String {
        self.inner.default_layer()
    }

    fn input_shape(&self) -> [usize; 3] {
        self.inner.input_shape()
    }

    fn min_input_side(&self) -> Option<usize> {
        self.inner.min_input_side()
    }
}

/// A classifier whose one layer has 512 channels at the input's full size: on a
/// 3x64x64 input the input alone would allow 392 gradient rows (784 forward-only), the
/// layer (2.1 M values a row) 12.
struct Wide;

const CHANNELS: usize = 512;

impl ExplainableModel for Wide {
    type Output = Tensor<2>;

    fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Tensor<2> {
        let [b, _, h, w] = input.dims();
        let wide = tap.visit("wide", input.mean_dim(1).expand([b, CHANNELS, h, w]));
        wide.mean_dims(&[2, 3]).reshape([b, CHANNELS])
    }

    fn layers(&self) -> Vec<LayerInfo> {
        vec![LayerInfo::new("wide", LayerKind::FeatureMap)]
    }

    fn default_layer(&self) -> String {
        "wide".into()
    }

    fn input_shape(&self) -> [usize; 3] {
        [3, 64, 64]
    }
}

fn wide_case(images: usize) -> (Counted<Wide>, Tensor<4>, Heatmaps) {
    let device = Device::flex();
    let input = Tensor::<4>::random([images, 3, 64, 64], Distribution::Default, &device);
    let maps = Tensor::<3>::random([images, 64, 64], Distribution::Default, &device);
    let model = Counted::new(Wide);
    // The bound every default below must meet: the layer's, not the input's.
    assert_eq!(default_forward_rows_for(&model, &input), 12);
    assert_eq!(default_rows_for(&model, &input), 12);
    model.largest();
    (model, input, Heatmaps::new(maps))
}

#[test]
fn perturbation_curves_and_road_chunk_to_the_layer_bound_by_default() {
    let (model, input, maps) = wide_case(2);
    let config = CurveConfig::deletion([0.5; 3], [0.25; 3]);
    assert_eq!(config.batch_size, None);
    let target = ClassProbability(vec![0, 1]);
    // 2 images x 65 points: 130 scored rows, 12 at a time (the old fixed 64 did not
    // see the layer).
    let curve =
        perturbation_curve(&model, &input, &maps, &target, CurveKind::Deletion, &config).unwrap();
    assert_eq!(curve.scores.len(), 2);
    assert_eq!(model.largest(), 12);
    // An explicit size still wins.
    let explicit = CurveConfig {
        batch_size: Some(40),
        ..config
    };
    perturbation_curve(
        &model,
        &input,
        &maps,
        &target,
        CurveKind::Deletion,
        &explicit,
    )
    .unwrap();
    assert_eq!(model.largest(), 40);

    // ROAD: 2 images x 9 percentages = 18 imputed rows (the old fixed 64: one pass).
    let config = RoadConfig::default();
    assert_eq!(config.batch_size, None);
    road(&model, &input, &maps, &[0, 1], RoadOrder::MoRF, &config).unwrap();
    assert_eq!(model.largest(), 12);
}

#[test]
fn sensitivity_explains_its_perturbed_copies_in_gradient_sized_chunks() {
    let (model, input, _) = wide_case(2);
    let config = SensitivityConfig::default();
    assert_eq!(config.batch_size, None);
    // 2 images x 10 samples = 20 rows (the old fixed 32: one call).
    let target = lumen::core::ClassLogit(vec![0, 1]);
    sensitivity(&model, &Saliency, &input, &target, &config).unwrap();
    assert_eq!(model.largest(), 12);
}

#[test]
fn the_gradient_receptive_field_runs_in_gradient_sized_batches() {
    // 13 images: a one-image probe that sizes the passes, then passes of 12 and 1 (it
    // was one pass of 13, holding every image's activations for the backward); the
    // same fields as one pass.
    let (model, input, _) = wide_case(13);
    let chunked = FeatureVisualizer::new(&model)
        .receptive_field_gradient(&input, "wide", 1, None)
        .unwrap();
    assert_eq!(*model.rows.lock().unwrap(), [1, 12, 1]);
    model.largest();
    let whole = FeatureVisualizer::new(&model)
        .with_batch_size(Some(13))
        .receptive_field_gradient(&input, "wide", 1, None)
        .unwrap();
    assert_eq!(model.largest(), 13);
    assert_eq!(chunked.len(), 13);
    for (a, b) in chunked.iter().zip(&whole) {
        assert_eq!((a.activation, a.support), (b.activation, b.support));
        let diff = a
            .values
            .iter()
            .zip(&b.values)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-6, "fields differ by {diff} between pass sizes");
    }
    let zero = FeatureVisualizer::new(&model).with_batch_size(Some(0));
    let error = zero
        .receptive_field_gradient(&input, "wide", 1, None)
        .unwrap_err();
    assert!(error.to_string().contains("batch size"), "{error}");
}

#[test]
fn the_occlusion_receptive_field_chunks_its_copies_by_default() {
    let (model, input, _) = wide_case(1);
    let occlusion = Occlusion::default();
    assert_eq!(occlusion.batch_size, None);
    // 7 x 7 patches of 16 px every 8 px on 64 px: 49 copies (the old fixed 32).
    let fields = FeatureVisualizer::new(&model)
        .receptive_field_occlusion(&input, "wide", 0, None, occlusion)
        .unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(model.largest(), 12);
    let zero = Occlusion {
        batch_size: Some(0),
        ..occlusion
    };
    let error = FeatureVisualizer::new(&model)
        .receptive_field_occlusion(&input, "wide", 0, None, zero)
        .unwrap_err();
    assert!(error.to_string().contains("batch size"), "{error}");
}

#[test]
fn drise_shrinks_its_masked_batches_on_a_large_input() {
    let device = device_from_str("cpu").unwrap();
    // The bundled detector's architecture at 512 x 512, random weights: only the
    // shapes of its passes matter here.
    let (config, _) = detector_config("shapes-det", 3).unwrap();
    let model = Counted::new(config.init(512, &device).unwrap());
    // 512 x 512: 5.2x the values of a 224 x 224 input, so 12 forward-only rows instead
    // of 64 (the old fixed 32 ignored the size).
    let input = Tensor::<4>::random([1, 3, 512, 512], Distribution::Default, &device);
    let rows = default_forward_rows_for(&model, &input);
    assert_eq!(rows, 12);
    model.largest();
    let config = DriseConfig {
        masks: 20,
        ..DriseConfig::default()
    };
    assert_eq!(DriseConfig::default().batch_size, None);
    let target = BoxRequest {
        bbox: [100.0, 100.0, 200.0, 200.0],
        label: 0,
    };
    let maps = drise(&model, &input, &[target], &config).unwrap();
    assert_eq!(maps.dims(), [1, 512, 512]);
    assert_eq!(model.largest(), rows);
}

#[test]
fn feature_scans_run_in_layer_sized_batches_and_equal_one_pass() {
    // 13 images: one internal batch of 12 and one of 1 by default.
    let (model, input, _) = wide_case(13);
    let layers = vec!["wide".to_string()];
    let options = StatisticsOptions::default();
    let chunked = FeatureVisualizer::new(&model);
    let whole = FeatureVisualizer::new(&model).with_batch_size(Some(13));

    let stats = chunked.compare_layers(&input, &layers, &options).unwrap();
    assert_eq!(model.largest(), 12);
    let one_pass = whole.compare_layers(&input, &layers, &options).unwrap();
    assert_eq!(model.largest(), 13);
    // Batch statistics combine the images' one after another: the same bits in any
    // grouping.
    assert_eq!(stats, one_pass);

    // The random pick is seeded per image of the whole input, not per internal batch:
    // image 12 is the first of its batch and must not get image 0's channels.
    let maps = chunked
        .feature_maps(&input, "wide", 3, SortBy::Random, 7)
        .unwrap();
    assert_eq!(model.largest(), 12);
    let maps_whole = whole
        .feature_maps(&input, "wide", 3, SortBy::Random, 7)
        .unwrap();
    assert_eq!(model.largest(), 13);
    let channels = |m: &Vec<Vec<lumen::features::ChannelMap>>| -> Vec<Vec<usize>> {
        m.iter()
            .map(|image| image.iter().map(|c| c.channel).collect())
            .collect()
    };
    assert_eq!(channels(&maps), channels(&maps_whole));
    assert_ne!(channels(&maps)[12], channels(&maps)[0]);

    let means = chunked.channel_means(&input, "wide").unwrap();
    assert_eq!(model.largest(), 12);
    assert_eq!(means.len(), 13);
    assert_eq!(means, whole.channel_means(&input, "wide").unwrap());
    assert_eq!(model.largest(), 13);

    // Up to 8 images go whole, without the one-row sizing probe; 9 are probed first,
    // and a later scan of the same shape (a folder's next read batch) keeps the probe.
    let fresh = FeatureVisualizer::new(&model);
    for (images, passes) in [(1, vec![1]), (8, vec![8]), (9, vec![1, 9]), (9, vec![9])] {
        fresh
            .channel_means(&input.clone().narrow(0, 0, images), "wide")
            .unwrap();
        assert_eq!(*model.rows.lock().unwrap(), passes);
        model.largest();
    }

    let zero = FeatureVisualizer::new(&model).with_batch_size(Some(0));
    let error = zero.channel_means(&input, "wide").unwrap_err();
    assert!(error.to_string().contains("batch size"), "{error}");
    let empty = Tensor::<4>::zeros([0, 3, 64, 64], &input.device());
    let error = chunked
        .compare_layers(&empty, &layers, &options)
        .unwrap_err();
    assert!(error.to_string().contains("empty"), "{error}");
}

#[test]
fn feature_maps_and_statistics_come_from_one_pass_and_append_across_chunks() {
    // 13 images: internal batches of 12 and 1.
    let (model, input, _) = wide_case(13);
    let layers = vec!["wide".to_string()];
    let options = StatisticsOptions::default();
    let visualizer = FeatureVisualizer::new(&model);
    let maps = visualizer
        .feature_maps(&input, "wide", 3, SortBy::Variance, 0)
        .unwrap();
    let statistics = visualizer
        .compare_layers(&input, &layers, &options)
        .unwrap();
    model.rows.lock().unwrap().clear();
    let choice = MapChoice {
        layer: "wide".into(),
        count: 3,
        sort: SortBy::Variance,
        seed: 0,
    };
    let (both_maps, both_statistics) = visualizer
        .maps_and_statistics(&input, &choice, &layers, &options)
        .unwrap();
    // One pass per internal batch for both results, not one per result.
    assert_eq!(*model.rows.lock().unwrap(), [12, 1]);
    assert_eq!(both_maps, maps);
    assert_eq!(both_statistics, statistics);
    let zero = MapChoice { count: 0, ..choice };
    let error = visualizer
        .maps_and_statistics(&input, &zero, &layers, &options)
        .unwrap_err();
    assert!(
        error.to_string().contains("at least one channel"),
        "{error}"
    );

    // A folder scanned in two chunks: the second's statistics appended to the first's
    // are one scan's, to the bit.
    let part = |start: usize, len: usize| {
        visualizer
            .compare_layers(&input.clone().narrow(0, start, len), &layers, &options)
            .unwrap()
            .remove(0)
    };
    let (mut merged, second) = (part(0, 5), part(5, 8));
    assert_ne!(merged.batch, second.batch);
    merged.append(second.clone()).unwrap();
    assert_eq!(merged, statistics[0]);
    let other = lumen::features::LayerStatistics {
        layer: "narrow".into(),
        ..second
    };
    let error = merged.append(other).unwrap_err();
    assert!(error.to_string().contains("cannot add"), "{error}");
}

#[test]
fn the_facade_predicts_and_explains_a_large_batch_a_pass_at_a_time() {
    // 13 images of the wide model: passes of 12 and 1 by default (the prediction and
    // the method's forward and backward together), the same maps as one pass of 13.
    let (model, input, _) = wide_case(13);
    let config = DataConfig::imagenet(64);
    let explained = Explained {
        name: "wide".into(),
        model,
        task: Classification::new(CHANNELS, None),
        data_config: config.clone(),
        device: input.device(),
    };
    let inputs = Inputs::from_tensor(input, &config).unwrap();
    assert_eq!(ExplainOptions::<usize>::default().batch_size, None);
    let run = |method: &str, batch_size: Option<usize>, targets: Option<Vec<usize>>| {
        let options = ExplainOptions {
            method: method.into(),
            batch_size,
            targets,
            ..ExplainOptions::default()
        };
        let built = lumen::methods::by_name(method, &options.method_options).unwrap();
        let (explanation, results) =
            explain_with(&explained, &inputs, built.as_ref(), &options).unwrap();
        (explanation, results, explained.model.largest())
    };
    // IG's completeness check scores the images and their baselines in one pass: twice
    // the images of a pass.
    for (method, targets, rows_per_image) in [
        // The one-pass methods read the prediction from their own pass.
        ("gradcam", None, 1),
        ("saliency", None, 1),
        (
            "ig",
            Some((0..13).map(|i| i * 7 % CHANNELS).collect::<Vec<_>>()),
            2,
        ),
    ] {
        let (chunked, results, largest) = run(method, None, targets.clone());
        assert_eq!(largest, 12 * rows_per_image, "{method}");
        let (whole, whole_results, largest) = run(method, Some(13), targets);
        assert_eq!(largest, 13 * rows_per_image, "{method}");
        assert_eq!(results.len(), 13);
        for (a, b) in results.iter().zip(&whole_results) {
            assert_eq!((a.target, &a.prediction.top), (b.target, &b.prediction.top));
        }
        let (a, b) = (
            chunked.heatmaps.to_vec().unwrap(),
            whole.heatmaps.to_vec().unwrap(),
        );
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5, "{method}: maps differ by {diff}");
        assert_eq!(
            chunked.attributions.map(|t| t.dims()),
            whole.attributions.map(|t| t.dims()),
            "{method}"
        );
        assert_eq!(
            chunked.convergence_delta.map(|d| d.len()),
            whole.convergence_delta.map(|d| d.len()),
            "{method}"
        );
    }

    let methods = ["gradcam".to_string(), "saliency".to_string()];
    let compare = |batch_size| {
        let options = ExplainOptions {
            batch_size,
            ..ExplainOptions::default()
        };
        compare_methods(&explained, &inputs, &methods, &options, Layout::Horizontal).unwrap()
    };
    let chunked = compare(None);
    assert_eq!(explained.model.largest(), 12);
    let whole = compare(Some(13));
    assert_eq!(explained.model.largest(), 13);
    assert_eq!(chunked.len(), 13);
    for (a, b) in chunked.iter().zip(&whole) {
        assert_eq!(a.prediction.top, b.prediction.top);
        for (x, y) in a.heatmaps.iter().zip(&b.heatmaps) {
            let diff = x
                .values
                .iter()
                .zip(&y.values)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(diff <= 1e-5, "compare maps differ by {diff}");
        }
    }

    // A wrong number of targets is an error before any chunk picks its share.
    let options = ExplainOptions {
        targets: Some(vec![0, 1]),
        ..ExplainOptions::default()
    };
    let error =
        compare_methods(&explained, &inputs, &methods, &options, Layout::Horizontal).unwrap_err();
    assert!(
        error.to_string().contains("2 given for 13 images"),
        "{error}"
    );
    let zero = ExplainOptions::<usize> {
        batch_size: Some(0),
        ..ExplainOptions::default()
    };
    assert!(
        zero.validate()
            .unwrap_err()
            .to_string()
            .contains("at least 1")
    );
}

#[test]
fn detection_explains_its_box_rows_in_sized_passes() {
    // The bundled detector's architecture at 512 x 512, random weights: 6 rows a pass with
    // gradients (5.2x a 224 px input's values). Two images need no probe, but their
    // boxes (up to 10 each) are rows of their own.
    let device = device_from_str("cpu").unwrap();
    let (architecture, data_config) = detector_config("shapes-det", 3).unwrap();
    let config = DataConfig {
        input_size: [3, 512, 512],
        ..data_config
    };
    let detector = Explained {
        name: "shapes-det".into(),
        model: Counted::new(architecture.init(512, &device).unwrap()),
        task: ObjectDetection::new(3, None),
        data_config: config.clone(),
        device: device.clone(),
    };
    let input = Tensor::<4>::random([2, 3, 512, 512], Distribution::Default, &device);
    assert_eq!(default_rows_for(&detector.model, &input), 6);
    detector.model.largest();
    let inputs = Inputs::from_tensor(input, &config).unwrap();
    let options = DetectionOptions {
        score_threshold: 0.0,
        max_boxes: 10,
        ..DetectionOptions::default()
    };
    let result = explain_detection(&detector, &inputs, &options).unwrap();
    let rows: usize = result.images.iter().map(|i| i.explained.len()).sum();
    assert!(rows > 6, "{rows} box rows: too few to need two passes");
    assert_eq!(detector.model.largest(), 6);
}
