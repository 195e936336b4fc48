//! `lumen report`: an offline interactive HTML report.

use clap::Args;
use lumen::api::{PredictionOf, RequestOf, TaskModel};
use lumen::{ReportWriter, Result, report_title_of};

use crate::args::{
    CacheArgs, FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PassArgs, PrintArgs,
    RequestFromClasses, check_methods, check_writable, methods_help, with_any_model,
};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long = "methods", alias = "method", value_delimiter = ',',
          default_value = "gradcam,gradcam++,eigencam,ig", help = methods_help())]
    methods: Vec<String>,
    /// Add a section comparing these layers' statistics (comma-separated).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// File name of the report inside --out.
    #[arg(long, default_value = "report.html")]
    name: String,
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

pub fn run(args: ReportArgs) -> Result<()> {
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
    // A name, not a path: `../x.html` would leave --out, and an empty one names --out.
    let name = std::path::Path::new(&args.name);
    if name.file_name() != Some(name.as_os_str()) {
        return Err(lumen::LumenError::InvalidArgument(format!(
            "--name `{}` is not a file name: give the report's name (report.html), and its folder with --out",
            args.name
        )));
    }
    let path = args.figure.out.join(&args.name);
    check_writable("--out", &path)?;
    with_any_model!(args.model.load_any()?, |model| report_on(
        &model, &args, &path
    ))
}

fn report_on<T>(model: &T, args: &ReportArgs, path: &std::path::Path) -> Result<()>
where
    T: TaskModel,
    PredictionOf<T>: lumen::CacheRecord,
    RequestOf<T>: RequestFromClasses + lumen::CacheRecord,
{
    let plan = args.input.plan(model)?;
    // Classes are given per input file: checked before reading, and an unreadable
    // file's class goes with it.
    let targets = RequestFromClasses::from_classes(&args.method_args.target_class, plan.len())?;
    for layer in &args.features {
        lumen::ExplainableModel::layer(model.model(), layer)?;
    }
    let mut options = args
        .pass
        .several_methods_options(&args.method_args, &args.figure);
    options.cautions = args.figure.cautions_at(
        &args.figure.verdicts(&args.model.model)?,
        args.method_args.layer.as_deref(),
        model.model(),
        &args.methods.join(","),
    );
    args.method_args
        .warn_drowning_noise(&args.methods, model.data_config());
    options.cache = args.cache.open(&args.model)?;
    // The page is written as the chunks of a folder come: memory holds a chunk, not
    // the page (about 0.45 MB per image and method at 128 px).
    let mut report = ReportWriter::create(path, &report_title_of(model), options.colormap)?;
    let mut names: Vec<String> = vec![];
    let mut feature_rows = vec![];
    plan.for_each_chunk(
        model.device(),
        &args.methods,
        (
            &format!("report: {} methods", args.methods.len()),
            args.print.quiet,
        ),
        |chunk| {
            options.targets = crate::args::targets_at(&targets, &chunk.positions);
            if !args.features.is_empty() {
                feature_rows.extend(lumen::feature_report::feature_rows(
                    model,
                    &chunk.inputs,
                    &args.features,
                )?);
            }
            report.add(model, &chunk.inputs, &args.methods, &options)?;
            names.extend(chunk.inputs.names);
            Ok(())
        },
    )?;
    let sections = match args.features.is_empty() {
        true => vec![],
        false => vec![lumen::report::layer_comparison_section(&feature_rows)],
    };
    let path = report.finish(&sections)?;
    crate::args::report_cache(
        options.cache.as_deref(),
        names.len() * args.methods.len(),
        args.print.quiet,
    );
    if args.print.json {
        JsonOutput {
            command: "report",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: serde_json::json!({ "images": names, "methods": args.methods }),
            files: vec![path],
        }
        .print();
    } else {
        println!("wrote {}", path.display());
    }
    Ok(())
}
