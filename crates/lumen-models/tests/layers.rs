//! Every layer a model lists is a real tap point with the rank its kind promises, in
//! forward order, and the default layer is one of them.

mod common;

use common::*;
use lumen_core::burn::tensor::Tensor;
use lumen_core::{ExplainableModel, LayerKind, LumenError, Recorder, TapTensor};
use lumen_models::LoadedModel;

fn check_layers(arch: &str) {
    let device = test_device();
    let loaded = LoadedModel::init(arch, 10, &device).unwrap();
    let model = &loaded.model;
    let [c, h, w] = model.input_shape();
    let recorder = Recorder::all();
    let logits = model.forward_tapped(Tensor::zeros([2, c, h, w], &device), &recorder);
    assert_eq!(logits.dims(), [2, 10]);
    let seen = recorder.take_all();
    let layers = model.layers();
    let seen_names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        seen_names, listed,
        "{arch}: tap points and listed layers differ"
    );
    for (layer, (_, tensor)) in layers.iter().zip(&seen) {
        let dims = tensor.dims();
        match (&layer.kind, tensor) {
            (LayerKind::FeatureMap, TapTensor::Rank4(_)) => {}
            (
                LayerKind::Tokens {
                    grid,
                    prefix_tokens,
                },
                TapTensor::Rank3(_),
            ) => {
                assert_eq!(
                    dims[1],
                    prefix_tokens + grid[0] * grid[1],
                    "{arch} {}",
                    layer.name
                )
            }
            (
                LayerKind::Attention {
                    heads,
                    grid,
                    prefix_tokens,
                },
                TapTensor::Rank4(_),
            ) => {
                let n = prefix_tokens + grid[0] * grid[1];
                assert_eq!(dims[1..], [*heads, n, n], "{arch} {}", layer.name)
            }
            (LayerKind::Vector, TapTensor::Rank2(_)) => {}
            (kind, _) => panic!("{arch} {}: kind {kind} but dims {dims:?}", layer.name),
        }
    }
    assert!(listed.contains(&model.default_layer().as_str()), "{arch}");
}

#[test]
fn resnet_layers_are_tap_points() {
    check_layers("test_resnet");
    let model = LoadedModel::init("test_resnet", 10, &test_device())
        .unwrap()
        .model;
    assert_eq!(model.default_layer(), "layer4");
    for name in ["conv1", "layer1", "layer4.0", "fc"] {
        assert!(model.layer(name).is_ok(), "{name}");
    }
}

#[test]
fn vit_layers_are_tap_points() {
    check_layers("test_vit");
}

#[test]
fn unknown_layer_lists_valid_names() {
    let model = LoadedModel::init("test_resnet", 10, &test_device())
        .unwrap()
        .model;
    match model.layer("layer5") {
        Err(LumenError::UnknownLayer { name, valid }) => {
            assert_eq!(name, "layer5");
            assert!(valid.contains(&"layer4".to_string()));
        }
        other => panic!("expected UnknownLayer, got {other:?}"),
    }
}

#[test]
fn inputs_below_one_patch_or_with_other_channels_are_errors() {
    let device = test_device();
    let model = LoadedModel::init("test_vit", 10, &device).unwrap().model;
    // Any size of at least one 16-pixel patch is taken (timm's dynamic_img_size).
    model
        .check_input(&Tensor::zeros([1, 3, 100, 100], &device))
        .unwrap();
    let err = model
        .check_input(&Tensor::zeros([1, 3, 100, 12], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 16") && err.contains("12"), "{err}");
    let err = model
        .check_input(&Tensor::zeros([1, 1, 100, 100], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[B,3,H,W]"), "{err}");
}
