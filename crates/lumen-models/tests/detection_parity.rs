//! FCOS parity with AutoTimm 0.7.37's `ObjectDetector(detection_arch="fcos")` (fixtures
//! from tools/reference/detection_fixtures.py: random init, test_resnet backbone, FPN
//! 64 channels, 2 convolutions per tower, 3 classes, saved as a Lightning checkpoint):
//! the raw head outputs of every level (class logits, ltrb distances, centerness). Tolerance: 1e-4 relative to each
//! output's largest magnitude.

mod common;

use common::*;
use lumen_core::{ExplainableModel, NoTap};
use lumen_models::LoadedDetector;

const TOLERANCE: f32 = 1e-4;
const LEVELS: [&str; 5] = ["p3", "p4", "p5", "p6", "p7"];

/// The weights come as AutoTimm's default `compile_model=True` saves them through
/// Lightning, loaded unchanged: `state_dict` beside hyper-parameters, `_orig_mod.` in the
/// backbone's, FPN's and head's keys, the level scales as 0-d tensors in the pickle.
#[test]
fn fcos_head_outputs_match_autotimm_on_every_level_from_a_lightning_checkpoint() {
    let weights = "det_fcos.ckpt";
    let device = test_device();
    let model = LoadedDetector::load("fcos_test_resnet", 3, fixture(weights), &device)
        .unwrap_or_else(|e| panic!("{weights}: {e}"));
    let io = "det_fcos_io.safetensors";
    let (input, shape) = read_tensor(io, "input");
    let out = model
        .model
        .forward_tapped(tensor4(input, &shape, &device), &NoTap);
    for (i, level) in LEVELS.iter().enumerate() {
        for (key, ours) in [
            ("cls", &out.classes[i]),
            ("reg", &out.boxes[i]),
            ("ctr", &out.centerness[i]),
        ] {
            let (expected, expected_shape) = read_tensor(io, &format!("{key}_{level}"));
            assert_eq!(ours.dims().to_vec(), expected_shape, "{key}_{level} shape");
            let ours = to_vec(ours.clone());
            let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&ours, &expected);
            assert!(
                diff <= TOLERANCE * scale,
                "{weights} {key}_{level}: max diff {diff:e} > {TOLERANCE:e} x {scale}"
            );
        }
    }
}

#[test]
fn detector_names_and_weights_errors_are_clear() {
    let device = test_device();
    let err = LoadedDetector::init("fcos_vit_tiny_patch16_224", 3, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fcos_resnet50"), "{err}");
    let err = LoadedDetector::load("fcos_test_resnet", 5, fixture("det_fcos.ckpt"), &device)
        .unwrap_err()
        .to_string();
    // The checkpoint's keys are named as the file has them, with the class count that
    // fits.
    assert!(err.contains("head.cls_pred"), "{err}");
    assert!(err.contains("`--num-classes 3`"), "{err}");
}
