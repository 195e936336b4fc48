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
    for (a, b) in one_by_one.iter().zip(&together) {
        assert_eq!(a.objective, b.objective);
        let largest = a
            .pixels
            .iter()
            .zip(&b.pixels)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            largest < 1e-5,
            "{}: pixels differ by {largest}",
            a.objective
        );
        assert!(
            a.trajectory
                .iter()
                .zip(&b.trajectory)
                .all(|(x, y)| (x - y).abs() <= 1e-4 * y.abs().max(1.0)),
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
    let err = visualizer
        .maximize(&objectives, &options(Some(0)), &model.device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("internal batch size must be at least 1"),
        "{err}"
    );
}
