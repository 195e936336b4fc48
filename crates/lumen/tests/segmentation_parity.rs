//! Segmentation explanations against pytorch-grad-cam 1.5.7 on AutoTimm 0.7.37's
//! segmentors (fixtures from tools/reference/segmentation_fixtures.py): GradCAM and
//! GradCAM++ with `SemanticSegmentationTarget` (the class's logits over its predicted
//! mask, and over the whole image), at the backbone's last stage and DeepLabV3+'s
//! decoder; captum's `LayerGradCam` on its tutorial's aggregate wrapper, raw; the
//! default class; the uncertainty maps (NumPy definitions).
//! Tolerances: 1e-3 on the normalised maps (as the classification CAMs), 5e-5 on the
//! uncertainty maps (float32 softmax against a float64 reference; entropy up to ln 5).

mod common;

use common::{device, max_abs_diff, models_fixture, read, read_i64};
use lumen::core::burn::tensor::TensorData;
use lumen::core::{ExplainableModel, Tensor};
use lumen::methods::MethodOptions;
use lumen::tasks::uncertainty_map;
use lumen::{
    ExplainOptions, Inputs, LoadedSegmentor, SegmentRegion, SegmentationOptions,
    SegmentationRequest, TaskModel, Uncertainty, UncertaintyScale, explain_segmentation,
};

const CAM_TOLERANCE: f32 = 1e-3;
const UNCERTAINTY_TOLERANCE: f32 = 5e-5;

struct Case {
    model: LoadedSegmentor,
    inputs: Inputs,
    io: String,
    classes: Vec<usize>,
}

fn case(head: &str) -> Case {
    let device = device();
    let model = LoadedSegmentor::load(
        &format!("{head}_test_resnet"),
        5,
        models_fixture(&format!("seg_{head}.safetensors")),
        &device,
    )
    .unwrap();
    let io = format!("seg_{head}_io.safetensors");
    let (values, shape) = read(models_fixture(&io), "input");
    let tensor = Tensor::<4>::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let inputs = Inputs::from_tensor(tensor, &model.data_config).unwrap();
    let classes = read_i64(&io, "classes");
    Case {
        model,
        inputs,
        io,
        classes,
    }
}

fn check_cam(case: &Case, method: &str, layer: &str, region: SegmentRegion, key: &str) {
    // The default pass (the whole batch) and one image per pass, the facade's chunked
    // path, against the same reference.
    for batch_size in [None, Some(1)] {
        check_cam_in_passes(case, method, layer, region.clone(), key, batch_size);
    }
}

fn check_cam_in_passes(
    case: &Case,
    method: &str,
    layer: &str,
    region: SegmentRegion,
    key: &str,
    batch_size: Option<usize>,
) {
    let options = SegmentationOptions {
        explain: ExplainOptions {
            method: method.into(),
            targets: Some(
                case.classes
                    .iter()
                    .map(|&c| SegmentationRequest::new(c, region.clone()))
                    .collect(),
            ),
            save_dir: None,
            method_options: MethodOptions {
                layer: Some(layer.into()),
                ..MethodOptions::default()
            },
            batch_size,
            ..ExplainOptions::default()
        },
        ..SegmentationOptions::default()
    };
    let out = explain_segmentation(&case.model, &case.inputs, &options).unwrap();
    let (expected, shape) = read(models_fixture(&case.io), key);
    assert_eq!(out.explanation.heatmaps.dims().to_vec(), shape, "{key}");
    let diff = max_abs_diff(&out.explanation.heatmaps.to_vec().unwrap(), &expected);
    assert!(
        diff <= CAM_TOLERANCE,
        "{} {key} ({batch_size:?} per pass): max diff {diff:e} > {CAM_TOLERANCE:e}",
        case.io
    );
}

#[test]
fn deeplabv3plus_gradcam_matches_pytorch_grad_cam() {
    let case = case("deeplabv3plus");
    for layer in ["backbone.layer4", "head.decoder"] {
        check_cam(
            &case,
            "gradcam",
            layer,
            SegmentRegion::Predicted,
            &format!("gradcam_{layer}"),
        );
        check_cam(
            &case,
            "gradcam",
            layer,
            SegmentRegion::Whole,
            &format!("gradcam_{layer}_whole"),
        );
    }
    check_cam(
        &case,
        "gradcam++",
        "backbone.layer4",
        SegmentRegion::Predicted,
        "gradcampp_backbone.layer4",
    );
}

#[test]
fn fcn_gradcam_matches_pytorch_grad_cam() {
    let case = case("fcn");
    let layer = "backbone.layer4";
    check_cam(
        &case,
        "gradcam",
        layer,
        SegmentRegion::Predicted,
        &format!("gradcam_{layer}"),
    );
    check_cam(
        &case,
        "gradcam",
        layer,
        SegmentRegion::Whole,
        &format!("gradcam_{layer}_whole"),
    );
    check_cam(
        &case,
        "gradcam++",
        layer,
        SegmentRegion::Predicted,
        "gradcampp_backbone.layer4",
    );
}

/// captum 0.9.0's `LayerGradCam` on the aggregate wrapper of its segmentation tutorial
/// (each class's logits summed over the pixels where it is predicted): the raw GradCAM
/// map, signed, at the layer's resolution and unscaled, so the channel weights and the
/// sign are checked, not only the normalised picture. Tolerance: 1e-4 of the map's
/// largest magnitude (float32 against float32; measured 8.5e-7 at `backbone.layer4` and
/// 1.5e-6 at `head.decoder` on flex).
#[test]
fn raw_gradcam_matches_captum_on_its_segmentation_tutorial_wrapper() {
    use lumen::Task;
    use lumen::methods::{CamMap, GradCam, LayerPass};
    const CAPTUM_TOLERANCE: f32 = 1e-4;
    let case = case("deeplabv3plus");
    let fixture = "seg_deeplabv3plus_captum.safetensors";
    let classes = read_i64(fixture, "classes");
    assert_eq!(
        classes, case.classes,
        "the classes of the pytorch-grad-cam fixture"
    );
    let model = case.model.model();
    let task = case.model.task();
    let predictions = task
        .predict(&model.forward(case.inputs.tensor.clone()))
        .unwrap();
    let requests: Vec<SegmentationRequest> = classes
        .iter()
        .zip(&predictions)
        .map(|(&c, p)| task.resolve(SegmentationRequest::predicted(c), p).unwrap())
        .collect();
    let target = task.target(&requests);
    for layer in ["backbone.layer4", "head.decoder"] {
        let pass = LayerPass::run(
            model,
            case.inputs.tensor.clone(),
            target.as_ref(),
            layer,
            true,
        )
        .unwrap();
        let raw = GradCam.raw_map(&pass);
        let (expected, shape) = read(
            models_fixture(fixture),
            &format!("captum_layergradcam_{layer}"),
        );
        assert_eq!(raw.dims().to_vec(), shape, "{layer}");
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&lumen::to_host(raw).unwrap(), &expected);
        eprintln!(
            "{layer}: max diff {:e} of the largest magnitude",
            diff / scale
        );
        assert!(
            diff <= CAPTUM_TOLERANCE * scale,
            "{layer}: max diff {diff:e} > {CAPTUM_TOLERANCE:e} x {scale}"
        );
    }
}

#[test]
fn default_class_and_predicted_masks_match_the_reference() {
    for head in ["deeplabv3plus", "fcn"] {
        let case = case(head);
        let task = case.model.task();
        use lumen::Task;
        let logits = case.model.model().forward(case.inputs.tensor.clone());
        let predictions = task.predict(&logits).unwrap();
        let defaults: Vec<usize> = predictions.iter().map(|p| p.dominant).collect();
        assert_eq!(defaults, read_i64(&case.io, "default_class"), "{head}");
        let (masks, _) = read(models_fixture(&case.io), "masks");
        let ours: Vec<f32> = predictions
            .iter()
            .zip(&case.classes)
            .flat_map(|(p, &c)| p.mask_of(c))
            .collect();
        assert_eq!(ours, masks, "{head}: predicted masks");
    }
}

/// The class of every input pixel (what the figures draw and mIoU scores) against
/// AutoTimm's validation mIoU path: logits resized to the mask's size (bilinear,
/// `align_corners = false`), then arg-max. Exact: the generator asserts every arg-max is
/// decided by more than 1e-5, beyond float32 rounding, and that 3-15% of pixels differ
/// from the grid enlarged nearest-neighbour and from `align_corners = true`. Checked on
/// the reference's own logits and on the model's, whose pixels get the same classes.
#[test]
fn pixel_classes_match_autotimm_resized_arg_max() {
    use lumen::Task;
    for head in ["deeplabv3plus", "fcn"] {
        let case = case(head);
        let task = case.model.task();
        let expected = read_i64(&case.io, "pixel_classes");
        let (values, shape) = read(models_fixture(&case.io), "logits");
        let reference = Tensor::<4>::from_data(
            TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
            &device(),
        );
        let ours = case.model.model().forward(case.inputs.tensor.clone());
        for (logits, which) in [(reference, "reference logits"), (ours, "model logits")] {
            let predictions = task.predict(&logits).unwrap();
            let got: Vec<usize> = predictions
                .iter()
                .flat_map(|p| p.pixel_classes.iter().copied())
                .collect();
            assert_eq!(got.len(), expected.len(), "{head} {which}");
            let wrong = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{head} {which}: {wrong} pixels of another class");
        }
    }
}

#[test]
fn uncertainty_maps_match_their_definitions() {
    for head in ["deeplabv3plus", "fcn"] {
        let case = case(head);
        let logits = case.model.model().forward(case.inputs.tensor.clone());
        for (kind, scale, key) in [
            (Uncertainty::Entropy, UncertaintyScale::Raw, "entropy"),
            (
                Uncertainty::Entropy,
                UncertaintyScale::Normalized,
                "entropy_normalized",
            ),
            (Uncertainty::Margin, UncertaintyScale::Raw, "margin"),
        ] {
            let ours = lumen::to_host(uncertainty_map(&logits, kind, scale).unwrap()).unwrap();
            let (expected, _) = read(models_fixture(&case.io), key);
            let diff = max_abs_diff(&ours, &expected);
            assert!(diff <= UNCERTAINTY_TOLERANCE, "{head} {key}: {diff:e}");
            // explain_segmentation's maps (resized to the input) do not depend on how
            // many images go through the model at once (to float rounding: libtorch's
            // convolutions differ by about 1e-5 between batch sizes), nor on which
            // forward they are read from: GradCAM's own (autodiff) pass, the forward
            // that predicts before Integrated Gradients, or, with a cache, their own.
            let cache_dir = std::env::temp_dir().join(format!(
                "lumen-uncertainty-{head}-{key}-{}",
                std::process::id()
            ));
            std::fs::remove_dir_all(&cache_dir).ok();
            let cache = std::sync::Arc::new(
                lumen::ExplanationCache::open(&cache_dir, format!("{head} test")).unwrap(),
            );
            let variants = [
                ("gradcam, whole batch", "gradcam", None, None),
                ("gradcam, one image per pass", "gradcam", Some(1), None),
                ("ig", "ig", None, None),
                ("gradcam through a cache", "gradcam", None, Some(cache)),
            ];
            let names = variants.each_ref().map(|v| v.0);
            let maps = variants.map(|(_, method, batch_size, cache)| {
                let options = SegmentationOptions {
                    explain: ExplainOptions {
                        method: method.into(),
                        method_options: MethodOptions {
                            steps: 4,
                            ..MethodOptions::default()
                        },
                        batch_size,
                        cache,
                        ..ExplainOptions::default()
                    },
                    uncertainty: Some(kind),
                    scale,
                };
                let out = explain_segmentation(&case.model, &case.inputs, &options).unwrap();
                out.uncertainty.unwrap().to_vec().unwrap()
            });
            std::fs::remove_dir_all(&cache_dir).ok();
            assert!(case.inputs.len() > 1);
            let [h, w] = [case.inputs.tensor.dims()[2], case.inputs.tensor.dims()[3]];
            assert_eq!(maps[0].len(), case.inputs.len() * h * w);
            // Not a constant: the maps carry the logits' structure.
            let spread = maps[0].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
                - maps[0].iter().fold(f32::INFINITY, |a, &b| a.min(b));
            assert!(
                spread > 1e-3,
                "{head} {key}: flat uncertainty maps ({spread:e})"
            );
            for (i, what) in names.iter().enumerate().skip(1) {
                let diff = max_abs_diff(&maps[0], &maps[i]);
                assert!(
                    diff <= UNCERTAINTY_TOLERANCE,
                    "{head} {key}: {what} differs from the whole batch's GradCAM by {diff:e}"
                );
            }
        }
    }
}

/// The real architectures at their default widths against AutoTimm, on files too large
/// to commit: run `tools/reference/segmentation_fixtures.py --full-size DIR` and then
/// `LUMEN_AUTOTIMM_DIR=DIR cargo test -p lumen --release --test segmentation_parity -- --ignored`.
#[test]
#[ignore = "needs LUMEN_AUTOTIMM_DIR with full-size AutoTimm weights"]
fn full_size_segmentors_match_autotimm() {
    let dir =
        std::path::PathBuf::from(std::env::var("LUMEN_AUTOTIMM_DIR").expect("LUMEN_AUTOTIMM_DIR"));
    let device = device();
    let input: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dir.join("input.npy")).unwrap();
    let shape: [usize; 4] = input.shape().try_into().unwrap();
    let input = Tensor::<4>::from_data(
        TensorData::new(input.iter().copied().collect::<Vec<_>>(), shape),
        &device,
    );
    let mut checked = 0;
    for head in ["deeplabv3plus", "fcn"] {
        for backbone in ["resnet18", "resnet50d"] {
            let name = format!("{head}_{backbone}");
            let weights = dir.join(format!("{name}.pth"));
            if !weights.is_file() {
                continue;
            }
            let model = LoadedSegmentor::load(&name, 21, &weights, &device).unwrap();
            let expected: ndarray::ArrayD<f32> =
                ndarray_npy::read_npy(dir.join(format!("{name}_logits.npy"))).unwrap();
            let logits = model.model.forward(input.clone());
            assert_eq!(logits.dims().as_slice(), expected.shape(), "{name}");
            let ours = lumen::to_host(logits).unwrap();
            let expected: Vec<f32> = expected.iter().copied().collect();
            let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&ours, &expected);
            println!("{name}: max |logit - AutoTimm| {diff:e} (largest logit {scale})");
            assert!(diff < 1e-4 * scale, "{name}: {diff:e}");
            checked += 1;
        }
    }
    assert!(checked > 0, "no weights in {}", dir.display());
}
