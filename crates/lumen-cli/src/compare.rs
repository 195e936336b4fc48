//! `lumen compare`: several methods on the same images, one figure per image.

use clap::Args;
use lumen::api::{PredictionOf, RequestOf, TaskModel};
use lumen::{Layout, LumenError, Result, Task, compare_methods};

use crate::args::{
    CacheArgs, FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PassArgs, PrintArgs,
    RequestFromClasses, check_methods, methods_help, with_any_model,
};

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long = "methods", alias = "method", value_delimiter = ',',
          default_value = "gradcam,gradcam++,layercam,eigencam", help = methods_help())]
    methods: Vec<String>,
    /// Panel layout: horizontal, vertical, grid.
    #[arg(long, default_value = "horizontal")]
    layout: String,
    #[command(flatten)]
    method_args: MethodArgs,
    #[command(flatten)]
    figure: FigureArgs,
    #[command(flatten)]
    pass: PassArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    print: PrintArgs,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let options = args
        .pass
        .several_methods_options::<()>(&args.method_args, &args.figure);
    check_methods(
        &args.methods,
        &args.method_args,
        &options,
        args.model.is_detection(),
    )?;
    if args.figure.polarity {
        eprintln!("warning: --polarity ignored: `lumen explain` writes the polarity view");
    }
    let layout = Layout::from_name(&args.layout, args.methods.len() + 1)
        .map_err(LumenError::InvalidArgument)?;
    with_any_model!(args.model.load_any()?, |model| compare_on(
        &model, &args, layout
    ))
}

fn compare_on<T>(model: &T, args: &CompareArgs, layout: Layout) -> Result<()>
where
    T: TaskModel,
    PredictionOf<T>: lumen::CacheRecord,
    RequestOf<T>: RequestFromClasses + lumen::CacheRecord + serde::Serialize,
    PredictionOf<T>: serde::Serialize,
{
    let plan = args.input.plan(model)?;
    let mut options = args
        .pass
        .several_methods_options(&args.method_args, &args.figure);
    let targets = RequestFromClasses::from_classes(&args.method_args.target_class, plan.len())?;
    options.cautions = args.figure.cautions_at(
        &args.figure.verdicts(&args.model.model)?,
        args.method_args.layer.as_deref(),
        model.model(),
        &args.methods.join(","),
    );
    args.method_args
        .warn_drowning_noise(&args.methods, model.data_config());
    options.cache = args.cache.open(&args.model)?;
    let what = format!("{} methods", args.methods.len());
    let task = model.task();
    let mut results = vec![];
    plan.for_each_chunk(
        model.device(),
        &args.methods,
        (&what, args.print.quiet),
        |chunk| {
            options.targets = crate::args::targets_at(&targets, &chunk.positions);
            let chunk_results =
                compare_methods(model, &chunk.inputs, &args.methods, &options, layout)?;
            // The figures are written: keep what is printed.
            results.extend(chunk_results.into_iter().map(|mut r| {
                r.heatmaps = vec![];
                task.release_maps(&mut r.prediction);
                r
            }));
            Ok(())
        },
    )?;
    crate::args::report_cache(
        options.cache.as_deref(),
        results.len() * args.methods.len(),
        args.print.quiet,
    );
    if args.print.json {
        JsonOutput {
            command: "compare",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            files: results.iter().filter_map(|r| r.path.clone()).collect(),
            results: &results,
        }
        .print();
    } else {
        for r in &results {
            let written = r
                .path
                .as_ref()
                .map(|p| format!(" -> {}", p.display()))
                .unwrap_or_default();
            println!(
                "{}: {} with {}{written}",
                r.image,
                task.describe_request(&r.target),
                r.methods.join(", ")
            );
        }
    }
    Ok(())
}
