//! Detection against AutoTimm 0.7.37 and pytorch-grad-cam 1.5.7 on the FCOS fixture
//! (tools/reference/detection_fixtures.py): `ObjectDetector.predict`'s detections
//! (boxes within 1e-3 pixels, scores within 1e-5, labels exact, same order), and
//! GradCAM, GradCAM++ and EigenCAM at `backbone.layer4` with
//! `FasterRCNNBoxScoreTarget` on each image's best detection and GradCAM on its second
//! (1e-3 on the normalised maps, as the classification CAMs).

mod common;

use common::{device, max_abs_diff, models_fixture, read, read_i64};
use lumen::core::burn::tensor::TensorData;
use lumen::core::{ExplainableModel, Tensor};
use lumen::{
    BoxRequest, DetectionPrediction, ExplainOptions, Inputs, LoadedDetector, MethodOptions, Task,
    TaskModel, explain_prediction,
};

const IO: &str = "det_fcos_io.safetensors";

fn setup() -> (LoadedDetector, Inputs) {
    let device = device();
    let model = LoadedDetector::load(
        "fcos_test_resnet",
        3,
        models_fixture("det_fcos.ckpt"),
        &device,
    )
    .unwrap();
    let (values, shape) = read(models_fixture(IO), "input");
    let tensor = Tensor::<4>::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2], shape[3]]),
        &device,
    );
    let inputs = Inputs::from_tensor(tensor, &model.data_config).unwrap();
    (model, inputs)
}

/// The model's detections on the fixture input, one prediction per image.
fn predict(model: &LoadedDetector, inputs: &Inputs) -> Vec<DetectionPrediction> {
    model
        .task()
        .predict(&model.model().forward(inputs.tensor.clone()))
        .unwrap()
}

/// A prediction's `rank`-th detection (by score) as a box to explain.
fn box_at(prediction: &DetectionPrediction, rank: usize) -> BoxRequest {
    let d = &prediction.detections[rank];
    BoxRequest {
        bbox: d.bbox,
        label: d.label,
    }
}

#[test]
fn detections_match_autotimm_predict() {
    let (model, inputs) = setup();
    let predictions = predict(&model, &inputs);
    for (b, prediction) in predictions.iter().enumerate() {
        let (boxes, _) = read(models_fixture(IO), &format!("boxes_{b}"));
        let (scores, _) = read(models_fixture(IO), &format!("scores_{b}"));
        let labels = read_i64(IO, &format!("labels_{b}"));
        let d = &prediction.detections;
        assert_eq!(d.len(), labels.len(), "image {b}: number of detections");
        for (k, det) in d.iter().enumerate() {
            assert_eq!(det.label, labels[k], "image {b} detection {k}: label");
            assert!(
                (det.score - scores[k]).abs() <= 1e-5,
                "image {b} detection {k}: score {} vs {}",
                det.score,
                scores[k]
            );
            for c in 0..4 {
                let diff = (det.bbox[c] - boxes[4 * k + c]).abs();
                assert!(
                    diff <= 1e-3,
                    "image {b} detection {k}: box {:?} vs {:?}",
                    det.bbox,
                    &boxes[4 * k..4 * k + 4]
                );
            }
        }
    }
}

#[test]
fn cams_with_the_box_score_target_match_pytorch_grad_cam() {
    let (model, inputs) = setup();
    let predictions = predict(&model, &inputs);
    let request = |rank: usize| -> Vec<Vec<BoxRequest>> {
        predictions.iter().map(|p| vec![box_at(p, rank)]).collect()
    };
    for (method, rank, key) in [
        ("gradcam", 0, "gradcam"),
        ("gradcam++", 0, "gradcampp"),
        ("eigencam", 0, "eigencam"),
        ("gradcam", 1, "gradcam_second"),
    ] {
        let options = ExplainOptions {
            method: method.into(),
            targets: Some(request(rank)),
            method_options: MethodOptions {
                layer: Some("backbone.layer4".into()),
                ..MethodOptions::default()
            },
            ..ExplainOptions::default()
        };
        let (explanation, _) = explain_prediction(&model, &inputs, &options).unwrap();
        let (expected, shape) = read(models_fixture(IO), key);
        assert_eq!(explanation.heatmaps.dims().to_vec(), shape, "{key}");
        let ours = explanation.heatmaps.to_vec().unwrap();
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff <= 1e-3, "{key}: max diff {diff:e}");
    }
}

/// A box that is not a detection's own (per image, the largest of the 20 best boxes,
/// moved by 6% of its size): the matched detection's IoU with it has a gradient, which
/// on a detection's own box it has not (every side ties), so only this case checks the
/// IoU term of the box-score target. The generator asserts that the score alone gives
/// a map 1.0 away.
#[test]
fn the_box_score_target_on_a_moved_box_matches_pytorch_grad_cam() {
    let (model, inputs) = setup();
    let labels = read_i64(IO, "shifted_labels");
    let targets = labels
        .iter()
        .enumerate()
        .map(|(b, &label)| {
            let (bbox, _) = read(models_fixture(IO), &format!("shifted_box_{b}"));
            vec![BoxRequest {
                bbox: [bbox[0], bbox[1], bbox[2], bbox[3]],
                label,
            }]
        })
        .collect();
    let options = ExplainOptions {
        method: "gradcam".into(),
        targets: Some(targets),
        method_options: MethodOptions {
            layer: Some("backbone.layer4".into()),
            ..MethodOptions::default()
        },
        ..ExplainOptions::default()
    };
    let (explanation, _) = explain_prediction(&model, &inputs, &options).unwrap();
    let (expected, _) = read(models_fixture(IO), "gradcam_shifted_box");
    let diff = max_abs_diff(&explanation.heatmaps.to_vec().unwrap(), &expected);
    assert!(diff <= 1e-3, "gradcam_shifted_box: max diff {diff:e}");
}

#[test]
fn explain_detection_gives_one_map_per_chosen_box_in_score_order() {
    use lumen::{DetectionOptions, explain_detection};
    let (model, inputs) = setup();
    let options = DetectionOptions {
        boxes: Some(vec![0, 3]),
        explain: ExplainOptions {
            method: "gradcam".into(),
            ..ExplainOptions::default()
        },
        ..DetectionOptions::default()
    };
    let out = explain_detection(&model, &inputs, &options).unwrap();
    let maps = out.maps.unwrap();
    assert_eq!(maps.dims(), [4, 256, 256]);
    assert_eq!(out.images[1].rows, 2..4);
    assert_eq!(out.images[0].explained, [0, 3]);
    // Row 0 is image 0's best detection: the same map as the box-score fixture.
    let (expected, _) = read(models_fixture(IO), "gradcam");
    let ours = maps.to_vec().unwrap();
    let diff = max_abs_diff(&ours[..256 * 256], &expected[..256 * 256]);
    assert!(diff <= 1e-3, "{diff:e}");
    // A threshold no detection reaches explains nothing, and says so with no maps.
    let none = DetectionOptions {
        score_threshold: 0.99,
        ..DetectionOptions::default()
    };
    let out = explain_detection(&model, &inputs, &none).unwrap();
    assert!(out.maps.is_none() && out.images.iter().all(|i| i.explained.is_empty()));
    let bad = DetectionOptions {
        boxes: Some(vec![500]),
        ..DetectionOptions::default()
    };
    let err = explain_detection(&model, &inputs, &bad)
        .err()
        .expect("a missing box is an error")
        .to_string();
    assert!(err.contains("box 500 does not exist"), "{err}");
    let nan = DetectionOptions {
        score_threshold: f32::NAN,
        ..DetectionOptions::default()
    };
    assert!(explain_detection(&model, &inputs, &nan).is_err());
}

#[test]
fn drise_matches_a_transcription_of_the_paper_with_the_same_masks() {
    use lumen::tasks::{DriseConfig, drise_with_masks, rise_masks};
    let (model, inputs) = setup();
    let fixture = "det_fcos_drise.safetensors";
    let (cells, shape) = read(models_fixture(fixture), "drise_cells");
    let bytes = std::fs::read(models_fixture(fixture)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shifts: Vec<[usize; 2]> = file
        .tensor("drise_shifts")
        .unwrap()
        .data()
        .chunks_exact(16)
        .map(|b| {
            let v = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
            [v(0), v(8)]
        })
        .collect();
    let label = |b: usize| {
        i64::from_le_bytes(
            file.tensor(&format!("drise_label_{b}")).unwrap().data()[..8]
                .try_into()
                .unwrap(),
        ) as usize
    };
    let masks = rise_masks(&cells, &shifts, shape[1], [256, 256], &model.device).unwrap();
    let targets: Vec<BoxRequest> = (0..2)
        .map(|b| {
            let (v, _) = read(models_fixture(fixture), &format!("drise_box_{b}"));
            BoxRequest {
                bbox: [v[0], v[1], v[2], v[3]],
                label: label(b),
            }
        })
        .collect();
    let config = DriseConfig {
        masks: shifts.len(),
        batch_size: Some(16),
        ..DriseConfig::default()
    };
    let maps = drise_with_masks(&model.model, &inputs.tensor, &targets, &masks, &config).unwrap();
    let ours = maps.to_vec().unwrap();
    for b in 0..2 {
        let (expected, _) = read(models_fixture(fixture), &format!("drise_{b}"));
        let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&ours[b * 256 * 256..(b + 1) * 256 * 256], &expected);
        assert!(
            diff <= 1e-4 * scale,
            "image {b}: max diff {diff:e} (scale {scale})"
        );
    }
}

#[test]
fn drise_masks_made_chunk_by_chunk_equal_masks_made_up_front() {
    use lumen::tasks::{DriseConfig, drise, drise_masks, drise_with_masks};
    let (model, inputs) = setup();
    let targets: Vec<BoxRequest> = predict(&model, &inputs)
        .iter()
        .map(|p| box_at(p, 0))
        .collect();
    // Generated masks are made one chunk at a time: the same map as all of them made
    // up front, also when the chunks do not divide the masks (6 in chunks of 4). Few
    // masks: this is the chunking's bookkeeping, and every masked image is a forward
    // pass (on lavapipe, 20 masks in chunks of 16 took about 330 s).
    let generated = DriseConfig {
        masks: 6,
        batch_size: Some(4),
        seed: 3,
        ..DriseConfig::default()
    };
    let upfront = drise_masks(&generated, [256, 256], &model.device).unwrap();
    let whole = drise_with_masks(&model.model, &inputs.tensor, &targets, &upfront, &generated)
        .unwrap()
        .to_vec()
        .unwrap();
    let chunked = drise(&model.model, &inputs.tensor, &targets, &generated)
        .unwrap()
        .to_vec()
        .unwrap();
    let scale = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "the generated masks' maps are all zero");
    let diff = max_abs_diff(&chunked, &whole);
    assert!(
        diff <= 1e-6 * scale,
        "chunked masks: {diff:e} (scale {scale})"
    );
}

#[test]
fn per_box_renormalisation_matches_the_tutorial_function() {
    let name = "det_renormalize.safetensors";
    let (map, shape) = read(models_fixture(name), "map");
    let (boxes, _) = read(models_fixture(name), "boxes");
    let (expected, _) = read(models_fixture(name), "renormalized");
    let boxes: Vec<[f32; 4]> = boxes.chunks(4).map(|b| [b[0], b[1], b[2], b[3]]).collect();
    let ours = lumen::tasks::renormalize_in_boxes(&map, [shape[0], shape[1]], &boxes);
    let diff = max_abs_diff(&ours, &expected);
    assert!(diff <= 1e-6, "max diff {diff:e}");
}

#[test]
fn class_logit_and_centerness_targets_match_pytorch_grad_cam() {
    use lumen::{DetectionOptions, DetectionScoreKind, explain_detection};
    let (model, inputs) = setup();
    for (kind, key) in [
        (DetectionScoreKind::ClassLogit, "gradcam_class_logit"),
        (DetectionScoreKind::Centerness, "gradcam_centerness"),
    ] {
        let options = DetectionOptions {
            boxes: Some(vec![0]),
            target: kind,
            explain: ExplainOptions {
                method: "gradcam".into(),
                method_options: MethodOptions {
                    layer: Some("backbone.layer4".into()),
                    ..MethodOptions::default()
                },
                ..ExplainOptions::default()
            },
            ..DetectionOptions::default()
        };
        let out = explain_detection(&model, &inputs, &options).unwrap();
        let ours = out.maps.unwrap().to_vec().unwrap();
        let (expected, _) = read(models_fixture(IO), key);
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff <= 1e-3, "{key}: max diff {diff:e}");
    }
}
