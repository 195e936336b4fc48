//! `lumen report`: an offline interactive HTML report.

use clap::Args;
use lumen::api::{PredictionOf, RequestOf, TaskModel};
use lumen::{Result, write_report};

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
    check_methods(&args.methods, &args.method_args, &options)?;
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
    let read = plan.read_all(model.device())?;
    let inputs = read.inputs;
    let mut options = args
        .pass
        .several_methods_options(&args.method_args, &args.figure);
    options.targets = crate::args::targets_at(&targets, &read.positions);
    options.cautions = args.figure.cautions_at(
        &args.figure.verdicts(&args.model.model)?,
        args.method_args.layer.as_deref(),
        &lumen::ExplainableModel::default_layer(model.model()),
        &args.methods.join(","),
    );
    options.cache = args.cache.open(&args.model)?;
    let sections = if args.features.is_empty() {
        vec![]
    } else {
        vec![lumen::feature_report::feature_section(
            model,
            &inputs,
            &args.features,
        )?]
    };
    let path = crate::args::with_spinner(
        &format!(
            "report: {} methods on {} images",
            args.methods.len(),
            inputs.len()
        ),
        args.print.quiet,
        || write_report(model, &inputs, &args.methods, &options, path, &sections),
    )?;
    crate::args::report_cache(
        options.cache.as_deref(),
        inputs.len() * args.methods.len(),
        args.print.quiet,
    );
    if args.print.json {
        JsonOutput {
            command: "report",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: serde_json::json!({ "images": inputs.names, "methods": args.methods }),
            files: vec![path],
        }
        .print();
    } else {
        println!("wrote {}", path.display());
    }
    Ok(())
}
