//! `lumen compare`, `lumen batch` and `lumen demo`.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lumen::core::{LumenError, Result};
use lumen::methods::{MethodOptions, by_name};
use lumen::models::shapes::{EVALUATION_SEED, SHAPE_CLASSES, shape_samples};
use lumen::report::Layout;
use lumen::{
    ExplainOptions, Inputs, LoadedModel, ZooModel, compare_methods, device_from_str, explain_batch,
    explain_prediction, write_report,
};

use crate::explain::{FigureArgs, MethodArgs, ModelArgs, colormap, method_options};

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (one batch).
    #[arg(long, num_args = 1.., required = true)]
    image: Vec<PathBuf>,
    /// Methods to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gradcam,gradcam++,layercam,eigencam"
    )]
    methods: Vec<String>,
    /// Target class per image (comma-separated); the predicted class when omitted.
    #[arg(long, value_delimiter = ',')]
    target_class: Vec<usize>,
    /// Panel layout: horizontal, vertical, grid.
    #[arg(long, default_value = "horizontal")]
    layout: String,
    #[command(flatten)]
    method_args: MethodArgs,
    #[command(flatten)]
    figure: FigureArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let options = method_options(&args.method_args);
    for name in &args.methods {
        by_name::<ZooModel>(name, &options)?;
    }
    let layout = Layout::from_name(&args.layout, args.methods.len() + 1)
        .map_err(LumenError::InvalidArgument)?;
    let colormap = colormap(&args.figure.colormap)?;
    let (loaded, device) = args.model.load()?;
    let inputs = Inputs::from_files(&args.image, &loaded.data_config, &device)?;
    let explain = ExplainOptions {
        method: String::new(),
        target_class: (!args.target_class.is_empty()).then(|| args.target_class.clone()),
        colormap,
        alpha: args.figure.alpha,
        save_dir: (!args.figure.no_figures).then(|| args.figure.out.clone()),
        method_options: options,
        polarity: args.figure.polarity,
    };
    let results = compare_methods(&loaded, &inputs, &args.methods, &explain, layout)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("serialisable")
        );
    } else {
        for r in &results {
            match &r.path {
                Some(p) => println!(
                    "{}: class {} with {} -> {}",
                    r.image,
                    r.target_class,
                    r.methods.join(", "),
                    p.display()
                ),
                None => println!(
                    "{}: class {} with {}",
                    r.image,
                    r.target_class,
                    r.methods.join(", ")
                ),
            }
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (one batch).
    #[arg(long, num_args = 1.., required = true)]
    image: Vec<PathBuf>,
    /// Methods shown, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gradcam,gradcam++,eigencam,ig"
    )]
    methods: Vec<String>,
    /// Target class per image (comma-separated); the predicted class when omitted.
    #[arg(long, value_delimiter = ',')]
    target_class: Vec<usize>,
    /// Colormap of the overlays.
    #[arg(long, default_value = "jet")]
    colormap: String,
    /// The HTML file to write.
    #[arg(long, default_value = "lumen-report.html")]
    out: PathBuf,
    #[command(flatten)]
    method_args: MethodArgs,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let options = method_options(&args.method_args);
    for name in &args.methods {
        by_name::<ZooModel>(name, &options)?;
    }
    let colormap = colormap(&args.colormap)?;
    let (loaded, device) = args.model.load()?;
    let inputs = Inputs::from_files(&args.image, &loaded.data_config, &device)?;
    let explain = ExplainOptions {
        target_class: (!args.target_class.is_empty()).then(|| args.target_class.clone()),
        colormap,
        method_options: options,
        ..ExplainOptions::default()
    };
    let path = write_report(&loaded, &inputs, &args.methods, &explain, &args.out, &[])?;
    println!("wrote {}", path.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A folder of images, or image files (shell globs expand to files).
    #[arg(num_args = 1.., required = true)]
    inputs: Vec<PathBuf>,
    /// Method name.
    #[arg(long, default_value = "gradcam")]
    method: String,
    /// Images per forward/backward.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    method_args: MethodArgs,
    #[command(flatten)]
    figure: FigureArgs,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "webp"];

fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = vec![];
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input).map_err(|source| LumenError::Io {
                path: input.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        return Err(LumenError::InvalidArgument(format!(
            "no images found in {}: expected files ending in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            IMAGE_EXTENSIONS.join(", ")
        )));
    }
    Ok(files)
}

pub fn batch(args: BatchArgs) -> Result<()> {
    let options = method_options(&args.method_args);
    by_name::<ZooModel>(&args.method, &options)?;
    let colormap = colormap(&args.figure.colormap)?;
    let files = collect_images(&args.inputs)?;
    let (loaded, device) = args.model.load()?;
    let explain = ExplainOptions {
        method: args.method.clone(),
        target_class: None,
        colormap,
        alpha: args.figure.alpha,
        save_dir: (!args.figure.no_figures).then(|| args.figure.out.clone()),
        method_options: options,
        polarity: args.figure.polarity,
    };
    let bar = progress(files.len() as u64, "explaining");
    let results = explain_batch(
        &loaded,
        &files,
        args.batch_size,
        &explain,
        &device,
        |done| bar.set_position(done as u64),
    )?;
    bar.finish();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("serialisable")
        );
    } else {
        eprintln!(
            "explained {} images; figures in {}",
            results.len(),
            args.figure.out.display()
        );
    }
    Ok(())
}

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
}

/// The embedded default: the bundled shapes models explain generated images.
pub fn demo(args: DemoArgs) -> Result<()> {
    if args.images == 0 {
        return Err(LumenError::InvalidArgument(
            "--images must be at least 1".into(),
        ));
    }
    let device = device_from_str(&args.device)?;
    let samples = shape_samples(EVALUATION_SEED, 0, args.images);
    let image_dir = args.out.join("images");
    std::fs::create_dir_all(&image_dir).map_err(|source| LumenError::Io {
        path: image_dir.clone(),
        source,
    })?;
    let mut names = vec![];
    for (i, s) in samples.iter().enumerate() {
        let name = format!("shape{i}_{}", SHAPE_CLASSES[s.label]);
        let path = image_dir.join(format!("{name}.png"));
        s.image.save(&path).map_err(|e| LumenError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        names.push(name);
    }
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let plan: [(&str, &[&str]); 2] = [
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
    let bar = progress(plan.iter().map(|(_, m)| m.len() as u64 + 2).sum(), "demo");
    let mut correct = 0;
    let mut reports = vec![];
    for (model_name, methods) in plan {
        if model_name == "shapes-vit" && !lumen::models::bundled_weights_present(model_name) {
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
                samples: 16,
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
            .filter(|(r, s)| r.predicted_class == s.label)
            .count();
        bar.inc(1);
        let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        compare_methods(&model, &inputs, &methods, &options, Layout::Grid(4))?;
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
    bar.finish();
    println!(
        "demo: {} generated images, {correct}/{} predictions correct",
        args.images,
        args.images as usize * reports.len()
    );
    println!("figures in {}", args.out.display());
    for r in reports {
        println!("report: {}", r.display());
    }
    Ok(())
}
