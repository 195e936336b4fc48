//! `lumen evaluate`: methods x quality metrics on generated images with ground truth.

use std::path::PathBuf;

use clap::Args;
use lumen::evaluate::{
    Evaluation, EvaluationConfig, FLOOR_NAMES, MetricScore as Score, MetricSettings, Progress,
    RandomizationConfig, RoadConfig, SensitivityConfig, bench_method_names, black, curve,
    evaluate_loaded_part, metric_names,
};
use lumen::scale::{EvaluationPart, EvaluationShard};
use lumen::shapes::{EVALUATION_SEED, TUNING_SEED, shape_samples, shape_scenes};
use lumen::task_evaluation::{
    DenseCurves, TaskEvaluation, TaskEvaluationConfig, evaluate_detector, evaluate_segmentor,
};
use lumen::{BaselineKind, LumenError, Result, Shard};

use crate::args::{JsonOutput, MethodArgs, ModelArgs, PrintArgs, choice, progress};

fn metrics_help() -> String {
    format!(
        "Metrics, comma-separated (all when omitted) [one of: {}]",
        metric_names().join(", ")
    )
}

/// The methods evaluated when none are named: classifiers.
const CLASSIFIER_METHODS: &str = "gradcam,gradcam++,layercam,eigencam,saliency,ig";
/// ... and detectors and segmentors (whose maps are per box or per region: the
/// element-wise CAMs, which keep where the gradient is, beside the pooled ones).
const DENSE_METHODS: &str = "gradcam,hirescam,layercam,eigencam,saliency,inputxgrad";

fn methods_help() -> String {
    format!(
        "Methods, comma-separated; the floors `random` and `center` are always added (default: {CLASSIFIER_METHODS}; detectors and segmentors: {DENSE_METHODS}) [one of: {}]",
        bench_method_names().join(", ")
    )
}

fn methods_or(named: &Option<Vec<String>>, default: &str) -> Vec<String> {
    named
        .clone()
        .unwrap_or_else(|| default.split(',').map(String::from).collect())
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
    images: usize,
    /// Which generated split: `evaluation` (what results are reported on) or `tuning`
    /// (where the bench's own settings are chosen, e.g. the curve baselines).
    #[arg(long, default_value = "evaluation", value_parser = ["evaluation", "tuning"])]
    split: String,
    #[arg(long = "methods", alias = "method", value_delimiter = ',', help = methods_help())]
    methods: Option<Vec<String>>,
    #[arg(long, value_delimiter = ',', help = metrics_help())]
    metrics: Option<Vec<String>>,
    /// Images per explanation batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Steps of the deletion and insertion curves.
    #[arg(long, default_value_t = 32)]
    curve_steps: usize,
    /// What deleted pixels become: mean (each image's mean colour), black (RISE), blur, zeros, white, uniform.
    #[arg(long, default_value = "mean", value_parser = choice::<BaselineKind>)]
    deletion_baseline: BaselineKind,
    /// What the insertion curve starts from: mean, blur (RISE), black, zeros, white, uniform.
    #[arg(long, default_value = "mean", value_parser = choice::<BaselineKind>)]
    insertion_baseline: BaselineKind,
    /// Images used for sensitivity and the randomisation check (they re-explain many times).
    #[arg(long, default_value_t = 16)]
    detail_images: usize,
    /// Sensitivity: perturbations per image.
    #[arg(long, default_value_t = 5)]
    sensitivity_samples: usize,
    /// Sensitivity: L-infinity radius in normalised input units (> 0).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    sensitivity_radius: f32,
    #[command(flatten)]
    method_args: MethodArgs,
    /// Detection models: explain every detection scoring at least this, in [0, 1].
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    score_threshold: f32,
    /// Measure one shard of the images: I/N (from 0), `auto` (a Slurm array's
    /// SLURM_ARRAY_TASK_ID and _COUNT) or `auto/N` (a Kubernetes Indexed Job's
    /// JOB_COMPLETION_INDEX). Writes evaluation.shard-IIII-of-NNNN.json; join the
    /// shards with `lumen merge OUT`, which writes what one run writes. Give every
    /// shard the same options.
    #[arg(long)]
    shard: Option<String>,
    /// Keep each batch's measurements in this folder (keyed by the weights, the
    /// options and the batch's images) and reuse them: a rerun or a preempted shard
    /// measures only the batches not done.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Folder for evaluation.json and evaluation.html.
    #[arg(long, default_value = "lumen-eval")]
    out: PathBuf,
    #[command(flatten)]
    print: PrintArgs,
}

pub fn run(args: EvaluateArgs) -> Result<()> {
    if args.dataset != "shapes" {
        return Err(LumenError::unknown_choice(
            "dataset",
            &args.dataset,
            &["shapes"],
        ));
    }
    for (flag, value) in [
        ("--images", args.images),
        ("--batch-size", args.batch_size),
        ("--curve-steps", args.curve_steps),
        ("--detail-images", args.detail_images),
        ("--sensitivity-samples", args.sensitivity_samples),
    ] {
        if value == 0 {
            return Err(LumenError::InvalidArgument(format!(
                "{flag} must be at least 1"
            )));
        }
    }
    let most = lumen::metrics::MAX_METRIC_COUNT;
    for (flag, value) in [
        ("--curve-steps", args.curve_steps),
        ("--sensitivity-samples", args.sensitivity_samples),
    ] {
        if value > most {
            return Err(LumenError::InvalidArgument(format!(
                "{flag} must be at most {most} (each is a forward per image), got {value}"
            )));
        }
    }
    if !(args.sensitivity_radius.is_finite() && args.sensitivity_radius > 0.0) {
        return Err(LumenError::InvalidArgument(format!(
            "--sensitivity-radius must be a finite number > 0, got {}",
            args.sensitivity_radius
        )));
    }
    let split = Split::of(&args)?;
    if let Some(dir) = &args.cache {
        crate::args::check_folder_writable("--cache", dir)?;
    }
    if args.model.is_detection() || args.model.is_segmentation() {
        return run_task(&args, &split);
    }
    if args.score_threshold != 0.5 {
        return Err(LumenError::InvalidArgument(
            "--score-threshold applies to detection models".into(),
        ));
    }
    let mut methods = methods_or(&args.methods, CLASSIFIER_METHODS);
    for floor in FLOOR_NAMES {
        if !methods.iter().any(|m| m == floor) {
            methods.push(floor.to_string());
        }
    }
    let known = bench_method_names();
    if let Some(bad) = methods.iter().find(|m| !known.contains(&m.as_str())) {
        return Err(LumenError::UnknownMethod {
            name: bad.clone(),
            valid: known.iter().map(|s| s.to_string()).collect(),
        });
    }
    crate::args::warn_unused_method_options(&methods, &args.method_args)?;
    let names = metric_names();
    if let Some(bad) = args
        .metrics
        .iter()
        .flatten()
        .find(|m| !names.contains(&m.as_str()))
    {
        return Err(LumenError::unknown_choice("metric", bad, &names));
    }
    // Minutes of work: the folder is checked before it, not at the end.
    crate::args::check_folder_writable("--out", &args.out)?;
    let seed = args.method_args.seed.unwrap_or(0);
    let loaded = args.model.load()?;
    let data = &loaded.data_config;
    args.method_args.warn_drowning_noise(&methods, data);
    let sensitivity = args
        .metrics
        .as_ref()
        .is_none_or(|wanted| wanted.iter().any(|m| m.contains("sensitivity")));
    let advice = "a perturbation that size is a different image; the default is 0.1";
    if let (true, Some(warning)) = (
        sensitivity,
        crate::args::drowning_warning(
            "--sensitivity-radius",
            args.sensitivity_radius,
            data,
            advice,
        ),
    ) {
        eprintln!("warning: {warning}");
    }
    let mut method_options = args.method_args.options(32);
    method_options.seed = Some(seed);
    method_options.mean = data.mean;
    method_options.std = data.std;
    let defaults = EvaluationConfig::default().settings;
    let config = EvaluationConfig {
        methods,
        metrics: args.metrics.clone().unwrap_or_default(),
        batch_size: args.batch_size,
        detail_samples: args.detail_images,
        settings: MetricSettings {
            deletion: curve(args.curve_steps, args.deletion_baseline, data),
            insertion: curve(args.curve_steps, args.insertion_baseline, data),
            road: RoadConfig {
                seed,
                ..RoadConfig::default()
            },
            sensitivity: SensitivityConfig {
                radius: args.sensitivity_radius,
                samples: args.sensitivity_samples,
                seed,
                batch_size: None,
            },
            randomization: RandomizationConfig {
                seed,
                ..RandomizationConfig::default()
            },
            confidence_baseline: black(data),
            ..defaults
        },
        method_options,
    };
    let images_seed = split_seed(&args.split);
    let cache = open_cache(&args)?;
    let result = measure(
        &args,
        &split,
        cache.as_ref(),
        |range, on_progress| {
            let samples = shape_samples(images_seed, range.start as u64, range.len() as u64);
            // The detail metrics take the split's first images, as one run does: the
            // part that starts the split measures them.
            let detail = if range.start == 0 {
                shape_samples(images_seed, 0, args.detail_images.min(args.images) as u64)
            } else {
                vec![]
            };
            evaluate_loaded_part(&loaded, &samples, &detail, &config, on_progress)
        },
        lumen::evaluate::merge_evaluations,
    )?;
    if let Some(shard) = split.shard {
        let part = EvaluationPart::Classification(result);
        return write_shard(&args, shard, &split, part);
    }
    let (json_path, html_path) = write_classification(&args.out.join(EVALUATION_FILE), &result)?;
    if args.print.json {
        JsonOutput {
            command: "evaluate",
            model: &loaded.name,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: result.summary_json(),
            files: vec![json_path, html_path],
        }
        .print();
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
                    Some(Score::Value(v)) => print!(" {v:>10.3}"),
                    Some(Score::Pass(p)) => print!(" {:>10}", if *p { "pass" } else { "fail" }),
                    None => print!(" {:>10}", "-"),
                }
            }
            println!(" {:>9.1}", m.seconds_per_image * 1e3);
        }
        for r in &result.recommendations {
            println!("{}: {} ({})", r.use_case, r.method, r.reason);
        }
        if !args.print.quiet {
            eprintln!("wrote {} and {}", json_path.display(), html_path.display());
        }
    }
    Ok(())
}

/// The whole run's file; its page is written beside it.
pub const EVALUATION_FILE: &str = "evaluation.json";

/// The images this run measures: all of them, or a shard's.
struct Split {
    shard: Option<Shard>,
    images: std::ops::Range<usize>,
}

impl Split {
    fn of(args: &EvaluateArgs) -> Result<Self> {
        let Some(spec) = &args.shard else {
            return Ok(Self {
                shard: None,
                images: 0..args.images,
            });
        };
        let shard = Shard::parse(spec, |name| std::env::var(name).ok())?;
        let batches = args.images.div_ceil(args.batch_size);
        if shard.count > batches {
            return Err(LumenError::InvalidArgument(format!(
                "--shard {spec}: {} images in batches of {} make {batches} batch(es), so a split has at most {batches} shard(s)",
                args.images, args.batch_size
            )));
        }
        Ok(Self {
            shard: Some(shard),
            images: shard.range(args.images, args.batch_size),
        })
    }
}

/// The cache of `--cache`, for this model.
fn open_cache(args: &EvaluateArgs) -> Result<Option<lumen::ExplanationCache>> {
    crate::args::open_cache(args.cache.as_deref(), &args.model)
}

/// This run's evaluation (a shard's part, or the whole split's) from `part`, which
/// measures a range of the split's images. Without a cache, one call for the whole
/// range. With one, a call per batch whose measurements are not in the cache, each
/// stored as it finishes, and `merge` joins the batches exactly as `lumen merge`
/// joins shards: an interrupted run loses at most the batch it was in.
fn measure<P: serde::Serialize + serde::de::DeserializeOwned>(
    args: &EvaluateArgs,
    split: &Split,
    cache: Option<&lumen::ExplanationCache>,
    mut part: impl FnMut(std::ops::Range<usize>, &mut dyn FnMut(Progress)) -> Result<P>,
    merge: impl Fn(&[P]) -> Result<P>,
) -> Result<P> {
    let bar = progress(0, "evaluate", args.print.quiet);
    let Some(cache) = cache else {
        let result = part(split.images.clone(), &mut follow(&bar));
        bar.finish_and_clear();
        return result;
    };
    let settings = settings(args).to_string();
    let batches: Vec<std::ops::Range<usize>> = split
        .images
        .clone()
        .step_by(args.batch_size)
        .map(|start| start..(start + args.batch_size).min(split.images.end))
        .collect();
    bar.set_length(batches.len() as u64);
    let mut parts = Vec::with_capacity(batches.len());
    let mut reused = 0;
    for (done, range) in batches.iter().enumerate() {
        let key = cache.key(&format!("evaluate {settings} images {range:?}"), b"");
        let cached = cache
            .get_json(&key)
            .and_then(|value| serde_json::from_value::<P>(value).ok());
        let measured = match cached {
            Some(measured) => {
                reused += 1;
                measured
            }
            None => {
                let measured = part(range.clone(), &mut |p: Progress| bar.set_message(p.method))?;
                let value = serde_json::to_value(&measured).expect("an evaluation serialises");
                cache.put_json(&key, &value)?;
                measured
            }
        };
        parts.push(measured);
        bar.set_position(done as u64 + 1);
    }
    bar.finish_and_clear();
    if !args.print.quiet {
        eprintln!(
            "cache {}: {reused} of {} batches reused, {} measured",
            cache.dir().display(),
            batches.len(),
            batches.len() - reused
        );
    }
    merge(&parts)
}

/// What every shard of a split must share: the options that change the numbers.
fn settings(args: &EvaluateArgs) -> serde_json::Value {
    serde_json::json!({
        "model": args.model.model,
        "dataset": args.dataset,
        "images": args.images,
        "split": args.split,
        "methods": args.methods,
        "metrics": args.metrics,
        "batch_size": args.batch_size,
        "curve_steps": args.curve_steps,
        "deletion_baseline": format!("{:?}", args.deletion_baseline),
        "insertion_baseline": format!("{:?}", args.insertion_baseline),
        "detail_images": args.detail_images,
        "sensitivity_samples": args.sensitivity_samples,
        "sensitivity_radius": args.sensitivity_radius,
        "method_options": format!("{:?}", args.method_args),
        "score_threshold": args.score_threshold,
    })
}

/// A shard's part, for `lumen merge`.
fn write_shard(
    args: &EvaluateArgs,
    shard: Shard,
    split: &Split,
    part: EvaluationPart,
) -> Result<()> {
    let file = EvaluationShard {
        shard: shard.index,
        shards: shard.count,
        first_image: split.images.start,
        total_images: args.images,
        settings: settings(args),
        evaluation: part,
    };
    let path = args.out.join(shard.evaluation_file());
    let text = serde_json::to_string_pretty(&file).expect("an evaluation serialises");
    lumen::write_atomically(&path, text.as_bytes())?;
    if args.print.json {
        println!(
            "{}",
            serde_json::json!({"command": "evaluate", "shard": shard.index, "shards": shard.count, "images": [split.images.start, split.images.end], "files": [path]})
        );
    } else if !args.print.quiet {
        eprintln!(
            "shard {} of {} (from 0): images {}..{} of {}; wrote {} (join the shards with `lumen merge {}`)",
            shard.index,
            shard.count,
            split.images.start,
            split.images.end,
            args.images,
            path.display(),
            args.out.display()
        );
    }
    Ok(())
}

/// The seed of the generated split `--split` names.
fn split_seed(split: &str) -> u64 {
    match split {
        "tuning" => TUNING_SEED,
        _ => EVALUATION_SEED,
    }
}

/// The bench's progress shown on `bar`.
fn follow(bar: &indicatif::ProgressBar) -> impl FnMut(Progress) + '_ {
    |p: Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.method);
    }
}

/// The ground-truth bench of a detector or segmentor on generated scenes.
fn run_task(args: &EvaluateArgs, split: &Split) -> Result<()> {
    if args.metrics.is_some() {
        return Err(LumenError::InvalidArgument(format!(
            "--metrics chooses among the classification metrics; `{}` is measured on its own task's metrics (all of them)",
            args.model.model
        )));
    }
    if args.detail_images != 16 || args.sensitivity_samples != 5 || args.sensitivity_radius != 0.1 {
        return Err(LumenError::InvalidArgument(
            "--detail-images, --sensitivity-samples and --sensitivity-radius apply to classifiers (the dense bench measures no sensitivity)".into(),
        ));
    }
    let detection = args.model.is_detection();
    if !detection && args.score_threshold != 0.5 {
        return Err(LumenError::InvalidArgument(
            "--score-threshold applies to detection models".into(),
        ));
    }
    let mut known: Vec<&str> = lumen::method_names()
        .into_iter()
        .chain(FLOOR_NAMES)
        .collect();
    if detection {
        known.push(lumen::detection::DRISE);
    }
    let methods = methods_or(&args.methods, DENSE_METHODS);
    if let Some(bad) = methods.iter().find(|m| !known.contains(&m.as_str())) {
        return Err(LumenError::UnknownMethod {
            name: bad.clone(),
            valid: known.iter().map(|s| s.to_string()).collect(),
        });
    }
    crate::args::warn_unused_method_options(&methods, &args.method_args)?;
    crate::args::check_folder_writable("--out", &args.out)?;
    let seed = args.method_args.seed.unwrap_or(0);
    let mut method_options = args.method_args.options(32);
    method_options.seed = Some(seed);
    let mut config = TaskEvaluationConfig {
        methods,
        method_options,
        batch_size: args.batch_size,
        score_threshold: args.score_threshold,
        seed,
        curves: None,
        first_scene: split.images.start,
    };
    let curves = |data: &lumen::core::DataConfig| {
        Some(DenseCurves {
            deletion: curve(args.curve_steps, args.deletion_baseline, data),
            insertion: curve(args.curve_steps, args.insertion_baseline, data),
        })
    };
    let scenes_seed = split_seed(&args.split);
    let cache = open_cache(args)?;
    let merge = lumen::task_evaluation::merge_task_evaluations;
    // The scenes of a range of the split, and the settings that place them in it.
    let scenes_of = |range: &std::ops::Range<usize>, config: &TaskEvaluationConfig| {
        let scenes = shape_scenes(scenes_seed, range.start as u64, range.len() as u64);
        let config = TaskEvaluationConfig {
            first_scene: range.start,
            ..config.clone()
        };
        (scenes, config)
    };
    let result = if detection {
        let loaded = args.model.load_detector()?;
        config.curves = curves(&loaded.data_config);
        args.method_args
            .warn_drowning_noise(&config.methods, &loaded.data_config);
        let part = |range: std::ops::Range<usize>, on_progress: &mut dyn FnMut(Progress)| {
            let (scenes, config) = scenes_of(&range, &config);
            evaluate_detector(&loaded, &scenes, &config, on_progress)
        };
        measure(args, split, cache.as_ref(), part, merge)?
    } else {
        let loaded = args.model.load_segmentor()?;
        config.curves = curves(&loaded.data_config);
        args.method_args
            .warn_drowning_noise(&config.methods, &loaded.data_config);
        let part = |range: std::ops::Range<usize>, on_progress: &mut dyn FnMut(Progress)| {
            let (scenes, config) = scenes_of(&range, &config);
            evaluate_segmentor(&loaded, &scenes, &config, on_progress)
        };
        measure(args, split, cache.as_ref(), part, merge)?
    };
    if let Some(shard) = split.shard {
        return write_shard(args, shard, split, EvaluationPart::Dense(result));
    }
    let (json_path, html_path) = write_dense(&args.out.join(EVALUATION_FILE), result.clone())?;
    if args.print.json {
        JsonOutput {
            command: "evaluate",
            model: &result.model,
            device: &args.model.device,
            precision: args.model.precision.name(),
            results: serde_json::to_value(&result).expect("evaluation serialises"),
            files: vec![json_path, html_path],
        }
        .print();
        return Ok(());
    }
    let accuracy: Vec<String> = result
        .accuracy
        .iter()
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect();
    println!(
        "{} on {} {} scenes: {}",
        result.model,
        result.images,
        args.split,
        accuracy.join(", ")
    );
    let explained: Vec<String> = result
        .explained
        .iter()
        .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
        .collect();
    println!("explained: {}", explained.join(", "));
    let keys = result.metric_names();
    print!("{:<14} {:<16}", "method", "layer");
    for k in &keys {
        print!(" {:>10}", abbreviate(k));
    }
    println!(" {:>9}", "ms/image");
    for m in &result.methods {
        print!("{:<14} {:<16}", m.method, m.layer.as_deref().unwrap_or("-"));
        for k in &keys {
            match m.scores.get(*k) {
                Some(v) => print!(" {v:>10.3}"),
                None => print!(" {:>10}", "-"),
            }
        }
        println!(" {:>9.1}", m.seconds_per_image * 1e3);
    }
    if !args.print.quiet {
        eprintln!("wrote {} and {}", json_path.display(), html_path.display());
    }
    Ok(())
}

/// A classifier's evaluation as JSON at `json_path` (everything) and its page beside
/// it (`.html`), each atomically.
pub fn write_classification(
    json_path: &std::path::Path,
    result: &Evaluation,
) -> Result<(PathBuf, PathBuf)> {
    write_evaluation(json_path, result, &result.html_page())
}

/// The same for a detector or segmentor, without the raw counts a shard keeps for
/// the merge, with the cautions of the whole run (what `--verdicts` reads).
pub fn write_dense(
    json_path: &std::path::Path,
    mut result: TaskEvaluation,
) -> Result<(PathBuf, PathBuf)> {
    result.accuracy_counts = None;
    result.recommendations = result.cautions();
    write_evaluation(json_path, &result, &result.html_page())
}

fn write_evaluation(
    json_path: &std::path::Path,
    result: &impl serde::Serialize,
    html: &str,
) -> Result<(PathBuf, PathBuf)> {
    let full = serde_json::to_string_pretty(result).expect("evaluation serialises");
    lumen::write_atomically(json_path, full.as_bytes())?;
    let html_path = json_path.with_extension("html");
    lumen::write_atomically(&html_path, html.as_bytes())?;
    Ok((json_path.to_path_buf(), html_path))
}

/// Column headers of the text table, at most 10 characters.
fn abbreviate(metric: &str) -> &str {
    match metric {
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
        "complexity" => "complexity",
        "energy_in_box" => "energy_box",
        "share_among_boxes" => "box_share",
        "beats_other_boxes" => "beats",
        other => other,
    }
}
