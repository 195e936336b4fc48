//! Feature visualization against its references on timm's `test_resnet` (two 160x160
//! images). Fixtures from tools/reference/feature_fixtures.py: AutoTimm 0.7.37's
//! `FeatureVisualizer` (statistics, top channels, layer comparison: exact channel
//! indices and counts, values within 1e-5 relative), torch autograd (gradient
//! receptive field) and a PyTorch transcription of the occlusion field (1e-5 of the
//! maximum), and an independent Araujo et al. recurrence over the timm modules
//! (theoretical receptive fields of resnet18, resnet50 and test_resnet: exact). The
//! same AutoTimm statistics and top channels on its segmentor and detector.

mod common;

use std::path::PathBuf;

use common::{device, read};
use lumen::core::burn::tensor::Tensor;
use lumen::features::{
    FeatureStatistics, FeatureVisualizer, Occlusion, StatisticsOptions,
    theoretical_receptive_fields,
};
use lumen::{ExplainableModel, LoadedModel, ZooModel};

const RELATIVE: f64 = 1e-5;

fn fixture(key: &str) -> (Vec<f32>, Vec<usize>) {
    read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/test_resnet_features.safetensors"),
        key,
    )
}

fn model_and_input() -> (ZooModel, Tensor<4>) {
    common::zoo_fixture("test_resnet")
}

fn close(name: &str, actual: f64, expected: f64) {
    let scale = expected.abs().max(1e-6);
    assert!(
        (actual - expected).abs() <= RELATIVE * scale,
        "{name}: {actual} vs {expected}"
    );
}

/// One image's (or batch's) statistics against AutoTimm's row `[mean, std, min, max,
/// sparsity, active channels, channels]`: within 1e-5 relative, the mean relative to
/// `mean_scale`, the counts exactly.
fn check_statistics(name: &str, s: &FeatureStatistics, expected: &[f32], mean_scale: f64) {
    let mean_scale = mean_scale.max(1e-6);
    assert!(
        (s.mean - expected[0] as f64).abs() <= RELATIVE * mean_scale,
        "{name} mean: {} vs {}",
        s.mean,
        expected[0]
    );
    close(&format!("{name} std"), s.std, expected[1] as f64);
    close(&format!("{name} min"), s.min, expected[2] as f64);
    close(&format!("{name} max"), s.max, expected[3] as f64);
    close(&format!("{name} sparsity"), s.sparsity, expected[4] as f64);
    assert_eq!(s.active_channels, expected[5] as usize, "{name} active");
    assert_eq!(s.num_channels, expected[6] as usize, "{name} channels");
}

#[test]
fn statistics_top_channels_and_comparison_match_autotimm() {
    let (model, input) = model_and_input();
    let visualizer = FeatureVisualizer::new(&model);
    let layers: Vec<String> = ["layer2", "layer3", "layer4"].map(String::from).to_vec();
    let compared = visualizer
        .compare_layers(&input, &layers, &StatisticsOptions::default())
        .unwrap();
    for stats in &compared {
        let rows = stats
            .per_image
            .iter()
            .enumerate()
            .map(|(i, s)| (i.to_string(), s))
            .chain([("batch".to_string(), &stats.batch)]);
        for (suffix, s) in rows {
            let (expected, _) = fixture(&format!("stats_{}_{suffix}", stats.layer));
            let name = format!("{} {suffix}", stats.layer);
            check_statistics(&name, s, &expected, expected[0].abs() as f64);
        }
        let top = visualizer.top_channels(&input, &stats.layer, 5).unwrap();
        for (i, image) in top.iter().enumerate() {
            let (expected, shape) = fixture(&format!("top_{}_{i}", stats.layer));
            assert_eq!(shape, [5, 2]);
            for (got, want) in image.iter().zip(expected.chunks(2)) {
                assert_eq!(
                    got.channel, want[0] as usize,
                    "{} top channels",
                    stats.layer
                );
                close("top channel mean", got.score, want[1] as f64);
            }
        }
    }
}

/// The per-image statistics and top channels of `layers` of `model` on `input` against
/// AutoTimm's `FeatureVisualizer` on the same AutoTimm model (keys `{task}_...`). Means
/// are compared within 1e-5 of the larger of their size and the std (an FPN level's
/// mean is a small sum of large values of both signs), the rest as the classifier's.
fn assert_task_features_match(task: &str, model: &impl ExplainableModel, input: &Tensor<4>) {
    let fixture = |key: &str| {
        read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/task_features.safetensors"),
            key,
        )
    };
    let layers: &[&str] = match task {
        "seg" => &["backbone.layer3", "head.aspp", "head.decoder"],
        _ => &["backbone.layer3", "fpn.p3", "fpn.p7"],
    };
    let visualizer = FeatureVisualizer::new(model);
    let names: Vec<String> = layers.iter().map(|l| l.to_string()).collect();
    let compared = visualizer
        .compare_layers(input, &names, &StatisticsOptions::default())
        .unwrap();
    for stats in &compared {
        for (i, s) in stats.per_image.iter().enumerate() {
            let (expected, _) = fixture(&format!("{task}_stats_{}_{i}", stats.layer));
            let name = format!("{task} {} {i}", stats.layer);
            let mean_scale = expected[0].abs().max(expected[1]) as f64;
            check_statistics(&name, s, &expected, mean_scale);
        }
        let top = visualizer.top_channels(input, &stats.layer, 5).unwrap();
        for (i, image) in top.iter().enumerate() {
            let (expected, shape) = fixture(&format!("{task}_top_{}_{i}", stats.layer));
            assert_eq!(shape, [5, 2]);
            let got: Vec<usize> = image.iter().map(|c| c.channel).collect();
            let want: Vec<usize> = expected.chunks(2).map(|c| c[0] as usize).collect();
            assert_eq!(got, want, "{task} {} image {i}: top channels", stats.layer);
            for (c, w) in image.iter().zip(expected.chunks(2)) {
                close("top channel mean", c.score, w[1] as f64);
            }
        }
    }
}

/// Feature visualization is a layer's, whatever the head does with it: AutoTimm's
/// DeepLabV3+ segmentor and FCOS detector (the task parity fixtures' weights and
/// inputs) at backbone, head and FPN layers.
#[test]
fn segmentor_and_detector_features_match_autotimm() {
    use lumen::core::burn::tensor::TensorData;
    let device = device();
    let input = |io: &str| {
        let (values, shape) = read(common::models_fixture(io), "input");
        Tensor::<4>::from_data(
            TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
            &device,
        )
    };
    let segmentor = lumen::LoadedSegmentor::load(
        "deeplabv3plus_test_resnet",
        5,
        common::models_fixture("seg_deeplabv3plus.safetensors"),
        &device,
    )
    .unwrap();
    assert_task_features_match(
        "seg",
        &segmentor.model,
        &input("seg_deeplabv3plus_io.safetensors"),
    );
    let detector = lumen::LoadedDetector::load(
        "fcos_test_resnet",
        3,
        common::models_fixture("det_fcos.ckpt"),
        &device,
    )
    .unwrap();
    assert_task_features_match("det", &detector.model, &input("det_fcos_io.safetensors"));
}

#[test]
fn receptive_fields_match_torch() {
    let (model, input) = model_and_input();
    let visualizer = FeatureVisualizer::new(&model);
    let gradient = visualizer
        .receptive_field_gradient(&input, "layer2", 5, None)
        .unwrap();
    let (expected, _) = fixture("gradient_field");
    let actual: Vec<f32> = gradient.iter().flat_map(|m| m.values.clone()).collect();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = actual
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("gradient field: max abs diff {diff:e} (scale {scale:e})");
    assert!(diff <= RELATIVE as f32 * scale);
    // The support is where torch's gradient is non-zero.
    for (map, want) in gradient.iter().zip(expected.chunks(160 * 160)) {
        let nonzero = want.iter().filter(|v| **v != 0.0).count();
        let ours = map.values.iter().filter(|v| **v != 0.0).count();
        assert_eq!(ours, nonzero);
    }

    let occlusion = visualizer
        .receptive_field_occlusion(&input, "layer2", 5, None, Occlusion::default())
        .unwrap();
    let (expected, _) = fixture("occlusion_field");
    let actual: Vec<f32> = occlusion.iter().flat_map(|m| m.values.clone()).collect();
    let diff = actual
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("occlusion field: max abs diff {diff:e}");
    assert!(
        diff <= RELATIVE as f32,
        "occlusion field differs by {diff:e}"
    );
}

#[test]
fn theoretical_receptive_fields_match_the_recurrence_on_timm_modules() {
    let device = device();
    for arch in ["resnet18", "resnet50", "test_resnet"] {
        let model = LoadedModel::init(arch, 10, &device).unwrap().model;
        let fields = theoretical_receptive_fields(&model);
        let (expected, shape) = fixture(&format!("rf_{arch}"));
        assert_eq!(fields.len(), shape[0], "{arch}: one row per spatial layer");
        // Every spatial layer but the shortcuts' `downsample` points, which are off
        // the main path the fields follow.
        let spatial: Vec<String> = model
            .layers()
            .into_iter()
            .filter(|l| l.kind == lumen::core::LayerKind::FeatureMap)
            .map(|l| l.name)
            .filter(|name| !name.ends_with(".downsample"))
            .collect();
        assert_eq!(
            fields.iter().map(|f| f.layer.clone()).collect::<Vec<_>>(),
            spatial
        );
        for (f, row) in fields.iter().zip(expected.chunks(3)) {
            assert_eq!(
                (f.size, f.jump, f.start),
                (row[0] as usize, row[1] as usize, row[2] as f64),
                "{arch} {}",
                f.layer
            );
        }
        let last = fields.last().unwrap();
        eprintln!(
            "{arch} {}: size {} jump {}",
            last.layer, last.size, last.jump
        );
    }
}
