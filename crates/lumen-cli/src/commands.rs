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

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Dataset with ground truth: `shapes` (generated images with masks and boxes).
    #[arg(long, default_value = "shapes")]
    dataset: String,
    /// Number of generated images.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Comma-separated methods; `random` and `center` (the floors) are always added.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gradcam,gradcam++,layercam,eigencam,saliency,ig"
    )]
    methods: Vec<String>,
    /// Comma-separated metrics (all when omitted).
    #[arg(long, value_delimiter = ',')]
    metrics: Option<Vec<String>>,
    /// Images per explanation batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Steps of the deletion and insertion curves.
    #[arg(long, default_value_t = 32)]
    curve_steps: usize,
    /// What deleted pixels become: mean (each image's mean colour), black (RISE), blur, zeros, white.
    #[arg(long, default_value = "mean")]
    deletion_baseline: String,
    /// What the insertion curve starts from: mean, blur (RISE), black, zeros, white.
    #[arg(long, default_value = "mean")]
    insertion_baseline: String,
    /// Images used for sensitivity and the randomisation check (they re-explain many times).
    #[arg(long, default_value_t = 16)]
    detail_samples: usize,
    /// Sensitivity: perturbations per image.
    #[arg(long, default_value_t = 5)]
    sensitivity_samples: usize,
    /// Sensitivity: L-infinity radius in normalised input units.
    #[arg(long, default_value_t = 0.1)]
    sensitivity_radius: f32,
    /// Target layer of the CAM methods; the model's default when omitted.
    #[arg(long)]
    layer: Option<String>,
    /// Integrated Gradients path points.
    #[arg(long, default_value_t = 32)]
    ig_steps: usize,
    /// Seed of the noise, random weights and random floor.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for evaluation.json and evaluation.html.
    #[arg(long, default_value = "lumen-eval")]
    out: PathBuf,
    /// Print `{"methods": {..}, "model": .., "samples": N}` on stdout.
    #[arg(long)]
    json: bool,
}

pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    use lumen::evaluate::{EvaluationConfig, FLOOR_NAMES, METRIC_NAMES, evaluate};
    use lumen::metrics::{RandomizationConfig, RoadConfig, SensitivityConfig};

    if args.dataset != "shapes" {
        return Err(LumenError::InvalidArgument(format!(
            "unknown dataset `{}`; valid datasets: shapes",
            args.dataset
        )));
    }
    if args.samples == 0 {
        return Err(LumenError::InvalidArgument(
            "--samples must be at least 1".into(),
        ));
    }
    let mut methods = args.methods.clone();
    for floor in FLOOR_NAMES {
        if !methods.iter().any(|m| m == floor) {
            methods.push(floor.to_string());
        }
    }
    let metrics = args
        .metrics
        .clone()
        .unwrap_or_else(|| METRIC_NAMES.iter().map(|s| s.to_string()).collect());
    let (loaded, device) = args.model.load()?;
    let mut method_options = MethodOptions {
        layer: args.layer.clone(),
        steps: args.ig_steps,
        seed: Some(args.seed),
        mean: loaded.data_config.mean,
        std: loaded.data_config.std,
        ..MethodOptions::default()
    };
    method_options.internal_batch_size = Some(64);
    let baseline = |name: &str| {
        lumen::methods::Baseline::from_name(name, loaded.data_config.mean, loaded.data_config.std)
    };
    let config = EvaluationConfig {
        methods,
        metrics,
        batch_size: args.batch_size,
        curve_steps: args.curve_steps,
        deletion_baseline: baseline(&args.deletion_baseline)?,
        insertion_baseline: baseline(&args.insertion_baseline)?,
        detail_samples: args.detail_samples,
        sensitivity: SensitivityConfig {
            radius: args.sensitivity_radius,
            samples: args.sensitivity_samples,
            seed: args.seed,
            batch_size: 32,
        },
        road: RoadConfig {
            seed: args.seed,
            ..RoadConfig::default()
        },
        randomization: RandomizationConfig {
            seed: args.seed,
            ..RandomizationConfig::default()
        },
        method_options,
        ..EvaluationConfig::default()
    };
    let samples = shape_samples(EVALUATION_SEED, 0, args.samples as u64);
    let bar = progress(0, "evaluate");
    let mut on_progress = |p: lumen::evaluate::Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.method);
    };
    let result = match &loaded.model {
        ZooModel::ResNet(model) => evaluate(
            model.as_ref(),
            &loaded.name,
            &samples,
            &loaded.data_config,
            &config,
            &device,
            &mut on_progress,
        ),
        ZooModel::Vit(model) => evaluate(
            model.as_ref(),
            &loaded.name,
            &samples,
            &loaded.data_config,
            &config,
            &device,
            &mut on_progress,
        ),
    }?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out).map_err(|e| LumenError::Io {
        path: args.out.to_path_buf(),
        source: e,
    })?;
    let json_path = args.out.join("evaluation.json");
    let full = serde_json::to_string_pretty(&result).expect("evaluation serialises");
    std::fs::write(&json_path, full).map_err(|e| LumenError::Io {
        path: json_path.to_path_buf(),
        source: e,
    })?;
    let html_path = args.out.join("evaluation.html");
    let html = lumen::report::page(
        &format!("Lumen evaluation: {}", result.model),
        &result.html_section(),
    );
    std::fs::write(&html_path, html).map_err(|e| LumenError::Io {
        path: html_path.to_path_buf(),
        source: e,
    })?;
    if args.json {
        println!("{}", result.summary_json());
    } else {
        let keys = result.metric_keys();
        print!("{:<14}", "method");
        for k in &keys {
            print!(" {:>10}", abbreviate(k));
        }
        println!(" {:>9}", "ms/image");
        for m in &result.methods {
            print!("{:<14}", m.name);
            for k in &keys {
                match m.scores.get(*k) {
                    Some(lumen::evaluate::Score::Value(v)) => print!(" {v:>10.3}"),
                    Some(lumen::evaluate::Score::Pass(p)) => {
                        print!(" {:>10}", if *p { "pass" } else { "fail" })
                    }
                    None => print!(" {:>10}", "-"),
                }
            }
            println!(" {:>9.1}", m.seconds_per_image * 1e3);
        }
        for r in &result.recommendations {
            println!("{}: {} ({})", r.use_case, r.method, r.reason);
        }
        eprintln!("wrote {} and {}", json_path.display(), html_path.display());
    }
    Ok(())
}

/// Column headers of the text table, at most 10 characters.
fn abbreviate(metric: &str) -> String {
    let short = match metric {
        "deletion_auc" => "deletion",
        "insertion_auc" => "insertion",
        "energy_pointing_game" => "energy_pg",
        "pointing_game" => "pointing",
        "relevance_mass" => "rel_mass",
        "relevance_rank" => "rel_rank",
        "max_sensitivity" => "max_sens",
        "avg_sensitivity" => "avg_sens",
        "randomization_spearman" => "rand_rho",
        "randomization_pass" => "rand_pass",
        "completeness_gap" => "ig_gap",
        "average_drop" => "avg_drop",
        "increase_rate" => "increase",
        other => other,
    };
    short.to_string()
}
