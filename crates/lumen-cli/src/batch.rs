//! `lumen batch`: a folder (or list) of images in batches, with a progress bar.

use clap::Args;
use lumen::{Result, explain_batch};

use crate::args::{
    FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PrintArgs, check_methods,
    explain_options, methods_help, progress,
};

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long = "method", alias = "methods", default_value = "gradcam", help = methods_help())]
    method: String,
    /// Images per forward/backward.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[command(flatten)]
    method_args: MethodArgs,
    #[command(flatten)]
    figure: FigureArgs,
    #[command(flatten)]
    print: PrintArgs,
}

pub fn run(args: BatchArgs) -> Result<()> {
    let mut options = explain_options(&args.method, &args.method_args, &args.figure, 50);
    check_methods(
        std::slice::from_ref(&args.method),
        &args.method_args,
        &options,
    )?;
    if args.batch_size == 0 {
        return Err(lumen::LumenError::InvalidArgument(
            "--batch-size must be at least 1".into(),
        ));
    }
    args.input.require_model_size("lumen batch")?;
    let files = args.input.files()?;
    options.cautions = args.figure.cautions(&args.model.model)?;
    let model = args.model.load()?;
    let bar = progress(files.len() as u64, "explaining", args.print.quiet);
    let outcome = explain_batch(&model, &files, args.batch_size, &options, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    if outcome.results.is_empty() {
        return Err(lumen::no_readable_input(&outcome.failures));
    }
    crate::args::record_failures(&outcome.failures);
    let results = outcome.results;
    if args.print.json {
        JsonOutput {
            command: "batch",
            model: &model.name,
            device: &args.model.device,
            files: results.iter().flat_map(|r| r.paths.clone()).collect(),
            results: &results,
        }
        .print();
    } else {
        eprintln!(
            "explained {} images; figures in {}",
            results.len(),
            args.figure.out.display()
        );
    }
    Ok(())
}
