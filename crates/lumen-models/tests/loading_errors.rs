//! Bad weights and bad names are errors that name the problem, never panics.

mod common;

use std::collections::HashMap;

use common::*;
use lumen_models::LoadedModel;
use safetensors::tensor::TensorView;

/// Rewrite a fixture's tensors (by key) into a new safetensors file.
fn edited_copy(
    source: &str,
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) -> std::path::PathBuf {
    let bytes = std::fs::read(fixture(source)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: HashMap<String, TensorView> = tensors
        .iter()
        .map(|(k, (shape, data))| {
            (
                k.clone(),
                TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let path =
        std::env::temp_dir().join(format!("lumen-{}-{name}.safetensors", std::process::id()));
    safetensors::serialize_to_file(&views, None, &path).unwrap();
    path
}

fn load_error(arch: &str, classes: usize, path: impl AsRef<std::path::Path>) -> String {
    LoadedModel::load(arch, classes, path, &test_device())
        .expect_err("loading should fail")
        .to_string()
}

#[test]
fn unknown_architecture_lists_the_valid_ones() {
    let err = LoadedModel::init("resnet19", 10, &test_device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown model `resnet19`"), "{err}");
    assert!(
        err.contains("resnet18") && err.contains("vit_base_patch16_224"),
        "{err}"
    );
}

#[test]
fn missing_key_is_named_as_timm_names_it() {
    let path = edited_copy("test_resnet.safetensors", "missing", |t| {
        t.remove("conv1.3.weight");
        t.remove("layer2.0.downsample.2.running_var");
    });
    let err = load_error("test_resnet", 10, &path);
    assert!(err.contains("missing keys"), "{err}");
    assert!(err.contains("conv1.3.weight"), "{err}");
    assert!(err.contains("layer2.0.downsample.2.running_var"), "{err}");
}

#[test]
fn unexpected_key_is_named() {
    let path = edited_copy("test_resnet.safetensors", "unexpected", |t| {
        t.insert("head.extra.weight".into(), (vec![2], vec![0; 8]));
    });
    let err = load_error("test_resnet", 10, &path);
    assert!(
        err.contains("unexpected keys") && err.contains("head.extra.weight"),
        "{err}"
    );
}

#[test]
fn wrong_number_of_classes_is_a_shape_mismatch_naming_the_key() {
    let err = load_error("test_resnet", 5, fixture("test_resnet.safetensors"));
    assert!(
        err.contains("fc.weight") || err.contains("fc.bias"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("shape"), "{err}");
}

#[test]
fn wrong_architecture_for_the_weights_is_an_error() {
    let err = load_error("test_vit", 10, fixture("test_resnet.safetensors"));
    assert!(
        err.contains("missing keys") && err.contains("unexpected keys"),
        "{err}"
    );
}

#[test]
fn missing_file_and_unknown_format_are_errors() {
    let err = load_error("test_resnet", 10, "/nonexistent/weights.safetensors");
    assert!(
        err.contains("/nonexistent/weights.safetensors") && err.contains("no such file"),
        "{err}"
    );
    let odd = std::env::temp_dir().join("lumen-weights.onnx");
    std::fs::write(&odd, b"x").unwrap();
    let err = load_error("test_resnet", 10, &odd);
    assert!(err.contains("unsupported extension `.onnx`"), "{err}");
}

#[test]
fn corrupt_file_is_an_error_not_a_panic() {
    let bad =
        std::env::temp_dir().join(format!("lumen-{}-corrupt.safetensors", std::process::id()));
    std::fs::write(&bad, b"this is not a safetensors file").unwrap();
    let err = load_error("test_resnet", 10, &bad);
    assert!(err.contains("cannot load weights"), "{err}");
}

#[test]
fn zero_classes_is_rejected() {
    let err = LoadedModel::init("resnet18", 0, &test_device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("number of classes"), "{err}");
}
