//! `lumen layers`: a model's named layers and their kinds.

use clap::Args;
use lumen::{ExplainableModel, LoadedModel, Result, device_from_str};
use serde::Serialize;

use crate::args::{JsonOutput, ModelArgs};

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print the result as one JSON object on stdout (see docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct LayerRow {
    name: String,
    kind: String,
    default: bool,
}

pub fn run(args: LayersArgs) -> Result<()> {
    // Layer names do not depend on weights: build the architecture when none are given.
    let loaded = match &args.model.weights {
        Some(_) => args.model.load()?,
        None => LoadedModel::init(
            &args.model.model,
            args.model.num_classes.unwrap_or(1000),
            &device_from_str(&args.model.device)?,
        )?,
    };
    let default = loaded.model.default_layer();
    let rows: Vec<LayerRow> = loaded
        .model
        .layers()
        .into_iter()
        .map(|l| LayerRow {
            default: l.name == default,
            name: l.name,
            kind: l.kind.to_string(),
        })
        .collect();
    if args.json {
        JsonOutput {
            command: "layers",
            model: &loaded.name,
            device: &args.model.device,
            results: &rows,
            files: vec![],
        }
        .print();
    } else {
        for row in rows {
            let mark = if row.default { "  (default)" } else { "" };
            println!("{:<24} {}{mark}", row.name, row.kind);
        }
    }
    Ok(())
}
