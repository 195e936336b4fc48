//! `lumen demo`: the embedded default. The bundled shapes classifiers explain generated
//! images with several methods, the bundled segmentor and detector generated
//! multi-object scenes; figures and offline HTML reports are written.

use std::path::PathBuf;

use clap::Args;
use lumen::detection::DRISE;
use lumen::shapes::{EVALUATION_SEED, SCENE_CLASSES, SHAPE_CLASSES, shape_samples, shape_scenes};
use lumen::{
    DetectionOptions, ExplainOptions, Inputs, Layout, LoadedDetector, LoadedModel, LoadedSegmentor,
    LumenError, MethodOptions, Result, SegmentationOptions, Uncertainty, compare_methods,
    device_from_str, explain_detection, explain_prediction, explain_segmentation, write_report,
};

use crate::args::{JsonOutput, PrintArgs, progress};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "lumen-demo")]
    out: PathBuf,
    /// Generated images to explain.
    #[arg(long, default_value_t = 4)]
    images: u64,
    /// Device.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    print: PrintArgs,
}

/// Methods shown per bundled model.
const PLAN: [(&str, &[&str]); 2] = [
    (
        "shapes-cnn",
        &[
            "gradcam",
            "gradcam++",
            "layercam",
            "eigencam",
            "scorecam",
            "ig",
            "smoothgrad",
        ],
    ),
    (
        "shapes-vit",
        &["rollout", "grad-rollout", "attention-flow", "gradcam"],
    ),
];

pub fn run(args: DemoArgs) -> Result<()> {
    if args.images == 0 {
        return Err(LumenError::InvalidArgument(
            "--images must be at least 1".into(),
        ));
    }
    let device = device_from_str(&args.device)?;
    let samples = shape_samples(EVALUATION_SEED, 0, args.images);
    let image_dir = args.out.join("images");
    let mut names = vec![];
    let mut files = vec![];
    for (i, s) in samples.iter().enumerate() {
        let name = format!("shape{i}_{}", SHAPE_CLASSES[s.label]);
        files.push(lumen::save_png(
            &s.image,
            &image_dir,
            &format!("{name}.png"),
        )?);
        names.push(name);
    }
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let bar = progress(
        PLAN.iter().map(|(_, m)| m.len() as u64 + 2).sum(),
        "demo",
        args.print.quiet,
    );
    let mut correct = 0;
    let mut reports = vec![];
    for (model_name, methods) in PLAN {
        if model_name == "shapes-vit" && !lumen::bundled_weights_present(model_name) {
            continue;
        }
        let model = LoadedModel::bundled(model_name, &device)?;
        let inputs =
            Inputs::from_images(images.clone(), names.clone(), &model.data_config, &device)?;
        let dir = args.out.join(model_name);
        let options = ExplainOptions {
            method: methods[0].to_string(),
            save_dir: Some(dir.clone()),
            method_options: MethodOptions {
                noise_samples: 16,
                steps: 32,
                seed: Some(0),
                ..MethodOptions::default()
            },
            // Known weaknesses of the methods on this model, under their maps.
            cautions: lumen::verdicts::bundled_cautions(model_name).unwrap_or_default(),
            ..ExplainOptions::default()
        };
        let (_, results) = explain_prediction(&model, &inputs, &options)?;
        correct += results
            .iter()
            .zip(&samples)
            .filter(|(r, s)| r.prediction.class == s.label)
            .count();
        files.extend(results.into_iter().flat_map(|r| r.paths));
        bar.inc(1);
        let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        let compared = compare_methods(&model, &inputs, &methods, &options, Layout::Grid(4))?;
        files.extend(compared.into_iter().filter_map(|c| c.path));
        bar.inc(methods.len() as u64);
        let report = args.out.join(format!("{model_name}-report.html"));
        reports.push(write_report(
            &model,
            &inputs,
            &methods,
            &options,
            &report,
            &[],
        )?);
        bar.inc(1);
    }
    let segmentation = if lumen::bundled_weights_present("shapes-seg") {
        let (summary, written) = segmentation_demo(&args, &device)?;
        files.extend(written);
        Some(summary)
    } else {
        None
    };
    let detection = if lumen::bundled_weights_present("shapes-det") {
        let (summary, written) = detection_demo(&args, &device)?;
        files.extend(written);
        Some(summary)
    } else {
        None
    };
    bar.finish_and_clear();
    let evaluated = args.images as usize * reports.len();
    if args.print.json {
        files.extend(reports.iter().cloned());
        JsonOutput {
            command: "demo",
            model: "shapes-cnn,shapes-vit,shapes-seg,shapes-det",
            device: &args.device,
            precision: lumen::Precision::F32.name(),
            results: serde_json::json!({
                "images": args.images,
                "correct": correct,
                "predictions": evaluated,
                "segmentation": segmentation,
                "detection": detection,
            }),
            files,
        }
        .print();
    } else {
        println!(
            "demo: {} generated images, {correct}/{evaluated} predictions correct",
            args.images
        );
        if let Some(s) = &segmentation {
            println!(
                "demo: {} generated scenes segmented, mIoU {:.3} against their exact masks",
                s.scenes, s.miou
            );
        }
        if let Some(d) = &detection {
            println!(
                "demo: {} generated scenes, {} objects, {} detections above {} explained (HiResCAM), mAP@0.5 {:.3} against their exact boxes",
                d.scenes, d.objects, d.explained, d.score_threshold, d.map50
            );
        }
        println!("figures in {}", args.out.display());
        for r in reports {
            println!("report: {}", r.display());
        }
        if segmentation.is_some() {
            println!(
                "report: {}",
                args.out.join("shapes-seg-report.html").display()
            );
        }
        if detection.is_some() {
            println!(
                "report: {}",
                args.out.join("shapes-det-report.html").display()
            );
        }
    }
    Ok(())
}

/// What the segmentation part of the demo measured.
#[derive(serde::Serialize)]
struct SegmentationSummary {
    scenes: u64,
    miou: f64,
}

/// The bundled segmentor on generated scenes: each scene's class map, GradCAM of its
/// dominant class and entropy; a method comparison and a report; the scenes' mIoU.
fn segmentation_demo(
    args: &DemoArgs,
    device: &lumen::Device,
) -> Result<(SegmentationSummary, Vec<PathBuf>)> {
    let model = LoadedSegmentor::bundled("shapes-seg", device)?;
    let scenes = shape_scenes(EVALUATION_SEED, 0, args.images);
    let image_dir = args.out.join("images");
    let mut files = vec![];
    let mut names = vec![];
    for (i, scene) in scenes.iter().enumerate() {
        let name = format!("scene{i}");
        files.push(lumen::save_png(
            &scene.image,
            &image_dir,
            &format!("{name}.png"),
        )?);
        names.push(name);
    }
    let images = scenes.iter().map(|s| s.image.clone()).collect();
    let inputs = Inputs::from_images(images, names, &model.data_config, device)?;
    let dir = args.out.join("shapes-seg");
    let options = SegmentationOptions {
        explain: ExplainOptions {
            method: "gradcam".into(),
            save_dir: Some(dir.clone()),
            method_options: MethodOptions {
                // At shapes-seg's default layer, the decoder (stride 4; GradCAM's mass
                // in the class's pixels is 0.87 there, against 0.17 at the backbone's
                // 4x4 last stage: crates/lumen/tests/segmentation_ground_truth.rs).
                steps: 32,
                seed: Some(0),
                ..MethodOptions::default()
            },
            cautions: lumen::verdicts::bundled_cautions("shapes-seg").unwrap_or_default(),
            ..ExplainOptions::default()
        },
        uncertainty: Some(Uncertainty::Entropy),
        ..SegmentationOptions::default()
    };
    let out = explain_segmentation(&model, &inputs, &options)?;
    files.extend(out.results.iter().flat_map(|r| r.paths.clone()));
    let methods: Vec<String> = ["gradcam", "gradcam++", "hirescam", "ig"]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let compared = compare_methods(&model, &inputs, &methods, &options.explain, Layout::Grid(3))?;
    files.extend(compared.into_iter().filter_map(|c| c.path));
    files.push(write_report(
        &model,
        &inputs,
        &methods,
        &options.explain,
        &args.out.join("shapes-seg-report.html"),
        &[],
    )?);
    let mut iou = lumen::metrics::IouAccumulator::new(SCENE_CLASSES.len());
    let predicted = lumen::segmentation::class_maps(&model.model, inputs.tensor.clone())?;
    for (classes, scene) in predicted.iter().zip(&scenes) {
        let truth: Vec<usize> = scene.classes.iter().map(|&c| c as usize).collect();
        iou.add(classes, &truth);
    }
    Ok((
        SegmentationSummary {
            scenes: args.images,
            miou: iou.mean(),
        },
        files,
    ))
}

/// What the detection part of the demo measured.
#[derive(serde::Serialize)]
struct DetectionSummary {
    scenes: u64,
    objects: usize,
    explained: usize,
    score_threshold: f32,
    map50: f64,
}

/// The bundled detector on the same scenes: every detection above 0.5 explained by
/// HiResCAM at its default layer (P3), one figure per scene; the scenes' mAP@0.5.
fn detection_demo(
    args: &DemoArgs,
    device: &lumen::Device,
) -> Result<(DetectionSummary, Vec<PathBuf>)> {
    use lumen::metrics::{ScoredBox, TruthBox, average_precision};
    use lumen::task_evaluation::{scored_boxes, truth_boxes};
    let model = LoadedDetector::bundled("shapes-det", device)?;
    let scenes = shape_scenes(EVALUATION_SEED, 0, args.images);
    let images = scenes.iter().map(|s| s.image.clone()).collect();
    let names = (0..scenes.len()).map(|i| format!("scene{i}")).collect();
    let inputs = Inputs::from_images(images, names, &model.data_config, device)?;
    let options = DetectionOptions {
        explain: ExplainOptions {
            // Element-wise CAM: GradCAM pools the gradient over the map and lights up
            // every object alike (docs/tasks.md has the measurement).
            method: "hirescam".into(),
            save_dir: Some(args.out.join("shapes-det")),
            cautions: lumen::verdicts::bundled_cautions("shapes-det").unwrap_or_default(),
            ..ExplainOptions::default()
        },
        ..DetectionOptions::default()
    };
    let out = explain_detection(&model, &inputs, &options)?;
    // The report explains each scene's best detection with a CAM, a gradient and the
    // black-box D-RISE beside them (128 masks: about 2.5 s for the four scenes on 2
    // cores; its map is noisier than with the default 1000, but shows where it looks).
    let methods: Vec<String> = ["hirescam", "gradcam++", "saliency", DRISE]
        .iter()
        .map(|m| m.to_string())
        .collect();
    let report_options = ExplainOptions {
        save_dir: None,
        method_options: MethodOptions {
            masks: 128,
            seed: Some(0),
            ..MethodOptions::default()
        },
        ..options.explain.clone()
    };
    let report = write_report(
        &model,
        &inputs,
        &methods,
        &report_options,
        &args.out.join("shapes-det-report.html"),
        &[],
    )?;
    let detections: Vec<Vec<ScoredBox>> = out
        .images
        .iter()
        .map(|i| scored_boxes(&i.detections))
        .collect();
    let truths: Vec<Vec<TruthBox>> = scenes.iter().map(truth_boxes).collect();
    let map = average_precision(&detections, &truths, SHAPE_CLASSES.len(), 0.5)?;
    Ok((
        DetectionSummary {
            scenes: args.images,
            objects: truths.iter().map(Vec::len).sum(),
            explained: out.images.iter().map(|i| i.explained.len()).sum(),
            score_threshold: options.score_threshold,
            map50: map.mean,
        },
        out.images
            .into_iter()
            .flat_map(|i| i.paths)
            .chain([report])
            .collect(),
    ))
}
