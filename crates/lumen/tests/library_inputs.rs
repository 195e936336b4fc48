//! Bad settings given to the library directly (not through the CLI, which checks its
//! flags itself): each entry point says what is wrong before any work, never panics and
//! never returns NaN scores or a silently empty result.

use lumen::core::burn::tensor::{Tensor, TensorData};
use lumen::core::{ClassLogit, Device, LumenError, to_host};
use lumen::features::{FeatureVisualizer, StatisticsOptions};
use lumen::methods::{
    Baseline, Cam, Family, GradCam, IntegratedGradients, Method, MethodOptions, Noise, NoiseKind,
    NoiseTunnel, Saliency, by_name, method_info, method_names,
};
use lumen::metrics::{
    CurveConfig, CurveKind, LocalizationConfig, RandomizationConfig, Region, RoadConfig, RoadOrder,
    SensitivityConfig, localization, model_randomization, perturbation_curve, road, sensitivity,
};
use lumen::models::{ResNet, VisionTransformer};
use lumen::{LoadedModel, ZooModel};

fn shapes_cnn() -> (ResNet, Tensor<4>) {
    let loaded = LoadedModel::bundled("shapes-cnn", &Device::flex()).unwrap();
    let samples = lumen::models::shapes::shape_samples(2, 0, 2);
    let images: Vec<_> = samples.into_iter().map(|s| s.image).collect();
    let input = loaded
        .data_config
        .to_tensor(&images, &Device::flex())
        .unwrap();
    match loaded.model {
        ZooModel::ResNet(model) => (*model, input),
        ZooModel::Vit(_) => unreachable!("shapes-cnn is a ResNet"),
    }
}

/// `result` is an `InvalidArgument` whose message contains `needle`.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: lumen::core::Result<T>, needle: &str) {
    match result {
        Err(LumenError::InvalidArgument(message)) => assert!(
            message.contains(needle),
            "message `{message}` does not mention `{needle}`"
        ),
        other => panic!("expected an invalid-argument error about `{needle}`, got {other:?}"),
    }
}

#[test]
fn metric_settings_are_checked_before_any_work() {
    let (model, input) = shapes_cnn();
    let cam = Cam::new(&GradCam);
    let target = ClassLogit(vec![0, 1]);
    let maps = cam
        .explain(&model, input.clone(), &target)
        .unwrap()
        .heatmaps;

    let curve = |config: CurveConfig| {
        perturbation_curve(&model, &input, &maps, &target, CurveKind::Deletion, &config)
    };
    let deletion = CurveConfig::deletion([0.5; 3], [0.25; 3]);
    assert_invalid(
        curve(CurveConfig {
            steps: 0,
            ..deletion.clone()
        }),
        "step",
    );
    assert_invalid(
        curve(CurveConfig {
            batch_size: Some(0),
            ..deletion.clone()
        }),
        "batch size",
    );
    for sigma in [f32::NAN, 0.0, -1.0, f32::INFINITY] {
        assert_invalid(
            curve(CurveConfig {
                baseline: Baseline::Blur { sigma },
                ..deletion.clone()
            }),
            "sigma",
        );
    }
    assert_invalid(
        curve(CurveConfig {
            baseline: Baseline::Black {
                mean: [0.5; 3],
                std: [0.25, 0.0, 0.25],
            },
            ..deletion.clone()
        }),
        "std != 0",
    );
    // The settings that pass give finite curves.
    let fine = curve(deletion).unwrap();
    assert!(fine.auc.iter().all(|a| a.is_finite()));

    let road_with =
        |config: RoadConfig| road(&model, &input, &maps, &[0, 1], RoadOrder::MoRF, &config);
    for (config, needle) in [
        (
            RoadConfig {
                percentages: vec![],
                ..RoadConfig::default()
            },
            "at least one percentage",
        ),
        (
            RoadConfig {
                percentages: vec![50.0, f32::NAN],
                ..RoadConfig::default()
            },
            "(0, 100)",
        ),
        (
            RoadConfig {
                noise: f32::NAN,
                ..RoadConfig::default()
            },
            "noise",
        ),
        (
            RoadConfig {
                noise: -0.1,
                ..RoadConfig::default()
            },
            "noise",
        ),
        (
            RoadConfig {
                batch_size: Some(0),
                ..RoadConfig::default()
            },
            "batch size",
        ),
    ] {
        assert_invalid(road_with(config), needle);
    }

    let sensitivity_with =
        |config: SensitivityConfig| sensitivity(&model, &cam, &input, &target, &config);
    // A NaN radius used to panic in the random stream; an infinite one likewise.
    for radius in [f32::NAN, f32::INFINITY, 0.0, -0.1] {
        assert_invalid(
            sensitivity_with(SensitivityConfig {
                radius,
                ..SensitivityConfig::default()
            }),
            "radius",
        );
    }
    assert_invalid(
        sensitivity_with(SensitivityConfig {
            samples: 0,
            ..SensitivityConfig::default()
        }),
        "perturbation",
    );
    assert_invalid(
        sensitivity_with(SensitivityConfig {
            batch_size: Some(0),
            ..SensitivityConfig::default()
        }),
        "batch size",
    );

    for threshold in [f32::NAN, -0.1, 1.5] {
        assert_invalid(
            model_randomization(
                &model,
                &cam,
                &input,
                &target,
                &RandomizationConfig {
                    threshold,
                    ..RandomizationConfig::default()
                },
            ),
            "threshold",
        );
    }
    assert_invalid(
        model_randomization(
            &model,
            &cam,
            &input,
            &target,
            &RandomizationConfig {
                groups: Some(vec![]),
                ..RandomizationConfig::default()
            },
        ),
        "parameter group",
    );
}

#[test]
fn localization_and_feature_thresholds_are_checked() {
    let region = Region::from_box(4, 4, [1, 1, 3, 3]).unwrap();
    let map = vec![0.0f32; 16];
    for (config, needle) in [
        (
            LocalizationConfig {
                tolerance: f32::NAN,
                ..LocalizationConfig::default()
            },
            "tolerance",
        ),
        (
            LocalizationConfig {
                tolerance: -1.0,
                ..LocalizationConfig::default()
            },
            "tolerance",
        ),
        (
            LocalizationConfig {
                iou_threshold: f32::NAN,
                ..LocalizationConfig::default()
            },
            "IoU threshold",
        ),
        (
            LocalizationConfig {
                iou_threshold: 1.5,
                ..LocalizationConfig::default()
            },
            "IoU threshold",
        ),
    ] {
        assert_invalid(localization(&map, &region, &config), needle);
    }
    assert!(localization(&map, &region, &LocalizationConfig::default()).is_ok());

    let (model, input) = shapes_cnn();
    let visualizer = FeatureVisualizer::new(&model);
    for (options, needle) in [
        (
            StatisticsOptions {
                active_threshold: f32::NAN,
                ..StatisticsOptions::default()
            },
            "active-channel threshold",
        ),
        (
            StatisticsOptions {
                zero_threshold: -1e-3,
                ..StatisticsOptions::default()
            },
            "near-zero threshold",
        ),
    ] {
        assert_invalid(visualizer.statistics(&input, "layer1", &options), needle);
    }
}

/// Path steps past the limit were an abort: 4e9 steps listed 32 GB of step sizes.
#[test]
fn integrated_gradients_refuses_path_steps_it_cannot_list() {
    let (model, input) = shapes_cnn();
    let target = ClassLogit(vec![0, 1]);
    let limit = lumen::methods::gradient::MAX_PATH_STEPS;
    for steps in [0, limit + 1, 4_000_000_000] {
        let ig = IntegratedGradients {
            steps,
            ..IntegratedGradients::default()
        };
        assert_invalid(
            ig.explain(&model, input.clone(), &target),
            &format!("takes 1 to {limit} path steps, got {steps}"),
        );
    }
}

#[test]
fn baselines_refuse_what_would_be_nan_and_a_wide_blur_stays_exact() {
    let (model, input) = shapes_cnn();
    let target = ClassLogit(vec![0, 1]);
    let ig = |baseline: Baseline| {
        IntegratedGradients {
            baseline,
            steps: 4,
            ..IntegratedGradients::default()
        }
        .explain(&model, input.clone(), &target)
    };
    assert_invalid(ig(Baseline::Blur { sigma: f32::NAN }), "sigma");
    assert_invalid(
        ig(Baseline::White {
            mean: [0.5, f32::INFINITY, 0.5],
            std: [0.25; 3],
        }),
        "finite normalisation",
    );
    // Noise whose deviation overflows (a relative level of 3e38 times the value range)
    // or is NaN would make the noisy inputs infinite: refused.
    for noise in [Noise::Relative(3e38), Noise::Absolute(f32::NAN)] {
        let tunnel = NoiseTunnel {
            inner: Box::new(Saliency),
            kind: NoiseKind::SmoothGrad,
            samples: 2,
            noise,
            seed: Some(1),
            batch_size: None,
        };
        assert_invalid(
            tunnel.explain(&model, input.clone(), &target),
            "standard deviation for image 0",
        );
    }
    // An input with an infinite value has no uniform range to draw from (this
    // panicked in the random stream).
    let mut values = to_host(input.clone()).unwrap();
    values[0] = f32::INFINITY;
    let infinite = Tensor::<4>::from_data(TensorData::new(values, input.dims()), &input.device());
    assert_invalid(
        Baseline::Uniform { seed: Some(3) }.build(&infinite),
        "uniform baseline",
    );
    assert_invalid(
        Baseline::Uniform { seed: None }.build(&infinite),
        "uniform baseline",
    );

    // The blur's kernel stops at the image's longer side; taps beyond it only meet
    // the zero padding, so the result is the untruncated Gaussian average. Checked
    // against that average written out over every pixel, for a sigma whose 3-sigma
    // radius (30) is far beyond the 5x6 image, and for a tiny sigma (the square of
    // 1e-30 underflows in f32: its kernel was 0 / 0).
    let (h, w) = (5usize, 6usize);
    let image: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 11) as f32 - 3.0).collect();
    let small = Tensor::<4>::from_data(
        TensorData::new(image.clone(), [1, 1, h, w]),
        &input.device(),
    );
    for sigma in [10.0f64, 1e-30] {
        let blurred = to_host(
            Baseline::Blur {
                sigma: sigma as f32,
            }
            .build(&small)
            .unwrap(),
        )
        .unwrap();
        let weight = |d: usize, e: usize| {
            let d = d as f64 - e as f64;
            (-d * d / (2.0 * sigma * sigma)).exp()
        };
        for y in 0..h {
            for x in 0..w {
                let (mut sum, mut total) = (0.0f64, 0.0f64);
                for a in 0..h {
                    for b in 0..w {
                        let k = weight(y, a) * weight(x, b);
                        sum += k * image[a * w + b] as f64;
                        total += k;
                    }
                }
                let expected = (sum / total) as f32;
                let got = blurred[y * w + x];
                assert!(
                    (got - expected).abs() <= 1e-4,
                    "sigma {sigma}: pixel ({y}, {x}) is {got}, the Gaussian average {expected}"
                );
            }
        }
    }
    // Not the identity: a wide blur moves the pixels toward the mean.
    let wide = to_host(Baseline::Blur { sigma: 10.0 }.build(&small).unwrap()).unwrap();
    assert!(wide.iter().zip(&image).any(|(a, b)| (a - b).abs() > 1.0));
}

/// Every method of the registry, called directly as a user of `lumen-methods` would,
/// on an empty batch, a NaN or infinite input, and fewer target classes than images:
/// each was a panic (an empty batch in the eigen and perturbation CAMs and, on a ViT,
/// every CAM and gradient method; a short target in IG and the noise tunnels, which
/// index it per derived row) or, for NaN inputs, a NaN map or a plausible all-zero
/// saliency. Each is now the error the batch deserves.
#[test]
fn every_method_refuses_empty_non_finite_batches_and_short_targets() {
    let device = Device::flex();
    let options = MethodOptions {
        noise_samples: 2,
        steps: 3,
        internal_batch_size: Some(2),
        ..MethodOptions::default()
    };
    let zeros = |shape: [usize; 4]| Tensor::<4>::zeros(shape, &device);
    let cases: Vec<(&str, Tensor<4>, Vec<usize>, &str)> = vec![
        (
            "empty",
            zeros([0, 3, 128, 128]),
            vec![],
            "the batch is empty",
        ),
        (
            "NaN",
            Tensor::full([1, 3, 128, 128], f32::NAN, &device),
            vec![0],
            "NaN or infinite",
        ),
        (
            "infinite",
            zeros([1, 3, 128, 128]).slice_fill([0..1, 1..2, 5..6, 7..8], f32::NEG_INFINITY),
            vec![0],
            "NaN or infinite",
        ),
        ("short target", zeros([2, 3, 128, 128]), vec![0], "found 1"),
    ];
    for model_name in ["shapes-cnn", "shapes-vit"] {
        let loaded = LoadedModel::bundled(model_name, &device).unwrap();
        for name in method_names() {
            let attention = method_info(name).unwrap().family == Family::Attention;
            if attention && model_name == "shapes-cnn" {
                continue;
            }
            for (case, input, classes, needle) in &cases {
                // Rollout and attention flow explain no class: a short target is fine.
                if *case == "short target" && matches!(name, "rollout" | "attention-flow") {
                    continue;
                }
                let target = ClassLogit(classes.clone());
                let explained = match &loaded.model {
                    ZooModel::ResNet(m) => by_name::<ResNet>(name, &options)
                        .and_then(|method| method.explain(m, input.clone(), &target)),
                    ZooModel::Vit(m) => by_name::<VisionTransformer>(name, &options)
                        .and_then(|method| method.explain(m, input.clone(), &target)),
                };
                match explained {
                    Err(error) => assert!(
                        error.to_string().contains(needle),
                        "{model_name} {name} on a {case} batch: `{error}` does not say `{needle}`"
                    ),
                    Ok(_) => panic!("{model_name} {name} explained a {case} batch"),
                }
            }
        }
    }
}
