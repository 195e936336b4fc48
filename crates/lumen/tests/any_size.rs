//! A ResNet takes any input size, as timm and pytorch-grad-cam do: logits and GradCAM
//! maps on a non-square 64x104 input (width not a multiple of the stride) match them.
//! Fixture: tools/reference/any_size_fixtures.py. Tolerances: 1e-4 on logits, 1e-3 on
//! maps (those of the method parity tests).

mod common;

use common::*;
use lumen::core::burn::tensor::TensorData;
use lumen::core::{ExplainableModel, NoTap, Tensor};
use lumen::{ExplainOptions, Inputs, LoadedModel, MethodOptions, explain_prediction};

fn fixture(key: &str) -> (Vec<f32>, Vec<usize>) {
    read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/test_resnet_any_size.safetensors"),
        key,
    )
}

fn model_and_input() -> (LoadedModel, Tensor<4>) {
    let device = device();
    let model = LoadedModel::load(
        "test_resnet",
        10,
        models_fixture("test_resnet.safetensors"),
        &device,
    )
    .unwrap();
    let (values, shape) = fixture("input");
    assert_eq!(shape, [2, 3, 64, 104]);
    let input = Tensor::from_data(TensorData::new(values, [2, 3, 64, 104]), &device);
    (model, input)
}

#[test]
fn logits_at_another_size_match_timm() {
    let (model, input) = model_and_input();
    model.model.check_input(&input).unwrap();
    let logits = model.model.forward_tapped(input, &NoTap);
    let diff = max_abs_diff(&lumen::to_host(logits), &fixture("logits").0);
    eprintln!("64x104 logits: max |ours - timm| = {diff:e}");
    assert!(diff < 1e-4, "max |logit - timm| = {diff:e}");
}

#[test]
fn gradcam_at_another_size_matches_pytorch_grad_cam() {
    let (model, input) = model_and_input();
    let inputs = Inputs::from_tensor(input, &model.data_config).unwrap();
    for (layer, key) in [("layer4", "gradcam"), ("layer3", "gradcam_layer3")] {
        let options = ExplainOptions {
            method: "gradcam".into(),
            targets: Some(vec![3, 7]),
            method_options: MethodOptions {
                layer: Some(layer.into()),
                ..MethodOptions::default()
            },
            ..ExplainOptions::default()
        };
        let (explanation, _) = explain_prediction(&model, &inputs, &options).unwrap();
        assert_eq!(explanation.heatmaps.dims(), [2, 64, 104]);
        let diff = max_abs_diff(&explanation.heatmaps.to_vec(), &fixture(key).0);
        eprintln!("64x104 GradCAM at {layer}: max |ours - pytorch-grad-cam| = {diff:e}");
        assert!(
            diff < 1e-3,
            "{layer}: max |map - pytorch-grad-cam| = {diff:e}"
        );
    }
}

#[test]
fn below_the_stride_the_constraint_is_named() {
    let (model, _) = model_and_input();
    let small = Tensor::<4>::zeros([1, 3, 16, 200], &device());
    let err = model.model.check_input(&small).unwrap_err().to_string();
    assert!(err.contains("at least 32"), "{err}");
    // The ViT keeps its fixed size and says which.
    let vit = LoadedModel::init("test_vit", 10, &device()).unwrap();
    let err = vit
        .model
        .check_input(&Tensor::<4>::zeros([1, 3, 64, 104], &device()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("[B,3,160,160]"), "{err}");
}
