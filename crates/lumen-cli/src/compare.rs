//! `lumen compare`: several methods on the same images, one figure per image.

use clap::Args;
use lumen::{Layout, LumenError, Result, compare_methods};

use crate::args::{
    FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PrintArgs, check_methods,
    explain_options, methods_help,
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
    print: PrintArgs,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let mut options = explain_options("", &args.method_args, &args.figure, 50);
    check_methods(&args.methods, &args.method_args, &options)?;
    if args.figure.polarity {
        eprintln!("warning: --polarity ignored: `lumen explain` writes the polarity view");
    }
    let layout = Layout::from_name(&args.layout, args.methods.len() + 1)
        .map_err(LumenError::InvalidArgument)?;
    options.cautions = args.figure.cautions(&args.model.model)?;
    let model = args.model.load()?;
    let inputs = args.input.load(&model)?;
    let results = crate::args::with_spinner(
        &format!("{} methods on {} images", args.methods.len(), inputs.len()),
        args.print.quiet,
        || compare_methods(&model, &inputs, &args.methods, &options, layout),
    )?;
    if args.print.json {
        JsonOutput {
            command: "compare",
            model: &model.name,
            device: &args.model.device,
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
                "{}: class {} with {}{written}",
                r.image,
                r.target,
                r.methods.join(", ")
            );
        }
    }
    Ok(())
}
