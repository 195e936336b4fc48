//! `lumen explain`: one method on a batch of images, figures and raw maps.

use std::path::PathBuf;

use clap::Args;
use lumen::{ExplainOptions, Result, explain_prediction};

use crate::args::{
    CacheArgs, FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PassArgs, PrintArgs,
    check_methods, check_writable, figure_options, method_help,
};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    // GradCAM when omitted, like `lumen batch` and AutoTimm's `explain_prediction`.
    #[arg(long = "method", alias = "methods", default_value = "gradcam", help = method_help())]
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
    crate::args::check_one_method("explain", &args.method)?;
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
        false,
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
        &model.model,
        &args.method,
    );
    args.method_args
        .warn_drowning_noise(std::slice::from_ref(&args.method), &model.data_config);
    let plan = args.input.plan(&model)?;
    let targets = args
        .method_args
        .targets()
        .map(|classes| crate::args::per_input(classes, plan.len(), "--target-class"))
        .transpose()?;
    let size = plan.input_size();
    let mut raw = RawWriter::create(args.save_raw.as_deref(), size, args.grid)?;
    let task = lumen::TaskModel::task(&model);
    let mut results = vec![];
    plan.for_each_chunk(
        lumen::TaskModel::device(&model),
        std::slice::from_ref(&args.method),
        (&args.method, args.print.quiet),
        |chunk| {
            let options = ExplainOptions {
                targets: crate::args::targets_at(&targets, &chunk.positions),
                ..options.clone()
            };
            let (explanation, chunk_results) = explain_prediction(&model, &chunk.inputs, &options)?;
            raw.append(&explanation)?;
            results.extend(chunk_results.into_iter().map(|r| lean(&task, r)));
            Ok(())
        },
    )?;
    crate::args::report_cache(options.cache.as_deref(), results.len(), args.print.quiet);
    let mut files: Vec<PathBuf> = results.iter().flat_map(|r| r.paths.clone()).collect();
    files.extend(raw.finish()?);

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

/// A result kept to the end of a chunked run: its figures are written, so its maps go
/// (what is printed and serialised stays).
pub fn lean<P, R, T: lumen::Task<Prediction = P>>(
    task: &T,
    mut result: lumen::ExplanationResult<P, R>,
) -> lumen::ExplanationResult<P, R> {
    result.heatmap = lumen::Map::new(vec![], 0, 0);
    task.release_maps(&mut result.prediction);
    result
}

/// `--save-raw` written chunk by chunk: `[B,3,H,W]` attributions for gradient methods,
/// else `[B,H,W]` maps at input size (on the patch grid with `grid`).
pub struct RawWriter {
    out: Option<lumen::NpyRowWriter>,
    size: [usize; 2],
    grid: bool,
}

impl RawWriter {
    /// A writer to `path` (nothing without one) of maps at `size` `[height, width]`.
    pub fn create(path: Option<&std::path::Path>, size: [usize; 2], grid: bool) -> Result<Self> {
        Ok(Self {
            out: path.map(lumen::NpyRowWriter::create).transpose()?,
            size,
            grid,
        })
    }

    /// Append a chunk's rows.
    pub fn append(&mut self, explanation: &lumen::methods::Explanation) -> Result<()> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        match &explanation.attributions {
            Some(attr) => out.append(&lumen::to_host(attr.clone())?, &attr.dims()),
            None => {
                let maps = explanation.heatmaps.clone();
                let [_, h, w] = maps.dims();
                let maps = if self.grid || [h, w] == self.size {
                    maps
                } else {
                    maps.resize(self.size)
                };
                out.append(&maps.to_vec()?, &maps.dims())
            }
        }
    }

    /// Put the array in place (an empty `[0, H, W]` when no row came); its path.
    pub fn finish(self) -> Result<Option<PathBuf>> {
        self.out.map(|out| out.finish(&self.size)).transpose()
    }
}
