//! `lumen explain` on a detection model: one map per detection.

use std::path::PathBuf;

use clap::Args;
use lumen::{DetectionOptions, DetectionScoreKind, LumenError, Result, explain_detection};

use crate::args::{JsonOutput, check_methods, check_writable, choice};
use crate::explain::{ExplainArgs, RawWriter};

/// Options of detection models (an error on other models).
#[derive(Args, Debug, Clone)]
pub struct DetectArgs {
    /// Detection: explain every detection scoring at least this, in [0, 1].
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub score_threshold: f32,
    /// Detection: explain these detections (indices in score order, comma-separated)
    /// instead.
    #[arg(long = "box", value_delimiter = ',')]
    pub boxes: Vec<usize>,
    /// Detection: at most this many boxes per image.
    #[arg(long, default_value_t = 16)]
    pub max_boxes: usize,
    /// Detection: rescale each map to [0, 1] inside its box and zero it outside
    /// (pytorch-grad-cam's `renormalize_cam_in_bounding_boxes`).
    #[arg(long)]
    pub renormalize: bool,
    #[arg(long, default_value = "box-score", value_parser = choice::<DetectionScoreKind>,
          help = "Detection: what is explained of each box's detection [one of: box-score (IoU + score, pytorch-grad-cam), class-logit, centerness]")]
    pub detection_target: DetectionScoreKind,
}

impl DetectArgs {
    /// On other models, detection options are a mistake worth saying.
    pub fn require_unused(&self, task: &str) -> Result<()> {
        if !self.boxes.is_empty()
            || self.score_threshold != 0.5
            || self.max_boxes != 16
            || self.renormalize
            || self.detection_target != DetectionScoreKind::BoxScore
        {
            return Err(LumenError::InvalidArgument(format!(
                "--box, --score-threshold, --max-boxes, --renormalize and --detection-target apply to detection models (fcos_*), not to {task} models"
            )));
        }
        Ok(())
    }
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let mut explain = args.options();
    explain.polarity = false;
    args.figure.warn_unread(
        &["--colormap", "--alpha", "--verdicts"],
        "detection maps have no polarity view; nothing reads",
    );
    let verdicts = args.figure.verdicts(&args.model.model)?;
    let is_drise = args.method == lumen::detection::DRISE;
    check_methods(
        std::slice::from_ref(&args.method),
        &args.method_args,
        &explain,
        true,
    )?;
    if !args.method_args.target_class.is_empty() {
        return Err(LumenError::InvalidArgument(
            "--target-class does not apply to detection models: choose boxes with --box or --score-threshold".into(),
        ));
    }
    if let Some(path) = &args.save_raw {
        check_writable("--save-raw", path)?;
    }
    explain.cache = args.cache.open(&args.model)?;
    let mut options = DetectionOptions {
        score_threshold: args.detection.score_threshold,
        boxes: (!args.detection.boxes.is_empty()).then(|| args.detection.boxes.clone()),
        max_boxes: args.detection.max_boxes,
        renormalize: args.detection.renormalize,
        target: args.detection.detection_target,
        explain,
        ..DetectionOptions::default()
    };
    let model = args.model.load_detector()?;
    options.explain.cautions = args.figure.cautions_at(
        &verdicts,
        args.method_args.layer.as_deref(),
        &model.model,
        &args.method,
    );
    args.method_args
        .warn_drowning_noise(std::slice::from_ref(&args.method), &model.data_config);
    let plan = args.input.plan(&model)?;
    let size = plan.input_size();
    // D-RISE runs one detector pass per mask and box: the bar's clock shows work going on.
    let what = match is_drise {
        true => format!("D-RISE, {} masks per box", args.method_args.masks),
        false => args.method.clone(),
    };
    let mut raw = RawWriter::create(args.save_raw.as_deref(), size, args.grid)?;
    let mut images: Vec<lumen::ExplainedDetections> = vec![];
    let mut method = args.method.clone();
    plan.for_each_chunk(
        lumen::TaskModel::device(&model),
        std::slice::from_ref(&args.method),
        (&what, args.print.quiet),
        |chunk| {
            let out = explain_detection(&model, &chunk.inputs, &options)?;
            if let Some(explanation) = &out.explanation {
                raw.append(explanation)?;
            }
            // Rows count on from the chunks before: they index the one --save-raw array.
            let before = images.last().map_or(0, |i| i.rows.end);
            images.extend(out.images.into_iter().map(|mut image| {
                image.rows = image.rows.start + before..image.rows.end + before;
                image
            }));
            method = out.method;
            Ok(())
        },
    )?;
    let boxes: usize = images.iter().map(|i| i.explained.len()).sum();
    crate::args::report_cache(options.explain.cache.as_deref(), boxes, args.print.quiet);
    let found: usize = images.iter().map(|i| i.detections.len()).sum();
    if boxes == 0 && found > 0 {
        // Not an error (a folder may have images without objects), but say why.
        let best = images
            .iter()
            .flat_map(|i| i.detections.iter().map(|d| d.score))
            .fold(0f32, f32::max);
        eprintln!(
            "warning: no detection scored at least --score-threshold {} (the best scored \
             {best:.3}): nothing was explained; lower the threshold or pick boxes with --box",
            options.score_threshold
        );
    }
    let mut files: Vec<PathBuf> = images.iter().flat_map(|r| r.paths.clone()).collect();
    // Nothing detected: an empty [0, H, W] array, so scripts need no special case.
    files.extend(raw.finish()?);
    if args.print.json {
        JsonOutput {
            command: "explain",
            model: &model.name,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: &images,
            files,
        }
        .print();
    } else {
        for image in &images {
            let d = &image.detections;
            println!(
                "{}: {} detections, {} explained with {} (rows {}..{} of the maps)",
                image.image,
                d.len(),
                image.explained.len(),
                method,
                image.rows.start,
                image.rows.end
            );
            for &k in &image.explained {
                let b = &d[k];
                println!(
                    "  box {k}: class {} score {:.3} at [{:.0}, {:.0}, {:.0}, {:.0}]",
                    b.label, b.score, b.bbox[0], b.bbox[1], b.bbox[2], b.bbox[3]
                );
            }
            for p in &image.paths {
                println!("  wrote {}", p.display());
            }
        }
        if let Some(path) = &args.save_raw {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
