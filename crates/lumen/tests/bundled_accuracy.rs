//! The bundled classifiers' accuracy on the held-out test split of the shapes data
//! (`TEST_SEED`: never seen in training, never used to pick a checkpoint), so that a
//! claim about them lives in a test, not in a commit message. Reproduce the weights
//! with `cargo run --release -p lumen-examples --example train_shapes cnn|vit`, which
//! prints the same figure on 512 images.

use lumen::core::{ExplainableModel, predicted_classes};
use lumen::shapes::{TEST_SEED, shape_samples};
use lumen::{Inputs, LoadedModel, device_from_str};

/// Test images scored here (the training run scores 512).
const IMAGES: u64 = 128;

fn test_accuracy(name: &str) -> f64 {
    let loaded = LoadedModel::bundled(name, &device_from_str("cpu").unwrap()).unwrap();
    let mut correct = 0;
    for start in (0..IMAGES).step_by(32) {
        let samples = shape_samples(TEST_SEED, start, 32);
        let inputs = Inputs::from_images(
            samples.iter().map(|s| s.image.clone()).collect(),
            vec!["s".into(); samples.len()],
            &loaded.data_config,
            &loaded.device,
        )
        .unwrap();
        let predicted = predicted_classes(&loaded.model.forward(inputs.tensor)).unwrap();
        correct += predicted
            .iter()
            .zip(&samples)
            .filter(|(p, s)| **p == s.label)
            .count();
    }
    let accuracy = correct as f64 / IMAGES as f64;
    eprintln!(
        "{name}: test accuracy {:.1}% on {IMAGES} images",
        100.0 * accuracy
    );
    accuracy
}

#[test]
fn shapes_cnn_meets_its_accuracy_floor_on_held_out_images() {
    let accuracy = test_accuracy("shapes-cnn");
    assert!(accuracy >= 0.97, "shapes-cnn test accuracy {accuracy:.3}");
}

#[test]
fn shapes_vit_meets_its_accuracy_floor_on_held_out_images() {
    let accuracy = test_accuracy("shapes-vit");
    assert!(accuracy >= 0.97, "shapes-vit test accuracy {accuracy:.3}");
}
