//! `lumen demo`: the embedded default. The bundled shapes models explain generated
//! images with several methods; figures and offline HTML reports are written.

use std::path::PathBuf;

use clap::Args;
use lumen::shapes::{EVALUATION_SEED, SHAPE_CLASSES, shape_samples};
use lumen::{
    ExplainOptions, Inputs, Layout, LoadedModel, LumenError, MethodOptions, Result,
    compare_methods, device_from_str, explain_prediction, write_report,
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
    bar.finish_and_clear();
    let evaluated = args.images as usize * reports.len();
    if args.print.json {
        files.extend(reports.iter().cloned());
        JsonOutput {
            command: "demo",
            model: "shapes-cnn,shapes-vit",
            device: &args.device,
            results: serde_json::json!({ "images": args.images, "correct": correct, "predictions": evaluated }),
            files,
        }
        .print();
    } else {
        println!(
            "demo: {} generated images, {correct}/{evaluated} predictions correct",
            args.images
        );
        println!("figures in {}", args.out.display());
        for r in reports {
            println!("report: {}", r.display());
        }
    }
    Ok(())
}
