//! Activation maximization does what it says: the objective rises, and an image
//! optimised for a class logit of the bundled shapes CNN is classified as that class
//! with high confidence.

use lumen::features::{FeatureVisualizer, MaximizeOptions, Objective};
use lumen::{Device, ExplainableModel, Inputs, LoadedModel, Task, TaskModel};

fn bundled() -> Option<LoadedModel> {
    match LoadedModel::bundled("shapes-cnn", &Device::default()) {
        Ok(model) => Some(model),
        Err(e) if e.to_string().contains("no weights") => None,
        Err(e) => panic!("{e}"),
    }
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
    let Some(model) = bundled() else { return };
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
    let Some(model) = bundled() else { return };
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
