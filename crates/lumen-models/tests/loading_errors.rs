//! Bad weights and bad names are errors that name the problem, never panics.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::*;
use lumen_core::burn::tensor::Tensor;
use lumen_models::{LoadedDetector, LoadedModel, LoadedSegmentor};
use safetensors::tensor::TensorView;
use tempfile::TempPath;

/// Rewrite a fixture's tensors (by key) into a new float32 safetensors file.
fn edited_copy(
    source: &str,
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) -> TempPath {
    edited_copy_as(source, name, safetensors::Dtype::F32, edit)
}

/// Float32 bytes re-encoded as `dtype` (F32, F16 or BF16).
fn encode(bytes: &[u8], dtype: safetensors::Dtype) -> Vec<u8> {
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match dtype {
        safetensors::Dtype::F32 => bytes.to_vec(),
        safetensors::Dtype::F16 => values
            .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        safetensors::Dtype::BF16 => values
            .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        other => panic!("no encoding for {other:?}"),
    }
}

/// [`edited_copy`] with the tensors stored as `dtype`. The file is removed when the
/// returned path is dropped.
fn edited_copy_as(
    source: &str,
    name: &str,
    dtype: safetensors::Dtype,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) -> TempPath {
    let bytes = std::fs::read(fixture(source)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, (shape, data))| (k, (shape, encode(&data, dtype))))
        .collect();
    let views: HashMap<String, TensorView> = tensors
        .iter()
        .map(|(k, (shape, data))| {
            (
                k.clone(),
                TensorView::new(dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let path = temp_file(name, ".safetensors");
    safetensors::serialize_to_file(&views, None, &path).unwrap();
    path
}

/// An empty file `lumen-{name}-*{suffix}` in the system's temporary folder, removed
/// when dropped.
fn temp_file(name: &str, suffix: &str) -> TempPath {
    tempfile::Builder::new()
        .prefix(&format!("lumen-{name}-"))
        .suffix(suffix)
        .tempfile()
        .unwrap()
        .into_temp_path()
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
fn wrong_number_of_classes_names_the_file_shapes_and_suggests_the_count() {
    let err = load_error("test_resnet", 5, fixture("test_resnet.safetensors"));
    // PyTorch's layout ([out, in]), not Burn's transposed one, and the fix.
    assert!(
        err.contains("fc.weight is [10, 96] in the file, the model has [5, 96]"),
        "{err}"
    );
    assert!(err.contains("`--num-classes 10`"), "{err}");
}

#[test]
fn wrong_width_names_timm_keys_lists_a_few_and_suggests_no_class_count() {
    let err = load_error("resnet18", 10, fixture("test_resnet.safetensors"));
    // timm's `bn1.weight`, not Burn's `bn1.gamma`.
    assert!(err.contains("bn1.weight is [32] in the file"), "{err}");
    assert!(!err.contains("gamma"), "{err}");
    assert!(err.contains(" more"), "a long list is cut short: {err}");
    assert!(!err.contains("--num-classes"), "{err}");
}

#[test]
fn non_finite_weights_are_named_as_stored() {
    // A NaN in one convolution, an infinity in one BatchNorm scale: the model would
    // load and give NaN scores and blank maps. The first is named as timm names it.
    let path = edited_copy("test_resnet.safetensors", "nan", |t| {
        let set = |t: &mut HashMap<String, (Vec<usize>, Vec<u8>)>, key: &str, value: f32| {
            let (_, data) = t.get_mut(key).unwrap();
            data[4..8].copy_from_slice(&value.to_le_bytes());
        };
        set(t, "layer2.0.conv1.weight", f32::NAN);
        set(t, "layer3.0.bn2.weight", f32::INFINITY);
    });
    let err = load_error("test_resnet", 10, &path);
    assert!(
        err.contains(
            "`layer2.0.conv1.weight` holds NaN or infinite values (2 parameter tensors in all)"
        ),
        "{err}"
    );
    // The untouched file loads: the check does not flag finite weights.
    LoadedModel::load(
        "test_resnet",
        10,
        fixture("test_resnet.safetensors"),
        &test_device(),
    )
    .unwrap();
}

/// Logits of the test model loaded from `path`, on the fixture's input.
fn test_resnet_logits(path: &std::path::Path) -> Vec<f32> {
    use lumen_core::{ExplainableModel, NoTap};
    let device = test_device();
    let model = LoadedModel::load("test_resnet", 10, path, &device).unwrap();
    let (input, shape) = read_tensor("test_resnet_io.safetensors", "input");
    to_vec(
        model
            .model
            .forward_tapped(tensor4(input, &shape, &device), &NoTap),
    )
}

#[test]
fn half_precision_checkpoints_load_as_float32() {
    let (reference, _) = read_tensor("test_resnet_io.safetensors", "logits");
    let largest = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (dtype, tolerance) in [
        (safetensors::Dtype::F16, 2e-2),
        (safetensors::Dtype::BF16, 1e-1),
    ] {
        let path = edited_copy_as("test_resnet.safetensors", "half", dtype, |_| {});
        let logits = test_resnet_logits(&path);
        let diff = max_abs_diff(&logits, &reference);
        // Rounding the weights moves the logits a little, never like a wrong load.
        assert!(
            diff < tolerance * largest,
            "{dtype:?}: max |logit - timm| = {diff} (largest logit {largest})"
        );
    }
}

#[test]
fn wrapped_state_dicts_are_unwrapped_and_named_as_stored() {
    let (reference, _) = read_tensor("test_resnet_io.safetensors", "logits");
    for prefix in ["module.", "state_dict.", "state_dict.module.", "model."] {
        let path = edited_copy("test_resnet.safetensors", "wrapped", |t| {
            *t = t
                .drain()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .collect();
        });
        let diff = max_abs_diff(&test_resnet_logits(&path), &reference);
        assert!(diff < 1e-4, "{prefix}: {diff}");
        let broken = edited_copy("test_resnet.safetensors", "wrapped-missing", |t| {
            *t = t
                .drain()
                .filter(|(k, _)| k != "layer2.0.downsample.2.running_var")
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .collect();
        });
        let err = load_error("test_resnet", 10, &broken);
        assert!(
            err.contains(&format!(
                "missing keys: {prefix}layer2.0.downsample.2.running_var"
            )),
            "{prefix}: {err}"
        );
    }
}

#[test]
fn a_folder_is_not_a_weights_file() {
    let err = load_error("test_resnet", 10, std::env::temp_dir());
    assert!(err.contains("this is a folder"), "{err}");
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
    let odd = temp_file("weights", ".onnx");
    std::fs::write(&odd, b"x").unwrap();
    let err = load_error("test_resnet", 10, &odd);
    assert!(err.contains("unsupported extension `.onnx`"), "{err}");
}

#[test]
fn corrupt_file_is_an_error_not_a_panic() {
    let bad = temp_file("corrupt", ".safetensors");
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

/// A device the machine lacks is an error that names it, not a panic inside the backend
/// at the first tensor (both were panics: libtorch's "Found no NVIDIA driver", CubeCL's
/// "Unable to acquire wgpu device"). No machine has a GPU number 4096.
#[cfg(any(feature = "tch", feature = "wgpu"))]
#[test]
fn a_device_the_machine_lacks_is_an_error() {
    let specs = [
        #[cfg(feature = "tch")]
        "tch:cuda:4096",
        #[cfg(feature = "wgpu")]
        "wgpu:4096",
    ];
    for spec in specs {
        let err = match lumen_core::device_from_str(spec) {
            Ok(_) => panic!("{spec} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("device `{spec}` is not available on this machine")),
            "{err}"
        );
    }
}

/// A retrained shapes classifier (`train_shapes --out FILE`, Burn's names like the
/// bundled weights) loads with `--weights` and its own class count; this was read as a
/// timm state dict of 1000 classes and refused.
#[test]
fn a_shapes_weights_file_loads_like_the_bundled_model() {
    use lumen_core::{ExplainableModel, NoTap};
    let device = test_device();
    let weights = |name: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("weights/{name}.safetensors"))
    };
    let input = || Tensor::<4>::ones([2, 3, 128, 128], &device) * 0.3;
    for name in ["shapes-cnn", "shapes-vit"] {
        let bundled = LoadedModel::bundled(name, &device).unwrap();
        let loaded = LoadedModel::load(name, 4, weights(name), &device).unwrap();
        assert_eq!(loaded.class_names, bundled.class_names, "{name}");
        let expected = to_vec(bundled.model.forward_tapped(input(), &NoTap));
        let logits = to_vec(loaded.model.forward_tapped(input(), &NoTap));
        assert_eq!(logits.len(), 8, "{name}");
        assert_eq!(max_abs_diff(&logits, &expected), 0.0, "{name}");

        let err = load_error(name, 1000, weights(name));
        assert!(
            err.contains(&format!(
                "`{name}` has 4 classes (circle, square, triangle, cross), not 1000"
            )),
            "{err}"
        );
        let err = load_error(name, 4, fixture("test_resnet.safetensors"));
        assert!(err.contains("cannot load weights"), "{err}");
        let odd = temp_file("shapes", ".pth");
        std::fs::write(&odd, b"x").unwrap();
        let err = load_error(name, 4, &odd);
        assert!(
            err.contains("expected a .safetensors file in Burn's names"),
            "{err}"
        );
    }
    // shapes-seg (Burn's names too) and shapes-det (a state dict) by the same rule.
    let bundled = LoadedSegmentor::bundled("shapes-seg", &device).unwrap();
    let loaded = LoadedSegmentor::load("shapes-seg", 5, weights("shapes-seg"), &device).unwrap();
    assert_eq!(loaded.class_names, bundled.class_names);
    let expected = to_vec(bundled.model.forward_tapped(input(), &NoTap));
    let maps = to_vec(loaded.model.forward_tapped(input(), &NoTap));
    assert_eq!(max_abs_diff(&maps, &expected), 0.0);
    let err = LoadedSegmentor::load("shapes-seg", 4, weights("shapes-seg"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`shapes-seg` has 5 classes (background, circle"),
        "{err}"
    );
    let detector = LoadedDetector::load("shapes-det", 4, weights("shapes-det"), &device).unwrap();
    assert_eq!(
        detector.class_names,
        bundled.class_names.map(|c| c[1..].to_vec())
    );
    let err = LoadedDetector::load("shapes-det", 3, weights("shapes-det"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`shapes-det` has 4 classes"), "{err}");
    // The other shapes classifier's file: its keys are named, not read as a fit.
    let err = load_error("shapes-vit", 4, weights("shapes-cnn"));
    assert!(err.contains("missing keys"), "{err}");
}
