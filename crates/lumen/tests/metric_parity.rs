//! Parity of every metric with its reference on timm's `test_resnet` (two 160x160
//! images, targets 3 and 7), given the same heatmaps. Fixtures from
//! tools/reference/metric_fixtures.py: Quantus 0.6.0 (pointing game, relevance mass
//! and rank, sparseness), SciPy (`spearmanr`; `spsolve` inside ROAD's imputer),
//! scikit-image (`structural_similarity`), pytorch-grad-cam (the heatmaps, and its
//! `ROADMostRelevantFirst`/`ROADLeastRelevantFirst` on a tie-free map) and
//! transcriptions of RISE, ROAD on GradCAM's maps (whose tied zeros the library's
//! percentile threshold removes all at once), TorchRay's tolerance, the energy pointing
//! game, IoU and average drop. Sensitivity: Quantus' `MaxSensitivity`/`AvgSensitivity`
//! given the stored perturbations (a transcription of Yeh et al. agrees to 4e-9).
//!
//! Tolerances: localization exact (booleans equal, ratios to 1e-6, float rounding of
//! the sums); deletion/insertion and ROAD probabilities 1e-4 absolute; average drop
//! 1e-2 percentage points; Spearman and SSIM 1e-5; sensitivity 1e-3 absolute (it
//! re-explains with GradCAM, whose parity tolerance is 1e-3).

mod common;

use std::path::PathBuf;

use common::{device, read, trained_fixture as trained};

use lumen::ZooModel;
use lumen::core::burn::tensor::{Tensor, TensorData};
use lumen::core::input::{IMAGENET_MEAN, IMAGENET_STD};
use lumen::core::{ClassLogit, ClassProbability, Heatmaps};
use lumen::methods::{Baseline, Cam, GradCam};
use lumen::metrics::{
    CurveConfig, CurveKind, RandomizationConfig, Region, RoadConfig, RoadOrder, SensitivityConfig,
    complexity, confidence_change, gini,
    localization::{energy_pointing_game, iou, pointing_game, relevance_mass, relevance_rank},
    model_randomization, perturbation_curve, road, sensitivity, sensitivity_with, spearman, ssim,
};

fn fixture(key: &str) -> Vec<f32> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/test_resnet_metrics.safetensors");
    read(path, key).0
}

const SIZE: usize = 160;
const PIXELS: usize = SIZE * SIZE;
const CLASSES: [usize; 2] = [3, 7];

fn model_and_input() -> (ZooModel, Tensor<4>) {
    common::zoo_fixture("test_resnet")
}

fn heatmaps(key: &str) -> Heatmaps {
    Heatmaps::new(Tensor::from_data(
        TensorData::new(fixture(key), [2, SIZE, SIZE]),
        &device(),
    ))
}

fn regions() -> Vec<Region> {
    let masks = fixture("masks");
    let regions: Vec<Region> = masks
        .chunks(PIXELS)
        .map(|m| Region::from_mask(SIZE, SIZE, m.iter().map(|&v| v > 0.5).collect()).unwrap())
        .collect();
    let boxes = fixture("boxes");
    for (region, b) in regions.iter().zip(boxes.chunks(4)) {
        let expected: Vec<usize> = b.iter().map(|&v| v as usize).collect();
        assert_eq!(region.bbox.to_vec(), expected, "box from mask");
    }
    regions
}

fn assert_close(name: &str, actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "{name}: lengths");
    let diff = actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!("{name}: max abs diff {diff:e}");
    assert!(
        diff <= tolerance,
        "{name}: {actual:?} vs {expected:?} (diff {diff:e} > {tolerance:e})"
    );
}

#[test]
fn localization_matches_quantus_and_the_papers() {
    let regions = regions();
    for map_key in ["gradcam", "noise_map"] {
        let prefix = if map_key == "gradcam" {
            "gradcam_"
        } else {
            "noise_"
        };
        let maps = fixture(map_key);
        let per_image = |f: &dyn Fn(&[f32], &Region) -> f32| -> Vec<f32> {
            maps.chunks(PIXELS)
                .zip(&regions)
                .map(|(m, r)| f(m, r))
                .collect()
        };
        let b = |v: bool| v as u8 as f32;
        let checks: Vec<(&str, Vec<f32>)> = vec![
            (
                "pointing_game",
                per_image(&|m, r| b(pointing_game(m, r, 0.0).unwrap())),
            ),
            (
                "pointing_game_15",
                per_image(&|m, r| b(pointing_game(m, r, 15.0).unwrap())),
            ),
            (
                "relevance_mass",
                per_image(&|m, r| relevance_mass(m, r).unwrap()),
            ),
            (
                "relevance_rank",
                per_image(&|m, r| relevance_rank(m, r).unwrap()),
            ),
            (
                "energy_pointing_game",
                per_image(&|m, r| energy_pointing_game(m, r).unwrap()),
            ),
            ("iou", per_image(&|m, r| iou(m, r, 0.5).unwrap())),
            ("gini", per_image(&|m, _| gini(m))),
        ];
        for (name, actual) in checks {
            let key = format!("{prefix}{name}");
            assert_close(&key, &actual, &fixture(&key), 1e-6);
        }
        // Complexity is an entropy near ln(160 * 160) = 10.1: compare at 1e-5 (f32 sums).
        let key = format!("{prefix}complexity");
        assert_close(
            &key,
            &per_image(&|m, _| complexity(m)),
            &fixture(&key),
            1e-5,
        );
    }
    // A signed map: the mass metrics count positive relevance only (the maps above are
    // never negative, so they could not show it). The generator asserts that the raw
    // sums (Quantus, abs=False) and the magnitudes (abs=True) give values more than
    // 1e-3 away.
    let signed = fixture("signed_map");
    let per_image = |f: fn(&[f32], &Region) -> lumen::core::Result<f32>| -> Vec<f32> {
        signed
            .chunks(PIXELS)
            .zip(&regions)
            .map(|(m, r)| f(m, r).unwrap())
            .collect()
    };
    assert_close(
        "signed_relevance_mass",
        &per_image(relevance_mass),
        &fixture("signed_relevance_mass"),
        1e-6,
    );
    assert_close(
        "signed_energy_pointing_game",
        &per_image(energy_pointing_game),
        &fixture("signed_energy_pointing_game"),
        1e-6,
    );
    // Gini (Quantus' Sparseness) takes magnitudes: signed values give a value more
    // than 1e-3 away (asserted in the generator).
    let signed_gini: Vec<f32> = signed.chunks(PIXELS).map(gini).collect();
    assert_close("signed_gini", &signed_gini, &fixture("signed_gini"), 1e-6);
}

#[test]
fn deletion_and_insertion_curves_match_rise() {
    let (model, input) = model_and_input();
    let maps = heatmaps("gradcam");
    let target = ClassProbability(CLASSES.to_vec());
    let cases = [
        (
            "deletion_black",
            CurveKind::Deletion,
            Baseline::Black {
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
        ),
        (
            "insertion_blur",
            CurveKind::Insertion,
            Baseline::Blur { sigma: 5.0 },
        ),
        ("deletion_mean", CurveKind::Deletion, Baseline::Mean),
    ];
    for (key, kind, baseline) in cases {
        let config = CurveConfig {
            steps: 16,
            baseline,
            // Not a divisor of the 34 rows: the last chunk is short.
            batch_size: Some(12),
        };
        let curve = perturbation_curve(&model, &input, &maps, &target, kind, &config).unwrap();
        assert_eq!(curve.fractions.len(), 17);
        assert_close(key, &curve.scores.concat(), &fixture(key), 1e-4);
        // The normalised area is the area over the unperturbed score.
        let original = match kind {
            CurveKind::Deletion => curve.scores[0][0],
            CurveKind::Insertion => curve.scores[0][16],
        };
        assert!((curve.normalized_auc[0] - curve.auc[0] / original).abs() < 1e-6);
    }
}

#[test]
fn road_matches_the_reference_imputer() {
    let (model, input) = model_and_input();
    check_road(&model, &input, &heatmaps("gradcam"), &CLASSES, &fixture, "");
    // pytorch-grad-cam's own ROAD (imputer noise 0) on a map without ties at the cuts,
    // where its percentile threshold removes the pixels our ranking does.
    for (order, key) in ROAD_ORDERS {
        let result = road(
            &model,
            &input,
            &heatmaps("noise_map"),
            &CLASSES,
            order,
            &road_config(),
        )
        .unwrap();
        assert_close(
            &format!("{key}_library_noise_map"),
            &result.probability.concat(),
            &fixture(&format!("{key}_library_noise_map")),
            1e-4,
        );
    }
}

const ROAD_ORDERS: [(RoadOrder, &str); 2] = [
    (RoadOrder::MoRF, "road_morf"),
    (RoadOrder::LeRF, "road_lerf"),
];

fn road_config() -> RoadConfig {
    RoadConfig {
        percentages: vec![20.0, 50.0, 80.0],
        noise: 0.0,
        seed: 0,
        batch_size: Some(4),
    }
}

/// ROAD's probabilities (1e-4) and kept flags (equal), both orders, against
/// `expected`'s `road_{morf,lerf}_{probability,kept}`.
fn check_road(
    model: &ZooModel,
    input: &Tensor<4>,
    maps: &Heatmaps,
    classes: &[usize],
    expected: &dyn Fn(&str) -> Vec<f32>,
    label: &str,
) {
    for (order, key) in ROAD_ORDERS {
        let result = road(model, input, maps, classes, order, &road_config()).unwrap();
        assert_close(
            &format!("{label}{key}_probability"),
            &result.probability.concat(),
            &expected(&format!("{key}_probability")),
            1e-4,
        );
        let kept: Vec<f32> = result
            .kept
            .concat()
            .iter()
            .map(|&k| k as u8 as f32)
            .collect();
        assert_eq!(kept, expected(&format!("{key}_kept")), "{label}{key} kept");
    }
}

#[test]
fn average_drop_matches_grad_cam_plus_plus() {
    let (model, input) = model_and_input();
    let change = confidence_change(
        &model,
        &input,
        &heatmaps("gradcam"),
        &ClassProbability(CLASSES.to_vec()),
        &Baseline::Black {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        },
    )
    .unwrap();
    assert_close("average_drop", &change.drop, &fixture("average_drop"), 1e-2);
    let increase: Vec<f32> = change.increase.iter().map(|&i| i as u8 as f32).collect();
    assert_eq!(increase, fixture("increase"));
}

#[test]
fn sensitivity_matches_quantus_given_the_same_noise() {
    let (model, input) = model_and_input();
    let device = device();
    let noise = fixture("sensitivity_noise");
    let per_sample = 2 * 3 * PIXELS;
    let perturbations: Vec<Tensor<4>> = noise
        .chunks(per_sample)
        .map(|n| Tensor::from_data(TensorData::new(n.to_vec(), [2, 3, SIZE, SIZE]), &device))
        .collect();
    assert_eq!(perturbations.len(), 3);
    let gradcam = Cam {
        kind: &GradCam,
        layer: Some("layer4".into()),
    };
    let result = sensitivity_with(
        &model,
        &gradcam,
        &input,
        &ClassLogit(CLASSES.to_vec()),
        &perturbations,
        Some(4),
    )
    .unwrap();
    assert_close(
        "max_sensitivity",
        &result.max,
        &fixture("max_sensitivity"),
        1e-3,
    );
    assert_close(
        "avg_sensitivity",
        &result.average,
        &fixture("avg_sensitivity"),
        1e-3,
    );

    // Generated perturbations are drawn a batch of rows at a time (4 rows: batches
    // cross the samples): the same result as sample `s`'s whole stream (seed + s)
    // made up front.
    let config = SensitivityConfig {
        radius: 0.1,
        samples: 3,
        seed: 11,
        batch_size: Some(4),
    };
    let upfront: Vec<Tensor<4>> = (0..3)
        .map(|s| {
            let values =
                lumen::core::random::uniform_values(per_sample, -0.1, 0.1, 11 + s).unwrap();
            Tensor::from_data(TensorData::new(values, [2, 3, SIZE, SIZE]), &device)
        })
        .collect();
    let target = ClassLogit(CLASSES.to_vec());
    let whole = sensitivity_with(&model, &gradcam, &input, &target, &upfront, Some(6)).unwrap();
    let drawn = sensitivity(&model, &gradcam, &input, &target, &config).unwrap();
    assert!(whole.max.iter().all(|&m| m > 0.0), "{:?}", whole.max);
    assert_close("generated max", &drawn.max, &whole.max, 1e-4);
    assert_close("generated average", &drawn.average, &whole.average, 1e-4);
}

#[test]
fn spearman_and_ssim_match_scipy_and_scikit_image() {
    let maps = fixture("gradcam");
    for other in ["noise", "shifted"] {
        let others = fixture(if other == "noise" {
            "noise_map"
        } else {
            "shifted"
        });
        let (rho, s): (Vec<f32>, Vec<f32>) = maps
            .chunks(PIXELS)
            .zip(others.chunks(PIXELS))
            .map(|(a, b)| (spearman(a, b), ssim(a, b, [SIZE, SIZE], 1.0)))
            .unzip();
        assert_close(
            &format!("spearman_{other}"),
            &rho,
            &fixture(&format!("spearman_{other}")),
            1e-5,
        );
        assert_close(
            &format!("ssim_{other}"),
            &s,
            &fixture(&format!("ssim_{other}")),
            1e-5,
        );
    }
}

const SIDE: usize = 128;

/// Quantus' MPRT (cascading, top down) given the weights Lumen's randomisation draws
/// (the generator runs the randomized_shapes_cnn example), GradCAM at layer4: the mean
/// signed and absolute Spearman per step. SciPy's NaN for a constant map is 0 here.
#[test]
fn randomisation_matches_quantus_mprt_given_the_same_weights() {
    let (loaded, input, labels) = common::trained_shapes_cnn(0..4);
    let ZooModel::ResNet(model) = loaded.model else {
        unreachable!("shapes-cnn is a ResNet")
    };
    let gradcam = Cam {
        kind: &GradCam,
        layer: Some("layer4".into()),
    };
    let curve = model_randomization(
        &*model,
        &gradcam,
        &input,
        &ClassLogit(labels),
        &RandomizationConfig::default(),
    )
    .unwrap();
    let rho = trained("randomization_spearman");
    let images = 4;
    assert_eq!(rho.len(), curve.layers.len() * images, "one row per step");
    let mean = |f: fn(f32) -> f32| -> Vec<f32> {
        rho.chunks(images)
            .map(|row| row.iter().map(|&r| f(r)).sum::<f32>() / images as f32)
            .collect()
    };
    assert_close("MPRT Spearman", &curve.spearman, &mean(|r| r), 1e-3);
    assert_close(
        "MPRT |Spearman|",
        &curve.abs_spearman,
        &mean(f32::abs),
        1e-3,
    );
}

/// The trained shapes-cnn (rebuilt as a timm ResNet by the generator) on four
/// test-split shapes, where ROAD's kept flags, the average drop and the pointing
/// tolerance vary (the generator asserts it; on the random-weight test_resnet they
/// barely do). Logits 1e-4 absolute, GradCAM 1e-3, metrics as above.
#[test]
fn metrics_on_the_trained_shapes_cnn_match_the_references() {
    let (loaded, input, labels) = common::trained_shapes_cnn(0..4);
    let model = &loaded.model;
    assert_close(
        "shapes-cnn logits (timm)",
        &lumen::core::to_host(lumen::core::ExplainableModel::forward(model, input.clone()))
            .unwrap(),
        &trained("logits"),
        1e-4,
    );
    let gradcam = Cam {
        kind: &GradCam,
        layer: Some("layer4".into()),
    };
    let ours = lumen::methods::Method::explain(
        &gradcam,
        model,
        input.clone(),
        &ClassLogit(labels.clone()),
    )
    .unwrap()
    .heatmaps;
    assert_close(
        "shapes-cnn gradcam",
        &ours.to_vec().unwrap(),
        &trained("gradcam"),
        1e-3,
    );

    let values = trained("gradcam");
    let maps = Heatmaps::new(Tensor::from_data(
        TensorData::new(values.clone(), [4, SIDE, SIDE]),
        &device(),
    ));
    let regions: Vec<Region> = trained("masks")
        .chunks(SIDE * SIDE)
        .map(|m| Region::from_mask(SIDE, SIDE, m.iter().map(|&v| v > 0.5).collect()).unwrap())
        .collect();
    for (key, tolerance) in [("pointing_game", 0.0), ("pointing_game_15", 15.0)] {
        let hits: Vec<f32> = values
            .chunks(SIDE * SIDE)
            .zip(&regions)
            .map(|(m, r)| pointing_game(m, r, tolerance).unwrap() as u8 as f32)
            .collect();
        assert_eq!(hits, trained(&format!("gradcam_{key}")), "{key}");
    }
    let change = confidence_change(
        model,
        &input,
        &maps,
        &ClassProbability(labels.clone()),
        &Baseline::Black {
            mean: [0.5; 3],
            std: [0.5; 3],
        },
    )
    .unwrap();
    assert_close(
        "trained average_drop",
        &change.drop,
        &trained("average_drop"),
        1e-2,
    );
    let increase: Vec<f32> = change.increase.iter().map(|&i| i as u8 as f32).collect();
    assert_eq!(increase, trained("increase"));
    check_road(model, &input, &maps, &labels, &trained, "trained ");
    for (key, kind) in [
        ("deletion_mean", CurveKind::Deletion),
        ("insertion_mean", CurveKind::Insertion),
    ] {
        let config = CurveConfig {
            steps: 16,
            baseline: Baseline::Mean,
            batch_size: Some(12),
        };
        let curve = perturbation_curve(
            model,
            &input,
            &maps,
            &ClassProbability(labels.clone()),
            kind,
            &config,
        )
        .unwrap();
        assert_close(
            &format!("trained {key}"),
            &curve.scores.concat(),
            &trained(key),
            1e-4,
        );
        // The area, which the reported normalised area is made from: RISE's `auc` (the
        // generator asserts it is more than 1e-3 from the plain mean of the curve).
        assert_close(
            &format!("trained {key} area"),
            &curve.auc,
            &trained(&format!("{key}_auc")),
            1e-4,
        );
    }
}
