//! Logit parity with timm (fixtures from tools/reference/timm_fixtures.py, torch 2.9.0).
//! Tolerance: 1e-4 max absolute difference on the logits.

mod common;

use common::*;
use lumen_core::{ExplainableModel, NoTap};
use lumen_models::{BlockKind, LoadedModel, ResNetConfig, StemKind, load_state_dict};

const TOLERANCE: f32 = 1e-4;

fn assert_logits_match(model: &impl ExplainableModel<Output = lumen_core::Tensor<2>>, io: &str) {
    let device = test_device();
    let (input, shape) = read_tensor(io, "input");
    let (expected, _) = read_tensor(io, "logits");
    let logits = to_vec(model.forward_tapped(tensor4(input, &shape, &device), &NoTap));
    let diff = max_abs_diff(&logits, &expected);
    assert!(
        diff < TOLERANCE,
        "{io}: max |logit - timm| = {diff:e} >= {TOLERANCE:e}"
    );
}

#[test]
fn test_resnet_matches_timm_from_safetensors() {
    let model = LoadedModel::load(
        "test_resnet",
        10,
        fixture("test_resnet.safetensors"),
        &test_device(),
    )
    .unwrap();
    assert_logits_match(&model.model, "test_resnet_io.safetensors");
}

#[test]
fn test_resnet_matches_timm_from_pytorch_pickle() {
    let model = LoadedModel::load(
        "test_resnet",
        10,
        fixture("test_resnet.pth"),
        &test_device(),
    )
    .unwrap();
    assert_logits_match(&model.model, "test_resnet_io.safetensors");
}

#[test]
fn test_vit_matches_timm() {
    let model = LoadedModel::load(
        "test_vit",
        10,
        fixture("test_vit.safetensors"),
        &test_device(),
    )
    .unwrap();
    assert_logits_match(&model.model, "test_vit_io.safetensors");
}

#[test]
fn plain_stem_bottleneck_resnet_matches_timm() {
    use lumen_core::burn::module::Module;
    let config = ResNetConfig {
        blocks: [BlockKind::Bottleneck; 4],
        layers: [1, 1, 1, 1],
        channels: [8, 16, 16, 16],
        stem: StemKind::Plain,
        avg_down: false,
        num_classes: 10,
    };
    let mut model = config.init(&test_device()).with_input_size(160);
    load_state_dict(
        &mut model,
        &fixture("plain_resnet.safetensors"),
        &config.key_remaps(),
    )
    .unwrap();
    assert_logits_match(&model.valid(), "plain_resnet_io.safetensors");
}
