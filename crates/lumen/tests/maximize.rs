//! Activation maximization does what it says: the objective rises, and an image
//! optimised for a class logit of the bundled shapes CNN is classified as that class
//! with high confidence. On the device of `LUMEN_TEST_DEVICE` (CI runs it on tch:cpu
//! and wgpu: the optimisation differentiates to the input on every backend).

mod common;

use lumen::features::{FeatureVisualizer, MaximizeOptions, Objective};
use lumen::{ExplainableModel, Inputs, LoadedModel, Task, TaskModel};

/// The bundled weights are in the repository: a build without them fails here rather
/// than passing untested.
fn bundled() -> LoadedModel {
    LoadedModel::bundled("shapes-cnn", &common::device()).unwrap()
}

fn rgb(pixels: &[f32], h: usize, w: usize) -> image::RgbImage {
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            (pixels[c * h * w + i].clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    })
}

fn mean_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}

/// Whether the device's forward gives each of `images` the same logits in one batch as
/// alone: flex does; libtorch's oneDNN convolutions on some CPUs (an AMD EPYC with
/// avx512_bf16) pick kernels by batch size whose sums differ by about 1e-7 relative.
fn batch_invariant(model: &LoadedModel, images: &[lumen::features::MaximizedImage]) -> bool {
    use lumen::core::burn::tensor::TensorData;
    // Any input shows it: the maximised images (unnormalised) serve as one.
    let (h, w) = (images[0].height, images[0].width);
    let c = images[0].pixels.len() / (h * w);
    let values: Vec<f32> = images
        .iter()
        .flat_map(|i| i.pixels.iter().copied())
        .collect();
    let batch = lumen::core::Tensor::<4>::from_data(
        TensorData::new(values, [images.len(), c, h, w]),
        &model.device,
    );
    let whole = lumen::to_host(model.model.forward(batch.clone())).unwrap();
    let alone: Vec<f32> = (0..images.len())
        .flat_map(|i| lumen::to_host(model.model.forward(batch.clone().narrow(0, i, 1))).unwrap())
        .collect();
    whole == alone
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn class_logits_are_maximised_into_images_of_the_class() {
    let model = bundled();
    let objectives: Vec<Objective> = (0..4)
        .map(|channel| Objective::Channel {
            layer: "fc".into(),
            channel,
        })
        .collect();
    let options = MaximizeOptions {
        steps: 32,
        mean: model.data_config.mean,
        std: model.data_config.std,
        ..MaximizeOptions::default()
    };
    let mut steps = 0;
    let images = FeatureVisualizer::new(&model.model)
        .maximize(&objectives, &options, &model.device, |s| steps = s)
        .unwrap();
    assert_eq!(steps, 32);
    let pictures: Vec<_> = images
        .iter()
        .map(|m| rgb(&m.pixels, m.height, m.width))
        .collect();
    let names = (0..4).map(|i| format!("class{i}")).collect();
    let inputs = Inputs::from_images(pictures, names, &model.data_config, &model.device).unwrap();
    let predictions = model
        .task()
        .predict(&model.model.forward(inputs.tensor))
        .unwrap();
    for (class, (image, prediction)) in images.iter().zip(&predictions).enumerate() {
        let first = image.trajectory[0];
        assert!(
            image.value > first + 5.0,
            "class {class}: {first} -> {}",
            image.value
        );
        assert_eq!(prediction.class, class, "{prediction:?}");
        assert!(prediction.confidence > 0.9, "{prediction:?}");
    }
}

#[test]
fn a_channel_objective_rises_and_bad_requests_are_errors() {
    let model = bundled();
    let visualizer = FeatureVisualizer::new(&model.model);
    let options = MaximizeOptions {
        steps: 16,
        seed: 3,
        mean: model.data_config.mean,
        std: model.data_config.std,
        ..MaximizeOptions::default()
    };
    let images = visualizer
        .maximize(
            &[Objective::Channel {
                layer: "layer3".into(),
                channel: 7,
            }],
            &options,
            &model.device,
            |_| {},
        )
        .unwrap();
    assert!(images[0].value > images[0].trajectory[0]);
    assert!(images[0].pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    let err = visualizer
        .maximize(
            &[Objective::Channel {
                layer: "layer3".into(),
                channel: 999,
            }],
            &options,
            &model.device,
            |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    let err = visualizer
        .maximize(
            &[Objective::Channel {
                layer: "layer9".into(),
                channel: 0,
            }],
            &options,
            &model.device,
            |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown layer"), "{err}");
}

/// Objectives run in internal batches (memory stays bounded however many channels are
/// asked for), and the batch size changes no image: every batch replays the same
/// seeded transformations and takes its initial coefficients from one stream in
/// objective order. A bad objective late in the list fails before any batch runs.
#[test]
fn internal_batches_change_no_image_and_bad_objectives_fail_first() {
    let model = bundled();
    let visualizer = FeatureVisualizer::new(&model.model);
    let objectives: Vec<Objective> = [3, 7, 11]
        .into_iter()
        .map(|channel| Objective::Channel {
            layer: "layer2".into(),
            channel,
        })
        .collect();
    let options = |batch_size| MaximizeOptions {
        steps: 6,
        seed: 5,
        mean: model.data_config.mean,
        std: model.data_config.std,
        batch_size,
        // Restarts (tested below) would add a re-run to the step count.
        restarts: 0,
        ..MaximizeOptions::default()
    };
    let mut progress = vec![];
    let one_by_one = visualizer
        .maximize(&objectives, &options(Some(1)), &model.device, |s| {
            progress.push(s)
        })
        .unwrap();
    // Three batches of six steps, counted over all of them.
    assert_eq!(progress, (1..=18).collect::<Vec<_>>());
    let together = visualizer
        .maximize(&objectives, &options(None), &model.device, |_| {})
        .unwrap();
    assert_eq!(one_by_one.len(), 3);
    let exact = batch_invariant(&model, &one_by_one);
    eprintln!("the forward is batch-invariant on this device: {exact}");
    for (a, b) in one_by_one.iter().zip(&together) {
        assert_eq!(a.objective, b.objective);
        let (within, pixel_limit) = if exact {
            (1e-4, 1e-5)
        } else {
            // Adam's first steps are sign-like: a pixel whose gradient is near zero
            // moves by a full step either way, so the kernels' rounding grows to about
            // 0.11 in single pixels (on an AMD EPYC with libtorch, layer2 #7: mean 0.0096,
            // trajectory 3.4e-3 apart). Each image must still be far nearer its twin than
            // any other objective's image (those are 0.10 to 0.16 apart on average).
            let nearest_other = one_by_one
                .iter()
                .filter(|o| o.objective != a.objective)
                .map(|o| mean_difference(&o.pixels, &a.pixels))
                .fold(f32::INFINITY, f32::min);
            let mean = mean_difference(&a.pixels, &b.pixels);
            assert!(
                mean < 0.2 * nearest_other,
                "{}: a mean difference of {mean} from its twin, {nearest_other} from the nearest other image",
                a.objective
            );
            (1e-2, f32::INFINITY)
        };
        let largest = largest_difference(&a.pixels, &b.pixels);
        assert!(
            largest < pixel_limit,
            "{}: pixels differ by {largest}",
            a.objective
        );
        assert!(
            a.trajectory
                .iter()
                .zip(&b.trajectory)
                .all(|(x, y)| (x - y).abs() <= within * y.abs().max(1.0)),
            "{}: {:?} against {:?}",
            a.objective,
            a.trajectory,
            b.trajectory
        );
    }
    // The images differ from one another (the check above could not pass on one
    // image copied three times).
    assert!(one_by_one[0].pixels != one_by_one[1].pixels);

    let mut late = objectives.clone();
    late.push(Objective::Channel {
        layer: "layer2".into(),
        channel: 999,
    });
    let mut steps = 0;
    let err = visualizer
        .maximize(&late, &options(Some(1)), &model.device, |s| steps = s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("channel 999 is out of range"), "{err}");
    assert_eq!(steps, 0, "batches ran before the bad objective was refused");
    // The initial coefficients are drawn a batch at a time, after the checks: a million
    // objectives would be 197 GB of them at once (this aborted when they were drawn up
    // front), and the bad one at the end is refused first.
    let mut million = vec![objectives[0].clone(); 1_000_000];
    million.push(late[3].clone());
    let err = visualizer
        .maximize(&million, &options(Some(1)), &model.device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("channel 999 is out of range"), "{err}");
    let err = visualizer
        .maximize(&objectives, &options(Some(0)), &model.device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("internal batch size must be at least 1"),
        "{err}"
    );
}

/// Channels the near-grey start leaves at exactly 0 get no gradient; restarts run them
/// again from the same draw scaled 10x and 100x. Objectives that moved the first time
/// keep their images, restarted ones move, and the internal batch size still changes
/// no image.
#[test]
fn channels_stuck_at_zero_restart_from_noisier_starts() {
    let model = bundled();
    let visualizer = FeatureVisualizer::new(&model.model);
    // On the bundled weights channels 0, 2 and 3 of layer4 stay at 0 from this start
    // and 1 moves (the CLI's `maximize --layer layer4 --restarts 0` shows the same).
    let objectives: Vec<Objective> = (0..4)
        .map(|channel| Objective::Channel {
            layer: "layer4".into(),
            channel,
        })
        .collect();
    let options = |restarts, batch_size| MaximizeOptions {
        steps: 24,
        mean: model.data_config.mean,
        std: model.data_config.std,
        restarts,
        batch_size,
        ..MaximizeOptions::default()
    };
    let mut first_steps = 0;
    let plain = visualizer
        .maximize(&objectives, &options(0, None), &model.device, |s| {
            first_steps = s
        })
        .unwrap();
    assert_eq!(first_steps, 24);
    let stuck: Vec<usize> = (0..4).filter(|&i| plain[i].stayed_at_zero()).collect();
    assert!(
        stuck.len() >= 2 && stuck.len() < 4,
        "the fixture needs stuck and moving channels: {stuck:?}"
    );
    let mut steps = vec![];
    let restarted = visualizer
        .maximize(&objectives, &options(2, None), &model.device, |s| {
            steps.push(s)
        })
        .unwrap();
    // Counted on over the re-runs: 24 steps, then 24 per restart that had work.
    assert_eq!(steps.len() % 24, 0);
    assert_eq!(steps, (1..=steps.len()).collect::<Vec<_>>());
    assert!(steps.len() > 24);
    for (i, (a, b)) in plain.iter().zip(&restarted).enumerate() {
        if stuck.contains(&i) {
            assert!(b.restarts >= 1, "{}: {}", b.objective, b.restarts);
            assert!(!b.stayed_at_zero(), "{} still at 0", b.objective);
            assert!(b.value > 0.0 && a.pixels != b.pixels, "{}", b.objective);
        } else {
            assert_eq!(b.restarts, 0);
            assert_eq!(a.pixels, b.pixels, "{} moved the first time", a.objective);
        }
    }
    // One objective per batch: the same restarts from the same starts. (Compared at
    // the first step, on the start image: after a few Adam steps from a saturated
    // start, libtorch's rounding at another batch size moves pixels by 0.06-0.3.)
    let one_by_one = visualizer
        .maximize(&objectives, &options(2, Some(1)), &model.device, |_| {})
        .unwrap();
    for (a, b) in one_by_one.iter().zip(&restarted) {
        assert_eq!(a.restarts, b.restarts, "{}", a.objective);
        assert_eq!(a.stayed_at_zero(), b.stayed_at_zero(), "{}", a.objective);
        let (x, y) = (a.trajectory[0], b.trajectory[0]);
        assert!(
            (x - y).abs() <= 1e-3 * y.abs().max(1.0),
            "{}: first step {x} against {y}",
            a.objective
        );
    }
    // The first steps of the restarted ones are of their noisier starts, not of the
    // grey one (which left them at 0).
    assert!(stuck.iter().any(|&i| restarted[i].trajectory[0] > 0.0));
}

/// The parameterization (scaled DCT coefficients, lucid's colour decorrelation, a
/// sigmoid, the normalisation), the objectives and the Adam steps match a PyTorch
/// transcription optimised by `torch.optim.Adam` (tools/reference/maximize_fixtures.py)
/// on timm's `test_resnet`, from the same initial coefficients, with the random
/// transformations off (their draws are Lumen's own): 3 steps for a channel, a neuron
/// and a direction of `layer3`; for a logit only its value on the initial image (its
/// ascent turns on float rounding from the first step, measured in the generator).
/// Tolerances: pixels (in [0, 1]) within 5e-4, objective values within 1e-4 of
/// max(|v|, 1) (measured: at most 2.7e-6 and 5.4e-7 on flex, tch:cpu and wgpu).
/// The generator keeps only objectives whose float32, float64, BatchNorm-folded and
/// weight-perturbed (1e-6) runs agree within 5e-5, and asserts that the same run
/// without the spectrum scaling, without the decorrelation or without Adam's bias
/// correction, and the initial image, are all more than 5e-3 away.
#[test]
fn maximize_matches_a_torch_transcription_with_adam() {
    let fixture = |key: &str| {
        common::read(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/test_resnet_maximize.safetensors"),
            key,
        )
    };
    let index = |key: &str| fixture(key).0[0] as usize;
    // The generator's initial coefficients, drawn again from their seeds.
    let initial = |key: &str| -> Vec<f32> {
        fixture(key)
            .0
            .iter()
            .flat_map(|&seed| common::hashed_normal([1, 3, 160, 160], seed as u64, 0.1))
            .collect()
    };
    let (model, _) = common::zoo_fixture("test_resnet");
    let visualizer = FeatureVisualizer::new(&model);
    let device = common::device();
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
    let (trajectories, shape) = fixture("layer3_trajectory");
    let [objective_count, steps] = [shape[0], shape[1]];
    let options = |steps| MaximizeOptions {
        steps,
        learning_rate: 0.05,
        jitter: 0,
        scale: [1.0, 1.0],
        rotation: 0.0,
        mean: [0.5; 3],
        std: [0.5; 3],
        ..MaximizeOptions::default()
    };
    let objectives = [
        Objective::Channel {
            layer: "layer3".into(),
            channel: index("layer3_channel"),
        },
        Objective::Neuron {
            layer: "layer3".into(),
            channel: index("neuron_channel"),
            at: [3, 4],
        },
        Objective::Direction {
            layer: "layer3".into(),
            weights: fixture("direction").0,
        },
    ];
    assert_eq!(objectives.len(), objective_count);
    let images = visualizer
        .maximize_from(
            &objectives,
            &initial("layer3_seeds"),
            &options(steps),
            &device,
            |_| {},
        )
        .unwrap();
    let pixels = fixture("layer3_pixels").0;
    let values = fixture("layer3_value").0;
    let per_image = pixels.len() / objective_count;
    for (i, image) in images.iter().enumerate() {
        let largest =
            common::max_abs_diff(&image.pixels, &pixels[i * per_image..(i + 1) * per_image]);
        assert!(
            largest <= 5e-4,
            "{}: pixels differ by {largest}",
            image.objective
        );
        assert!(
            close(image.value, values[i]),
            "{}: {} against {}",
            image.objective,
            image.value,
            values[i]
        );
        let expected = &trajectories[i * steps..(i + 1) * steps];
        assert!(
            image.trajectory.len() == steps
                && image
                    .trajectory
                    .iter()
                    .zip(expected)
                    .all(|(a, b)| close(*a, *b)),
            "{}: {:?} against {expected:?}",
            image.objective,
            image.trajectory
        );
    }
    // A logit (a vector layer): its value on the initial image, the first step's.
    let logit = visualizer
        .maximize_from(
            &[Objective::Channel {
                layer: "fc".into(),
                channel: index("fc_channel"),
            }],
            &initial("fc_seed"),
            &options(1),
            &device,
            |_| {},
        )
        .unwrap();
    let expected = fixture("fc_value_at_initial").0[0];
    assert!(
        close(logit[0].trajectory[0], expected),
        "logit: {} against {expected}",
        logit[0].trajectory[0]
    );

    // Given coefficients are checked: one image short, or not finite.
    let objective = [Objective::Channel {
        layer: "layer3".into(),
        channel: 0,
    }];
    let options = MaximizeOptions::default();
    let err = visualizer
        .maximize_from(&objective, &[0.0; 10], &options, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("initial coefficients"), "{err}");
    let mut bad = vec![0.0; 3 * 160 * 160];
    bad[5] = f32::NAN;
    let err = visualizer
        .maximize_from(&objective, &bad, &options, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be finite"), "{err}");
}
