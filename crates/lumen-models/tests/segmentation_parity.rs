//! Segmentation logit parity with AutoTimm 0.7.37's `SemanticSegmentor` (fixtures from
//! tools/reference/segmentation_fixtures.py: random init, test_resnet backbone, 5
//! classes). Tolerance: 1e-4 relative to the largest logit, on every logit.

mod common;

use common::*;
use lumen_core::{ExplainableModel, NoTap};
use lumen_models::LoadedSegmentor;

const TOLERANCE: f32 = 1e-4;

fn assert_logits_match(name: &str, weights: &str, io: &str) {
    let device = test_device();
    let model = LoadedSegmentor::load(name, 5, fixture(weights), &device)
        .unwrap_or_else(|e| panic!("{weights}: {e}"));
    let (input, shape) = read_tensor(io, "input");
    let (expected, expected_shape) = read_tensor(io, "logits");
    let logits = model
        .model
        .forward_tapped(tensor4(input, &shape, &device), &NoTap);
    assert_eq!(logits.dims().to_vec(), expected_shape, "{io}: logit shape");
    let logits = to_vec(logits);
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&logits, &expected);
    assert!(
        diff < TOLERANCE * scale,
        "{io}: max |logit - AutoTimm| = {diff:e} >= {TOLERANCE:e} x {scale}"
    );
}

#[test]
fn deeplabv3plus_matches_autotimm() {
    assert_logits_match(
        "deeplabv3plus_test_resnet",
        "seg_deeplabv3plus.safetensors",
        "seg_deeplabv3plus_io.safetensors",
    );
}

#[test]
fn fcn_matches_autotimm() {
    assert_logits_match(
        "fcn_test_resnet",
        "seg_fcn.safetensors",
        "seg_fcn_io.safetensors",
    );
}

#[test]
fn lightning_checkpoint_of_a_compiled_model_loads_unchanged() {
    // `state_dict` nested beside hyper-parameters and optimizer states, keys with
    // torch.compile's `_orig_mod.`.
    assert_logits_match(
        "deeplabv3plus_test_resnet",
        "seg_deeplabv3plus.ckpt",
        "seg_deeplabv3plus_ckpt_io.safetensors",
    );
}

#[test]
fn the_checkpoint_fixture_is_another_model() {
    // Otherwise the checkpoint test could pass by loading the plain weights' values.
    let (a, _) = read_tensor("seg_deeplabv3plus_io.safetensors", "logits");
    let (b, _) = read_tensor("seg_deeplabv3plus_ckpt_io.safetensors", "logits");
    assert!(max_abs_diff(&a, &b) > 0.1);
}

#[test]
fn wrong_head_or_class_count_names_the_keys() {
    let device = test_device();
    let err = LoadedSegmentor::load(
        "fcn_test_resnet",
        5,
        fixture("seg_deeplabv3plus.safetensors"),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("head.aspp"), "{err}");
    let err = LoadedSegmentor::load(
        "fcn_test_resnet",
        7,
        fixture("seg_fcn.safetensors"),
        &device,
    )
    .unwrap_err()
    .to_string();
    // AutoTimm's own key and layout, and the class count that fits.
    assert!(
        err.contains("head.conv.4.weight is [5, 64, 1, 1] in the file"),
        "{err}"
    );
    assert!(err.contains("`--num-classes 5`"), "{err}");
    let err = LoadedSegmentor::load(
        "fcn_test_resnet",
        5,
        fixture("seg_deeplabv3plus.ckpt"),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("head.aspp"), "{err}");
    let err = LoadedSegmentor::init("unet_resnet18", 5, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("deeplabv3plus_resnet18"), "{err}");
}
