//! `lumen explain`: one method on a batch of images, figures and raw maps.

use std::path::PathBuf;

use clap::Args;
use lumen::{ExplainOptions, Result, explain_prediction};

use crate::args::{
    CacheArgs, FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PassArgs, PrintArgs,
    check_methods, check_writable, figure_options, methods_help,
};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    // GradCAM when omitted, like `lumen batch` and AutoTimm's `explain_prediction`.
    #[arg(long = "method", alias = "methods", default_value = "gradcam", help = methods_help())]
    pub method: String,
    /// Write the raw result as float32 .npy: [B,3,H,W] attributions for gradient
    /// methods, else [B,H,W] maps at input size.
    #[arg(long)]
    pub save_raw: Option<PathBuf>,
    /// Keep attention maps on the patch grid in --save-raw (else resized to the input).
    #[arg(long)]
    pub grid: bool,
    #[command(flatten)]
    pub segmentation: crate::segment::SegmentArgs,
    #[command(flatten)]
    pub detection: crate::detect::DetectArgs,
    #[command(flatten)]
    pub method_args: MethodArgs,
    #[command(flatten)]
    pub figure: FigureArgs,
    #[command(flatten)]
    pub pass: PassArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub print: PrintArgs,
}

impl ExplainArgs {
    /// The facade's options for any task, without targets.
    pub fn options<R>(&self) -> ExplainOptions<R> {
        figure_options(
            &self.method,
            &self.method_args,
            &self.figure,
            self.pass.batch_size,
            50,
        )
    }
}

pub fn run(args: ExplainArgs) -> Result<()> {
    if args.model.is_segmentation() {
        args.detection.require_unused("segmentation")?;
        return crate::segment::run(args);
    }
    if args.model.is_detection() {
        args.segmentation.require_unused()?;
        return crate::detect::run(args);
    }
    args.segmentation.require_unused()?;
    args.detection.require_unused("classification")?;
    let mut options = ExplainOptions {
        targets: args.method_args.targets(),
        ..args.options()
    };
    check_methods(
        std::slice::from_ref(&args.method),
        &args.method_args,
        &options,
    )?;
    let family = lumen::method_info(&args.method)?.family;
    if args.grid && (family != lumen::methods::Family::Attention || args.save_raw.is_none()) {
        eprintln!(
            "warning: --grid ignored: it keeps attention maps on the patch grid in --save-raw"
        );
    }
    if args.figure.polarity
        && !matches!(
            family,
            lumen::methods::Family::Gradient
                | lumen::methods::Family::Path
                | lumen::methods::Family::NoiseTunnel
        )
    {
        eprintln!("warning: --polarity ignored: only gradient methods have signed attributions");
    }
    if let Some(path) = &args.save_raw {
        check_writable("--save-raw", path)?;
    }
    let verdicts = args.figure.verdicts(&args.model.model)?;
    options.cache = args.cache.open(&args.model)?;
    let model = args.model.load()?;
    options.cautions = args.figure.cautions_at(
        &verdicts,
        args.method_args.layer.as_deref(),
        &lumen::ExplainableModel::default_layer(&model.model),
        &args.method,
    );
    let inputs = args.input.load(&model)?;
    let (explanation, results) = crate::args::with_spinner(
        &format!("{} on {} images", args.method, inputs.len()),
        args.print.quiet,
        || explain_prediction(&model, &inputs, &options),
    )?;
    crate::args::report_cache(options.cache.as_deref(), inputs.len(), args.print.quiet);
    let [_, _, height, width] = inputs.tensor.dims();
    let mut files: Vec<PathBuf> = results.iter().flat_map(|r| r.paths.clone()).collect();

    if let Some(path) = &args.save_raw {
        save_raw(path, &explanation, [height, width], args.grid)?;
        files.push(path.clone());
    }

    if args.print.json {
        JsonOutput {
            command: "explain",
            model: &model.name,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: &results,
            files,
        }
        .print();
    } else {
        for r in &results {
            let name = r
                .prediction
                .name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            println!(
                "{}: predicted {}{name} ({:.1}%), explained class {} with {}",
                r.image,
                r.prediction.class,
                100.0 * r.prediction.confidence,
                r.target,
                r.method
            );
            for p in &r.paths {
                println!("  wrote {}", p.display());
            }
        }
        if let Some(path) = &args.save_raw {
            println!("raw result written to {}", path.display());
        }
    }
    Ok(())
}

/// `--save-raw`: `[B,3,H,W]` attributions for gradient methods, else `[B,H,W]` maps at
/// input size (on the patch grid with `grid`).
pub fn save_raw(
    path: &std::path::Path,
    explanation: &lumen::methods::Explanation,
    size: [usize; 2],
    grid: bool,
) -> Result<()> {
    match &explanation.attributions {
        Some(attr) => lumen::write_npy(path, lumen::to_host(attr.clone())?, &attr.dims()),
        None => {
            let maps = explanation.heatmaps.clone();
            let [_, h, w] = maps.dims();
            let maps = if grid || [h, w] == size {
                maps
            } else {
                maps.resize(size)
            };
            lumen::write_npy(path, maps.to_vec()?, &maps.dims())
        }
    }
}
