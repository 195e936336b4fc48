//! The `lumen` command: explain what vision models see.
//!
//! Exit codes: 0 success, 2 usage errors (unknown method, layer, model, device, bad
//! option), 1 runtime errors (unreadable files, weights that do not fit).

mod commands;
mod explain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lumen::LumenError;

#[derive(Parser)]
#[command(name = "lumen", version, about = "Explain what vision models see")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Explain a model's predictions on images or a normalised input array.
    Explain(Box<explain::ExplainArgs>),
    /// Compare several methods on the same images, one figure per image.
    Compare(Box<commands::CompareArgs>),
    /// Write an interactive HTML report (plotly, works offline).
    Report(Box<commands::ReportArgs>),
    /// Explain a folder (or list) of images in batches, with a progress bar.
    Batch(Box<commands::BatchArgs>),
    /// List a model's named layers and their kinds.
    Layers(explain::LayersArgs),
    /// Run the bundled shapes models on generated images and write figures.
    Demo(commands::DemoArgs),
    /// Measure methods with quality metrics on generated images with ground truth.
    Evaluate(Box<commands::EvaluateArgs>),
}

/// Whether an error is the caller's usage (exit 2) or a failure at run time (exit 1).
fn exit_code(error: &LumenError) -> u8 {
    match error {
        LumenError::UnknownDevice { .. }
        | LumenError::BackendNotCompiled { .. }
        | LumenError::UnknownLayer { .. }
        | LumenError::WrongLayerKind { .. }
        | LumenError::UnknownModel { .. }
        | LumenError::ClassOutOfRange { .. }
        | LumenError::InvalidArgument(_) => 2,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Explain(args) => explain::run(*args),
        Command::Compare(args) => commands::compare(*args),
        Command::Batch(args) => commands::batch(*args),
        Command::Report(args) => commands::report(*args),
        Command::Layers(args) => explain::layers(args),
        Command::Demo(args) => commands::demo(args),
        Command::Evaluate(args) => commands::evaluate(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}
