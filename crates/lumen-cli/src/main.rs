//! The `lumen` command: explain what vision models see.
//!
//! One file per subcommand; `args.rs` holds the argument groups they share and the
//! one place those become the facade's options. The CLI talks to the `lumen` facade
//! only.
//!
//! Exit codes: 0 success, 2 usage errors (unknown method, layer, model, device, bad
//! option), 1 runtime errors (unreadable files, weights that do not fit), 3 when some
//! inputs could not be read (or their explanation was NaN) and were skipped (the others' results were written).

mod args;
mod batch;
mod compare;
mod demo;
mod detect;
mod evaluate;
mod explain;
mod features;
mod layers;
mod maximize;
mod report;
mod segment;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lumen::LumenError;

#[derive(Parser)]
#[command(name = "lumen", version, about = "Explain what vision models see")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print the time per stage (read/decode, preprocess, forward, backward, method
    /// math, post-process, metrics, draw/encode, write) on stderr at the end. Device stages wait
    /// for the device, so a profiled GPU run loses some overlap.
    #[arg(long, global = true)]
    profile: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Explain a model's predictions on images or a normalised input array.
    Explain(Box<explain::ExplainArgs>),
    /// Compare several methods on the same images, one figure per image.
    Compare(Box<compare::CompareArgs>),
    /// Write an interactive HTML report (plotly, works offline).
    Report(Box<report::ReportArgs>),
    /// Explain a folder (or list) of images in batches, with a progress bar.
    Batch(Box<batch::BatchArgs>),
    /// Join the shards of a split `lumen batch` run (one index and grid) or `lumen
    /// evaluate` run (evaluation.json and .html).
    Merge(batch::MergeArgs),
    /// List a model's named layers and their kinds.
    Layers(layers::LayersArgs),
    /// Run the bundled shapes models on generated images and write figures.
    Demo(demo::DemoArgs),
    /// Measure methods with quality metrics on generated images with ground truth.
    Evaluate(Box<evaluate::EvaluateArgs>),
    /// Feature maps, statistics, layer comparison and top channels of a layer.
    Features(Box<features::FeaturesArgs>),
    /// Receptive field of one activation: theoretical, gradient or occlusion.
    ReceptiveField(Box<features::ReceptiveFieldArgs>),
    /// Images optimised to excite a layer's channels (or classes).
    Maximize(Box<maximize::MaximizeArgs>),
}

/// Exit code of a run that skipped unreadable inputs and finished the rest.
const PARTIAL_FAILURE: u8 = 3;

/// Whether an error is the caller's usage (exit 2) or a failure at run time (exit 1).
fn exit_code(error: &LumenError) -> u8 {
    match error {
        LumenError::UnknownDevice { .. }
        | LumenError::BackendNotCompiled { .. }
        | LumenError::DeviceUnavailable { .. }
        | LumenError::UnknownLayer { .. }
        | LumenError::WrongLayerKind { .. }
        | LumenError::UnknownModel { .. }
        | LumenError::UnknownMethod { .. }
        | LumenError::UnknownChoice { .. }
        | LumenError::ClassOutOfRange { .. }
        | LumenError::InvalidArgument(_) => 2,
        _ => 1,
    }
}

fn main() -> ExitCode {
    // Behave like other Unix tools when the reader goes away (`lumen ... | head`):
    // end quietly on SIGPIPE instead of panicking on a failed print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread
    // starts has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let started = std::time::Instant::now();
    if cli.profile {
        lumen::core::profile::enable();
    }
    let result = match cli.command {
        Command::Explain(args) => explain::run(*args),
        Command::Compare(args) => compare::run(*args),
        Command::Batch(args) => batch::run(*args),
        Command::Report(args) => report::run(*args),
        Command::Merge(args) => batch::merge(args),
        Command::Layers(args) => layers::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Evaluate(args) => evaluate::run(*args),
        Command::Features(args) => features::features(*args),
        Command::ReceptiveField(args) => features::receptive_field(*args),
        Command::Maximize(args) => maximize::run(*args),
    };
    if cli.profile {
        let totals = lumen::core::profile::totals();
        eprint!(
            "profile:\n{}",
            lumen::core::profile::table(&totals, started.elapsed())
        );
    }
    match result {
        Ok(()) => {
            let failures = args::recorded_failures();
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: {} input(s) could not be read or explained and were skipped: {}",
                    failures.len(),
                    failures
                        .iter()
                        .map(|f| f.path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                ExitCode::from(PARTIAL_FAILURE)
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}
