//! `lumen batch`: a folder (or list) of images in batches, with a progress bar.

use std::path::PathBuf;

use clap::Args;
use lumen::api::{PredictionOf, RequestOf, TaskModel};
use lumen::scale::{EvaluationPart, ShardKind};
use lumen::{BatchRun, CacheRecord, ExplanationCache, Result, Shard, explain_batch_with};

use crate::args::{
    FigureArgs, InputArgs, JsonOutput, MethodArgs, ModelArgs, PrintArgs, check_methods,
    explain_options, figure_options, method_help, progress, with_any_model,
};

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long = "method", alias = "methods", default_value = "gradcam", help = method_help())]
    method: String,
    /// Images per forward/backward.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Explain one shard of the sorted inputs: I/N (from 0), `auto` (a Slurm array's
    /// SLURM_ARRAY_TASK_ID and _COUNT) or `auto/N` (a Kubernetes Indexed Job's
    /// JOB_COMPLETION_INDEX). Writes index.shard-IIII-of-NNNN.jsonl; join the shards
    /// with `lumen merge OUT`. Give every shard the same --batch-size.
    #[arg(long)]
    shard: Option<String>,
    /// Reuse results from this folder and store new ones there (keyed by the weights,
    /// method, options and input bytes): a repeated or resumed run skips the model.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Also write each image's map (scaled to [0, 1], as drawn) as IMAGE_METHOD.npy.
    #[arg(long)]
    save_raw: bool,
    #[command(flatten)]
    method_args: MethodArgs,
    #[command(flatten)]
    figure: FigureArgs,
    #[command(flatten)]
    print: PrintArgs,
}

pub fn run(args: BatchArgs) -> Result<()> {
    crate::args::check_one_method("batch", &args.method)?;
    let options = explain_options(&args.method, &args.method_args, &args.figure, None, 50);
    check_methods(
        std::slice::from_ref(&args.method),
        &args.method_args,
        &options,
        args.model.is_detection(),
    )?;
    if args.batch_size == 0 {
        return Err(lumen::LumenError::InvalidArgument(
            "--batch-size must be at least 1".into(),
        ));
    }
    args.input.require_model_size("lumen batch")?;
    let shard = args
        .shard
        .as_deref()
        .map(|spec| Shard::parse(spec, |name| std::env::var(name).ok()))
        .transpose()?;
    if args.save_raw && args.figure.no_figures {
        return Err(lumen::LumenError::InvalidArgument(
            "--save-raw writes beside the figures: drop --no-figures".into(),
        ));
    }
    let mut files = args.input.files()?;
    if shard.is_some() {
        // Every shard must see the same list, whatever order the shell gave.
        files.sort();
        files.dedup();
    }
    if options.targets.is_some() {
        return Err(lumen::LumenError::InvalidArgument(
            "`lumen batch` explains each image's own prediction: drop --target-class, or \
             use `lumen explain` or `lumen compare` to explain a chosen class"
                .into(),
        ));
    }
    let cache = crate::args::open_cache(args.cache.as_deref(), &args.model)?;
    // The task follows the model: a classifier explains each image's predicted class, a
    // segmentor its dominant class over the predicted region, a detector its best
    // detection.
    with_any_model!(args.model.load_any()?, |model| batch_on(
        &model, &args, &files, shard, cache
    ))
}

fn batch_on<T>(
    model: &T,
    args: &BatchArgs,
    files: &[PathBuf],
    shard: Option<Shard>,
    cache: Option<ExplanationCache>,
) -> Result<()>
where
    T: TaskModel,
    PredictionOf<T>: CacheRecord + serde::Serialize,
    RequestOf<T>: CacheRecord,
{
    // No pass size: each read batch of --batch-size files goes through the model whole.
    let mut options =
        figure_options::<RequestOf<T>>(&args.method, &args.method_args, &args.figure, None, 50);
    options.cautions = args.figure.cautions_at(
        &args.figure.verdicts(&args.model.model)?,
        args.method_args.layer.as_deref(),
        model.model(),
        &args.method,
    );
    args.method_args
        .warn_drowning_noise(std::slice::from_ref(&args.method), model.data_config());
    let run = BatchRun {
        batch_size: args.batch_size,
        shard,
        cache,
        save_raw: args.save_raw,
        keep_maps: false,
    };
    let todo = shard.map_or(files.len(), |s| s.range(files.len(), args.batch_size).len());
    let bar = progress(todo as u64, "explaining", args.print.quiet);
    let outcome = explain_batch_with(model, files, &run, &options, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    crate::args::report_cache_reuse(run.cache.as_ref(), outcome.reused, todo, args.print.quiet);
    if outcome.results.is_empty() && todo > 0 {
        return Err(lumen::no_readable_input(&outcome.failures));
    }
    crate::args::record_failures(&outcome.failures);
    let results = outcome.results;
    if args.print.json {
        JsonOutput {
            command: "batch",
            model: model.name(),
            device: &args.model.device,
            precision: args.model.precision.name(),
            files: results.iter().flat_map(|r| r.paths.clone()).collect(),
            results: &results,
        }
        .print();
    } else if !args.print.quiet {
        let scope = shard.map_or(String::new(), |s| {
            format!(" (shard {} of {}, from 0)", s.index, s.count)
        });
        eprintln!(
            "explained {} images{scope}; figures in {}",
            results.len(),
            args.figure.out.display()
        );
    }
    Ok(())
}

/// `lumen merge`: join the shards of a split `lumen batch` or `lumen evaluate` run.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The folder the shards wrote to (searched with its sub-folders).
    dir: PathBuf,
    /// The merged file: a batch's index (the grid `batch_grid.png` is written beside
    /// it; default DIR/index.jsonl), or an evaluation's JSON (its page beside it;
    /// default DIR/evaluation.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// `--json` prints the summary as JSON; `--quiet` leaves out the summary line on
    /// stderr (accepted like every command's, so that scripts can pass it throughout).
    #[command(flatten)]
    print: crate::args::PrintArgs,
}

pub fn merge(args: MergeArgs) -> Result<()> {
    let evaluations = lumen::scale::shard_files(&args.dir, ShardKind::Evaluation)?;
    let indexes = lumen::scale::shard_files(&args.dir, ShardKind::BatchIndex)?;
    if !evaluations.is_empty() && !indexes.is_empty() {
        return Err(lumen::LumenError::InvalidArgument(format!(
            "{} holds the shards of a `lumen batch` run and of a `lumen evaluate` run: give each its own --out folder",
            args.dir.display()
        )));
    }
    if !evaluations.is_empty() {
        return merge_evaluation(args);
    }
    let out = args
        .out
        .unwrap_or_else(|| args.dir.join(lumen::scale::INDEX_FILE));
    crate::args::check_writable("--out", &out)?;
    let summary = lumen::merge_shards(&args.dir, &out)?;
    if args.print.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("the summary is plain data")
        );
    } else if !args.print.quiet {
        eprintln!(
            "merged {} shards: {} inputs, {} explained, {} unreadable; index {}{}",
            summary.shards,
            summary.inputs,
            summary.explained,
            summary.failed,
            summary.index.display(),
            summary
                .grid
                .as_ref()
                .map_or(String::new(), |g| format!(", grid {}", g.display()))
        );
    }
    Ok(())
}

/// The shards of `lumen evaluate --shard`: evaluation.json and .html as one run
/// writes them.
fn merge_evaluation(args: MergeArgs) -> Result<()> {
    let out = args
        .out
        .unwrap_or_else(|| args.dir.join(crate::evaluate::EVALUATION_FILE));
    crate::args::check_writable("--out", &out)?;
    let merged = lumen::scale::merge_evaluation_shards(&args.dir)?;
    let (json, html) = match merged.evaluation {
        EvaluationPart::Classification(e) => crate::evaluate::write_classification(&out, &e)?,
        EvaluationPart::Dense(e) => crate::evaluate::write_dense(&out, e)?,
    };
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({"shards": merged.shards, "images": merged.images, "evaluation": json, "page": html})
        );
    } else if !args.print.quiet {
        eprintln!(
            "merged {} evaluation shards: {} images; wrote {} and {}",
            merged.shards,
            merged.images,
            json.display(),
            html.display()
        );
    }
    Ok(())
}
