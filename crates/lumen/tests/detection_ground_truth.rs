//! The bundled `shapes-det` on generated scenes with exact boxes: its accuracy on the
//! held-out test split (a floor CI keeps), and whether the map of one detection points
//! at that detection's own object rather than at the other objects of the scene,
//! measured against the random and centre floors on the same boxes.

use lumen::evaluate::Progress;
use lumen::metrics::{TruthBox, average_precision};
use lumen::shapes::{EVALUATION_SEED, SHAPE_CLASSES, ShapeScene, TEST_SEED, shape_scenes};
use lumen::task_evaluation::{
    TaskEvaluation, TaskEvaluationConfig, evaluate_detector, scored_boxes, truth_boxes,
};
use lumen::{
    DetectionOptions, ExplainOptions, Inputs, LoadedDetector, MethodOptions, device_from_str,
    explain_detection,
};

/// mAP@0.5 on 128 test scenes (the training script reports 512: docs/tasks.md).
const MAP_FLOOR: f64 = 0.85;

fn model() -> LoadedDetector {
    LoadedDetector::bundled("shapes-det", &device_from_str("cpu").unwrap()).unwrap()
}

#[test]
fn bundled_detector_meets_its_accuracy_floor_on_held_out_scenes() {
    let model = model();
    let scenes = shape_scenes(TEST_SEED, 0, 128);
    let mut detections = vec![];
    for chunk in scenes.chunks(32) {
        let images = chunk.iter().map(|s| s.image.clone()).collect();
        let names = vec!["s".to_string(); chunk.len()];
        let inputs = Inputs::from_images(images, names, &model.data_config, &model.device).unwrap();
        // Nothing explained (threshold above every score): the detections alone.
        let options = DetectionOptions {
            score_threshold: 1.0,
            ..DetectionOptions::default()
        };
        for image in explain_detection(&model, &inputs, &options).unwrap().images {
            detections.push(scored_boxes(&image.detections));
        }
    }
    let truths: Vec<Vec<TruthBox>> = scenes.iter().map(truth_boxes).collect();
    let ap = average_precision(&detections, &truths, SHAPE_CLASSES.len(), 0.5).unwrap();
    println!("test mAP@0.5 {:.3} per class {:?}", ap.mean, ap.per_class);
    assert!(
        ap.mean >= MAP_FLOOR,
        "test mAP@0.5 {:.3} < {MAP_FLOOR}",
        ap.mean
    );
}

fn bench(methods: &[&str], scenes: u64) -> TaskEvaluation {
    let config = TaskEvaluationConfig {
        methods: methods.iter().map(|m| m.to_string()).collect(),
        method_options: MethodOptions {
            steps: 8,
            noise_samples: 4,
            ..MethodOptions::default()
        },
        ..TaskEvaluationConfig::default()
    };
    let scenes = shape_scenes(EVALUATION_SEED, 0, scenes);
    evaluate_detector(&model(), &scenes, &config, &mut |_: Progress| {}).unwrap()
}

fn score(result: &TaskEvaluation, method: &str, metric: &str) -> f64 {
    let row = result.methods.iter().find(|m| m.method == method).unwrap();
    row.scores[metric]
}

#[test]
fn the_map_of_a_box_points_at_its_own_object_not_at_its_neighbours() {
    let result = bench(&["hirescam", "saliency", "gradcam"], 24);
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    let matched = result.explained["matched_among_other_objects"];
    assert!(matched >= 20, "only {matched} boxes among other objects");
    assert_eq!(result.methods[0].layer.as_deref(), Some("fpn.p3"));
    let floor = |metric| score(&result, "random", metric).max(score(&result, "center", metric));
    for method in ["hirescam", "saliency"] {
        let beats = score(&result, method, "beats_other_boxes");
        let share = score(&result, method, "share_among_boxes");
        let pointing = score(&result, method, "pointing_game");
        assert!(
            beats >= 0.85 && beats > floor("beats_other_boxes") + 0.4,
            "{method}: beats the other boxes for {beats:.3} of boxes (floor {:.3})",
            floor("beats_other_boxes")
        );
        assert!(
            share > floor("share_among_boxes") + 0.25,
            "{method}: share among boxes {share:.3} (floor {:.3})",
            floor("share_among_boxes")
        );
        assert!(
            pointing > 2.0 * floor("pointing_game"),
            "{method}: pointing game {pointing:.3} (floor {:.3})",
            floor("pointing_game")
        );
    }
    // The floors are what chance gives: the random map's share among boxes is about
    // the explained box's share of the boxes' area, well under 1.
    let random = score(&result, "random", "share_among_boxes");
    assert!((0.2..0.6).contains(&random), "random floor {random:.3}");
}

#[test]
fn every_method_explains_every_confident_detection() {
    // Integrated gradients darken the image until the detection is gone: the target
    // then scores nothing, and its gradient is zero (it used to abort the process).
    let model = model();
    let scenes = shape_scenes(EVALUATION_SEED, 0, 2);
    let images = scenes.iter().map(|s| s.image.clone()).collect();
    let names = vec!["a".to_string(), "b".to_string()];
    let inputs = Inputs::from_images(images, names, &model.data_config, &model.device).unwrap();
    for method in [
        "gradcam",
        "gradcam++",
        "hirescam",
        "xgradcam",
        "layercam",
        "eigencam",
        "saliency",
        "inputxgrad",
        "ig",
        "smoothgrad",
        "drise",
    ] {
        let mut options = DetectionOptions {
            explain: ExplainOptions {
                method: method.into(),
                method_options: MethodOptions {
                    steps: 8,
                    noise_samples: 4,
                    // Seeded noise, so that the run below can be compared with this.
                    seed: Some(3),
                    ..MethodOptions::default()
                },
                ..ExplainOptions::default()
            },
            ..DetectionOptions::default()
        };
        options.explain.method_options.masks = 32;
        let result = explain_detection(&model, &inputs, &options).unwrap();
        let rows: usize = result.images.iter().map(|i| i.explained.len()).sum();
        assert!(rows >= 2, "{method}: {rows} detections explained");
        let maps = result.maps.unwrap();
        assert_eq!(maps.dims(), [rows, 128, 128], "{method}");
        let values = maps.to_vec().unwrap();
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{method}: non-finite map"
        );
        for (row, map) in values.chunks(128 * 128).enumerate() {
            assert!(map.iter().any(|&v| v > 0.0), "{method}: map {row} is empty");
        }
        // One image (one box) per pass through the model: the same detections and maps.
        options.explain.batch_size = Some(1);
        let one = explain_detection(&model, &inputs, &options).unwrap();
        for (a, b) in one.images.iter().zip(&result.images) {
            assert_eq!(a.explained, b.explained, "{method}");
        }
        let diff = one
            .maps
            .unwrap()
            .to_vec()
            .unwrap()
            .iter()
            .zip(&values)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-5,
            "{method}: one box per pass differs by {diff:e}"
        );
    }
}

#[test]
fn the_bench_refuses_a_detector_of_other_classes() {
    let device = device_from_str("cpu").unwrap();
    let other = LoadedDetector::init("fcos_test_resnet", 3, &device).unwrap();
    let scenes = shape_scenes(EVALUATION_SEED, 0, 1);
    let error = evaluate_detector(
        &other,
        &scenes,
        &TaskEvaluationConfig::default(),
        &mut |_: Progress| {},
    )
    .expect_err("3 classes against 4");
    let message = error.to_string();
    assert!(
        message.contains("the generated scenes have 4 classes") && message.contains("predicts 3"),
        "{message}"
    );
}

#[test]
fn deleting_what_a_box_map_points_at_loses_the_detection_sooner_than_chance() {
    use lumen::BaselineKind;
    use lumen::evaluate::curve;
    use lumen::task_evaluation::DenseCurves;
    let model = model();
    let data = &model.data_config;
    let config = TaskEvaluationConfig {
        methods: vec!["hirescam".into()],
        curves: Some(DenseCurves {
            deletion: curve(8, BaselineKind::Mean, data),
            insertion: curve(8, BaselineKind::Blur, data),
        }),
        ..TaskEvaluationConfig::default()
    };
    let scenes = shape_scenes(EVALUATION_SEED, 0, 8);
    let result = evaluate_detector(&model, &scenes, &config, &mut |_: Progress| {}).unwrap();
    let (deletion, insertion) = (
        score(&result, "hirescam", "deletion_auc"),
        score(&result, "hirescam", "insertion_auc"),
    );
    let (random_deletion, random_insertion) = (
        score(&result, "random", "deletion_auc"),
        score(&result, "random", "insertion_auc"),
    );
    println!(
        "deletion {deletion:.3} (random {random_deletion:.3}), insertion {insertion:.3} (random {random_insertion:.3})"
    );
    assert!(
        deletion + 0.1 < random_deletion,
        "deletion {deletion:.3} vs random {random_deletion:.3}"
    );
    assert!(
        insertion > random_insertion + 0.1,
        "insertion {insertion:.3} vs random {random_insertion:.3}"
    );
}

/// Two generated scenes, the first with several objects, and their inputs.
fn busy_scene_and_another(loaded: &LoadedDetector) -> ([ShapeScene; 2], Inputs) {
    let scenes = shape_scenes(EVALUATION_SEED, 0, 16);
    let busy = scenes
        .iter()
        .position(|s| s.objects.len() >= 2)
        .expect("a scene with several objects");
    let pair = [
        scenes[busy].clone(),
        scenes[(busy + 1) % scenes.len()].clone(),
    ];
    let images = pair.iter().map(|s| s.image.clone()).collect();
    let names = vec!["a".to_string(), "b".to_string()];
    let inputs = Inputs::from_images(images, names, &loaded.data_config, &loaded.device).unwrap();
    (pair, inputs)
}

/// D-RISE with an image's boxes together (`drise_boxes`, what `explain_detection`
/// calls) gives the maps of the image repeated once per box, from a third of the
/// passes here: each masked image is scored against all its boxes at once.
#[test]
fn drise_scores_each_masked_image_once_for_all_its_boxes() {
    use lumen::core::burn::tensor::{Int, TensorData};
    use lumen::core::{ExplainableModel, LayerInfo, Tap, Tensor};
    use lumen::tasks::{BoxRequest, DriseConfig, drise, drise_boxes};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The detector, counting its passes.
    struct Counted<'a>(&'a lumen::models::Detector, AtomicUsize);
    impl ExplainableModel for Counted<'_> {
        type Output = <lumen::models::Detector as ExplainableModel>::Output;
        fn forward_tapped(&self, input: Tensor<4>, tap: &dyn Tap) -> Self::Output {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.forward_tapped(input, tap)
        }
        fn layers(&self) -> Vec<LayerInfo> {
            self.0.layers()
        }
        fn default_layer(&self) -> String {
            self.0.default_layer()
        }
        fn input_shape(&self) -> [usize; 3] {
            self.0.input_shape()
        }
    }

    let loaded = model();
    let model = Counted(&loaded.model, AtomicUsize::new(0));
    // Two scenes with their true boxes: one with several objects (up to three of
    // them), and one box of another scene.
    let (scenes, inputs) = busy_scene_and_another(&loaded);
    let scenes = [&scenes[0], &scenes[1]];
    let request = |t: &TruthBox| BoxRequest {
        bbox: t.bbox,
        label: t.label,
    };
    let first: Vec<BoxRequest> = truth_boxes(scenes[0]).iter().take(3).map(request).collect();
    let second: Vec<BoxRequest> = truth_boxes(scenes[1]).iter().take(1).map(request).collect();
    let config = DriseConfig {
        masks: 24,
        batch_size: Some(8),
        ..DriseConfig::default()
    };
    let grouped = drise_boxes(
        &model,
        &inputs.tensor,
        &[first.clone(), second.clone()],
        &config,
    )
    .unwrap();
    let grouped_passes = model.1.swap(0, Ordering::Relaxed);

    let rows: Vec<i64> = std::iter::repeat_n(0, first.len()).chain([1]).collect();
    let index =
        Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &loaded.device);
    let repeated = inputs.tensor.clone().select(0, index);
    let each = drise(&model, &repeated, &[first, second].concat(), &config).unwrap();
    let each_passes = model.1.swap(0, Ordering::Relaxed);

    assert_eq!(grouped.dims(), [rows.len(), 128, 128]);
    let (grouped, each) = (grouped.to_vec().unwrap(), each.to_vec().unwrap());
    assert_eq!(grouped, each);
    // Not a trivial equality: the boxes of one image have maps of their own.
    let maps: Vec<&[f32]> = grouped.chunks(128 * 128).collect();
    assert!(maps.iter().all(|m| m.iter().any(|&v| v > 0.0)));
    assert_ne!(maps[0], maps[1]);
    // 3 chunks of 8 masks: per image (2) against per box (rows).
    assert_eq!(grouped_passes, 2 * 3);
    assert_eq!(each_passes, rows.len() * 3);
}

/// D-RISE through the calls that take methods by name (`explain_prediction`, and with
/// it `compare_methods`, reports and batches): the map of each image's top detection
/// is the one `explain_detection` gives that box, from the same seeded masks.
#[test]
fn drise_by_name_explains_the_top_box_as_explain_detection_does() {
    let model = model();
    let scenes = shape_scenes(EVALUATION_SEED, 0, 2);
    let images = scenes.iter().map(|s| s.image.clone()).collect();
    let names = vec!["a".to_string(), "b".to_string()];
    let inputs = Inputs::from_images(images, names, &model.data_config, &model.device).unwrap();
    let method_options = MethodOptions {
        masks: 24,
        seed: Some(5),
        internal_batch_size: Some(8),
        ..MethodOptions::default()
    };
    let explain = ExplainOptions {
        method: "drise".into(),
        method_options: method_options.clone(),
        ..ExplainOptions::default()
    };
    let by_name = lumen::explain_prediction(&model, &inputs, &explain)
        .unwrap()
        .0
        .heatmaps
        .to_vec()
        .unwrap();
    let own = explain_detection(
        &model,
        &inputs,
        &DetectionOptions {
            explain,
            boxes: Some(vec![0]),
            ..DetectionOptions::default()
        },
    )
    .unwrap()
    .maps
    .unwrap()
    .to_vec()
    .unwrap();
    assert_eq!(by_name.len(), 2 * 128 * 128);
    assert_eq!(by_name, own);
    assert!(
        by_name
            .chunks(128 * 128)
            .all(|m| m.iter().any(|&v| v > 0.0))
    );
    // Another seed draws other masks: the maps above are the seed's, not a constant.
    let mut reseeded = method_options.clone();
    reseeded.seed = Some(6);
    let other = lumen::explain_prediction(
        &model,
        &inputs,
        &ExplainOptions {
            method: "drise".into(),
            method_options: reseeded,
            ..ExplainOptions::default()
        },
    )
    .unwrap()
    .0
    .heatmaps
    .to_vec()
    .unwrap();
    assert_ne!(by_name, other);
}

/// The D-RISE method on a box target with several boxes in a row sums their maps (the
/// box score sums over them too), gives a row without a box a zero map, and refuses
/// a target that names no boxes.
#[test]
fn the_drise_method_sums_a_rows_boxes_and_needs_box_targets() {
    use lumen::core::{DetectorOutput, Target, Tensor};
    use lumen::methods::Method;
    use lumen::tasks::{BoxRequest, BoxScore, DetectionScoreKind, DriseConfig, drise_boxes};

    let loaded = model();
    let (scenes, inputs) = busy_scene_and_another(&loaded);
    let scenes = [&scenes[0], &scenes[1]];
    let two: Vec<BoxRequest> = truth_boxes(scenes[0])
        .iter()
        .take(2)
        .map(|t| BoxRequest {
            bbox: t.bbox,
            label: t.label,
        })
        .collect();
    let config = DriseConfig {
        masks: 16,
        seed: 2,
        batch_size: Some(8),
        ..DriseConfig::default()
    };
    let target = BoxScore {
        boxes: vec![two.clone(), vec![]],
        match_threshold: 0.5,
        decode: Default::default(),
        kind: DetectionScoreKind::BoxScore,
    };
    let method = lumen::Drise::new(config).unwrap();
    let maps = Method::explain(&method, &loaded.model, inputs.tensor.clone(), &target)
        .unwrap()
        .heatmaps
        .to_vec()
        .unwrap();
    let per_box = drise_boxes(
        &loaded.model,
        &inputs.tensor.clone().narrow(0, 0, 1),
        &[two],
        &config,
    )
    .unwrap()
    .to_vec()
    .unwrap();
    let size = 128 * 128;
    assert_eq!(maps.len(), 2 * size);
    let (first, second) = per_box.split_at(size);
    let sum_gap = maps[..size]
        .iter()
        .zip(first.iter().zip(second))
        .fold(0f32, |m, (v, (a, b))| m.max((v - (a + b)).abs()));
    assert!(
        sum_gap <= 1e-6,
        "row 0 is not the sum of its boxes' maps: {sum_gap:e}"
    );
    // Not the map of one box alone.
    let one_gap = maps[..size]
        .iter()
        .zip(first)
        .fold(0f32, |m, (v, a)| m.max((v - a).abs()));
    assert!(one_gap > 1e-3, "{one_gap:e}");
    assert!(maps[size..].iter().all(|&v| v == 0.0));

    /// A target of detector outputs that is not the task's box score.
    struct Anything;
    impl Target<DetectorOutput> for Anything {
        fn score(&self, output: &DetectorOutput) -> lumen::Result<Tensor<1>> {
            let [batch, _, _, _] = output.centerness[0].dims();
            Ok(output.centerness[0]
                .clone()
                .reshape([batch as i32, -1])
                .sum_dim(1)
                .reshape([-1]))
        }
        fn for_images(&self, _: &[usize]) -> Box<dyn Target<DetectorOutput>> {
            Box::new(Anything)
        }
    }
    let refused = match Method::explain(&method, &loaded.model, inputs.tensor.clone(), &Anything) {
        Ok(_) => panic!("a target without boxes is refused"),
        Err(e) => e.to_string(),
    };
    assert!(refused.contains("box targets"), "{refused}");
}
